//! What every face's request handlers extract: [`AppState`], the handles to
//! the services (registry, access) and the settings a handler needs, and the
//! answers that depend on which host a request addressed (the account it
//! selects, the host name to give back to clients). Faces (`distribution`,
//! `ecr_api`) take it from axum's state; `server` builds it. Also the
//! acceptance of a SigV4-signed AWS JSON request that the smaller JSON faces
//! (`kms_api`, `ssm_api`) share ([`AppState::accept_json_request`]).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::Request;
use serde_json::{Map, Value};

use crate::auth::{Access, AuthError, Caller};
use crate::config::HttpLimits;
use crate::http::budget::BodyBudget;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// What every request handler can reach. Holds handles to shared stores
/// and settings only; no registry state lives here.
pub struct AppState {
    pub registry: Arc<Registry>,
    /// CloudFormation stacks.
    pub stacks: Arc<crate::stacks::Stacks>,
    pub metrics: Arc<Metrics>,
    pub access: Arc<Access>,
    /// The account whose registry the bare host (no `<account>.` prefix) serves.
    pub primary_account: String,
    /// Whether `/v2/` requires a registry token and authorizes every call.
    pub auth_required: bool,
    pub region: String,
    /// Host clients use for the registry; `None` = the request's `Host`.
    pub registry_host: Option<String>,
    /// Memory for request bodies that are read whole.
    pub body_budget: BodyBudget,
    /// Time and size limits of the HTTP layer.
    pub http: HttpLimits,
}

/// The account id when `host` starts with `<12 digits>.`, and the rest.
fn split_account(host: &str) -> Option<(&str, &str)> {
    match host.split_once('.') {
        Some((first, rest)) if first.len() == 12 && first.bytes().all(|b| b.is_ascii_digit()) => {
            Some((first, rest))
        }
        _ => None,
    }
}

impl AppState {
    /// The registry (account) a request to `host` addresses: `<account>.<host>`
    /// selects that account, as ECR's host names do; the bare host is the
    /// primary account.
    pub fn registry_for_host(&self, host: Option<&str>) -> String {
        match split_account(host.unwrap_or("")) {
            Some((account, _)) => account.to_string(),
            None => self.primary_account.clone(),
        }
    }

    /// The registry host name for `account` as clients of a request to
    /// `host` should use it (see [`registry_host`]).
    pub fn registry_host_for(&self, account: &str, host: Option<&str>) -> String {
        registry_host(
            self.registry_host.as_deref(),
            &self.primary_account,
            account,
            host,
        )
    }
}

/// The registry host name of `account`: from `configured` (`registry_host`)
/// or else the request's `host`. Under ECR's own names
/// (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`, and `api.ecr.REGION.amazonaws.com`
/// for the API), every account's is `ACCOUNT.dkr.ecr.REGION.amazonaws.com`,
/// the primary's too, which is what Amazon's credential helper and SDKs
/// recognise; otherwise the primary account's is the bare host and another
/// account's is `ACCOUNT.` before it.
pub fn registry_host(
    configured: Option<&str>,
    primary: &str,
    account: &str,
    host: Option<&str>,
) -> String {
    let given = configured.or(host).unwrap_or("localhost");
    if let Some(domain) = ecr_registry_domain(given) {
        return format!("{account}.{domain}");
    }
    let base = match configured {
        Some(h) => h,
        None => split_account(given).map_or(given, |(_, rest)| rest),
    };
    if account == primary {
        base.to_string()
    } else {
        format!("{account}.{base}")
    }
}

/// `dkr.ecr.REGION.amazonaws.com[.cn][:PORT]` when `host` is one of ECR's
/// names: a registry's (`ACCOUNT.dkr.ecr.…`, or without the account) or the
/// API's (`api.ecr.…`).
fn ecr_registry_domain(host: &str) -> Option<String> {
    let rest = split_account(host).map_or(host, |(_, rest)| rest);
    let (name, port) = match rest.rsplit_once(':') {
        Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (n, Some(p)),
        _ => (rest, None),
    };
    let name = name.to_ascii_lowercase();
    let after = name
        .strip_prefix("dkr.ecr.")
        .or_else(|| name.strip_prefix("api.ecr."))?;
    let region = after
        .strip_suffix(".amazonaws.com")
        .or_else(|| after.strip_suffix(".amazonaws.com.cn"))?;
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return None;
    }
    let suffix = &after[region.len()..];
    Some(match port {
        Some(p) => format!("dkr.ecr.{region}{suffix}:{p}"),
        None => format!("dkr.ecr.{region}{suffix}"),
    })
}

/// An AWS JSON 1.1 request (`POST /` with an `X-Amz-Target`) accepted: its
/// signature checked, its body read and parsed.
pub struct JsonRequest {
    /// The operation: the `X-Amz-Target` after the face's prefix.
    pub op: String,
    pub caller: Arc<Caller>,
    /// The body's members.
    pub input: Map<String, Value>,
    pub source_ip: Option<IpAddr>,
}

/// Why an AWS JSON request was refused before its operation ran.
#[derive(Debug)]
pub enum JsonRequestError {
    Auth(AuthError),
    /// The body is larger than the face's cap, could not be read, or did not
    /// arrive within `api_body_timeout`.
    Body(crate::http::BodyRefused),
    /// The body is not a JSON object.
    NotAnObject,
}

impl JsonRequestError {
    /// The AWS JSON exception for this error: (name, HTTP status, message).
    /// `internal` is the face's own exception for a failure of the store
    /// behind authentication (`KMSInternalException`, `InternalServerError`).
    pub fn exception(&self, internal: &'static str) -> (&'static str, u16, String) {
        match self {
            JsonRequestError::Auth(AuthError::SigV4(s)) => {
                (s.aws_error_name(), s.http_status(), s.to_string())
            }
            JsonRequestError::Auth(AuthError::Meta(m)) => {
                tracing::error!(error = %m, "metadata error while authenticating a request");
                let status = match m {
                    crate::registry::MetaError::Unavailable(_) => 503,
                    _ => 500,
                };
                (internal, status, "An internal error occurred.".into())
            }
            JsonRequestError::Auth(_) => (
                "UnrecognizedClientException",
                400,
                "The security token included in the request is invalid.".into(),
            ),
            JsonRequestError::Body(e @ crate::http::BodyRefused::TooLarge(_)) => {
                ("RequestEntityTooLargeException", 413, e.to_string())
            }
            JsonRequestError::Body(e @ crate::http::BodyRefused::Timeout) => {
                ("RequestTimeoutException", 408, e.to_string())
            }
            JsonRequestError::NotAnObject => (
                "SerializationException",
                400,
                "the request body must be a JSON object".into(),
            ),
        }
    }
}

impl AppState {
    /// Accept an AWS JSON request signed with SigV4 for `service`, whose
    /// target starts with `target_prefix`: the signature's envelope and the
    /// access key are checked before a byte of the body is read, then the
    /// body (at most `cap` bytes, within `api_body_timeout`), then the
    /// signature over it.
    pub async fn accept_json_request(
        &self,
        req: Request,
        service: &str,
        target_prefix: &str,
        cap: usize,
    ) -> Result<JsonRequest, JsonRequestError> {
        let (parts, body) = req.into_parts();
        let pending = self
            .access
            .begin_sigv4_for(&parts.headers, service)
            .await
            .map_err(JsonRequestError::Auth)?;
        let op = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.strip_prefix(target_prefix))
            .map(str::to_string)
            .unwrap_or_default();
        let body = crate::http::read_capped(body, cap, self.http.api_body_timeout)
            .await
            .map_err(JsonRequestError::Body)?;
        let caller = self
            .access
            .finish_sigv4_request(pending, &parts, &body)
            .map_err(JsonRequestError::Auth)?;
        let input = if body.is_empty() {
            Map::new()
        } else {
            match serde_json::from_slice(&body) {
                Ok(Value::Object(m)) => m,
                _ => return Err(JsonRequestError::NotAnObject),
            }
        };
        Ok(JsonRequest {
            op,
            caller,
            input,
            source_ip: crate::http::client_ip(&parts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::registry_host;

    const PRIMARY: &str = "123456789012";
    const OTHER: &str = "222222222222";

    #[test]
    fn registry_hosts_follow_the_request_or_the_setting() {
        let h = |configured, account, host| registry_host(configured, PRIMARY, account, host);
        // The request's host: the bare host is the primary account's.
        assert_eq!(h(None, PRIMARY, Some("10.0.0.5:5000")), "10.0.0.5:5000");
        assert_eq!(
            h(None, OTHER, Some("10.0.0.5:5000")),
            "222222222222.10.0.0.5:5000"
        );
        assert_eq!(
            h(None, PRIMARY, Some("222222222222.reg.example:5000")),
            "reg.example:5000"
        );
        assert_eq!(
            h(Some("reg.example"), OTHER, Some("10.0.0.5:5000")),
            "222222222222.reg.example"
        );
        assert_eq!(h(None, PRIMARY, None), "localhost");
    }

    #[test]
    fn ecr_names_carry_every_account_including_the_primary() {
        let h = |configured, account, host| registry_host(configured, PRIMARY, account, host);
        let api = Some("api.ecr.us-east-1.amazonaws.com");
        assert_eq!(
            h(None, PRIMARY, api),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        );
        assert_eq!(
            h(None, OTHER, api),
            "222222222222.dkr.ecr.us-east-1.amazonaws.com"
        );
        assert_eq!(
            h(
                None,
                OTHER,
                Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com:8443")
            ),
            "222222222222.dkr.ecr.eu-west-1.amazonaws.com:8443"
        );
        assert_eq!(
            h(
                Some("dkr.ecr.cn-north-1.amazonaws.com.cn"),
                PRIMARY,
                Some("10.0.0.5")
            ),
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            h(
                Some("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
                OTHER,
                None
            ),
            "222222222222.dkr.ecr.us-east-1.amazonaws.com"
        );
        // Look-alikes are ordinary hosts.
        assert_eq!(
            h(
                None,
                PRIMARY,
                Some("dkr.ecr.us-east-1.amazonaws.com.evil.example")
            ),
            "dkr.ecr.us-east-1.amazonaws.com.evil.example"
        );
        assert_eq!(
            h(None, PRIMARY, Some("dkr.ecr..amazonaws.com")),
            "dkr.ecr..amazonaws.com"
        );
    }
}
