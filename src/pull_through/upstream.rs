//! The client side of the Distribution API, for fetching from an upstream
//! registry: manifests (bounded in size and time), blobs (streamed, with a
//! stall timeout), and Docker's token flow (a `401` with
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…` → a token from the
//! realm, with Basic credentials when the rule has them; or a `Basic`
//! challenge answered with them). Tokens are cached per node until they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use super::rules::UpstreamUrl;

/// Connecting to an upstream gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A manifest request (or a token request) must complete within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A blob body that delivers nothing for this long is abandoned.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest token response read.
const MAX_TOKEN_BYTES: usize = 64 << 10;

/// The manifest media types asked for, in ECR's and Docker's order of preference.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered, with this status (404: it has no such thing).
    #[error("the upstream answered {status}: {message}")]
    Status { status: u16, message: String },
    /// No answer: refused, reset, timed out, a TLS failure.
    #[error("the upstream cannot be reached: {0}")]
    Unreachable(String),
    #[error("the upstream's manifest is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the upstream's answer is malformed: {0}")]
    Protocol(String),
}

impl UpstreamError {
    /// Whether the upstream is down or overloaded (429, 5xx, no answer):
    /// the cached copy stands in for it.
    pub fn is_outage(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => *status == 429 || *status >= 500,
            UpstreamError::Unreachable(_) => true,
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::Status { status: 404, .. })
    }
}

fn unreachable(e: reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable(e.to_string())
}

/// Credentials for an upstream: a user name and a password or access token.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// Bearer tokens by (upstream, user, scope), until they expire.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl TokenCache {
    fn get(&self, key: &str) -> Option<String> {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match t.get(key) {
            Some((tok, until)) if *until > Instant::now() => Some(tok.clone()),
            Some(_) => {
                t.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: String, token: String, valid: Duration) {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: expired entries go when the cache grows.
        if t.len() > 1024 {
            let now = Instant::now();
            t.retain(|_, (_, until)| *until > now);
        }
        t.insert(key, (token, Instant::now() + valid));
    }
}

/// A challenge from `WWW-Authenticate`.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// Parse `WWW-Authenticate` (one challenge; parameters may be quoted).
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params: HashMap<String, String> = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, val);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// One upstream registry, as one rule reaches it.
pub struct Upstream<'a> {
    pub url: &'a UpstreamUrl,
    pub credentials: Option<&'a Credentials>,
    pub client: &'a reqwest::Client,
    pub tokens: &'a TokenCache,
}

/// A manifest as the upstream served it.
pub struct UpstreamManifest {
    pub bytes: Bytes,
    pub media_type: Option<String>,
    pub digest_header: Option<String>,
}

/// A blob body on its way.
pub struct UpstreamBlob {
    pub size: Option<u64>,
    pub body: futures_util::stream::BoxStream<'static, Result<Bytes, UpstreamError>>,
}

impl Upstream<'_> {
    fn token_key(&self, scope: &str) -> String {
        format!(
            "{}\n{}\n{scope}",
            self.url.base(),
            self.credentials.map_or("", |c| c.username.as_str())
        )
    }

    fn basic(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.credentials {
            Some(c) => req.basic_auth(&c.username, Some(&c.password)),
            None => req,
        }
    }

    /// Send `method path` with the auth the upstream asks for, retrying once after a challenge.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        scope: &str,
        accept: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = format!("{}{path}", self.url.base());
        let build = |auth: Auth| {
            let mut r = self.client.request(method.clone(), &url);
            if let Some(a) = accept {
                r = r.header(reqwest::header::ACCEPT, a);
            }
            if let Some(t) = timeout {
                r = r.timeout(t);
            }
            match auth {
                Auth::None => r,
                Auth::Bearer(t) => r.bearer_auth(t),
                Auth::Basic => self.basic(r),
            }
        };
        let key = self.token_key(scope);
        let first = match self.tokens.get(&key) {
            Some(t) => Auth::Bearer(t),
            None => Auth::None,
        };
        let resp = build(first).send().await.map_err(unreachable)?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let retry = match challenge {
            Some(Challenge::Bearer {
                realm,
                service,
                scope: asked,
            }) => {
                let scope = asked.unwrap_or_else(|| scope.to_string());
                Auth::Bearer(
                    self.fetch_token(&realm, service.as_deref(), &scope, &key)
                        .await?,
                )
            }
            Some(Challenge::Basic) if self.credentials.is_some() => Auth::Basic,
            _ => return Ok(resp),
        };
        build(retry).send().await.map_err(unreachable)
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        key: &str,
    ) -> Result<String, UpstreamError> {
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("scope", scope);
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.finish()
        };
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{sep}{query}");
        let req = self.client.get(url).timeout(REQUEST_TIMEOUT);
        let resp = self.basic(req).send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = read_bounded(resp, MAX_TOKEN_BYTES).await?;
        if status != 200 {
            return Err(UpstreamError::Status {
                status,
                message: format!(
                    "the token service refused: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Protocol(format!("token response: {e}")))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| UpstreamError::Protocol("the token response has no token".into()))?
            .to_string();
        // At least 60 s by the spec; used a little less than it is valid.
        let valid = v
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .unwrap_or(60)
            .clamp(10, 3600);
        self.tokens.put(
            key.to_string(),
            token.clone(),
            Duration::from_secs(valid - valid / 10),
        );
        Ok(token)
    }

    fn scope(repository: &str) -> String {
        format!("repository:{repository}:pull")
    }

    /// `send`, and anything but `200` is an error.
    async fn fetch(
        &self,
        method: reqwest::Method,
        path: &str,
        scope: &str,
        accept: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let resp = self
            .send(method.clone(), path, scope, accept, timeout)
            .await?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(UpstreamError::Status {
                status,
                message: format!("{method} {path}"),
            });
        }
        Ok(resp)
    }

    /// `GET /v2/` as the rule's credentials: whether the upstream answers and accepts them.
    pub async fn check(&self) -> Result<(), UpstreamError> {
        let get = reqwest::Method::GET;
        self.fetch(
            get,
            "/v2/",
            "registry:catalog:*",
            None,
            Some(REQUEST_TIMEOUT),
        )
        .await
        .map(|_| ())
    }

    async fn manifest_request(
        &self,
        method: reqwest::Method,
        repository: &str,
        reference: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let scope = Self::scope(repository);
        let accept = Some(MANIFEST_ACCEPT);
        self.fetch(method, &path, &scope, accept, Some(REQUEST_TIMEOUT))
            .await
    }

    /// The digest the upstream gives `reference` now (`HEAD`).
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, UpstreamError> {
        let resp = self
            .manifest_request(reqwest::Method::HEAD, repository, reference)
            .await?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// The manifest `reference`, at most `max` bytes, within [`REQUEST_TIMEOUT`].
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
        max: usize,
    ) -> Result<UpstreamManifest, UpstreamError> {
        let resp = self
            .manifest_request(reqwest::Method::GET, repository, reference)
            .await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        };
        let media_type = header("content-type");
        let digest_header = header("docker-content-digest");
        let bytes = read_bounded(resp, max).await?;
        Ok(UpstreamManifest {
            bytes,
            media_type,
            digest_header,
        })
    }

    /// Blob `digest`, streamed; each read must deliver within [`STALL_TIMEOUT`].
    pub async fn blob(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<UpstreamBlob, UpstreamError> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let scope = Self::scope(repository);
        let resp = self
            .fetch(reqwest::Method::GET, &path, &scope, None, None)
            .await?;
        let size = resp.content_length();
        let body =
            futures_util::stream::unfold(resp.bytes_stream().boxed(), |mut stream| async move {
                let item = match tokio::time::timeout(STALL_TIMEOUT, stream.next()).await {
                    Err(_) => Err(UpstreamError::Unreachable(format!(
                        "the blob body stalled for {STALL_TIMEOUT:?}"
                    ))),
                    Ok(None) => return None,
                    Ok(Some(Ok(b))) => Ok(b),
                    Ok(Some(Err(e))) => Err(unreachable(e)),
                };
                Some((item, stream))
            })
            .boxed();
        Ok(UpstreamBlob { size, body })
    }
}

enum Auth {
    None,
    Bearer(String),
    Basic,
}

/// The body of `resp`, refused past `max` bytes without reading further.
async fn read_bounded(resp: reqwest::Response, max: usize) -> Result<Bytes, UpstreamError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(UpstreamError::TooLarge(max));
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(unreachable)?;
        if out.len() + chunk.len() > max {
            return Err(UpstreamError::TooLarge(max));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// A client for upstreams: rustls, bounded connect time, redirects followed
/// (Docker Hub and others send blobs from a CDN; credentials are not sent
/// to another host). On a host without CA certificates (a `FROM scratch`
/// image) it trusts none: `http://` upstreams work, `https://` ones fail
/// their fetches with the TLS error, and the server starts.
pub fn client() -> reqwest::Client {
    let builder = || {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!(
                "berth/",
                env!("CARGO_PKG_VERSION"),
                " (pull-through cache)"
            ))
    };
    match builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no CA certificates: pull-through caches of https:// upstreams will fail");
            builder()
                .tls_certs_only(Vec::<reqwest::Certificate>::new())
                .build()
                .expect("a client that trusts no certificate builds")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=http://h/t, service="a \"b\"""#),
            Some(Challenge::Bearer {
                realm: "http://h/t".into(),
                service: Some("a \"b\"".into()),
                scope: None,
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn outages_are_429_5xx_and_silence() {
        let s = |status| UpstreamError::Status {
            status,
            message: String::new(),
        };
        assert!(s(429).is_outage());
        assert!(s(503).is_outage());
        assert!(!s(404).is_outage());
        assert!(!s(401).is_outage());
        assert!(UpstreamError::Unreachable("x".into()).is_outage());
        assert!(s(404).is_not_found());
    }
}
