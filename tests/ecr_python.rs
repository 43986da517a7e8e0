//! Runs the boto3 / aws CLI suite in `tests/python` against the freshly built
//! `berth` binary, so `cargo test` covers the ECR API with the real clients.
//! Needs python3 with boto3, pytest and requests, and the aws CLI on PATH;
//! when any is missing the test fails (it does not skip).

use std::process::Command;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ecr_api_python_suite() {
    run_suite("embedded");
}

/// The same suite with every server on PostgreSQL + S3.
#[test]
fn ecr_api_python_suite_on_scale_out() {
    run_suite("scale-out");
}

fn run_suite(backend: &str) {
    let root = env!("CARGO_MANIFEST_DIR");

    let probe = Command::new("python3")
        .args(["-c", "import boto3, botocore, pytest, requests"])
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("python3 is required to run tests/python: {e}"));
    assert!(
        probe.status.success(),
        "python3 lacks a module tests/python needs (pip install boto3 pytest requests):\n{}",
        text(&probe.stderr)
    );

    let out = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rfEsx",
            "tests/python",
        ])
        .current_dir(root)
        .env("BERTH_BIN", env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_TEST_BACKEND", backend)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3 -m pytest");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "pytest tests/python ({backend}) failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
}
