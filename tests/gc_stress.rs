//! Stress: several clients push images that share layers, delete and retag,
//! while lifecycle policies and garbage collection run every second on the
//! real server. At the end every tagged (and untagged) image is fully
//! pullable with its digests verified, and every blob file on disk is
//! referenced by a manifest or young; after one more collection past the
//! grace period, every file is referenced.
//!
//! On the scale-out backend (`scale_out::…`) the deployment is three nodes on
//! one PostgreSQL database and one S3 prefix, with the clients spread over
//! them; GC and lifecycle (every second) are jobs any of them may run.
//!
//! Bounded for CI (BERTH_STRESS_SECS, default 20 s); run longer by hand:
//! `BERTH_STRESS_SECS=600 cargo test --test gc_stress -- --nocapture`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_ecr::Client;
use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use base64::Engine;
use common::{Backend, Deployment, ROOT_KEY_ID, ROOT_SECRET, Server, sha256};
use serde_json::{Value, json};

const GRACE_SECS: u64 = 2;
const REPOS: [&str; 2] = ["stress/app", "stress/worker"];
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn ecr(s: &Server) -> Client {
    let config = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            ROOT_KEY_ID,
            ROOT_SECRET,
            None,
            None,
            "test",
        ))
        .endpoint_url(s.url(""))
        .build();
    Client::from_conf(config)
}

#[derive(Default)]
struct Counts {
    images: AtomicU64,
    refused: AtomicU64,
    retried: AtomicU64,
    deletes: AtomicU64,
}

struct Pusher {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Pusher {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// HEAD first, upload only if missing (as docker does). Returns false on a
    /// retryable refusal (the digest was being collected).
    async fn blob(&self, repo: &str, data: &[u8]) -> bool {
        let digest = sha256(data);
        let head = self
            .http
            .head(self.url(&format!("/v2/{repo}/blobs/{digest}")))
            .header("authorization", &self.auth)
            .send()
            .await
            .unwrap();
        if head.status() == 200 {
            return true;
        }
        assert_eq!(head.status(), 404, "HEAD blob");
        let start = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .header("authorization", &self.auth)
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 202, "start upload");
        let loc = start.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with('/') {
            self.url(&loc)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = self
            .http
            .put(format!("{loc}{sep}digest={digest}"))
            .header("authorization", &self.auth)
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        match put.status().as_u16() {
            201 => true,
            503 => false,
            s => panic!(
                "upload of {digest} answered {s}: {}",
                put.text().await.unwrap()
            ),
        }
    }

    async fn manifest(&self, repo: &str, reference: &str, body: &[u8]) -> reqwest::Response {
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("authorization", &self.auth)
            .header("content-type", OCI_MANIFEST)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("authorization", &self.auth)
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap()
    }
}

fn layer(kind: &str, n: u64, size: usize) -> Vec<u8> {
    let seed = format!("{kind}-{n}-");
    seed.bytes().cycle().take(size).collect()
}

fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": config.len() },
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(l), "size": l.len()
        })).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

/// One client: push, retag, delete, in a loop until `until`.
async fn client(p: Arc<Pusher>, id: u64, until: Instant, counts: Arc<Counts>) {
    let base = layer("base", 0, 64 << 10);
    let mut mine: Vec<(String, String)> = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let repo = REPOS[((id + n) % 2) as usize];
        let mid = layer("mid", n % 3, 32 << 10);
        let own = layer(&format!("own{id}"), n, 8 << 10);
        let config = format!("{{\"client\":{id},\"n\":{n}}}").into_bytes();
        let mut ok = true;
        for b in [&base[..], &mid, &own, &config] {
            ok &= p.blob(repo, b).await;
        }
        if !ok {
            counts.retried.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let body = image_manifest(&config, &[&base, &mid, &own]);
        let digest = sha256(&body);
        // Tags: versions (kept by count), a moving `latest`, or none.
        let reference = match n % 4 {
            0 => "latest".to_string(),
            1 => digest.clone(),
            _ => format!("v{id}-{n}"),
        };
        let r = p.manifest(repo, &reference, &body).await;
        match r.status().as_u16() {
            201 => {
                counts.images.fetch_add(1, Ordering::Relaxed);
                mine.push((repo.to_string(), digest));
            }
            400 => {
                // MANIFEST_BLOB_UNKNOWN: a blob was collected between the
                // check and the PUT (allowed only past the grace period).
                let text = r.text().await.unwrap();
                assert!(text.contains("MANIFEST_BLOB_UNKNOWN"), "{text}");
                counts.refused.fetch_add(1, Ordering::Relaxed);
            }
            s => panic!("manifest PUT answered {s}: {}", r.text().await.unwrap()),
        }
        // Now and then delete one of our older images.
        if n.is_multiple_of(5) && mine.len() > 2 {
            let (repo, d) = mine.remove(0);
            let r = p
                .http
                .delete(p.url(&format!("/v2/{repo}/manifests/{d}")))
                .header("authorization", &p.auth)
                .send()
                .await
                .unwrap();
            assert!(
                matches!(r.status().as_u16(), 202 | 404),
                "delete answered {}",
                r.status()
            );
            counts.deletes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Fetch a manifest and all its blobs, verifying digests; returns the blob digests.
async fn pull(p: &Pusher, repo: &str, reference: &str) -> Vec<String> {
    let r = p.get(&format!("/v2/{repo}/manifests/{reference}")).await;
    assert_eq!(r.status(), 200, "{repo}:{reference} is not pullable");
    let body = r.bytes().await.unwrap();
    if reference.starts_with("sha256:") {
        assert_eq!(sha256(&body), reference);
    }
    let m: Value = serde_json::from_slice(&body).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    blobs.extend(
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string()),
    );
    for b in &blobs {
        let r = p.get(&format!("/v2/{repo}/blobs/{b}")).await;
        assert_eq!(
            r.status(),
            200,
            "blob {b} of {repo}:{reference} is not pullable"
        );
        assert_eq!(&sha256(&r.bytes().await.unwrap()), b, "blob {b} corrupted");
    }
    blobs
}

/// Pull every image of every repository, by digest and by each tag. Returns
/// the blobs they reference and how many tags were pulled.
async fn pull_everything(c: &Client, p: &Pusher) -> (HashSet<String>, usize) {
    let mut referenced = HashSet::new();
    let mut tagged = 0;
    for r in REPOS {
        let described = c
            .describe_images()
            .repository_name(r)
            .into_paginator()
            .items()
            .send()
            .collect::<Vec<_>>()
            .await;
        for img in described {
            let img = img.unwrap();
            referenced.extend(pull(p, r, img.image_digest().unwrap()).await);
            for t in img.image_tags() {
                tagged += 1;
                pull(p, r, t).await;
            }
        }
    }
    (referenced, tagged)
}

/// Blobs in the storage with their age.
fn files_on_disk(s: &Server) -> BTreeMap<String, Duration> {
    s.stored_blobs()
        .into_iter()
        .filter(|(d, _)| d.starts_with("sha256:"))
        .map(|(d, (_, age))| (d, age))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_push_delete_and_retag_while_lifecycle_and_gc_run() {
    let secs: u64 = std::env::var("BERTH_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let grace = format!("{GRACE_SECS}s");
    let nodes = match common::backend() {
        Backend::Embedded => 1,
        Backend::ScaleOut => 3,
    };
    let deployment = Deployment::new();
    let tmp = tempfile::tempdir().unwrap();
    let servers: Vec<Server> = (0..nodes)
        .map(|i| {
            Server::start_ecr_in(
                &deployment,
                &tmp.path().join(format!("node{i}")),
                &[
                    "--gc-interval",
                    "1s",
                    "--gc-grace",
                    &grace,
                    "--lifecycle-interval",
                    "1s",
                ],
            )
        })
        .collect();
    let s = &servers[0];
    let c = ecr(s);
    let policy = json!({ "rules": [
        { "rulePriority": 1, "description": "keep the newest 3 versions",
          "selection": { "tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 3 },
          "action": { "type": "expire" } },
        { "rulePriority": 2, "description": "keep 2 untagged",
          "selection": { "tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 2 },
          "action": { "type": "expire" } }
    ]})
    .to_string();
    for r in REPOS {
        c.create_repository()
            .repository_name(r)
            .send()
            .await
            .unwrap();
        c.put_lifecycle_policy()
            .repository_name(r)
            .lifecycle_policy_text(&policy)
            .send()
            .await
            .unwrap();
    }
    let token = c.get_authorization_token().send().await.unwrap();
    let token = token.authorization_data()[0]
        .authorization_token()
        .unwrap()
        .to_string();
    // One pusher per node: a token issued by the first works on every node.
    let pushers: Vec<Arc<Pusher>> = servers
        .iter()
        .map(|n| {
            Arc::new(Pusher {
                http: reqwest::Client::new(),
                base: n.url(""),
                auth: format!("Basic {token}"),
            })
        })
        .collect();
    let p = pushers[0].clone();
    // Sanity: the token is what Basic auth wants (AWS:<password>).
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&token)
        .unwrap();
    assert!(decoded.starts_with(b"AWS:"));

    let counts = Arc::new(Counts::default());
    let until = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let p = pushers[id as usize % nodes].clone();
            tokio::spawn(client(p, id, until, counts.clone()))
        })
        .collect();
    for t in clients {
        t.await.unwrap();
    }
    let images = counts.images.load(Ordering::Relaxed);
    println!(
        "pushed {images} images, {} refused manifest PUTs, {} retried uploads, {} deletes",
        counts.refused.load(Ordering::Relaxed),
        counts.retried.load(Ordering::Relaxed),
        counts.deletes.load(Ordering::Relaxed)
    );
    assert!(images > 20, "only {images} images were pushed");
    // Lifecycle runs every second: after one evaluation past the last push
    // its result is stable (nothing new to count), so the listing below is too.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every image still in the registry is fully pullable.
    let disk_before = files_on_disk(s);
    let (referenced, tagged) = pull_everything(&c, &p).await;
    assert!(tagged > 0, "no tagged image survived");
    // Every file on disk is referenced, or young enough that GC may not have reached it yet.
    let young = Duration::from_secs(GRACE_SECS + 1 + 5);
    for (d, age) in &disk_before {
        assert!(
            referenced.contains(d) || *age < young,
            "{d} is unreferenced and {age:?} old"
        );
    }
    // Summed over the nodes: each collection ran on one of them.
    let mut metrics = String::new();
    for n in &pushers {
        metrics += &n.get("/metrics").await.text().await.unwrap();
    }
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // Collections are one job for the whole deployment: they ran, on
    // whichever nodes took them, one at a time.
    assert!(value("berth_gc_runs_total") >= 3.0, "{metrics}");
    assert!(value("berth_gc_reclaimed_bytes_total") > 0.0, "{metrics}");
    assert!(
        value("berth_lifecycle_images_expired_total") > 0.0,
        "{metrics}"
    );

    // Past the grace period, one more collection leaves only referenced files.
    tokio::time::sleep(Duration::from_secs(GRACE_SECS + 1)).await;
    let out = s
        .command("gc")
        .args(["run", "--gc-grace", &grace])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("final gc: {report}");
    let disk_after: HashSet<String> = files_on_disk(s).into_keys().collect();
    // Images may have been expired by the server's lifecycle meanwhile; recompute.
    let (referenced_now, _) = pull_everything(&c, &p).await;
    assert!(
        referenced_now.is_subset(&disk_after),
        "a referenced blob is missing on disk"
    );
    let stray: Vec<_> = disk_after.difference(&referenced_now).collect();
    assert!(
        stray.is_empty(),
        "unreferenced files survived a collection past the grace period: {stray:?}"
    );
}

on_scale_out_too!(clients_push_delete_and_retag_while_lifecycle_and_gc_run);
