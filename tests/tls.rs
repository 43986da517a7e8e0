//! HTTPS on the real server (`--tls-cert`, `--tls-key`), seen from outside
//! with curl and openssl: ALPN, certificate reloads (good, broken and
//! mismatched files), a handshake bounded by the idle timeout and counted in
//! the connection caps, unusable certificates at startup, and the scheme of
//! the URLs Berth hands out on plain HTTP, behind a TLS-terminating proxy
//! and over TLS. The real clients over HTTPS are in `tests/clients.rs` and
//! `tests/ecr_workflow.rs`.
//!
//! Run: `cargo test --test tls`

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tls::{Issued, Pki, served_serial};
use common::{Server, tail};

/// curl with the test CA: (HTTP status, HTTP version, body), or the error.
fn curl(ca: &Path, extra: &[&str], url: &str) -> Result<(u16, String, String), String> {
    common::require("curl");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(ca)
        .args(extra)
        .args(["-w", "\n%{http_code} %{http_version}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    let (body, last) = text.rsplit_once('\n').unwrap();
    let (code, version) = last.split_once(' ').unwrap();
    Ok((code.parse().unwrap(), version.to_string(), body.to_string()))
}

/// Copy a certificate and key over the files the server watches (the
/// certificate first, as a renewal tool would).
fn install(issued: &Issued, live: &Issued) {
    std::fs::copy(&issued.cert, &live.cert).unwrap();
    std::fs::copy(&issued.key, &live.key).unwrap();
}

/// Wait up to `limit` for `f` to hold.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// An open registry on loopback serving HTTPS with `live`; its log file.
fn https_server(tmp: &Path, live: &Issued, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let log = tmp.join("berth.log");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut args = vec!["--auth".to_string(), "none".to_string()];
    args.extend(live.args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = common::logging_to(&log, || {
        Server::start_at(&addr, &tmp.join("data"), &args, false)
    });
    (s, log)
}

#[test]
fn serves_https_over_h2_and_http1_and_reloads_a_changed_certificate() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let live = Issued {
        cert: tmp.path().join("tls.crt"),
        key: tmp.path().join("tls.key"),
    };
    install(&pki.server("one", "127.0.0.1", 1), &live);
    let (s, log) = https_server(tmp.path(), &live, &[]);
    let base = format!("https://{}", s.addr);
    let ca = pki.ca();

    // ALPN: HTTP/2 when the client offers it, HTTP/1.1 otherwise.
    let (code, version, _) = curl(&ca, &["--http2"], &format!("{base}/v2/")).unwrap();
    assert_eq!((code, version.as_str()), (200, "2"));
    let (code, version, _) = curl(&ca, &["--http1.1"], &format!("{base}/v2/")).unwrap();
    assert_eq!((code, version.as_str()), (200, "1.1"));
    // Only HTTPS on the port: a plain request is told so, and the server goes on.
    let (code, _, body) = curl(&ca, &[], &format!("http://{}/v2/", s.addr)).unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("use https://"), "{body}");
    // A client that does not trust the CA is refused by its own check.
    let untrusted = Command::new("curl")
        .args(["-sS", "--max-time", "30", &format!("{base}/v2/")])
        .output()
        .unwrap();
    assert_eq!(untrusted.status.code(), Some(60), "curl: {untrusted:?}");
    assert_eq!(served_serial(&s.addr, "localhost"), "01");

    // Renewal: new connections get the new certificate within a few polls.
    let started = Instant::now();
    install(&pki.server("two", "127.0.0.1", 2), &live);
    eventually(Duration::from_secs(15), "serial 02 served", || {
        served_serial(&s.addr, "localhost") == "02"
    });
    eprintln!("reloaded after {:?}", started.elapsed());
    assert!(curl(&ca, &[], &format!("{base}/v2/")).is_ok());

    // A broken certificate file: logged, counted, and the previous one stays.
    std::fs::write(&live.cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    eventually(Duration::from_secs(15), "the failed reload logged", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("could not be loaded")
    });
    assert_eq!(served_serial(&s.addr, "localhost"), "02");
    // A certificate whose key has not been written yet (another key's file
    // still there): refused too, until the key arrives.
    let three = pki.server("three", "127.0.0.1", 3);
    std::fs::copy(&three.cert, &live.cert).unwrap();
    std::thread::sleep(two_polls());
    assert_eq!(served_serial(&s.addr, "localhost"), "02");
    let (_, _, metrics) = curl(&ca, &[], &format!("{base}/metrics")).unwrap();
    let failed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("berth_tls_reloads_failed_total "))
        .unwrap_or_else(|| panic!("no reload counter:\n{metrics}"))
        .parse()
        .unwrap();
    // (At least: a poll may also have caught a renewal between its two files.)
    assert!(failed >= 2, "{metrics}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("does not hold a usable private key"),
        "{}",
        tail(text.as_bytes(), 4000)
    );
    std::fs::copy(&three.key, &live.key).unwrap();
    eventually(Duration::from_secs(15), "serial 03 served", || {
        served_serial(&s.addr, "localhost") == "03"
    });
}

/// Long enough for the server to have looked at the files twice.
fn two_polls() -> Duration {
    Duration::from_secs(5)
}

/// Whether the server closes `c` within `limit` (a read returns EOF or an error).
fn closed_within(c: &mut TcpStream, limit: Duration) -> bool {
    c.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn a_silent_or_stalled_handshake_holds_a_slot_only_until_the_idle_timeout() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let cert = pki.server("srv", "127.0.0.1", 7);
    let (s, _log) = https_server(
        tmp.path(),
        &cert,
        &["--idle-timeout", "2s", "--max-connections-per-ip", "2"],
    );
    // Connected and silent; and stalled after the first bytes of a ClientHello.
    let start = Instant::now();
    let mut silent = TcpStream::connect(&s.addr).unwrap();
    let mut stalled = TcpStream::connect(&s.addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)));
    assert!(closed_within(&mut stalled, Duration::from_secs(10)));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(6),
        "closed after {waited:?}, the idle timeout is 2s"
    );

    // Handshakes count within the caps, and as idle: two silent
    // connections fill this address's slots, a real client evicts one.
    let mut a = TcpStream::connect(&s.addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let _b = TcpStream::connect(&s.addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (code, _, _) = curl(&pki.ca(), &[], &format!("https://{}/v2/", s.addr)).unwrap();
    assert_eq!(code, 200);
    assert!(
        closed_within(&mut a, Duration::from_millis(1500)),
        "the idlest handshake was not evicted"
    );
    let (_, _, metrics) = curl(&pki.ca(), &[], &format!("https://{}/metrics", s.addr)).unwrap();
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name}:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert!(counter("berth_connections_evicted_total") >= 1, "{metrics}");
    assert!(
        counter("berth_tls_handshakes_failed_total") >= 3,
        "{metrics}"
    );
}

#[test]
fn unusable_certificates_stop_the_start_with_what_is_wrong() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let one = pki.server("one", "127.0.0.1", 1);
    let two = pki.server("two", "127.0.0.1", 2);
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let missing = tmp.path().join("missing.pem");
    let missing_msg = format!("reading {}", missing.display());
    let cases: [(&Path, Option<&Path>, &str); 5] = [
        (&missing, Some(&one.key), &missing_msg),
        (&garbage, Some(&one.key), "no PEM certificate"),
        (&one.cert, Some(&one.cert), "no PEM private key"),
        (
            &one.cert,
            Some(&two.key),
            "does not hold a usable private key",
        ),
        (&one.cert, None, "tls_cert is set but tls_key is not"),
    ];
    for (i, (cert, key, expected)) in cases.iter().enumerate() {
        let mut args = vec!["--tls-cert".to_string(), cert.display().to_string()];
        if let Some(k) = key {
            args.extend(["--tls-key".to_string(), k.display().to_string()]);
        }
        let out = Command::new("timeout")
            .args(["30", env!("CARGO_BIN_EXE_berth"), "serve", "--auth", "none"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", common::free_port()))
            .arg("--data-dir")
            .arg(tmp.path().join(format!("data-{i}")))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// `GetAuthorizationToken`'s `proxyEndpoint`, called over plain HTTP with
/// `extra` headers.
async fn proxy_endpoint(s: &Server, extra: &[(&str, &str)]) -> String {
    let body = b"{}".to_vec();
    let mut headers = common::ecr_headers(
        s,
        "GetAuthorizationToken",
        &body,
        common::ROOT_KEY_ID,
        common::ROOT_SECRET,
    );
    for (k, v) in extra {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let r = reqwest::Client::new()
        .post(s.url("/"))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["authorizationData"][0]["proxyEndpoint"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn urls_handed_out_on_plain_http_say_http_unless_a_trusted_proxy_terminated_tls() {
    let s = Server::start_ecr_with(&["--trusted-proxy", "127.0.0.1"]);
    assert_eq!(proxy_endpoint(&s, &[]).await, format!("http://{}", s.addr));
    assert_eq!(
        proxy_endpoint(&s, &[("x-forwarded-proto", "https")]).await,
        format!("https://{}", s.addr)
    );
    let r = reqwest::get(s.url("/v2/")).await.unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        format!(
            "Basic realm=\"http://{}/\",service=\"ecr.amazonaws.com\"",
            s.addr
        )
    );
    // From a peer that is no trusted proxy, the header is the client's own word.
    let direct = Server::start_ecr();
    assert_eq!(
        proxy_endpoint(&direct, &[("x-forwarded-proto", "https")]).await,
        format!("http://{}", direct.addr)
    );
}
