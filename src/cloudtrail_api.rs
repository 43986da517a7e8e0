//! The CloudTrail face: AWS JSON 1.1 over `POST /` with
//! `X-Amz-Target: com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.<Operation>`,
//! signed with SigV4 for service `cloudtrail`, on the same endpoint as the
//! ECR API. It answers `LookupEvents` (botocore's `cloudtrail/2013-11-01`)
//! from the audit log: the caller's account's history in the signed region,
//! newest first, one lookup attribute, a time range, pages of at most 50.
//! This module owns the wire format and CloudTrail's exception names; the
//! events are `audit_trail`'s, authorization is
//! `auth::Access::authorize_identity` of `cloudtrail:LookupEvents`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::app::{AppState, IntakeError};
use crate::audit_trail::{AuditAttribute, AuditQuery, AuditRow};
use crate::auth::Caller;

pub const TARGET_PREFIX: &str = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.";

const BODY_CAP: usize = 64 << 10;

/// LookupEvents' page size: 50 by default and at most.
const MAX_RESULTS: i64 = 50;

/// CloudTrail's operations Berth does not answer (anything else is unknown).
const UNSUPPORTED: &[&str] = &[
    "CreateTrail",
    "DeleteTrail",
    "DescribeTrails",
    "GetTrail",
    "GetTrailStatus",
    "ListTrails",
    "StartLogging",
    "StopLogging",
    "UpdateTrail",
    "PutEventSelectors",
    "GetEventSelectors",
    "StartQuery",
    "CreateEventDataStore",
];

#[derive(Debug)]
pub struct TrailApiError {
    pub name: &'static str,
    pub status: u16,
    pub message: String,
}

impl TrailApiError {
    fn new(name: &'static str, status: u16, message: impl Into<String>) -> TrailApiError {
        TrailApiError {
            name,
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for TrailApiError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.name, "message": self.message });
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        crate::http::aws_json(status, body.to_string(), Some(self.name), None)
    }
}

/// Entry point for `POST /` with a CloudTrail target.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let request_id = crate::http::RequestId::of_api_request(&req);
    let label = match crate::http::target_operation(req.headers(), TARGET_PREFIX) {
        Some("LookupEvents") => "cloudtrail:LookupEvents",
        _ => "cloudtrail_api",
    };
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

fn intake_error(state: &AppState, e: IntakeError) -> TrailApiError {
    match e.json_refusal(BODY_CAP) {
        Ok(r) => {
            if let Some(limit) = r.limit {
                state.metrics.limited(limit);
            }
            TrailApiError::new(r.name, r.status, r.message)
        }
        Err(m) => meta_error(m),
    }
}

fn meta_error(e: crate::audit_trail::MetaError) -> TrailApiError {
    tracing::error!(error = %e, "metadata error in the CloudTrail API");
    TrailApiError::new("InternalFailure", 500, "An internal error occurred.")
}

async fn handle(
    state: &AppState,
    req: Request,
    scope: &crate::audit::Scope,
) -> Result<Value, TrailApiError> {
    let (parts, body) = req.into_parts();
    let op = crate::http::target_operation(&parts.headers, TARGET_PREFIX)
        .unwrap_or_default()
        .to_string();
    let signed = state
        .take_signed(&parts, axum::body::Body::new(body), "cloudtrail", BODY_CAP)
        .await
        .map_err(|e| intake_error(state, e))?;
    let input: Map<String, Value> = if signed.body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(&signed.body) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(TrailApiError::new(
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
        crate::audit::CLOUDTRAIL,
        &op,
        &signed,
        Some(&params),
    );
    let source_ip = crate::http::client_ip(&parts);
    match op.as_str() {
        "LookupEvents" => {
            lookup_events(state, &signed.caller, &signed.region, source_ip, &input).await
        }
        o if UNSUPPORTED.contains(&o) => Err(TrailApiError::new(
            "UnsupportedOperationException",
            400,
            format!(
                "Berth does not implement {o}: its audit log is LookupEvents, `berth audit export` and `berth audit stream` (docs/audit.md)"
            ),
        )),
        o => Err(TrailApiError::new(
            "UnknownOperationException",
            400,
            format!("Unknown operation {o}"),
        )),
    }
}

/// A request time: epoch seconds (a number, as botocore sends it) or an
/// ISO 8601 string.
fn time_member(input: &Map<String, Value>, key: &str) -> Result<Option<i64>, TrailApiError> {
    let bad = || {
        TrailApiError::new(
            "SerializationException",
            400,
            format!("{key} must be a timestamp"),
        )
    };
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let secs = n.as_f64().ok_or_else(bad)?;
            Ok(Some((secs * 1000.0) as i64))
        }
        Some(Value::String(s)) => humantime::parse_rfc3339_weak(s)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| Some(d.as_millis() as i64))
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

fn attribute(input: &Map<String, Value>) -> Result<Option<AuditAttribute>, TrailApiError> {
    let invalid = |m: String| TrailApiError::new("InvalidLookupAttributesException", 400, m);
    let list = match input.get("LookupAttributes") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(TrailApiError::new(
                "SerializationException",
                400,
                "LookupAttributes must be a list",
            ));
        }
    };
    match list.len() {
        0 => return Ok(None),
        1 => {}
        _ => {
            return Err(invalid(
                "You can specify only one lookup attribute".to_string(),
            ));
        }
    }
    let a = &list[0];
    let key = a.get("AttributeKey").and_then(Value::as_str);
    let value = a.get("AttributeValue").and_then(Value::as_str);
    let (Some(key), Some(value)) = (key, value) else {
        return Err(invalid(
            "A lookup attribute needs an AttributeKey and an AttributeValue".to_string(),
        ));
    };
    if value.is_empty() || value.chars().count() > 2000 {
        return Err(invalid(
            "AttributeValue must be 1 to 2000 characters".to_string(),
        ));
    }
    let v = value.to_string();
    Ok(Some(match key {
        "EventId" => AuditAttribute::EventId(v),
        "EventName" => AuditAttribute::EventName(v),
        "Username" => AuditAttribute::Username(v),
        "ResourceType" => AuditAttribute::ResourceType(v),
        "ResourceName" => AuditAttribute::ResourceName(v),
        "EventSource" => AuditAttribute::EventSource(v),
        "AccessKeyId" => AuditAttribute::AccessKeyId(v),
        "ReadOnly" => match value {
            "true" => AuditAttribute::ReadOnly(true),
            "false" => AuditAttribute::ReadOnly(false),
            _ => return Err(invalid("ReadOnly must be true or false".to_string())),
        },
        other => {
            return Err(invalid(format!(
                "{other} is not a lookup attribute (EventId, EventName, ReadOnly, Username, ResourceType, ResourceName, EventSource, AccessKeyId)"
            )));
        }
    }))
}

async fn lookup_events(
    state: &AppState,
    caller: &Caller,
    region: &str,
    source_ip: Option<std::net::IpAddr>,
    input: &Map<String, Value>,
) -> Result<Value, TrailApiError> {
    let account = caller.principal.account.clone();
    let action = "cloudtrail:LookupEvents";
    if !state
        .access
        .authorize_identity(caller, action, "*", Some(&account), source_ip)
    {
        return Err(TrailApiError::new(
            "AccessDeniedException",
            400,
            format!(
                "User: {} is not authorized to perform: {action} because no identity-based policy allows the {action} action",
                caller.principal.arn
            ),
        ));
    }
    if let Some(c) = input.get("EventCategory").filter(|v| !v.is_null()) {
        return Err(TrailApiError::new(
            "InvalidEventCategoryException",
            400,
            format!("EventCategory {c} is not supported: Berth records management events only"),
        ));
    }
    let attribute = attribute(input)?;
    let start = time_member(input, "StartTime")?;
    let end = time_member(input, "EndTime")?;
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(TrailApiError::new(
            "InvalidTimeRangeException",
            400,
            "StartTime is after EndTime",
        ));
    }
    let limit = match input.get("MaxResults") {
        None | Some(Value::Null) => MAX_RESULTS,
        Some(v) => match v.as_i64() {
            Some(n) if (1..=MAX_RESULTS).contains(&n) => n,
            _ => {
                return Err(TrailApiError::new(
                    "InvalidMaxResultsException",
                    400,
                    "MaxResults must be between 1 and 50",
                ));
            }
        },
    };
    // A token is bound to the account, region and filters it was made for.
    let token_scope =
        format!("LookupEvents\n{account}\n{region}\n{attribute:?}\n{start:?}\n{end:?}");
    let before = match input.get("NextToken").and_then(Value::as_str) {
        None => None,
        Some(t) => Some(
            state
                .access
                .open_page_token(&token_scope, t)
                .and_then(|c| {
                    let (time, seq) = c.split_once(' ')?;
                    Some((time.parse::<i64>().ok()?, seq.parse::<i64>().ok()?))
                })
                .ok_or_else(|| {
                    TrailApiError::new(
                        "InvalidNextTokenException",
                        400,
                        "The NextToken is not valid for this request",
                    )
                })?,
        ),
    };
    let rows = state
        .audit
        .lookup(&AuditQuery {
            account,
            region: region.to_string(),
            attribute,
            start,
            end,
            before,
            limit: limit + 1,
        })
        .await
        .map_err(meta_error)?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let mut out = json!({ "Events": page.iter().map(event).collect::<Vec<_>>() });
    if more && let Some(last) = page.last() {
        out["NextToken"] = json!(
            state
                .access
                .seal_page_token(&token_scope, &format!("{} {}", last.event_time, last.seq))
        );
    }
    Ok(out)
}

/// One event as LookupEvents shows it.
fn event(r: &AuditRow) -> Value {
    let mut e = json!({
        "EventId": r.event_id,
        "EventName": r.event_name,
        "ReadOnly": r.read_only.to_string(),
        "EventTime": r.event_time as f64 / 1000.0,
        "EventSource": r.event_source,
        "CloudTrailEvent": r.record,
        "Resources": match (&r.resource_type, &r.resource_name) {
            (Some(t), Some(n)) => json!([{ "ResourceType": t, "ResourceName": n }]),
            _ => json!([]),
        },
    });
    if let Some(k) = &r.access_key_id {
        e["AccessKeyId"] = json!(k);
    }
    if let Some(u) = &r.username {
        e["Username"] = json!(u);
    }
    e
}
