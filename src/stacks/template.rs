//! CloudFormation templates as text: JSON or YAML (whose short-form tags,
//! `!Ref X`, `!GetAtt A.B`, `!Sub …`, become their long form), checked for
//! CloudFormation's structural rules before anything is evaluated: the
//! sections, every resource's `Type` and attributes, the functions used, and
//! that every `Ref`, `Fn::GetAtt`, `Fn::Sub` variable and `DependsOn` names
//! something the template declares, without a dependency cycle.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// The largest `TemplateBody` CloudFormation accepts.
pub const MAX_TEMPLATE_BODY: usize = 51_200;

const SECTIONS: &[&str] = &[
    "AWSTemplateFormatVersion",
    "Description",
    "Metadata",
    "Parameters",
    "Rules",
    "Mappings",
    "Conditions",
    "Transform",
    "Resources",
    "Outputs",
];

const RESOURCE_ATTRIBUTES: &[&str] = &[
    "Type",
    "Properties",
    "DependsOn",
    "Condition",
    "DeletionPolicy",
    "UpdateReplacePolicy",
    "Metadata",
    "CreationPolicy",
    "UpdatePolicy",
];

pub const PARAMETER_TYPES: &[&str] = &[
    "String",
    "Number",
    "List<Number>",
    "CommaDelimitedList",
    "AWS::SSM::Parameter::Name",
];

/// The functions CloudFormation knows (`Ref` and `Condition` included), as
/// its error message lists them.
pub const FUNCTIONS: &[&str] = &[
    "Fn::Base64",
    "Fn::GetAtt",
    "Fn::GetAZs",
    "Fn::ImportValue",
    "Fn::Join",
    "Fn::Split",
    "Fn::FindInMap",
    "Fn::Select",
    "Ref",
    "Fn::Equals",
    "Fn::If",
    "Fn::Not",
    "Condition",
    "Fn::And",
    "Fn::Or",
    "Fn::Contains",
    "Fn::EachMemberEquals",
    "Fn::EachMemberIn",
    "Fn::ValueOf",
    "Fn::ValueOfAll",
    "Fn::RefAll",
    "Fn::Sub",
    "Fn::Cidr",
];

pub const PSEUDO_PARAMETERS: &[&str] = &[
    "AWS::AccountId",
    "AWS::Region",
    "AWS::StackName",
    "AWS::StackId",
    "AWS::Partition",
    "AWS::URLSuffix",
    "AWS::NoValue",
    "AWS::NotificationARNs",
];

/// A template that parsed and passed the structural checks: its JSON form.
#[derive(Clone, Debug)]
pub struct Template {
    pub root: Map<String, Value>,
}

/// Why a template is refused: CloudFormation's `ValidationError` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

fn format_error(msg: impl std::fmt::Display) -> TemplateError {
    TemplateError(format!("Template format error: {msg}"))
}

impl Template {
    /// Parse `body` (JSON when it starts with `{`, else YAML) and check it.
    /// `supported` says whether Berth can provision a resource type.
    pub fn parse(body: &str, supported: impl Fn(&str) -> bool) -> Result<Template, TemplateError> {
        if body.len() > MAX_TEMPLATE_BODY {
            return Err(TemplateError(format!(
                "1 validation error detected: Value at 'templateBody' failed to satisfy constraint: Member must have length less than or equal to {MAX_TEMPLATE_BODY}"
            )));
        }
        let value = if body.trim_start().starts_with('{') {
            serde_json::from_str::<Value>(body).map_err(|e| {
                format_error(format!(
                    "JSON not well-formed. (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?
        } else {
            let yaml: serde_yaml::Value = serde_yaml::from_str(body).map_err(|e| {
                let at = e
                    .location()
                    .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                    .unwrap_or_default();
                format_error(format!("YAML not well-formed.{at}"))
            })?;
            yaml_to_json(yaml)?
        };
        let Value::Object(root) = value else {
            return Err(format_error("unsupported structure."));
        };
        let t = Template { root };
        t.check(&supported)?;
        Ok(t)
    }

    pub fn section(&self, name: &str) -> Option<&Map<String, Value>> {
        self.root.get(name).and_then(Value::as_object)
    }

    pub fn description(&self) -> Option<&str> {
        self.root.get("Description").and_then(Value::as_str)
    }

    pub fn resources(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.section("Resources")
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    pub fn parameters(&self) -> Vec<(&str, &Map<String, Value>)> {
        self.section("Parameters")
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_object().map(|o| (k.as_str(), o)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The resource types the template declares, sorted, once each.
    pub fn resource_types(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .resources()
            .values()
            .filter_map(|r| r.get("Type").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        set.into_iter().collect()
    }

    /// The logical ids `logical` depends on: its `DependsOn` and every
    /// resource its properties (or condition-free attributes) refer to.
    pub fn dependencies(&self, logical: &str) -> BTreeSet<String> {
        let resources = self.resources();
        let mut deps = BTreeSet::new();
        let Some(r) = resources.get(logical) else {
            return deps;
        };
        match r.get("DependsOn") {
            Some(Value::String(s)) => {
                deps.insert(s.clone());
            }
            Some(Value::Array(list)) => {
                deps.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
            }
            _ => {}
        }
        if let Some(p) = r.get("Properties") {
            let mut refs = Vec::new();
            collect_refs(p, &mut refs);
            deps.extend(
                refs.into_iter()
                    .map(|(name, _)| name)
                    .filter(|n| resources.contains_key(n)),
            );
        }
        deps.remove(logical);
        deps
    }

    /// The resources in an order where each comes after what it depends on.
    pub fn creation_order(&self) -> Result<Vec<String>, TemplateError> {
        let names: Vec<String> = self.resources().keys().cloned().collect();
        let deps: BTreeMap<String, BTreeSet<String>> = names
            .iter()
            .map(|n| (n.clone(), self.dependencies(n)))
            .collect();
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut order = Vec::with_capacity(names.len());
        while order.len() < names.len() {
            let ready: Vec<String> = names
                .iter()
                .filter(|n| !done.contains(*n) && deps[*n].iter().all(|d| done.contains(d)))
                .cloned()
                .collect();
            if ready.is_empty() {
                let stuck: Vec<String> = names
                    .iter()
                    .filter(|n| !done.contains(*n))
                    .cloned()
                    .collect();
                return Err(TemplateError(format!(
                    "Circular dependency between resources: [{}]",
                    stuck.join(", ")
                )));
            }
            for n in ready {
                done.insert(n.clone());
                order.push(n);
            }
        }
        Ok(order)
    }

    fn check(&self, supported: &dyn Fn(&str) -> bool) -> Result<(), TemplateError> {
        let unknown: Vec<&str> = self
            .root
            .keys()
            .map(String::as_str)
            .filter(|k| !SECTIONS.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(format_error(format!(
                "Invalid template property or properties [{}]",
                unknown.join(", ")
            )));
        }
        if let Some(v) = self.root.get("AWSTemplateFormatVersion")
            && v.as_str() != Some("2010-09-09")
        {
            return Err(format_error(format!(
                "'{}' is not a supported AWSTemplateFormatVersion (2010-09-09 is)",
                display(v)
            )));
        }
        if let Some(t) = self.root.get("Transform") {
            return Err(TemplateError(format!(
                "Transform {} is not supported: Berth runs no template macros (expand the template first)",
                display(t)
            )));
        }
        if let Some(d) = self.root.get("Description")
            && !d.is_string()
        {
            return Err(format_error("Every Description member must be a string."));
        }
        for section in ["Parameters", "Mappings", "Conditions", "Outputs", "Rules"] {
            if let Some(v) = self.root.get(section)
                && !v.is_object()
            {
                return Err(format_error(format!(
                    "{section} must be an object (a map of names to declarations)"
                )));
            }
        }
        let Some(resources) = self.root.get("Resources").and_then(Value::as_object) else {
            return Err(format_error(
                "At least one Resources member must be defined.",
            ));
        };
        if resources.is_empty() {
            return Err(format_error(
                "At least one Resources member must be defined.",
            ));
        }
        let params: BTreeSet<&str> = self
            .section("Parameters")
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for (name, p) in self.section("Parameters").into_iter().flatten() {
            check_name("Parameter", name)?;
            let ty = p.get("Type").and_then(Value::as_str).ok_or_else(|| {
                format_error(format!(
                    "[/Parameters/{name}] Every Parameters object must contain a Type member."
                ))
            })?;
            if !is_parameter_type(ty) {
                return Err(format_error(format!("Unrecognized parameter type: {ty}")));
            }
        }
        let conditions: BTreeSet<&str> = self
            .section("Conditions")
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut unrecognized = BTreeSet::new();
        for (name, r) in resources {
            check_name("Resource", name)?;
            let Some(r) = r.as_object() else {
                return Err(format_error(format!(
                    "[/Resources/{name}] Every Resources object must contain a Type member."
                )));
            };
            let ty = r.get("Type").and_then(Value::as_str).ok_or_else(|| {
                format_error(format!(
                    "[/Resources/{name}] Every Resources object must contain a Type member."
                ))
            })?;
            if let Some(attr) = r
                .keys()
                .find(|k| !RESOURCE_ATTRIBUTES.contains(&k.as_str()))
            {
                return Err(format_error(format!(
                    "[/Resources/{name}] Invalid template resource property '{attr}'"
                )));
            }
            if !supported(ty) {
                unrecognized.insert(ty.to_string());
            }
            for policy in ["DeletionPolicy", "UpdateReplacePolicy"] {
                match r.get(policy) {
                    None => {}
                    Some(Value::String(p))
                        if ["Delete", "Retain", "RetainExceptOnCreate"].contains(&p.as_str()) => {}
                    Some(Value::String(p)) if p == "Snapshot" => {
                        return Err(TemplateError(format!(
                            "Template error: resource {name} of type {ty} does not support the {policy} Snapshot"
                        )));
                    }
                    Some(v) => {
                        return Err(format_error(format!(
                            "[/Resources/{name}/{policy}] Unrecognized {policy} {}",
                            display(v)
                        )));
                    }
                }
            }
            if let Some(c) = r.get("Condition") {
                let c = c.as_str().unwrap_or("");
                if !conditions.contains(c) {
                    return Err(format_error(format!(
                        "Unresolved dependencies [{c}]. Cannot reference resources in the Conditions block of the template"
                    )));
                }
            }
            match r.get("DependsOn") {
                None => {}
                Some(Value::String(d)) => self.check_depends(d)?,
                Some(Value::Array(list)) => {
                    for d in list {
                        let Some(d) = d.as_str() else {
                            return Err(format_error(format!(
                                "[/Resources/{name}/DependsOn] DependsOn must be a string or a list of strings"
                            )));
                        };
                        self.check_depends(d)?;
                    }
                }
                Some(_) => {
                    return Err(format_error(format!(
                        "[/Resources/{name}/DependsOn] DependsOn must be a string or a list of strings"
                    )));
                }
            }
            if let Some(p) = r.get("Properties")
                && !p.is_object()
            {
                return Err(format_error(format!(
                    "[/Resources/{name}/Properties] Properties must be an object"
                )));
            }
        }
        if !unrecognized.is_empty() {
            return Err(format_error(format!(
                "Unrecognized resource types: [{}]",
                unrecognized.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        for (name, o) in self.section("Outputs").into_iter().flatten() {
            check_name("Output", name)?;
            if o.get("Value").is_none() {
                return Err(format_error(format!(
                    "[/Outputs/{name}] Every Outputs member must contain a Value object"
                )));
            }
            if let Some(c) = o.get("Condition").and_then(Value::as_str)
                && !conditions.contains(c)
            {
                return Err(format_error(format!(
                    "Unresolved dependencies [{c}] in the Outputs block of the template"
                )));
            }
        }
        // Every function is known and every reference resolves.
        let mut refs = Vec::new();
        for section in ["Resources", "Outputs", "Conditions", "Rules"] {
            if let Some(v) = self.root.get(section) {
                check_functions(v)?;
                collect_refs(v, &mut refs);
            }
        }
        let unresolved: BTreeSet<String> = refs
            .into_iter()
            .filter(|(name, is_getatt)| {
                let resource = resources.contains_key(name);
                if *is_getatt {
                    !resource
                } else {
                    !resource
                        && !params.contains(name.as_str())
                        && !PSEUDO_PARAMETERS.contains(&name.as_str())
                }
            })
            .map(|(name, _)| name)
            .collect();
        if !unresolved.is_empty() {
            return Err(format_error(format!(
                "Unresolved resource dependencies [{}] in the Resources block of the template",
                unresolved.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        self.creation_order()?;
        Ok(())
    }

    fn check_depends(&self, d: &str) -> Result<(), TemplateError> {
        if self.resources().contains_key(d) {
            Ok(())
        } else {
            Err(format_error(format!(
                "Unresolved resource dependencies [{d}] in the Resources block of the template"
            )))
        }
    }
}

fn is_parameter_type(ty: &str) -> bool {
    PARAMETER_TYPES.contains(&ty)
        || (ty.starts_with("AWS::SSM::Parameter::Value<") && ty.ends_with('>'))
        || (ty.starts_with("List<AWS::") && ty.ends_with('>'))
        || (ty.starts_with("AWS::") && ty.matches("::").count() >= 2)
}

fn check_name(what: &str, name: &str) -> Result<(), TemplateError> {
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format_error(format!(
            "{what} name {name} is non alphanumeric."
        )));
    }
    Ok(())
}

/// A value as it appears in a message.
fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every function call in `v` is one CloudFormation knows.
fn check_functions(v: &Value) -> Result<(), TemplateError> {
    match v {
        Value::Object(m) => {
            if m.len() == 1 {
                let (k, _) = m.iter().next().expect("one entry");
                if k.starts_with("Fn::") && !FUNCTIONS.contains(&k.as_str()) {
                    return Err(format_error(format!(
                        "Encountered unsupported function: {k} Supported functions are: [{}]",
                        FUNCTIONS.join(", ")
                    )));
                }
            }
            m.values().try_for_each(check_functions)
        }
        Value::Array(a) => a.iter().try_for_each(check_functions),
        _ => Ok(()),
    }
}

/// The names `v` refers to, with whether each was by `Fn::GetAtt` (a
/// resource only) or by `Ref` / a `Fn::Sub` variable (a resource, parameter
/// or pseudo-parameter). A `Fn::Sub` with its own variable map does not
/// refer to those variables' names.
pub fn collect_refs(v: &Value, out: &mut Vec<(String, bool)>) {
    match v {
        Value::Object(m) if m.len() == 1 => {
            let (k, arg) = m.iter().next().expect("one entry");
            match (k.as_str(), arg) {
                ("Ref", Value::String(name)) => out.push((name.clone(), false)),
                ("Fn::GetAtt", Value::String(s)) => {
                    let name = s.split_once('.').map_or(s.as_str(), |(n, _)| n);
                    out.push((name.to_string(), true));
                }
                ("Fn::GetAtt", Value::Array(a)) => {
                    if let Some(Value::String(name)) = a.first() {
                        out.push((name.clone(), true));
                    }
                    a.iter().skip(1).for_each(|x| collect_refs(x, out));
                }
                ("Fn::Sub", Value::String(s)) => sub_refs(s, &BTreeSet::new(), out),
                ("Fn::Sub", Value::Array(a)) => {
                    let vars: BTreeSet<String> = a
                        .get(1)
                        .and_then(Value::as_object)
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    if let Some(Value::String(s)) = a.first() {
                        sub_refs(s, &vars, out);
                    }
                    a.iter().skip(1).for_each(|x| collect_refs(x, out));
                }
                _ => collect_refs(arg, out),
            }
        }
        Value::Object(m) => m.values().for_each(|x| collect_refs(x, out)),
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// The (resource, attribute) pairs `v` reads with `Fn::GetAtt` (literal
/// ones) and `Fn::Sub`'s `${Resource.Attribute}`.
pub fn collect_getatts(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if m.len() == 1 => {
            let (k, arg) = m.iter().next().expect("one entry");
            match (k.as_str(), arg) {
                ("Fn::GetAtt", Value::String(s)) => {
                    if let Some((r, a)) = s.split_once('.') {
                        out.push((r.to_string(), a.to_string()));
                    }
                }
                ("Fn::GetAtt", Value::Array(a)) => {
                    if let (Some(Value::String(r)), Some(Value::String(at))) = (a.first(), a.get(1))
                    {
                        out.push((r.clone(), at.clone()));
                    }
                }
                ("Fn::Sub", x) => {
                    let (text, vars) = match x {
                        Value::String(t) => (Some(t.as_str()), None),
                        Value::Array(a) => (a.first().and_then(Value::as_str), a.get(1)),
                        _ => (None, None),
                    };
                    for var in text.map(sub_variables).unwrap_or_default() {
                        let local = vars.and_then(|m| m.get(&var)).is_some();
                        if let Some((r, a)) = var.split_once('.')
                            && !local
                            && !var.starts_with("AWS::")
                        {
                            out.push((r.to_string(), a.to_string()));
                        }
                    }
                    if let Some(m) = vars {
                        collect_getatts(m, out);
                    }
                }
                _ => collect_getatts(arg, out),
            }
        }
        Value::Object(m) => m.values().for_each(|x| collect_getatts(x, out)),
        Value::Array(a) => a.iter().for_each(|x| collect_getatts(x, out)),
        _ => {}
    }
}

/// The `${Name}` and `${Name.Attr}` variables of a `Fn::Sub` string.
fn sub_refs(s: &str, vars: &BTreeSet<String>, out: &mut Vec<(String, bool)>) {
    for var in sub_variables(s) {
        if vars.contains(&var) {
            continue;
        }
        match var.split_once('.') {
            Some((name, _)) if !var.starts_with("AWS::") => out.push((name.to_string(), true)),
            _ => out.push((var, false)),
        }
    }
}

/// The variable names of a `Fn::Sub` string (`${!Literal}` is no variable).
pub fn sub_variables(s: &str) -> Vec<String> {
    let mut vars = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.starts_with('!') {
            vars.push(name.trim().to_string());
        }
        rest = &after[end + 1..];
    }
    vars
}

/// YAML's short-form tags as the long-form keys they stand for.
fn tag_function(tag: &str) -> Option<&'static str> {
    Some(match tag {
        "Ref" => "Ref",
        "Condition" => "Condition",
        "GetAtt" => "Fn::GetAtt",
        "Base64" => "Fn::Base64",
        "Cidr" => "Fn::Cidr",
        "FindInMap" => "Fn::FindInMap",
        "GetAZs" => "Fn::GetAZs",
        "ImportValue" => "Fn::ImportValue",
        "Join" => "Fn::Join",
        "Select" => "Fn::Select",
        "Split" => "Fn::Split",
        "Sub" => "Fn::Sub",
        "Transform" => "Fn::Transform",
        "And" => "Fn::And",
        "Equals" => "Fn::Equals",
        "If" => "Fn::If",
        "Not" => "Fn::Not",
        "Or" => "Fn::Or",
        "Contains" => "Fn::Contains",
        "EachMemberEquals" => "Fn::EachMemberEquals",
        "EachMemberIn" => "Fn::EachMemberIn",
        "ValueOf" => "Fn::ValueOf",
        "ValueOfAll" => "Fn::ValueOfAll",
        "RefAll" => "Fn::RefAll",
        _ => return None,
    })
}

fn yaml_to_json(v: serde_yaml::Value) -> Result<Value, TemplateError> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or_else(|| Value::String(n.to_string()), Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(
            seq.into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => {
                        return Err(format_error(format!(
                            "YAML not well-formed: a mapping key must be a scalar, not {other:?}"
                        )));
                    }
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let Some(function) = tag_function(name) else {
                return Err(format_error(format!(
                    "YAML not well-formed: unknown tag {tag}"
                )));
            };
            let arg = match (function, t.value) {
                // `!GetAtt Res.Attr` is the list [Res, Attr].
                ("Fn::GetAtt", Y::String(s)) => match s.split_once('.') {
                    Some((res, attr)) => Value::Array(vec![
                        Value::String(res.to_string()),
                        Value::String(attr.to_string()),
                    ]),
                    None => Value::String(s),
                },
                (_, inner) => yaml_to_json(inner)?,
            };
            let mut out = Map::new();
            out.insert(function.to_string(), arg);
            Value::Object(out)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Template, TemplateError> {
        Template::parse(body, |t| t.starts_with("AWS::ECR::"))
    }

    #[test]
    fn yaml_short_forms_become_long_forms() {
        let t = parse(
            "Parameters:\n  Name: {Type: String}\nResources:\n  Repo:\n    Type: AWS::ECR::Repository\n    Properties:\n      RepositoryName: !Ref Name\n      Tags:\n        - Key: arn\n          Value: !GetAtt Repo2.Arn\n        - Key: s\n          Value: !Sub '${AWS::Region}-${Name}'\n        - Key: j\n          Value: !Join [ '-', [ a, !Ref 'AWS::AccountId' ] ]\n  Repo2:\n    Type: AWS::ECR::Repository\n",
        )
        .unwrap();
        let props = &t.resources()["Repo"]["Properties"];
        assert_eq!(props["RepositoryName"], serde_json::json!({"Ref": "Name"}));
        assert_eq!(
            props["Tags"][0]["Value"],
            serde_json::json!({"Fn::GetAtt": ["Repo2", "Arn"]})
        );
        assert_eq!(
            props["Tags"][2]["Value"],
            serde_json::json!({"Fn::Join": ["-", ["a", {"Ref": "AWS::AccountId"}]]})
        );
        assert_eq!(t.creation_order().unwrap(), ["Repo2", "Repo"]);
    }

    #[test]
    fn structural_errors_use_cloudformations_words() {
        let err = |b: &str| parse(b).unwrap_err().0;
        assert!(err("Resources: [").contains("YAML not well-formed"));
        assert!(err("{\"Resources\": ").contains("JSON not well-formed"));
        assert_eq!(
            err("Resources: {}"),
            "Template format error: At least one Resources member must be defined."
        );
        assert!(
            err("Resources:\n  A: {Type: AWS::Foo::Bar}\n")
                .contains("Unrecognized resource types: [AWS::Foo::Bar]")
        );
        assert!(
            err("Resources:\n  A: {Type: AWS::ECR::Repository, Properties: {RepositoryName: {'Fn::Nope': x}}}\n")
                .contains("Encountered unsupported function: Fn::Nope")
        );
        assert!(
            err("Resources:\n  A: {Type: AWS::ECR::Repository, DependsOn: B}\n  B: {Type: AWS::ECR::Repository, DependsOn: A}\n")
                .starts_with("Circular dependency between resources: [A, B]")
        );
        assert!(
            err("Resources:\n  A: {Type: AWS::ECR::Repository, Properties: {RepositoryName: !Ref Missing}}\n")
                .contains("Unresolved resource dependencies [Missing]")
        );
        assert!(
            err("Resources:\n  A: {Type: AWS::ECR::Repository}\nBogus: 1\n").contains("[Bogus]")
        );
        assert!(err("Resources:\n  A: !Bogus x\n").contains("unknown tag !Bogus"));
    }

    #[test]
    fn sub_variables_skip_literals_and_local_names() {
        assert_eq!(
            sub_variables("${A}-${!Literal}-${B.Arn}-${AWS::Region}"),
            ["A", "B.Arn", "AWS::Region"]
        );
        let mut refs = Vec::new();
        collect_refs(
            &serde_json::json!({"Fn::Sub": ["${X}-${Y.Arn}", {"X": "1"}]}),
            &mut refs,
        );
        assert_eq!(refs, [("Y".to_string(), true)]);
    }
}
