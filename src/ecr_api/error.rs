//! ECR API errors: `{"__type": "<ExceptionName>", "message": "…"}` with the
//! `x-amzn-ErrorType` header, as botocore and the AWS SDKs parse them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::registry::RegistryError;

#[derive(Debug)]
pub struct EcrError {
    pub name: &'static str,
    pub status: u16,
    pub message: String,
    /// Extra members of modeled exceptions (e.g. `lastValidByteReceived`).
    pub extra: Map<String, Value>,
    /// The limit that refused the request, for `berth_requests_limited_total`.
    pub limit: Option<&'static str>,
}

/// `message` as a client may see it: a registry of a region other than the
/// home one is keyed `<account>@<region>` in the stores, and ECR's messages
/// name the account alone (`registry with id '<account>'`).
fn without_registry_keys(message: String) -> String {
    if !message.contains('@') {
        return message;
    }
    let b = message.as_bytes();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < b.len() {
        let twelve_digits = i >= 12 && b[i - 12..i].iter().all(u8::is_ascii_digit);
        if b[i] == b'@' && twelve_digits && (i == 12 || !b[i - 13].is_ascii_digit()) {
            let end = b[i + 1..]
                .iter()
                .position(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-'))
                .map_or(b.len(), |p| i + 1 + p);
            if end > i + 1 {
                i = end;
                continue;
            }
        }
        let ch = message[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

impl EcrError {
    pub fn new(name: &'static str, status: u16, message: impl Into<String>) -> EcrError {
        EcrError {
            name,
            status,
            message: without_registry_keys(message.into()),
            extra: Map::new(),
            limit: None,
        }
    }

    /// Mark the error as a refusal by `limit` (docs/security.md).
    pub fn limited(mut self, limit: &'static str) -> EcrError {
        self.limit = Some(limit);
        self
    }

    pub fn invalid(message: impl Into<String>) -> EcrError {
        EcrError::new("InvalidParameterException", 400, message)
    }

    /// `Invalid parameter at '<member>' failed to satisfy constraint: '<detail>'`.
    pub fn constraint(member: &str, detail: impl std::fmt::Display) -> EcrError {
        EcrError::invalid(format!(
            "Invalid parameter at '{member}' failed to satisfy constraint: '{detail}'"
        ))
    }

    pub fn serialization(message: impl Into<String>) -> EcrError {
        EcrError::new("SerializationException", 400, message)
    }

    pub fn access_denied(message: impl Into<String>) -> EcrError {
        EcrError::new("AccessDeniedException", 400, message)
    }

    pub fn repository_not_found(name: &str, registry: &str) -> EcrError {
        let registry = crate::reference::key_account(registry);
        EcrError::new(
            "RepositoryNotFoundException",
            400,
            format!(
                "The repository with name '{name}' does not exist in the registry with id '{registry}'"
            ),
        )
    }

    pub fn server(e: impl std::fmt::Display) -> EcrError {
        tracing::error!(error = %e, "internal error in the ECR API");
        EcrError::new("ServerException", 500, "An internal error occurred.")
    }

    /// A metadata store error: a full database is the same `507` the
    /// registry paths (and `/v2/`) answer, an unreachable one `503`,
    /// anything else a `ServerException`.
    pub fn meta(e: crate::registry::MetaError) -> EcrError {
        match e {
            crate::registry::MetaError::Unavailable(_) => EcrError::new(
                "ServiceUnavailableException",
                503,
                "The registry's metadata database is temporarily unavailable; nothing was changed. Retry shortly.",
            ),
            crate::registry::MetaError::Full => EcrError::new(
                "ServerException",
                507,
                "The registry's metadata database is out of space; nothing was stored. Retry once space is freed.",
            ),
            other => EcrError::server(other),
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> EcrError {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// Map a registry error in the context of repository `name` of `registry`.
    pub fn from_registry(e: RegistryError, name: &str, registry: &str) -> EcrError {
        use RegistryError as E;
        match e {
            E::NameUnknown { .. } => EcrError::repository_not_found(name, registry),
            E::TagImmutable { .. } => {
                EcrError::new("ImageTagAlreadyExistsException", 400, e.to_string())
            }
            E::ManifestInvalid(m) => EcrError::invalid(format!(
                "Invalid parameter at 'imageManifest' failed to satisfy constraint: '{m}'"
            )),
            E::DigestInvalid(m) => EcrError::new("ImageDigestDoesNotMatchException", 400, m),
            E::ManifestBlobUnknown(d) => EcrError::new(
                "LayersNotFoundException",
                400,
                format!(
                    "Layers with digests '[{d}]' required for pushing image into repository with name '{name}' in registry with id '{registry}' do not exist"
                ),
            ),
            E::UploadUnknown => {
                EcrError::new("UploadNotFoundException", 400, "The upload does not exist.")
            }
            E::StorageFull => EcrError::new(
                "ServerException",
                507,
                "The registry's storage is full; nothing was stored. Retry once space is freed.",
            ),
            E::UploadQuota(m) => {
                EcrError::new("LimitExceededException", 400, m).limited("upload_quota")
            }
            E::Unavailable(m) => EcrError::new("ServiceUnavailableException", 503, m),
            E::Meta(m) => EcrError::meta(m),
            E::Storage(_) | E::Integrity(_) => EcrError::server(e),
            // ECR's exception for a key that KMS refuses to use.
            E::Kms(k) => EcrError::new("KmsException", 400, k.to_string()),
            other => EcrError::invalid(other.to_string()),
        }
    }
}

impl IntoResponse for EcrError {
    fn into_response(self) -> Response {
        let mut body = json!({ "__type": self.name, "message": self.message });
        for (k, v) in self.extra {
            body[k] = v;
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        crate::http::aws_json(status, body.to_string(), Some(self.name), None)
    }
}

#[cfg(test)]
mod key_tests {
    use super::without_registry_keys as strip;

    #[test]
    fn registry_keys_never_reach_a_message() {
        assert_eq!(
            strip("in the registry with id '123456789012@eu-west-1'".into()),
            "in the registry with id '123456789012'"
        );
        assert_eq!(strip("user@example.com".into()), "user@example.com");
        assert_eq!(strip("a 1234567890123@x".into()), "a 1234567890123@x");
        assert_eq!(strip("123456789012@".into()), "123456789012@");
        assert_eq!(
            strip("ünï 123456789012@us-east-1 ok".into()),
            "ünï 123456789012 ok"
        );
    }
}
