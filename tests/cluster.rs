//! Several `berth serve` nodes of one deployment: one PostgreSQL database and
//! one S3 prefix (the servers of `tests/services/start.sh`), each node with
//! its own data directory and port, as behind a load balancer. What one node
//! acknowledges every other serves; uploads move between nodes; a node
//! killed mid-push loses nothing acknowledged; PostgreSQL and S3 outages are
//! answered with 503 and heal by themselves; background jobs run on one
//! node at a time and `berth gc pause` pauses every node.

mod common;

use std::time::{Duration, Instant};

use common::image::{OCI_MANIFEST, manifest};
use common::{Deployment, Server, ecr, registry_token, sha256};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Deterministic bytes, different for every `seed`.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The `Authorization` docker sends after `docker login --username AWS`.
fn basic(password: &str) -> String {
    use base64::Engine;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    format!("Basic {creds}")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `n` nodes of `deployment`, started at the same moment (in ECR mode with
/// the test account, or open with `--auth none`).
fn start_nodes(
    deployment: &Deployment,
    dir: &std::path::Path,
    n: usize,
    ecr_mode: bool,
    extra: &[&str],
) -> Vec<Server> {
    let starts: Vec<_> = (0..n)
        .map(|i| {
            let (d, data) = (deployment.clone(), dir.join(format!("node{i}")));
            let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            std::thread::spawn(move || {
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                if ecr_mode {
                    Server::start_ecr_in(&d, &data, &extra)
                } else {
                    Server::start_in(&d, &data, &extra)
                }
            })
        })
        .collect();
    starts.into_iter().map(|t| t.join().unwrap()).collect()
}

/// A pusher/puller speaking `/v2/` to one node, with an optional bearer.
struct V2<'a> {
    node: &'a Server,
    auth: Option<String>,
}

impl V2<'_> {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = http().request(method, self.node.url(path));
        match &self.auth {
            Some(a) => r.header("authorization", a),
            None => r,
        }
    }

    /// Upload `data` in one request; the status.
    async fn blob(&self, repo: &str, data: &[u8]) -> StatusCode {
        let d = sha256(data);
        self.req(
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        )
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .map_or(StatusCode::BAD_GATEWAY, |r| r.status())
    }

    /// Push an image of `layers` (and a config) as `tag`; its manifest
    /// digest, or the first status that was not a success.
    async fn image(&self, repo: &str, tag: &str, layers: &[Vec<u8>]) -> Result<String, StatusCode> {
        let config = format!("{{\"tag\":\"{tag}\"}}").into_bytes();
        for b in layers.iter().chain([&config]) {
            let st = self.blob(repo, b).await;
            if st != StatusCode::CREATED {
                return Err(st);
            }
        }
        let m = manifest(&config, layers);
        let r = self
            .req(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(m.clone())
            .send()
            .await
            .map_err(|_| StatusCode::BAD_GATEWAY)?;
        if r.status() != StatusCode::CREATED {
            return Err(r.status());
        }
        Ok(sha256(&m))
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.req(reqwest::Method::GET, path)
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap()
    }

    /// Pull `reference` and every blob of it, checking every digest.
    async fn pull(&self, repo: &str, reference: &str) -> Vec<String> {
        let r = self.get(&format!("/v2/{repo}/manifests/{reference}")).await;
        assert_eq!(r.status(), 200, "{repo}:{reference} via {}", self.node.addr);
        let m: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let mut digests = vec![m["config"]["digest"].as_str().unwrap().to_string()];
        for l in m["layers"].as_array().unwrap() {
            digests.push(l["digest"].as_str().unwrap().to_string());
        }
        for d in &digests {
            let r = self.get(&format!("/v2/{repo}/blobs/{d}")).await;
            assert_eq!(
                r.status(),
                200,
                "blob {d} of {repo}:{reference} via {}",
                self.node.addr
            );
            assert_eq!(&sha256(&r.bytes().await.unwrap()), d, "blob {d} corrupt");
        }
        digests
    }
}

#[tokio::test]
async fn nodes_started_together_come_up_and_serve_each_others_pushes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Deployment::scale_out();
    // Three nodes on an empty database at the same moment: one bootstraps,
    // the others find the account it made.
    let nodes = start_nodes(&d, tmp.path(), 3, true, &[]);
    ecr(
        &nodes[0],
        "CreateRepository",
        json!({ "repositoryName": "app" }),
    )
    .await;
    // A token one node issued is good on every node.
    let token = basic(&registry_token(&nodes[1]).await);
    let v2 = |i: usize| V2 {
        node: &nodes[i],
        auth: Some(token.clone()),
    };
    let layers = vec![bytes(1, 3 << 20), bytes(2, 40_000)];
    let digest = v2(0).image("app", "v1", &layers).await.unwrap();
    for i in 0..3 {
        let pulled = v2(i).pull("app", "v1").await;
        assert_eq!(pulled[1], sha256(&layers[0]));
        let r = v2(i).get("/v2/app/tags/list").await;
        assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["v1"]));
    }
    let described = ecr(
        &nodes[2],
        "DescribeImages",
        json!({ "repositoryName": "app" }),
    )
    .await;
    assert_eq!(described["imageDetails"][0]["imageDigest"], digest.as_str());
    // A delete through one node is seen by the others.
    let r = v2(1)
        .req(
            reqwest::Method::DELETE,
            &format!("/v2/app/manifests/{digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for i in [0, 2] {
        assert_eq!(v2(i).get("/v2/app/manifests/v1").await.status(), 404);
    }
}

#[tokio::test]
async fn a_chunked_upload_moves_between_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Deployment::scale_out();
    let nodes = start_nodes(&d, tmp.path(), 3, false, &[]);
    let c = http();
    // 20 MiB (more than a part) on node 0, 1 MiB on node 1, 3 MiB with the
    // commit on node 2.
    let data = bytes(7, 24 << 20);
    let (a, b) = (20 << 20, 21 << 20);
    let r = c
        .post(nodes[0].url("/v2/moving/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    for (node, range) in [(0, 0..a), (1, a..b)] {
        let r = c
            .patch(nodes[node].url(&loc))
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{}-{}", range.start, range.end - 1),
            )
            .body(data[range.clone()].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "chunk on node {node}");
        assert_eq!(
            r.headers()["range"],
            format!("0-{}", range.end - 1).as_str()
        );
    }
    let r = c.get(nodes[2].url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], format!("0-{}", b - 1).as_str());
    // A chunk that does not start where the upload ends is refused by any node.
    let r = c
        .patch(nodes[0].url(&loc))
        .header("content-range", format!("{a}-{}", b - 1))
        .body(data[a..b].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let digest = sha256(&data);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(nodes[2].url(&format!("{loc}{sep}digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data[b..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    for n in &nodes {
        let got = common::pull_blob(&c, n, "moving", &digest).await;
        assert_eq!(sha256(&got), digest);
    }
    assert_eq!(nodes[0].open_stored_blob(&digest).unwrap(), data);
    assert_ne!(
        nodes[0].stored_blob(&digest).unwrap(),
        data,
        "stored in plaintext"
    );
    assert_eq!(nodes[0].staged_uploads(), 0, "staging left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_node_during_concurrent_pushes_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Deployment::scale_out();
    let mut nodes = start_nodes(&d, tmp.path(), 3, false, &[]);
    let bases: Vec<String> = nodes.iter().map(|n| n.url("")).collect();
    // An upload with an acknowledged chunk on the node that will die.
    let c = http();
    let r = c
        .post(nodes[1].url("/v2/survivor/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let half = bytes(99, 6 << 20);
    let r = c
        .patch(nodes[1].url(&loc))
        .body(half.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Six writers, two per node, push images until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..6u64)
        .map(|w| {
            let base = bases[w as usize % 3].clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let c = http();
                let mut acked = Vec::new();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let repo = format!("kill/w{w}");
                    let layer = bytes(
                        w * 1000 + n,
                        if n.is_multiple_of(3) {
                            5 << 20
                        } else {
                            200_000
                        },
                    );
                    let config = format!("{{\"w\":{w},\"n\":{n}}}").into_bytes();
                    let mut ok = true;
                    for b in [&layer, &config] {
                        let d = sha256(b);
                        let st = c
                            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
                            .body(b.clone())
                            .send()
                            .await
                            .map_or(0, |r| r.status().as_u16());
                        ok &= st == 201;
                    }
                    if !ok {
                        // This writer's node is gone.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let m = manifest(&config, &[layer]);
                    let st = c
                        .put(format!("{base}/v2/{repo}/manifests/t{n}"))
                        .header("content-type", OCI_MANIFEST)
                        .body(m.clone())
                        .send()
                        .await
                        .map_or(0, |r| r.status().as_u16());
                    if st == 201 {
                        acked.push((repo, format!("t{n}"), sha256(&m)));
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    nodes[1].kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 10, "only {} images acknowledged", acked.len());
    // Every acknowledged image, whichever node took it, is whole on the survivors.
    for (repo, tag, digest) in &acked {
        for i in [0, 2] {
            let v2 = V2 {
                node: &nodes[i],
                auth: None,
            };
            v2.pull(repo, tag).await;
            let r = v2.get(&format!("/v2/{repo}/manifests/{tag}")).await;
            assert_eq!(sha256(&r.bytes().await.unwrap()), *digest);
        }
    }
    // The dead node's upload continues on another node once its lease lapses.
    let rest = bytes(100, 1 << 20);
    let digest = sha256(&[half.as_slice(), rest.as_slice()].concat());
    let sep = if loc.contains('?') { '&' } else { '?' };
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = c
            .put(nodes[2].url(&format!("{loc}{sep}digest={digest}")))
            .header(
                "content-range",
                format!("{}-{}", half.len(), half.len() + rest.len() - 1),
            )
            .body(rest.clone())
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::CREATED {
            break;
        }
        assert_eq!(
            r.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{:?}",
            r.text().await
        );
        assert!(
            Instant::now() < deadline,
            "the dead node's lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let v2 = V2 {
        node: &nodes[0],
        auth: None,
    };
    let r = v2.get(&format!("/v2/survivor/blobs/{digest}")).await;
    assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
    // Every stored blob is complete: nothing partial is visible.
    for (d, _) in nodes[0].stored_blobs() {
        if let Some(bytes) = nodes[0].open_stored_blob(&d) {
            assert_eq!(sha256(&bytes), d);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_of_postgres_and_s3_answer_503_and_heal() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, pg, s3) = Deployment::scale_out().proxied("127.0.0.1".parse().unwrap());
    let node = Server::start_ecr_in(&d, &tmp.path().join("node"), &[]);
    ecr(
        &node,
        "CreateRepository",
        json!({ "repositoryName": "app" }),
    )
    .await;
    let token = basic(&registry_token(&node).await);
    let v2 = V2 {
        node: &node,
        auth: Some(token),
    };
    let layer = bytes(5, 2 << 20);
    v2.image("app", "v1", std::slice::from_ref(&layer))
        .await
        .unwrap();

    // PostgreSQL goes away: requests fail with 503 (not 500, not a hang),
    // in both protocols, and the node serves again once it is back.
    pg.cut();
    let r = v2.get("/v2/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("UNAVAILABLE"));
    let (status, v) = common::ecr_call(
        &node,
        common::ROOT_KEY_ID,
        common::ROOT_SECRET,
        "DescribeImages",
        json!({ "repositoryName": "app" }),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["__type"], "ServiceUnavailableException", "{v}");
    pg.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    while v2.get("/v2/app/manifests/v1").await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "the node did not recover from the PostgreSQL outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    v2.pull("app", "v1").await;

    // S3 goes away: blob reads and writes answer 503, metadata still
    // answers, nothing partial becomes visible, and an upload resumes.
    let r = http()
        .post(node.url("/v2/app/blobs/uploads/"))
        .header("authorization", v2.auth.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let first = bytes(6, 1 << 20);
    let r = v2
        .req(reqwest::Method::PATCH, &loc)
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    s3.cut();
    assert_eq!(
        v2.get(&format!("/v2/app/blobs/{}", sha256(&layer)))
            .await
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(v2.get("/v2/app/manifests/v1").await.status(), 200);
    let fresh = bytes(8, 300_000);
    assert_eq!(
        v2.blob("app", &fresh).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let second = bytes(9, 1 << 20);
    let r = v2
        .req(reqwest::Method::PATCH, &loc)
        .body(second.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    s3.restore();
    let r = v2.get(&format!("/v2/app/blobs/{}", sha256(&fresh))).await;
    assert_eq!(
        r.status(),
        404,
        "a blob refused during the outage is visible"
    );
    let r = v2.get(&loc).await;
    assert_eq!(
        r.headers()["range"],
        format!("0-{}", first.len() - 1).as_str()
    );
    let r = v2
        .req(reqwest::Method::PATCH, &loc)
        .header(
            "content-range",
            format!("{}-{}", first.len(), first.len() + second.len() - 1),
        )
        .body(second.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    let all = [first, second].concat();
    let digest = sha256(&all);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = v2
        .req(reqwest::Method::PUT, &format!("{loc}{sep}digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let r = v2.get(&format!("/v2/app/blobs/{digest}")).await;
    assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
    v2.pull("app", "v1").await;
}

#[tokio::test]
async fn background_jobs_are_shared_and_gc_pauses_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Deployment::scale_out();
    let fast = ["--gc-interval", "1s", "--gc-grace", "1s"];
    let nodes = start_nodes(&d, tmp.path(), 2, false, &fast);
    let run = |args: &[&str]| -> Value {
        let out = nodes[0].command(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "berth {args:?}: {}",
            common::tail(&out.stderr, 2000)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(run(&["gc", "pause"])["paused"], true);
    // An unreferenced blob outlives its grace period while GC is paused ...
    let c = http();
    let orphan = common::push_blob(&c, &nodes[1], "jobs/app", &bytes(3, 1000)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        nodes[0].stored_blob(&orphan).is_some(),
        "collected while paused"
    );
    // ... and goes soon after it resumes, collected by one node or the other.
    assert_eq!(run(&["gc", "resume"])["wasPaused"], true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes[0].stored_blob(&orphan).is_some() {
        assert!(Instant::now() < deadline, "not collected after resume");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // One row per periodic job for the whole deployment, each run since.
    let jobs = run(&["jobs", "list"]);
    let kinds: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| !j["periodSeconds"].is_null())
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "audit-retention",
            "gc",
            "kms-keys",
            "lifecycle",
            "reap-uploads",
            "replication",
            "reseal"
        ],
        "{jobs}"
    );
    let gc = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "gc")
        .unwrap();
    assert!(!gc["lastFinishedAt"].is_null(), "{gc}");
    let m: String = [
        common::metrics(&nodes[0]).await,
        common::metrics(&nodes[1]).await,
    ]
    .concat();
    assert!(
        m.contains("berth_job_runs_total{kind=\"gc\",outcome=\"ok\"}"),
        "{m}"
    );
}
