//! HTTP mechanics every face shares, below them: who the client is
//! ([`client_addr`], behind trusted proxies), the memory budget for bodies
//! read whole ([`budget`]), the host a request addressed and its request id.

pub mod budget;
pub mod client_addr;

/// The header a Berth replicating to another sends with each `/v2/` request
/// of a delivery (its value: the source registry).
pub const REPLICATION_HEADER: &str = "x-berth-replication";

use axum::http::{HeaderMap, Uri, header};

pub use client_addr::{ClientAddr, Scheme};

/// An AWS JSON 1.1 response (the ECR and KMS APIs): `body` with its content
/// type, `x-amzn-ErrorType` for an error (`error_type`), and the request's
/// id as `x-amzn-RequestId`.
pub fn aws_json(
    status: axum::http::StatusCode,
    body: String,
    error_type: Option<&'static str>,
    request_id: Option<&str>,
) -> axum::response::Response {
    use axum::http::HeaderValue;
    use axum::response::IntoResponse;
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Some(t) = error_type {
        h.insert("x-amzn-errortype", HeaderValue::from_static(t));
    }
    if let Some(v) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

/// The metrics label of an API call (`ecr:DescribeImages`, `kms:Encrypt`,
/// `sts:GetCallerIdentity`, or the face's own name for an operation it does
/// not know), put on the response by the face for the request counter.
#[derive(Clone, Copy, Debug)]
pub struct OperationLabel(pub &'static str);

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("the request body could not be read: {0}")]
    Broken(String),
}

/// Whether a request's body is `application/x-www-form-urlencoded` (the
/// Query protocol's and HTML forms'), whatever its parameters (`; charset=utf-8`).
pub fn is_form_encoded(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The `Content-Length` a request declares, if any.
pub fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
}

/// Read a request body of at most `cap` bytes within `deadline`, into a
/// buffer sized once from the declared length (`declared`, itself capped).
pub async fn read_body(
    body: axum::body::Body,
    declared: Option<usize>,
    cap: usize,
    deadline: std::time::Duration,
) -> Result<Vec<u8>, BodyError> {
    use http_body_util::BodyExt;
    let read = async {
        let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(cap));
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > cap {
                    return Err(BodyError::TooLarge(cap));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf)
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut(deadline)))
}

/// The host a request was sent to: its `Host` header, or over HTTP/2 (where
/// clients send `:authority` and no `Host`) the authority of its URI.
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

/// The client's address as recorded for a request (set by the server's
/// connection layer); see [`ClientAddr`].
pub fn client_addr(parts: &axum::http::request::Parts) -> Option<ClientAddr> {
    parts.extensions.get::<ClientAddr>().copied()
}

/// The scheme the client used for a request (set by the server's connection
/// layer; see [`Scheme`]): what URLs handed back to it start with.
pub fn scheme(parts: &axum::http::request::Parts) -> Scheme {
    parts
        .extensions
        .get::<Scheme>()
        .copied()
        .unwrap_or_default()
}

/// The client's IP address: the TCP peer, or what a trusted proxy says it is.
pub fn client_ip(parts: &axum::http::request::Parts) -> Option<std::net::IpAddr> {
    client_addr(parts).map(|c| c.ip)
}

/// The id of a request: in every log line of it (a span field) and in the
/// `x-request-id` header of its response. A client's own `x-request-id` is
/// kept when it is a plain token (at most 64 letters, digits, `-`, `_`, `.`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The response header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

impl RequestId {
    /// The client's id if acceptable, else a fresh one.
    pub fn for_request(headers: &HeaderMap) -> RequestId {
        let given = headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 64
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            });
        RequestId(given.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string))
    }

    /// The id of a request being handled (set by the server's middleware).
    pub fn of(parts: &axum::http::request::Parts) -> Option<&str> {
        parts.extensions.get::<RequestId>().map(|r| r.0.as_str())
    }

    /// The id of an API request, as its answer's `x-amzn-RequestId`: the
    /// server's, or a fresh one when it was called without the middleware.
    pub fn of_api_request(req: &axum::extract::Request) -> String {
        req.extensions()
            .get::<RequestId>()
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), |r| r.0.clone())
    }
}

/// The operation an AWS JSON request names: its `X-Amz-Target` after `prefix`.
pub fn target_operation<'a>(headers: &'a HeaderMap, prefix: &str) -> Option<&'a str> {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(prefix))
}

/// An API face's answer as it leaves: `x-amzn-RequestId`, and the metrics
/// label of the operation it ran.
pub fn finish_api_response(
    mut resp: axum::response::Response,
    request_id: &str,
    label: &'static str,
) -> axum::response::Response {
    if let Ok(v) = axum::http::HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp.extensions_mut().insert(OperationLabel(label));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_plain() {
        let mut h = HeaderMap::new();
        assert_eq!(RequestId::for_request(&h).0.len(), 36);
        h.insert(REQUEST_ID_HEADER, "ci-run_42.7".parse().unwrap());
        assert_eq!(RequestId::for_request(&h).0, "ci-run_42.7");
        h.insert(REQUEST_ID_HEADER, "a b".parse().unwrap());
        assert_eq!(RequestId::for_request(&h).0.len(), 36);
        h.insert(REQUEST_ID_HEADER, "x".repeat(65).parse().unwrap());
        assert_eq!(RequestId::for_request(&h).0.len(), 36);
    }
}
