//! A peer: another Berth deployment (or any ECR-compatible registry) that
//! serves a region this one replicates to (`[[peers]]` in the config file).
//! A delivery signs in with the identity configured for the peer (ECR's
//! GetAuthorizationToken, SigV4) and pushes the image over `/v2/`, blobs
//! streamed from the store (never held in memory), then the manifests by
//! digest (an index's children first), then its tags. Every request carries
//! the replication header, so the peer authorizes it as `ecr:ReplicateImage`,
//! creates a missing repository from its own `REPLICATION` template, and
//! does not replicate it further. Pushes are idempotent: what the peer holds
//! already is skipped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Uri};
use base64::Engine as _;
use serde_json::Value;

use super::{Failure, MAX_DEPTH, source_manifest};
use crate::config::PeerConfig;
use crate::digest::Digest;
use crate::http::REPLICATION_HEADER;
use crate::registry::{Registry, RepoId};

/// A blob's body that the peer stops reading for this long fails.
const SEND_STALL: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    crate::metadata::now_millis()
}

/// A token is renewed when it has less than this left.
const TOKEN_MARGIN_MS: i64 = 10 * 60 * 1000;

pub struct Peer {
    config: PeerConfig,
    http: reqwest::Client,
    /// Registry tokens by destination registry: (Basic credentials, expiry ms).
    tokens: Mutex<HashMap<String, (String, i64)>>,
}

impl Peer {
    /// A client for the peer of `config`; fails for an `https://` peer on a
    /// host without CA certificates.
    pub fn new(config: &PeerConfig) -> Result<Peer, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        if config.endpoint.starts_with("http://") {
            // No TLS: do not ask the system for CA certificates (a
            // `FROM scratch` image has none), as the S3 client.
            builder = builder.tls_certs_only(Vec::<reqwest::Certificate>::new());
        }
        let http = builder.build().map_err(|e| {
            format!(
                "the peer for {} at {}: {e} (an https:// peer needs the system's CA certificates, e.g. /etc/ssl/certs)",
                config.region, config.endpoint
            )
        })?;
        Ok(Peer {
            config: config.clone(),
            http,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn region(&self) -> &str {
        &self.config.region
    }

    fn endpoint(&self) -> &str {
        self.config.endpoint.trim_end_matches('/')
    }

    /// The `Host` of `/v2/` requests to `registry` at the peer: ECR's
    /// `<account>.<host>` form, which selects the registry.
    fn registry_host(&self, registry: &str) -> String {
        let authority = self
            .endpoint()
            .split_once("://")
            .map_or(self.endpoint(), |(_, rest)| rest);
        format!("{registry}.{authority}")
    }

    /// Basic credentials for `/v2/` of `registry` at the peer.
    async fn token(&self, registry: &str) -> Result<String, Failure> {
        let now = crate::metadata::now_millis();
        if let Some((t, exp)) = self.tokens.lock().expect("not poisoned").get(registry)
            && *exp > now + TOKEN_MARGIN_MS
        {
            return Ok(t.clone());
        }
        let body = serde_json::json!({ "registryIds": [registry] }).to_string();
        let url = format!("{}/", self.endpoint());
        let uri: Uri = url
            .parse()
            .map_err(|_| Failure::new("DESTINATION_UNKNOWN", "the peer's endpoint is not a URL"))?;
        let mut headers = HeaderMap::new();
        let amz_date = crate::sigv4::format_amz_date(now / 1000);
        let target = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
        headers.insert("x-amz-date", header(&amz_date));
        headers.insert("x-amz-target", header(target));
        headers.insert("content-type", header("application/x-amz-json-1.1"));
        let auth = crate::sigv4::sign(
            "POST",
            &uri,
            &headers,
            &["host", "x-amz-date", "x-amz-target", "content-type"],
            body.as_bytes(),
            &self.config.access_key_id,
            &self.config.secret_access_key,
            &self.config.region,
            "ecr",
        );
        headers.insert("authorization", header(&auth));
        let resp = self
            .http
            .post(&url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let kind = v["__type"].as_str().unwrap_or("error");
            let message = v["message"].as_str().unwrap_or(&text);
            let code = match status.as_u16() {
                400..=499 => "ACCESS_DENIED",
                _ => "DESTINATION_ERROR",
            };
            return Err(Failure::new(
                code,
                format!(
                    "the peer for {} refused the sign-in ({kind}): {message}",
                    self.config.region
                ),
            ));
        }
        let data = &v["authorizationData"][0];
        let token = data["authorizationToken"]
            .as_str()
            .ok_or_else(|| Failure::new("DESTINATION_ERROR", "the peer sent no token"))?;
        // Check the token is `AWS:<password>`, as docker would use it.
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| s.starts_with("AWS:"))
            .ok_or_else(|| Failure::new("DESTINATION_ERROR", "the peer's token is malformed"))?;
        drop(decoded);
        let expires = data["expiresAt"]
            .as_f64()
            .map_or(now + 3_600_000, |s| (s * 1000.0) as i64);
        let basic = format!("Basic {token}");
        self.tokens
            .lock()
            .expect("not poisoned")
            .insert(registry.to_string(), (basic.clone(), expires));
        Ok(basic)
    }

    /// A `/v2/` request to `target`'s registry at the peer, with the token
    /// and the replication header.
    async fn v2(
        &self,
        method: reqwest::Method,
        target: &RepoId,
        source: &RepoId,
        path_or_url: &str,
    ) -> Result<reqwest::RequestBuilder, Failure> {
        let token = self.token(&target.registry).await?;
        let url = if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.endpoint())
        };
        Ok(self
            .http
            .request(method, url)
            .header("host", self.registry_host(&target.registry))
            .header("authorization", token)
            .header(
                REPLICATION_HEADER,
                crate::reference::key_account(&source.registry),
            ))
    }

    /// Make `digest` of `source`'s content exist at the peer: an index's
    /// children, the blobs, and (`with_manifest`) the manifest by digest;
    /// what the peer already has is skipped.
    pub async fn push_content(
        &self,
        reg: &Registry,
        source: &RepoId,
        target: &RepoId,
        digest: &Digest,
        with_manifest: bool,
    ) -> Result<(), Failure> {
        self.push_manifest(reg, source, target, digest, 0, with_manifest)
            .await
    }

    /// Point `tags` at `digest` at the peer (the first PUT stores the
    /// manifest too); with no tags, make sure the manifest is there by digest.
    pub async fn push_tags(
        &self,
        reg: &Registry,
        source: &RepoId,
        target: &RepoId,
        digest: &Digest,
        tags: &[String],
    ) -> Result<(), Failure> {
        if tags.is_empty() {
            return self
                .push_manifest(reg, source, target, digest, 0, true)
                .await;
        }
        let (m, _) = source_manifest(reg, source, digest).await?;
        for tag in tags {
            let path = format!("/v2/{}/manifests/{tag}", target.name);
            let resp = self
                .v2(reqwest::Method::PUT, target, source, &path)
                .await?
                .header("content-type", &m.media_type)
                .body(m.content.clone())
                .send()
                .await
                .map_err(unreachable)?;
            match check(resp, "a tag").await {
                Ok(_) => {}
                // An immutable tag the destination holds at another image
                // stays: the image arrives without it, as in ECR (stored by
                // digest, then).
                Err(f) if f.code == "TAG_IMMUTABLE" => {
                    tracing::info!(repository = %target.name, tag, "an immutable tag at the peer was kept");
                    self.push_manifest(reg, source, target, digest, 0, true)
                        .await?;
                }
                Err(f) => return Err(f),
            }
        }
        Ok(())
    }

    async fn push_manifest(
        &self,
        reg: &Registry,
        source: &RepoId,
        target: &RepoId,
        digest: &Digest,
        depth: usize,
        with_manifest: bool,
    ) -> Result<(), Failure> {
        let path = format!("/v2/{}/manifests/{digest}", target.name);
        let head = self
            .v2(reqwest::Method::HEAD, target, source, &path)
            .await?
            .header(
                "accept",
                "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json, */*",
            )
            .send()
            .await
            .map_err(unreachable)?;
        if head.status().is_success() {
            return Ok(());
        }
        let (m, parsed) = source_manifest(reg, source, digest).await?;
        if !parsed.children.is_empty() && depth >= MAX_DEPTH {
            return Err(Failure::new("REJECTED", "indexes nest too deeply"));
        }
        for child in &parsed.children {
            Box::pin(self.push_manifest(reg, source, target, &child.digest, depth + 1, true))
                .await?;
        }
        for blob in &parsed.blobs {
            self.push_blob(reg, source, target, &blob.digest).await?;
        }
        if !with_manifest {
            return Ok(());
        }
        let resp = self
            .v2(reqwest::Method::PUT, target, source, &path)
            .await?
            .header("content-type", &m.media_type)
            .body(m.content.clone())
            .send()
            .await
            .map_err(unreachable)?;
        check(resp, "the manifest").await.map(drop)
    }

    async fn push_blob(
        &self,
        reg: &Registry,
        source: &RepoId,
        target: &RepoId,
        digest: &Digest,
    ) -> Result<(), Failure> {
        let path = format!("/v2/{}/blobs/{digest}", target.name);
        let head = self
            .v2(reqwest::Method::HEAD, target, source, &path)
            .await?
            .send()
            .await
            .map_err(unreachable)?;
        if head.status().is_success() {
            return Ok(());
        }
        if head.status() != reqwest::StatusCode::NOT_FOUND {
            check(head, "a blob check").await?;
        }
        let start = format!("/v2/{}/blobs/uploads/", target.name);
        let resp = self
            .v2(reqwest::Method::POST, target, source, &start)
            .await?
            .header("content-length", "0")
            .send()
            .await
            .map_err(unreachable)?;
        let resp = check(resp, "an upload").await?;
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Failure::new("DESTINATION_ERROR", "the peer gave no upload location"))?
            .to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={digest}");
        let size = reg
            .meta
            .blob_size(digest)
            .await
            .map_err(|e| Failure::from(crate::registry::RegistryError::Meta(e)))?
            .ok_or_else(|| Failure::new("REJECTED", format!("blob {digest} is not stored")))?;
        let stream = reg.read_blob_internal(digest).await?;
        // The peer must keep taking the bytes: a body it stops reading (a
        // network that went away mid-blob) fails after SEND_STALL, not after
        // TCP gives up, so the entries behind it are not held for long.
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(now_ms()));
        let seen = progress.clone();
        let stream = futures_util::StreamExt::inspect(stream, move |_| {
            seen.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        });
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let finished = done.clone();
        let stream = futures_util::StreamExt::chain(
            stream,
            futures_util::stream::poll_fn(move |_| {
                finished.store(true, std::sync::atomic::Ordering::Relaxed);
                std::task::Poll::Ready(None)
            }),
        );
        let send = self
            .v2(reqwest::Method::PUT, target, source, &put)
            .await?
            .header("content-type", "application/octet-stream")
            .header("content-length", size.to_string())
            .body(reqwest::Body::wrap_stream(stream))
            .send();
        let stalled = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let idle = now_ms() - progress.load(std::sync::atomic::Ordering::Relaxed);
                if !done.load(std::sync::atomic::Ordering::Relaxed)
                    && idle > SEND_STALL.as_millis() as i64
                {
                    return;
                }
            }
        };
        let resp = tokio::select! {
            r = send => r.map_err(unreachable)?,
            () = stalled => {
                return Err(Failure::new(
                    "DESTINATION_UNREACHABLE",
                    format!("the peer stopped taking blob {digest} for {SEND_STALL:?}"),
                ));
            }
        };
        check(resp, "a blob").await.map(drop)
    }
}

fn header(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("a valid header value")
}

fn unreachable(e: reqwest::Error) -> Failure {
    Failure::new(
        "DESTINATION_UNREACHABLE",
        format!("the peer did not answer: {e}"),
    )
}

/// The response if it succeeded; otherwise the failure its status and OCI
/// error body say.
async fn check(resp: reqwest::Response, what: &str) -> Result<reqwest::Response, Failure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let oci_code = v["errors"][0]["code"].as_str().unwrap_or("");
    let message = v["errors"][0]["message"].as_str().unwrap_or(&body);
    let code = match (status.as_u16(), oci_code) {
        (401 | 403, _) => "ACCESS_DENIED",
        (_, "TAG_INVALID") => "TAG_IMMUTABLE",
        (500..=599, _) => "DESTINATION_ERROR",
        _ => "REJECTED",
    };
    Err(Failure::new(
        code,
        format!("the peer refused {what} ({status} {oci_code}): {message}"),
    ))
}
