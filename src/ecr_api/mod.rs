//! The Amazon ECR API face: AWS JSON 1.1 over `POST /`, the operation named by
//! `X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.<Operation>`, signed with
//! SigV4. This module owns the wire format (request parsing and validation,
//! response shapes, error bodies); the registry rules are in `registry` and
//! `metadata`, authorization in `auth`.
//!
//! Where each operation is handled:
//! - repositories, resource tags, mutability, policies, DescribeRegistry: [`repositories`]
//! - images (ListImages, DescribeImages, BatchGetImage, BatchDeleteImage, PutImage): [`images`]
//! - layers (BatchCheckLayerAvailability, Initiate/UploadLayerPart/Complete, GetDownloadUrlForLayer): [`layers`]
//! - GetAuthorizationToken: here.

mod error;
mod images;
mod input;
mod layers;
mod lifecycle;
mod repositories;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

pub use error::EcrError;
use input::Input;

use crate::auth::{AuthError, Caller};
use crate::registry::RepoId;
use crate::server::AppState;

const TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921.";
/// Largest request body: an UploadLayerPart of 20 MiB, base64-encoded, plus JSON.
const MAX_BODY: usize = 30 << 20;

/// Everything an operation handler needs.
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub caller: &'a Caller,
    pub headers: &'a axum::http::HeaderMap,
    /// The client's address, for `aws:SourceIp`.
    pub source_ip: Option<std::net::IpAddr>,
}

impl Ctx<'_> {
    /// The registry an operation addresses: `registryId` if given, else the caller's account.
    pub fn registry_id(&self, input: &Input) -> Result<String, EcrError> {
        match input.opt_str("registryId")? {
            Some(id) => {
                input::check_pattern("registryId", id, input::is_account_id, "[0-9]{12}")?;
                Ok(id.to_string())
            }
            None => Ok(self.caller.principal.account.clone()),
        }
    }

    /// The repository an operation names (`repositoryName`, `registryId`),
    /// once the caller is authorized for `ecr:<op>` on it and it exists.
    pub async fn existing_repo(&self, input: &Input, op: &str) -> Result<RepoId, EcrError> {
        let name = input::repository_name(input)?;
        let registry = self.registry_id(input)?;
        self.authorize(op, &registry, Some(name.as_str())).await?;
        let repo = RepoId::new(&registry, name);
        let exists = self
            .state
            .registry
            .meta
            .repository_exists(repo.key())
            .await
            .map_err(EcrError::server)?;
        if !exists {
            return Err(EcrError::repository_not_found(
                repo.name.as_str(),
                &registry,
            ));
        }
        Ok(repo)
    }

    /// Refuse unless the caller may perform `ecr:<op>` on `repo` (or the registry).
    pub async fn authorize(
        &self,
        op: &str,
        registry: &str,
        repo: Option<&str>,
    ) -> Result<(), EcrError> {
        let action = format!("ecr:{op}");
        let allowed = self
            .state
            .access
            .authorize(self.caller, &action, registry, repo, self.source_ip)
            .await
            .map_err(EcrError::server)?;
        if allowed {
            return Ok(());
        }
        let resource = match repo {
            Some(r) => crate::auth::repository_arn(&self.state.region, registry, r),
            None => format!("arn:aws:ecr:{}:{}:*", self.state.region, registry),
        };
        Err(EcrError::access_denied(format!(
            "User: {} is not authorized to perform: {action} on resource: {resource}",
            self.caller.principal.arn
        )))
    }
}

/// Epoch milliseconds as the epoch-seconds number ECR puts on the wire.
pub fn timestamp(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

/// Entry point for `POST /`.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut resp = match handle(&state, req).await {
        Ok(v) => {
            let mut r = (StatusCode::OK, v.to_string()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            r
        }
        Err(e) => e.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

async fn handle(state: &AppState, req: Request) -> Result<Value, EcrError> {
    let (parts, body) = req.into_parts();
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .map(str::to_string);
    let body = axum::body::to_bytes(Body::new(body), MAX_BODY)
        .await
        .map_err(|_| {
            EcrError::serialization("the request body is too large or could not be read")
        })?;
    let caller = state
        .access
        .authenticate_sigv4(parts.method.as_str(), &parts.uri, &parts.headers, &body)
        .await
        .map_err(|e| match e {
            AuthError::SigV4(s) => {
                EcrError::new(s.aws_error_name(), s.http_status(), s.to_string())
            }
            AuthError::KeyInactive => EcrError::new(
                "UnrecognizedClientException",
                400,
                "The security token included in the request is invalid.",
            ),
            AuthError::Token(t) => EcrError::new("UnrecognizedClientException", 400, t.to_string()),
            AuthError::Meta(m) => EcrError::server(m),
        })?;
    let Some(op) = op else {
        return Err(EcrError::new(
            "UnknownOperationException",
            400,
            "Missing or unknown X-Amz-Target",
        ));
    };
    let value: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            EcrError::serialization(format!("the request body is not valid JSON: {e}"))
        })?
    };
    if !value.is_object() {
        return Err(EcrError::serialization(
            "the request body must be a JSON object",
        ));
    }
    let input = Input::new(value);
    let ctx = Ctx {
        state,
        caller: &caller,
        headers: &parts.headers,
        source_ip: crate::distribution::peer_ip(&parts),
    };
    match op.as_str() {
        "GetAuthorizationToken" => get_authorization_token(&ctx, &input).await,
        "CreateRepository" => repositories::create_repository(&ctx, &input).await,
        "DescribeRepositories" => repositories::describe_repositories(&ctx, &input).await,
        "DeleteRepository" => repositories::delete_repository(&ctx, &input).await,
        "TagResource" => repositories::tag_resource(&ctx, &input).await,
        "UntagResource" => repositories::untag_resource(&ctx, &input).await,
        "ListTagsForResource" => repositories::list_tags_for_resource(&ctx, &input).await,
        "PutImageTagMutability" => repositories::put_image_tag_mutability(&ctx, &input).await,
        "SetRepositoryPolicy" => repositories::set_repository_policy(&ctx, &input).await,
        "GetRepositoryPolicy" => repositories::get_repository_policy(&ctx, &input).await,
        "DeleteRepositoryPolicy" => repositories::delete_repository_policy(&ctx, &input).await,
        "PutRegistryPolicy" => repositories::put_registry_policy(&ctx, &input).await,
        "GetRegistryPolicy" => repositories::get_registry_policy(&ctx, &input).await,
        "DeleteRegistryPolicy" => repositories::delete_registry_policy(&ctx, &input).await,
        "DescribeRegistry" => repositories::describe_registry(&ctx, &input).await,
        "ListImages" => images::list_images(&ctx, &input).await,
        "DescribeImages" => images::describe_images(&ctx, &input).await,
        "BatchGetImage" => images::batch_get_image(&ctx, &input).await,
        "BatchDeleteImage" => images::batch_delete_image(&ctx, &input).await,
        "PutImage" => images::put_image(&ctx, &input).await,
        "BatchCheckLayerAvailability" => layers::batch_check_layer_availability(&ctx, &input).await,
        "InitiateLayerUpload" => layers::initiate_layer_upload(&ctx, &input).await,
        "UploadLayerPart" => layers::upload_layer_part(&ctx, &input).await,
        "CompleteLayerUpload" => layers::complete_layer_upload(&ctx, &input).await,
        "GetDownloadUrlForLayer" => layers::get_download_url_for_layer(&ctx, &input).await,
        "PutLifecyclePolicy" => lifecycle::put_lifecycle_policy(&ctx, &input).await,
        "GetLifecyclePolicy" => lifecycle::get_lifecycle_policy(&ctx, &input).await,
        "DeleteLifecyclePolicy" => lifecycle::delete_lifecycle_policy(&ctx, &input).await,
        "StartLifecyclePolicyPreview" => {
            lifecycle::start_lifecycle_policy_preview(&ctx, &input).await
        }
        "GetLifecyclePolicyPreview" => lifecycle::get_lifecycle_policy_preview(&ctx, &input).await,
        other if is_modeled(other) => Err(EcrError::new(
            "UnsupportedOperationException",
            400,
            format!("Berth does not implement {other} yet (see docs/api-compatibility.md)"),
        )),
        other => Err(EcrError::new(
            "UnknownOperationException",
            400,
            format!("Unknown operation {other}"),
        )),
    }
}

fn is_modeled(op: &str) -> bool {
    crate::iam::ECR_ACTIONS
        .iter()
        .any(|a| a.strip_prefix("ecr:") == Some(op))
}

/// `GetAuthorizationToken`: one token per requested registry (default: the caller's).
async fn get_authorization_token(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let ids = match input.opt_str_list("registryIds")? {
        Some(ids) => {
            input::check_count("registryIds", ids.len(), 1, 10)?;
            for id in &ids {
                input::check_pattern("registryIds", id, input::is_account_id, "[0-9]{12}")?;
            }
            ids
        }
        None => vec![ctx.caller.principal.account.clone()],
    };
    // Granted by identity policy only, on resource "*".
    ctx.authorize("GetAuthorizationToken", &ctx.caller.principal.account, None)
        .await?;
    let (token, expires) = ctx.state.access.issue_token(ctx.caller);
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{token}"));
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "authorizationToken": encoded,
                "expiresAt": expires,
                "proxyEndpoint": format!("https://{}", ctx.state.registry_host_for(id, ctx.headers)),
            })
        })
        .collect();
    Ok(json!({ "authorizationData": data }))
}
