//! The STS face: AWS's Query protocol (a form-encoded `POST /` body,
//! `Action=GetCallerIdentity&Version=2011-06-15`, an XML answer) signed with
//! SigV4 for service `sts`, on the same endpoint as the ECR API (`server`
//! sends it form-encoded requests whose credential scope names `sts`).
//!
//! One operation: `GetCallerIdentity`, who the signing key stands for (its
//! account, principal ARN and user id), which the Terraform AWS provider and
//! the CDK ask before anything else. As in AWS it needs no permission: any
//! authenticated identity may learn who it is. The wire shapes are
//! `aws_query`'s; authentication is `auth::Access`'s.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

use crate::app::{AppState, IntakeError};
use crate::auth::{AuthError, Caller};
use crate::aws_query::{self, Params, QueryError};
use crate::http::BodyError;
use crate::registry::MetaError;

/// The SigV4 service STS requests are signed for (and routed by).
pub const SERVICE: &str = "sts";
/// The one API version STS has.
const VERSION: &str = "2011-06-15";
const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// Largest request body: GetCallerIdentity has no parameters beyond
/// `Action` and `Version`.
const BODY_CAP: usize = 4 << 10;

/// The metrics label of a request whose operation is not known.
const FACE_LABEL: &str = "sts_api";

/// An operation: the caller to its result's XML.
type Operation = fn(&Caller) -> String;

/// The operations this face answers: the Action, its metrics label, its handler.
const OPERATIONS: &[(&str, &str, Operation)] = &[(
    "GetCallerIdentity",
    "sts:GetCallerIdentity",
    get_caller_identity,
)];

/// Entry point for a form-encoded `POST /` signed for service `sts`.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let request_id = crate::http::RequestId::of_api_request(&req);
    let mut label = FACE_LABEL;
    let scope = crate::audit::Scope::new();
    let result = scope.run(handle(&state, req, &mut label, &scope)).await;
    state.audit.finish(&scope, query_outcome(&result)).await;
    let resp = match result {
        Ok((action, result)) => aws_query::success(action, XMLNS, &result, &request_id),
        Err(e) => e.to_response(&request_id),
    };
    crate::http::finish_api_response(resp, &request_id, label)
}

/// How a Query-protocol call ended, for its audit event (STS's and
/// CloudFormation's; their answers are XML, so no responseElements).
pub fn query_outcome<T>(result: &Result<T, QueryError>) -> crate::audit_trail::Outcome {
    match result {
        Ok(_) => crate::audit_trail::Outcome::Ok { response: None },
        Err(e) => crate::audit_trail::Outcome::Failed {
            code: e.code.clone(),
            message: e.message.clone(),
        },
    }
}

/// An authentication failure in the Query protocol's words (STS's and
/// CloudFormation's).
pub fn auth_error(e: AuthError) -> QueryError {
    match e {
        AuthError::SigV4(s) => aws_query::sigv4_error(&s),
        AuthError::Meta(m) => meta_error(m),
        AuthError::KeyInactive | AuthError::Token(_) | AuthError::WrongGrant => QueryError::new(
            "InvalidClientTokenId",
            403,
            "The security token included in the request is invalid.",
        ),
    }
}

/// A metadata store failure in the Query protocol's words.
pub fn meta_error(e: MetaError) -> QueryError {
    if let MetaError::Unavailable(_) = e {
        return QueryError::new(
            "ServiceUnavailable",
            503,
            "The registry's metadata database is temporarily unavailable. Retry shortly.",
        );
    }
    tracing::error!(error = %e, "metadata error in a Query-protocol API");
    QueryError::new("InternalFailure", 500, "An internal error occurred.")
}

/// A request not taken in, in the Query protocol's words (STS's and
/// CloudFormation's), counted when a limit refused it.
pub fn intake_error(state: &AppState, e: IntakeError) -> QueryError {
    let (limit, error) = match e {
        IntakeError::Auth(a) => return auth_error(a),
        IntakeError::Declared { .. } | IntakeError::Body(BodyError::TooLarge(_)) => (
            "body_size",
            QueryError::new("RequestEntityTooLarge", 413, e.to_string()),
        ),
        IntakeError::Body(BodyError::TimedOut(_)) => (
            "api_body_timeout",
            QueryError::new("RequestTimeout", 408, e.to_string()),
        ),
        IntakeError::Budget(_) => (
            "body_memory",
            QueryError::new("Throttling", 400, format!("Rate exceeded: {e}")),
        ),
        IntakeError::Body(BodyError::Broken(_)) => {
            return QueryError::new("MalformedInput", 400, e.to_string());
        }
    };
    state.metrics.limited(limit);
    error
}

/// Authenticate, read the form, run the action: its name and result XML.
async fn handle(
    state: &AppState,
    req: Request,
    label: &mut &'static str,
    scope: &crate::audit::Scope,
) -> Result<(&'static str, String), QueryError> {
    let (parts, body) = req.into_parts();
    let signed = state
        .take_signed(&parts, Body::new(body), SERVICE, BODY_CAP)
        .await
        .map_err(|e| intake_error(state, e))?;
    let params = Params::parse(&signed.body);
    if let Some(action) = params.opt("Action") {
        let p = params.to_json();
        state.audit_call(scope, &parts, crate::audit::STS, action, &signed, Some(&p));
    }
    let caller = signed.caller.clone();
    let action = params
        .opt("Action")
        .ok_or_else(|| QueryError::new("MissingAction", 400, "Missing Action"))?;
    let version = params.opt("Version").unwrap_or(VERSION);
    let Some(&(name, op_label, run)) = OPERATIONS
        .iter()
        .find(|(name, _, _)| *name == action)
        .filter(|_| version == VERSION)
    else {
        return Err(QueryError::new(
            "InvalidAction",
            400,
            format!("Could not find operation {action} for version {version}"),
        ));
    };
    *label = op_label;
    Ok((name, run(&caller)))
}

/// `GetCallerIdentity`: the caller's account, principal ARN and user id
/// (an IAM user's unique id; the account id for the account's root).
fn get_caller_identity(caller: &Caller) -> String {
    let mut xml = String::new();
    aws_query::elem(&mut xml, "Arn", &caller.principal.arn);
    aws_query::elem(&mut xml, "UserId", &caller.principal.user_id);
    aws_query::elem(&mut xml, "Account", &caller.principal.account);
    xml
}
