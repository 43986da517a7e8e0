//! A bounded soak under attack: while hostile clients hold idle connections,
//! trickle headers, declare huge unauthenticated and authenticated bodies and
//! stall them, stall downloads, flood upload sessions, and probe random
//! repository names and made-up methods, well-behaved docker and skopeo
//! pushes and pulls go on and must succeed with byte-identical digests, the
//! health check must answer promptly, and the server's memory must stay under
//! a stated bound (`MEMORY_BOUND_MIB`). `BERTH_SOAK_SECS` sets the length
//! (default 30 s).
//!
//! Attackers connect from 127.0.0.2-127.0.0.9 (every 127/8 address is
//! loopback on Linux), the good clients from 127.0.0.1, as they would from
//! different machines.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::raw;
use common::{
    ACCOUNT, ROOT_KEY_ID, ROOT_SECRET, Server, berth_iam, ecr, ecr_headers, registry_token,
    registry_token_as, require, tail,
};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// Peak resident memory the server may reach during the soak.
const MEMORY_BOUND_MIB: u64 = 256;

fn soak_secs() -> u64 {
    std::env::var("BERTH_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

/// Runs `attack` in a loop from `from` until `stop`; counts rounds.
fn attacker<F, Fut>(
    stop: &Arc<AtomicBool>,
    rounds: &Arc<AtomicU64>,
    copies: usize,
    attack: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    (0..copies)
        .map(|_| {
            let (stop, rounds, attack) = (stop.clone(), rounds.clone(), attack.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    attack().await;
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a client");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        tail(&out.stdout, 4000),
        tail(&out.stderr, 4000)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn good_clients_keep_working_while_hostile_ones_attack() {
    require("docker");
    require("skopeo");
    let s = Arc::new(Server::start_ecr_with(&[
        "--send-timeout",
        "5s",
        "--idle-timeout",
        "10s",
        "--body-timeout",
        "10s",
        "--api-body-timeout",
        "20s",
        "--max-uploads-per-caller",
        // Low enough that the flood reaches it within seconds even on a
        // loaded 2-core machine (at 300 it was reached only near the end).
        "100",
    ]));
    let addr = s.addr.clone();
    for repo in ["soak/good", "soak/target"] {
        ecr(&s, "CreateRepository", json!({ "repositoryName": repo })).await;
    }
    let token = registry_token(&s).await;
    // The session flood runs under a key of its own: quotas are per caller.
    let key = berth_iam(&s, &["create-access-key", "--account-id", ACCOUNT]);
    let flood_token = registry_token_as(
        &s,
        key["AccessKey"]["AccessKeyId"].as_str().unwrap(),
        key["AccessKey"]["SecretAccessKey"].as_str().unwrap(),
    )
    .await;
    // A 16 MiB blob to download, pushed through /v2/ with the token.
    let big: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 253) as u8).collect();
    let big_digest = common::sha256(&big);
    let c = reqwest::Client::new();
    let r = c
        .post(s.url(&format!(
            "/v2/soak/target/blobs/uploads/?digest={big_digest}"
        )))
        .basic_auth("AWS", Some(&token))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let start_rss = s.memory_kib("VmRSS");

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Silent connections.
    let a = addr.clone();
    tasks.extend(attacker(&stop, &rounds, 300, move || {
        let a = a.clone();
        async move {
            let mut c = raw::connect_from("127.0.0.2", &a).await;
            raw::closed_within(&mut c, Duration::from_secs(60)).await;
        }
    }));
    // Header trickle: a line a second, never done.
    let a = addr.clone();
    tasks.extend(attacker(&stop, &rounds, 100, move || {
        let a = a.clone();
        async move {
            let mut c = raw::connect_from("127.0.0.3", &a).await;
            let _ = c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").await;
            for i in 0..120 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if c.write_all(format!("X-{i}: y\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }));
    // Unauthenticated 29 MiB bodies, sent slowly.
    let a = addr.clone();
    tasks.extend(attacker(&stop, &rounds, 80, move || {
        let a = a.clone();
        async move {
            let mut c = raw::connect_from("127.0.0.4", &a).await;
            let head = format!(
                "POST / HTTP/1.1\r\nHost: {a}\r\nX-Amz-Target: AmazonEC2ContainerRegistry_V20150921.UploadLayerPart\r\nContent-Length: {}\r\n\r\n",
                29 << 20
            );
            let _ = c.write_all(head.as_bytes()).await;
            for _ in 0..29 {
                if c.write_all(&[b'a'; 1 << 20]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }));
    // Signed 28 MiB UploadLayerPart bodies that stall: the signature is only
    // checkable once the body is in, so these do take budget, up to the
    // per-client share.
    let srv = s.clone();
    tasks.extend(attacker(&stop, &rounds, 20, move || {
        let srv = srv.clone();
        async move {
            let declared = 28 << 20;
            let h = ecr_headers(
                &srv,
                "UploadLayerPart",
                &vec![b' '; declared],
                ROOT_KEY_ID,
                ROOT_SECRET,
            );
            let mut head = format!(
                "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: {declared}\r\n",
                srv.addr
            );
            for (k, v) in &h {
                head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
            }
            head.push_str("\r\n");
            let mut c = raw::connect_from("127.0.0.5", &srv.addr).await;
            let _ = c.write_all(head.as_bytes()).await;
            for _ in 0..8 {
                if c.write_all(&vec![b' '; 1 << 20]).await.is_err() {
                    return;
                }
            }
            raw::closed_within(&mut c, Duration::from_secs(60)).await;
        }
    }));
    // Downloads that are never read.
    let (a, t, d) = (addr.clone(), token.clone(), big_digest.clone());
    tasks.extend(attacker(&stop, &rounds, 40, move || {
        let (a, t, d) = (a.clone(), t.clone(), d.clone());
        async move {
            use base64::Engine;
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{t}"));
            let mut c = raw::connect_from("127.0.0.6", &a).await;
            let req = format!(
                "GET /v2/soak/target/blobs/{d} HTTP/1.1\r\nHost: {a}\r\nAuthorization: Basic {auth}\r\n\r\n"
            );
            let _ = c.write_all(req.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
    }));
    // Upload sessions, as many as will be opened.
    let (srv, t) = (s.clone(), flood_token.clone());
    let sessions_refused = Arc::new(AtomicU64::new(0));
    let refused = sessions_refused.clone();
    tasks.extend(attacker(&stop, &rounds, 4, move || {
        let (srv, t, refused) = (srv.clone(), t.clone(), refused.clone());
        async move {
            let r = reqwest::Client::builder()
                .local_address("127.0.0.7".parse::<std::net::IpAddr>().unwrap())
                .build()
                .unwrap()
                .post(srv.url("/v2/soak/target/blobs/uploads/"))
                .basic_auth("AWS", Some(&t))
                .send()
                .await;
            if let Ok(r) = r
                && r.status() == 429
            {
                refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }));
    // Random repository names and made-up methods.
    let a = addr.clone();
    let t = token.clone();
    tasks.extend(attacker(&stop, &rounds, 4, move || {
        let (a, t) = (a.clone(), t.clone());
        async move {
            use base64::Engine;
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{t}"));
            let mut c = raw::connect_from("127.0.0.8", &a).await;
            for _ in 0..200 {
                let n = uuid::Uuid::new_v4().simple().to_string();
                let req = format!(
                    "HEAD /v2/probe/{n}/manifests/latest HTTP/1.1\r\nHost: {a}\r\nAuthorization: Basic {auth}\r\n\r\n{n:.8} /v2/ HTTP/1.1\r\nHost: {a}\r\n\r\n"
                );
                if c.write_all(req.as_bytes()).await.is_err() {
                    return;
                }
                if raw::read_reply(&mut c, Duration::from_secs(5)).await.is_none() {
                    return;
                }
                let _ = raw::read_reply(&mut c, Duration::from_secs(5)).await;
            }
        }
    }));
    // The memory watcher and the health check.
    let peak = Arc::new(AtomicU64::new(0));
    let slow_health = Arc::new(AtomicU64::new(0));
    let (p, sh, st, srv) = (peak.clone(), slow_health.clone(), stop.clone(), s.clone());
    tasks.push(tokio::spawn(async move {
        let c = reqwest::Client::new();
        while !st.load(Ordering::Relaxed) {
            p.fetch_max(srv.memory_kib("VmRSS"), Ordering::Relaxed);
            let t0 = Instant::now();
            let ok =
                tokio::time::timeout(Duration::from_secs(3), c.get(srv.url("/healthz")).send())
                    .await
                    .is_ok_and(|r| r.is_ok_and(|r| r.status() == 200));
            if !ok || t0.elapsed() > Duration::from_secs(2) {
                sh.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }));

    // The well-behaved clients, meanwhile.
    let work = tempfile::tempdir().unwrap();
    let docker_config = work.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    let docker = |args: &[&str]| {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", &docker_config).args(args);
        run(&mut c)
    };
    let mut login = Command::new("docker");
    login.env("DOCKER_CONFIG", &docker_config).args([
        "login",
        "--username",
        "AWS",
        "--password",
        &token,
        &addr,
    ]);
    run(&mut login);
    let deadline = Instant::now() + Duration::from_secs(soak_secs());
    let mut cycles = 0;
    let mut images = Vec::new();
    while Instant::now() < deadline || cycles == 0 {
        let ctx = work.path().join(format!("ctx{cycles}"));
        std::fs::create_dir_all(&ctx).unwrap();
        let payload: Vec<u8> = (0..(1u32 << 20))
            .map(|i| ((i ^ cycles) % 251) as u8)
            .collect();
        std::fs::write(ctx.join("payload"), &payload).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM scratch\nCOPY payload /payload\n",
        )
        .unwrap();
        let image = format!("{addr}/soak/good:c{cycles}");
        docker(&["build", "-q", "-t", &image, ctx.to_str().unwrap()]);
        let built = docker(&["image", "inspect", "--format", "{{.Id}}", &image]);
        docker(&["push", "-q", &image]);
        docker(&["rmi", "-f", &image]);
        docker(&["pull", "-q", &image]);
        let pulled = docker(&["image", "inspect", "--format", "{{.Id}}", &image]);
        assert_eq!(built.trim(), pulled.trim(), "docker pulled another image");
        // skopeo pulls it too; the layer on disk is the pushed one.
        let out = work.path().join(format!("skopeo{cycles}"));
        let mut sk = Command::new("skopeo");
        sk.args([
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("AWS:{token}"),
            &format!("docker://{image}"),
            &format!("dir:{}", out.display()),
        ]);
        run(&mut sk);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            let d = layer["digest"].as_str().unwrap();
            let bytes = std::fs::read(out.join(d.strip_prefix("sha256:").unwrap())).unwrap();
            assert_eq!(common::sha256(&bytes), d);
        }
        images.push(image);
        cycles += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }
    for image in &images {
        let _ = Command::new("docker")
            .env("DOCKER_CONFIG", &docker_config)
            .args(["rmi", "-f", image])
            .output();
    }
    let peak_mib = peak.load(Ordering::Relaxed) / 1024;
    let hwm_mib = s.memory_kib("VmHWM") / 1024;
    eprintln!(
        "soak: {cycles} push/pull cycles, {} attack rounds, {} upload sessions refused, \
         RSS {} MiB at start, peak {peak_mib} MiB (VmHWM {hwm_mib} MiB), {} slow health checks",
        rounds.load(Ordering::Relaxed),
        sessions_refused.load(Ordering::Relaxed),
        start_rss / 1024,
        slow_health.load(Ordering::Relaxed)
    );
    assert!(cycles >= 1);
    assert!(
        hwm_mib < MEMORY_BOUND_MIB,
        "peak memory {hwm_mib} MiB over the {MEMORY_BOUND_MIB} MiB bound"
    );
    assert_eq!(
        slow_health.load(Ordering::Relaxed),
        0,
        "the health check was slow or unreachable"
    );
    assert!(
        sessions_refused.load(Ordering::Relaxed) > 0,
        "the upload quota never applied"
    );
    // The metrics page stayed small (no series per made-up method or repository).
    let m = common::metrics(&s).await;
    assert!(
        m.lines().count() < 2000,
        "{} metric lines",
        m.lines().count()
    );
}
