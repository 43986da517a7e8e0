//! The SSM face: AWS JSON 1.1 over `POST /` with
//! `X-Amz-Target: AmazonSSM.<Operation>`, signed with SigV4 for service
//! `ssm`, on the same endpoint as the ECR API (`server` routes by the
//! target's prefix). It answers `GetParameter` and `GetParameters` (botocore's
//! `ssm/2014-11-06`) from `parameters`, Berth's read-only parameter source,
//! so that deployment tools find what a bootstrapped environment holds (the
//! CDK bootstrap version). This module owns the wire format: members, name
//! forms (a name, a parameter ARN, a `:version` selector), SSM's exception
//! names; authorization is `auth::Access::authorize_identity` on the
//! parameter's ARN (actions `ssm:GetParameter` / `ssm:GetParameters`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::app::{AppState, IntakeError};
use crate::auth::Caller;
use crate::parameters::{self, Parameter};

pub const TARGET_PREFIX: &str = "AmazonSSM.";

/// Largest request body: ten names of at most 2048 characters, JSON-escaped,
/// with room to spare.
const BODY_CAP: usize = 64 << 10;

/// The operations Berth answers, with their metrics label.
const OPERATIONS: &[(&str, &str)] = &[
    ("GetParameter", "ssm:GetParameter"),
    ("GetParameters", "ssm:GetParameters"),
];

/// The most names one `GetParameters` call may ask for.
const MAX_NAMES: usize = 10;

/// An SSM exception on the wire.
#[derive(Debug)]
pub struct SsmApiError {
    pub name: &'static str,
    pub status: u16,
    pub message: String,
}

impl SsmApiError {
    fn new(name: &'static str, status: u16, message: impl Into<String>) -> SsmApiError {
        SsmApiError {
            name,
            status,
            message: message.into(),
        }
    }

    fn validation(message: impl Into<String>) -> SsmApiError {
        SsmApiError::new("ValidationException", 400, message)
    }
}

impl IntoResponse for SsmApiError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.name, "message": self.message });
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        crate::http::aws_json(status, body.to_string(), Some(self.name), None)
    }
}

/// Entry point for `POST /` with an `AmazonSSM.*` target.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let request_id = crate::http::RequestId::of_api_request(&req);
    let label = crate::http::target_operation(req.headers(), TARGET_PREFIX)
        .and_then(|op| OPERATIONS.iter().find(|(name, _)| *name == op))
        .map_or("ssm_api", |(_, label)| *label);
    let scope = crate::audit::Scope::new();
    let result = scope.run(handle(&state, req, &scope)).await;
    let outcome = crate::audit_trail::Outcome::of_json(&result, |e| (e.name, &e.message), false);
    state.audit.finish(&scope, outcome).await;
    let resp = match result {
        Ok(v) => crate::http::aws_json(StatusCode::OK, v.to_string(), None, None),
        Err(e) => e.into_response(),
    };
    crate::http::finish_api_response(resp, &request_id, label)
}

/// A request not taken in ([`AppState::take_signed`]), in SSM's words.
fn intake_error(state: &AppState, e: IntakeError) -> SsmApiError {
    match e.json_refusal(BODY_CAP) {
        Ok(r) => {
            if let Some(limit) = r.limit {
                state.metrics.limited(limit);
            }
            SsmApiError::new(r.name, r.status, r.message)
        }
        Err(m) => {
            tracing::error!(error = %m, "metadata error in the SSM API");
            let status = match m {
                crate::registry::MetaError::Unavailable(_) => 503,
                _ => 500,
            };
            SsmApiError::new("InternalServerError", status, "An internal error occurred.")
        }
    }
}

async fn handle(
    state: &AppState,
    req: Request,
    scope: &crate::audit::Scope,
) -> Result<Value, SsmApiError> {
    let (parts, body) = req.into_parts();
    let op = crate::http::target_operation(&parts.headers, TARGET_PREFIX)
        .unwrap_or_default()
        .to_string();
    let signed = state
        .take_signed(&parts, axum::body::Body::new(body), "ssm", BODY_CAP)
        .await
        .map_err(|e| intake_error(state, e))?;
    let input = if signed.body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(&signed.body) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(SsmApiError::new(
                    "SerializationException",
                    400,
                    "the request body must be a JSON object",
                ));
            }
        }
    };
    let params = Value::Object(input.clone());
    state.audit_call(
        scope,
        &parts,
        crate::audit::SSM,
        &op,
        &signed,
        Some(&params),
    );
    let ctx = Ctx {
        state,
        caller: &signed.caller,
        source_ip: crate::http::client_ip(&parts),
    };
    match op.as_str() {
        "GetParameter" => get_parameter(&ctx, &input),
        "GetParameters" => get_parameters(&ctx, &input),
        _ => Err(SsmApiError::new(
            "UnknownOperationException",
            400,
            format!("Berth's SSM API does not support the operation '{op}'"),
        )),
    }
}

struct Ctx<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    source_ip: Option<std::net::IpAddr>,
}

/// A name as a request gives it: the parameter's name or ARN, maybe with a
/// `:version` or `:label` selector.
struct Requested<'a> {
    given: &'a str,
    account: String,
    region: String,
    name: String,
    selector: Option<String>,
}

impl Ctx<'_> {
    fn resolve<'n>(&self, given: &'n str) -> Requested<'n> {
        let (region, account, full) = match parameters::parse_arn(given) {
            Some((r, a, n)) => (r.to_string(), a.to_string(), n),
            None => (
                self.state.access.region.clone(),
                self.caller.principal.account.clone(),
                given.to_string(),
            ),
        };
        // Parameter names cannot contain ':', so one marks a selector.
        let (name, selector) = match full.split_once(':') {
            Some((n, s)) => (n.to_string(), Some(format!(":{s}"))),
            None => (full, None),
        };
        Requested {
            given,
            account,
            region,
            name,
            selector,
        }
    }

    /// Refuse unless the caller may perform `ssm:<op>` on the parameter.
    fn authorize(&self, op: &str, r: &Requested) -> Result<(), SsmApiError> {
        let action = format!("ssm:{op}");
        let resource = parameters::arn(&r.account, &r.region, &r.name);
        if self.state.access.authorize_identity(
            self.caller,
            &action,
            &resource,
            Some(&r.account),
            self.source_ip,
        ) {
            return Ok(());
        }
        Err(SsmApiError::new(
            "AccessDeniedException",
            400,
            format!(
                "User: {} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action",
                self.caller.principal.arn
            ),
        ))
    }

    /// The parameter, if it exists here (this server's region) and its
    /// selector, if any, names its version.
    fn find(&self, r: &Requested) -> Result<Parameter, Missing> {
        let found = (r.region == self.state.access.region)
            .then(|| parameters::lookup(&r.account, &r.region, &r.name))
            .flatten()
            .ok_or(Missing::Parameter)?;
        match &r.selector {
            None => Ok(found),
            Some(s) if *s == format!(":{}", found.version) => Ok(found),
            Some(_) => Err(Missing::Version),
        }
    }
}

enum Missing {
    Parameter,
    Version,
}

fn not_null(member: &str) -> SsmApiError {
    SsmApiError::validation(format!(
        "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
    ))
}

fn serialization(member: &str, what: &str) -> SsmApiError {
    SsmApiError::new(
        "SerializationException",
        400,
        format!("{member} must be {what}"),
    )
}

/// A `PSParameterName` (1..2048 characters) of member `member` (lower case).
fn checked_name<'v>(v: &'v Value, member: &str) -> Result<&'v str, SsmApiError> {
    let Value::String(s) = v else {
        return Err(serialization(member, "a string"));
    };
    if s.is_empty() || s.chars().count() > 2048 {
        return Err(SsmApiError::validation(format!(
            "1 validation error detected: Value '{s}' at '{member}' failed to satisfy constraint: Member must have length between 1 and 2048"
        )));
    }
    Ok(s)
}

/// `WithDecryption` must be a boolean when given; Berth's parameters are
/// all `String`, which it does not change.
fn check_with_decryption(input: &Map<String, Value>) -> Result<(), SsmApiError> {
    match input.get("WithDecryption") {
        None | Some(Value::Null | Value::Bool(_)) => Ok(()),
        Some(_) => Err(serialization("WithDecryption", "a boolean")),
    }
}

fn shape(p: &Parameter, selector: Option<&str>) -> Value {
    let mut v = json!({
        "Name": p.name,
        "Type": p.kind,
        "Value": p.value,
        "Version": p.version,
        "ARN": p.arn,
        "DataType": "text",
    });
    if let Some(s) = selector {
        v["Selector"] = json!(s);
    }
    v
}

fn get_parameter(ctx: &Ctx, input: &Map<String, Value>) -> Result<Value, SsmApiError> {
    check_with_decryption(input)?;
    let given = match input.get("Name") {
        None | Some(Value::Null) => return Err(not_null("name")),
        Some(v) => checked_name(v, "name")?,
    };
    let r = ctx.resolve(given);
    ctx.authorize("GetParameter", &r)?;
    match ctx.find(&r) {
        Ok(p) => Ok(json!({ "Parameter": shape(&p, r.selector.as_deref()) })),
        Err(Missing::Parameter) => Err(SsmApiError::new(
            "ParameterNotFound",
            400,
            format!("Parameter {} not found.", r.given),
        )),
        Err(Missing::Version) => Err(SsmApiError::new(
            "ParameterVersionNotFound",
            400,
            format!(
                "Systems Manager could not find version {} of {}. Verify the version and try again.",
                r.selector.as_deref().unwrap_or("").trim_start_matches(':'),
                r.name
            ),
        )),
    }
}

fn get_parameters(ctx: &Ctx, input: &Map<String, Value>) -> Result<Value, SsmApiError> {
    check_with_decryption(input)?;
    let names = match input.get("Names") {
        None | Some(Value::Null) => return Err(not_null("names")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(serialization("Names", "a list of strings")),
    };
    if names.is_empty() || names.len() > MAX_NAMES {
        return Err(SsmApiError::validation(format!(
            "1 validation error detected: Value '{}' at 'names' failed to satisfy constraint: Member must have length between 1 and {MAX_NAMES}",
            Value::Array(names.clone())
        )));
    }
    let mut requested = Vec::with_capacity(names.len());
    for v in names {
        let given = checked_name(v, "names")?;
        if !requested.iter().any(|r: &Requested| r.given == given) {
            requested.push(ctx.resolve(given));
        }
    }
    // Every name is authorized, found or not, before anything is answered.
    for r in &requested {
        ctx.authorize("GetParameters", r)?;
    }
    let mut found = Vec::new();
    let mut invalid = Vec::new();
    for r in &requested {
        match ctx.find(r) {
            Ok(p) => found.push(shape(&p, r.selector.as_deref())),
            Err(_) => invalid.push(r.given),
        }
    }
    // SSM lists the parameters in alphabetical order of their names.
    found.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
    Ok(json!({ "Parameters": found, "InvalidParameters": invalid }))
}
