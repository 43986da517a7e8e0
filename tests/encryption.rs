//! Encryption at rest, end to end against the real server: nothing pushed is
//! stored in plaintext (blobs, uploads in progress, manifests; on disk and in
//! S3), range reads decrypt exactly at segment edges, altered bytes are
//! refused and reported, and a data directory written by a version older
//! than encryption is served, then re-encrypted.

mod common;

use std::path::Path;

use common::{Server, sha256};
use reqwest::{Client, StatusCode};
use serde_json::Value;

const SEGMENT_PLAIN: usize = berth::storage::sealed::SEGMENT_PLAIN as usize;

fn client() -> Client {
    Client::builder().build().unwrap()
}

/// Bytes that never repeat a 16-byte window, with `marker` at the start
/// and at the end.
fn content(marker: &[u8], len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = marker.to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while v.len() < len - marker.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v.extend_from_slice(marker);
    v
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// Every S3 object of the deployment (scale-out) that contains `needle`.
fn objects_containing(s: &Server, needle: &[u8]) -> Vec<String> {
    let Some(prefix) = s.deployment.s3_prefix.clone() else {
        return Vec::new();
    };
    let s3 = s.deployment.s3();
    let needle = needle.to_vec();
    common::block_on(async move {
        let mut hits = Vec::new();
        for o in s3.list(&format!("{prefix}/")).await.unwrap() {
            let b = s3.get_bytes(&o.key).await.unwrap();
            if b.windows(needle.len()).any(|w| w == needle.as_slice()) {
                hits.push(o.key);
            }
        }
        hits
    })
}

async fn push_manifest(c: &Client, s: &Server, repo: &str, tag: &str, m: &[u8]) {
    let r = c
        .put(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", common::image::OCI_MANIFEST)
        .body(m.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_pushed_is_stored_in_plaintext() {
    let s = Server::start();
    let c = client();
    let marker = b"PLAINTEXT-MARKER-7f3a91";
    // A layer of several segments, a config, and a manifest with the marker.
    let layer = content(marker, 3 * SEGMENT_PLAIN + 1000);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"m":"{}"}}}}}}"#,
        std::str::from_utf8(marker).unwrap()
    )
    .into_bytes();
    let l = common::push_blob(&c, &s, "enc/app", &layer).await;
    common::push_blob(&c, &s, "enc/app", &config).await;
    let manifest = common::image::manifest(&config, std::slice::from_ref(&layer));
    push_manifest(&c, &s, "enc/app", "v1", &manifest).await;
    // An upload in progress, its chunk ending mid-segment.
    let r = c
        .post(s.url("/v2/enc/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = c
        .patch(s.url(&loc))
        .header("content-type", "application/octet-stream")
        .body(content(marker, SEGMENT_PLAIN + 500))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Everything reads back exactly.
    assert_eq!(common::pull_blob(&c, &s, "enc/app", &l).await, layer);
    let got = c
        .get(s.url("/v2/enc/app/manifests/v1"))
        .header("accept", common::image::OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), manifest.as_slice());
    // The config, as the issue puts it, no longer starts with `{"architecture"`.
    let stored = s.stored_blob(&sha256(&config)).unwrap();
    assert!(!stored.starts_with(b"{\"architecture\""));
    assert_eq!(s.open_stored_blob(&sha256(&config)).unwrap(), config);
    // No file of the data directory, no object of the bucket, holds the
    // marker or the layer's bytes.
    let probe = &layer[5000..5032];
    for needle in [&marker[..], probe] {
        assert_eq!(files_containing(&s.data_dir, needle), Vec::<String>::new());
        assert_eq!(objects_containing(&s, needle), Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_are_exact_at_segment_edges() {
    let s = Server::start();
    let c = client();
    let data = content(b"R", 3 * SEGMENT_PLAIN + 77);
    let d = common::push_blob(&c, &s, "enc/ranges", &data).await;
    let n = data.len();
    let sp = SEGMENT_PLAIN;
    for (a, b) in [
        (0, 0),
        (sp - 1, sp - 1),
        (sp - 1, sp),
        (sp, 2 * sp - 1),
        (2 * sp - 3, 2 * sp + 3),
        (3 * sp, n - 1),
        (n - 1, n - 1),
        (0, n - 1),
    ] {
        let r = c
            .get(s.url(&format!("/v2/enc/ranges/blobs/{d}")))
            .header("range", format!("bytes={a}-{b}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{a}-{b}");
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes {a}-{b}/{n}")
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[a..=b], "{a}-{b}");
    }
    // Open-ended and suffix ranges too.
    let r = c
        .get(s.url(&format!("/v2/enc/ranges/blobs/{d}")))
        .header("range", format!("bytes={}-", 2 * sp))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[2 * sp..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_ciphertext_is_refused_and_reported() {
    let s = Server::start();
    let c = client();
    let data = content(b"T", 2 * SEGMENT_PLAIN + 10);
    let d = common::push_blob(&c, &s, "enc/tamper", &data).await;
    let path = s.sealed_blob_location(&d);
    let original = std::fs::read(&path).unwrap();
    // A flipped byte in the first segment: refused before anything is sent.
    let mut bad = original.clone();
    bad[40] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    let r = c
        .get(s.url(&format!("/v2/enc/tamper/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("integrity"),
        "{body}"
    );
    // A range in an untouched segment is still served.
    let r = c
        .get(s.url(&format!("/v2/enc/tamper/blobs/{d}")))
        .header(
            "range",
            format!("bytes={}-{}", SEGMENT_PLAIN, SEGMENT_PLAIN + 9),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &data[SEGMENT_PLAIN..SEGMENT_PLAIN + 10]
    );
    // A flipped byte in the last segment: the stream is cut, never completed
    // with garbage.
    let mut bad = original.clone();
    let end = bad.len() - 3;
    bad[end] ^= 0x80;
    std::fs::write(&path, &bad).unwrap();
    let served = match c
        .get(s.url(&format!("/v2/enc/tamper/blobs/{d}")))
        .send()
        .await
    {
        Ok(r) => r.bytes().await.ok().map(|b| b.to_vec()),
        Err(_) => None,
    };
    assert_eq!(served, None, "a blob altered at its end was served whole");
    // Reported in the metrics.
    let m = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: f64 = m
        .lines()
        .find(|l| l.starts_with("berth_blob_integrity_failures_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 2.0, "{failures}");
    // Restored, it reads again.
    std::fs::write(&path, &original).unwrap();
    assert_eq!(common::pull_blob(&c, &s, "enc/tamper", &d).await, data);
}

/// A data directory written by Berth before encryption (the fixture was made
/// by the previous release: one image of three blobs and a manifest, all with
/// a marker, and a second repository holding one of the layers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_data_dir_is_served_then_reencrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-plaintext-data.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(st.success());
    let data_dir = tmp.path().join("data");
    let marker = b"LEGACY-PLAINTEXT-MARKER";
    assert!(!files_containing(&data_dir, marker).is_empty());
    let manifest_digest = "sha256:cfeae7cb22ee1d3544fe26217bce39e82af1b4adb564222af36c8955694449bc";
    let layers = [
        "sha256:de1a56c8bc17a1e67c552a076d5672a1f81c0cb206169cc05fb869b4d3266f33",
        "sha256:65d6a46982a3eebcabb6de5e7dc3200cfcf902aafa0819c9de38c379aaacda0c",
        "sha256:bee8ad3102d7509601f571aa6beb73ce55239988deb8f755e73242338e8dd621",
    ];
    let status = |s: &Server, cmd: &str| -> Value {
        let out = s.command("encryption").arg(cmd).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Before the new version has run: all of it is plaintext.
    let offline = |cmd: &str| -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["encryption", cmd, "--data-dir"])
            .arg(&data_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = offline("status");
    assert_eq!(before["complete"], false, "{before}");
    assert_eq!(before["plaintextBlobs"], 3, "{before}");
    assert_eq!(before["plaintextManifests"], 1, "{before}");
    let mut s = Server::start_on(&data_dir, &[]);
    let c = client();
    let pull_all = |s: &Server| {
        let s_url = s.url("");
        let c = c.clone();
        async move {
            let m = c
                .get(format!("{s_url}/v2/legacy/app/manifests/v1"))
                .header("accept", common::image::OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(m.status(), StatusCode::OK);
            assert_eq!(sha256(&m.bytes().await.unwrap()), manifest_digest);
            for d in layers {
                let b = c
                    .get(format!("{s_url}/v2/legacy/app/blobs/{d}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(b.status(), StatusCode::OK, "{d}");
                assert_eq!(sha256(&b.bytes().await.unwrap()), d);
            }
            // A range of the big layer, across a segment edge.
            let r = c
                .get(format!("{s_url}/v2/legacy/app/blobs/{}", layers[0]))
                .header(
                    "range",
                    format!("bytes={}-{}", SEGMENT_PLAIN - 2, SEGMENT_PLAIN + 2),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(r.bytes().await.unwrap().len(), 5);
        }
    };
    // Served as it is, before re-encryption has run (or while it runs).
    pull_all(&s).await;
    // The background job, or `berth encryption run`, re-encrypts it all.
    s.terminate();
    let done = status(&s, "run");
    assert_eq!(done["complete"], true, "{done}");
    assert_eq!(done["plaintextBlobs"], 0, "{done}");
    assert_eq!(done["percentSealed"], 100.0, "{done}");
    assert_eq!(
        files_containing(&data_dir, marker),
        Vec::<String>::new(),
        "plaintext left after re-encryption"
    );
    s.restart();
    pull_all(&s).await;
    // The second repository's copy of the shared layer reads too.
    let b = c
        .get(s.url(&format!("/v2/legacy/other/blobs/{}", layers[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256(&b.bytes().await.unwrap()), layers[1]);
    // New pushes to the old data directory are sealed from the start.
    let fresh = content(b"FRESH-MARKER-after-upgrade", 100_000);
    common::push_blob(&c, &s, "legacy/app", &fresh).await;
    s.terminate();
    assert_eq!(
        files_containing(&data_dir, b"FRESH-MARKER-after-upgrade"),
        Vec::<String>::new()
    );
}

on_scale_out_too!(
    nothing_pushed_is_stored_in_plaintext,
    range_reads_are_exact_at_segment_edges,
);
