//! Fuzz harnesses: one function per parser that sees client bytes, each
//! feeding arbitrary input through the parser and checking what must hold of
//! its answer (never a panic; a parsed value is internally consistent). The
//! `cargo fuzz` targets in `fuzz/` call these, and the unit test below runs
//! every seed (`fuzz/corpus/<target>/`) and every input that ever crashed one
//! (`fuzz/regressions/<target>/`) through them on each `cargo test`.
//!
//! | target | what it feeds |
//! |---|---|
//! | `manifest` | manifests and indexes (`registry::manifest::parse`) |
//! | `route` | `/v2/` paths, references, digests, repository names |
//! | `ranges` | `Range` and `Content-Range` values |
//! | `sigv4` | `Authorization`/`X-Amz-*` headers and query strings (parse, envelope, verify) |
//! | `forwarded` | `X-Forwarded-For` / `Forwarded` from a trusted proxy |
//! | `iam_policy` | identity and resource policy JSON, then evaluation |
//! | `lifecycle_policy` | lifecycle policy JSON, then the planner |
//! | `ecr_request` | ECR API request bodies through the real router on a real store |
//! | `scan_layer` | image layers (plain, gzip, zstd) through the scanner's walker and merge |
//! | `osv_record` | OSV records, then range evaluation and every version ordering |

use std::collections::HashMap;

/// Split fuzz input into `n` parts at `\n` (the last part takes the rest).
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    for _ in 1..n {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => {
                out.push(rest);
                rest = &[];
            }
        }
    }
    out.push(rest);
    out
}

/// `manifest`: the first line is the Content-Type, the rest the manifest.
pub fn manifest(data: &[u8]) {
    let p = parts(data, 2);
    let ct = std::str::from_utf8(p[0]).ok().filter(|s| !s.is_empty());
    if let Ok(m) = crate::registry::manifest::parse(ct, p[1], 127) {
        match m.kind {
            crate::registry::manifest::Kind::Image => {
                assert!(
                    !m.blobs.is_empty(),
                    "an image manifest references its config"
                );
                assert!(m.blobs.len() <= 128);
                assert!(m.children.is_empty());
            }
            crate::registry::manifest::Kind::Index => {
                assert!(m.blobs.is_empty());
                assert!(m.children.len() <= crate::registry::manifest::MAX_INDEX_MANIFESTS);
            }
        }
    }
}

/// `route`: a `/v2/` path, then a reference, digest and repository name.
pub fn route(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::distribution::Route::label(text);
    if let Some(r) = crate::distribution::Route::parse(text) {
        use crate::distribution::Route;
        let names: Vec<&str> = match &r {
            Route::Tags(n) | Route::StartUpload(n) => vec![n],
            Route::Manifest(n, x)
            | Route::Blob(n, x)
            | Route::Upload(n, x)
            | Route::Referrers(n, x) => {
                vec![n, x]
            }
            Route::Base | Route::Catalog => vec![],
        };
        for n in names {
            assert!(text.contains(n));
        }
    }
    if let Some(n) = crate::reference::RepoName::parse(text) {
        assert_eq!(n.as_str(), text);
        assert!(!text.is_empty() && !text.starts_with('/') && !text.ends_with('/'));
    }
    if let Ok(r) = crate::reference::Reference::parse(text) {
        assert_eq!(r.to_string(), text);
    }
    if let Ok(d) = text.parse::<crate::digest::Digest>() {
        assert_eq!(d.as_str(), text);
        assert!(matches!(d.hex().len(), 64 | 128));
    }
}

/// `ranges`: a `Range` value against a size (first line), then a `Content-Range`.
pub fn ranges(data: &[u8]) {
    let p = parts(data, 3);
    let size = std::str::from_utf8(p[0])
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1000);
    if let Ok(range) = std::str::from_utf8(p[1]) {
        match crate::distribution::byte_range(range, size) {
            Ok(Some(r)) => {
                assert!(r.first <= r.last, "{r:?}");
                assert!(r.last < size, "{r:?} of {size}");
                assert!(r.len() <= size);
            }
            Ok(None) => {}
            Err(crate::registry::RegistryError::RangeNotSatisfiable { size: s }) => {
                assert_eq!(s, size)
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    if let Ok(cr) = std::str::from_utf8(p[2])
        && let Some(c) = crate::distribution::chunk_range(cr)
    {
        // Parsed values are what the text says; ordering is the caller's check.
        assert!(cr.contains(&c.first.to_string()));
    }
}

/// `sigv4`: `name: value` header lines, a blank line, then a request target
/// (path and query); the headers are parsed, the envelope checked, and the
/// signature verified against a fixed secret.
pub fn sigv4(data: &[u8]) {
    use crate::sigv4;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (head, target) = text.split_once("\n\n").unwrap_or((text, "/"));
    let mut headers = axum::http::HeaderMap::new();
    for line in head.lines() {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (
                axum::http::HeaderName::from_bytes(k.trim().as_bytes()),
                axum::http::HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(k, v);
        }
    }
    let Ok(parsed) = sigv4::parse(&headers) else {
        return;
    };
    assert!(sigv4::is_access_key_id(&parsed.credential.access_key_id));
    assert!(sigv4::parse_amz_date(&parsed.amz_date).is_some());
    let now = sigv4::parse_amz_date(&parsed.amz_date).unwrap_or(0);
    let _ = sigv4::check_envelope(&parsed, &headers, "us-east-1", "ecr", now);
    if let Ok(uri) = target.parse::<axum::http::Uri>() {
        let r = sigv4::verify(
            "POST",
            &uri,
            &headers,
            b"{}",
            &parsed,
            "secret",
            "us-east-1",
            "ecr",
            now,
        );
        if r.is_ok() {
            // Only a correct signature verifies: recompute it.
            let names: Vec<&str> = parsed.signed_headers.iter().map(String::as_str).collect();
            let auth = sigv4::sign(
                "POST",
                &uri,
                &headers,
                &names,
                b"{}",
                &parsed.credential.access_key_id,
                "secret",
                &parsed.credential.region,
                &parsed.credential.service,
            );
            assert!(
                auth.ends_with(&parsed.signature),
                "verified a signature that sign() does not make"
            );
        }
    }
}

/// `forwarded`: the peer (first line), then forwarding header lines.
pub fn forwarded(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let peer: std::net::SocketAddr = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| "10.0.0.1:1".parse().expect("valid address"));
    let mut headers = axum::http::HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (
                axum::http::HeaderName::from_bytes(k.trim().as_bytes()),
                axum::http::HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(k, v);
        }
    }
    use crate::config::ForwardedHeader;
    for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
        let trusted = crate::http::client_addr::TrustedProxies::new(
            vec!["10.0.0.0/8".parse().expect("valid network")],
            header,
        );
        let c = trusted.client_addr(peer, &headers);
        assert_eq!(c.peer, peer);
        if !trusted.contains(peer.ip()) {
            assert_eq!(c.ip, peer.ip(), "an untrusted peer's headers were believed");
        }
    }
}

/// `iam_policy`: a policy document (first byte: identity or resource), then
/// an evaluation of it for a fixed request.
pub fn iam_policy(data: &[u8]) {
    use crate::iam::{Policy, PolicyKind, Principal, RequestContext};
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = if kind % 2 == 0 {
        PolicyKind::Identity
    } else {
        PolicyKind::Resource
    };
    let Ok(policy) = Policy::parse(text, kind) else {
        return;
    };
    let principal = Principal {
        arn: "arn:aws:iam::123456789012:user/ci".into(),
        account: "123456789012".into(),
        user_id: "AIDAEXAMPLE".into(),
        username: Some("ci".into()),
    };
    let extra = HashMap::new();
    let ctx = RequestContext {
        principal: &principal,
        action: "ecr:BatchGetImage",
        resource: "arn:aws:ecr:us-east-1:123456789012:repository/team/app",
        resource_account: "123456789012",
        source_ip: Some("192.0.2.1".parse().expect("valid address")),
        secure_transport: false,
        current_time_epoch: 1_767_225_600,
        extra: &extra,
    };
    let (identity, resource): (Vec<Policy>, Vec<Policy>) = match kind {
        PolicyKind::Identity => (vec![policy], vec![]),
        PolicyKind::Resource | PolicyKind::Key => (vec![], vec![policy]),
    };
    let _ = crate::iam::authorize(&identity, resource.iter(), &ctx);
}

/// `lifecycle_policy`: a lifecycle policy document, then a plan over a few images.
pub fn lifecycle_policy(data: &[u8]) {
    use crate::lifecycle::planner::{ImageFacts, plan};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = crate::lifecycle::policy::parse(text) else {
        return;
    };
    let day = 86_400_000;
    let images: Vec<ImageFacts> = (0..12)
        .map(|i| ImageFacts {
            digest: format!("sha256:{i:064x}"),
            tags: match i % 3 {
                0 => vec![],
                1 => vec![format!("v{i}"), "latest".into()],
                _ => vec![format!("prod-{i}")],
            },
            pushed_at: i * day,
            storage_class: crate::lifecycle::policy::StorageClass::Standard,
            last_pulled_at: (i % 2 == 0).then_some(i * day + 1),
            last_activated_at: None,
            last_archived_at: None,
            in_index: i == 5,
            attached: i == 7,
        })
        .collect();
    let decisions = plan(&policy, &images, 40 * day);
    let mut seen = std::collections::HashSet::new();
    for d in &decisions {
        assert!(seen.insert(&d.digest), "one decision per image");
        let img = images
            .iter()
            .find(|i| i.digest == d.digest)
            .expect("a known image");
        assert!(!img.attached, "a referrer is never acted on by itself");
    }
}

/// `ecr_request`: the first byte picks an operation, the rest is its JSON
/// body, sent signed through the real router to a real (temporary) store.
/// Whatever the body, the answer is a client error or a success, never a
/// server error.
pub fn ecr_request(data: &[u8]) {
    use std::sync::OnceLock;
    use tower_service::Service;
    static HARNESS: OnceLock<(
        tokio::runtime::Runtime,
        axum::Router,
        crate::metadata::testing::tempfile_path::TempPath,
    )> = OnceLock::new();
    let (rt, router, _dir) = HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = crate::metadata::testing::tempfile_path::TempPath::new();
        let router = rt.block_on(ecr_harness(dir.path()));
        (rt, router, dir)
    });
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let op = OPS[pick as usize % OPS.len()];
    let req = signed_request(op, body);
    let resp = rt
        .block_on(router.clone().call(req))
        .expect("the router never fails");
    assert!(
        resp.status().as_u16() < 500,
        "{op} answered {} to {:?}",
        resp.status(),
        String::from_utf8_lossy(body)
    );
}

/// Operations the `ecr_request` target sends.
const OPS: &[&str] = &[
    "CreateRepository",
    "DescribeRepositories",
    "DeleteRepository",
    "ListImages",
    "DescribeImages",
    "BatchGetImage",
    "BatchDeleteImage",
    "PutImage",
    "BatchCheckLayerAvailability",
    "InitiateLayerUpload",
    "UploadLayerPart",
    "CompleteLayerUpload",
    "GetDownloadUrlForLayer",
    "SetRepositoryPolicy",
    "PutRegistryPolicy",
    "PutLifecyclePolicy",
    "StartLifecyclePolicyPreview",
    "GetLifecyclePolicyPreview",
    "TagResource",
    "UntagResource",
    "PutImageTagMutability",
    "GetAuthorizationToken",
];

const FUZZ_KEY: &str = "AKIAFUZZFUZZFUZZFUZZ";
const FUZZ_SECRET: &str = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz";

fn signed_request(op: &str, body: &[u8]) -> axum::http::Request<axum::body::Body> {
    let now = crate::metadata::now_millis() / 1000;
    let mut h = axum::http::HeaderMap::new();
    h.insert("host", "fuzz".parse().expect("valid header"));
    h.insert(
        "x-amz-date",
        crate::sigv4::format_amz_date(now)
            .parse()
            .expect("valid header"),
    );
    h.insert(
        "x-amz-target",
        format!("AmazonEC2ContainerRegistry_V20150921.{op}")
            .parse()
            .expect("valid header"),
    );
    let auth = crate::sigv4::sign(
        "POST",
        &axum::http::Uri::from_static("/"),
        &h,
        &["host", "x-amz-date", "x-amz-target"],
        body,
        FUZZ_KEY,
        FUZZ_SECRET,
        "us-east-1",
        "ecr",
    );
    let mut req = axum::http::Request::builder().method("POST").uri("/");
    for (k, v) in &h {
        req = req.header(k, v);
    }
    req.header("authorization", auth)
        .header("content-length", body.len())
        .body(axum::body::Body::from(body.to_vec()))
        .expect("a valid request")
}

/// The server's router over a store in `dir`, with the fuzz key as the root.
async fn ecr_harness(dir: &std::path::Path) -> axum::Router {
    use std::sync::Arc;
    let config = crate::config::Config {
        data_dir: dir.to_path_buf(),
        ..crate::config::Config::default()
    };
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let registry = Arc::new(
        crate::server::open_registry(&config, metrics.clone())
            .await
            .expect("a store"),
    );
    let master = crate::secrets::MasterKey::from_bytes(&[9u8; 32]);
    let pull_through = std::sync::Arc::new(crate::pull_through::PullThrough::new(
        registry.clone(),
        master.clone(),
        "us-east-1",
        std::time::Duration::from_secs(24 * 3600),
    ));
    let access = crate::auth::Access::open(registry.meta.clone(), master, "us-east-1")
        .await
        .expect("access");
    access
        .bootstrap(Some("123456789012"), Some((FUZZ_KEY, FUZZ_SECRET)))
        .await
        .expect("bootstrap");
    let stacks = crate::stacks::Stacks::new(registry.meta.clone(), "us-east-1".into());
    let access = Arc::new(access);
    let replicator = Arc::new(
        crate::replication::Replicator::new(registry.clone(), access.clone(), &[])
            .expect("no peers"),
    );
    let audit = crate::audit_trail::AuditTrail::start(registry.meta.clone(), true, metrics.clone());
    let state = Arc::new(crate::app::AppState {
        audit,
        primary_account: access.primary_account().await.expect("an account"),
        registry,
        stacks,
        replicator,
        pull_through,
        metrics,
        access,
        auth_required: true,
        region: "us-east-1".into(),
        registry_host: None,
        body_budget: crate::http::budget::BodyBudget::new(64 << 20, 64 << 20),
        http: crate::config::HttpLimits::default(),
    });
    crate::server::router(state)
}

/// A harness: arbitrary bytes in, a panic if an invariant breaks.
pub type Harness = fn(&[u8]);

/// Every target by name, for the corpus test and the fuzz smoke test.
/// `scan_layer`: the first byte picks the compression (0 plain, 1 gzip,
/// 2 zstd), the rest is the layer blob. Small limits, so a bomb stops soon.
pub fn scan_layer(data: &[u8]) {
    use berth_scanner::layer::{Compression, Limits, scan_layer};
    let Some((&pick, blob)) = data.split_first() else {
        return;
    };
    let compression = match pick % 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    let limits = Limits {
        max_uncompressed: 64 << 20,
        max_entries: 100_000,
        max_file: 8 << 20,
        max_database: 8 << 20,
        max_binary: 8 << 20,
        max_packages: 100_000,
    };
    if let Ok(scan) = scan_layer(blob, compression, &limits) {
        assert!(scan.uncompressed_bytes <= limits.max_uncompressed + 512);
        for path in scan.facts.keys() {
            assert!(
                !path.starts_with('/') && !path.split('/').any(|c| c == ".."),
                "a kept path escapes the root: {path:?}"
            );
        }
        // Twice: a layer over itself, whiteouts and all.
        let inv = berth_scanner::image::merge(&[("a", &scan), ("b", &scan)]);
        let os = inv.os.as_ref().and_then(berth_scanner::os::ecosystem);
        let _ = berth_scanner::matcher::keys_of(&inv, os.as_deref());
        let _ = berth_scanner::sbom::cyclonedx(&inv, "fuzz:latest", "sha256:00");
    }
}

/// `osv_record`: the first line is a version, the rest an OSV record; the
/// record's ranges are evaluated for it, and it is compared with every
/// event under every ordering.
pub fn osv_record(data: &[u8]) {
    use berth_scanner::version::{Scheme, compare};
    let p = parts(data, 2);
    let version = String::from_utf8_lossy(p[0]);
    let Ok(record) = berth_scanner::osv::parse_record("fuzz.json", p[1]) else {
        return;
    };
    let mut compacted = record.clone();
    berth_scanner::osv::compact(&mut compacted);
    for (a, c) in record.affected.iter().zip(&compacted.affected) {
        let verdict = berth_scanner::osv::affects(a, &version);
        assert_eq!(
            verdict.is_some(),
            berth_scanner::osv::affects(c, &version).is_some(),
            "compact changed a verdict"
        );
        for r in &a.ranges {
            for e in &r.events {
                for v in [&e.introduced, &e.fixed, &e.last_affected, &e.limit]
                    .into_iter()
                    .flatten()
                {
                    for scheme in [
                        Scheme::Dpkg,
                        Scheme::Rpm,
                        Scheme::Apk,
                        Scheme::Pep440,
                        Scheme::Semver,
                        Scheme::Go,
                        Scheme::Maven,
                        Scheme::RubyGems,
                    ] {
                        if let (Some(x), Some(y)) =
                            (compare(scheme, &version, v), compare(scheme, v, &version))
                        {
                            assert_eq!(x, y.reverse(), "{scheme:?}: {version:?} vs {v:?}");
                        }
                    }
                }
            }
        }
    }
    for a in &record.affected {
        let _ = berth_scanner::severity::rate(&record, a);
    }
}

pub const TARGETS: &[(&str, Harness)] = &[
    ("manifest", manifest),
    ("route", route),
    ("ranges", ranges),
    ("sigv4", sigv4),
    ("forwarded", forwarded),
    ("iam_policy", iam_policy),
    ("lifecycle_policy", lifecycle_policy),
    ("ecr_request", ecr_request),
    ("scan_layer", scan_layer),
    ("osv_record", osv_record),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed and every recorded crash of every target, through its harness.
    #[test]
    fn corpus_and_regressions() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut ran = 0;
        for (name, target) in TARGETS {
            let mut inputs = 0;
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for e in entries {
                    let path = e.expect("a directory entry").path();
                    let data = std::fs::read(&path).expect("an input file");
                    target(&data);
                    inputs += 1;
                }
            }
            assert!(inputs > 0, "no seeds for fuzz target {name}");
            ran += inputs;
        }
        assert!(ran >= TARGETS.len());
    }

    #[test]
    fn parts_split_at_newlines() {
        assert_eq!(parts(b"a\nb\nc\nd", 3), vec![&b"a"[..], b"b", b"c\nd"]);
        assert_eq!(parts(b"a", 3), vec![&b"a"[..], b"", b""]);
    }
}
