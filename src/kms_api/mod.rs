//! The KMS face: AWS JSON 1.1 over `POST /` with
//! `X-Amz-Target: TrentService.<Operation>`, signed with SigV4 for service
//! `kms`, on the same endpoint as the ECR API (`server` routes by the target's
//! prefix). This module owns the wire format (members, base64 blobs, paging
//! with `Limit`/`Marker`/`NextMarker`/`Truncated`, KMS's exception names);
//! the rules are `kms::KeyRing`'s, authorization `auth::Access::authorize_kms`
//! (identity policies and the key policy, actions `kms:<Operation>`).

mod ops;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::app::{AppState, IntakeError};
use crate::auth::Caller;
use crate::kms::KmsError;

pub const TARGET_PREFIX: &str = "TrentService.";

/// Largest request body: a 4096-byte plaintext or a 6144-byte ciphertext in
/// base64, or a 32 KiB key policy JSON-escaped, with room to spare.
const BODY_CAP: usize = 256 << 10;

/// A KMS exception on the wire.
#[derive(Debug)]
pub struct KmsApiError {
    pub name: &'static str,
    pub status: u16,
    pub message: String,
}

impl KmsApiError {
    pub fn new(name: &'static str, status: u16, message: impl Into<String>) -> KmsApiError {
        KmsApiError {
            name,
            status,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> KmsApiError {
        KmsApiError::new("ValidationException", 400, message)
    }
}

impl From<KmsError> for KmsApiError {
    fn from(e: KmsError) -> KmsApiError {
        let message = e.to_string();
        let name = match &e {
            KmsError::NotFound(_) | KmsError::Deleted(_) => "NotFoundException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::PendingDeletion(_) | KmsError::InvalidState(_) => "KMSInvalidStateException",
            KmsError::InvalidCiphertext => "InvalidCiphertextException",
            KmsError::IncorrectKey(_) => "IncorrectKeyException",
            KmsError::InvalidKeyUsage(_) => "InvalidKeyUsageException",
            KmsError::AlreadyExists(_) => "AlreadyExistsException",
            KmsError::InvalidAliasName(_) => "InvalidAliasNameException",
            KmsError::Validation(_) => "ValidationException",
            KmsError::MalformedPolicy(_) => "MalformedPolicyDocumentException",
            KmsError::Tag(_) => "TagException",
            KmsError::LimitExceeded(_) => "LimitExceededException",
            KmsError::InvalidGrantId(_) => "InvalidGrantIdException",
            KmsError::InvalidGrantToken(_) => "InvalidGrantTokenException",
            KmsError::Unavailable(_) => {
                tracing::error!(error = %e, "the key custody is unavailable");
                return KmsApiError::new("DependencyTimeoutException", 503, message);
            }
            KmsError::Meta(m) => {
                tracing::error!(error = %m, "metadata error in the KMS API");
                let status = if e.is_outage() { 503 } else { 500 };
                return KmsApiError::new(
                    "KMSInternalException",
                    status,
                    "An internal error occurred.",
                );
            }
        };
        KmsApiError::new(name, 400, message)
    }
}

impl IntoResponse for KmsApiError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.name, "message": self.message });
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        crate::http::aws_json(status, body.to_string(), Some(self.name), None)
    }
}

/// What an operation handler gets.
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub caller: &'a Caller,
    pub source_ip: Option<std::net::IpAddr>,
}

impl Ctx<'_> {
    pub fn account(&self) -> &str {
        &self.caller.principal.account
    }

    /// Refuse unless the caller may perform `kms:<op>` on the key (or, with
    /// `None`, on `*`).
    pub fn authorize(
        &self,
        op: &str,
        key: Option<&crate::kms::KeyView>,
    ) -> Result<(), KmsApiError> {
        let action = format!("kms:{op}");
        let allowed = self.state.access.authorize_kms(
            self.caller,
            &action,
            key.map(|k| (k.arn.as_str(), k.account_id.as_str(), k.policy.as_str())),
            self.source_ip,
        );
        if allowed {
            return Ok(());
        }
        let resource = key.map_or("*", |k| k.arn.as_str());
        let because = if key.is_some() {
            "because no identity-based policy allows the action, or the key policy does not allow it"
        } else {
            "because no identity-based policy allows the action"
        };
        Err(KmsApiError::new(
            "AccessDeniedException",
            400,
            format!(
                "User: {} is not authorized to perform: {action} on resource: {resource} {because}",
                self.caller.principal.arn
            ),
        ))
    }
}

/// Entry point for `POST /` with a `TrentService.*` target.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let request_id = crate::http::RequestId::of_api_request(&req);
    let label = crate::http::target_operation(req.headers(), TARGET_PREFIX)
        .and_then(|op| ops::OPERATIONS.iter().find(|(name, _)| *name == op))
        .map_or("kms_api", |(_, label)| *label);
    let scope = crate::audit::Scope::new();
    let result = scope.run(handle(&state, req, &scope)).await;
    let outcome = crate::audit_trail::Outcome::of_json(&result, |e| (e.name, &e.message), true);
    state.audit.finish(&scope, outcome).await;
    let resp = match result {
        Ok(v) => crate::http::aws_json(StatusCode::OK, v.to_string(), None, None),
        Err(e) => e.into_response(),
    };
    crate::http::finish_api_response(resp, &request_id, label)
}

/// A request not taken in ([`AppState::take_signed`]), in KMS's words.
fn intake_error(state: &AppState, e: IntakeError) -> KmsApiError {
    match e.json_refusal(BODY_CAP) {
        Ok(r) => {
            if let Some(limit) = r.limit {
                state.metrics.limited(limit);
            }
            KmsApiError::new(r.name, r.status, r.message)
        }
        Err(m) => KmsApiError::from(KmsError::Meta(m)),
    }
}

async fn handle(
    state: &AppState,
    req: Request,
    scope: &crate::audit::Scope,
) -> Result<Value, KmsApiError> {
    let (parts, body) = req.into_parts();
    let op = crate::http::target_operation(&parts.headers, TARGET_PREFIX)
        .map(str::to_string)
        .unwrap_or_default();
    let mut signed = state
        .take_signed(&parts, axum::body::Body::new(body), "kms", BODY_CAP)
        .await
        .map_err(|e| intake_error(state, e))?;
    let (caller, body) = (signed.caller.clone(), std::mem::take(&mut signed.body));
    let signed_meta = signed;
    let input: Map<String, Value> = if body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(&body) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(KmsApiError::new(
                    "SerializationException",
                    400,
                    "the request body must be a JSON object",
                ));
            }
        }
    };
    drop(body);
    let params = Value::Object(input.clone());
    state.audit_call(
        scope,
        &parts,
        crate::audit::KMS,
        &op,
        &signed_meta,
        Some(&params),
    );
    let ctx = Ctx {
        state,
        caller: &caller,
        source_ip: crate::http::client_ip(&parts),
    };
    ops::run(&ctx, &op, &ops::Input(input)).await
}
