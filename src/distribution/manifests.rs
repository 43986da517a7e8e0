//! Manifest endpoints: `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::errors::OciError;
use super::{DOCKER_CONTENT_DIGEST, OCI_SUBJECT, empty, reference, set};
use crate::app::AppState;
use crate::registry::RepoId;
use crate::registry::{Registry, RegistryError};

/// Whether the client's `Accept` headers admit `media_type`. No `Accept` at
/// all admits everything; so do `*/*` and `application/*`.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut any = false;
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let t = item.split(';').next().unwrap_or("").trim();
            if t.is_empty() {
                continue;
            }
            any = true;
            if t == media_type || t == "*/*" || t == "application/*" {
                return true;
            }
        }
    }
    !any
}

pub(super) async fn get(
    reg: &Registry,
    repo: &RepoId,
    r: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, OciError> {
    // A reference that cannot name anything names nothing: 404, as the spec
    // and CNCF Distribution answer a pull of it (a push of it is TAG_INVALID).
    let r = match reference(r) {
        Ok(r) => r,
        Err(e) if e.code == "TAG_INVALID" => {
            return Err(
                RegistryError::ManifestUnknown(format!("{repo}:{r}: {}", e.message)).into(),
            );
        }
        Err(e) => return Err(e),
    };
    let m = if head {
        reg.get_manifest(repo, &r).await?
    } else {
        reg.pull_manifest(repo, &r).await?
    };
    let len = m.content.len();
    respond(
        repo,
        &r,
        headers,
        head,
        Body::from(m.content),
        len,
        &m.media_type,
        &m.digest,
    )
}

/// The answer to a manifest GET or HEAD: `content` (of `len` bytes) if the
/// `Accept` headers admit its media type.
#[allow(clippy::too_many_arguments)]
pub(super) fn respond(
    repo: &RepoId,
    r: &crate::reference::Reference,
    headers: &HeaderMap,
    head: bool,
    content: Body,
    len: usize,
    media_type: &str,
    digest: &crate::digest::Digest,
) -> Result<Response, OciError> {
    if !accepts(headers, media_type) {
        return Err(RegistryError::ManifestUnknown(format!(
            "{repo}:{r} is a {media_type} manifest, which the Accept header does not allow"
        ))
        .into());
    }
    let mut resp = if head {
        empty(StatusCode::OK)
    } else {
        Response::new(content)
    };
    let h = resp.headers_mut();
    set(h, header::CONTENT_TYPE, media_type);
    set(h, header::CONTENT_LENGTH, len.to_string());
    set(h, DOCKER_CONTENT_DIGEST, digest.as_str());
    set(h, header::ETAG, format!("\"{digest}\""));
    Ok(resp)
}

/// `PUT …/manifests/<reference>`: the body is read whole (at most
/// `max_manifest_bytes`, within `api_body_timeout`, in the body memory budget).
pub(super) async fn put(
    state: &AppState,
    repo: &RepoId,
    r: &str,
    parts: &Parts,
    body: Body,
) -> Result<Response, OciError> {
    let reg = &state.registry;
    let headers = &parts.headers;
    let r = reference(r)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let limit = reg.limits.max_manifest_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        state.metrics.limited("body_size");
        return Err(RegistryError::ManifestInvalid(format!(
            "the manifest is {n} bytes; the limit is {limit}"
        ))
        .into());
    }
    let ip = crate::http::client_ip(parts)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let _reservation = state
        .body_budget
        .reserve(ip, declared.unwrap_or(limit))
        .await
        .map_err(|e| {
            state.metrics.limited("body_memory");
            OciError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                e.to_string(),
            )
            .with_header(header::RETRY_AFTER, "1".into())
        })?;
    let read = axum::body::to_bytes(body, limit);
    let bytes = match tokio::time::timeout(state.http.api_body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Err(RegistryError::ManifestInvalid(format!(
                "could not read the manifest (the limit is {limit} bytes): {e}"
            ))
            .into());
        }
        Err(_) => {
            state.metrics.limited("api_body_timeout");
            return Err(OciError::new(
                StatusCode::REQUEST_TIMEOUT,
                "MANIFEST_INVALID",
                format!(
                    "the manifest did not arrive within {:?}",
                    state.http.api_body_timeout
                ),
            ));
        }
    };
    let pushed = if super::is_replication(headers) {
        reg.put_replicated_manifest(repo, &r, content_type.as_deref(), &bytes)
            .await?
    } else {
        reg.put_manifest(repo, &r, content_type.as_deref(), &bytes)
            .await?
    };
    let mut resp = empty(StatusCode::CREATED);
    let h = resp.headers_mut();
    set(
        h,
        header::LOCATION,
        format!("/v2/{repo}/manifests/{}", pushed.digest),
    );
    set(h, DOCKER_CONTENT_DIGEST, pushed.digest.as_str());
    if let Some(s) = &pushed.subject {
        set(h, OCI_SUBJECT, s.as_str());
    }
    Ok(resp)
}

pub(super) async fn delete(reg: &Registry, repo: &RepoId, r: &str) -> Result<Response, OciError> {
    let r = reference(r)?;
    reg.delete_manifest(repo, &r).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        let mut h = HeaderMap::new();
        assert!(accepts(&h, oci));
        h.append(
            header::ACCEPT,
            "application/vnd.docker.distribution.manifest.v2+json"
                .parse()
                .unwrap(),
        );
        assert!(!accepts(&h, oci));
        h.append(
            header::ACCEPT,
            format!("{oci};q=0.9, text/plain").parse().unwrap(),
        );
        assert!(accepts(&h, oci));
        let mut star = HeaderMap::new();
        star.append(header::ACCEPT, "text/plain, */*".parse().unwrap());
        assert!(accepts(&star, oci));
    }
}
