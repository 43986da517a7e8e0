//! Runs every `cargo fuzz` target (`fuzz/`, harnesses in `src/fuzzing.rs`)
//! for a bounded time, starting from the seeds in `fuzz/corpus/`. Needs
//! `cargo-fuzz` (CI installs it) and fails when it is missing. Longer runs
//! are done by hand (`fuzz/README.md`). `BERTH_FUZZ_SECS` sets the time per
//! target (default 15 s).

mod common;

use std::path::Path;
use std::process::Command;

use common::tail;

#[test]
fn every_fuzz_target_runs_clean_for_a_while() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let probe = Command::new("cargo").args(["fuzz", "--version"]).output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "cargo-fuzz is required (cargo install cargo-fuzz --locked); CI installs it"
    );
    let secs: u64 = std::env::var("BERTH_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    // The harnesses link the library, so the fuzz build uses the toolchain's
    // own coverage instrumentation (no sanitizer: stable Rust).
    let build = Command::new("cargo")
        .args(["fuzz", "build", "-s", "none"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "cargo fuzz build failed:\n{}",
        tail(&build.stderr, 8000)
    );
    for (name, _) in berth::fuzzing::TARGETS {
        let corpus = tempfile::tempdir().unwrap();
        let out = Command::new("cargo")
            .args(["fuzz", "run", "-s", "none", name])
            .arg(corpus.path())
            .arg(root.join("fuzz/corpus").join(name))
            .args([
                "--",
                &format!("-max_total_time={secs}"),
                "-rss_limit_mb=2048",
                "-timeout=20",
            ])
            .current_dir(root)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        let runs = log
            .lines()
            .rev()
            .find(|l| l.starts_with("Done "))
            .unwrap_or("no summary");
        eprintln!("fuzz target {name}: {runs}");
        assert!(
            out.status.success(),
            "fuzz target {name} failed (the input is in fuzz/artifacts/{name}/; \
             copy it to fuzz/regressions/{name}/ and fix the bug):\n{}",
            tail(&out.stderr, 8000)
        );
    }
}
