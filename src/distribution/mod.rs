//! The OCI Distribution API (`/v2/…`): HTTP controllers over the registry
//! service. This module owns the wire format only: path parsing, headers,
//! status codes and OCI error bodies. The rules live in `registry`.
//!
//! Repository names contain slashes, so routes cannot be plain path patterns:
//! every `/v2/` request goes to [`dispatch`], which parses the path from the
//! right ([`Route::parse`]) and calls the handler for the route and method.
//!
//! Where each request is handled:
//! - manifests (GET, HEAD, PUT, DELETE): [`manifests`]
//! - blobs (GET, HEAD, DELETE) and uploads (POST, PATCH, PUT, GET, DELETE): [`blobs`]
//! - tags, catalog, referrers: [`listing`]
//! - pulls of repositories a pull-through cache rule serves: [`pull_through`]

mod blobs;
pub mod errors;
pub use blobs::{byte_range, chunk_range};
mod listing;
mod manifests;
mod pull_through;

use std::sync::Arc;

use axum::body::Body;
use axum::body::Body as ReqBody;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::auth::{AuthError, Caller};
use crate::digest::Digest;
use crate::reference::{Reference, RepoName};
use crate::registry::creation_templates::AppliedFor;
use crate::registry::{RegistryError, RepoId};
use errors::OciError;

/// A parsed `/v2/` path.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    StartUpload(String),
    Upload(String, String),
    Referrers(String, String),
}

impl Route {
    /// Parse the part of the path after `/v2/`.
    pub fn parse(rest: &str) -> Option<Route> {
        if rest.is_empty() {
            return Some(Route::Base);
        }
        if rest == "_catalog" {
            return Some(Route::Catalog);
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Some(Route::Tags(name.to_string()));
        }
        let (prefix, last) = rest.rsplit_once('/')?;
        let own = |s: &str| s.to_string();
        if let Some(name) = prefix.strip_suffix("/manifests") {
            return Some(Route::Manifest(own(name), own(last)));
        }
        if let Some(name) = prefix.strip_suffix("/blobs/uploads") {
            return Some(if last.is_empty() {
                Route::StartUpload(own(name))
            } else {
                Route::Upload(own(name), own(last))
            });
        }
        if let Some(name) = prefix.strip_suffix("/blobs") {
            return Some(if last == "uploads" {
                Route::StartUpload(own(name))
            } else {
                Route::Blob(own(name), own(last))
            });
        }
        if let Some(name) = prefix.strip_suffix("/referrers") {
            return Some(Route::Referrers(own(name), own(last)));
        }
        None
    }

    /// A low-cardinality label for metrics.
    pub fn label(path: &str) -> &'static str {
        match path
            .strip_prefix("/v2/")
            .or(path.strip_prefix("/v2"))
            .map(Route::parse)
        {
            Some(Some(Route::Base)) => "v2_base",
            Some(Some(Route::Catalog)) => "v2_catalog",
            Some(Some(Route::Tags(_))) => "v2_tags",
            Some(Some(Route::Manifest(..))) => "v2_manifest",
            Some(Some(Route::Blob(..))) => "v2_blob",
            Some(Some(Route::StartUpload(_) | Route::Upload(..))) => "v2_upload",
            Some(Some(Route::Referrers(..))) => "v2_referrers",
            _ if path == "/healthz" => "healthz",
            _ if path == "/metrics" => "metrics",
            _ => "other",
        }
    }
}

fn parse_repo(registry: &str, name: &str) -> Result<RepoId, OciError> {
    RepoName::parse(name)
        .map(|n| RepoId::new(registry, n))
        .ok_or_else(|| OciError::name_invalid(name))
}

fn digest(s: &str) -> Result<Digest, OciError> {
    s.parse::<Digest>()
        .map_err(|e| OciError::digest_invalid(format!("invalid digest {s:?}: {e}")))
}

fn reference(s: &str) -> Result<Reference, OciError> {
    Reference::parse(s).map_err(|e| match e {
        crate::reference::ReferenceError::Digest(m) => OciError::digest_invalid(m),
        crate::reference::ReferenceError::Tag => {
            OciError::new(StatusCode::BAD_REQUEST, "TAG_INVALID", e.to_string())
        }
    })
}

/// Set a header from a string we built (always valid header text).
fn set(headers: &mut HeaderMap, name: header::HeaderName, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        headers.insert(name, v);
    }
}

pub const DOCKER_CONTENT_DIGEST: header::HeaderName =
    header::HeaderName::from_static("docker-content-digest");
pub const DOCKER_UPLOAD_UUID: header::HeaderName =
    header::HeaderName::from_static("docker-upload-uuid");
pub const OCI_SUBJECT: header::HeaderName = header::HeaderName::from_static("oci-subject");
pub const OCI_FILTERS_APPLIED: header::HeaderName =
    header::HeaderName::from_static("oci-filters-applied");

/// Query string as key/value pairs (percent-decoded).
fn query_pairs(parts: &Parts) -> Vec<(String, String)> {
    parts
        .uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Entry point for every `/v2/` request.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    let method = req.method().clone();
    let result = match Route::parse(rest) {
        None => Err(OciError::new(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            format!("no such endpoint: {path}"),
        )),
        Some(route) => {
            let (parts, body) = req.into_parts();
            let scope = crate::audit::Scope::new();
            let result = scope
                .run(route_request(&state, route, &method, parts, body, &scope))
                .await;
            state.audit.finish(&scope, audit_outcome(&result)).await;
            result
        }
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// How a `/v2/` request ended, for its audit event.
fn audit_outcome(result: &Result<Response, OciError>) -> crate::audit_trail::Outcome {
    use crate::audit_trail::Outcome;
    match result {
        Ok(r) if r.status().is_client_error() || r.status().is_server_error() => Outcome::Failed {
            code: r.status().as_u16().to_string(),
            message: r.status().canonical_reason().unwrap_or("").to_string(),
        },
        Ok(r) => Outcome::Ok {
            response: audit_response(r),
        },
        Err(e) => Outcome::Failed {
            code: e.code.to_string(),
            message: e.message.clone(),
        },
    }
}

/// What CloudTrail's responseElements would say of a `/v2/` answer: the
/// upload session, the bytes received, the digest stored.
fn audit_response(r: &Response) -> Option<serde_json::Value> {
    let h = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok());
    let mut m = serde_json::Map::new();
    if let Some(id) = h("docker-upload-uuid") {
        m.insert("uploadId".into(), id.into());
    }
    if let Some(last) = h("range")
        .and_then(|v| v.rsplit_once('-'))
        .and_then(|(_, l)| l.parse::<u64>().ok())
    {
        m.insert("lastByteReceived".into(), last.into());
    }
    if let Some(d) = h("docker-content-digest") {
        m.insert("digest".into(), d.into());
    }
    (!m.is_empty()).then_some(serde_json::Value::Object(m))
}

/// The audit event of an authenticated `/v2/` request: the ECR operation
/// CloudTrail records for it (docs/audit.md), with its parameters. `None`
/// for requests ECR records nothing for (the base endpoint, an upload's
/// status or cancellation, a download URL's own GET).
fn audit_event(
    state: &AppState,
    parts: &Parts,
    route: &Route,
    method: &Method,
    registry: &str,
    identity: crate::audit::Identity,
) -> Option<crate::audit::Event> {
    use serde_json::{Value, json};
    let q = query_pairs(parts);
    if query_get(&q, crate::auth::DOWNLOAD_GRANT_PARAM).is_some() {
        return None;
    }
    let image_id = |reference: &str| match reference.contains(':') {
        true => json!({ "imageDigest": reference }),
        false => json!({ "imageTag": reference }),
    };
    let (name, params): (&str, Value) = match (route, method.as_str()) {
        (Route::Base, _) => return None,
        (Route::Upload(..), "GET" | "DELETE") => return None,
        (Route::Catalog, _) => ("DescribeRepositories", json!({})),
        (Route::Tags(_), _) => ("ListImages", json!({ "filter": { "tagStatus": "TAGGED" } })),
        (Route::Referrers(_, d), _) => (
            "BatchGetImage",
            json!({ "imageIds": [{ "imageDigest": d }], "referrers": true }),
        ),
        (Route::Manifest(_, r), "PUT") => (
            "PutImage",
            match r.contains(':') {
                true => json!({ "imageDigest": r }),
                false => json!({ "imageTag": r }),
            },
        ),
        (Route::Manifest(_, r), "DELETE") => {
            ("BatchDeleteImage", json!({ "imageIds": [image_id(r)] }))
        }
        (Route::Manifest(_, r), _) => (
            "BatchGetImage",
            json!({
                "imageIds": [image_id(r)],
                "acceptedMediaTypes": parts
                    .headers
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(|v| v.trim())
                    .filter(|v| !v.is_empty())
                    .take(16)
                    .collect::<Vec<_>>(),
            }),
        ),
        (Route::Blob(_, d), "HEAD") => (
            "BatchCheckLayerAvailability",
            json!({ "layerDigests": [d] }),
        ),
        (Route::Blob(_, d), "DELETE") => ("BatchDeleteImage", json!({ "layerDigest": d })),
        (Route::Blob(_, d), _) => ("GetDownloadUrlForLayer", json!({ "layerDigest": d })),
        (Route::StartUpload(_), _) => (
            "InitiateLayerUpload",
            match (query_get(&q, "mount"), query_get(&q, "from")) {
                (Some(m), Some(f)) => json!({ "mount": m, "from": f }),
                _ => json!({}),
            },
        ),
        (Route::Upload(_, id), "PUT") => (
            "CompleteLayerUpload",
            json!({ "uploadId": id, "layerDigests": query_get(&q, "digest").into_iter().collect::<Vec<_>>() }),
        ),
        (Route::Upload(_, id), _) => ("UploadLayerPart", json!({ "uploadId": id })),
    };
    let account = crate::reference::key_account(registry);
    let region = crate::reference::key_region(registry, &state.region);
    let mut e = crate::audit_trail::request_event(
        parts,
        crate::audit::ECR,
        name,
        region,
        account,
        identity,
    );
    let mut params = params;
    params["registryId"] = json!(account);
    let repo = route.ecr_action(method).and_then(|(_, n)| n);
    if let Some(n) = repo {
        params["repositoryName"] = json!(n);
        e.resources.push(crate::audit_trail::repository_resource(
            crate::auth::repository_arn(region, account, n),
            account,
            n,
        ));
    }
    e.read_only = crate::audit_trail::is_read_only(name);
    e.request_parameters = Some(params);
    if is_replication(&parts.headers) {
        e.additional = Some(json!({ "replication": true }));
    }
    Some(e)
}

/// Whether a request is part of a replication delivery: its writes are
/// authorized as `ecr:ReplicateImage`, a missing repository is created from
/// a `REPLICATION` creation template (given `ecr:CreateRepository`), and
/// what it stores is not replicated further.
fn is_replication(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(crate::http::REPLICATION_HEADER)
}

impl Route {
    /// Whether the request writes to its repository (a push).
    fn is_write(&self, method: &Method) -> bool {
        match self {
            Route::Manifest(..) => method == Method::PUT,
            Route::StartUpload(_) | Route::Upload(..) => true,
            _ => false,
        }
    }

    /// The ECR action a request needs, and the repository it acts on.
    /// `None` for the base endpoint, which only needs authentication.
    fn ecr_action(&self, method: &Method) -> Option<(&'static str, Option<&str>)> {
        let head = method == Method::HEAD;
        Some(match self {
            Route::Base => return None,
            // Authentication only: the catalog lists what the caller may describe.
            Route::Catalog => return None,
            Route::Tags(n) => ("ecr:ListImages", Some(n)),
            Route::Referrers(n, _) => ("ecr:BatchGetImage", Some(n)),
            Route::Manifest(n, _) => match method.as_str() {
                "PUT" => ("ecr:PutImage", Some(n)),
                "DELETE" => ("ecr:BatchDeleteImage", Some(n)),
                _ => ("ecr:BatchGetImage", Some(n)),
            },
            Route::Blob(n, _) if head => ("ecr:BatchCheckLayerAvailability", Some(n)),
            Route::Blob(n, _) => match method.as_str() {
                "DELETE" => ("ecr:BatchDeleteImage", Some(n)),
                _ => ("ecr:GetDownloadUrlForLayer", Some(n)),
            },
            Route::StartUpload(n) => ("ecr:InitiateLayerUpload", Some(n)),
            Route::Upload(n, _) => match method.as_str() {
                "PUT" => ("ecr:CompleteLayerUpload", Some(n)),
                _ => ("ecr:UploadLayerPart", Some(n)),
            },
        })
    }
}

/// The 401 that makes docker and friends send `AWS:<token>` credentials; its
/// realm is the registry the request addressed, as ECR's is.
fn unauthorized(state: &AppState, parts: &Parts, message: &str) -> OciError {
    let requested = crate::http::request_host(&parts.headers, &parts.uri);
    let host = state.registry_host_for(&state.registry_for_host(requested), requested);
    OciError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message).with_header(
        header::WWW_AUTHENTICATE,
        format!(
            "Basic realm=\"{}://{host}/\",service=\"ecr.amazonaws.com\"",
            crate::http::scheme(parts).as_str()
        ),
    )
}

/// Authenticate `/v2/` Basic credentials: user `AWS`, password a registry token.
/// A blob GET may instead carry a download grant in the query (the URL
/// GetDownloadUrlForLayer returns), which is good for exactly that blob of
/// that repository; registry tokens are never accepted in a query string.
async fn authenticate(
    state: &AppState,
    route: &Route,
    method: &Method,
    parts: &Parts,
    registry: &str,
) -> Result<Arc<Caller>, OciError> {
    use base64::Engine;
    let headers = &parts.headers;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        let q = query_pairs(parts);
        if let Some(token) = query_get(&q, crate::auth::DOWNLOAD_GRANT_PARAM) {
            let Route::Blob(name, digest) = route else {
                return Err(grant_refused());
            };
            if method != Method::GET {
                return Err(grant_refused());
            }
            return match state
                .access
                .authenticate_download(token, registry, name, digest)
                .await
            {
                Ok(c) => Ok(c),
                Err(AuthError::Meta(e)) => Err(RegistryError::Meta(e).into()),
                Err(_) => Err(grant_refused()),
            };
        }
        return Err(unauthorized(state, parts, "authentication required"));
    };
    let creds = value
        .strip_prefix("Basic ")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let Some((user, password)) = creds.as_deref().and_then(|c| c.split_once(':')) else {
        return Err(unauthorized(state, parts, "malformed Basic credentials"));
    };
    if user != "AWS" {
        return Err(unauthorized(state, parts, "the user name must be AWS"));
    }
    match state.access.authenticate_token(password).await {
        Ok(c) => Ok(c),
        Err(AuthError::Meta(e)) => Err(RegistryError::Meta(e).into()),
        Err(e) => Err(unauthorized(state, parts, &e.to_string())),
    }
}

fn grant_refused() -> OciError {
    OciError::new(
        StatusCode::FORBIDDEN,
        "DENIED",
        "the download URL has expired, is invalid, or does not grant this request",
    )
}

async fn authorize(
    state: &AppState,
    parts: &Parts,
    caller: &Caller,
    action: &str,
    registry: &str,
    repo: Option<&str>,
) -> Result<bool, OciError> {
    state
        .access
        .authorize(
            caller,
            action,
            registry,
            repo,
            crate::http::client_ip(parts),
        )
        .await
        .map_err(|e| RegistryError::Meta(e).into())
}

/// `DENIED` in ECR's words.
fn denied(
    state: &AppState,
    caller: &Caller,
    action: &str,
    registry: &str,
    repo: Option<&str>,
) -> OciError {
    let (region, account) = (
        crate::reference::key_region(registry, &state.region),
        crate::reference::key_account(registry),
    );
    let resource = match repo {
        Some(r) => crate::auth::repository_arn(region, account, r),
        None => format!("arn:aws:ecr:{region}:{account}:*"),
    };
    OciError::new(
        StatusCode::FORBIDDEN,
        "DENIED",
        format!(
            "User: {} is not authorized to perform: {action} on resource: {resource}",
            caller.principal.arn
        ),
    )
}

async fn route_request(
    state: &AppState,
    route: Route,
    method: &Method,
    parts: Parts,
    body: ReqBody,
    scope: &crate::audit::Scope,
) -> Result<Response, OciError> {
    let reg = &state.registry;
    let registry =
        state.registry_key_for_host(crate::http::request_host(&parts.headers, &parts.uri));
    let repo = |n: &str| parse_repo(&registry, n);
    // In ECR mode every call is authenticated and authorized, like ECR's own registry.
    let mut allow_mount = true;
    let mut caller_seen = None;
    if state.auth_required {
        let caller = authenticate(state, &route, method, &parts, &registry).await?;
        caller_seen = Some(caller.clone());
        if let Some(e) = audit_event(
            state,
            &parts,
            &route,
            method,
            &registry,
            caller.audit_identity(),
        ) {
            state.audit.begin(scope, e);
        }
        let replicating = is_replication(&parts.headers);
        if let Some((action, name)) = route.ecr_action(method) {
            if let Some(n) = name {
                repo(n)?;
            }
            // A delivery's writes, and its existence checks, are one action.
            let action = match replicating
                && (route.is_write(method)
                    || matches!(route, Route::Blob(..)) && method == Method::HEAD)
            {
                true => "ecr:ReplicateImage",
                false => action,
            };
            if !authorize(state, &parts, &caller, action, &registry, name).await? {
                return Err(denied(state, &caller, action, &registry, name));
            }
        }
        // A push that would create its repository (a delivery, or a
        // CREATE_ON_PUSH template) also needs ecr:CreateRepository, as in ECR.
        let starts_a_push = matches!(route, Route::StartUpload(_))
            || matches!(route, Route::Manifest(..)) && method == Method::PUT;
        let pushed_to = route.ecr_action(method).and_then(|(_, n)| n);
        if let Some(n) = pushed_to.filter(|_| starts_a_push) {
            let target = repo(n)?;
            let what = match replicating {
                true => AppliedFor::Replication,
                false => AppliedFor::CreateOnPush,
            };
            if reg.would_create(&target, what).await? {
                let action = "ecr:CreateRepository";
                if !authorize(state, &parts, &caller, action, &registry, Some(n)).await? {
                    return Err(denied(state, &caller, action, &registry, Some(n)));
                }
                if replicating {
                    reg.create_repository_for(&target, what).await?;
                }
            }
        }
        if let Route::StartUpload(_) = &route {
            // A cross-repository mount needs pull permission on the source.
            let q = query_pairs(&parts);
            if let Some(from) = query_get(&q, "from") {
                allow_mount = RepoName::parse(from).is_some()
                    && authorize(
                        state,
                        &parts,
                        &caller,
                        "ecr:GetDownloadUrlForLayer",
                        &registry,
                        Some(from),
                    )
                    .await?;
            }
        }
    }
    if !state.auth_required {
        let account = crate::reference::key_account(&registry);
        let anonymous = crate::audit::Identity::anonymous(account);
        if let Some(e) = audit_event(state, &parts, &route, method, &registry, anonymous) {
            state.audit.begin(scope, e);
        }
    }
    match (route, method.as_str()) {
        (Route::Base, "GET" | "HEAD") => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()),
        (Route::Catalog, "GET") => {
            let ip = crate::http::client_ip(&parts);
            let (caller, registry_ref) = (&caller_seen, &registry);
            let visible = |row: &crate::registry::RepositoryRow| {
                if caller.is_some() {
                    state
                        .access
                        .prime_policy(&row.registry_id, &row.name, row.policy.as_deref());
                }
                let name = row.name.clone();
                async move {
                    match caller {
                        None => Ok(true),
                        Some(c) => Ok(state
                            .access
                            .authorize(c, "ecr:DescribeRepositories", registry_ref, Some(&name), ip)
                            .await?),
                    }
                }
            };
            listing::catalog(reg, &registry, &parts, visible).await
        }
        (Route::Tags(n), "GET") => listing::tags(reg, &repo(&n)?, &parts).await,
        (Route::Referrers(n, d), "GET") => listing::referrers(reg, &repo(&n)?, &d, &parts).await,
        (Route::Manifest(n, r), "GET" | "HEAD") => {
            let caller = caller_seen.as_deref();
            let head = method == Method::HEAD;
            // What the cache stores on a miss is its own doing: the pull's
            // event is the pull's, written when it ends.
            crate::audit::outside(pull_through::manifest(
                state,
                &parts,
                caller,
                &repo(&n)?,
                &r,
                head,
            ))
            .await
        }
        (Route::Manifest(n, r), "PUT") => manifests::put(state, &repo(&n)?, &r, &parts, body).await,
        (Route::Manifest(n, r), "DELETE") => manifests::delete(reg, &repo(&n)?, &r).await,
        (Route::Blob(n, d), "GET" | "HEAD") => {
            let caller = caller_seen.as_deref();
            let head = method == Method::HEAD;
            crate::audit::outside(pull_through::blob(
                state,
                &parts,
                caller,
                &repo(&n)?,
                &d,
                head,
            ))
            .await
        }
        (Route::Blob(n, d), "DELETE") => blobs::delete(reg, &repo(&n)?, &d).await,
        (Route::StartUpload(n), "POST") => {
            // Upload quotas count per access key, or per client address (an
            // IPv6 client's /64) when nobody authenticates.
            let owner = match &caller_seen {
                Some(c) => c.access_key_id.clone(),
                None => format!(
                    "ip:{}",
                    crate::http::client_ip(&parts)
                        .map(|ip| crate::http::client_addr::limit_key(ip).to_string())
                        .unwrap_or_default()
                ),
            };
            blobs::start_upload(reg, &repo(&n)?, &parts, body, allow_mount, &owner).await
        }
        (Route::Upload(n, id), "GET") => blobs::upload_status(reg, &repo(&n)?, &id).await,
        (Route::Upload(n, id), "PATCH") => {
            blobs::patch_upload(reg, &repo(&n)?, &id, &parts.headers, body).await
        }
        (Route::Upload(n, id), "PUT") => {
            blobs::put_upload(reg, &repo(&n)?, &id, &parts, body).await
        }
        (Route::Upload(n, id), "DELETE") => blobs::cancel_upload(reg, &repo(&n)?, &id).await,
        (_, m) => Err(OciError::unsupported(format!(
            "method {m} is not allowed here"
        ))),
    }
}

/// Whether the request carries a body (a non-zero length, or chunked encoding).
fn has_body(h: &HeaderMap) -> bool {
    match h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()) {
        Some(len) => len.trim() != "0",
        None => h.contains_key(header::TRANSFER_ENCODING),
    }
}

fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_from_the_right() {
        assert_eq!(Route::parse(""), Some(Route::Base));
        assert_eq!(Route::parse("_catalog"), Some(Route::Catalog));
        assert_eq!(
            Route::parse("a/blobs/uploads/b/manifests/latest"),
            Some(Route::Manifest("a/blobs/uploads/b".into(), "latest".into()))
        );
        assert_eq!(
            Route::parse("team/app/blobs/uploads/"),
            Some(Route::StartUpload("team/app".into()))
        );
        assert_eq!(
            Route::parse("team/app/blobs/uploads"),
            Some(Route::StartUpload("team/app".into()))
        );
        assert_eq!(
            Route::parse("x/blobs/uploads/abc"),
            Some(Route::Upload("x".into(), "abc".into()))
        );
        assert_eq!(Route::parse("x/tags/list"), Some(Route::Tags("x".into())));
        assert_eq!(
            Route::parse("x/referrers/sha256:1"),
            Some(Route::Referrers("x".into(), "sha256:1".into()))
        );
        assert_eq!(Route::parse("x/unknown/thing"), None);
        assert_eq!(percent_decode("a%2Fb+c%"), "a/b c%");
    }
}
