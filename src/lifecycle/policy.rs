//! ECR lifecycle policy documents: parsing and validation.
//!
//! This module owns the policy document (the JSON carried in
//! `lifecyclePolicyText`, `docs/ecr-api.md` §4.1): [`parse`] turns the text into
//! a typed [`Policy`] or rejects it with a [`PolicyError`] whose message names
//! the offending rule (`rule with rulePriority 2: …`, `rules[1]: …` when the
//! rule has no usable priority, `policy document: …` for the whole document).
//! Evaluating a policy against images is [`super::planner`]'s job.
//!
//! Decisions the specification leaves open:
//! - Every enumerated value (`tagStatus`, `countType`, `countUnit`,
//!   `storageClass`, `action.type`, `targetStorageClass`) is case-sensitive
//!   and must be spelled exactly as ECR documents it (`"tagged"`, not
//!   `"TAGGED"`).
//! - Integers (`rulePriority`, `countNumber`) must be JSON integers: strings
//!   (`"1"`), floats (`1.0`, `1e2`) and negatives are rejected.
//!   `rulePriority` must fit in 32 bits.
//! - `null` is not "absent": a key present with `null` is a type error.
//! - Tag lists are arrays of non-empty strings; there is no limit on their
//!   length beyond the document's 30,720 characters. Entries are kept in
//!   document order (duplicates included, they are harmless).
//! - The document length is counted in characters (Unicode scalar values),
//!   not bytes.
//! - V12 (duplicate tag filters) compares lists as sets (order and repeats
//!   ignored), prefix lists only with prefix lists and pattern lists only with
//!   pattern lists, within one storage class.
//! - Duplicate JSON keys inside one object are not detected (the last one
//!   wins, as in most JSON parsers).
//! - Checks run rule by rule in document order (the first invalid rule is
//!   reported), then across rules in priority order: unique priorities, V10,
//!   V11, V12.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Largest accepted `lifecyclePolicyText`, in characters (V1).
pub const MAX_POLICY_CHARS: usize = 30_720;
/// Most rules in one policy (V1).
pub const MAX_RULES: usize = 50;
/// Most `*` wildcards in one `tagPatternList` entry (V4).
pub const MAX_PATTERN_WILDCARDS: usize = 4;
/// Fewest days an image must spend in archive before a rule may expire it (V9).
pub const MIN_ARCHIVE_DAYS: u64 = 90;

/// Which images a rule selects by their tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

/// The tag filter of a `tagged` rule; `None` for `untagged` and `any` rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagFilter {
    None,
    /// `tagPrefixList`: every prefix must start some tag of the image.
    Prefixes(Vec<String>),
    /// `tagPatternList`: every pattern (`*` = any run) must match some whole tag.
    Patterns(Vec<String>),
}

/// Where an image lives: ECR's `STANDARD` and `ARCHIVE` storage classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageClass {
    Standard,
    Archive,
}

/// A rule's `countType` with its `countNumber` (days for the `since*` types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// `imageCountMoreThan`: keep the N newest.
    MoreThan(u64),
    /// `sinceImagePushed`, in days.
    SincePushedDays(u64),
    /// `sinceImagePulled`, in days.
    SincePulledDays(u64),
    /// `sinceImageTransitioned`, in days.
    SinceTransitionedDays(u64),
}

/// What a rule does to the images it marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Delete the image with all its tags.
    Expire,
    /// Move the image to the `ARCHIVE` storage class.
    Transition,
}

/// One validated rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub priority: u32,
    pub description: Option<String>,
    pub tag_status: TagStatus,
    pub tag_filter: TagFilter,
    pub storage_class: StorageClass,
    pub count: Count,
    pub action: Action,
}

/// A validated lifecycle policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Sorted by `priority` ascending; priorities are unique.
    pub rules: Vec<Rule>,
}

/// Why a policy document was rejected. The API layer reports it as
/// `InvalidParameterException` with this text.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("Lifecycle policy validation failure: {0}")]
pub struct PolicyError(pub String);

impl Policy {
    /// Whether the policy needs the archive storage class: a transition rule,
    /// an archive rule, or a count type that only archiving uses.
    pub fn uses_transition(&self) -> bool {
        self.rules.iter().any(Rule::uses_archive)
    }
}

impl Rule {
    /// Whether the rule needs the archive storage class: a transition, a rule
    /// over archived images, or a count type only archive rules may use.
    pub fn uses_archive(&self) -> bool {
        self.action == Action::Transition
            || self.storage_class == StorageClass::Archive
            || matches!(
                self.count,
                Count::SincePulledDays(_) | Count::SinceTransitionedDays(_)
            )
    }
}

impl StorageClass {
    /// The API's spelling: `STANDARD` or `ARCHIVE`.
    pub fn as_ecr(&self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::Archive => "ARCHIVE",
        }
    }

    /// The policy document's spelling: `standard` or `archive`.
    fn as_policy(&self) -> &'static str {
        match self {
            StorageClass::Standard => "standard",
            StorageClass::Archive => "archive",
        }
    }
}

impl Action {
    /// The API's spelling: `EXPIRE` or `TRANSITION`.
    pub fn as_ecr(&self) -> &'static str {
        match self {
            Action::Expire => "EXPIRE",
            Action::Transition => "TRANSITION",
        }
    }
}

const RULE_KEYS: &[&str] = &["rulePriority", "description", "selection", "action"];
const SELECTION_KEYS: &[&str] = &[
    "tagStatus",
    "tagPatternList",
    "tagPrefixList",
    "storageClass",
    "countType",
    "countUnit",
    "countNumber",
];
const ACTION_KEYS: &[&str] = &["type", "targetStorageClass"];

/// Parses and validates a lifecycle policy document (rules V1–V12 of
/// `docs/ecr-api.md` §4.1). The returned rules are sorted by priority.
pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    let chars = text.chars().count();
    if chars > MAX_POLICY_CHARS {
        return Err(doc_error(format!(
            "the text is {chars} characters long; at most {MAX_POLICY_CHARS} are allowed"
        )));
    }
    let doc: Value =
        serde_json::from_str(text).map_err(|e| doc_error(format!("not valid JSON ({e})")))?;
    let Value::Object(top) = &doc else {
        return Err(doc_error(format!(
            "must be a JSON object, got {}",
            show(&doc)
        )));
    };
    if let Some(key) = top.keys().find(|k| k.as_str() != "rules") {
        return Err(doc_error(format!(
            "unknown key \"{key}\" (the document may only contain \"rules\")"
        )));
    }
    let rules = match top.get("rules") {
        None => return Err(doc_error("\"rules\" is required".into())),
        Some(Value::Array(rules)) => rules,
        Some(other) => {
            return Err(doc_error(format!(
                "\"rules\" must be an array, got {}",
                show(other)
            )));
        }
    };
    if rules.is_empty() {
        return Err(doc_error("\"rules\" must contain at least one rule".into()));
    }
    if rules.len() > MAX_RULES {
        return Err(doc_error(format!(
            "\"rules\" has {} rules; at most {MAX_RULES} are allowed",
            rules.len()
        )));
    }

    let mut parsed = Vec::with_capacity(rules.len());
    for (index, value) in rules.iter().enumerate() {
        parsed.push((index, parse_rule(index, value)?));
    }
    parsed.sort_by_key(|(index, rule)| (rule.priority, *index));
    check_across_rules(&parsed)?;
    Ok(Policy {
        rules: parsed.into_iter().map(|(_, rule)| rule).collect(),
    })
}

fn doc_error(message: String) -> PolicyError {
    PolicyError(format!("policy document: {message}"))
}

/// How an error names its rule: by priority once known, by position before.
#[derive(Clone, Copy)]
enum Who {
    Index(usize),
    Priority(u32),
}

impl Who {
    fn error(self, message: impl std::fmt::Display) -> PolicyError {
        match self {
            Who::Index(index) => PolicyError(format!("rules[{index}]: {message}")),
            Who::Priority(p) => PolicyError(format!("rule with rulePriority {p}: {message}")),
        }
    }
}

/// A JSON value for an error message, shortened if long.
fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 60 {
        text
    } else {
        let head: String = text.chars().take(57).collect();
        format!("{head}...")
    }
}

/// A list of strings, quoted, for an error message.
fn show_list(items: &[String]) -> String {
    show(&Value::from(items.to_vec()))
}

/// A non-negative JSON integer (not a float, not a string).
fn json_integer(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn check_keys(
    who: Who,
    object: &Map<String, Value>,
    allowed: &[&str],
    place: &str,
) -> Result<(), PolicyError> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(who.error(format!(
            "unknown key \"{key}\" in {place} (allowed: {})",
            allowed.join(", ")
        ))),
    }
}

fn required_object<'a>(
    who: Who,
    object: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a Map<String, Value>, PolicyError> {
    match object.get(key) {
        None => Err(who.error(format!("\"{key}\" is required"))),
        Some(Value::Object(inner)) => Ok(inner),
        Some(other) => Err(who.error(format!(
            "\"{key}\" must be a JSON object, got {}",
            show(other)
        ))),
    }
}

/// An optional string field restricted to `choices` (exact spelling);
/// `place` prefixes the key in messages (`action.type`).
fn enum_field<T: Copy>(
    who: Who,
    place: &str,
    object: &Map<String, Value>,
    key: &str,
    choices: &[(&str, T)],
) -> Result<Option<T>, PolicyError> {
    let Some(value) = object.get(key) else {
        return Ok(None);
    };
    let found = value
        .as_str()
        .and_then(|s| choices.iter().find(|(name, _)| *name == s));
    match found {
        Some((_, t)) => Ok(Some(*t)),
        None => {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            let label = if place.is_empty() {
                key.to_string()
            } else {
                format!("{place}.{key}")
            };
            Err(who.error(format!(
                "{label} must be {} (case-sensitive), got {}",
                one_of(&names),
                show(value)
            )))
        }
    }
}

fn one_of(names: &[String]) -> String {
    match names {
        [only] => only.clone(),
        [first, second] => format!("{first} or {second}"),
        [init @ .., last] => format!("one of {}, or {last}", init.join(", ")),
        [] => String::new(),
    }
}

/// `tagPrefixList` / `tagPatternList`: a non-empty array of non-empty strings.
fn tag_list(who: Who, key: &str, value: &Value) -> Result<Vec<String>, PolicyError> {
    let bad = || {
        who.error(format!(
            "{key} must be a non-empty array of non-empty strings, got {}",
            show(value)
        ))
    };
    let Value::Array(items) = value else {
        return Err(bad());
    };
    if items.is_empty() {
        return Err(bad());
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err(bad()),
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CountType {
    ImageCountMoreThan,
    SinceImagePushed,
    SinceImagePulled,
    SinceImageTransitioned,
}

impl CountType {
    fn name(self) -> &'static str {
        match self {
            CountType::ImageCountMoreThan => "imageCountMoreThan",
            CountType::SinceImagePushed => "sinceImagePushed",
            CountType::SinceImagePulled => "sinceImagePulled",
            CountType::SinceImageTransitioned => "sinceImageTransitioned",
        }
    }
}

fn parse_rule(index: usize, value: &Value) -> Result<Rule, PolicyError> {
    let Value::Object(rule) = value else {
        return Err(Who::Index(index).error(format!(
            "each rule must be a JSON object, got {}",
            show(value)
        )));
    };

    // V2: the priority first, so that every later message can name the rule.
    let priority = match rule.get("rulePriority") {
        None => return Err(Who::Index(index).error("\"rulePriority\" is required")),
        Some(v) => match json_integer(v).map(u32::try_from) {
            Some(Ok(p)) if p >= 1 => p,
            _ => {
                return Err(Who::Index(index).error(format!(
                    "rulePriority must be an integer between 1 and {}, got {}",
                    u32::MAX,
                    show(v)
                )));
            }
        },
    };
    let who = Who::Priority(priority);
    check_keys(who, rule, RULE_KEYS, "the rule")?;
    let description = match rule.get("description") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(who.error(format!("description must be a string, got {}", show(other))));
        }
    };
    let selection = required_object(who, rule, "selection")?;
    check_keys(who, selection, SELECTION_KEYS, "\"selection\"")?;
    let action_object = required_object(who, rule, "action")?;
    check_keys(who, action_object, ACTION_KEYS, "\"action\"")?;

    // V3, V4: tag status and filter.
    let tag_status = enum_field(
        who,
        "",
        selection,
        "tagStatus",
        &[
            ("tagged", TagStatus::Tagged),
            ("untagged", TagStatus::Untagged),
            ("any", TagStatus::Any),
        ],
    )?
    .ok_or_else(|| who.error("selection.tagStatus is required"))?;
    let prefixes = selection.get("tagPrefixList");
    let patterns = selection.get("tagPatternList");
    let tag_filter = match tag_status {
        TagStatus::Tagged => match (prefixes, patterns) {
            (Some(_), Some(_)) => {
                return Err(who.error(
                    "tagStatus \"tagged\" needs exactly one of tagPrefixList or tagPatternList, not both",
                ));
            }
            (None, None) => {
                return Err(who.error(
                    "tagStatus \"tagged\" needs exactly one of tagPrefixList or tagPatternList",
                ));
            }
            (Some(list), None) => TagFilter::Prefixes(tag_list(who, "tagPrefixList", list)?),
            (None, Some(list)) => {
                let patterns = tag_list(who, "tagPatternList", list)?;
                if let Some(p) = patterns
                    .iter()
                    .find(|p| p.matches('*').count() > MAX_PATTERN_WILDCARDS)
                {
                    return Err(who.error(format!(
                        "tagPatternList entry \"{p}\" has {} wildcards (*); at most {MAX_PATTERN_WILDCARDS} are allowed",
                        p.matches('*').count()
                    )));
                }
                TagFilter::Patterns(patterns)
            }
        },
        TagStatus::Untagged | TagStatus::Any => {
            let status = if tag_status == TagStatus::Any {
                "any"
            } else {
                "untagged"
            };
            for (key, present) in [("tagPrefixList", prefixes), ("tagPatternList", patterns)] {
                if present.is_some() {
                    return Err(who.error(format!(
                        "tagStatus \"{status}\" must not have {key} (only \"tagged\" rules filter by tag)"
                    )));
                }
            }
            TagFilter::None
        }
    };

    let storage_class = enum_field(
        who,
        "",
        selection,
        "storageClass",
        &[
            ("standard", StorageClass::Standard),
            ("archive", StorageClass::Archive),
        ],
    )?
    .unwrap_or(StorageClass::Standard);

    // V5, V6: count.
    let count_type = enum_field(
        who,
        "",
        selection,
        "countType",
        &[
            ("imageCountMoreThan", CountType::ImageCountMoreThan),
            ("sinceImagePushed", CountType::SinceImagePushed),
            ("sinceImagePulled", CountType::SinceImagePulled),
            ("sinceImageTransitioned", CountType::SinceImageTransitioned),
        ],
    )?
    .ok_or_else(|| who.error("selection.countType is required"))?;
    let count_type_name = count_type.name();
    if count_type == CountType::ImageCountMoreThan {
        if selection.contains_key("countUnit") {
            return Err(
                who.error("countUnit must not be given with countType \"imageCountMoreThan\"")
            );
        }
    } else {
        enum_field(who, "", selection, "countUnit", &[("days", ())])?.ok_or_else(|| {
            who.error(format!(
                "countType \"{count_type_name}\" needs countUnit \"days\""
            ))
        })?;
    }
    let count_number = match selection.get("countNumber") {
        None => return Err(who.error("selection.countNumber is required")),
        Some(v) => match json_integer(v) {
            Some(n) if n >= 1 => n,
            _ => {
                return Err(who.error(format!(
                    "countNumber must be a positive integer, got {}",
                    show(v)
                )));
            }
        },
    };
    let count = match count_type {
        CountType::ImageCountMoreThan => Count::MoreThan(count_number),
        CountType::SinceImagePushed => Count::SincePushedDays(count_number),
        CountType::SinceImagePulled => Count::SincePulledDays(count_number),
        CountType::SinceImageTransitioned => Count::SinceTransitionedDays(count_number),
    };

    // V7: action.
    let action = enum_field(
        who,
        "action",
        action_object,
        "type",
        &[
            ("expire", Action::Expire),
            ("transition", Action::Transition),
        ],
    )?
    .ok_or_else(|| who.error("action.type is required"))?;
    match action {
        Action::Transition => {
            enum_field(
                who,
                "action",
                action_object,
                "targetStorageClass",
                &[("archive", ())],
            )?
            .ok_or_else(|| {
                who.error("action \"transition\" needs targetStorageClass \"archive\"")
            })?;
        }
        Action::Expire => {
            if action_object.contains_key("targetStorageClass") {
                return Err(who.error("action \"expire\" must not have targetStorageClass"));
            }
        }
    }

    // V8, V9: which count types go with which actions and storage classes.
    match count_type {
        CountType::SinceImagePulled if action != Action::Transition => {
            return Err(who.error(
                "countType \"sinceImagePulled\" is only allowed with action \"transition\"",
            ));
        }
        CountType::SinceImageTransitioned if action != Action::Expire => {
            return Err(who.error(
                "countType \"sinceImageTransitioned\" is only allowed with action \"expire\"",
            ));
        }
        CountType::SinceImageTransitioned if storage_class != StorageClass::Archive => {
            return Err(who.error(
                "countType \"sinceImageTransitioned\" is only allowed with storageClass \"archive\"",
            ));
        }
        CountType::SinceImageTransitioned if count_number < MIN_ARCHIVE_DAYS => {
            return Err(who.error(format!(
                "countType \"sinceImageTransitioned\" needs countNumber >= {MIN_ARCHIVE_DAYS}: archived images must stay in archive for at least {MIN_ARCHIVE_DAYS} days, got {count_number}"
            )));
        }
        _ => {}
    }
    if storage_class == StorageClass::Archive && count_type != CountType::SinceImageTransitioned {
        return Err(who.error(format!(
            "storageClass \"archive\" is only allowed with countType \"sinceImageTransitioned\", got \"{count_type_name}\""
        )));
    }

    Ok(Rule {
        priority,
        description,
        tag_status,
        tag_filter,
        storage_class,
        count,
        action,
    })
}

/// Unique priorities, V10, V11 and V12, over rules sorted by priority.
fn check_across_rules(rules: &[(usize, Rule)]) -> Result<(), PolicyError> {
    for pair in rules.windows(2) {
        let ((first, a), (second, b)) = (&pair[0], &pair[1]);
        if a.priority == b.priority {
            return Err(PolicyError(format!(
                "rules with rulePriority {}: rulePriority must be unique, but rules[{first}] and rules[{second}] both use it",
                a.priority
            )));
        }
    }
    for class in [StorageClass::Standard, StorageClass::Archive] {
        let in_class: Vec<&Rule> = rules
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.storage_class == class)
            .collect();
        // V10: an `any` rule comes last within its storage class.
        if let Some(any) = in_class.iter().find(|r| r.tag_status == TagStatus::Any)
            && let Some(later) = in_class.iter().find(|r| r.priority > any.priority)
        {
            return Err(Who::Priority(any.priority).error(format!(
                "a rule with tagStatus \"any\" must have the highest rulePriority among the rules for storageClass \"{}\", but the rule with rulePriority {} comes after it",
                class.as_policy(),
                later.priority
            )));
        }
        // V11: one `untagged` rule per storage class.
        let mut untagged = in_class
            .iter()
            .filter(|r| r.tag_status == TagStatus::Untagged);
        if let (Some(first), Some(second)) = (untagged.next(), untagged.next()) {
            return Err(Who::Priority(second.priority).error(format!(
                "only one rule with tagStatus \"untagged\" is allowed per storage class, and the rule with rulePriority {} already selects untagged images of storageClass \"{}\"",
                first.priority,
                class.as_policy()
            )));
        }
        // V12: tagged rules must not repeat a tag filter.
        let mut seen: Vec<(bool, BTreeSet<&str>, u32)> = Vec::new();
        for rule in &in_class {
            let (is_prefix, list) = match &rule.tag_filter {
                TagFilter::Prefixes(list) => (true, list),
                TagFilter::Patterns(list) => (false, list),
                TagFilter::None => continue,
            };
            let set: BTreeSet<&str> = list.iter().map(String::as_str).collect();
            if let Some((_, _, earlier)) =
                seen.iter().find(|(p, s, _)| *p == is_prefix && *s == set)
            {
                return Err(Who::Priority(rule.priority).error(format!(
                    "its {} {} repeats the one of the rule with rulePriority {earlier} for storageClass \"{}\"; tagged rules of one storage class must select distinct tags",
                    if is_prefix { "tagPrefixList" } else { "tagPatternList" },
                    show_list(list),
                    class.as_policy()
                )));
            }
            seen.push((is_prefix, set, rule.priority));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse_value(doc: &Value) -> Result<Policy, PolicyError> {
        parse(&doc.to_string())
    }

    fn doc(rules: Vec<Value>) -> Value {
        json!({ "rules": rules })
    }

    /// A rule from its selection and action objects.
    fn rule(priority: Value, selection: Value, action: Value) -> Value {
        json!({ "rulePriority": priority, "selection": selection, "action": action })
    }

    fn expire() -> Value {
        json!({ "type": "expire" })
    }

    fn transition() -> Value {
        json!({ "type": "transition", "targetStorageClass": "archive" })
    }

    fn untagged_pushed(priority: u32, days: u64) -> Value {
        rule(
            json!(priority),
            json!({ "tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": days }),
            expire(),
        )
    }

    fn prefix_count(priority: u32, prefixes: &[&str], n: u64) -> Value {
        rule(
            json!(priority),
            json!({ "tagStatus": "tagged", "tagPrefixList": prefixes, "countType": "imageCountMoreThan", "countNumber": n }),
            expire(),
        )
    }

    fn pattern_count(priority: u32, patterns: &[&str], n: u64) -> Value {
        rule(
            json!(priority),
            json!({ "tagStatus": "tagged", "tagPatternList": patterns, "countType": "imageCountMoreThan", "countNumber": n }),
            expire(),
        )
    }

    fn any_count(priority: u32, n: u64) -> Value {
        rule(
            json!(priority),
            json!({ "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": n }),
            expire(),
        )
    }

    fn archive_expire(priority: u32, days: u64) -> Value {
        rule(
            json!(priority),
            json!({ "tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": days }),
            expire(),
        )
    }

    fn pulled_transition(priority: u32, days: u64) -> Value {
        rule(
            json!(priority),
            json!({ "tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": days }),
            transition(),
        )
    }

    /// `doc` is rejected and the message contains every needle.
    #[track_caller]
    fn rejects(doc: &Value, needles: &[&str]) {
        rejects_text(&doc.to_string(), needles);
    }

    #[track_caller]
    fn rejects_text(text: &str, needles: &[&str]) {
        match parse(text) {
            Ok(policy) => panic!("accepted {text}: {policy:?}"),
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.starts_with("Lifecycle policy validation failure: "),
                    "{message}"
                );
                for needle in needles {
                    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
                }
            }
        }
    }

    /// Replaces `key` (a `/`-separated path) in rule 0 of `doc`.
    fn with(mut doc: Value, path: &str, value: Value) -> Value {
        let mut target = &mut doc["rules"][0];
        let keys: Vec<&str> = path.split('/').collect();
        for key in &keys[..keys.len() - 1] {
            target = &mut target[*key];
        }
        target[keys[keys.len() - 1]] = value;
        doc
    }

    /// Removes `key` (a `/`-separated path) from rule 0 of `doc`.
    fn without(mut doc: Value, path: &str) -> Value {
        let mut target = &mut doc["rules"][0];
        let keys: Vec<&str> = path.split('/').collect();
        for key in &keys[..keys.len() - 1] {
            target = &mut target[*key];
        }
        target.as_object_mut().unwrap().remove(keys[keys.len() - 1]);
        doc
    }

    // ---- valid documents -------------------------------------------------

    #[test]
    fn user_guide_untagged_since_pushed() {
        let text = r#"{
            "rules": [
                {
                    "rulePriority": 1,
                    "description": "Expire images older than 14 days",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": 14
                    },
                    "action": { "type": "expire" }
                }
            ]
        }"#;
        let policy = parse(text).unwrap();
        assert_eq!(
            policy,
            Policy {
                rules: vec![Rule {
                    priority: 1,
                    description: Some("Expire images older than 14 days".into()),
                    tag_status: TagStatus::Untagged,
                    tag_filter: TagFilter::None,
                    storage_class: StorageClass::Standard,
                    count: Count::SincePushedDays(14),
                    action: Action::Expire,
                }]
            }
        );
        assert!(!policy.uses_transition());
    }

    #[test]
    fn user_guide_tag_prefix_and_pattern_and_any() {
        let policy = parse_value(&doc(vec![prefix_count(1, &["prod"], 1)])).unwrap();
        assert_eq!(policy.rules[0].tag_status, TagStatus::Tagged);
        assert_eq!(
            policy.rules[0].tag_filter,
            TagFilter::Prefixes(vec!["prod".into()])
        );
        assert_eq!(policy.rules[0].count, Count::MoreThan(1));
        assert_eq!(policy.rules[0].description, None);

        let policy = parse_value(&doc(vec![pattern_count(1, &["prod*"], 1)])).unwrap();
        assert_eq!(
            policy.rules[0].tag_filter,
            TagFilter::Patterns(vec!["prod*".into()])
        );

        let policy = parse_value(&doc(vec![any_count(1, 1)])).unwrap();
        assert_eq!(policy.rules[0].tag_status, TagStatus::Any);
        assert_eq!(policy.rules[0].tag_filter, TagFilter::None);
    }

    #[test]
    fn user_guide_multiple_rules_example_b() {
        // The guide's "all images, example B" (worked example L1).
        let policy = parse_value(&doc(vec![
            prefix_count(1, &["alpha"], 1),
            untagged_pushed(2, 1),
            any_count(3, 1),
        ]))
        .unwrap();
        let priorities: Vec<u32> = policy.rules.iter().map(|r| r.priority).collect();
        assert_eq!(priorities, [1, 2, 3]);
    }

    #[test]
    fn user_guide_archive_then_expire() {
        // The guide's "combine archive and expire": an `any` rule per storage class.
        let policy =
            parse_value(&doc(vec![pulled_transition(1, 90), archive_expire(2, 90)])).unwrap();
        assert_eq!(policy.rules[0].count, Count::SincePulledDays(90));
        assert_eq!(policy.rules[0].action, Action::Transition);
        assert_eq!(policy.rules[0].storage_class, StorageClass::Standard);
        assert_eq!(policy.rules[1].count, Count::SinceTransitionedDays(90));
        assert_eq!(policy.rules[1].storage_class, StorageClass::Archive);
        assert_eq!(policy.rules[1].action, Action::Expire);
        assert!(policy.uses_transition());
        assert_eq!(StorageClass::Archive.as_ecr(), "ARCHIVE");
        assert_eq!(StorageClass::Standard.as_ecr(), "STANDARD");
        assert_eq!(Action::Transition.as_ecr(), "TRANSITION");
        assert_eq!(Action::Expire.as_ecr(), "EXPIRE");
    }

    #[test]
    fn uses_transition_for_each_reason() {
        let transition_pushed = rule(
            json!(1),
            json!({ "tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 3 }),
            transition(),
        );
        assert!(
            parse_value(&doc(vec![transition_pushed]))
                .unwrap()
                .uses_transition()
        );
        assert!(
            parse_value(&doc(vec![archive_expire(1, 100)]))
                .unwrap()
                .uses_transition()
        );
        assert!(
            !parse_value(&doc(vec![prefix_count(1, &["a"], 1), any_count(2, 3)]))
                .unwrap()
                .uses_transition()
        );
    }

    #[test]
    fn pattern_with_four_wildcards_is_accepted() {
        let policy = parse_value(&doc(vec![pattern_count(1, &["*test*1*2*3"], 1)])).unwrap();
        assert_eq!(
            policy.rules[0].tag_filter,
            TagFilter::Patterns(vec!["*test*1*2*3".into()])
        );
    }

    #[test]
    fn rules_are_sorted_by_priority_with_gaps_allowed() {
        let policy = parse_value(&doc(vec![
            any_count(30, 5),
            prefix_count(7, &["b"], 1),
            untagged_pushed(12, 3),
            pattern_count(1, &["a*"], 2),
        ]))
        .unwrap();
        let priorities: Vec<u32> = policy.rules.iter().map(|r| r.priority).collect();
        assert_eq!(priorities, [1, 7, 12, 30]);
        assert_eq!(policy.rules[2].tag_status, TagStatus::Untagged);
    }

    #[test]
    fn explicit_standard_storage_class_and_priority_bounds() {
        let d = with(
            doc(vec![any_count(1, 1)]),
            "selection/storageClass",
            json!("standard"),
        );
        assert_eq!(
            parse_value(&d).unwrap().rules[0].storage_class,
            StorageClass::Standard
        );
        let d = with(doc(vec![any_count(1, 1)]), "rulePriority", json!(u32::MAX));
        assert_eq!(parse_value(&d).unwrap().rules[0].priority, u32::MAX);
    }

    #[test]
    fn error_text_has_the_ecr_prefix() {
        let e = parse("[]").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("Lifecycle policy validation failure: {}", e.0)
        );
        assert!(e.0.starts_with("policy document: "), "{}", e.0);
    }

    // ---- the invalid vectors of §4.3 --------------------------------------

    #[test]
    fn vector_tagged_with_both_lists() {
        let d = doc(vec![rule(
            json!(1),
            json!({ "tagStatus": "tagged", "tagPrefixList": ["a"], "tagPatternList": ["a*"], "countType": "imageCountMoreThan", "countNumber": 1 }),
            expire(),
        )]);
        rejects(
            &d,
            &[
                "rule with rulePriority 1:",
                "exactly one of tagPrefixList or tagPatternList",
                "not both",
            ],
        );
    }

    #[test]
    fn vector_untagged_with_prefix_list() {
        let d = with(
            doc(vec![untagged_pushed(1, 1)]),
            "selection/tagPrefixList",
            json!(["a"]),
        );
        rejects(
            &d,
            &[
                "rule with rulePriority 1:",
                "tagStatus \"untagged\" must not have tagPrefixList",
            ],
        );
    }

    #[test]
    fn vector_count_number_zero() {
        rejects(
            &doc(vec![any_count(1, 0)]),
            &[
                "rule with rulePriority 1:",
                "countNumber must be a positive integer, got 0",
            ],
        );
    }

    #[test]
    fn vector_count_unit_on_image_count() {
        let d = with(
            doc(vec![any_count(1, 1)]),
            "selection/countUnit",
            json!("days"),
        );
        rejects(
            &d,
            &[
                "rule with rulePriority 1:",
                "countUnit must not be given with countType \"imageCountMoreThan\"",
            ],
        );
    }

    #[test]
    fn vector_any_before_tagged() {
        rejects(
            &doc(vec![any_count(1, 1), prefix_count(2, &["a"], 1)]),
            &[
                "rule with rulePriority 1:",
                "\"any\" must have the highest rulePriority",
                "rulePriority 2 comes after it",
            ],
        );
    }

    #[test]
    fn vector_duplicate_priority() {
        rejects(
            &doc(vec![
                prefix_count(1, &["a"], 1),
                untagged_pushed(3, 1),
                prefix_count(1, &["b"], 1),
            ]),
            &[
                "rules with rulePriority 1:",
                "must be unique",
                "rules[0] and rules[2]",
            ],
        );
    }

    #[test]
    fn vector_pattern_with_five_wildcards() {
        rejects(
            &doc(vec![pattern_count(4, &["*a*b*c*d*"], 1)]),
            &["rule with rulePriority 4:", "\"*a*b*c*d*\" has 5 wildcards"],
        );
        rejects(
            &doc(vec![pattern_count(2, &["ok*", "test*1*2*3*4*5*6"], 1)]),
            &[
                "rule with rulePriority 2:",
                "\"test*1*2*3*4*5*6\" has 6 wildcards",
            ],
        );
    }

    #[test]
    fn vector_since_pulled_with_expire() {
        let d = with(doc(vec![pulled_transition(1, 30)]), "action", expire());
        rejects(
            &d,
            &[
                "rule with rulePriority 1:",
                "\"sinceImagePulled\" is only allowed with action \"transition\"",
            ],
        );
    }

    #[test]
    fn vector_transition_without_target() {
        let d = with(
            doc(vec![pulled_transition(5, 30)]),
            "action",
            json!({ "type": "transition" }),
        );
        rejects(
            &d,
            &[
                "rule with rulePriority 5:",
                "action \"transition\" needs targetStorageClass \"archive\"",
            ],
        );
    }

    // ---- one test per V-rule ------------------------------------------------

    #[test]
    fn v1_document_shape_and_size() {
        rejects_text("", &["policy document:", "not valid JSON"]);
        rejects_text("{\"rules\": [", &["policy document:", "not valid JSON"]);
        rejects_text("[]", &["policy document:", "must be a JSON object"]);
        rejects_text("\"rules\"", &["policy document:", "must be a JSON object"]);
        rejects_text("{}", &["policy document:", "\"rules\" is required"]);
        rejects_text(
            "{\"rules\": {}}",
            &["policy document:", "\"rules\" must be an array"],
        );
        rejects_text(
            "{\"rules\": []}",
            &["policy document:", "at least one rule"],
        );

        let fifty: Vec<Value> = (1..=50)
            .map(|p| prefix_count(p, &[&format!("t{p}-")], 1))
            .collect();
        assert_eq!(parse_value(&doc(fifty.clone())).unwrap().rules.len(), 50);
        let mut fifty_one = fifty;
        fifty_one.push(prefix_count(51, &["t51-"], 1));
        rejects(
            &doc(fifty_one),
            &["policy document:", "51 rules", "at most 50"],
        );

        // The limit counts characters: 30,720 of them pass, even multi-byte ones.
        let base = doc(vec![
            with(doc(vec![any_count(1, 1)]), "description", json!("é"))["rules"][0].clone(),
        ])
        .to_string();
        let pad = MAX_POLICY_CHARS - base.chars().count();
        let text = format!("{base}{}", " ".repeat(pad));
        assert_eq!(text.chars().count(), MAX_POLICY_CHARS);
        assert!(text.len() > MAX_POLICY_CHARS);
        parse(&text).unwrap();
        rejects_text(
            &format!("{text} "),
            &["policy document:", "30721 characters", "at most 30720"],
        );
    }

    #[test]
    fn v2_keys_and_priority() {
        let good = doc(vec![prefix_count(2, &["a"], 1)]);
        rejects_text(
            "{\"rules\": [], \"version\": 1}",
            &["policy document:", "unknown key \"version\""],
        );
        rejects(
            &with(good.clone(), "name", json!("x")),
            &[
                "rule with rulePriority 2:",
                "unknown key \"name\" in the rule",
            ],
        );
        rejects(
            &with(good.clone(), "selection/tagStatuss", json!("x")),
            &[
                "rule with rulePriority 2:",
                "unknown key \"tagStatuss\" in \"selection\"",
            ],
        );
        rejects(
            &with(good.clone(), "action/storageClass", json!("archive")),
            &[
                "rule with rulePriority 2:",
                "unknown key \"storageClass\" in \"action\"",
            ],
        );
        rejects(
            &without(good.clone(), "rulePriority"),
            &["rules[0]:", "\"rulePriority\" is required"],
        );
        rejects(
            &without(good.clone(), "selection"),
            &["rule with rulePriority 2:", "\"selection\" is required"],
        );
        rejects(
            &without(good.clone(), "action"),
            &["rule with rulePriority 2:", "\"action\" is required"],
        );
        rejects(
            &with(good.clone(), "selection", json!([])),
            &[
                "rule with rulePriority 2:",
                "\"selection\" must be a JSON object",
            ],
        );
        rejects(
            &with(good.clone(), "action", json!("expire")),
            &[
                "rule with rulePriority 2:",
                "\"action\" must be a JSON object",
            ],
        );
        rejects(
            &with(good.clone(), "description", json!(5)),
            &["rule with rulePriority 2:", "description must be a string"],
        );
        rejects(
            &with(good.clone(), "description", Value::Null),
            &["rule with rulePriority 2:", "description must be a string"],
        );
        for bad in [
            json!(0),
            json!(-1),
            json!("1"),
            json!(1.0),
            json!(1.5),
            json!(4_294_967_296u64),
            Value::Null,
        ] {
            rejects(
                &with(good.clone(), "rulePriority", bad.clone()),
                &[
                    "rules[0]:",
                    "rulePriority must be an integer",
                    &bad.to_string(),
                ],
            );
        }
        // The position names the rule when its priority is unusable.
        rejects(
            &doc(vec![any_count(1, 1), json!("rule")]),
            &["rules[1]:", "must be a JSON object"],
        );
        rejects(
            &doc(vec![prefix_count(1, &["a"], 1), untagged_pushed(1, 2)]),
            &["rules with rulePriority 1:", "must be unique"],
        );
    }

    #[test]
    fn v3_tag_status_and_lists() {
        let tagged = |extra: Value| {
            let mut selection = json!({ "tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1 });
            for (k, v) in extra.as_object().unwrap() {
                selection[k] = v.clone();
            }
            doc(vec![rule(json!(3), selection, expire())])
        };
        rejects(
            &tagged(json!({})),
            &[
                "rule with rulePriority 3:",
                "tagStatus \"tagged\" needs exactly one of tagPrefixList or tagPatternList",
            ],
        );
        rejects(
            &tagged(json!({ "tagPrefixList": [] })),
            &[
                "rule with rulePriority 3:",
                "tagPrefixList must be a non-empty array",
            ],
        );
        rejects(
            &tagged(json!({ "tagPatternList": [] })),
            &[
                "rule with rulePriority 3:",
                "tagPatternList must be a non-empty array",
            ],
        );
        rejects(
            &tagged(json!({ "tagPrefixList": [""] })),
            &["rule with rulePriority 3:", "non-empty strings"],
        );
        rejects(
            &tagged(json!({ "tagPrefixList": ["a", 1] })),
            &["rule with rulePriority 3:", "non-empty strings"],
        );
        rejects(
            &tagged(json!({ "tagPatternList": "prod*" })),
            &[
                "rule with rulePriority 3:",
                "tagPatternList must be a non-empty array",
            ],
        );
        assert!(parse_value(&tagged(json!({ "tagPrefixList": ["a", "b"] }))).is_ok());

        let any = doc(vec![any_count(4, 1)]);
        rejects(
            &with(any.clone(), "selection/tagPatternList", json!(["a*"])),
            &[
                "rule with rulePriority 4:",
                "tagStatus \"any\" must not have tagPatternList",
            ],
        );
        rejects(
            &with(any.clone(), "selection/tagPrefixList", json!([])),
            &[
                "rule with rulePriority 4:",
                "tagStatus \"any\" must not have tagPrefixList",
            ],
        );
        let untagged = doc(vec![untagged_pushed(6, 1)]);
        rejects(
            &with(untagged, "selection/tagPatternList", json!(["a*"])),
            &[
                "rule with rulePriority 6:",
                "tagStatus \"untagged\" must not have tagPatternList",
            ],
        );

        for bad in ["TAGGED", "Tagged", "all", ""] {
            rejects(
                &with(any.clone(), "selection/tagStatus", json!(bad)),
                &[
                    "rule with rulePriority 4:",
                    "tagStatus must be one of \"tagged\", \"untagged\", or \"any\" (case-sensitive)",
                ],
            );
        }
        rejects(
            &without(any, "selection/tagStatus"),
            &["rule with rulePriority 4:", "tagStatus is required"],
        );
    }

    #[test]
    fn v4_wildcards_per_pattern() {
        assert!(parse_value(&doc(vec![pattern_count(1, &["****"], 1)])).is_ok());
        assert!(parse_value(&doc(vec![pattern_count(1, &["a*b*c*d*e"], 1)])).is_ok());
        rejects(
            &doc(vec![pattern_count(1, &["*****"], 1)]),
            &["rule with rulePriority 1:", "has 5 wildcards", "at most 4"],
        );
        // Prefix lists are literal: `*` there is not a wildcard and not limited.
        assert!(parse_value(&doc(vec![prefix_count(1, &["*****"], 1)])).is_ok());
    }

    #[test]
    fn v5_count_number() {
        let d = doc(vec![untagged_pushed(8, 1)]);
        for bad in [
            json!(0),
            json!(-3),
            json!("3"),
            json!(2.5),
            json!(1.0),
            json!(true),
            Value::Null,
        ] {
            rejects(
                &with(d.clone(), "selection/countNumber", bad.clone()),
                &[
                    "rule with rulePriority 8:",
                    "countNumber must be a positive integer",
                    &bad.to_string(),
                ],
            );
        }
        rejects(
            &without(d.clone(), "selection/countNumber"),
            &["rule with rulePriority 8:", "countNumber is required"],
        );
        let big = parse_value(&with(d, "selection/countNumber", json!(u64::MAX))).unwrap();
        assert_eq!(big.rules[0].count, Count::SincePushedDays(u64::MAX));
    }

    #[test]
    fn v6_count_unit() {
        let d = doc(vec![untagged_pushed(2, 1)]);
        rejects(
            &without(d.clone(), "selection/countUnit"),
            &[
                "rule with rulePriority 2:",
                "countType \"sinceImagePushed\" needs countUnit \"days\"",
            ],
        );
        for bad in [json!("DAYS"), json!("hours"), json!("day"), json!(1)] {
            rejects(
                &with(d.clone(), "selection/countUnit", bad),
                &[
                    "rule with rulePriority 2:",
                    "countUnit must be \"days\" (case-sensitive)",
                ],
            );
        }
        rejects(
            &without(doc(vec![pulled_transition(4, 9)]), "selection/countUnit"),
            &[
                "rule with rulePriority 4:",
                "\"sinceImagePulled\" needs countUnit",
            ],
        );
        rejects(
            &without(doc(vec![archive_expire(5, 90)]), "selection/countUnit"),
            &[
                "rule with rulePriority 5:",
                "\"sinceImageTransitioned\" needs countUnit",
            ],
        );
        let any = doc(vec![any_count(7, 2)]);
        rejects(
            &with(any, "selection/countUnit", json!("hours")),
            &["rule with rulePriority 7:", "countUnit must not be given"],
        );

        for bad in [
            "ImageCountMoreThan",
            "sinceimagepushed",
            "imageCountMoreThan ",
        ] {
            rejects(
                &with(d.clone(), "selection/countType", json!(bad)),
                &[
                    "rule with rulePriority 2:",
                    "countType must be one of \"imageCountMoreThan\"",
                ],
            );
        }
        rejects(
            &without(d, "selection/countType"),
            &["rule with rulePriority 2:", "countType is required"],
        );
    }

    #[test]
    fn v7_action() {
        let d = doc(vec![untagged_pushed(3, 1)]);
        assert_eq!(
            parse_value(&with(d.clone(), "action", transition()))
                .unwrap()
                .rules[0]
                .action,
            Action::Transition
        );
        rejects(
            &with(
                d.clone(),
                "action",
                json!({ "type": "expire", "targetStorageClass": "archive" }),
            ),
            &[
                "rule with rulePriority 3:",
                "action \"expire\" must not have targetStorageClass",
            ],
        );
        for bad in ["standard", "ARCHIVE", "glacier"] {
            rejects(
                &with(
                    d.clone(),
                    "action",
                    json!({ "type": "transition", "targetStorageClass": bad }),
                ),
                &[
                    "rule with rulePriority 3:",
                    "action.targetStorageClass must be \"archive\" (case-sensitive)",
                ],
            );
        }
        for bad in [json!("EXPIRE"), json!("delete"), json!(1)] {
            rejects(
                &with(d.clone(), "action/type", bad),
                &[
                    "rule with rulePriority 3:",
                    "action.type must be \"expire\" or \"transition\" (case-sensitive)",
                ],
            );
        }
        rejects(
            &with(d, "action", json!({})),
            &["rule with rulePriority 3:", "action.type is required"],
        );
    }

    #[test]
    fn v8_count_type_action_and_storage_class() {
        // sinceImagePulled only with transition.
        rejects(
            &with(doc(vec![pulled_transition(1, 5)]), "action", expire()),
            &[
                "rule with rulePriority 1:",
                "only allowed with action \"transition\"",
            ],
        );
        // sinceImageTransitioned only with expire …
        rejects(
            &with(doc(vec![archive_expire(2, 90)]), "action", transition()),
            &[
                "rule with rulePriority 2:",
                "\"sinceImageTransitioned\" is only allowed with action \"expire\"",
            ],
        );
        // … and storageClass archive (explicit or default standard).
        rejects(
            &with(
                doc(vec![archive_expire(2, 90)]),
                "selection/storageClass",
                json!("standard"),
            ),
            &[
                "rule with rulePriority 2:",
                "only allowed with storageClass \"archive\"",
            ],
        );
        rejects(
            &without(doc(vec![archive_expire(2, 90)]), "selection/storageClass"),
            &[
                "rule with rulePriority 2:",
                "only allowed with storageClass \"archive\"",
            ],
        );
        // storageClass archive only with sinceImageTransitioned.
        for d in [
            untagged_pushed(9, 1),
            any_count(9, 1),
            prefix_count(9, &["a"], 1),
        ] {
            rejects(
                &with(doc(vec![d]), "selection/storageClass", json!("archive")),
                &[
                    "rule with rulePriority 9:",
                    "storageClass \"archive\" is only allowed with countType \"sinceImageTransitioned\"",
                ],
            );
        }
        rejects(
            &with(
                doc(vec![pulled_transition(9, 1)]),
                "selection/storageClass",
                json!("archive"),
            ),
            &[
                "rule with rulePriority 9:",
                "storageClass \"archive\" is only allowed",
            ],
        );
        for bad in ["ARCHIVE", "glacier"] {
            rejects(
                &with(
                    doc(vec![archive_expire(2, 90)]),
                    "selection/storageClass",
                    json!(bad),
                ),
                &[
                    "rule with rulePriority 2:",
                    "storageClass must be \"standard\" or \"archive\" (case-sensitive)",
                ],
            );
        }
        // Tagged archive rules are fine.
        let tagged_archive = rule(
            json!(1),
            json!({ "tagStatus": "tagged", "tagPrefixList": ["a"], "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 120 }),
            expire(),
        );
        assert!(parse_value(&doc(vec![tagged_archive])).is_ok());
    }

    #[test]
    fn v9_ninety_days_in_archive() {
        assert!(parse_value(&doc(vec![archive_expire(1, 90)])).is_ok());
        rejects(
            &doc(vec![archive_expire(1, 89)]),
            &["rule with rulePriority 1:", "countNumber >= 90", "got 89"],
        );
        rejects(
            &doc(vec![archive_expire(1, 1)]),
            &["rule with rulePriority 1:", "countNumber >= 90"],
        );
    }

    #[test]
    fn v10_any_rule_is_last_per_storage_class() {
        rejects(
            &doc(vec![
                untagged_pushed(1, 1),
                any_count(2, 3),
                pattern_count(5, &["a*"], 1),
            ]),
            &[
                "rule with rulePriority 2:",
                "storageClass \"standard\"",
                "rulePriority 5 comes after it",
            ],
        );
        // Two `any` rules in one class: the first is not the last.
        rejects(
            &doc(vec![any_count(1, 3), pulled_transition(2, 30)]),
            &[
                "rule with rulePriority 1:",
                "\"any\" must have the highest rulePriority",
            ],
        );
        rejects(
            &doc(vec![
                archive_expire(1, 90),
                rule(
                    json!(2),
                    json!({ "tagStatus": "tagged", "tagPrefixList": ["a"], "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 100 }),
                    expire(),
                ),
            ]),
            &[
                "rule with rulePriority 1:",
                "storageClass \"archive\"",
                "rulePriority 2 comes after it",
            ],
        );
        // Per storage class: a standard `any` rule may precede archive rules, and vice versa.
        assert!(parse_value(&doc(vec![any_count(1, 3), archive_expire(2, 90)])).is_ok());
        assert!(
            parse_value(&doc(vec![
                archive_expire(1, 90),
                prefix_count(2, &["a"], 1),
                any_count(3, 3)
            ]))
            .is_ok()
        );
    }

    #[test]
    fn v11_one_untagged_rule_per_storage_class() {
        rejects(
            &doc(vec![
                untagged_pushed(1, 1),
                prefix_count(2, &["a"], 1),
                untagged_pushed(4, 9),
            ]),
            &[
                "rule with rulePriority 4:",
                "only one rule with tagStatus \"untagged\"",
                "rulePriority 1 already",
            ],
        );
        // `any` rules don't count as untagged.
        assert!(parse_value(&doc(vec![untagged_pushed(1, 1), any_count(2, 1)])).is_ok());
        // One per class.
        let archive_untagged = rule(
            json!(2),
            json!({ "tagStatus": "untagged", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90 }),
            expire(),
        );
        assert!(parse_value(&doc(vec![untagged_pushed(1, 1), archive_untagged])).is_ok());
    }

    #[test]
    fn v12_distinct_tag_filters_per_storage_class() {
        rejects(
            &doc(vec![
                prefix_count(1, &["a", "b"], 1),
                prefix_count(2, &["b", "a"], 5),
            ]),
            &[
                "rule with rulePriority 2:",
                "tagPrefixList [\"b\",\"a\"] repeats",
                "rulePriority 1",
            ],
        );
        rejects(
            &doc(vec![
                pattern_count(3, &["p*"], 1),
                untagged_pushed(4, 1),
                pattern_count(7, &["p*", "p*"], 2),
            ]),
            &[
                "rule with rulePriority 7:",
                "tagPatternList",
                "rulePriority 3",
            ],
        );
        // Different sets, different kinds, or different classes are fine.
        assert!(
            parse_value(&doc(vec![
                prefix_count(1, &["a"], 1),
                prefix_count(2, &["a", "b"], 1)
            ]))
            .is_ok()
        );
        assert!(
            parse_value(&doc(vec![
                prefix_count(1, &["a"], 1),
                pattern_count(2, &["a"], 1)
            ]))
            .is_ok()
        );
        let archive_a = rule(
            json!(2),
            json!({ "tagStatus": "tagged", "tagPrefixList": ["a"], "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 90 }),
            expire(),
        );
        assert!(parse_value(&doc(vec![prefix_count(1, &["a"], 1), archive_a])).is_ok());
    }

    // ---- properties -------------------------------------------------------------

    /// A rule that is valid on its own (V3–V9), as (document value, expected rule).
    fn arb_rule() -> impl Strategy<Value = (Value, Rule)> {
        let filter = prop_oneof![
            Just((TagStatus::Untagged, TagFilter::None)),
            Just((TagStatus::Any, TagFilter::None)),
            prop::collection::vec(prop::sample::select(vec!["a", "b", "prod", "v1."]), 1..3)
                .prop_map(|l| (
                    TagStatus::Tagged,
                    TagFilter::Prefixes(l.into_iter().map(String::from).collect())
                )),
            prop::collection::vec(prop::sample::select(vec!["a*", "*b*", "prod-*", "*"]), 1..3)
                .prop_map(|l| (
                    TagStatus::Tagged,
                    TagFilter::Patterns(l.into_iter().map(String::from).collect())
                )),
        ];
        let standard = prop_oneof![
            (1u64..10, any::<bool>()).prop_map(|(n, t)| (
                Count::MoreThan(n),
                if t {
                    Action::Transition
                } else {
                    Action::Expire
                }
            )),
            (1u64..400, any::<bool>()).prop_map(|(n, t)| (
                Count::SincePushedDays(n),
                if t {
                    Action::Transition
                } else {
                    Action::Expire
                }
            )),
            (1u64..400).prop_map(|n| (Count::SincePulledDays(n), Action::Transition)),
        ]
        .prop_map(|(c, a)| (StorageClass::Standard, c, a));
        let archive = (90u64..400).prop_map(|n| {
            (
                StorageClass::Archive,
                Count::SinceTransitionedDays(n),
                Action::Expire,
            )
        });
        let body = prop_oneof![3 => standard, 1 => archive];
        (filter, body, proptest::option::of("[a-z ]{0,12}")).prop_map(
            |((tag_status, tag_filter), (storage_class, count, action), description)| {
                let rule = Rule {
                    priority: 0,
                    description,
                    tag_status,
                    tag_filter,
                    storage_class,
                    count,
                    action,
                };
                (to_json(&rule), rule)
            },
        )
    }

    fn to_json(rule: &Rule) -> Value {
        let mut selection = json!({
            "tagStatus": match rule.tag_status { TagStatus::Tagged => "tagged", TagStatus::Untagged => "untagged", TagStatus::Any => "any" },
        });
        match &rule.tag_filter {
            TagFilter::None => {}
            TagFilter::Prefixes(l) => selection["tagPrefixList"] = json!(l),
            TagFilter::Patterns(l) => selection["tagPatternList"] = json!(l),
        }
        if rule.storage_class == StorageClass::Archive {
            selection["storageClass"] = json!("archive");
        }
        let (count_type, n) = match rule.count {
            Count::MoreThan(n) => ("imageCountMoreThan", n),
            Count::SincePushedDays(n) => ("sinceImagePushed", n),
            Count::SincePulledDays(n) => ("sinceImagePulled", n),
            Count::SinceTransitionedDays(n) => ("sinceImageTransitioned", n),
        };
        selection["countType"] = json!(count_type);
        selection["countNumber"] = json!(n);
        if !matches!(rule.count, Count::MoreThan(_)) {
            selection["countUnit"] = json!("days");
        }
        let action = match rule.action {
            Action::Expire => expire(),
            Action::Transition => transition(),
        };
        let mut value =
            json!({ "rulePriority": rule.priority, "selection": selection, "action": action });
        if let Some(d) = &rule.description {
            value["description"] = json!(d);
        }
        value
    }

    /// The cross-rule problems (V10–V12) of rules sorted by priority, checked naively.
    fn cross_rule_problem(rules: &[Rule]) -> bool {
        rules.iter().enumerate().any(|(i, a)| {
            rules[i + 1..].iter().any(|b| {
                a.storage_class == b.storage_class
                    && (a.tag_status == TagStatus::Any
                        || (a.tag_status == TagStatus::Untagged
                            && b.tag_status == TagStatus::Untagged)
                        || match (&a.tag_filter, &b.tag_filter) {
                            (TagFilter::Prefixes(x), TagFilter::Prefixes(y))
                            | (TagFilter::Patterns(x), TagFilter::Patterns(y)) => {
                                x.iter().all(|e| y.contains(e)) && y.iter().all(|e| x.contains(e))
                            }
                            _ => false,
                        })
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Documents made of valid rules parse back to exactly those rules
        /// (sorted by priority), unless the rules conflict (V10–V12).
        #[test]
        fn valid_rules_round_trip(
            rules in prop::collection::vec(arb_rule(), 1..8),
            gaps in prop::collection::vec(1u32..4, 8),
            order in Just((0..8usize).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let mut expected: Vec<Rule> = Vec::new();
            let mut values = Vec::new();
            let mut priority = 0;
            for (i, (_, rule)) in rules.iter().enumerate() {
                priority += gaps[i];
                let rule = Rule { priority, ..rule.clone() };
                values.push(to_json(&rule));
                expected.push(rule);
            }
            // Present the rules in a shuffled order.
            let shuffled: Vec<Value> = order.iter().filter(|&&i| i < values.len()).map(|&i| values[i].clone()).collect();
            match parse_value(&doc(shuffled)) {
                Ok(policy) => {
                    prop_assert!(!cross_rule_problem(&expected));
                    prop_assert_eq!(policy.rules, expected);
                }
                Err(e) => {
                    prop_assert!(cross_rule_problem(&expected), "{}", e);
                    prop_assert!(e.0.starts_with("rule with rulePriority "), "{}", e);
                }
            }
        }

        /// Arbitrary text never panics the parser.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
            let _ = parse(&text);
        }

        /// Replacing any field of a valid rule by a value of the wrong kind is
        /// rejected with a message naming the rule.
        #[test]
        fn wrong_kinds_are_rejected(
            (_, base) in arb_rule(),
            field in prop::sample::select(vec!["rulePriority", "selection", "action", "selection/tagStatus", "selection/countType", "selection/countNumber", "action/type"]),
            bad in prop::sample::select(vec![json!(null), json!("x"), json!(-1), json!(0.5), json!([]), json!({})]),
        ) {
            let rule_value = to_json(&Rule { priority: 6, ..base });
            let d = with(doc(vec![rule_value]), field, bad.clone());
            let e = parse_value(&d).expect_err("accepted");
            let who = if field == "rulePriority" { "rules[0]: " } else { "rule with rulePriority 6: " };
            prop_assert!(e.0.starts_with(who), "{}", e);
        }
    }
}
