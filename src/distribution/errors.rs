//! OCI error responses: the spec's JSON error body with its codes, and the
//! mapping from registry errors to status codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::registry::RegistryError;

/// An OCI Distribution error, ready to be sent.
#[derive(Debug)]
pub struct OciError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Extra headers (e.g. `Range` on a 416 for an out-of-order chunk).
    pub headers: Vec<(header::HeaderName, String)>,
}

impl OciError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> OciError {
        OciError {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn name_invalid(name: &str) -> OciError {
        let mut e = OciError::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name",
        );
        e.detail = Some(json!({ "name": name }));
        e
    }

    pub fn digest_invalid(message: impl Into<String>) -> OciError {
        OciError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
    }

    pub fn unsupported(message: impl Into<String>) -> OciError {
        OciError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
    }

    pub fn with_header(mut self, name: header::HeaderName, value: String) -> OciError {
        self.headers.push((name, value));
        self
    }
}

impl From<RegistryError> for OciError {
    fn from(e: RegistryError) -> OciError {
        use RegistryError as E;
        let msg = e.to_string();
        match e {
            E::NameUnknown { .. } => OciError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", msg),
            E::BlobUnknown => OciError::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", msg),
            E::UploadUnknown => OciError::new(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", msg),
            E::UploadInvalid(_) | E::BodyInterrupted(_) => {
                OciError::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", msg)
            }
            E::DigestInvalid(_) => OciError::digest_invalid(msg),
            E::ManifestUnknown(_) => OciError::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", msg),
            E::ManifestInvalid(_) => {
                OciError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", msg)
            }
            E::ManifestBlobUnknown(d) | E::ManifestChildUnknown(d) => {
                let mut err = OciError::new(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN", msg);
                err.detail = Some(json!({ "digest": d.as_str() }));
                err
            }
            E::ManifestReferenced => OciError::new(StatusCode::CONFLICT, "DENIED", msg),
            E::BlobReferenced(_) => {
                OciError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", msg)
            }
            E::TagInvalid(_) | E::TagImmutable { .. } => {
                OciError::new(StatusCode::BAD_REQUEST, "TAG_INVALID", msg)
            }
            E::ChunkOutOfOrder { size } => OciError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                msg,
            )
            .with_header(header::RANGE, upload_range(size)),
            E::RangeNotSatisfiable { size } => {
                OciError::new(StatusCode::RANGE_NOT_SATISFIABLE, "UNSUPPORTED", msg)
                    .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
            }
            E::StorageFull => OciError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "UNKNOWN",
                "the registry's storage is full; nothing was stored",
            ),
            E::Unavailable(_) => OciError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", msg)
                .with_header(header::RETRY_AFTER, "1".into()),
            E::UploadQuota(_) => {
                OciError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", msg)
                    .with_header(header::RETRY_AFTER, "60".into())
            }
            E::Meta(crate::registry::MetaError::Unavailable(_)) => {
                tracing::warn!(error = %msg, "a backing service is unavailable");
                OciError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "the registry's storage is temporarily unavailable; nothing was changed, retry shortly",
                )
                .with_header(header::RETRY_AFTER, "1".into())
            }
            E::Meta(crate::registry::MetaError::Full) => OciError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "UNKNOWN",
                "the registry's metadata database is out of space; nothing was stored",
            ),
            // The repository's KMS key cannot be used: say which and why.
            E::Kms(_) => OciError::new(StatusCode::FORBIDDEN, "DENIED", msg),
            E::Integrity(_) => OciError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "the stored content failed its integrity check (altered or corrupted storage); it is not served",
            ),
            E::Storage(_) | E::Meta(_) => {
                tracing::error!(error = %msg, "internal error");
                OciError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "internal server error",
                )
            }
        }
    }
}

/// The `Range` header value of an upload that holds `size` bytes.
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let mut err = json!({ "code": self.code, "message": self.message });
        if let Some(d) = self.detail {
            err["detail"] = d;
        }
        let body = json!({ "errors": [err] }).to_string();
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}
