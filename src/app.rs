//! What every face's request handlers extract: [`AppState`], the handles to
//! the services (registry, access) and the settings a handler needs, and the
//! answers that depend on which host a request addressed (the account it
//! selects, the host name to give back to clients). Faces (`distribution`,
//! `ecr_api`) take it from axum's state; `server` builds it.

use std::sync::Arc;

use crate::auth::{Access, AuthError, Caller};
use crate::config::HttpLimits;
use crate::http::BodyError;
use crate::http::budget::{BodyBudget, BudgetError, Reservation};
use crate::metrics::Metrics;
use crate::registry::Registry;

/// What every request handler can reach. Holds handles to shared stores
/// and settings only; no registry state lives here.
pub struct AppState {
    pub registry: Arc<Registry>,
    /// The audit log's writer and lookups.
    pub audit: Arc<crate::audit_trail::AuditTrail>,
    /// CloudFormation stacks.
    pub stacks: Arc<crate::stacks::Stacks>,
    /// Replication's deliveries (the regions it reaches).
    pub replicator: Arc<crate::replication::Replicator>,
    /// The pull-through cache: its rules and the `/v2/` miss path.
    pub pull_through: Arc<crate::pull_through::PullThrough>,
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

/// A SigV4-signed API request taken in ([`AppState::take_signed`]): who
/// signed it, its body, and the body's room in the memory budget (released
/// when this is dropped).
pub struct SignedRequest {
    pub caller: Arc<Caller>,
    /// The region it is signed for (for the ECR API, the region it addresses).
    pub region: String,
    pub body: Vec<u8>,
    pub reservation: Reservation,
}

/// Why a signed API request was not taken in; each face answers it in its
/// protocol's words.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// `Content-Length` says more than the operation accepts: refused unread.
    #[error("the request body is {declared} bytes; at most {cap} are accepted")]
    Declared { declared: usize, cap: usize },
    /// No room in the body memory budget (for this client, or at all).
    #[error("{0}")]
    Budget(#[from] BudgetError),
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// How an AWS JSON 1.1 face (KMS, SSM) answers a request body it did not
/// take in: the exception's name, HTTP status and message, and the limit it
/// hit (for `berth_limited_total`), if any.
pub struct JsonRefusal {
    pub name: &'static str,
    pub status: u16,
    pub message: String,
    pub limit: Option<&'static str>,
}

impl IntakeError {
    /// The refusal, in AWS JSON's words, of a request that did not
    /// authenticate or whose body is over `cap`, late, torn or without room
    /// in the memory budget; a metadata store failure is handed back for the
    /// face to word (each service names its internal error).
    pub fn json_refusal(self, cap: usize) -> Result<JsonRefusal, crate::registry::MetaError> {
        let r = |name, status, message: String, limit| JsonRefusal {
            name,
            status,
            message,
            limit,
        };
        Ok(match self {
            IntakeError::Auth(AuthError::Meta(m)) => return Err(m),
            IntakeError::Auth(AuthError::SigV4(s)) => {
                r(s.aws_error_name(), s.http_status(), s.to_string(), None)
            }
            IntakeError::Auth(_) => r(
                "UnrecognizedClientException",
                400,
                "The security token included in the request is invalid.".into(),
                None,
            ),
            IntakeError::Declared { .. } | IntakeError::Body(BodyError::TooLarge(_)) => r(
                "RequestEntityTooLargeException",
                413,
                format!("The request body is larger than {cap} bytes"),
                Some("body_size"),
            ),
            IntakeError::Body(BodyError::TimedOut(_)) => r(
                "RequestTimeoutException",
                408,
                "The request body did not arrive in time".into(),
                Some("api_body_timeout"),
            ),
            IntakeError::Budget(b) => r(
                "ThrottlingException",
                400,
                format!("Rate exceeded: {b}"),
                Some("body_memory"),
            ),
            IntakeError::Body(b @ BodyError::Broken(_)) => {
                r("SerializationException", 400, b.to_string(), None)
            }
        })
    }
}

/// The region an ECR-style host name names (`[ACCOUNT.]dkr.ecr.REGION.DOMAIN`
/// or `api.ecr.REGION.DOMAIN`).
pub fn host_region(host: &str) -> Option<String> {
    let domain = ecr_registry_domain(host)?;
    let region = domain.strip_prefix("dkr.ecr.")?.split('.').next()?;
    Some(region.to_string())
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
    /// Take in a SigV4-signed API request for `service` (`ecr`, `kms`,
    /// `sts`, …): the signature's envelope and key are checked before a byte
    /// of the body is read ([`Access::begin_sigv4_for`]); a declared length
    /// over `cap` is refused unread; the body is then read within its room in
    /// the body memory budget, at most `cap` bytes within `api_body_timeout`;
    /// last, the signature over it is verified.
    pub async fn take_signed(
        &self,
        parts: &axum::http::request::Parts,
        body: axum::body::Body,
        service: &str,
        cap: usize,
    ) -> Result<SignedRequest, IntakeError> {
        let pending = self.access.begin_sigv4_for(&parts.headers, service).await?;
        let region = pending.region().to_string();
        let declared = crate::http::content_length(&parts.headers);
        if let Some(n) = declared.filter(|n| *n > cap) {
            return Err(IntakeError::Declared { declared: n, cap });
        }
        let client_ip = crate::http::client_ip(parts)
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let reservation = self
            .body_budget
            .reserve(client_ip, declared.unwrap_or(cap))
            .await?;
        let body = crate::http::read_body(body, declared, cap, self.http.api_body_timeout).await?;
        let caller = self.access.finish_sigv4(
            pending,
            parts.method.as_str(),
            &parts.uri,
            &parts.headers,
            &body,
        )?;
        Ok(SignedRequest {
            caller,
            body,
            reservation,
            region,
        })
    }

    /// Begin the audit event of a signed call of `source`'s operation `op`
    /// (KMS, SSM, STS, CloudFormation, CloudTrail) in `scope`.
    pub fn audit_call(
        &self,
        scope: &crate::audit::Scope,
        parts: &axum::http::request::Parts,
        source: &'static str,
        op: &str,
        signed: &SignedRequest,
        params: Option<&serde_json::Value>,
    ) {
        let caller = &signed.caller;
        let mut e = crate::audit_trail::request_event(
            parts,
            source,
            op,
            &signed.region,
            &caller.principal.account,
            caller.audit_identity(),
        );
        e.read_only = crate::audit_trail::is_read_only(op)
            || (source == crate::audit::KMS
                && matches!(
                    op,
                    "Encrypt" | "Decrypt" | "ReEncrypt" | "GenerateRandom" | "Sign" | "Verify"
                )
                || op.starts_with("GenerateDataKey"));
        e.request_parameters = params.and_then(crate::audit_trail::redacted);
        self.audit.begin(scope, e);
    }

    /// The registry (account) a request to `host` addresses: `<account>.<host>`
    /// selects that account, as ECR's host names do; the bare host is the
    /// primary account.
    pub fn registry_for_host(&self, host: Option<&str>) -> String {
        match split_account(host.unwrap_or("")) {
            Some((account, _)) => account.to_string(),
            None => self.primary_account.clone(),
        }
    }

    /// The registry a `/v2/` request to `host` addresses, as the stores key
    /// it: the account of [`AppState::registry_for_host`] in the region an
    /// ECR-style host name names (a region this deployment serves), else
    /// in the home region.
    pub fn registry_key_for_host(&self, host: Option<&str>) -> String {
        let account = self.registry_for_host(host);
        let region = host
            .and_then(host_region)
            .filter(|r| self.access.serves(r))
            .unwrap_or_else(|| self.region.clone());
        self.access.registry_key(&account, &region)
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

/// `dkr.ecr.REGION.DOMAIN[:PORT]` when `host` is named as ECR names its
/// hosts (`amazonaws.com`, or a site's own domain): a registry's
/// (`ACCOUNT.dkr.ecr.…`, or without the account) or the API's (`api.ecr.…`).
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
    // `REGION.DOMAIN`: amazonaws.com, or a site's own domain.
    let (region, domain) = after.split_once('.')?;
    if domain.is_empty() {
        return None;
    }
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
        // ECR's naming under a site's own domain is named the same way.
        assert_eq!(
            h(
                None,
                OTHER,
                Some("dkr.ecr.eu-west-1.registry.example.com:5000")
            ),
            "222222222222.dkr.ecr.eu-west-1.registry.example.com:5000"
        );
        // Without a region, or a domain, it is an ordinary host.
        assert_eq!(
            h(None, PRIMARY, Some("dkr.ecr..amazonaws.com")),
            "dkr.ecr..amazonaws.com"
        );
        assert_eq!(
            h(None, PRIMARY, Some("dkr.ecr.us-east-1")),
            "dkr.ecr.us-east-1"
        );
    }

    #[test]
    fn ecr_style_host_names_name_their_region() {
        use super::host_region;
        let r = |h| host_region(h);
        assert_eq!(
            r("123456789012.dkr.ecr.eu-west-1.registry.example.com:5000").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            r("dkr.ecr.us-west-2.amazonaws.com").as_deref(),
            Some("us-west-2")
        );
        assert_eq!(
            r("api.ecr.ap-south-1.example.com").as_deref(),
            Some("ap-south-1")
        );
        assert_eq!(r("127.0.0.1:5000"), None);
        assert_eq!(r("123456789012.localhost:5000"), None);
        assert_eq!(r("dkr.ecr.EU_WEST.example.com"), None);
    }
}
