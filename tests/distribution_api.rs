//! End-to-end tests of the OCI Distribution API: the real `berth` binary,
//! driven over HTTP. Every endpoint, its error paths, restarts, kill -9 and
//! concurrent pushes.

mod common;

use std::time::Duration;

use common::{Server, push_blob, sha256};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn client() -> Client {
    Client::builder().pool_max_idle_per_host(4).build().unwrap()
}

fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name} in {:?}", r.headers()))
        .to_str()
        .unwrap()
        .to_string()
}

/// Assert an OCI error body with `code`.
async fn assert_error(r: Response, status: StatusCode, code: &str) {
    assert_eq!(r.status(), status, "status for expected {code}");
    let body: Value = r.json().await.expect("error body is JSON");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert!(body["errors"][0]["message"].is_string());
}

fn manifest_for(config: (&str, usize), layers: &[(&str, usize)], extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})).collect::<Vec<_>>(),
    });
    if let Value::Object(e) = extra {
        for (k, v) in e {
            m[k] = v;
        }
    }
    serde_json::to_vec_pretty(&m).unwrap()
}

/// Push a small image (config + one layer + manifest) and return the manifest bytes and digest.
async fn push_image(
    c: &Client,
    s: &Server,
    repo: &str,
    tag: &str,
    seed: &str,
) -> (Vec<u8>, String) {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let layer = format!("layer for {seed}").repeat(10);
    let cd = push_blob(c, s, repo, config.as_bytes()).await;
    let ld = push_blob(c, s, repo, layer.as_bytes()).await;
    let m = manifest_for((&cd, config.len()), &[(&ld, layer.len())], json!({}));
    let r = put_manifest(c, s, repo, tag, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let d = sha256(&m);
    (m, d)
}

async fn put_manifest(
    c: &Client,
    s: &Server,
    repo: &str,
    reference: &str,
    ct: &str,
    body: &[u8],
) -> Response {
    c.put(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", ct)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn base_health_and_metrics() {
    let s = Server::start();
    let c = client();
    let r = c.get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    let m = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("berth_http_requests_total{route=\"v2_base\",method=\"GET\",status=\"200\"} 1"),
        "{m}"
    );
    assert!(m.contains("berth_blob_upload_duration_seconds"), "{m}");
    // Unknown endpoints and methods get OCI errors.
    assert_error(
        c.get(s.url("/v2/a/nothing/here")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "UNSUPPORTED",
    )
    .await;
    assert_error(
        c.post(s.url("/v2/a/manifests/x")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
    )
    .await;
}

#[tokio::test]
async fn blob_push_styles_pull_and_ranges() {
    let s = Server::start();
    let c = client();
    let repo = "team/app/api";
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let d = sha256(&data);

    // POST then PUT with the whole body.
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    assert!(loc.starts_with(&format!("/v2/{repo}/blobs/uploads/")));
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "location"), format!("/v2/{repo}/blobs/{d}"));

    // HEAD and GET.
    let r = c
        .head(s.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
    assert_eq!(header(&r, "docker-content-digest"), d);
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

    // Ranges.
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/{d}")))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 10-19/{}", data.len())
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/{d}")))
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[data.len() - 5..]);
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/{d}")))
        .header("range", "bytes=999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes */{}", data.len())
    );

    // Chunked: PATCH with Content-Range, status GET, out-of-order 416, final PUT with a last chunk.
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "0-99999")
        .header("content-type", "application/octet-stream")
        .body(data[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-99999");
    let loc = header(&r, "location");
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-99999");
    // A chunk that skips ahead, and a retried (already received) chunk: 416, nothing changes.
    for range in ["100001-200000", "0-99999"] {
        let (a, b) = range.split_once('-').unwrap();
        let len = b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1;
        let r = c
            .patch(s.url(&loc))
            .header("content-range", range)
            .body(vec![0u8; len])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(header(&r, "range"), "0-99999");
    }
    // A streamed PATCH without Content-Range continues where the upload ends.
    let r = c
        .patch(s.url(&loc))
        .body(data[100_000..250_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-249999");
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .header("content-range", "250000-299999")
        .body(data[250_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // The session is gone after commit.
    assert_error(
        c.get(s.url(&loc)).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;

    // Digest mismatch: DIGEST_INVALID and nothing stored.
    let wrong = sha256(b"something else");
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={wrong}")))
        .body(b"actual".to_vec())
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    for dg in [&wrong, &sha256(b"actual")] {
        let r = c
            .head(s.url(&format!("/v2/{repo}/blobs/{dg}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    // Malformed digests.
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/sha256:nothex")))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/{}", sha256(b"absent"))))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    // PUT without a digest.
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = c.put(s.url(&loc)).send().await.unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;

    // Cancel an upload.
    let r = c.delete(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_error(
        c.get(s.url(&loc)).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    // An upload id from another repository is unknown here.
    let r = c
        .post(s.url("/v2/other/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let other = header(&r, "location");
    let id = other.rsplit('/').next().unwrap();
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/uploads/{id}")))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;

    // Blob delete.
    let r = c
        .delete(s.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .head(s.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .delete(s.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn sha512_and_cross_repository_mount() {
    let s = Server::start();
    let c = client();
    let data = b"sha512 content".to_vec();
    let d512 = {
        use sha2::Digest;
        format!("sha512:{}", hex::encode(sha2::Sha512::digest(&data)))
    };
    let r = c
        .post(s.url("/v2/src/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = c
        .put(s.url(&format!("{loc}?digest={d512}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(s.url(&format!("/v2/src/blobs/{d512}")))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), d512);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

    // Not visible in another repository until mounted.
    let d = push_blob(&c, &s, "src", b"mount me").await;
    assert_eq!(
        c.head(s.url(&format!("/v2/dst/blobs/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = c
        .post(s.url(&format!("/v2/dst/blobs/uploads/?mount={d}&from=src")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/dst/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(
        c.head(s.url(&format!("/v2/dst/blobs/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Mount from a repository that lacks the blob: an ordinary upload session instead.
    let absent = sha256(b"nowhere");
    let r = c
        .post(s.url(&format!("/v2/dst/blobs/uploads/?mount={absent}&from=src")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "location").starts_with("/v2/dst/blobs/uploads/"));
}

#[tokio::test]
async fn manifests_tags_negotiation_and_deletes() {
    let s = Server::start();
    let c = client();
    let repo = "web/frontend";
    let (m, md) = push_image(&c, &s, repo, "v1", "a").await;

    // GET by tag and by digest return the exact bytes.
    for reference in ["v1", md.as_str()] {
        let r = c
            .get(s.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), md);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &m[..]);
    }
    // HEAD carries length and digest but no body.
    let r = c
        .head(s.url(&format!("/v2/{repo}/manifests/v1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), m.len().to_string());
    assert_eq!(header(&r, "docker-content-digest"), md);
    // Several Accept lines (as containers/image sends) and a comma list (as containerd sends).
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/v1")))
        .header("accept", DOCKER_MANIFEST)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/v1")))
        .header("accept", format!("{DOCKER_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;

    // A Docker schema2 manifest keeps its media type.
    let cfg = push_blob(&c, &s, repo, b"{\"docker\":true}").await;
    let dm = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg, "size": 15},
        "layers": []
    })).unwrap();
    let r = put_manifest(&c, &s, repo, "docker", DOCKER_MANIFEST, &dm).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/docker")))
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), DOCKER_MANIFEST);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &dm[..]);

    // PUT by digest; a wrong digest is refused.
    let r = put_manifest(&c, &s, repo, &md, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/{repo}/manifests/{md}"));
    let r = put_manifest(&c, &s, repo, &sha256(b"other"), OCI_MANIFEST, &m).await;
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;

    // Tag move: v2 points at the same manifest, then tags list.
    assert_eq!(
        put_manifest(&c, &s, repo, "v2", OCI_MANIFEST, &m)
            .await
            .status(),
        StatusCode::CREATED
    );
    let r = c
        .get(s.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    let tags: Value = r.json().await.unwrap();
    assert_eq!(tags, json!({"name": repo, "tags": ["docker", "v1", "v2"]}));

    // Delete a tag: the manifest stays under its other tag.
    let r = c
        .delete(s.url(&format!("/v2/{repo}/manifests/v1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_error(
        c.get(s.url(&format!("/v2/{repo}/manifests/v1")))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        c.get(s.url(&format!("/v2/{repo}/manifests/v2")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Delete by digest removes every tag of it.
    let r = c
        .delete(s.url(&format!("/v2/{repo}/manifests/{md}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_error(
        c.get(s.url(&format!("/v2/{repo}/manifests/v2")))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        c.delete(s.url(&format!("/v2/{repo}/manifests/{md}")))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let tags: Value = c
        .get(s.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["docker"]));
    // Unknown repository.
    let r = c
        .get(s.url("/v2/never/pushed/tags/list"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn manifest_validation_errors_change_nothing() {
    let s = Server::start();
    let c = client();
    let repo = "val";
    let cfg = push_blob(&c, &s, repo, b"{}").await;
    let missing = sha256(b"missing layer");
    let cases: Vec<(Vec<u8>, &str, StatusCode, &str)> = vec![
        (
            b"not json".to_vec(),
            OCI_MANIFEST,
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
        ),
        (
            b"{\"schemaVersion\":1}".to_vec(),
            OCI_MANIFEST,
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
        ),
        (
            b"{\"schemaVersion\":2,\"mediaType\":\"text/plain\"}".to_vec(),
            "text/plain",
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
        ),
        (
            manifest_for((&cfg, 2), &[], json!({})),
            DOCKER_MANIFEST,
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
        ),
        (
            manifest_for((&cfg, 2), &[(&missing, 5)], json!({})),
            OCI_MANIFEST,
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
        ),
        (
            manifest_for(("sha256:short", 2), &[], json!({})),
            OCI_MANIFEST,
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
        ),
        (
            serde_json::to_vec(
                &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": missing, "size": 5}]}),
            )
            .unwrap(),
            OCI_INDEX,
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
        ),
    ];
    for (body, ct, status, code) in cases {
        let r = put_manifest(&c, &s, repo, "bad", ct, &body).await;
        assert_error(r, status, code).await;
    }
    // Oversized manifests: 400, never a 500 (the limit is 8 MiB by default).
    let mut big = manifest_for(
        (&cfg, 2),
        &[],
        json!({"annotations": {"pad": "x".repeat(9 << 20)}}),
    );
    let r = put_manifest(&c, &s, repo, "bad", OCI_MANIFEST, &big).await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    // The server closes that connection without reading the rest; use a fresh client.
    let c = client();
    // A 4 MiB manifest is accepted.
    big = manifest_for(
        (&cfg, 2),
        &[],
        json!({"annotations": {"pad": "x".repeat(4 << 20)}}),
    );
    assert_eq!(
        put_manifest(&c, &s, repo, "big", OCI_MANIFEST, &big)
            .await
            .status(),
        StatusCode::CREATED
    );
    // Invalid tag and name.
    let ok = manifest_for((&cfg, 2), &[], json!({}));
    assert_error(
        put_manifest(&c, &s, repo, "-bad", OCI_MANIFEST, &ok).await,
        StatusCode::BAD_REQUEST,
        "TAG_INVALID",
    )
    .await;
    assert_error(
        put_manifest(&c, &s, "Bad/Name", "v1", OCI_MANIFEST, &ok).await,
        StatusCode::BAD_REQUEST,
        "NAME_INVALID",
    )
    .await;
    assert_error(
        c.post(s.url("/v2/a__b___c/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "NAME_INVALID",
    )
    .await;
    // Nothing was stored under the bad tag.
    let tags: Value = c
        .get(s.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["big"]));
}

#[tokio::test]
async fn index_children_and_referrers() {
    let s = Server::start();
    let c = client();
    let repo = "multi";
    let (a, ad) = push_image(&c, &s, repo, "amd64", "amd64").await;
    let (b, bd) = push_image(&c, &s, repo, "arm64", "arm64").await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": ad, "size": a.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": bd, "size": b.len(), "platform": {"architecture": "arm64", "os": "linux"}}
        ]})).unwrap();
    let r = put_manifest(&c, &s, repo, "latest", OCI_INDEX, &index).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/latest")))
        .header("accept", OCI_INDEX)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &index[..]);
    // A child of an index cannot be deleted on its own.
    let r = c
        .delete(s.url(&format!("/v2/{repo}/manifests/{ad}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // Referrers: a signature and an SBOM whose subject is the amd64 image.
    let empty = push_blob(&c, &s, repo, b"{}").await;
    let mut referrers = vec![];
    for (kind, ann) in [
        ("application/vnd.example.signature", "sig"),
        ("application/spdx+json", "sbom"),
    ] {
        let layer = push_blob(&c, &s, repo, format!("{ann} payload").as_bytes()).await;
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": ann.len() + 8}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": ad, "size": a.len()},
            "annotations": {"org.example.kind": ann}
        })).unwrap();
        let md = sha256(&m);
        let r = put_manifest(&c, &s, repo, &md, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), ad);
        referrers.push((md, kind, m.len()));
    }
    let r = c
        .get(s.url(&format!("/v2/{repo}/referrers/{ad}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["mediaType"], OCI_INDEX);
    assert_eq!(body["manifests"].as_array().unwrap().len(), 2);
    for (md, kind, len) in &referrers {
        let d = body["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["digest"] == *md)
            .unwrap();
        assert_eq!(d["artifactType"], *kind);
        assert_eq!(d["size"], *len);
        assert!(d["annotations"]["org.example.kind"].is_string());
    }
    let r = c
        .get(s.url(&format!(
            "/v2/{repo}/referrers/{ad}?artifactType=application/spdx%2Bjson"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["manifests"][0]["artifactType"],
        "application/spdx+json"
    );
    // No referrers: an empty index, not a 404.
    let body: Value = c
        .get(s.url(&format!("/v2/{repo}/referrers/{bd}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["manifests"], json!([]));
    let r = c
        .get(s.url(&format!("/v2/{repo}/referrers/notadigest")))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn pagination_of_tags_and_catalog() {
    let s = Server::start();
    let c = client();
    let (m, _) = push_image(&c, &s, "pg/a", "t00", "x").await;
    let mut want: Vec<String> = vec!["t00".into()];
    for i in 1..25 {
        let t = format!("t{i:02}");
        assert_eq!(
            put_manifest(&c, &s, "pg/a", &t, OCI_MANIFEST, &m)
                .await
                .status(),
            StatusCode::CREATED
        );
        want.push(t);
    }
    // Walk with n=10 following Link headers.
    let mut got = Vec::new();
    let mut next = Some("/v2/pg/a/tags/list?n=10".to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let r = c.get(s.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        next = r.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with("rel=\"next\""), "{l}");
            l[l.find('<').unwrap() + 1..l.find('>').unwrap()].to_string()
        });
        let body: Value = r.json().await.unwrap();
        got.extend(
            body["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string()),
        );
        pages += 1;
        assert!(pages <= 3);
    }
    assert_eq!(got, want);
    let body: Value = c
        .get(s.url("/v2/pg/a/tags/list?n=5&last=t19"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["tags"], json!(["t20", "t21", "t22", "t23", "t24"]));
    let r = c.get(s.url("/v2/pg/a/tags/list?n=0")).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["tags"], json!([]));

    for name in ["pg/b", "pg/c", "zz", "aa/x"] {
        push_blob(&c, &s, name, b"x").await;
    }
    let r = c.get(s.url("/v2/_catalog?n=2")).send().await.unwrap();
    let link = header(&r, "link");
    assert_eq!(link, "</v2/_catalog?n=2&last=pg%2Fa>; rel=\"next\"");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["repositories"], json!(["aa/x", "pg/a"]));
    let body: Value = c
        .get(s.url("/v2/_catalog?n=10&last=pg%2Fa"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["repositories"], json!(["pg/b", "pg/c", "zz"]));
    let r = c.get(s.url("/v2/_catalog?n=abc")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn chunked_upload_resumes_after_restart_and_after_disconnect() {
    let mut s = Server::start();
    let c = client();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    let d = sha256(&data);
    let r = c
        .post(s.url("/v2/resume/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "0-99999")
        .body(data[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // The client disconnects in the middle of the next chunk.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(data[100_000..150_000].to_vec()),
        Err(std::io::Error::other("client went away")),
    ];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let _ = c.patch(s.url(&loc)).body(body).send().await;

    s.restart();
    let c = client();
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&r, "range"),
        "0-99999",
        "only acknowledged bytes count"
    );
    // Nothing of the interrupted chunk is visible.
    assert_eq!(
        c.head(s.url(&format!("/v2/resume/blobs/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "100000-199999")
        .body(data[100_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = c
        .get(s.url(&format!("/v2/resume/blobs/{d}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&got), d);
}

#[tokio::test]
async fn concurrent_pushes_of_the_same_blob() {
    let s = Server::start();
    let data: Vec<u8> = (0..500_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let d = sha256(&data);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = s.url(&format!("/v2/same/r{}/blobs/uploads/?digest={d}", i % 3));
        let body = data.clone();
        tasks.push(tokio::spawn(async move {
            client().post(url).body(body).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    let c = client();
    for i in 0..3 {
        let got = c
            .get(s.url(&format!("/v2/same/r{i}/blobs/{d}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(sha256(&got), d);
    }
    // One copy on disk, no staging leftovers.
    assert_eq!(s.staged_uploads(), 0);
}

#[tokio::test]
async fn kill_9_during_concurrent_pushes_loses_nothing_acknowledged() {
    let mut s = Server::start();
    let url = s.url("");
    // Several writers push distinct blobs and images until the server dies.
    let mut writers = Vec::new();
    for w in 0..4 {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let c = client();
            let mut acked = Vec::new();
            for i in 0..10_000u32 {
                let data: Vec<u8> = format!("writer {w} blob {i} ")
                    .repeat(2000 + (i as usize % 7) * 500)
                    .into_bytes();
                let d = sha256(&data);
                let r = c
                    .post(format!("{url}/v2/kill/w{w}/blobs/uploads/?digest={d}"))
                    .body(data)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::CREATED => acked.push((w, d)),
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.kill9();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 10,
        "too few pushes before the kill: {}",
        acked.len()
    );
    s.restart();
    let c = client();
    for (w, d) in &acked {
        let r = c
            .get(s.url(&format!("/v2/kill/w{w}/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged blob {d} lost");
        let got = r.bytes().await.unwrap();
        assert_eq!(&sha256(&got), d, "blob {d} is corrupt after kill -9");
    }
    // Every blob the store serves is complete: no partial blob is visible.
    for d in s.stored_blobs().into_keys() {
        if let Some(bytes) = s.open_stored_blob(&d) {
            assert_eq!(sha256(&bytes), d, "stored blob {d} is not complete");
        }
    }
}

#[tokio::test]
async fn abandoned_uploads_are_reaped() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_on(
        &tmp.path().join("d"),
        &["--upload-max-age", "1s", "--upload-reap-interval", "1s"],
    );
    let c = client();
    let r = c
        .post(s.url("/v2/reap/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    c.patch(s.url(&loc))
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if c.get(s.url(&loc)).send().await.unwrap().status() == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
    }
    assert!(gone, "upload session was not reaped");
    assert_eq!(s.staged_uploads(), 0);
    let m = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("berth_uploads_reaped_total 1"), "{m}");
}

#[tokio::test]
async fn graceful_shutdown_on_sigterm() {
    let mut s = Server::start();
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}");
}

/// Mounts a small tmpfs for the lifetime of the guard (the tests run as root).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Write to `path` until the filesystem has no byte left.
fn fill_disk(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    for size in [1 << 20, 4096, 512, 1] {
        let chunk = vec![0u8; size];
        while f.write_all(&chunk).is_ok() {}
    }
    let _ = f.sync_all();
}

/// Found by the security review: with the disk full, a blob push answered
/// 500 (its upload-session row could not be written) and, once space was
/// freed, every write kept failing ("attempted to call begin_with at
/// non-zero transaction depth") until a restart.
#[tokio::test]
async fn a_full_metadata_database_is_507_and_recovers_by_itself() {
    let disk = SmallDisk::new("16m");
    let data_dir = disk.dir.path().join("data");
    let s = Server::start_on(&data_dir, &[]);
    let c = client();
    let config = push_blob(&c, &s, "full", b"{}").await;
    let layer = push_blob(&c, &s, "full", b"pushed before the disk filled").await;
    let m = manifest_for((&config, 2), &[(&layer, 29)], json!({}));
    // Empty the write-ahead log, so that the next commit needs new space.
    let db = data_dir.join("metadata.db");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone())",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let filler = disk.dir.path().join("filler");
    fill_disk(&filler);
    // Every write is refused with 507, none with 500.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = c
            .post(s.url("/v2/full/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status());
        let r = put_manifest(&c, &s, "full", &format!("t{i}"), OCI_MANIFEST, &m).await;
        statuses.push(r.status());
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::INSUFFICIENT_STORAGE),
        "{statuses:?}"
    );
    // Reads go on.
    let got = c
        .get(s.url(&format!("/v2/full/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    // Space comes back: writes work again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let r = put_manifest(&c, &s, "full", "after", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    for i in 0..20 {
        push_blob(&c, &s, "full", format!("after {i}").as_bytes()).await;
    }
}

/// The ECR API answers a full metadata database as the registry paths do
/// (507), not with a 500, in every operation that writes metadata.
#[tokio::test]
async fn a_full_metadata_database_is_507_on_the_ecr_api_too() {
    let disk = SmallDisk::new("16m");
    let data_dir = disk.dir.path().join("data");
    let s = Server::start_ecr_on(&data_dir, &[]);
    common::ecr(&s, "CreateRepository", json!({"repositoryName": "before"})).await;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone())",
        ])
        .arg(data_dir.join("metadata.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let filler = disk.dir.path().join("filler");
    fill_disk(&filler);
    let call = |op: &'static str, body: Value| {
        let s = &s;
        async move { common::ecr_call(s, common::ROOT_KEY_ID, common::ROOT_SECRET, op, body).await }
    };
    let arn = format!(
        "arn:aws:ecr:us-east-1:{}:repository/before",
        common::ACCOUNT
    );
    for (op, body) in [
        ("CreateRepository", json!({"repositoryName": "during"})),
        (
            "TagResource",
            json!({"resourceArn": arn, "tags": [{"Key": "k", "Value": "v"}]}),
        ),
        (
            "PutImageTagMutability",
            json!({"repositoryName": "before", "imageTagMutability": "IMMUTABLE"}),
        ),
    ] {
        let (status, v) = call(op, body).await;
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{op}: {v}");
        assert_eq!(v["__type"], "ServerException", "{op}: {v}");
    }
    std::fs::remove_file(&filler).unwrap();
    let (status, v) = call("CreateRepository", json!({"repositoryName": "after"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn disk_full_is_a_clear_5xx_and_stores_nothing() {
    let disk = SmallDisk::new("24m");
    let data_dir = disk.dir.path().join("data");
    let mut s = Server::start_on(&data_dir, &[]);
    let c = client();
    let chunk = vec![7u8; 8 << 20];
    let r = c
        .post(s.url("/v2/full/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let mut failed = None;
    for i in 0..5u64 {
        let first = i * chunk.len() as u64;
        let range = format!("{first}-{}", first + chunk.len() as u64 - 1);
        let r = c
            .patch(s.url(&loc))
            .header("content-range", range)
            .body(chunk.clone())
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::ACCEPTED {
            failed = Some(r);
            break;
        }
    }
    let r = failed.expect("a 40 MiB upload cannot fit on a 24 MiB disk");
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("full"),
        "{body}"
    );
    // The session still holds only what was acknowledged; cancelling frees the space.
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        c.delete(s.url(&loc)).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    // The registry keeps working and nothing corrupt is served.
    let d = push_blob(&c, &s, "full", b"small blob after the disk filled").await;
    s.restart();
    let got = client()
        .get(s.url(&format!("/v2/full/blobs/{d}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&got), d);
    drop(s);
}

// The suite again on PostgreSQL + S3 (the disk-full tests are about the
// embedded store's own disk).
/// One HTTP/2 GET of `path` with `:authority` `authority` and no `Host`
/// header, as HTTP/2 clients send it; the status and headers of the answer.
async fn h2_get(
    s: &Server,
    authority: &str,
    path: &str,
    auth: Option<&str>,
) -> http::response::Parts {
    let tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder().uri(format!("http://{authority}{path}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(req.body(()).unwrap(), true).unwrap();
    let parts = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .unwrap()
        .unwrap()
        .into_parts()
        .0;
    driver.abort();
    parts
}

#[tokio::test]
async fn http2_requests_address_the_registry_of_their_authority() {
    use base64::Engine;
    let s = Server::start_ecr();
    common::ecr(&s, "CreateRepository", json!({"repositoryName": "app"})).await;
    let port = s.addr.rsplit(':').next().unwrap();
    // The 401 challenge names the host the client asked for.
    let r = h2_get(&s, &format!("registry.test:{port}"), "/v2/", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers["www-authenticate"],
        format!("Basic realm=\"http://registry.test:{port}/\",service=\"ecr.amazonaws.com\"")
    );
    // `<account>.<host>` selects that account's registry, as the Host header does.
    let token = common::registry_token(&s).await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{token}"))
    );
    let own = format!("{}.localhost:{port}", common::ACCOUNT);
    let r = h2_get(&s, &own, "/v2/app/tags/list", Some(&basic)).await;
    assert_eq!(r.status, StatusCode::OK);
    let other = format!("999999999999.localhost:{port}");
    let r = h2_get(&s, &other, "/v2/app/tags/list", Some(&basic)).await;
    assert_ne!(
        r.status,
        StatusCode::OK,
        "another account's registry answered"
    );
}

on_scale_out_too!(
    base_health_and_metrics,
    blob_push_styles_pull_and_ranges,
    sha512_and_cross_repository_mount,
    manifests_tags_negotiation_and_deletes,
    manifest_validation_errors_change_nothing,
    index_children_and_referrers,
    pagination_of_tags_and_catalog,
    chunked_upload_resumes_after_restart_and_after_disconnect,
    concurrent_pushes_of_the_same_blob,
    kill_9_during_concurrent_pushes_loses_nothing_acknowledged,
    abandoned_uploads_are_reaped,
    graceful_shutdown_on_sigterm,
);
