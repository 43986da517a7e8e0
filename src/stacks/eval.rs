//! Evaluating a template's values: parameters (with their constraints and
//! the SSM-typed ones resolved), conditions, rules, and the intrinsic
//! functions and pseudo-parameters inside resource properties and outputs.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::template::{Template, TemplateError};

/// A value `Ref` / `Fn::GetAtt` cannot know yet (planning a change set
/// before the resource it names exists): whatever it flows into is marked
/// as known only after deployment.
pub const UNKNOWN: &str = "{{berth:known-after-deployment}}";

/// The pseudo-parameters of one stack.
#[derive(Clone, Debug)]
pub struct Pseudo {
    pub account: String,
    pub region: String,
    pub stack_name: String,
    pub stack_id: String,
}

/// A resource's identity as `Ref` and `Fn::GetAtt` see it.
#[derive(Clone, Debug, Default)]
pub struct Known {
    pub physical_id: String,
    pub attributes: BTreeMap<String, Value>,
}

/// Everything an expression can refer to.
pub struct Scope<'a> {
    pub pseudo: &'a Pseudo,
    /// Parameter values: a string, or a list for list types.
    pub params: &'a BTreeMap<String, Value>,
    pub conditions: &'a BTreeMap<String, bool>,
    pub mappings: Option<&'a Map<String, Value>>,
    pub resources: &'a BTreeMap<String, Known>,
    /// What `Fn::ImportValue` finds: export name → (value, exporting stack's name).
    pub exports: &'a Exports,
    /// Planning: a resource not in `resources` gives [`UNKNOWN`] instead of an error.
    pub planning: bool,
}

/// The exports of an account's other stacks: name → (value, stack name).
pub type Exports = BTreeMap<String, (String, String)>;

fn err(msg: impl std::fmt::Display) -> TemplateError {
    TemplateError(format!("Template error: {msg}"))
}

/// A parameter as given on a call: a value, or `UsePreviousValue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GivenParameter {
    pub key: String,
    pub value: Option<String>,
    pub use_previous: bool,
}

/// Parameter values by name, and the text each was given as.
pub type Resolved = (BTreeMap<String, Value>, BTreeMap<String, String>);

/// The parameters of `template` resolved from what the call gives, the
/// stack's previous values and the defaults, each checked against its
/// declaration; SSM-typed ones hold the parameter's value (and keep the
/// name they were given in `given_values`). `lookup_ssm` answers a
/// parameter store name.
pub fn resolve_parameters(
    template: &Template,
    given: &[GivenParameter],
    previous: &BTreeMap<String, String>,
    lookup_ssm: &dyn Fn(&str) -> Result<Option<String>, String>,
) -> Result<Resolved, TemplateError> {
    let declared = template.parameters();
    let unknown: Vec<&str> = given
        .iter()
        .map(|g| g.key.as_str())
        .filter(|k| !declared.iter().any(|(d, _)| d == k))
        .collect();
    if !unknown.is_empty() {
        return Err(TemplateError(format!(
            "Parameters: [{}] do not exist in the template",
            unknown.join(", ")
        )));
    }
    let mut values = BTreeMap::new();
    let mut given_values = BTreeMap::new();
    let mut missing = Vec::new();
    let mut unfetched = Vec::new();
    for (name, decl) in &declared {
        let g = given.iter().find(|g| g.key == *name);
        let raw = match g {
            Some(g) if g.use_previous => match previous.get(*name) {
                Some(v) => Some(v.clone()),
                None => {
                    return Err(TemplateError(format!(
                        "Invalid input for parameter key {name}. Cannot specify usePreviousValue as true for a parameter key not in the previous template"
                    )));
                }
            },
            Some(g) => g.value.clone(),
            None => decl.get("Default").map(scalar_text),
        };
        let Some(raw) = raw else {
            missing.push(name.to_string());
            continue;
        };
        let ty = decl.get("Type").and_then(Value::as_str).unwrap_or("String");
        check_constraints(name, decl, ty, &raw)?;
        given_values.insert(name.to_string(), raw.clone());
        let value = if let Some(inner) = ty
            .strip_prefix("AWS::SSM::Parameter::Value<")
            .and_then(|t| t.strip_suffix('>'))
        {
            match lookup_ssm(&raw).map_err(TemplateError)? {
                Some(v) if inner.starts_with("List<") || inner == "CommaDelimitedList" => {
                    Value::Array(split_list(&v))
                }
                Some(v) => Value::String(v),
                None => {
                    unfetched.push(raw.clone());
                    continue;
                }
            }
        } else if ty.starts_with("List<") || ty == "CommaDelimitedList" {
            Value::Array(split_list(&raw))
        } else {
            Value::String(raw)
        };
        values.insert(name.to_string(), value);
    }
    if !missing.is_empty() {
        return Err(TemplateError(format!(
            "Parameters: [{}] must have values",
            missing.join(", ")
        )));
    }
    if !unfetched.is_empty() {
        return Err(TemplateError(format!(
            "Unable to fetch parameters [{}] from parameter store for this account.",
            unfetched.join(",")
        )));
    }
    Ok((values, given_values))
}

fn split_list(s: &str) -> Vec<Value> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',')
        .map(|x| Value::String(x.trim().to_string()))
        .collect()
}

/// A scalar's text as a parameter value (`Default: 5` is "5").
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(scalar_text).collect::<Vec<_>>().join(","),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn check_constraints(
    name: &str,
    decl: &Map<String, Value>,
    ty: &str,
    raw: &str,
) -> Result<(), TemplateError> {
    let described = |fallback: String| {
        let msg = decl
            .get("ConstraintDescription")
            .and_then(Value::as_str)
            .map_or(fallback, str::to_string);
        TemplateError(format!("Parameter '{name}' {msg}"))
    };
    let items: Vec<&str> = if ty.starts_with("List<") || ty == "CommaDelimitedList" {
        raw.split(',').map(str::trim).collect()
    } else {
        vec![raw]
    };
    if ty == "Number" || ty == "List<Number>" {
        for i in &items {
            if i.parse::<f64>().is_err() {
                return Err(TemplateError(format!(
                    "Parameter '{name}' must be a number not '{i}'"
                )));
            }
        }
    }
    if let Some(allowed) = decl.get("AllowedValues").and_then(Value::as_array) {
        let allowed: Vec<String> = allowed.iter().map(scalar_text).collect();
        if items.iter().any(|i| !allowed.iter().any(|a| a == i)) {
            return Err(described("must be one of AllowedValues".to_string()));
        }
    }
    let number = |k: &str| decl.get(k).and_then(|v| scalar_text(v).parse::<f64>().ok());
    for i in &items {
        let len = i.chars().count() as f64;
        if number("MinLength").is_some_and(|m| len < m) {
            return Err(described(format!(
                "must contain at least {} characters",
                number("MinLength").unwrap_or(0.0)
            )));
        }
        if number("MaxLength").is_some_and(|m| len > m) {
            return Err(described(format!(
                "must contain at most {} characters",
                number("MaxLength").unwrap_or(0.0)
            )));
        }
        if let Ok(n) = i.parse::<f64>() {
            if number("MinValue").is_some_and(|m| n < m) {
                return Err(described(format!(
                    "must be a number greater than or equal to {}",
                    number("MinValue").unwrap_or(0.0)
                )));
            }
            if number("MaxValue").is_some_and(|m| n > m) {
                return Err(described(format!(
                    "must be a number less than or equal to {}",
                    number("MaxValue").unwrap_or(0.0)
                )));
            }
        }
        if let Some(pattern) = decl.get("AllowedPattern").and_then(Value::as_str)
            && !pattern_matches(pattern, i)?
        {
            return Err(described(format!(
                "failed to satisfy constraint: Value '{i}' must match pattern {pattern}"
            )));
        }
    }
    Ok(())
}

/// Whether `text` matches `pattern` wholly (CloudFormation anchors
/// `AllowedPattern`, a Java-style regular expression).
fn pattern_matches(pattern: &str, text: &str) -> Result<bool, TemplateError> {
    let re = regex_lite::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| TemplateError(format!("Invalid AllowedPattern {pattern}: {e}")))?;
    Ok(re.is_match(text))
}

/// Evaluate the `Conditions` section.
pub fn evaluate_conditions(
    template: &Template,
    pseudo: &Pseudo,
    params: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, bool>, TemplateError> {
    let Some(section) = template.section("Conditions") else {
        return Ok(BTreeMap::new());
    };
    let mut done = BTreeMap::new();
    let resources = BTreeMap::new();
    for name in section.keys() {
        condition_value(
            name,
            section,
            &mut done,
            &mut Vec::new(),
            pseudo,
            params,
            template.section("Mappings"),
            &resources,
        )?;
    }
    Ok(done)
}

#[allow(clippy::too_many_arguments)]
fn condition_value(
    name: &str,
    section: &Map<String, Value>,
    done: &mut BTreeMap<String, bool>,
    visiting: &mut Vec<String>,
    pseudo: &Pseudo,
    params: &BTreeMap<String, Value>,
    mappings: Option<&Map<String, Value>>,
    resources: &BTreeMap<String, Known>,
) -> Result<bool, TemplateError> {
    if let Some(v) = done.get(name) {
        return Ok(*v);
    }
    if visiting.iter().any(|v| v == name) {
        return Err(err(format!(
            "Circular dependency between conditions: [{}]",
            visiting.join(", ")
        )));
    }
    let Some(expr) = section.get(name) else {
        return Err(err(format!("Unresolved condition dependency {name}")));
    };
    visiting.push(name.to_string());
    // Conditions a condition names are evaluated first.
    let mut names = Vec::new();
    condition_names(expr, &mut names);
    for n in names {
        condition_value(
            &n, section, done, visiting, pseudo, params, mappings, resources,
        )?;
    }
    visiting.pop();
    let conditions = done.clone();
    let exports = Exports::new();
    let scope = Scope {
        pseudo,
        params,
        conditions: &conditions,
        mappings,
        resources,
        exports: &exports,
        planning: false,
    };
    let v = scope.condition(expr)?;
    done.insert(name.to_string(), v);
    Ok(v)
}

fn condition_names(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if m.len() == 1 => {
            let (k, arg) = m.iter().next().expect("one entry");
            if k == "Condition" {
                if let Some(s) = arg.as_str() {
                    out.push(s.to_string());
                }
            } else {
                condition_names(arg, out);
            }
        }
        Value::Object(m) => m.values().for_each(|x| condition_names(x, out)),
        Value::Array(a) => a.iter().for_each(|x| condition_names(x, out)),
        _ => {}
    }
}

/// Check the `Rules` section: every assertion of every rule whose
/// `RuleCondition` holds must be true.
pub fn check_rules(
    template: &Template,
    pseudo: &Pseudo,
    params: &BTreeMap<String, Value>,
) -> Result<(), TemplateError> {
    let Some(rules) = template.section("Rules") else {
        return Ok(());
    };
    let conditions = BTreeMap::new();
    let resources = BTreeMap::new();
    let exports = Exports::new();
    let scope = Scope {
        pseudo,
        params,
        conditions: &conditions,
        mappings: template.section("Mappings"),
        resources: &resources,
        exports: &exports,
        planning: false,
    };
    for (name, rule) in rules {
        if let Some(c) = rule.get("RuleCondition")
            && !scope.condition(c)?
        {
            continue;
        }
        for a in rule
            .get("Assertions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(assert) = a.get("Assert") else {
                return Err(err(format!("Rule {name}: every assertion needs an Assert")));
            };
            if !scope.condition(assert)? {
                let why = a
                    .get("AssertDescription")
                    .and_then(Value::as_str)
                    .map_or_else(
                        || format!("Assertion failed for rule {name}"),
                        str::to_string,
                    );
                return Err(TemplateError(why));
            }
        }
    }
    Ok(())
}

impl Scope<'_> {
    /// A condition expression's truth.
    pub fn condition(&self, v: &Value) -> Result<bool, TemplateError> {
        match self.eval(v)? {
            Some(Value::Bool(b)) => Ok(b),
            Some(Value::String(s)) if s == "true" => Ok(true),
            Some(Value::String(s)) if s == "false" => Ok(false),
            other => Err(err(format!(
                "a condition must evaluate to true or false, not {}",
                other.map_or_else(|| "AWS::NoValue".to_string(), |v| v.to_string())
            ))),
        }
    }

    /// Evaluate `v`; `None` is `AWS::NoValue` (the property is left out).
    pub fn eval(&self, v: &Value) -> Result<Option<Value>, TemplateError> {
        match v {
            Value::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().expect("one entry");
                if k == "Ref" || k == "Condition" || k.starts_with("Fn::") {
                    return self.function(k, arg);
                }
                let mut out = Map::new();
                if let Some(x) = self.eval(arg)? {
                    out.insert(k.clone(), x);
                }
                Ok(Some(Value::Object(out)))
            }
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    if let Some(x) = self.eval(x)? {
                        out.insert(k.clone(), x);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for x in a {
                    if let Some(x) = self.eval(x)? {
                        out.push(x);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            other => Ok(Some(other.clone())),
        }
    }

    fn value(&self, v: &Value, what: &str) -> Result<Value, TemplateError> {
        self.eval(v)?
            .ok_or_else(|| err(format!("{what}: AWS::NoValue cannot be used here")))
    }

    fn string(&self, v: &Value, what: &str) -> Result<String, TemplateError> {
        match self.value(v, what)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(err(format!("{what} must be a string, not {other}"))),
        }
    }

    fn list(&self, v: &Value, what: &str) -> Result<Vec<Value>, TemplateError> {
        match self.value(v, what)? {
            Value::Array(a) => Ok(a),
            Value::String(s) if s == UNKNOWN => Ok(vec![Value::String(UNKNOWN.to_string())]),
            other => Err(err(format!("{what} must be a list, not {other}"))),
        }
    }

    fn args<'v>(&self, arg: &'v Value, f: &str, n: usize) -> Result<&'v [Value], TemplateError> {
        match arg.as_array() {
            Some(a) if a.len() == n => Ok(a),
            _ => Err(err(format!("{f} takes a list of {n} arguments"))),
        }
    }

    fn reference(&self, name: &str) -> Result<Option<Value>, TemplateError> {
        let p = self.pseudo;
        Ok(Some(match name {
            "AWS::AccountId" => Value::String(p.account.clone()),
            "AWS::Region" => Value::String(p.region.clone()),
            "AWS::StackName" => Value::String(p.stack_name.clone()),
            "AWS::StackId" => Value::String(p.stack_id.clone()),
            "AWS::Partition" => Value::String("aws".into()),
            "AWS::URLSuffix" => Value::String("amazonaws.com".into()),
            "AWS::NotificationARNs" => Value::Array(Vec::new()),
            "AWS::NoValue" => return Ok(None),
            n => {
                if let Some(v) = self.params.get(n) {
                    v.clone()
                } else if let Some(r) = self.resources.get(n) {
                    Value::String(r.physical_id.clone())
                } else if self.planning {
                    Value::String(UNKNOWN.into())
                } else {
                    return Err(err(format!("Unresolved reference {n}")));
                }
            }
        }))
    }

    fn attribute(&self, name: &str, attr: &str) -> Result<Value, TemplateError> {
        match self.resources.get(name) {
            Some(r) => r.attributes.get(attr).cloned().ok_or_else(|| {
                err(format!(
                    "resource {name} does not support attribute type {attr} in Fn::GetAtt"
                ))
            }),
            None if self.planning => Ok(Value::String(UNKNOWN.into())),
            None => Err(err(format!("Unresolved resource {name} in Fn::GetAtt"))),
        }
    }

    fn function(&self, f: &str, arg: &Value) -> Result<Option<Value>, TemplateError> {
        let s = |v: String| Ok(Some(Value::String(v)));
        match f {
            "Ref" => {
                let Some(name) = arg.as_str() else {
                    return Err(err("Ref takes the name of a parameter or resource"));
                };
                self.reference(name)
            }
            "Condition" => {
                let Some(name) = arg.as_str() else {
                    return Err(err("Condition takes the name of a condition"));
                };
                match self.conditions.get(name) {
                    Some(b) => Ok(Some(Value::Bool(*b))),
                    None => Err(err(format!("Unresolved condition dependency {name}"))),
                }
            }
            "Fn::GetAtt" => {
                let (name, attr) = match arg {
                    Value::String(x) => match x.split_once('.') {
                        Some((n, a)) => (n.to_string(), a.to_string()),
                        None => return Err(err("Fn::GetAtt takes [resource, attribute]")),
                    },
                    Value::Array(a) if a.len() == 2 => (
                        a[0].as_str()
                            .ok_or_else(|| err("Fn::GetAtt takes [resource, attribute]"))?
                            .to_string(),
                        self.string(&a[1], "Fn::GetAtt attribute")?,
                    ),
                    _ => return Err(err("Fn::GetAtt takes [resource, attribute]")),
                };
                Ok(Some(self.attribute(&name, &attr)?))
            }
            "Fn::Join" => {
                let join_shape = || {
                    err(
                        "every Fn::Join object requires two parameters, (1) a string delimiter and (2) a list of strings to be joined or a function that returns a list of strings (such as Fn::GetAZs) to be joined.",
                    )
                };
                let a = self.args(arg, f, 2).map_err(|_| join_shape())?;
                if !(a[1].is_array() || a[1].is_object()) {
                    return Err(join_shape());
                }
                let delim = self.string(&a[0], "Fn::Join delimiter")?;
                let items = self.list(&a[1], "Fn::Join list")?;
                let mut parts = Vec::with_capacity(items.len());
                for i in &items {
                    parts.push(self.string(i, "Fn::Join item")?);
                }
                if parts.iter().any(|p| p.contains(UNKNOWN)) {
                    return s(UNKNOWN.into());
                }
                s(parts.join(&delim))
            }
            "Fn::Split" => {
                let a = self.args(arg, f, 2)?;
                let delim = self.string(&a[0], "Fn::Split delimiter")?;
                let text = self.string(&a[1], "Fn::Split source")?;
                if delim.is_empty() {
                    return Err(err("Fn::Split needs a delimiter"));
                }
                Ok(Some(Value::Array(
                    text.split(delim.as_str())
                        .map(|x| Value::String(x.to_string()))
                        .collect(),
                )))
            }
            "Fn::Select" => {
                let a = self.args(arg, f, 2)?;
                let idx = self.string(&a[0], "Fn::Select index")?;
                let items = self.list(&a[1], "Fn::Select list")?;
                let i: usize = idx
                    .parse()
                    .map_err(|_| err(format!("Fn::Select index {idx} is not a number")))?;
                if items.first().and_then(Value::as_str) == Some(UNKNOWN) {
                    return s(UNKNOWN.into());
                }
                items.get(i).cloned().map(Some).ok_or_else(|| {
                    err(format!(
                        "Fn::Select cannot select nonexistent value at index {i}"
                    ))
                })
            }
            "Fn::FindInMap" => {
                let a = self.args(arg, f, 3)?;
                let map = self.string(&a[0], "Fn::FindInMap map")?;
                let top = self.string(&a[1], "Fn::FindInMap key")?;
                let second = self.string(&a[2], "Fn::FindInMap key")?;
                self.mappings
                    .and_then(|m| m.get(&map))
                    .and_then(|m| m.get(&top))
                    .and_then(|m| m.get(&second))
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| err(format!("Unable to get mapping for {map}::{top}::{second}")))
            }
            "Fn::ImportValue" => {
                let name = self.string(arg, "Fn::ImportValue")?;
                match self.exports.get(&name) {
                    Some((value, _)) => s(value.clone()),
                    None => Err(TemplateError(format!("No export named {name} found."))),
                }
            }
            "Fn::Base64" => {
                use base64::Engine;
                let text = self.string(arg, "Fn::Base64")?;
                s(base64::engine::general_purpose::STANDARD.encode(text))
            }
            "Fn::GetAZs" => {
                let region = match self.string(arg, "Fn::GetAZs")? {
                    r if r.is_empty() => self.pseudo.region.clone(),
                    r => r,
                };
                Ok(Some(Value::Array(
                    ["a", "b", "c"]
                        .iter()
                        .map(|z| Value::String(format!("{region}{z}")))
                        .collect(),
                )))
            }
            "Fn::Sub" => {
                let (text, vars) = match arg {
                    Value::String(t) => (t.clone(), Map::new()),
                    Value::Array(a) if a.len() == 2 => {
                        let t = a[0]
                            .as_str()
                            .ok_or_else(|| err("Fn::Sub takes a string"))?
                            .to_string();
                        let m = a[1]
                            .as_object()
                            .ok_or_else(|| err("Fn::Sub variables must be a map"))?;
                        let mut vars = Map::new();
                        for (k, v) in m {
                            vars.insert(
                                k.clone(),
                                Value::String(self.string(v, "Fn::Sub variable")?),
                            );
                        }
                        (t, vars)
                    }
                    _ => return Err(err("Fn::Sub takes a string or [string, variables]")),
                };
                self.substitute(&text, &vars)
                    .map(|t| Some(Value::String(t)))
            }
            "Fn::If" => {
                let a = self.args(arg, f, 3)?;
                let name = a[0]
                    .as_str()
                    .ok_or_else(|| err("Fn::If takes a condition name first"))?;
                let Some(b) = self.conditions.get(name) else {
                    return Err(err(format!(
                        "Unresolved condition dependency {name} in Fn::If"
                    )));
                };
                self.eval(if *b { &a[1] } else { &a[2] })
            }
            "Fn::Equals" => {
                let a = self.args(arg, f, 2)?;
                let x = self.value(&a[0], "Fn::Equals")?;
                let y = self.value(&a[1], "Fn::Equals")?;
                Ok(Some(Value::Bool(loose_text(&x) == loose_text(&y))))
            }
            "Fn::Not" => {
                let a = self.args(arg, f, 1)?;
                Ok(Some(Value::Bool(!self.condition(&a[0])?)))
            }
            "Fn::And" | "Fn::Or" => {
                let a = arg
                    .as_array()
                    .filter(|a| (2..=10).contains(&a.len()))
                    .ok_or_else(|| err(format!("{f} takes 2 to 10 conditions")))?;
                let mut all = true;
                let mut any = false;
                for c in a {
                    let b = self.condition(c)?;
                    all &= b;
                    any |= b;
                }
                Ok(Some(Value::Bool(if f == "Fn::And" { all } else { any })))
            }
            "Fn::Contains" => {
                let a = self.args(arg, f, 2)?;
                let list = self.list(&a[0], "Fn::Contains list")?;
                let x = loose_text(&self.value(&a[1], "Fn::Contains value")?);
                Ok(Some(Value::Bool(list.iter().any(|i| loose_text(i) == x))))
            }
            "Fn::EachMemberEquals" => {
                let a = self.args(arg, f, 2)?;
                let list = self.list(&a[0], "Fn::EachMemberEquals list")?;
                let x = loose_text(&self.value(&a[1], "Fn::EachMemberEquals value")?);
                Ok(Some(Value::Bool(list.iter().all(|i| loose_text(i) == x))))
            }
            "Fn::EachMemberIn" => {
                let a = self.args(arg, f, 2)?;
                let list = self.list(&a[0], "Fn::EachMemberIn list")?;
                let within: Vec<String> = self
                    .list(&a[1], "Fn::EachMemberIn list")?
                    .iter()
                    .map(loose_text)
                    .collect();
                Ok(Some(Value::Bool(
                    list.iter().all(|i| within.contains(&loose_text(i))),
                )))
            }
            other => Err(err(format!(
                "{other} is not supported by Berth (no AWS-specific parameter types or CIDR arithmetic)"
            ))),
        }
    }

    fn substitute(&self, text: &str, vars: &Map<String, Value>) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let name = after[..end].trim();
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else {
                let v = if let Some(v) = vars.get(name) {
                    v.clone()
                } else if let Some((res, attr)) = name.split_once('.')
                    && !name.starts_with("AWS::")
                {
                    self.attribute(res, attr)?
                } else {
                    self.reference(name)?
                        .ok_or_else(|| err("Fn::Sub cannot substitute AWS::NoValue"))?
                };
                match v {
                    Value::String(x) if x == UNKNOWN => return Ok(UNKNOWN.into()),
                    Value::String(x) => out.push_str(&x),
                    Value::Array(a) => {
                        out.push_str(&a.iter().map(loose_text).collect::<Vec<_>>().join(","))
                    }
                    other => out.push_str(&loose_text(&other)),
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

impl Scope<'_> {
    /// The export names `v` imports (each `Fn::ImportValue` argument that
    /// evaluates without the stack's resources).
    pub fn imports(&self, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) if m.len() == 1 && m.contains_key("Fn::ImportValue") => {
                if let Ok(name) = self.string(&m["Fn::ImportValue"], "Fn::ImportValue")
                    && !out.contains(&name)
                {
                    out.push(name);
                }
            }
            Value::Object(m) => m.values().for_each(|x| self.imports(x, out)),
            Value::Array(a) => a.iter().for_each(|x| self.imports(x, out)),
            _ => {}
        }
    }
}

/// A value compared as text (`5` equals `"5"`, as in CloudFormation).
fn loose_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pseudo() -> Pseudo {
        Pseudo {
            account: "123456789012".into(),
            region: "us-east-1".into(),
            stack_name: "s".into(),
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1".into(),
        }
    }

    #[test]
    fn functions_evaluate_as_cloudformation_does() {
        let p = pseudo();
        let params = BTreeMap::from([
            ("Env".to_string(), json!("prod")),
            ("Zones".to_string(), json!(["a", "b"])),
        ]);
        let conditions = BTreeMap::from([("IsProd".to_string(), true)]);
        let mappings = json!({"M": {"prod": {"Count": 5}}});
        let resources = BTreeMap::from([(
            "Repo".to_string(),
            Known {
                physical_id: "repo-x".into(),
                attributes: BTreeMap::from([("Arn".to_string(), json!("arn:repo"))]),
            },
        )]);
        let exports = Exports::from([(
            "net-vpc".to_string(),
            ("vpc-1".to_string(), "network".to_string()),
        )]);
        let scope = Scope {
            pseudo: &p,
            params: &params,
            conditions: &conditions,
            mappings: mappings.as_object(),
            resources: &resources,
            exports: &exports,
            planning: false,
        };
        let e = |v: Value| scope.eval(&v).unwrap();
        assert_eq!(
            e(json!({"Fn::Sub": "${AWS::Region}-${Env}-${Repo}-${Repo.Arn}-${!Lit}"})),
            Some(json!("us-east-1-prod-repo-x-arn:repo-${Lit}"))
        );
        assert_eq!(
            e(json!({"Fn::Join": [",", {"Ref": "Zones"}]})),
            Some(json!("a,b"))
        );
        assert_eq!(
            e(json!({"Fn::Select": ["1", {"Fn::Split": ["|", "x|y|z"]}]})),
            Some(json!("y"))
        );
        assert_eq!(
            e(json!({"Fn::FindInMap": ["M", {"Ref": "Env"}, "Count"]})),
            Some(json!(5))
        );
        assert_eq!(
            e(json!({"Fn::If": ["IsProd", {"Ref": "AWS::NoValue"}, "x"]})),
            None
        );
        assert_eq!(
            e(json!({"A": {"Ref": "AWS::NoValue"}, "B": 1})),
            Some(json!({"B": 1}))
        );
        assert_eq!(
            e(
                json!({"Fn::And": [{"Fn::Equals": [5, "5"]}, {"Fn::Not": [{"Condition": "IsProd"}]}]})
            ),
            Some(json!(false))
        );
        assert_eq!(e(json!({"Fn::Base64": "hi"})), Some(json!("aGk=")));
        assert_eq!(
            e(json!({"Fn::ImportValue": {"Fn::Sub": "net-vpc"}})),
            Some(json!("vpc-1"))
        );
        assert_eq!(
            scope
                .eval(&json!({"Fn::ImportValue": "nope"}))
                .unwrap_err()
                .0,
            "No export named nope found."
        );
        assert!(
            scope
                .eval(&json!({"Fn::GetAtt": ["Repo", "Nope"]}))
                .is_err()
        );
    }

    #[test]
    fn parameters_are_checked_against_their_declarations() {
        let t = Template::parse(
            "Parameters:\n  Env: {Type: String, AllowedValues: [dev, prod], Default: dev}\n  N: {Type: Number, MinValue: 1, MaxValue: 9}\n  Name: {Type: String, AllowedPattern: '[a-z][a-z0-9-]*', MaxLength: 10}\n  V: {Type: 'AWS::SSM::Parameter::Value<String>', Default: /cdk-bootstrap/x/version}\nResources:\n  R: {Type: AWS::ECR::Repository}\n",
            |_| true,
        )
        .unwrap();
        let given = |pairs: &[(&str, &str)]| -> Vec<GivenParameter> {
            pairs
                .iter()
                .map(|(k, v)| GivenParameter {
                    key: k.to_string(),
                    value: Some(v.to_string()),
                    use_previous: false,
                })
                .collect()
        };
        let ssm = |n: &str| Ok((n == "/cdk-bootstrap/x/version").then(|| "21".to_string()));
        let none = BTreeMap::new();
        let (v, raw) =
            resolve_parameters(&t, &given(&[("N", "3"), ("Name", "ab-1")]), &none, &ssm).unwrap();
        assert_eq!(v["Env"], json!("dev"));
        assert_eq!(v["V"], json!("21"));
        assert_eq!(raw["V"], "/cdk-bootstrap/x/version");
        let e = |g: &[(&str, &str)]| {
            resolve_parameters(&t, &given(g), &none, &ssm)
                .unwrap_err()
                .0
        };
        assert_eq!(e(&[("Name", "a")]), "Parameters: [N] must have values");
        assert!(e(&[("N", "10"), ("Name", "a")]).contains("less than or equal to 9"));
        assert!(e(&[("N", "x"), ("Name", "a")]).contains("must be a number"));
        assert!(e(&[("N", "1"), ("Name", "A")]).contains("must match pattern"));
        assert_eq!(
            e(&[("N", "1"), ("Name", "a"), ("Env", "qa")]),
            "Parameter 'Env' must be one of AllowedValues"
        );
        assert!(e(&[("N", "1"), ("Name", "a"), ("X", "1")]).contains("[X] do not exist"));
        let missing_ssm = |_: &str| Ok(None);
        assert!(
            resolve_parameters(
                &t,
                &given(&[("N", "1"), ("Name", "a")]),
                &none,
                &missing_ssm
            )
            .unwrap_err()
            .0
            .starts_with("Unable to fetch parameters [/cdk-bootstrap/x/version]")
        );
    }

    #[test]
    fn rules_and_conditions() {
        let t = Template::parse(
            r#"{"Parameters":{"BootstrapVersion":{"Type":"String","Default":"21"}},
                "Conditions":{"A":{"Fn::Equals":[{"Ref":"BootstrapVersion"},"21"]},"B":{"Fn::Not":[{"Condition":"A"}]}},
                "Rules":{"CheckBootstrapVersion":{"Assertions":[{"Assert":{"Fn::Not":[{"Fn::Contains":[["1","2","3","4","5"],{"Ref":"BootstrapVersion"}]}]},"AssertDescription":"CDK bootstrap stack version 6 required."}]}},
                "Resources":{"R":{"Type":"AWS::ECR::Repository","Condition":"B"}}}"#,
            |_| true,
        )
        .unwrap();
        let p = pseudo();
        let ok = BTreeMap::from([("BootstrapVersion".to_string(), json!("21"))]);
        check_rules(&t, &p, &ok).unwrap();
        let old = BTreeMap::from([("BootstrapVersion".to_string(), json!("3"))]);
        assert_eq!(
            check_rules(&t, &p, &old).unwrap_err().0,
            "CDK bootstrap stack version 6 required."
        );
        let c = evaluate_conditions(&t, &p, &ok).unwrap();
        assert!(c["A"]);
        assert!(!c["B"]);
    }

    #[test]
    fn allowed_patterns_match_whole_values() {
        let m = |p: &str, t: &str| pattern_matches(p, t).unwrap();
        assert!(m("[a-z][a-z0-9-]*", "abc-1"));
        assert!(!m("[a-z][a-z0-9-]*", "Abc"));
        assert!(m("^\\d{3,5}$", "1234"));
        assert!(!m("\\d{3,5}", "12"));
        assert!(m("dev|prod", "prod"));
        assert!(!m("dev|prod", "devprod"));
        assert!(pattern_matches("(", "x").is_err());
    }
}
