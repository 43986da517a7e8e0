//! What every face's request handlers extract: [`AppState`], the handles to
//! the services (registry, access) and the settings a handler needs, and the
//! answers that depend on which host a request addressed (the account it
//! selects, the host name to give back to clients). Faces (`distribution`,
//! `ecr_api`) take it from axum's state; `server` builds it.

use std::sync::Arc;

use crate::auth::Access;
use crate::config::HttpLimits;
use crate::http::budget::BodyBudget;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// What every request handler can reach. Holds handles to shared stores
/// and settings only; no registry state lives here.
pub struct AppState {
    pub registry: Arc<Registry>,
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
    /// `host` should use it.
    pub fn registry_host_for(&self, account: &str, host: Option<&str>) -> String {
        let base = match &self.registry_host {
            Some(h) => h.clone(),
            None => {
                let host = host.unwrap_or("localhost");
                split_account(host)
                    .map_or(host, |(_, rest)| rest)
                    .to_string()
            }
        };
        if account == self.primary_account {
            base
        } else {
            format!("{account}.{base}")
        }
    }
}
