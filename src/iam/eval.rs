//! Policy evaluation: one policy against a request ([`Policy::evaluate`]) and
//! the whole AWS decision for a request ([`authorize`]).

use std::collections::HashMap;
use std::net::IpAddr;

use super::condition::block_matches;
use super::pattern::{Resolver, action_matches, arn_match, compile};
use super::policy::{
    ActionClause, Effect, Policy, PolicyKind, PrincipalClause, PrincipalSet, ResourceClause,
    Statement, is_account_id,
};
use super::values::format_iso8601;

/// The authenticated caller.
///
/// `arn` is `arn:aws:iam::<acct>:user/<name>`, `arn:aws:iam::<acct>:root`
/// (also `...:role/<name>` and `arn:aws:sts::<acct>:assumed-role/<role>/<session>`
/// are understood). A service principal is represented by its service name
/// without an `arn:` prefix (e.g. `replication.ecr.amazonaws.com`); it only
/// matches `{"Service": ...}` (and `"*"`) principals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub arn: String,
    pub account: String,
    pub user_id: String,
    pub username: Option<String>,
}

fn arn_parts(arn: &str) -> Option<[&str; 6]> {
    let mut it = arn.splitn(6, ':');
    let parts = [
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    ];
    (parts[0] == "arn").then_some(parts)
}

impl Principal {
    /// A service principal (no `arn:` prefix).
    pub fn is_service(&self) -> bool {
        !self.arn.starts_with("arn:")
    }

    /// The account root user (`arn:<partition>:iam::<account>:root`).
    pub fn is_root(&self) -> bool {
        arn_parts(&self.arn)
            .is_some_and(|p| p[2] == "iam" && p[4] == self.account && p[5] == "root")
    }

    /// `aws:PrincipalType`: `Account` (root), `User`, `AssumedRole`,
    /// `FederatedUser`, `Role`; `None` for service principals.
    pub fn principal_type(&self) -> Option<&'static str> {
        let p = arn_parts(&self.arn)?;
        match (p[2], p[5]) {
            ("iam", "root") => Some("Account"),
            ("iam", r) if r.starts_with("user/") => Some("User"),
            ("iam", r) if r.starts_with("role/") => Some("Role"),
            ("sts", r) if r.starts_with("assumed-role/") => Some("AssumedRole"),
            ("sts", r) if r.starts_with("federated-user/") => Some("FederatedUser"),
            _ => None,
        }
    }

    /// For an STS assumed-role session, the ARN of the role
    /// (`arn:<partition>:iam::<acct>:role/<role>`), which is what
    /// `aws:PrincipalArn` reports and what policies name.
    pub fn role_arn(&self) -> Option<String> {
        let p = arn_parts(&self.arn)?;
        let rest = p[5].strip_prefix("assumed-role/")?;
        let role = rest.split('/').next().filter(|r| !r.is_empty())?;
        (p[2] == "sts").then(|| format!("arn:{}:iam::{}:role/{role}", p[1], p[4]))
    }
}

/// Everything evaluation needs to know about one request. Time comes from
/// here; evaluation never reads a clock.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    pub principal: &'a Principal,
    /// `ecr:BatchGetImage`, ...
    pub action: &'a str,
    /// The resource ARN, e.g. `arn:aws:ecr:us-east-1:123456789012:repository/team/app`,
    /// or `*` for actions without a resource (`ecr:GetAuthorizationToken`).
    pub resource: &'a str,
    /// The account that owns `resource`.
    pub resource_account: &'a str,
    pub source_ip: Option<IpAddr>,
    pub secure_transport: bool,
    pub current_time_epoch: i64,
    /// Other condition keys (`ecr:ResourceTag/env`, `aws:RequestTag/x`,
    /// `aws:TagKeys`, ...), looked up case-insensitively. An empty list is
    /// the same as an absent key.
    pub extra: &'a HashMap<String, Vec<String>>,
}

impl RequestContext<'_> {
    /// The values of a condition key (case-insensitive name), or `None` when
    /// the key is not in the request context. Built-in keys:
    /// `aws:SourceIp`, `aws:SecureTransport`, `aws:CurrentTime`,
    /// `aws:EpochTime`, `aws:PrincipalAccount`, `aws:PrincipalArn`,
    /// `aws:username`, `aws:userid`, `aws:PrincipalType`,
    /// `aws:PrincipalIsAWSService`; then `extra`.
    pub fn key_values(&self, key: &str) -> Option<Vec<String>> {
        let p = self.principal;
        let builtin = match key.to_ascii_lowercase().as_str() {
            "aws:sourceip" => self.source_ip.map(|ip| ip.to_string()),
            "aws:securetransport" => Some(self.secure_transport.to_string()),
            "aws:currenttime" => Some(format_iso8601(self.current_time_epoch)),
            "aws:epochtime" => Some(self.current_time_epoch.to_string()),
            "aws:principalaccount" if !p.is_service() && !p.account.is_empty() => {
                Some(p.account.clone())
            }
            "aws:principalarn" if !p.is_service() => Some(p.role_arn().unwrap_or(p.arn.clone())),
            "aws:username" => p.username.clone(),
            "aws:userid" if !p.user_id.is_empty() => Some(p.user_id.clone()),
            "aws:principaltype" => p.principal_type().map(str::to_owned),
            "aws:principalisawsservice" => Some(p.is_service().to_string()),
            _ => None,
        };
        if let Some(v) = builtin {
            return Some(vec![v]);
        }
        self.extra
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    }

    /// The value of a single-valued key, for policy variables.
    fn variable(&self, key: &str) -> Option<String> {
        let mut values = self.key_values(key)?;
        (values.len() == 1).then(|| values.remove(0))
    }
}

/// The result of evaluating policies for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    /// A matching `Deny` statement: nothing can override it.
    ExplicitDeny,
    /// No statement matched (implicit deny).
    NotApplicable,
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// How a resource-policy statement named the caller. Naming only the
/// caller's account delegates to the account's identity policies rather than
/// granting the caller directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Grant {
    Account,
    Direct,
}

#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    deny: bool,
    allow: Option<Grant>,
}

impl Outcome {
    fn merge(self, other: Outcome) -> Outcome {
        Outcome {
            deny: self.deny || other.deny,
            allow: self.allow.max(other.allow),
        }
    }
}

impl Policy {
    /// Evaluates this policy alone. `ExplicitDeny` if any applicable statement
    /// denies, else `Allow` if any applicable statement allows, else
    /// `NotApplicable`. For `PolicyKind::Identity` the principal is the one
    /// the policy is attached to (no principal check); for
    /// `PolicyKind::Resource` a statement applies only when its
    /// `Principal`/`NotPrincipal` covers the caller (naming the caller's
    /// account counts here).
    pub fn evaluate(&self, ctx: &RequestContext<'_>, kind: PolicyKind) -> Decision {
        let o = self.outcome(ctx, kind);
        if o.deny {
            Decision::ExplicitDeny
        } else if o.allow.is_some() {
            Decision::Allow
        } else {
            Decision::NotApplicable
        }
    }

    fn outcome(&self, ctx: &RequestContext<'_>, kind: PolicyKind) -> Outcome {
        let resolve = |key: &str| ctx.variable(key);
        let vars: Option<Resolver<'_>> = if self.variables_enabled() {
            Some(&resolve)
        } else {
            None
        };
        let mut out = Outcome::default();
        for st in &self.statements {
            let Some(grant) = statement_applies(st, ctx, kind, vars) else {
                continue;
            };
            match st.effect {
                Effect::Deny => {
                    out.deny = true;
                    return out;
                }
                Effect::Allow => out.allow = out.allow.max(Some(grant)),
            }
        }
        out
    }
}

fn statement_applies(
    st: &Statement,
    ctx: &RequestContext<'_>,
    kind: PolicyKind,
    vars: Option<Resolver<'_>>,
) -> Option<Grant> {
    let action_hit = |list: &[String]| list.iter().any(|p| action_matches(p, ctx.action));
    let action_ok = match &st.action {
        ActionClause::Action(list) => action_hit(list),
        ActionClause::NotAction(list) => !action_hit(list),
    };
    if !action_ok {
        return None;
    }
    let resource_hit = |list: &[String]| {
        list.iter()
            .any(|p| compile(p, true, vars).is_some_and(|t| arn_match(&t, ctx.resource)))
    };
    let resource_ok = match &st.resource {
        Some(ResourceClause::Resource(list)) => resource_hit(list),
        Some(ResourceClause::NotResource(list)) => !resource_hit(list),
        // Omitted: the resource the (resource) policy is attached to.
        None => kind != PolicyKind::Identity,
    };
    if !resource_ok {
        return None;
    }
    let grant = match kind {
        PolicyKind::Identity => Grant::Direct,
        PolicyKind::Resource | PolicyKind::Key => match &st.principal {
            Some(PrincipalClause::Principal(set)) => principal_match(set, ctx.principal)?,
            Some(PrincipalClause::NotPrincipal(set)) => match principal_match(set, ctx.principal) {
                Some(_) => return None,
                None => Grant::Direct,
            },
            None => return None,
        },
    };
    st.conditions
        .iter()
        .all(|b| block_matches(b, ctx, vars))
        .then_some(grant)
}

/// Whether a principal set names `p`, and how.
fn principal_match(set: &PrincipalSet, p: &Principal) -> Option<Grant> {
    let (aws, service) = match set {
        PrincipalSet::Any => return Some(Grant::Direct),
        PrincipalSet::Named { aws, service } => (aws, service),
    };
    if aws.iter().any(|a| a == "*") {
        return Some(Grant::Direct);
    }
    if p.is_service() {
        return service
            .iter()
            .any(|s| s == "*" || s.eq_ignore_ascii_case(&p.arn))
            .then_some(Grant::Direct);
    }
    let role_arn = p.role_arn();
    let mut best = None;
    for entry in aws {
        let account = if is_account_id(entry) {
            Some(entry.as_str())
        } else {
            arn_parts(entry).and_then(|a| (a[2] == "iam" && a[5] == "root").then_some(a[4]))
        };
        let grant = match account {
            Some(acct) if acct == p.account => {
                if p.is_root() {
                    Some(Grant::Direct)
                } else {
                    Some(Grant::Account)
                }
            }
            Some(_) => None,
            None => (*entry == p.arn || role_arn.as_deref() == Some(entry.as_str()))
                .then_some(Grant::Direct),
        };
        best = best.max(grant);
    }
    best
}

/// AWS's decision for one request.
///
/// 1. An explicit `Deny` in any identity or resource policy → `ExplicitDeny`.
/// 2. The identity side allows when an identity policy allows, or when the
///    caller is an account root user (root is implicitly allowed everything
///    its account can do; only explicit Deny stops it).
/// 3. Same-account request (`principal.account == resource_account`):
///    `Allow` when the identity side allows, or when a resource policy
///    allows naming the caller directly (its ARN, `"*"`, or `NotPrincipal`).
///    A resource policy that names only the account (`123456789012` or
///    `arn:aws:iam::123456789012:root`) delegates to the account's identity
///    policies, as in AWS, and does not by itself allow an IAM user.
/// 4. Cross-account request: `Allow` only when the identity side allows AND
///    a resource policy allows (naming the caller or the caller's account).
/// 5. Service principals: a resource-policy allow suffices.
/// 6. Otherwise `NotApplicable` (implicit deny).
pub fn authorize<'p>(
    identity_policies: &[Policy],
    resource_policies: impl IntoIterator<Item = &'p Policy>,
    ctx: &RequestContext<'_>,
) -> Decision {
    let identity = identity_outcome(identity_policies, ctx);
    let resource = resource_policies
        .into_iter()
        .map(|p| p.outcome(ctx, PolicyKind::Resource))
        .fold(Outcome::default(), Outcome::merge);
    if identity.deny || resource.deny {
        return Decision::ExplicitDeny;
    }
    let p = ctx.principal;
    let allowed = if p.is_service() {
        resource.allow.is_some()
    } else {
        let identity_allows = identity.allow.is_some() || p.is_root();
        if p.account == ctx.resource_account {
            identity_allows || resource.allow == Some(Grant::Direct)
        } else {
            identity_allows && resource.allow.is_some()
        }
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::NotApplicable
    }
}

fn identity_outcome(identity_policies: &[Policy], ctx: &RequestContext<'_>) -> Outcome {
    identity_policies
        .iter()
        .map(|p| p.outcome(ctx, PolicyKind::Identity))
        .fold(Outcome::default(), Outcome::merge)
}

/// The decision for a request on a KMS key, whose key policy is the primary
/// authority (KMS's rule, not IAM's): an explicit `Deny` in the key policy or
/// an identity policy wins; a key policy statement that names the caller
/// itself allows; one that names only the caller's account (the default
/// policy's `arn:aws:iam::<account>:root`) delegates to IAM: the identity
/// policies (or being the account's root) decide. Without such a statement
/// identity policies alone allow nothing, even to the root.
pub fn authorize_key(
    identity_policies: &[Policy],
    key_policy: &Policy,
    ctx: &RequestContext<'_>,
) -> Decision {
    let identity = identity_outcome(identity_policies, ctx);
    let key = key_policy.outcome(ctx, PolicyKind::Key);
    if identity.deny || key.deny {
        return Decision::ExplicitDeny;
    }
    let p = ctx.principal;
    let identity_allows =
        identity.allow.is_some() || (p.is_root() && p.account == ctx.resource_account);
    let allowed = match key.allow {
        Some(Grant::Direct) => true,
        Some(Grant::Account) => {
            if p.account == ctx.resource_account {
                identity_allows
            } else {
                identity.allow.is_some() || p.is_root()
            }
        }
        None => false,
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::NotApplicable
    }
}
