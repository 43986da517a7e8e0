//! Resource providers: for each resource type Berth can provision, its
//! property schema (checked before anything is created, as CloudFormation's
//! registry schemas are), which property changes need a new physical
//! resource, and how it is created, updated and deleted, as ECR API calls
//! made through a [`Provisioner`] in the caller's name.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{ApiFault, Provisioner};

/// The property types of a schema.
enum Ty {
    Str,
    Bool,
    /// A JSON document: an object, or a string holding one.
    Json,
    Obj(&'static [Field]),
    List(&'static Ty),
}

struct Field {
    name: &'static str,
    ty: Ty,
    required: bool,
}

const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
    }
}

const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: true,
    }
}

static TAG: [Field; 2] = [req("Key", Ty::Str), req("Value", Ty::Str)];

static REPOSITORY: [Field; 9] = [
    f("RepositoryName", Ty::Str),
    f("ImageTagMutability", Ty::Str),
    f(
        "ImageTagMutabilityExclusionFilters",
        Ty::List(&Ty::Obj(&[
            req("ImageTagMutabilityExclusionFilterType", Ty::Str),
            req("ImageTagMutabilityExclusionFilterValue", Ty::Str),
        ])),
    ),
    f(
        "ImageScanningConfiguration",
        Ty::Obj(&[f("ScanOnPush", Ty::Bool)]),
    ),
    f(
        "EncryptionConfiguration",
        Ty::Obj(&[req("EncryptionType", Ty::Str), f("KmsKey", Ty::Str)]),
    ),
    f(
        "LifecyclePolicy",
        Ty::Obj(&[f("LifecyclePolicyText", Ty::Str), f("RegistryId", Ty::Str)]),
    ),
    f("RepositoryPolicyText", Ty::Json),
    f("Tags", Ty::List(&Ty::Obj(&TAG))),
    f("EmptyOnDelete", Ty::Bool),
];

static REGISTRY_POLICY: [Field; 1] = [req("PolicyText", Ty::Json)];

static REGISTRY_SCANNING: [Field; 2] = [
    req("ScanType", Ty::Str),
    req(
        "Rules",
        Ty::List(&Ty::Obj(&[
            req("ScanFrequency", Ty::Str),
            req(
                "RepositoryFilters",
                Ty::List(&Ty::Obj(&[
                    req("Filter", Ty::Str),
                    req("FilterType", Ty::Str),
                ])),
            ),
        ])),
    ),
];

static REPLICATION: [Field; 1] = [req(
    "ReplicationConfiguration",
    Ty::Obj(&[req(
        "Rules",
        Ty::List(&Ty::Obj(&[
            req(
                "Destinations",
                Ty::List(&Ty::Obj(&[
                    req("Region", Ty::Str),
                    req("RegistryId", Ty::Str),
                ])),
            ),
            f(
                "RepositoryFilters",
                Ty::List(&Ty::Obj(&[
                    req("Filter", Ty::Str),
                    req("FilterType", Ty::Str),
                ])),
            ),
        ])),
    )]),
)];

static CREATION_TEMPLATE: [Field; 10] = [
    req("Prefix", Ty::Str),
    req("AppliedFor", Ty::List(&Ty::Str)),
    f("Description", Ty::Str),
    f("ImageTagMutability", Ty::Str),
    f(
        "ImageTagMutabilityExclusionFilters",
        Ty::List(&Ty::Obj(&[
            req("ImageTagMutabilityExclusionFilterType", Ty::Str),
            req("ImageTagMutabilityExclusionFilterValue", Ty::Str),
        ])),
    ),
    f(
        "EncryptionConfiguration",
        Ty::Obj(&[req("EncryptionType", Ty::Str), f("KmsKey", Ty::Str)]),
    ),
    f("ResourceTags", Ty::List(&Ty::Obj(&TAG))),
    f("RepositoryPolicy", Ty::Str),
    f("LifecyclePolicy", Ty::Str),
    f("CustomRoleArn", Ty::Str),
];

static PULL_THROUGH_RULE: [Field; 6] = [
    f("EcrRepositoryPrefix", Ty::Str),
    f("UpstreamRegistryUrl", Ty::Str),
    f("UpstreamRegistry", Ty::Str),
    f("UpstreamRepositoryPrefix", Ty::Str),
    f("CredentialArn", Ty::Str),
    f("CustomRoleArn", Ty::Str),
];

pub const REPOSITORY_TYPE: &str = "AWS::ECR::Repository";
pub const PULL_THROUGH_RULE_TYPE: &str = "AWS::ECR::PullThroughCacheRule";
pub const REPLICATION_TYPE: &str = "AWS::ECR::ReplicationConfiguration";
pub const CREATION_TEMPLATE_TYPE: &str = "AWS::ECR::RepositoryCreationTemplate";
pub const REGISTRY_POLICY_TYPE: &str = "AWS::ECR::RegistryPolicy";
pub const REGISTRY_SCANNING_TYPE: &str = "AWS::ECR::RegistryScanningConfiguration";
pub const CDK_METADATA_TYPE: &str = "AWS::CDK::Metadata";

/// The resource types Berth provisions.
pub const TYPES: &[&str] = &[
    REPOSITORY_TYPE,
    REGISTRY_POLICY_TYPE,
    REGISTRY_SCANNING_TYPE,
    REPLICATION_TYPE,
    CREATION_TEMPLATE_TYPE,
    PULL_THROUGH_RULE_TYPE,
    CDK_METADATA_TYPE,
];

/// The attributes `Fn::GetAtt` can read of a type.
pub fn attributes(ty: &str) -> &'static [&'static str] {
    match ty {
        REPOSITORY_TYPE => &["Arn", "RepositoryUri"],
        REGISTRY_POLICY_TYPE | REGISTRY_SCANNING_TYPE | REPLICATION_TYPE => &["RegistryId"],
        CREATION_TEMPLATE_TYPE => &["CreatedAt", "UpdatedAt"],
        _ => &[],
    }
}

pub fn supported(ty: &str) -> bool {
    TYPES.contains(&ty)
}

fn schema(ty: &str) -> Option<&'static [Field]> {
    match ty {
        REPOSITORY_TYPE => Some(&REPOSITORY),
        REGISTRY_POLICY_TYPE => Some(&REGISTRY_POLICY),
        REGISTRY_SCANNING_TYPE => Some(&REGISTRY_SCANNING),
        REPLICATION_TYPE => Some(&REPLICATION),
        CREATION_TEMPLATE_TYPE => Some(&CREATION_TEMPLATE),
        PULL_THROUGH_RULE_TYPE => Some(&PULL_THROUGH_RULE),
        _ => None,
    }
}

/// Whether `v` is an intrinsic function call (unknown until evaluated).
fn is_intrinsic(v: &Value) -> bool {
    v.as_object().is_some_and(|m| {
        m.len() == 1
            && m.keys()
                .next()
                .is_some_and(|k| k == "Ref" || k.starts_with("Fn::"))
    })
}

/// Check `props` against the schema of `ty` and return them normalised
/// (`"true"` as a Boolean, numbers as strings, as CloudFormation converts
/// them). With `lenient`, intrinsic function calls pass unchecked (the
/// template's check, before evaluation). The error is CloudFormation's
/// "Properties validation failed" message.
pub fn check_properties(
    logical: &str,
    ty: &str,
    props: &Value,
    lenient: bool,
) -> Result<Value, String> {
    let Some(fields) = schema(ty) else {
        return Ok(props.clone());
    };
    let empty = json!({});
    let props = if props.is_null() { &empty } else { props };
    check_value(props, &Ty::Obj(fields), "#", lenient).map_err(|m| {
        format!("Properties validation failed for resource {logical} with message: [{m}]")
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(_) => "Number",
        Value::String(_) => "String",
        Value::Array(_) => "JSONArray",
        Value::Object(_) => "JSONObject",
    }
}

fn check_value(v: &Value, ty: &Ty, at: &str, lenient: bool) -> Result<Value, String> {
    let unknown = v.as_str().is_some_and(|s| s.contains(super::eval::UNKNOWN));
    if lenient && (is_intrinsic(v) || unknown) {
        return Ok(v.clone());
    }
    let wrong = |want: &str| format!("{at}: expected type: {want}, found: {}", type_name(v));
    match ty {
        Ty::Str => match v {
            Value::String(_) => Ok(v.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            _ => Err(wrong("String")),
        },
        Ty::Bool => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(wrong("Boolean")),
        },
        Ty::Json => match v {
            Value::Object(_) => Ok(v.clone()),
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(doc @ Value::Object(_)) => Ok(doc),
                _ => Err(format!("{at}: the string is not a JSON object")),
            },
            _ => Err(wrong("JSONObject")),
        },
        Ty::List(item) => {
            let Value::Array(a) = v else {
                return Err(wrong("JSONArray"));
            };
            a.iter()
                .enumerate()
                .map(|(i, x)| check_value(x, item, &format!("{at}/{i}"), lenient))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Ty::Obj(fields) => {
            let Value::Object(m) = v else {
                return Err(wrong("JSONObject"));
            };
            if let Some(k) = m
                .keys()
                .find(|k| !fields.iter().any(|f| f.name == k.as_str()))
            {
                return Err(format!("{at}: extraneous key [{k}] is not permitted"));
            }
            if let Some(missing) = fields
                .iter()
                .find(|f| f.required && !m.contains_key(f.name))
            {
                return Err(format!("{at}: required key [{}] not found", missing.name));
            }
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                let field = fields.iter().find(|f| f.name == k.as_str()).expect("known");
                out.insert(
                    k.clone(),
                    check_value(x, &field.ty, &format!("{at}/{k}"), lenient)?,
                );
            }
            Ok(Value::Object(out))
        }
    }
}

/// A resource's properties with the stack's tags added, for the types that
/// take tags (CloudFormation propagates them; the resource's own tag of
/// the same key wins).
pub fn with_stack_tags(ty: &str, mut props: Value, stack_tags: &[(String, String)]) -> Value {
    if ty != REPOSITORY_TYPE || stack_tags.is_empty() {
        return props;
    }
    let Some(m) = props.as_object_mut() else {
        return props;
    };
    let own: Vec<Value> = match m.get("Tags") {
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return props, // not a list: the schema check says so
        None => Vec::new(),
    };
    let mut tags: Vec<Value> = stack_tags
        .iter()
        .filter(|(k, _)| {
            !own.iter()
                .any(|t| t.get("Key").and_then(Value::as_str) == Some(k))
        })
        .map(|(k, v)| json!({ "Key": k, "Value": v }))
        .collect();
    tags.extend(own);
    m.insert("Tags".into(), Value::Array(tags));
    props
}

/// Whether changing a resource from `old` to `new` properties needs a new
/// physical resource (CloudFormation's "Replacement: True").
pub fn requires_replacement(ty: &str, old: &Value, new: &Value) -> bool {
    match ty {
        REPOSITORY_TYPE => {
            old.get("RepositoryName") != new.get("RepositoryName")
                || old.get("EncryptionConfiguration") != new.get("EncryptionConfiguration")
        }
        CREATION_TEMPLATE_TYPE => old.get("Prefix") != new.get("Prefix"),
        // Only the credentials of a rule can change in place.
        PULL_THROUGH_RULE_TYPE => [
            "EcrRepositoryPrefix",
            "UpstreamRegistryUrl",
            "UpstreamRegistry",
            "UpstreamRepositoryPrefix",
        ]
        .iter()
        .any(|k| old.get(*k) != new.get(*k)),
        _ => false,
    }
}

/// The property a replacement would need a new value of, when the resource
/// has a name the template chose (CloudFormation then refuses).
pub fn custom_name(ty: &str, props: &Value) -> Option<String> {
    match ty {
        REPOSITORY_TYPE => props
            .get("RepositoryName")
            .and_then(Value::as_str)
            .map(str::to_string),
        CREATION_TEMPLATE_TYPE => props
            .get("Prefix")
            .and_then(Value::as_str)
            .map(str::to_string),
        PULL_THROUGH_RULE_TYPE => props
            .get("EcrRepositoryPrefix")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// What a provider made or changed.
#[derive(Clone, Debug)]
pub struct Applied {
    pub physical_id: String,
    pub attributes: BTreeMap<String, Value>,
}

/// Why a provider failed, and the physical resource it left behind (which
/// a rollback must delete), if any.
#[derive(Clone, Debug)]
pub struct Failure {
    pub physical_id: Option<String>,
    pub reason: String,
}

fn failure(physical_id: Option<&str>, fault: ApiFault) -> Failure {
    Failure {
        physical_id: physical_id.map(str::to_string),
        reason: fault.reason(),
    }
}

/// What a new resource is named when its template gives no name: the
/// stack's name, the logical id and a random suffix, as CloudFormation does
/// (lower case, for ECR's repository names).
fn generated_name(stack_name: &str, logical: &str) -> String {
    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let mut base = format!("{stack_name}-{logical}");
    base.truncate(240);
    format!("{base}-{suffix}").to_ascii_lowercase()
}

fn mutability_input(props: &Value) -> Value {
    let mut v = json!({
        "imageTagMutability": props.get("ImageTagMutability").cloned().unwrap_or(json!("MUTABLE")),
    });
    if let Some(list) = props
        .get("ImageTagMutabilityExclusionFilters")
        .and_then(Value::as_array)
    {
        v["imageTagMutabilityExclusionFilters"] = Value::Array(
            list.iter()
                .map(|f| {
                    json!({
                        "filterType": f.get("ImageTagMutabilityExclusionFilterType"),
                        "filter": f.get("ImageTagMutabilityExclusionFilterValue"),
                    })
                })
                .collect(),
        );
    }
    v
}

fn tags_input(props: &Value) -> Vec<Value> {
    props
        .get("Tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| json!({ "Key": t.get("Key"), "Value": t.get("Value") }))
                .collect()
        })
        .unwrap_or_default()
}

fn policy_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// Create a resource of type `ty` from its (evaluated, checked) properties.
pub async fn create(
    p: &dyn Provisioner,
    ty: &str,
    logical: &str,
    stack_name: &str,
    props: &Value,
) -> Result<Applied, Failure> {
    match ty {
        REPOSITORY_TYPE => {
            let name = props
                .get("RepositoryName")
                .and_then(Value::as_str)
                .map_or_else(|| generated_name(stack_name, logical), str::to_string);
            let mut input = merge(json!({ "repositoryName": name }), mutability_input(props));
            if let Some(s) = props.get("ImageScanningConfiguration") {
                input["imageScanningConfiguration"] =
                    json!({ "scanOnPush": s.get("ScanOnPush").cloned().unwrap_or(json!(false)) });
            }
            if let Some(e) = props.get("EncryptionConfiguration") {
                let mut c = json!({ "encryptionType": e.get("EncryptionType") });
                if let Some(k) = e.get("KmsKey") {
                    c["kmsKey"] = k.clone();
                }
                input["encryptionConfiguration"] = c;
            }
            let tags = tags_input(props);
            if !tags.is_empty() {
                input["tags"] = Value::Array(tags);
            }
            let resp = p
                .call("CreateRepository", input)
                .await
                .map_err(|e| failure(None, e))?;
            let repo = &resp["repository"];
            let applied = Applied {
                physical_id: name.clone(),
                attributes: BTreeMap::from([
                    ("Arn".to_string(), repo["repositoryArn"].clone()),
                    ("RepositoryUri".to_string(), repo["repositoryUri"].clone()),
                ]),
            };
            put_repository_policies(p, &name, &Value::Null, props)
                .await
                .map_err(|e| failure(Some(&name), e))?;
            Ok(applied)
        }
        REGISTRY_POLICY_TYPE => {
            let resp = p
                .call(
                    "PutRegistryPolicy",
                    json!({ "policyText": policy_text(&props["PolicyText"]) }),
                )
                .await
                .map_err(|e| failure(None, e))?;
            Ok(registry_applied(p, &resp))
        }
        REGISTRY_SCANNING_TYPE => {
            let resp = put_scanning(p, props).await.map_err(|e| failure(None, e))?;
            Ok(registry_applied(p, &resp))
        }
        REPLICATION_TYPE => {
            p.call("PutReplicationConfiguration", replication_input(props))
                .await
                .map_err(|e| failure(None, e))?;
            Ok(registry_applied(p, &Value::Null))
        }
        CREATION_TEMPLATE_TYPE => {
            let resp = p
                .call("CreateRepositoryCreationTemplate", template_input(props))
                .await
                .map_err(|e| failure(None, e))?;
            Ok(template_applied(&resp))
        }
        PULL_THROUGH_RULE_TYPE => {
            let mut input = json!({});
            for (prop, member) in [
                ("EcrRepositoryPrefix", "ecrRepositoryPrefix"),
                ("UpstreamRegistryUrl", "upstreamRegistryUrl"),
                ("UpstreamRegistry", "upstreamRegistry"),
                ("UpstreamRepositoryPrefix", "upstreamRepositoryPrefix"),
                ("CredentialArn", "credentialArn"),
                ("CustomRoleArn", "customRoleArn"),
            ] {
                if let Some(v) = props.get(prop) {
                    input[member] = v.clone();
                }
            }
            let resp = p
                .call("CreatePullThroughCacheRule", input)
                .await
                .map_err(|e| failure(None, e))?;
            Ok(Applied {
                physical_id: resp["ecrRepositoryPrefix"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                attributes: BTreeMap::new(),
            })
        }
        _ => Ok(Applied {
            physical_id: uuid::Uuid::new_v4().to_string(),
            attributes: BTreeMap::new(),
        }),
    }
}

fn registry_applied(p: &dyn Provisioner, resp: &Value) -> Applied {
    let id = resp
        .get("registryId")
        .and_then(Value::as_str)
        .unwrap_or(p.account())
        .to_string();
    Applied {
        physical_id: id.clone(),
        attributes: BTreeMap::from([("RegistryId".to_string(), Value::String(id))]),
    }
}

/// PutReplicationConfiguration's input from the resource's properties.
fn replication_input(props: &Value) -> Value {
    let rules: Vec<Value> = props["ReplicationConfiguration"]["Rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mut rule = json!({
                "destinations": r["Destinations"].as_array().into_iter().flatten()
                    .map(|d| json!({"region": d.get("Region"), "registryId": d.get("RegistryId")}))
                    .collect::<Vec<_>>(),
            });
            if let Some(fs) = r.get("RepositoryFilters").and_then(Value::as_array) {
                rule["repositoryFilters"] = fs
                    .iter()
                    .map(|f| json!({"filter": f.get("Filter"), "filterType": f.get("FilterType")}))
                    .collect();
            }
            rule
        })
        .collect();
    json!({ "replicationConfiguration": { "rules": rules } })
}

/// Create/UpdateRepositoryCreationTemplate's input from the properties
/// (every field, so that an update also clears what the template dropped).
fn template_input(props: &Value) -> Value {
    let mut input = merge(
        json!({
            "prefix": props.get("Prefix"),
            "appliedFor": props.get("AppliedFor"),
            "description": props.get("Description").cloned().unwrap_or(json!("")),
            "repositoryPolicy": props.get("RepositoryPolicy").cloned().unwrap_or(json!("")),
            "lifecyclePolicy": props.get("LifecyclePolicy").cloned().unwrap_or(json!("")),
            "resourceTags": props.get("ResourceTags").and_then(Value::as_array).map(|a| {
                a.iter().map(|t| json!({"Key": t.get("Key"), "Value": t.get("Value")})).collect::<Vec<_>>()
            }).unwrap_or_default(),
        }),
        mutability_input(props),
    );
    let e = props
        .get("EncryptionConfiguration")
        .cloned()
        .unwrap_or(json!({"EncryptionType": "AES256"}));
    let mut c = json!({ "encryptionType": e.get("EncryptionType") });
    if let Some(k) = e.get("KmsKey") {
        c["kmsKey"] = k.clone();
    }
    input["encryptionConfiguration"] = c;
    if let Some(arn) = props.get("CustomRoleArn") {
        input["customRoleArn"] = arn.clone();
    }
    input
}

fn template_applied(resp: &Value) -> Applied {
    let t = &resp["repositoryCreationTemplate"];
    Applied {
        physical_id: t["prefix"].as_str().unwrap_or_default().to_string(),
        attributes: BTreeMap::from([
            ("CreatedAt".to_string(), t["createdAt"].clone()),
            ("UpdatedAt".to_string(), t["updatedAt"].clone()),
        ]),
    }
}

async fn put_scanning(p: &dyn Provisioner, props: &Value) -> Result<Value, ApiFault> {
    let rules: Vec<Value> = props
        .get("Rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            json!({
                "scanFrequency": r.get("ScanFrequency"),
                "repositoryFilters": r.get("RepositoryFilters").and_then(Value::as_array).map(|fs| {
                    fs.iter().map(|f| json!({"filter": f.get("Filter"), "filterType": f.get("FilterType")})).collect::<Vec<_>>()
                }).unwrap_or_default(),
            })
        })
        .collect();
    p.call(
        "PutRegistryScanningConfiguration",
        json!({ "scanType": props.get("ScanType"), "rules": rules }),
    )
    .await
}

/// Bring a repository's lifecycle and repository policies from `old` to
/// `new` (`old` null: a new repository, with neither).
async fn put_repository_policies(
    p: &dyn Provisioner,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiFault> {
    if old.get("LifecyclePolicy") != new.get("LifecyclePolicy") {
        match new.get("LifecyclePolicy") {
            Some(l) => {
                let mut input = json!({
                    "repositoryName": name,
                    "lifecyclePolicyText": l.get("LifecyclePolicyText").map(policy_text).unwrap_or_default(),
                });
                if let Some(r) = l.get("RegistryId") {
                    input["registryId"] = r.clone();
                }
                p.call("PutLifecyclePolicy", input).await?;
            }
            None => {
                ignore(
                    p.call("DeleteLifecyclePolicy", json!({ "repositoryName": name }))
                        .await,
                    "LifecyclePolicyNotFoundException",
                )?;
            }
        }
    }
    if old.get("RepositoryPolicyText") != new.get("RepositoryPolicyText") {
        match new.get("RepositoryPolicyText") {
            Some(text) => {
                p.call(
                    "SetRepositoryPolicy",
                    json!({ "repositoryName": name, "policyText": policy_text(text) }),
                )
                .await?;
            }
            None => {
                ignore(
                    p.call("DeleteRepositoryPolicy", json!({ "repositoryName": name }))
                        .await,
                    "RepositoryPolicyNotFoundException",
                )?;
            }
        }
    }
    Ok(())
}

fn ignore(r: Result<Value, ApiFault>, code: &str) -> Result<(), ApiFault> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code == code => Ok(()),
        Err(e) => Err(e),
    }
}

/// Update a resource in place from `old` to `new` properties.
pub async fn update(
    p: &dyn Provisioner,
    ty: &str,
    physical_id: &str,
    attributes: &BTreeMap<String, Value>,
    old: &Value,
    new: &Value,
) -> Result<Applied, Failure> {
    let same = Applied {
        physical_id: physical_id.to_string(),
        attributes: attributes.clone(),
    };
    let fail = |e: ApiFault| failure(Some(physical_id), e);
    match ty {
        REPOSITORY_TYPE => {
            let name = physical_id;
            if old.get("ImageTagMutability") != new.get("ImageTagMutability")
                || old.get("ImageTagMutabilityExclusionFilters")
                    != new.get("ImageTagMutabilityExclusionFilters")
            {
                let input = merge(json!({ "repositoryName": name }), mutability_input(new));
                p.call("PutImageTagMutability", input).await.map_err(fail)?;
            }
            if old.get("ImageScanningConfiguration") != new.get("ImageScanningConfiguration") {
                let scan = new
                    .get("ImageScanningConfiguration")
                    .and_then(|s| s.get("ScanOnPush"))
                    .cloned()
                    .unwrap_or(json!(false));
                p.call(
                    "PutImageScanningConfiguration",
                    json!({ "repositoryName": name, "imageScanningConfiguration": { "scanOnPush": scan } }),
                )
                .await
                .map_err(fail)?;
            }
            put_repository_policies(p, name, old, new)
                .await
                .map_err(fail)?;
            let old_tags = tags_input(old);
            let new_tags = tags_input(new);
            if old_tags != new_tags {
                let arn = attributes.get("Arn").cloned().unwrap_or_default();
                let removed: Vec<Value> = old_tags
                    .iter()
                    .filter(|t| !new_tags.iter().any(|n| n["Key"] == t["Key"]))
                    .map(|t| t["Key"].clone())
                    .collect();
                if !removed.is_empty() {
                    p.call(
                        "UntagResource",
                        json!({ "resourceArn": arn, "tagKeys": removed }),
                    )
                    .await
                    .map_err(fail)?;
                }
                if !new_tags.is_empty() {
                    p.call(
                        "TagResource",
                        json!({ "resourceArn": arn, "tags": new_tags }),
                    )
                    .await
                    .map_err(fail)?;
                }
            }
            Ok(same)
        }
        REGISTRY_POLICY_TYPE => {
            p.call(
                "PutRegistryPolicy",
                json!({ "policyText": policy_text(&new["PolicyText"]) }),
            )
            .await
            .map_err(fail)?;
            Ok(same)
        }
        REGISTRY_SCANNING_TYPE => {
            put_scanning(p, new).await.map_err(fail)?;
            Ok(same)
        }
        REPLICATION_TYPE => {
            p.call("PutReplicationConfiguration", replication_input(new))
                .await
                .map_err(fail)?;
            Ok(same)
        }
        CREATION_TEMPLATE_TYPE => {
            let resp = p
                .call("UpdateRepositoryCreationTemplate", template_input(new))
                .await
                .map_err(fail)?;
            Ok(template_applied(&resp))
        }
        PULL_THROUGH_RULE_TYPE => {
            let mut input = json!({ "ecrRepositoryPrefix": physical_id });
            for (prop, member) in [
                ("CredentialArn", "credentialArn"),
                ("CustomRoleArn", "customRoleArn"),
            ] {
                if let Some(v) = new.get(prop) {
                    input[member] = v.clone();
                }
            }
            p.call("UpdatePullThroughCacheRule", input)
                .await
                .map_err(fail)?;
            Ok(same)
        }
        _ => Ok(same),
    }
}

/// Delete a resource; one that is already gone counts as deleted.
pub async fn delete(
    p: &dyn Provisioner,
    ty: &str,
    physical_id: &str,
    props: &Value,
) -> Result<(), String> {
    let r = match ty {
        REPOSITORY_TYPE => {
            let force = props
                .get("EmptyOnDelete")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            ignore(
                p.call(
                    "DeleteRepository",
                    json!({ "repositoryName": physical_id, "force": force }),
                )
                .await,
                "RepositoryNotFoundException",
            )
        }
        REGISTRY_POLICY_TYPE => ignore(
            p.call("DeleteRegistryPolicy", json!({})).await,
            "RegistryPolicyNotFoundException",
        ),
        REGISTRY_SCANNING_TYPE => p
            .call(
                "PutRegistryScanningConfiguration",
                json!({ "scanType": "BASIC", "rules": [] }),
            )
            .await
            .map(|_| ()),
        REPLICATION_TYPE => p
            .call(
                "PutReplicationConfiguration",
                json!({ "replicationConfiguration": { "rules": [] } }),
            )
            .await
            .map(|_| ()),
        CREATION_TEMPLATE_TYPE => ignore(
            p.call(
                "DeleteRepositoryCreationTemplate",
                json!({ "prefix": physical_id }),
            )
            .await,
            "TemplateNotFoundException",
        ),
        PULL_THROUGH_RULE_TYPE => ignore(
            p.call(
                "DeletePullThroughCacheRule",
                json!({ "ecrRepositoryPrefix": physical_id }),
            )
            .await,
            "PullThroughCacheRuleNotFoundException",
        ),
        _ => Ok(()),
    };
    r.map_err(|e| e.reason())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_checked_and_normalised() {
        let ok = check_properties(
            "Repo",
            REPOSITORY_TYPE,
            &json!({"RepositoryName": "a", "ImageScanningConfiguration": {"ScanOnPush": "true"},
                    "RepositoryPolicyText": "{\"Version\":\"2012-10-17\"}"}),
            false,
        )
        .unwrap();
        assert_eq!(ok["ImageScanningConfiguration"]["ScanOnPush"], json!(true));
        assert_eq!(ok["RepositoryPolicyText"]["Version"], json!("2012-10-17"));
        let e = |v: Value| check_properties("Repo", REPOSITORY_TYPE, &v, false).unwrap_err();
        assert_eq!(
            e(json!({"ImageScanningConfiguration": {"ScanOnPush": [1]}})),
            "Properties validation failed for resource Repo with message: [#/ImageScanningConfiguration/ScanOnPush: expected type: Boolean, found: JSONArray]"
        );
        assert!(e(json!({"Bogus": 1})).contains("extraneous key [Bogus]"));
        assert!(e(json!({"Tags": {"Key": "a"}})).contains("#/Tags: expected type: JSONArray"));
        assert!(
            check_properties("P", REGISTRY_POLICY_TYPE, &json!({}), false)
                .unwrap_err()
                .contains("required key [PolicyText]")
        );
        // Before evaluation, functions stand for any value.
        assert!(
            check_properties(
                "Repo",
                REPOSITORY_TYPE,
                &json!({"RepositoryName": {"Ref": "Name"}}),
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn names_and_encryption_need_a_new_repository() {
        let a = json!({"RepositoryName": "a", "ImageTagMutability": "MUTABLE"});
        let b = json!({"RepositoryName": "a", "ImageTagMutability": "IMMUTABLE"});
        let c = json!({"RepositoryName": "c"});
        assert!(!requires_replacement(REPOSITORY_TYPE, &a, &b));
        assert!(requires_replacement(REPOSITORY_TYPE, &a, &c));
        let name = generated_name("My-Stack", "TodoRepo");
        assert!(name.starts_with("my-stack-todorepo-") && name.len() == 30);
    }
}
