//! The CloudFormation face: AWS's Query protocol (form-encoded `POST /`,
//! XML answers, `Version=2010-05-15`) signed with SigV4 for service
//! `cloudformation`, on the same endpoint as the ECR API (`server` routes by
//! the signature's service). This module owns the wire (parameters, the
//! XML of stacks, events, resources and change sets, CloudFormation's error
//! codes) and authorization (`cloudformation:<Action>` on the stack's ARN);
//! the rules are the `stacks` service's.
//!
//! A stack's resources are provisioned by calling the ECR face in process
//! as the caller ([`EcrProvisioner`]): what a stack may do is what its
//! caller may do.

mod ops;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::Value;

use crate::app::AppState;
use crate::auth::Caller;
use crate::aws_query::{Params, QueryError};
use crate::stacks::{ApiFault, Provisioner, StackError};

pub const XMLNS: &str = "http://cloudformation.amazonaws.com/doc/2010-05-15/";

/// Largest request body: a 51,200-byte template form-encoded (each byte
/// up to three), with parameters and tags.
const BODY_CAP: usize = 256 << 10;

impl From<StackError> for QueryError {
    fn from(e: StackError) -> QueryError {
        let message = e.to_string();
        match e {
            StackError::Validation(_) | StackError::InProgress(_) => {
                QueryError::validation(message)
            }
            StackError::AlreadyExists(_) => QueryError::new("AlreadyExistsException", 400, message),
            StackError::ChangeSetNotFound(_) => QueryError::new("ChangeSetNotFound", 404, message),
            StackError::InvalidChangeSetStatus(_) => {
                QueryError::new("InvalidChangeSetStatus", 400, message)
            }
            StackError::Meta(m) => crate::sts_api::meta_error(m),
        }
    }
}

/// What an action handler gets.
pub struct Ctx<'a> {
    pub state: &'a Arc<AppState>,
    pub caller: &'a Caller,
    pub host: Option<String>,
    pub scheme: crate::http::Scheme,
    pub source_ip: Option<std::net::IpAddr>,
    pub request_id: &'a str,
}

impl Ctx<'_> {
    pub fn account(&self) -> &str {
        &self.caller.principal.account
    }

    /// The ARN a call on stack `name_or_id` is authorized on: the stack's
    /// ARN, or `stack/NAME/*` for a name.
    pub fn stack_resource(&self, name_or_id: &str) -> String {
        if name_or_id.starts_with("arn:") {
            name_or_id.to_string()
        } else {
            format!(
                "arn:aws:cloudformation:{}:{}:stack/{name_or_id}/*",
                self.state.region,
                self.account()
            )
        }
    }

    /// Refuse unless the caller may perform `cloudformation:<action>` on `resource`.
    pub fn authorize(&self, action: &str, resource: &str) -> Result<(), QueryError> {
        let full = format!("cloudformation:{action}");
        if self
            .state
            .access
            .authorize_identity(self.caller, &full, resource, None, self.source_ip)
        {
            return Ok(());
        }
        Err(QueryError::new(
            "AccessDenied",
            403,
            format!(
                "User: {} is not authorized to perform: {full} on resource: {resource}",
                self.caller.principal.arn
            ),
        ))
    }

    /// The ECR calls of a stack operation, in this caller's name.
    pub fn provisioner(&self) -> Arc<dyn Provisioner> {
        Arc::new(EcrProvisioner {
            state: self.state.clone(),
            caller: self.caller.clone(),
            host: self.host.clone(),
            scheme: self.scheme,
            source_ip: self.source_ip,
        })
    }
}

/// A stack's resource provider calls: the ECR face, in process, as the
/// caller that started the operation.
pub struct EcrProvisioner {
    state: Arc<AppState>,
    caller: Caller,
    host: Option<String>,
    scheme: crate::http::Scheme,
    source_ip: Option<std::net::IpAddr>,
}

#[async_trait::async_trait]
impl Provisioner for EcrProvisioner {
    async fn call(&self, operation: &str, input: Value) -> Result<Value, ApiFault> {
        let from = crate::ecr_api::InProcess {
            state: &self.state,
            caller: &self.caller,
            host: self.host.as_deref(),
            scheme: self.scheme,
            source_ip: self.source_ip,
            invoked_by: Some(crate::audit::CLOUDFORMATION),
            user_agent: None,
        };
        crate::ecr_api::call(&from, operation, input)
            .await
            .map_err(|e| ApiFault {
                service: "Ecr",
                code: e.name.to_string(),
                message: e.message,
                status: e.status,
            })
    }

    fn account(&self) -> &str {
        &self.caller.principal.account
    }

    fn parameter(&self, name: &str) -> Result<Option<String>, String> {
        let account = self.account();
        let region = &self.state.region;
        let resource = crate::parameters::arn(account, region, name);
        let action = "ssm:GetParameters";
        if !self.state.access.authorize_identity(
            &self.caller,
            action,
            &resource,
            Some(account),
            self.source_ip,
        ) {
            return Err(format!(
                "User: {} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action",
                self.caller.principal.arn
            ));
        }
        Ok(crate::parameters::lookup(account, region, name).map(|p| p.value))
    }
}

/// Entry point for `POST /` with a request signed for `cloudformation`.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let request_id = crate::http::RequestId::of_api_request(&req);
    let mut label = "cloudformation_api";
    let scope = crate::audit::Scope::new();
    let result = scope
        .run(handle(&state, req, &request_id, &mut label, &scope))
        .await;
    state
        .audit
        .finish(&scope, crate::sts_api::query_outcome(&result))
        .await;
    let resp = match result {
        Ok(r) => r,
        Err(e) => e.to_response(&request_id),
    };
    crate::http::finish_api_response(resp, &request_id, label)
}

async fn handle(
    state: &Arc<AppState>,
    req: Request,
    request_id: &str,
    label: &mut &'static str,
    scope: &crate::audit::Scope,
) -> Result<Response, QueryError> {
    let (parts, body) = req.into_parts();
    let signed = state
        .take_signed(
            &parts,
            axum::body::Body::new(body),
            "cloudformation",
            BODY_CAP,
        )
        .await
        .map_err(|e| crate::sts_api::intake_error(state, e))?;
    let params = Params::parse(&signed.body);
    let action = params.get("Action").unwrap_or_default().to_string();
    if !action.is_empty() {
        let p = params.to_json();
        state.audit_call(
            scope,
            &parts,
            crate::audit::CLOUDFORMATION,
            &action,
            &signed,
            Some(&p),
        );
    }
    let caller = signed.caller.clone();
    drop(signed);
    if let Some(l) = ops::label(&action) {
        *label = l;
    }
    let ctx = Ctx {
        state,
        caller: &caller,
        host: crate::http::request_host(&parts.headers, &parts.uri).map(str::to_string),
        scheme: crate::http::scheme(&parts),
        source_ip: crate::http::client_ip(&parts),
        request_id,
    };
    let result = ops::run(&ctx, &action, &params).await?;
    Ok(crate::aws_query::success(
        &action, XMLNS, &result, request_id,
    ))
}
