//! Replication between two Berth deployments as Docker containers on one
//! network (`common::docker`): a source in us-east-1 whose `[[peers]]`
//! entry names the destination by its container name, and a destination in
//! eu-west-1, both in ECR mode with the same administrator key. A larger
//! image is pushed, and the destination is taken off the network while it
//! is being delivered; images pushed meanwhile are acknowledged at once,
//! their statuses go FAILED with DESTINATION_UNREACHABLE; once the
//! destination is back every image arrives, byte for byte, and every status
//! is COMPLETE. Skipped, with the reason, only when there is no Docker
//! engine (CI has one).

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::docker::{PORT, wait_answering, within};
use common::image::{pull_image_at, push_image_at};
use common::{ACCOUNT, ROOT_KEY_ID, ROOT_SECRET, ecr_call_at, registry_token_at};
use serde_json::{Value, json};

const SOURCE: usize = 0;
const DEST: usize = 1;
const SOURCE_REGION: &str = "us-east-1";
const DEST_REGION: &str = "eu-west-1";
const REPO: &str = "dr/app";
/// The larger image: this many layers of [`BIG_LAYER`] bytes.
const BIG_LAYERS: usize = 4;
const BIG_LAYER: usize = 16 << 20;
/// Small images pushed while the destination is away.
const SMALL: usize = 30;

/// An ECR call as the administrator; panics unless it succeeds.
async fn ecr(base: &str, region: &str, op: &str, body: Value) -> Value {
    let (status, v) = ecr_call_at(base, region, ROOT_KEY_ID, ROOT_SECRET, op, body).await;
    assert!(status.is_success(), "{op} at {base}: {status} {v}");
    v
}

/// A `/v2/` client of `base`'s primary registry (its bare host), signed in
/// as the administrator.
async fn v2_client(base: &str, region: &str) -> reqwest::Client {
    let token = registry_token_at(base, region, ROOT_KEY_ID, ROOT_SECRET).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{token}"));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Basic {basic}").parse().expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn random(len: usize) -> Vec<u8> {
    let mut b = vec![0; len];
    berth::secrets::random_bytes(&mut b);
    b
}

/// An image: a config naming `tag` and `layers`.
struct Image {
    tag: String,
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
    digest: String,
}

impl Image {
    fn new(tag: &str, layers: Vec<Vec<u8>>) -> Image {
        Image {
            tag: tag.to_string(),
            config: format!("{{\"tag\":\"{tag}\"}}").into_bytes(),
            layers,
            digest: String::new(),
        }
    }

    /// Push it to the source; how long the push took.
    async fn push(&mut self, c: &reqwest::Client, base: &str) -> Duration {
        let t = Instant::now();
        self.digest = push_image_at(c, base, REPO, &self.tag, &self.config, &self.layers)
            .await
            .unwrap_or_else(|e| panic!("push of {}: {e}", self.tag));
        t.elapsed()
    }
}

/// The replication statuses of `digest` at the source: (status, failure code).
async fn status(base: &str, digest: &str) -> Vec<(String, Option<String>)> {
    let v = ecr(
        base,
        SOURCE_REGION,
        "DescribeImageReplicationStatus",
        json!({"repositoryName": REPO, "imageId": {"imageDigest": digest}}),
    )
    .await;
    v["replicationStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["region"], DEST_REGION, "{s}");
            assert_eq!(s["registryId"], ACCOUNT, "{s}");
            (
                s["status"].as_str().unwrap().to_string(),
                s["failureCode"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Ok once every image in `images` has one status, `want` (with `code`).
async fn all_are(
    base: &str,
    images: &[&Image],
    want: &str,
    code: Option<&str>,
) -> Result<(), String> {
    for i in images {
        let s = status(base, &i.digest).await;
        if s.len() != 1 || s[0].0 != want || s[0].1.as_deref() != code {
            return Err(format!("{}: {s:?}", i.tag));
        }
    }
    Ok(())
}

/// A gauge of the source's `/metrics` for the destination.
async fn gauge(base: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let label = format!("destination=\"{DEST_REGION}/{ACCOUNT}\"");
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_to_a_peer_container_rides_out_a_disconnect() {
    let started = Instant::now();
    let Some((cluster, _gateway)) = common::docker::cluster("replication", 2) else {
        return;
    };
    let admin = common::ecr_admin_env();
    cluster.start(DEST, &["--region".into(), DEST_REGION.into()], &admin, &[]);
    // The peer by its container name, the secret from a variable.
    let config = format!(
        "[[peers]]\nregion = \"{DEST_REGION}\"\nendpoint = \"http://{}:{PORT}\"\n\
         access_key_id = \"{ROOT_KEY_ID}\"\nsecret_access_key_env = \"BERTH_TEST_PEER_SECRET\"\n",
        cluster.container(DEST)
    );
    let mut env = admin.clone();
    env.push(("BERTH_TEST_PEER_SECRET".into(), ROOT_SECRET.into()));
    cluster.start(
        SOURCE,
        &["--config".into(), "/berth.toml".into()],
        &env,
        &[("/berth.toml", config.as_bytes())],
    );
    let (src, dst) = (cluster.base(SOURCE), cluster.base(DEST));
    let dest_ip = cluster.ip(DEST);
    wait_answering(&src, Duration::from_secs(30)).await;
    wait_answering(&dst, Duration::from_secs(30)).await;
    let ready = started.elapsed();

    ecr(
        &src,
        SOURCE_REGION,
        "CreateRepository",
        json!({"repositoryName": REPO}),
    )
    .await;
    let rules =
        json!({"rules": [{"destinations": [{"region": DEST_REGION, "registryId": ACCOUNT}]}]});
    ecr(
        &src,
        SOURCE_REGION,
        "PutReplicationConfiguration",
        json!({"replicationConfiguration": rules}),
    )
    .await;
    let (src_c, dst_c) = (
        v2_client(&src, SOURCE_REGION).await,
        v2_client(&dst, DEST_REGION).await,
    );

    // The larger image; its delivery starts with the repository's creation
    // at the destination (the first blob), and the destination leaves the
    // network then.
    let mut big = Image::new("big", (0..BIG_LAYERS).map(|_| random(BIG_LAYER)).collect());
    let big_push = big.push(&src_c, &src).await;
    let (_, in_flight_after) = within(
        Duration::from_secs(30),
        "the delivery of the larger image starts",
        || async {
            let (st, v) = ecr_call_at(
                &dst,
                DEST_REGION,
                ROOT_KEY_ID,
                ROOT_SECRET,
                "DescribeRepositories",
                json!({"repositoryNames": [REPO]}),
            )
            .await;
            if st.is_success() {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
    )
    .await;
    cluster.disconnect(DEST);
    let before = status(&src, &big.digest).await;
    assert_eq!(
        before,
        [("IN_PROGRESS".to_string(), None)],
        "the larger image as the destination left (delivered already? make it larger)"
    );

    // Pushes at the source are acknowledged as before.
    let mut small: Vec<Image> = (0..SMALL)
        .map(|i| Image::new(&format!("small-{i}"), vec![random(2000 + i)]))
        .collect();
    let mut slowest = Duration::ZERO;
    for i in &mut small {
        slowest = slowest.max(i.push(&src_c, &src).await);
    }
    assert!(
        slowest < Duration::from_secs(5),
        "a push took {slowest:?} while the destination was away"
    );
    // Every status says why: the destination is unreachable.
    let every: Vec<&Image> = std::iter::once(&big).chain(&small).collect();
    let (_, failed_after) = within(
        Duration::from_secs(90),
        "every status FAILED with DESTINATION_UNREACHABLE",
        || all_are(&src, &every, "FAILED", Some("DESTINATION_UNREACHABLE")),
    )
    .await;
    let pending = gauge(&src, "berth_replication_pending").await;
    assert_eq!(pending, Some(every.len() as f64), "pending in /metrics");
    // The destination holds none of the small ones.
    assert!(pull_image_at(&dst_c, &dst, REPO, "small-0").await.is_err());

    cluster.connect(DEST, dest_ip);
    let (_, complete_after) = within(
        Duration::from_secs(90),
        "every status COMPLETE after the destination is back",
        || all_are(&src, &every, "COMPLETE", None),
    )
    .await;
    // Every image arrived, the same bytes as at the source.
    for i in &every {
        let (m, blobs) = pull_image_at(&dst_c, &dst, REPO, &i.tag).await.unwrap();
        let (sm, sblobs) = pull_image_at(&src_c, &src, REPO, &i.tag).await.unwrap();
        assert_eq!(common::sha256(&m), i.digest, "{}", i.tag);
        assert!(m == sm, "{}: the manifests differ", i.tag);
        assert!(blobs == sblobs, "{}: the blobs differ", i.tag);
        assert!(
            blobs[0] == i.config && blobs[1..] == i.layers,
            "{}: other bytes than pushed",
            i.tag
        );
    }
    // Nothing lost, nothing extra: one image per push, with its one tag.
    let listed = ecr(
        &dst,
        DEST_REGION,
        "DescribeImages",
        json!({"repositoryName": REPO, "maxResults": 1000}),
    )
    .await;
    let mut got: Vec<(String, Vec<String>)> = listed["imageDetails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let tags = d["imageTags"].as_array().map_or(vec![], |t| {
                t.iter().map(|t| t.as_str().unwrap().to_string()).collect()
            });
            (d["imageDigest"].as_str().unwrap().to_string(), tags)
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, Vec<String>)> = every
        .iter()
        .map(|i| (i.digest.clone(), vec![i.tag.clone()]))
        .collect();
    want.sort();
    assert_eq!(got, want, "the images at the destination");
    // The destination does not replicate them further.
    let (_, v) = ecr_call_at(
        &dst,
        DEST_REGION,
        ROOT_KEY_ID,
        ROOT_SECRET,
        "DescribeImageReplicationStatus",
        json!({"repositoryName": REPO, "imageId": {"imageDigest": big.digest}}),
    )
    .await;
    assert_eq!(v["replicationStatuses"], json!([]), "{v}");
    within(
        Duration::from_secs(10),
        "no backlog in /metrics",
        || async {
            match gauge(&src, "berth_replication_pending").await {
                Some(0.0) => Ok(()),
                g => Err(format!("{g:?}")),
            }
        },
    )
    .await;
    eprintln!(
        "ready {ready:?}; larger image ({} MiB) pushed in {big_push:?}, its delivery under way \
         {in_flight_after:?} later, the destination away from then; \
         {SMALL} pushes meanwhile, the slowest {slowest:?}; all FAILED {failed_after:?} later; \
         all COMPLETE {complete_after:?} after the reconnect; {:?} in all",
        (BIG_LAYERS * BIG_LAYER) >> 20,
        started.elapsed()
    );
}
