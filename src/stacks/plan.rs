//! What applying a template to a stack would change: the change set's
//! `Changes` (Add, Modify with or without replacement, Remove), computed
//! from the stack's resources and the evaluated template. The engine uses
//! the same evaluation when it applies the template.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::eval::{Known, UNKNOWN};
use super::template::TemplateError;
use super::{Prepared, ResourceRecord, providers};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    /// `Add`, `Modify` or `Remove`.
    pub action: String,
    pub logical_id: String,
    pub physical_id: Option<String>,
    pub resource_type: String,
    /// For `Modify`: `True`, `False` or `Conditional`.
    pub replacement: Option<String>,
    /// `Properties`, `Tags`.
    pub scope: Vec<String>,
    pub details: Vec<ChangeDetail>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeDetail {
    /// `Properties` or `Tags`.
    pub attribute: String,
    pub name: Option<String>,
    /// `Never` or `Always`.
    pub requires_recreation: String,
    /// `Static` or `Dynamic`.
    pub evaluation: String,
    pub change_source: String,
}

/// Whether a resource of the template exists under its `Condition`.
pub fn included(prepared: &Prepared, logical: &str) -> bool {
    match prepared.template.resources()[logical]
        .get("Condition")
        .and_then(Value::as_str)
    {
        Some(c) => prepared.conditions.get(c).copied().unwrap_or(false),
        None => true,
    }
}

/// A resource's properties evaluated against what is known of the
/// others, and checked against its type's schema. The error is the reason
/// the resource fails with.
pub fn evaluate_properties(
    prepared: &Prepared,
    logical: &str,
    known: &BTreeMap<String, Known>,
    planning: bool,
) -> Result<Value, String> {
    let decl = &prepared.template.resources()[logical];
    let ty = decl["Type"].as_str().unwrap_or_default();
    let scope = prepared.scope(known, planning);
    let props = match decl.get("Properties") {
        Some(p) => scope
            .eval(p)
            .map_err(|e| e.0)?
            .unwrap_or(Value::Object(Default::default())),
        None => Value::Object(Default::default()),
    };
    let props = providers::with_stack_tags(ty, props, &prepared.stack_tags);
    providers::check_properties(logical, ty, &props, planning)
}

fn has_unknown(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(UNKNOWN),
        Value::Array(a) => a.iter().any(has_unknown),
        Value::Object(m) => m.values().any(has_unknown),
        _ => false,
    }
}

/// What `Ref` / `Fn::GetAtt` know of a stack's resources: those that exist.
pub fn known(resources: &BTreeMap<String, ResourceRecord>) -> BTreeMap<String, Known> {
    resources
        .iter()
        .filter(|(_, r)| r.status != "CREATE_FAILED")
        .filter_map(|(k, r)| {
            Some((
                k.clone(),
                Known {
                    physical_id: r.physical_id.clone()?,
                    attributes: r.attributes.clone(),
                },
            ))
        })
        .collect()
}

/// The changes `prepared` makes to a stack whose resources are `current`.
pub fn changes(
    current: &BTreeMap<String, ResourceRecord>,
    prepared: &Prepared,
) -> Result<Vec<Change>, TemplateError> {
    let order = prepared.template.creation_order()?;
    let mut known = known(current);
    let mut out = Vec::new();
    let mut kept = Vec::new();
    for logical in &order {
        if !included(prepared, logical) {
            continue;
        }
        kept.push(logical.clone());
        let decl = &prepared.template.resources()[logical];
        let ty = decl["Type"].as_str().unwrap_or_default().to_string();
        let props = evaluate_properties(prepared, logical, &known, true).map_err(TemplateError)?;
        let Some(old) = current.get(logical) else {
            known.remove(logical);
            out.push(Change {
                action: "Add".into(),
                logical_id: logical.clone(),
                physical_id: None,
                resource_type: ty,
                replacement: None,
                scope: Vec::new(),
                details: Vec::new(),
            });
            continue;
        };
        if old.resource_type == ty && old.properties == props {
            continue;
        }
        let replace = old.resource_type != ty
            || providers::requires_replacement(&ty, &old.properties, &props);
        let dynamic = has_unknown(&props);
        let mut names: Vec<String> = Vec::new();
        if let (Some(o), Some(n)) = (old.properties.as_object(), props.as_object()) {
            for k in o.keys().chain(n.keys()) {
                if o.get(k) != n.get(k) && !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
        let mut scope = Vec::new();
        let details = names
            .iter()
            .map(|name| {
                let attribute = if name == "Tags" { "Tags" } else { "Properties" };
                if !scope.iter().any(|s| s == attribute) {
                    scope.push(attribute.to_string());
                }
                let one_changed = |v: &Value| {
                    let mut p = old.properties.clone();
                    if let Some(m) = p.as_object_mut() {
                        match v.get(name) {
                            Some(x) => {
                                m.insert(name.clone(), x.clone());
                            }
                            None => {
                                m.remove(name);
                            }
                        }
                    }
                    p
                };
                let recreates =
                    providers::requires_replacement(&ty, &old.properties, &one_changed(&props));
                ChangeDetail {
                    attribute: attribute.to_string(),
                    name: (attribute == "Properties").then(|| name.clone()),
                    requires_recreation: if recreates { "Always" } else { "Never" }.into(),
                    evaluation: if props.get(name).is_some_and(has_unknown) {
                        "Dynamic"
                    } else {
                        "Static"
                    }
                    .into(),
                    change_source: "DirectModification".into(),
                }
            })
            .collect();
        if replace {
            known.remove(logical);
        }
        out.push(Change {
            action: "Modify".into(),
            logical_id: logical.clone(),
            physical_id: old.physical_id.clone(),
            resource_type: ty,
            replacement: Some(
                match (replace, dynamic) {
                    (true, _) => "True",
                    (false, true) => "Conditional",
                    (false, false) => "False",
                }
                .into(),
            ),
            scope,
            details,
        });
    }
    for (logical, old) in current {
        if !kept.contains(logical) {
            out.push(Change {
                action: "Remove".into(),
                logical_id: logical.clone(),
                physical_id: old.physical_id.clone(),
                resource_type: old.resource_type.clone(),
                replacement: None,
                scope: Vec::new(),
                details: Vec::new(),
            });
        }
    }
    Ok(out)
}
