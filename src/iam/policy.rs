//! The IAM policy document model and its parser/validator.
//!
//! [`Policy::parse`] reads a JSON policy document (identity or resource
//! policy), checks the grammar and returns the typed model. The model
//! serializes back to canonical IAM JSON with `serde_json::to_string`.
//! Evaluation lives in [`super::eval`].

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::values::{parse_cidr, parse_date_millis, parse_number};

/// Which kind of policy a document is, which changes the grammar and the
/// evaluation: identity policies are attached to a principal and have no
/// `Principal`; resource policies (repository policy, registry policy) are
/// attached to a resource and must name who they apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    Identity,
    Resource,
    /// A KMS key policy: a resource policy whose actions are `kms:` actions.
    Key,
}

/// The policy language version. Only `2012-10-17` enables policy variables
/// (`${aws:username}`); `2008-10-17`, and an absent `Version`, treat them as
/// literal text, as IAM does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PolicyVersion {
    #[serde(rename = "2012-10-17")]
    V2012_10_17,
    #[serde(rename = "2008-10-17")]
    V2008_10_17,
}

impl PolicyVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyVersion::V2012_10_17 => "2012-10-17",
            PolicyVersion::V2008_10_17 => "2008-10-17",
        }
    }
}

/// A parsed, validated policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    #[serde(rename = "Version", skip_serializing_if = "Option::is_none")]
    pub version: Option<PolicyVersion>,
    #[serde(rename = "Id", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "Statement")]
    pub statements: Vec<Statement>,
}

impl Policy {
    /// Whether `${...}` policy variables are substituted (Version 2012-10-17).
    pub fn variables_enabled(&self) -> bool {
        self.version == Some(PolicyVersion::V2012_10_17)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// One statement. Exactly one of `Action`/`NotAction` is always present;
/// `principal` and `resource` are optional according to the policy kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principal: Option<PrincipalClause>,
    pub action: ActionClause,
    /// `None` only in resource policies: the resource the policy is attached to.
    pub resource: Option<ResourceClause>,
    /// All blocks (and every key inside each block) must hold.
    pub conditions: Vec<ConditionBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalClause {
    Principal(PrincipalSet),
    NotPrincipal(PrincipalSet),
}

/// `"*"` or `{"AWS": ..., "Service": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalSet {
    /// The bare string `"*"`: everyone.
    Any,
    /// `AWS` entries: `"*"`, an account id, an account root ARN, or an IAM
    /// user/role (or STS assumed-role) ARN. `Service` entries: service
    /// principal names such as `replication.ecr.amazonaws.com`.
    Named {
        aws: Vec<String>,
        service: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionClause {
    Action(Vec<String>),
    NotAction(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceClause {
    Resource(Vec<String>),
    NotResource(Vec<String>),
}

/// One `"Operator": { "key": values, ... }` entry of a `Condition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionBlock {
    pub operator: ConditionOperator,
    pub entries: Vec<ConditionEntry>,
}

/// One `"key": value-or-values` entry; the values are ORed. Numbers and
/// booleans in the JSON are kept in their textual form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionEntry {
    pub key: String,
    pub values: Vec<String>,
}

/// A full condition operator: optional set qualifier, base operator and the
/// optional `IfExists` suffix, e.g. `ForAnyValue:StringLikeIfExists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConditionOperator {
    pub qualifier: Option<SetQualifier>,
    pub base: BaseOperator,
    pub if_exists: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetQualifier {
    ForAnyValue,
    ForAllValues,
}

macro_rules! base_operators {
    ($($name:ident),* $(,)?) => {
        /// The base condition operators supported.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum BaseOperator { $($name),* }

        impl BaseOperator {
            pub const ALL: &'static [BaseOperator] = &[$(BaseOperator::$name),*];

            pub fn name(self) -> &'static str {
                match self { $(BaseOperator::$name => stringify!($name)),* }
            }
        }
    };
}

base_operators!(
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Null,
);

impl BaseOperator {
    /// Negated operators are true when the key is absent, and are evaluated
    /// as "no request value matches any policy value".
    pub fn is_negated(self) -> bool {
        matches!(
            self,
            BaseOperator::StringNotEquals
                | BaseOperator::StringNotEqualsIgnoreCase
                | BaseOperator::StringNotLike
                | BaseOperator::NumericNotEquals
                | BaseOperator::DateNotEquals
                | BaseOperator::NotIpAddress
                | BaseOperator::ArnNotEquals
                | BaseOperator::ArnNotLike
        )
    }
}

impl ConditionOperator {
    /// Parses an operator name, case-insensitively
    /// (`ForAllValues:StringLikeIfExists`, `DateLessThan`, ...).
    pub fn parse(text: &str) -> Option<ConditionOperator> {
        let (qualifier, rest) = match text.split_once(':') {
            Some((q, rest)) if q.eq_ignore_ascii_case("ForAnyValue") => {
                (Some(SetQualifier::ForAnyValue), rest)
            }
            Some((q, rest)) if q.eq_ignore_ascii_case("ForAllValues") => {
                (Some(SetQualifier::ForAllValues), rest)
            }
            Some(_) => return None,
            None => (None, text),
        };
        let find = |name: &str| {
            BaseOperator::ALL
                .iter()
                .copied()
                .find(|b| b.name().eq_ignore_ascii_case(name))
        };
        let (base, if_exists) = match find(rest) {
            Some(b) => (b, false),
            None => {
                let cut = rest.len().checked_sub("IfExists".len())?;
                let (stem, suffix) = (rest.get(..cut)?, rest.get(cut..)?);
                if !suffix.eq_ignore_ascii_case("IfExists") {
                    return None;
                }
                (find(stem)?, true)
            }
        };
        if base == BaseOperator::Null && (qualifier.is_some() || if_exists) {
            return None;
        }
        Some(ConditionOperator {
            qualifier,
            base,
            if_exists,
        })
    }
}

impl fmt::Display for ConditionOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.qualifier {
            Some(SetQualifier::ForAnyValue) => f.write_str("ForAnyValue:")?,
            Some(SetQualifier::ForAllValues) => f.write_str("ForAllValues:")?,
            None => {}
        }
        f.write_str(self.base.name())?;
        if self.if_exists {
            f.write_str("IfExists")?;
        }
        Ok(())
    }
}

/// Why a policy document was rejected. `Display` gives the detail; the ECR
/// layer wraps it into its `InvalidParameterException` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not parseable JSON (including duplicate object keys).
    #[error("policy is not valid JSON: {0}")]
    Json(String),
    /// A problem with the document as a whole.
    #[error("policy document: {0}")]
    Document(String),
    /// A problem inside one statement (`index` is 0-based).
    #[error("statement {index}{}: {message}", sid_suffix(.sid))]
    Statement {
        index: usize,
        sid: Option<String>,
        message: String,
    },
}

fn sid_suffix(sid: &Option<String>) -> String {
    match sid {
        Some(s) => format!(" (Sid \"{s}\")"),
        None => String::new(),
    }
}

impl Policy {
    /// Parses and validates a policy document of the given kind.
    ///
    /// Rules: top-level keys are `Version` (`2012-10-17`/`2008-10-17`),
    /// `Id`, `Statement` (object or non-empty array). Statements need
    /// `Effect` and exactly one of `Action`/`NotAction`; identity policies
    /// forbid `Principal`/`NotPrincipal` and need `Resource`/`NotResource`;
    /// resource policies need `Principal`/`NotPrincipal`, may omit the
    /// resource, and may only name ECR actions (see
    /// [`super::is_known_ecr_action`]). Unknown keys, duplicate JSON keys,
    /// unknown condition operators and ill-typed condition values are errors.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
        let doc: Json = serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
        let Json::Object(top) = doc else {
            return Err(PolicyError::Document(
                "the policy must be a JSON object".into(),
            ));
        };
        let mut version = None;
        let mut id = None;
        let mut statement = None;
        for (key, value) in top {
            match key.as_str() {
                "Version" => {
                    version = Some(match &value {
                        Json::String(s) if s == "2012-10-17" => PolicyVersion::V2012_10_17,
                        Json::String(s) if s == "2008-10-17" => PolicyVersion::V2008_10_17,
                        other => {
                            return Err(PolicyError::Document(format!(
                                "Version must be \"2012-10-17\" or \"2008-10-17\", got {}",
                                other.describe()
                            )));
                        }
                    })
                }
                "Id" => match value {
                    Json::String(s) => id = Some(s),
                    other => {
                        return Err(PolicyError::Document(format!(
                            "Id must be a string, got {}",
                            other.describe()
                        )));
                    }
                },
                "Statement" => statement = Some(value),
                other => {
                    return Err(PolicyError::Document(format!(
                        "unknown top-level key \"{other}\" (expected Version, Id, Statement)"
                    )));
                }
            }
        }
        let raw_statements = match statement {
            None => return Err(PolicyError::Document("missing Statement".into())),
            Some(Json::Object(o)) => vec![Json::Object(o)],
            Some(Json::Array(a)) if a.is_empty() => {
                return Err(PolicyError::Document("Statement is empty".into()));
            }
            Some(Json::Array(a)) => a,
            Some(other) => {
                return Err(PolicyError::Document(format!(
                    "Statement must be an object or an array of objects, got {}",
                    other.describe()
                )));
            }
        };
        let mut statements = Vec::with_capacity(raw_statements.len());
        let mut sids = HashSet::new();
        for (index, raw) in raw_statements.into_iter().enumerate() {
            let st = parse_statement(index, raw, kind)?;
            if kind == PolicyKind::Identity
                && let Some(sid) = &st.sid
                && !sids.insert(sid.clone())
            {
                return Err(PolicyError::Statement {
                    index,
                    sid: st.sid.clone(),
                    message: "duplicate Sid (Sids must be unique in an identity policy)".into(),
                });
            }
            statements.push(st);
        }
        Ok(Policy {
            version,
            id,
            statements,
        })
    }
}

struct Loc {
    index: usize,
    sid: Option<String>,
}

impl Loc {
    fn err(&self, message: impl Into<String>) -> PolicyError {
        PolicyError::Statement {
            index: self.index,
            sid: self.sid.clone(),
            message: message.into(),
        }
    }
}

fn parse_statement(index: usize, raw: Json, kind: PolicyKind) -> Result<Statement, PolicyError> {
    let mut loc = Loc { index, sid: None };
    let Json::Object(fields) = raw else {
        return Err(loc.err(format!(
            "a statement must be a JSON object, got {}",
            raw.describe()
        )));
    };
    // Find the Sid first so every later error names it.
    for (k, v) in &fields {
        if k == "Sid"
            && let Json::String(s) = v
        {
            loc.sid = Some(s.clone());
        }
    }
    let mut effect = None;
    let mut principal = None;
    let mut action = None;
    let mut resource = None;
    let mut conditions = Vec::new();
    let mut sid = None;
    for (key, value) in fields {
        match key.as_str() {
            "Sid" => match value {
                Json::String(s) => sid = Some(s),
                other => {
                    return Err(loc.err(format!("Sid must be a string, got {}", other.describe())));
                }
            },
            "Effect" => {
                effect = Some(match &value {
                    Json::String(s) if s == "Allow" => Effect::Allow,
                    Json::String(s) if s == "Deny" => Effect::Deny,
                    other => {
                        return Err(loc.err(format!(
                            "Effect must be \"Allow\" or \"Deny\", got {}",
                            other.describe()
                        )));
                    }
                })
            }
            "Principal" | "NotPrincipal" => {
                if principal.is_some() {
                    return Err(loc.err("has both Principal and NotPrincipal"));
                }
                let set = parse_principal(&loc, &key, value)?;
                principal = Some(if key == "Principal" {
                    PrincipalClause::Principal(set)
                } else {
                    PrincipalClause::NotPrincipal(set)
                });
            }
            "Action" | "NotAction" => {
                if action.is_some() {
                    return Err(loc.err("has both Action and NotAction; exactly one is allowed"));
                }
                let list = string_list(&loc, &key, value)?;
                for a in &list {
                    validate_action(&loc, &key, a, kind)?;
                }
                action = Some(if key == "Action" {
                    ActionClause::Action(list)
                } else {
                    ActionClause::NotAction(list)
                });
            }
            "Resource" | "NotResource" => {
                if resource.is_some() {
                    return Err(loc.err("has both Resource and NotResource"));
                }
                let list = string_list(&loc, &key, value)?;
                for r in &list {
                    if r != "*" && !r.starts_with("arn:") {
                        return Err(
                            loc.err(format!("{key} \"{r}\" must be \"*\" or an ARN (arn:...)"))
                        );
                    }
                }
                resource = Some(if key == "Resource" {
                    ResourceClause::Resource(list)
                } else {
                    ResourceClause::NotResource(list)
                });
            }
            "Condition" => conditions = parse_conditions(&loc, value)?,
            other => {
                return Err(loc.err(format!(
                    "unknown key \"{other}\" (expected Sid, Effect, Principal, NotPrincipal, \
                     Action, NotAction, Resource, NotResource, Condition)"
                )));
            }
        }
    }
    let Some(effect) = effect else {
        return Err(loc.err("missing Effect"));
    };
    let Some(action) = action else {
        return Err(loc.err("missing Action or NotAction; exactly one is required"));
    };
    match kind {
        PolicyKind::Identity => {
            if let Some(p) = &principal {
                let name = match p {
                    PrincipalClause::Principal(_) => "Principal",
                    PrincipalClause::NotPrincipal(_) => "NotPrincipal",
                };
                return Err(loc.err(format!("{name} is not allowed in an identity policy")));
            }
            if resource.is_none() {
                return Err(loc.err("missing Resource or NotResource"));
            }
        }
        PolicyKind::Resource | PolicyKind::Key => {
            if principal.is_none() {
                return Err(
                    loc.err("missing Principal or NotPrincipal (required in a resource policy)")
                );
            }
        }
    }
    Ok(Statement {
        sid,
        effect,
        principal,
        action,
        resource,
        conditions,
    })
}

fn string_list(loc: &Loc, key: &str, value: Json) -> Result<Vec<String>, PolicyError> {
    let list = match value {
        Json::String(s) => vec![s],
        Json::Array(items) => {
            if items.is_empty() {
                return Err(loc.err(format!("{key} is an empty list")));
            }
            items
                .into_iter()
                .map(|item| match item {
                    Json::String(s) => Ok(s),
                    other => Err(loc.err(format!(
                        "{key} entries must be strings, got {}",
                        other.describe()
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        other => {
            return Err(loc.err(format!(
                "{key} must be a string or a list of strings, got {}",
                other.describe()
            )));
        }
    };
    if list.iter().any(|s| s.is_empty()) {
        return Err(loc.err(format!("{key} contains an empty string")));
    }
    Ok(list)
}

fn validate_action(
    loc: &Loc,
    key: &str,
    action: &str,
    kind: PolicyKind,
) -> Result<(), PolicyError> {
    let well_formed = action == "*"
        || action.split_once(':').is_some_and(|(service, name)| {
            !service.is_empty()
                && !name.is_empty()
                && service
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '*' | '?'))
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '?'))
        });
    if !well_formed {
        return Err(loc.err(format!(
            "{key} \"{action}\" is not of the form \"service:Action\" or \"*\""
        )));
    }
    if kind == PolicyKind::Resource && !super::is_known_ecr_action(action) {
        return Err(loc.err(format!(
            "{key} \"{action}\" is not a known ECR action (ecr:<Operation>, wildcards allowed)"
        )));
    }
    if kind == PolicyKind::Key
        && !(action == "*" || action.to_ascii_lowercase().starts_with("kms:"))
    {
        return Err(loc.err(format!(
            "{key} \"{action}\" is not a KMS action (kms:<Operation>, wildcards allowed)"
        )));
    }
    Ok(())
}

fn parse_principal(loc: &Loc, key: &str, value: Json) -> Result<PrincipalSet, PolicyError> {
    match value {
        Json::String(s) if s == "*" => Ok(PrincipalSet::Any),
        Json::Object(entries) => {
            if entries.is_empty() {
                return Err(loc.err(format!("{key} is an empty object")));
            }
            let mut aws = Vec::new();
            let mut service = Vec::new();
            for (ptype, v) in entries {
                let list = string_list(loc, &format!("{key}.{ptype}"), v)?;
                match ptype.as_str() {
                    "AWS" => {
                        for p in &list {
                            if !valid_aws_principal(p) {
                                return Err(loc.err(format!(
                                    "invalid AWS principal \"{p}\" in {key} (expected \"*\", a \
                                     12-digit account id, or an IAM ARN without wildcards)"
                                )));
                            }
                        }
                        aws = list;
                    }
                    "Service" => {
                        for p in &list {
                            let ok = p == "*"
                                || (!p.contains(['*', '?']) && !p.contains(char::is_whitespace));
                            if !ok {
                                return Err(
                                    loc.err(format!("invalid Service principal \"{p}\" in {key}"))
                                );
                            }
                        }
                        service = list;
                    }
                    other => {
                        return Err(loc.err(format!(
                            "unsupported principal type \"{other}\" in {key} (expected AWS or Service)"
                        )));
                    }
                }
            }
            Ok(PrincipalSet::Named { aws, service })
        }
        other => Err(loc.err(format!(
            "{key} must be \"*\" or an object like {{\"AWS\": ...}}, got {}",
            other.describe()
        ))),
    }
}

pub(crate) fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn valid_aws_principal(p: &str) -> bool {
    if p == "*" || is_account_id(p) {
        return true;
    }
    if p.contains(['*', '?']) {
        return false;
    }
    let parts: Vec<&str> = p.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && (parts[2] == "iam" || parts[2] == "sts")
        && parts[3].is_empty()
        && is_account_id(parts[4])
        && !parts[5].is_empty()
}

fn parse_conditions(loc: &Loc, value: Json) -> Result<Vec<ConditionBlock>, PolicyError> {
    let Json::Object(ops) = value else {
        return Err(loc.err(format!(
            "Condition must be an object, got {}",
            value.describe()
        )));
    };
    let mut blocks = Vec::with_capacity(ops.len());
    for (op_name, body) in ops {
        let Some(operator) = ConditionOperator::parse(&op_name) else {
            return Err(loc.err(format!("unknown condition operator \"{op_name}\"")));
        };
        let Json::Object(keys) = body else {
            return Err(loc.err(format!(
                "Condition operator \"{op_name}\" must map to an object of keys, got {}",
                body.describe()
            )));
        };
        if keys.is_empty() {
            return Err(loc.err(format!("Condition operator \"{op_name}\" has no keys")));
        }
        let mut entries = Vec::with_capacity(keys.len());
        for (cond_key, v) in keys {
            let valid_key = cond_key
                .split_once(':')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty());
            if !valid_key {
                return Err(loc.err(format!(
                    "condition key \"{cond_key}\" must look like \"prefix:name\""
                )));
            }
            let values = condition_values(loc, &cond_key, v)?;
            for val in &values {
                check_condition_value(operator.base, val).map_err(|what| {
                    loc.err(format!(
                        "{op_name} value \"{val}\" for key \"{cond_key}\" is not {what}"
                    ))
                })?;
            }
            entries.push(ConditionEntry {
                key: cond_key,
                values,
            });
        }
        blocks.push(ConditionBlock { operator, entries });
    }
    Ok(blocks)
}

fn condition_values(loc: &Loc, key: &str, value: Json) -> Result<Vec<String>, PolicyError> {
    let scalar = |v: Json| match v {
        Json::String(s) => Ok(s),
        Json::Number(n) => Ok(n),
        Json::Bool(b) => Ok(b.to_string()),
        other => Err(loc.err(format!(
            "condition value for key \"{key}\" must be a string, number or boolean, got {}",
            other.describe()
        ))),
    };
    match value {
        Json::Array(items) => {
            if items.is_empty() {
                return Err(loc.err(format!("condition value list for key \"{key}\" is empty")));
            }
            items.into_iter().map(scalar).collect()
        }
        other => Ok(vec![scalar(other)?]),
    }
}

fn check_condition_value(base: BaseOperator, v: &str) -> Result<(), &'static str> {
    use BaseOperator::*;
    match base {
        NumericEquals
        | NumericNotEquals
        | NumericLessThan
        | NumericLessThanEquals
        | NumericGreaterThan
        | NumericGreaterThanEquals => parse_number(v).map(|_| ()).ok_or("a number"),
        DateEquals
        | DateNotEquals
        | DateLessThan
        | DateLessThanEquals
        | DateGreaterThan
        | DateGreaterThanEquals => parse_date_millis(v)
            .map(|_| ())
            .ok_or("an ISO 8601 date or epoch seconds"),
        Bool | Null => {
            if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
                Ok(())
            } else {
                Err("\"true\" or \"false\"")
            }
        }
        IpAddress | NotIpAddress => parse_cidr(v)
            .map(|_| ())
            .ok_or("an IP address or CIDR block"),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Serialization back to IAM JSON.

struct OneOrMany<'a>(&'a [String]);

impl Serialize for OneOrMany<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let [one] = self.0 {
            s.serialize_str(one)
        } else {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for v in self.0 {
                seq.serialize_element(v)?;
            }
            seq.end()
        }
    }
}

impl Serialize for PrincipalSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PrincipalSet::Any => s.serialize_str("*"),
            PrincipalSet::Named { aws, service } => {
                let mut map = s.serialize_map(None)?;
                if !aws.is_empty() {
                    map.serialize_entry("AWS", &OneOrMany(aws))?;
                }
                if !service.is_empty() {
                    map.serialize_entry("Service", &OneOrMany(service))?;
                }
                map.end()
            }
        }
    }
}

struct ConditionBody<'a>(&'a [ConditionEntry]);

impl Serialize for ConditionBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for e in self.0 {
            map.serialize_entry(&e.key, &OneOrMany(&e.values))?;
        }
        map.end()
    }
}

struct Conditions<'a>(&'a [ConditionBlock]);

impl Serialize for Conditions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for b in self.0 {
            map.serialize_entry(&b.operator.to_string(), &ConditionBody(&b.entries))?;
        }
        map.end()
    }
}

impl Serialize for Statement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(sid) = &self.sid {
            map.serialize_entry("Sid", sid)?;
        }
        map.serialize_entry("Effect", &self.effect)?;
        match &self.principal {
            Some(PrincipalClause::Principal(p)) => map.serialize_entry("Principal", p)?,
            Some(PrincipalClause::NotPrincipal(p)) => map.serialize_entry("NotPrincipal", p)?,
            None => {}
        }
        match &self.action {
            ActionClause::Action(a) => map.serialize_entry("Action", &OneOrMany(a))?,
            ActionClause::NotAction(a) => map.serialize_entry("NotAction", &OneOrMany(a))?,
        }
        match &self.resource {
            Some(ResourceClause::Resource(r)) => map.serialize_entry("Resource", &OneOrMany(r))?,
            Some(ResourceClause::NotResource(r)) => {
                map.serialize_entry("NotResource", &OneOrMany(r))?
            }
            None => {}
        }
        if !self.conditions.is_empty() {
            map.serialize_entry("Condition", &Conditions(&self.conditions))?;
        }
        map.end()
    }
}

// ---------------------------------------------------------------------------
// A JSON value that keeps object key order and rejects duplicate keys (a
// duplicated "Effect" or "Condition" must not silently win or vanish).

enum Json {
    Null,
    Bool(bool),
    /// Kept in textual form.
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn describe(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries: Vec<(String, Json)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format_args!("duplicate key \"{key}\"")));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}
