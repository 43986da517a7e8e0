//! The `berth` command line as an operator meets it: what `--help` shows,
//! what the start banner says, what the logs look like.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn berth(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "berth {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The long flags `--help` lists, each with the text up to the next flag.
fn flags(help: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if t.starts_with("--") {
            let name = t.split([' ', '<']).next().unwrap().to_string();
            out.push((name, String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(t);
        }
    }
    out
}

#[test]
fn every_setting_shows_its_environment_variable() {
    let help = berth(&["serve", "--help"]);
    let flags = flags(&help);
    assert!(flags.len() > 20, "{help}");
    for (name, text) in &flags {
        if name == "--help" {
            continue;
        }
        let var = format!(
            "BERTH_{}",
            name.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase()
        );
        // A secret's value is hidden (`[env: VAR]`), never echoed by --help.
        assert!(
            text.contains(&format!("[env: {var}=")) || text.contains(&format!("[env: {var}]")),
            "{name}: {text}"
        );
    }
}

#[test]
fn maintenance_commands_list_only_their_own_settings() {
    for cmd in [
        &["gc", "--help"][..],
        &["lifecycle", "--help"],
        &["iam", "--help"],
    ] {
        let help = berth(cmd);
        for server_only in ["--listen", "--idle-timeout", "--max-connections", "--auth"] {
            assert!(!help.contains(server_only), "{cmd:?} lists {server_only}");
        }
        assert!(help.contains("--data-dir"), "{cmd:?}");
    }
}

/// What `berth serve ARGS` prints up to its `docker push` line (an ECR-mode
/// server on a free loopback port, stopped then).
fn banner(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("serve")
        .args(args)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(tmp.path())
        .env("BERTH_ACCOUNT_ID", common::ACCOUNT)
        .env("BERTH_ROOT_ACCESS_KEY_ID", common::ROOT_KEY_ID)
        .env("BERTH_ROOT_SECRET_ACCESS_KEY", common::ROOT_SECRET)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("docker push");
        lines.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    lines.join("\n")
}

#[test]
fn the_banner_names_the_region_and_the_registry_host() {
    let banner = banner(&[
        "--region",
        "eu-west-3",
        "--registry-host",
        "registry.example.com",
    ]);
    assert!(banner.contains("region eu-west-3"), "{banner}");
    assert!(banner.contains("--region eu-west-3"), "{banner}");
    assert!(
        banner.contains("--password-stdin registry.example.com"),
        "{banner}"
    );
    assert!(
        banner.contains("docker push registry.example.com/NAME:TAG"),
        "{banner}"
    );
    assert!(
        banner.contains("--endpoint-url http://registry.example.com "),
        "{banner}"
    );
}

#[test]
fn the_banner_says_https_when_serving_tls() {
    let pki = common::tls::Pki::new();
    let cert = pki.server("banner", "127.0.0.1", 1);
    let args = cert.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let banner = banner(&args);
    assert!(
        banner.contains("listening on https://127.0.0.1:"),
        "{banner}"
    );
    assert!(
        banner.contains("--endpoint-url https://127.0.0.1:"),
        "{banner}"
    );
}

#[tokio::test]
async fn json_logs_and_responses_carry_each_requests_id() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("berth.log");
    let mut d = common::Deployment::new();
    d.env.push(("BERTH_LOG".into(), "berth=debug".into()));
    let s = common::logging_to(&log, || {
        common::Server::start_ecr_in(&d, &tmp.path().join("data"), &["--log-format", "json"])
    });
    let c = reqwest::Client::new();
    // A client's own plain id is kept; otherwise one is made.
    let r = c
        .get(s.url("/v2/"))
        .header("x-request-id", "ci-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-request-id"], "ci-7f3a");
    let r = c.get(s.url("/v2/")).send().await.unwrap();
    let made = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 36, "{made}");
    // ECR's own request id header is the same id.
    let body = b"{}".to_vec();
    let r = c
        .post(s.url("/"))
        .headers(common::ecr_headers(
            &s,
            "DescribeRepositories",
            &body,
            common::ROOT_KEY_ID,
            common::ROOT_SECRET,
        ))
        .header("x-request-id", "ecr-call-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "ecr-call-1");
    assert_eq!(r.headers()["x-amzn-requestid"], "ecr-call-1");
    // Every line is a JSON object; a request's lines name it.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of = |id: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["span"]["id"] == id).collect()
    };
    assert!(!of("ci-7f3a").is_empty(), "{text}");
    let ecr = of("ecr-call-1");
    assert!(
        ecr.iter()
            .any(|l| l["fields"]["operation"] == "ecr:DescribeRepositories"),
        "{text}"
    );
    assert!(!text.contains("\u{1b}["), "colour codes in a log file");
}
