//! The attacks of the security review, as a tool: each subcommand attacks a
//! running registry and prints one JSON object of what it cost the server
//! (memory from `/proc/<pid>/status`, whether `/healthz` still answered, how
//! long a well-behaved request took meanwhile). `bench/abuse.sh` runs them
//! against two builds side by side; `tests/abuse_soak.rs` is the test.
//!
//! ```text
//! cargo run --release --example abuse -- --addr 127.0.0.1:PORT --pid PID COMMAND [options]
//!
//!   body --conns 80 --mib 29         POST / bodies of 29 MiB minus one byte, no credentials,
//!                                    the last byte withheld; RSS while held and after
//!   h2body --streams 20 --mib 29     the same over one cleartext HTTP/2 connection
//!   idle --conns 600                 silent connections; can /healthz still be reached?
//!   trickle --conns 2000 --every 5 --secs 40
//!                                    a header line every 5 s on each; how many stay open
//!   stall --conns 100 --path P --token T
//!                                    GETs of a large blob whose response is never read
//!   heads --count 100000 --token T   HEADs of manifests in random repository names
//!   methods --count 50000 --len 1000 requests with made-up methods; size of /metrics after
//!   sessions --count 5000 --repo R --token T
//!                                    upload sessions opened by one caller
//!   layers --count 75000 --repo R --token T
//!                                    a manifest listing one layer 75,000 times, while a
//!                                    small push to another repository is timed
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: String,
    pid: u32,
    command: String,
    opts: Vec<(String, String)>,
}

impl Args {
    fn parse() -> Args {
        let mut it = std::env::args().skip(1);
        let (mut addr, mut pid, mut command, mut opts) = (None, None, None, Vec::new());
        while let Some(a) = it.next() {
            match a.as_str() {
                "--addr" => addr = it.next(),
                "--pid" => pid = it.next().and_then(|p| p.parse().ok()),
                flag if flag.starts_with("--") => {
                    opts.push((flag[2..].to_string(), it.next().unwrap_or_default()))
                }
                cmd if command.is_none() => command = Some(cmd.to_string()),
                other => panic!("unexpected argument {other}"),
            }
        }
        Args {
            addr: addr.expect("--addr HOST:PORT"),
            pid: pid.expect("--pid PID of the server"),
            command: command.expect("a command"),
            opts,
        }
    }

    fn get(&self, k: &str, default: &str) -> String {
        self.opts
            .iter()
            .find(|(n, _)| n == k)
            .map_or(default.to_string(), |(_, v)| v.clone())
    }

    fn num(&self, k: &str, default: u64) -> u64 {
        self.get(k, &default.to_string()).parse().expect("a number")
    }
}

/// The server's resident memory in MiB (`VmRSS`, or `VmHWM` for the peak).
fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Whether `GET /healthz` on a fresh connection answers 200 within `limit`.
async fn healthz(addr: &str, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        let mut c = TcpStream::connect(addr).await.ok()?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"HTTP/1.1 200"))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Sample the peak `VmRSS` for `secs` seconds.
async fn peak_rss(pid: u32, secs: u64) -> f64 {
    let mut peak: f64 = 0.0;
    for _ in 0..secs * 4 {
        peak = peak.max(memory_mib(pid, "VmRSS"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    peak
}

fn basic(token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("AWS:{token}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = Args::parse();
    let before = memory_mib(a.pid, "VmRSS");
    let out = match a.command.as_str() {
        "body" => body(&a).await,
        "h2body" => h2body(&a).await,
        "idle" => idle(&a).await,
        "trickle" => trickle(&a).await,
        "stall" => stall(&a).await,
        "heads" => heads(&a).await,
        "methods" => methods(&a).await,
        "sessions" => sessions(&a).await,
        "layers" => layers(&a).await,
        other => panic!("unknown command {other}"),
    };
    let mut out = out;
    out["attack"] = json!(a.command);
    out["rss_before_mib"] = json!(before);
    println!("{out}");
}

async fn body(a: &Args) -> Value {
    let (conns, size) = (a.num("conns", 80), a.num("mib", 29) << 20);
    let sent = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::new();
    for _ in 0..conns {
        let (addr, sent) = (a.addr.clone(), sent.clone());
        held.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(&addr).await.ok()?;
            let head = format!(
                "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: AmazonEC2ContainerRegistry_V20150921.UploadLayerPart\r\nContent-Length: {size}\r\n\r\n"
            );
            c.write_all(head.as_bytes()).await.ok()?;
            let chunk = vec![b'a'; 1 << 20];
            let mut left = size - 1;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if c.write_all(&chunk[..n]).await.is_err() {
                    break;
                }
                left -= n as u64;
                sent.fetch_add(n, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Some(c)
        }));
    }
    let during = peak_rss(a.pid, 15).await;
    let health = healthz(&a.addr, Duration::from_secs(3)).await;
    for h in &held {
        h.abort();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    json!({
        "conns": conns, "declared_mib": size >> 20,
        "client_sent_mib": sent.load(Ordering::Relaxed) >> 20,
        "rss_during_mib": during, "rss_after_mib": memory_mib(a.pid, "VmRSS"),
        "healthz_during": health,
    })
}

async fn h2body(a: &Args) -> Value {
    let (streams, size) = (a.num("streams", 20), a.num("mib", 29) << 20);
    let tcp = TcpStream::connect(&a.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut tasks = Vec::new();
    let sent = Arc::new(AtomicUsize::new(0));
    for _ in 0..streams {
        let send = send.clone();
        let (addr, sent) = (a.addr.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("http://{addr}/"))
                .header("content-type", "application/x-amz-json-1.1")
                .header(
                    "x-amz-target",
                    "AmazonEC2ContainerRegistry_V20150921.UploadLayerPart",
                )
                .header("content-length", size.to_string())
                .body(())
                .unwrap();
            let Ok(send) = send.ready().await else { return };
            let mut send = send;
            let Ok((_resp, mut body)) = send.send_request(req, false) else {
                return;
            };
            let mut left = (size - 1) as usize;
            while left > 0 {
                body.reserve_capacity(left.min(1 << 20));
                let cap = match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                    Some(Ok(n)) => n,
                    _ => return,
                };
                let n = cap.min(left);
                if body
                    .send_data(bytes::Bytes::from(vec![b'a'; n]), false)
                    .is_err()
                {
                    return;
                }
                left -= n;
                sent.fetch_add(n, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }));
    }
    let during = peak_rss(a.pid, 15).await;
    for t in &tasks {
        t.abort();
    }
    driver.abort();
    tokio::time::sleep(Duration::from_secs(3)).await;
    json!({
        "streams": streams, "declared_mib": size >> 20,
        "client_sent_mib": sent.load(Ordering::Relaxed) >> 20,
        "rss_during_mib": during, "rss_after_mib": memory_mib(a.pid, "VmRSS"),
    })
}

async fn idle(a: &Args) -> Value {
    let conns = a.num("conns", 600);
    let mut held = Vec::new();
    for _ in 0..conns {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&a.addr)).await
        {
            held.push(c);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut reachable = 0;
    for _ in 0..5 {
        if healthz(&a.addr, Duration::from_secs(3)).await {
            reachable += 1;
        }
    }
    let mut open = 0;
    for c in &held {
        let mut buf = [0u8; 1];
        // Open connections have nothing to read (would block); closed ones read EOF.
        if let Err(e) = c.try_read(&mut buf)
            && e.kind() == std::io::ErrorKind::WouldBlock
        {
            open += 1;
        }
    }
    json!({
        "conns": conns, "connected": held.len(), "still_open": open,
        "healthz_reachable_of_5": reachable, "rss_mib": memory_mib(a.pid, "VmRSS"),
    })
}

async fn trickle(a: &Args) -> Value {
    let (conns, every, secs) = (a.num("conns", 2000), a.num("every", 5), a.num("secs", 40));
    let open = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (addr, open) = (a.addr.clone(), open.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut c) = TcpStream::connect(&addr).await else {
                return;
            };
            open.fetch_add(1, Ordering::Relaxed);
            let _ = c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").await;
            for i in 0.. {
                tokio::time::sleep(Duration::from_secs(every)).await;
                let mut probe = [0u8; 256];
                let closed = matches!(c.try_read(&mut probe), Ok(0))
                    || c.write_all(format!("X-{i}: y\r\n").as_bytes())
                        .await
                        .is_err();
                if closed {
                    open.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let still = open.load(Ordering::Relaxed);
    let health = healthz(&a.addr, Duration::from_secs(3)).await;
    for t in &tasks {
        t.abort();
    }
    json!({ "conns": conns, "every_s": every, "after_s": secs, "still_open": still,
            "healthz": health, "rss_mib": memory_mib(a.pid, "VmRSS") })
}

async fn stall(a: &Args) -> Value {
    let conns = a.num("conns", 100);
    let (path, token) = (a.get("path", ""), a.get("token", ""));
    let mut held = Vec::new();
    for _ in 0..conns {
        let mut c = TcpStream::connect(&a.addr).await.unwrap();
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Basic {}\r\n", basic(&token))
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        held.push(c);
    }
    let during = peak_rss(a.pid, 10).await;
    let health = healthz(&a.addr, Duration::from_secs(3)).await;
    // After a minute and a half of not reading: which downloads does the
    // server still hold open? Read each to its end: a connection the server
    // gave up on ends early; one it still serves delivers the whole blob.
    tokio::time::sleep(Duration::from_secs(90)).await;
    let mut completed = 0;
    for c in &mut held {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            // The whole blob (16 MiB) and its headers, or the end of the connection.
            while total < (16 << 20) {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
        if total >= 16 << 20 {
            completed += 1;
        }
    }
    json!({ "conns": conns, "rss_during_mib": during, "healthz_during": health,
            "still_served_after_90s": completed })
}

async fn heads(a: &Args) -> Value {
    let (count, token) = (a.num("count", 100_000), a.get("token", ""));
    let auth = basic(&token);
    let workers = 8;
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..workers {
        let (addr, auth) = (a.addr.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(&addr).await.unwrap();
            let mut buf = vec![0u8; 8192];
            for _ in 0..count / workers {
                let n = uuid::Uuid::new_v4().simple().to_string();
                let req = format!(
                    "HEAD /v2/probe/{n}/manifests/latest HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n"
                );
                if c.write_all(req.as_bytes()).await.is_err() {
                    c = TcpStream::connect(&addr).await.unwrap();
                    continue;
                }
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => c = TcpStream::connect(&addr).await.unwrap(),
                    Ok(_) => {}
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    json!({ "count": count, "secs": start.elapsed().as_secs_f64(),
            "rss_after_mib": memory_mib(a.pid, "VmRSS") })
}

async fn methods(a: &Args) -> Value {
    let (count, len) = (a.num("count", 50_000), a.num("len", 1000) as usize);
    let mut c = TcpStream::connect(&a.addr).await.unwrap();
    let mut buf = vec![0u8; 8192];
    for i in 0..count {
        let m: String = format!("{i:x}")
            .chars()
            .cycle()
            .take(len)
            .map(|ch| ch.to_ascii_uppercase())
            .collect();
        let req = format!("{m}X /v2/ HTTP/1.1\r\nHost: x\r\n\r\n");
        if c.write_all(req.as_bytes()).await.is_err() {
            c = TcpStream::connect(&a.addr).await.unwrap();
            continue;
        }
        match c.read(&mut buf).await {
            Ok(0) | Err(_) => c = TcpStream::connect(&a.addr).await.unwrap(),
            Ok(_) => {}
        }
    }
    let page = reqwest::get(format!("http://{}/metrics", a.addr))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    json!({ "count": count, "method_len": len, "metrics_page_bytes": page.len(),
            "rss_after_mib": memory_mib(a.pid, "VmRSS") })
}

async fn sessions(a: &Args) -> Value {
    let (count, repo, token) = (
        a.num("count", 5000),
        a.get("repo", "abuse/sessions"),
        a.get("token", ""),
    );
    let c = reqwest::Client::new();
    let (mut opened, mut refused, mut other) = (0, 0, 0);
    let start = Instant::now();
    for _ in 0..count {
        let mut req = c.post(format!("http://{}/v2/{repo}/blobs/uploads/", a.addr));
        if !token.is_empty() {
            req = req.basic_auth("AWS", Some(&token));
        }
        match req.send().await.map(|r| r.status().as_u16()) {
            Ok(202) => opened += 1,
            Ok(429) => refused += 1,
            _ => other += 1,
        }
    }
    json!({ "count": count, "opened": opened, "refused_429": refused, "other": other,
            "secs": start.elapsed().as_secs_f64() })
}

async fn layers(a: &Args) -> Value {
    let (count, repo, token) = (
        a.num("count", 75_000),
        a.get("repo", "abuse/layers"),
        a.get("token", ""),
    );
    let c = reqwest::Client::new();
    let base = format!("http://{}", a.addr);
    let auth = |r: reqwest::RequestBuilder| {
        if token.is_empty() {
            r
        } else {
            r.basic_auth("AWS", Some(&token))
        }
    };
    let push = async |repo: &str, bytes: Vec<u8>| {
        let d = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        );
        let r = auth(c.post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}")))
            .body(bytes)
            .send()
            .await
            .unwrap();
        (d, r.status().as_u16())
    };
    let (layer, _) = push(&repo, b"the one layer".to_vec()).await;
    let (config, _) = push(&repo, b"{}".to_vec()).await;
    // Short descriptors, so that 75,000 of them fit under the 8 MiB manifest limit.
    let descriptor = json!({"mediaType": "x", "digest": layer, "size": 13});
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": vec![descriptor; count as usize],
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let other = a.get("other-repo", "abuse/other");
    let big = tokio::spawn({
        let req = auth(c.put(format!("{base}/v2/{repo}/manifests/many")))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body);
        async move {
            let t = Instant::now();
            let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, t.elapsed().as_secs_f64())
        }
    });
    // Meanwhile, another tenant's small pushes, timed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut slowest: f64 = 0.0;
    for i in 0..20 {
        let t = Instant::now();
        push(
            &other,
            format!("small blob {i} {}", uuid::Uuid::new_v4()).into_bytes(),
        )
        .await;
        slowest = slowest.max(t.elapsed().as_secs_f64());
    }
    let (status, secs) = big.await.unwrap();
    json!({ "layers": count, "put_status": status, "put_secs": secs,
            "slowest_other_push_secs": slowest })
}
