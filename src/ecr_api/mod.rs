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
//! - scanning (configuration, StartImageScan, DescribeImageScanFindings): [`scanning`]
//! - GetAccountSetting, PutAccountSetting: [`account_settings`]
//! - pull-through cache rules (Create/Describe/Update/Delete/Validate): [`pull_through`]
//! - GetAuthorizationToken: here.

mod account_settings;
mod error;
mod images;
mod input;
mod layers;
mod lifecycle;
mod pull_through;
mod replication;
mod repositories;
mod scanning;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

pub use error::EcrError;
use input::Input;

use crate::app::AppState;
use crate::auth::{AuthError, Caller};
use crate::registry::RepoId;

const TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921.";

/// Largest request body each operation may send. The model's own limits set
/// them: an UploadLayerPart carries at most 20 MiB, base64-encoded (×4/3); a
/// PutImage manifest is at most `max_manifest_bytes`, JSON-escaped inside a
/// string (×2 covers the escaped quotes); policies are at most 10,240 and
/// lifecycle policies 30,720 characters (×6 covers `\uXXXX` escapes). Every
/// other operation's input is a few kilobytes.
fn body_cap(op: &str, max_manifest_bytes: usize) -> usize {
    const SLACK: usize = 64 << 10;
    match op {
        "UploadLayerPart" => layers::MAX_PART * 4 / 3 + SLACK,
        "PutImage" => 2 * max_manifest_bytes + SLACK,
        "PutLifecyclePolicy" | "StartLifecyclePolicyPreview" => 30_720 * 6 + SLACK,
        "SetRepositoryPolicy" | "PutRegistryPolicy" => 10_240 * 6 + SLACK,
        _ => 256 << 10,
    }
}

/// Everything an operation handler needs.
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub caller: &'a Caller,
    /// The region the request addresses (its signature's scope).
    pub region: &'a str,
    pub headers: &'a axum::http::HeaderMap,
    /// The host the request was sent to (`Host`, or the HTTP/2 authority).
    pub host: Option<&'a str>,
    /// The client's address, for `aws:SourceIp`.
    pub source_ip: Option<std::net::IpAddr>,
    /// The scheme the client used, for the URLs handed back to it.
    pub scheme: crate::http::Scheme,
}

impl Ctx<'_> {
    /// The registry an operation addresses, as the stores key it: the
    /// account `registryId` names (else the caller's) in the request's region.
    pub fn registry_id(&self, input: &Input) -> Result<String, EcrError> {
        match input.opt_str("registryId")? {
            Some(id) => {
                input::check_pattern("registryId", id, input::is_account_id, "[0-9]{12}")?;
                Ok(self.registry_of(id))
            }
            None => Ok(self.own_registry()),
        }
    }

    /// The caller's own registry in the request's region (the registry of
    /// registry-level operations: policies, replication, templates).
    pub fn own_registry(&self) -> String {
        self.registry_of(&self.caller.principal.account)
    }

    /// `account`'s registry in the request's region.
    pub fn registry_of(&self, account: &str) -> String {
        self.state.access.registry_key(account, self.region)
    }

    /// The ARN of repository `name` of registry `key`.
    pub fn repository_arn(&self, key: &str, name: &str) -> String {
        crate::auth::repository_arn(
            crate::reference::key_region(key, &self.state.region),
            crate::reference::key_account(key),
            name,
        )
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
            .repository_exists(repo.key())
            .await
            .map_err(EcrError::meta)?;
        if !exists {
            return Err(EcrError::repository_not_found(
                repo.name.as_str(),
                &registry,
            ));
        }
        Ok(repo)
    }

    /// What a pagination token is bound to: the operation, the registry, the
    /// repository (for image listings) and the caller's account.
    fn token_scope(&self, op: &str, registry: &str, repo: Option<&str>) -> String {
        format!(
            "{op}\n{registry}\n{}\n{}",
            repo.unwrap_or(""),
            self.caller.principal.account
        )
    }

    /// The cursor in `nextToken`, which must be one this server made for the
    /// same operation, registry, repository and caller account.
    pub fn page_token(
        &self,
        input: &Input,
        op: &str,
        registry: &str,
        repo: Option<&str>,
    ) -> Result<Option<String>, EcrError> {
        let Some(t) = input.opt_str("nextToken")?.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        self.state
            .access
            .open_page_token(&self.token_scope(op, registry, repo), t)
            .map(Some)
            .ok_or_else(|| {
                EcrError::invalid(
                    "Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid pagination token'",
                )
            })
    }

    /// An opaque, sealed `nextToken` for `cursor` (see [`Ctx::page_token`]).
    pub fn next_token(&self, op: &str, registry: &str, repo: Option<&str>, cursor: &str) -> String {
        self.state
            .access
            .seal_page_token(&self.token_scope(op, registry, repo), cursor)
    }

    /// Whether the caller may perform `ecr:<op>` on `repo` (or the registry).
    pub async fn allowed(
        &self,
        op: &str,
        registry: &str,
        repo: Option<&str>,
    ) -> Result<bool, EcrError> {
        let action = format!("ecr:{op}");
        self.state
            .access
            .authorize(self.caller, &action, registry, repo, self.source_ip)
            .await
            .map_err(EcrError::meta)
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
            .map_err(EcrError::meta)?;
        if allowed {
            return Ok(());
        }
        let resource = match repo {
            Some(r) => self.repository_arn(registry, r),
            None => format!(
                "arn:aws:ecr:{}:{}:*",
                crate::reference::key_region(registry, &self.state.region),
                crate::reference::key_account(registry)
            ),
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
    // The id the server gave the request (also its x-request-id), as ECR's own.
    let request_id = crate::http::RequestId::of_api_request(&req);
    let label = crate::http::target_operation(req.headers(), TARGET_PREFIX)
        .and_then(|op| {
            crate::iam::ECR_ACTIONS
                .iter()
                .find(|a| a.strip_prefix("ecr:") == Some(op))
        })
        .copied()
        .unwrap_or("ecr_api");
    let scope = crate::audit::Scope::new();
    let result = scope.run(handle(&state, req, &scope)).await;
    state.audit.finish(&scope, audit_outcome(&result)).await;
    let resp = match result {
        Ok(v) => crate::http::aws_json(StatusCode::OK, v.to_string(), None, None),
        Err(e) => {
            if let Some(limit) = e.limit {
                state.metrics.limited(limit);
            }
            e.into_response()
        }
    };
    crate::http::finish_api_response(resp, &request_id, label)
}

/// How an operation ended, for its audit event.
fn audit_outcome(result: &Result<Value, EcrError>) -> crate::audit_trail::Outcome {
    crate::audit_trail::Outcome::of_json(result, |e| (e.name, &e.message), true)
}

/// The audit event of ECR operation `op` called with `input`: the registry
/// it addresses (its owner's history holds it too), the repository it names.
fn audit_event(
    ctx: &Ctx<'_>,
    parts: Option<&axum::http::request::Parts>,
    op: &str,
    input: &Value,
) -> crate::audit::Event {
    let caller_account = &ctx.caller.principal.account;
    let account = input
        .get("registryId")
        .and_then(Value::as_str)
        .filter(|id| input::is_account_id(id))
        .unwrap_or(caller_account);
    let identity = ctx.caller.audit_identity();
    let mut e = match parts {
        Some(p) => crate::audit_trail::request_event(
            p,
            crate::audit::ECR,
            op,
            ctx.region,
            account,
            identity,
        ),
        None => {
            let mut e =
                crate::audit::Event::new(crate::audit::ECR, op, ctx.region, account, identity);
            e.request_id = e.id.clone();
            e
        }
    };
    e.read_only = crate::audit_trail::is_read_only(op);
    e.request_parameters = crate::audit_trail::redacted(input);
    let named = input.get("repositoryName").and_then(Value::as_str);
    let listed = input
        .get("repositoryNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .take(100);
    // TagResource and friends name the repository by its ARN.
    let by_arn = input
        .get("resourceArn")
        .and_then(Value::as_str)
        .and_then(|arn| arn.split_once(":repository/"))
        .map(|(_, name)| name);
    let key = ctx.registry_of(account);
    for name in named.into_iter().chain(listed).chain(by_arn) {
        e.resources.push(crate::audit_trail::repository_resource(
            ctx.repository_arn(&key, name),
            account,
            name,
        ));
    }
    e
}

fn auth_error(e: AuthError) -> EcrError {
    match e {
        AuthError::SigV4(s) => EcrError::new(s.aws_error_name(), s.http_status(), s.to_string()),
        AuthError::KeyInactive => EcrError::new(
            "UnrecognizedClientException",
            400,
            "The security token included in the request is invalid.",
        ),
        AuthError::Token(t) => EcrError::new("UnrecognizedClientException", 400, t.to_string()),
        AuthError::WrongGrant => EcrError::new(
            "UnrecognizedClientException",
            400,
            "The security token included in the request is invalid.",
        ),
        AuthError::Meta(m) => EcrError::meta(m),
    }
}

/// A request not taken in ([`AppState::take_signed`]), in ECR's words.
fn intake_error(e: crate::app::IntakeError, op: &str) -> EcrError {
    use crate::app::IntakeError;
    use crate::http::BodyError;
    match e {
        IntakeError::Auth(a) => auth_error(a),
        IntakeError::Declared { declared, cap } => EcrError::new(
            "RequestEntityTooLargeException",
            413,
            format!("The request body is {declared} bytes; {op} accepts at most {cap}"),
        )
        .limited("body_size"),
        IntakeError::Budget(b) => {
            EcrError::new("ThrottlingException", 400, format!("Rate exceeded: {b}"))
                .limited("body_memory")
        }
        IntakeError::Body(BodyError::TooLarge(cap)) => EcrError::new(
            "RequestEntityTooLargeException",
            413,
            format!("The request body is larger than {cap} bytes, the most {op} accepts"),
        )
        .limited("body_size"),
        IntakeError::Body(BodyError::TimedOut(d)) => EcrError::new(
            "RequestTimeoutException",
            408,
            format!("The request body did not arrive within {d:?}"),
        )
        .limited("api_body_timeout"),
        IntakeError::Body(b @ BodyError::Broken(_)) => EcrError::serialization(b.to_string()),
    }
}

async fn handle(
    state: &AppState,
    req: Request,
    scope: &crate::audit::Scope,
) -> Result<Value, EcrError> {
    let (parts, body) = req.into_parts();
    let op = crate::http::target_operation(&parts.headers, TARGET_PREFIX).map(str::to_string);
    // Authentication first, before a byte of the body is read: the
    // Authorization header must be well-formed, signed for this region and
    // service, with X-Amz-Target signed, by an active key.
    let Some(op) = op else {
        state
            .access
            .begin_sigv4(&parts.headers)
            .await
            .map_err(auth_error)?;
        return Err(EcrError::new(
            "UnknownOperationException",
            400,
            "Missing or unknown X-Amz-Target",
        ));
    };
    let cap = body_cap(&op, state.registry.limits.max_manifest_bytes);
    let signed = state
        .take_signed(&parts, Body::new(body), "ecr", cap)
        .await
        .map_err(|e| intake_error(e, &op))?;
    let (caller, body, region) = (signed.caller, signed.body, signed.region);
    // The body is given up as soon as it is parsed. An UploadLayerPart's
    // part (up to 27 MiB of base64) is decoded where it lies in the body's
    // buffer, so the request holds no more than the body it reserved.
    let (value, part) = if op == "UploadLayerPart" {
        layers::parse_part_request(body)?
    } else {
        let value = parse_request(&body)?;
        drop(body);
        (value, layers::PartBlob::Absent)
    };
    let input = Input::new(value);
    let ctx = Ctx {
        state,
        caller: &caller,
        region: &region,
        headers: &parts.headers,
        host: crate::http::request_host(&parts.headers, &parts.uri),
        source_ip: crate::http::client_ip(&parts),
        scheme: crate::http::scheme(&parts),
    };
    state
        .audit
        .begin(scope, audit_event(&ctx, Some(&parts), &op, input.value()));
    operation(&ctx, &op, &input, part).await
}

/// Where the ECR API is called from inside Berth: CloudFormation's
/// resource providers (a stack does what its caller could do with the aws
/// CLI, with the same rules, authorization and errors). `host` and
/// `scheme` are those of the request that started it (for the URIs the
/// answers carry).
pub struct InProcess<'a> {
    pub state: &'a AppState,
    pub caller: &'a Caller,
    pub host: Option<&'a str>,
    pub scheme: crate::http::Scheme,
    pub source_ip: Option<std::net::IpAddr>,
    /// The service making the call, for the audit event's `invokedBy`
    /// (`cloudformation.amazonaws.com`); `None` for the caller's own call
    /// made through a page of the web console (its address and browser).
    pub invoked_by: Option<&'static str>,
    /// The caller's user agent, for a call of its own.
    pub user_agent: Option<&'a str>,
}

/// Run ECR operation `op` with the JSON `input`, in process.
pub async fn call(from: &InProcess<'_>, op: &str, input: Value) -> Result<Value, EcrError> {
    if !input.is_object() {
        return Err(EcrError::serialization("the input must be a JSON object"));
    }
    let headers = axum::http::HeaderMap::new();
    let ctx = Ctx {
        state: from.state,
        caller: from.caller,
        region: &from.state.region,
        headers: &headers,
        host: from.host,
        source_ip: from.source_ip,
        scheme: from.scheme,
    };
    // A call a service makes for its caller is the caller's, `invokedBy`
    // the service, in an event of its own; a console page's call is the
    // caller's own, from its address and browser.
    let scope = crate::audit::Scope::new();
    let mut event = audit_event(&ctx, None, op, &input);
    match from.invoked_by {
        Some(service) => {
            event.identity.invoked_by = Some(service.to_string());
            event.source_ip = service.to_string();
            event.user_agent = Some(service.to_string());
        }
        None => {
            event.source_ip = from.source_ip.map(|ip| ip.to_string()).unwrap_or_default();
            event.user_agent = from.user_agent.map(str::to_string);
        }
    }
    from.state.audit.begin(&scope, event);
    let input = Input::new(input);
    let result = scope
        .run(operation(&ctx, op, &input, layers::PartBlob::Absent))
        .await;
    from.state
        .audit
        .finish(&scope, audit_outcome(&result))
        .await;
    result
}

async fn operation(
    ctx: &Ctx<'_>,
    op: &str,
    input: &Input,
    part: layers::PartBlob,
) -> Result<Value, EcrError> {
    match op {
        "GetAuthorizationToken" => get_authorization_token(ctx, input).await,
        "CreateRepository" => repositories::create_repository(ctx, input).await,
        "DescribeRepositories" => repositories::describe_repositories(ctx, input).await,
        "DeleteRepository" => repositories::delete_repository(ctx, input).await,
        "TagResource" => repositories::tag_resource(ctx, input).await,
        "UntagResource" => repositories::untag_resource(ctx, input).await,
        "ListTagsForResource" => repositories::list_tags_for_resource(ctx, input).await,
        "PutImageTagMutability" => repositories::put_image_tag_mutability(ctx, input).await,
        "SetRepositoryPolicy" => repositories::set_repository_policy(ctx, input).await,
        "GetRepositoryPolicy" => repositories::get_repository_policy(ctx, input).await,
        "DeleteRepositoryPolicy" => repositories::delete_repository_policy(ctx, input).await,
        "PutRegistryPolicy" => repositories::put_registry_policy(ctx, input).await,
        "GetRegistryPolicy" => repositories::get_registry_policy(ctx, input).await,
        "DeleteRegistryPolicy" => repositories::delete_registry_policy(ctx, input).await,
        "DescribeRegistry" => replication::describe_registry(ctx, input).await,
        "PutReplicationConfiguration" => {
            replication::put_replication_configuration(ctx, input).await
        }
        "DescribeImageReplicationStatus" => {
            replication::describe_image_replication_status(ctx, input).await
        }
        "CreateRepositoryCreationTemplate" => {
            replication::create_repository_creation_template(ctx, input).await
        }
        "UpdateRepositoryCreationTemplate" => {
            replication::update_repository_creation_template(ctx, input).await
        }
        "DeleteRepositoryCreationTemplate" => {
            replication::delete_repository_creation_template(ctx, input).await
        }
        "DescribeRepositoryCreationTemplates" => {
            replication::describe_repository_creation_templates(ctx, input).await
        }
        "GetAccountSetting" => account_settings::get_account_setting(ctx, input).await,
        "PutAccountSetting" => account_settings::put_account_setting(ctx, input).await,
        "ListImages" => images::list_images(ctx, input).await,
        "DescribeImages" => images::describe_images(ctx, input).await,
        "BatchGetImage" => images::batch_get_image(ctx, input).await,
        "BatchDeleteImage" => images::batch_delete_image(ctx, input).await,
        "PutImage" => images::put_image(ctx, input).await,
        "BatchCheckLayerAvailability" => layers::batch_check_layer_availability(ctx, input).await,
        "InitiateLayerUpload" => layers::initiate_layer_upload(ctx, input).await,
        "UploadLayerPart" => layers::upload_layer_part(ctx, input, part).await,
        "CompleteLayerUpload" => layers::complete_layer_upload(ctx, input).await,
        "GetDownloadUrlForLayer" => layers::get_download_url_for_layer(ctx, input).await,
        "PutLifecyclePolicy" => lifecycle::put_lifecycle_policy(ctx, input).await,
        "GetLifecyclePolicy" => lifecycle::get_lifecycle_policy(ctx, input).await,
        "DeleteLifecyclePolicy" => lifecycle::delete_lifecycle_policy(ctx, input).await,
        "StartLifecyclePolicyPreview" => {
            lifecycle::start_lifecycle_policy_preview(ctx, input).await
        }
        "GetLifecyclePolicyPreview" => lifecycle::get_lifecycle_policy_preview(ctx, input).await,
        "PutImageScanningConfiguration" => {
            scanning::put_image_scanning_configuration(ctx, input).await
        }
        "PutRegistryScanningConfiguration" => {
            scanning::put_registry_scanning_configuration(ctx, input).await
        }
        "GetRegistryScanningConfiguration" => {
            scanning::get_registry_scanning_configuration(ctx, input).await
        }
        "BatchGetRepositoryScanningConfiguration" => {
            scanning::batch_get_repository_scanning_configuration(ctx, input).await
        }
        "StartImageScan" => scanning::start_image_scan(ctx, input).await,
        "DescribeImageScanFindings" => scanning::describe_image_scan_findings(ctx, input).await,
        "CreatePullThroughCacheRule" => {
            pull_through::create_pull_through_cache_rule(ctx, input).await
        }
        "DescribePullThroughCacheRules" => {
            pull_through::describe_pull_through_cache_rules(ctx, input).await
        }
        "UpdatePullThroughCacheRule" => {
            pull_through::update_pull_through_cache_rule(ctx, input).await
        }
        "DeletePullThroughCacheRule" => {
            pull_through::delete_pull_through_cache_rule(ctx, input).await
        }
        "ValidatePullThroughCacheRule" => {
            pull_through::validate_pull_through_cache_rule(ctx, input).await
        }
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

/// A request body as the operation's input: a JSON object (an empty body is `{}`).
fn parse_request(body: &[u8]) -> Result<Value, EcrError> {
    let value: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            EcrError::serialization(format!("the request body is not valid JSON: {e}"))
        })?
    };
    if !value.is_object() {
        return Err(EcrError::serialization(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
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
                "proxyEndpoint": format!(
                    "{}://{}",
                    ctx.scheme.as_str(),
                    ctx.state.registry_host_for(id, ctx.host)
                ),
            })
        })
        .collect();
    Ok(json!({ "authorizationData": data }))
}
