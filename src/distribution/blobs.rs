//! Blob and upload endpoints:
//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`,
//! `POST /v2/<name>/blobs/uploads/` (start, monolithic `?digest=`, mount `?mount=&from=`),
//! `PATCH|PUT|GET|DELETE /v2/<name>/blobs/uploads/<id>`.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;

use super::errors::{OciError, upload_range};
use super::{
    DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, digest, empty, has_body, query_get, query_pairs, set,
};
use crate::reference::RepoName;
use crate::registry::ByteRange;
use crate::registry::RepoId;
use crate::registry::uploads::ChunkRange;
use crate::registry::{Registry, RegistryError};

/// Resolve a `Range: bytes=…` header against a blob of `size` bytes.
/// Syntax we do not understand (or several ranges) means "the whole blob", as HTTP allows.
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<ByteRange>, RegistryError> {
    match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) => byte_range(v, size),
        None => Ok(None),
    }
}

/// A `Range` header value against a blob of `size` bytes: `None` for the
/// whole blob (no `bytes=` unit, several ranges, or syntax we do not read),
/// an error for a range that starts past the end.
pub fn byte_range(value: &str, size: u64) -> Result<Option<ByteRange>, RegistryError> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let unsat = RegistryError::RangeNotSatisfiable { size };
    let range = if a.is_empty() {
        // Suffix range: the last `b` bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(unsat);
        }
        ByteRange {
            first: size.saturating_sub(n),
            last: size - 1,
        }
    } else {
        let Ok(first) = a.parse::<u64>() else {
            return Ok(None);
        };
        let last = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(l) if l >= first => l.min(size.saturating_sub(1)),
                _ => return Ok(None),
            }
        };
        if first >= size {
            return Err(unsat);
        }
        ByteRange { first, last }
    };
    Ok(Some(range))
}

pub(super) async fn get(
    reg: &Registry,
    repo: &RepoId,
    d: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, OciError> {
    let d = digest(d)?;
    if head {
        let size = reg.check_blob(repo, &d).await?;
        let mut r = empty(StatusCode::OK);
        let h = r.headers_mut();
        set(h, header::CONTENT_LENGTH, size.to_string());
        set(h, DOCKER_CONTENT_DIGEST, d.as_str());
        set(h, header::CONTENT_TYPE, "application/octet-stream");
        set(h, header::ACCEPT_RANGES, "bytes");
        return Ok(r);
    }
    if let Some(url) = reg.blob_download_url(repo, &d).await? {
        // The storage serves the bytes (a `Range` the client sends is
        // honoured there); the URL is good for this blob only.
        let mut r = empty(StatusCode::TEMPORARY_REDIRECT);
        set(r.headers_mut(), header::LOCATION, url);
        set(r.headers_mut(), DOCKER_CONTENT_DIGEST, d.as_str());
        return Ok(r);
    }
    let blob = reg
        .open_blob(repo, &d, |size| parse_range(headers, size))
        .await?;
    let counter = reg.metrics.bytes_out.clone();
    let stream = blob.stream.inspect(move |chunk| {
        if let Ok(c) = chunk {
            counter.inc_by(c.len() as u64);
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    set(h, DOCKER_CONTENT_DIGEST, d.as_str());
    set(h, header::CONTENT_TYPE, "application/octet-stream");
    set(h, header::ACCEPT_RANGES, "bytes");
    match blob.range {
        Some(range) => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = r.headers_mut();
            set(h, header::CONTENT_LENGTH, range.len().to_string());
            set(
                h,
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", range.first, range.last, blob.size),
            );
        }
        None => set(
            r.headers_mut(),
            header::CONTENT_LENGTH,
            blob.size.to_string(),
        ),
    }
    Ok(r)
}

pub(super) async fn delete(reg: &Registry, repo: &RepoId, d: &str) -> Result<Response, OciError> {
    let d = digest(d)?;
    reg.delete_blob(repo, &d).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

fn created(repo: &RepoId, d: &crate::digest::Digest) -> Response {
    let mut r = empty(StatusCode::CREATED);
    let h = r.headers_mut();
    set(h, header::LOCATION, format!("/v2/{repo}/blobs/{d}"));
    set(h, DOCKER_CONTENT_DIGEST, d.as_str());
    r
}

fn in_progress(status: StatusCode, repo: &RepoId, id: &str, size: u64) -> Response {
    let mut r = empty(status);
    let h = r.headers_mut();
    set(
        h,
        header::LOCATION,
        format!("/v2/{repo}/blobs/uploads/{id}"),
    );
    set(h, header::RANGE, upload_range(size));
    set(h, DOCKER_UPLOAD_UUID, id);
    r
}

/// `POST /v2/<name>/blobs/uploads/`: mount, monolithic upload, or a new session.
pub(super) async fn start_upload(
    reg: &Registry,
    repo: &RepoId,
    req: &Parts,
    body: Body,
    allow_mount: bool,
    owner: &str,
) -> Result<Response, OciError> {
    let q = query_pairs(req);
    if let Some(m) = query_get(&q, "mount") {
        let d = digest(m)?;
        // A mount from a repository that does not hold the blob (or with no
        // `from`) falls back to an ordinary upload session, as the spec says.
        if let Some(from) = query_get(&q, "from")
            .filter(|_| allow_mount)
            .and_then(RepoName::parse)
            .map(|n| RepoId::new(&repo.registry, n))
            && reg.mount_blob(repo, &from, &d).await?
        {
            return Ok(created(repo, &d));
        }
    }
    let monolithic = match query_get(&q, "digest") {
        Some(d) => Some(digest(d)?),
        None => None,
    };
    // A monolithic upload's event is recorded with the blob's commit, not
    // with the session it opens on the way.
    let start = reg.start_upload(repo, owner);
    let started = match monolithic {
        Some(_) => crate::audit::outside(start).await,
        None => start.await,
    };
    let session = match started {
        Ok(s) => s,
        Err(e) => return Err(drain_then(body, e.into()).await),
    };
    match monolithic {
        Some(d) => {
            let body = body.into_data_stream();
            let appended = crate::audit::outside(reg.append_upload(session.clone(), None, body));
            if let Err(e) = appended.await {
                let _ = reg.cancel_upload(repo, &session.id).await;
                return Err(e.into());
            }
            reg.finish_upload(repo, &session.id, &d).await?;
            Ok(created(repo, &d))
        }
        None => Ok(in_progress(StatusCode::ACCEPTED, repo, &session.id, 0)),
    }
}

/// Parse `Content-Range: <first>-<last>` (also tolerating a `bytes ` prefix and `/total`).
fn content_range(headers: &HeaderMap) -> Result<Option<ChunkRange>, OciError> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        OciError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            "Content-Range must be <first>-<last>",
        )
    };
    let s = v.to_str().map_err(|_| bad())?;
    chunk_range(s).map(Some).ok_or_else(bad)
}

/// A chunk's `Content-Range` value: `<first>-<last>`, tolerating a `bytes `
/// prefix and a `/total` suffix.
pub fn chunk_range(value: &str) -> Option<ChunkRange> {
    let s = value.trim();
    let s = s.strip_prefix("bytes").map(str::trim_start).unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-')?;
    let first = a.trim().parse::<u64>().ok()?;
    let last = b.trim().parse::<u64>().ok()?;
    Some(ChunkRange { first, last })
}

pub(super) async fn patch_upload(
    reg: &Registry,
    repo: &RepoId,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, OciError> {
    let range = match content_range(headers) {
        Ok(r) => r,
        Err(e) => return Err(drain_then(body, e).await),
    };
    // Refuse an unknown session or an out-of-order chunk before streaming it,
    // reading the rejected body so the client sees the answer (not a reset).
    let session = match reg.check_chunk(repo, id, range).await {
        Ok(s) => s,
        Err(e) => {
            let mut err = OciError::from(e);
            if err.status == StatusCode::RANGE_NOT_SATISFIABLE {
                err = err.with_header(header::LOCATION, format!("/v2/{repo}/blobs/uploads/{id}"));
            }
            return Err(drain_then(body, err).await);
        }
    };
    let body = body.into_data_stream();
    let session = reg.append_upload(session, range, body).await.map_err(|e| {
        let mut err = OciError::from(e);
        if err.status == StatusCode::RANGE_NOT_SATISFIABLE {
            err = err.with_header(header::LOCATION, format!("/v2/{repo}/blobs/uploads/{id}"));
        }
        err
    })?;
    Ok(in_progress(StatusCode::ACCEPTED, repo, id, session.size))
}

/// Most of a rejected request body that is read (and discarded) before the
/// error is sent; past it the connection is closed instead.
const DRAIN_LIMIT: usize = 64 << 20;

/// Read and discard `body` (up to [`DRAIN_LIMIT`]), then hand back `err`. A
/// server that answers before reading the body and closes the connection makes
/// the client's TCP stack drop the answer; draining keeps it readable.
async fn drain_then(body: Body, err: OciError) -> OciError {
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            break;
        }
    }
    err
}

/// `PUT …/uploads/<id>?digest=`: append the final chunk, if any, and commit.
pub(super) async fn put_upload(
    reg: &Registry,
    repo: &RepoId,
    id: &str,
    req: &Parts,
    body: Body,
) -> Result<Response, OciError> {
    let q = query_pairs(req);
    let d = match query_get(&q, "digest") {
        Some(d) => digest(d)?,
        None => {
            // Check the session first so an unknown upload is reported as such.
            reg.upload_status(repo, id).await?;
            return Err(OciError::digest_invalid(
                "the digest query parameter is required",
            ));
        }
    };
    if has_body(&req.headers) {
        let range = content_range(&req.headers)?;
        let session = reg.check_chunk(repo, id, range).await?;
        let body = body.into_data_stream();
        // Recorded with the commit (CompleteLayerUpload), not with this chunk.
        crate::audit::outside(reg.append_upload(session, range, body)).await?;
    }
    reg.finish_upload(repo, id, &d).await?;
    Ok(created(repo, &d))
}

pub(super) async fn upload_status(
    reg: &Registry,
    repo: &RepoId,
    id: &str,
) -> Result<Response, OciError> {
    let s = reg.upload_status(repo, id).await?;
    Ok(in_progress(StatusCode::NO_CONTENT, repo, id, s.size))
}

pub(super) async fn cancel_upload(
    reg: &Registry,
    repo: &RepoId,
    id: &str,
) -> Result<Response, OciError> {
    reg.cancel_upload(repo, id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, size: u64) -> Result<Option<ByteRange>, RegistryError> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v.parse().unwrap());
        parse_range(&h, size)
    }

    #[test]
    fn ranges() {
        assert_eq!(
            range("bytes=0-9", 100).unwrap(),
            Some(ByteRange { first: 0, last: 9 })
        );
        assert_eq!(
            range("bytes=90-", 100).unwrap(),
            Some(ByteRange {
                first: 90,
                last: 99
            })
        );
        assert_eq!(
            range("bytes=-10", 100).unwrap(),
            Some(ByteRange {
                first: 90,
                last: 99
            })
        );
        assert_eq!(
            range("bytes=50-500", 100).unwrap(),
            Some(ByteRange {
                first: 50,
                last: 99
            })
        );
        assert!(range("bytes=100-", 100).is_err());
        assert_eq!(range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(range("items=0-1", 100).unwrap(), None);
    }
}
