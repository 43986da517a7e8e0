//! Repository operations: Create/Describe/DeleteRepository, resource tags
//! (Tag/Untag/ListTagsForResource), PutImageTagMutability, repository and
//! registry policies, DescribeRegistry.

use serde_json::{Value, json};

use super::input::{self, Input};
use super::{Ctx, EcrError, timestamp};
use crate::iam::{Policy, PolicyKind};
use crate::registry::{Repo, RepositoryRow};

const MUTABILITY: &[&str] = &[
    "MUTABLE",
    "IMMUTABLE",
    "MUTABLE_WITH_EXCLUSION",
    "IMMUTABLE_WITH_EXCLUSION",
];
const MAX_RESOURCE_TAGS: usize = 50;
const MAX_POLICY_CHARS: usize = 10_240;

/// The `Repository` shape.
pub(super) fn repository_json(ctx: &Ctx<'_>, r: &RepositoryRow) -> Value {
    let host = ctx.state.registry_host_for(&r.registry_id, ctx.host);
    let mut v = json!({
        "repositoryArn": ctx.repository_arn(&r.registry_id, &r.name),
        "registryId": crate::reference::key_account(&r.registry_id),
        "repositoryName": r.name,
        "repositoryUri": format!("{host}/{}", r.name),
        "createdAt": timestamp(r.created_at),
        "imageTagMutability": r.tag_mutability,
        "imageScanningConfiguration": { "scanOnPush": r.scan_on_push },
        "encryptionConfiguration": { "encryptionType": r.encryption_type },
    });
    if let Some(k) = &r.kms_key {
        v["encryptionConfiguration"]["kmsKey"] = json!(k);
    }
    if !r.mutability_exclusions.is_empty() {
        v["imageTagMutabilityExclusionFilters"] = exclusion_json(&r.mutability_exclusions);
    }
    v
}

fn exclusion_json(filters: &[String]) -> Value {
    Value::Array(
        filters
            .iter()
            .map(|f| json!({ "filterType": "WILDCARD", "filter": f }))
            .collect(),
    )
}

/// `imageTagMutability` and its exclusion filters, validated together.
pub(super) fn mutability(input: &Input, required: bool) -> Result<(String, Vec<String>), EcrError> {
    let m = match input.opt_str("imageTagMutability")? {
        Some(m) => {
            input::check_enum("imageTagMutability", m, MUTABILITY)?;
            m.to_string()
        }
        None if required => input.str("imageTagMutability")?.to_string(),
        None => "MUTABLE".to_string(),
    };
    let mut filters = Vec::new();
    if let Some(list) = input.opt_array("imageTagMutabilityExclusionFilters")? {
        input::check_count("imageTagMutabilityExclusionFilters", list.len(), 1, 5)?;
        for f in list {
            let ft = f.get("filterType").and_then(Value::as_str).unwrap_or("");
            input::check_enum(
                "imageTagMutabilityExclusionFilters.member.filterType",
                ft,
                &["WILDCARD"],
            )?;
            let filter = f.get("filter").and_then(Value::as_str).unwrap_or("");
            input::check_pattern(
                "imageTagMutabilityExclusionFilters.member.filter",
                filter,
                input::is_tag_filter,
                "^[0-9a-zA-Z._*-]{1,128}$",
            )?;
            filters.push(filter.to_string());
        }
    }
    let with_exclusion = m.ends_with("_WITH_EXCLUSION");
    if with_exclusion && filters.is_empty() {
        return Err(EcrError::invalid(format!(
            "imageTagMutabilityExclusionFilters are required when imageTagMutability is {m}"
        )));
    }
    if !with_exclusion && !filters.is_empty() {
        return Err(EcrError::invalid(format!(
            "imageTagMutabilityExclusionFilters can only be used with MUTABLE_WITH_EXCLUSION or IMMUTABLE_WITH_EXCLUSION, not {m}"
        )));
    }
    Ok((m, filters))
}

pub(super) async fn create_repository(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let name = input::repository_name(input)?;
    let registry = ctx.registry_id(input)?;
    let (tag_mutability, exclusions) = mutability(input, false)?;
    let scan_on_push = match input.opt_object("imageScanningConfiguration")? {
        Some(c) => match c.get("scanOnPush") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(EcrError::serialization("scanOnPush must be a boolean")),
        },
        None => false,
    };
    let (encryption_type, kms_key) = match input.opt_object("encryptionConfiguration")? {
        Some(c) => {
            let t = c
                .get("encryptionType")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    EcrError::invalid(
                        "Missing required parameter: encryptionConfiguration.encryptionType",
                    )
                })?;
            input::check_enum(
                "encryptionConfiguration.encryptionType",
                t,
                &["AES256", "KMS", "KMS_DSSE"],
            )?;
            let key = c.get("kmsKey").and_then(Value::as_str).map(str::to_string);
            if let Some(k) = &key {
                input::check_len("encryptionConfiguration.kmsKey", k, 1, 2048)?;
                if t == "AES256" {
                    return Err(EcrError::invalid(
                        "Invalid parameter at 'encryptionConfiguration' failed to satisfy constraint: 'kmsKey can only be specified with encryptionType KMS or KMS_DSSE'",
                    ));
                }
            }
            (t.to_string(), key)
        }
        None => ("AES256".to_string(), None),
    };
    let tags = input::resource_tags(input, "tags")?;
    if tags.len() > MAX_RESOURCE_TAGS {
        return Err(EcrError::new(
            "TooManyTagsException",
            400,
            "A repository can have at most 50 tags",
        ));
    }
    ctx.authorize("CreateRepository", &registry, Some(name.as_str()))
        .await?;
    // A KMS repository names its key by ARN (the account's AWS-managed
    // `aws/ecr` key when none is given, as ECR reports it); a missing,
    // disabled or pending-deletion key is ECR's KmsException.
    let kms = &ctx.state.registry.kms;
    let kms_key = match kms
        .repository_key(&registry, &encryption_type, kms_key.as_deref())
        .await
    {
        Ok(crate::kms::KeyRef::Kms(arn)) => Some(arn),
        Ok(crate::kms::KeyRef::ServerManaged) => None,
        Err(e) if e.is_key_state() => {
            return Err(EcrError::new("KmsException", 400, e.to_string()));
        }
        Err(e) => return Err(EcrError::from_registry(e.into(), name.as_str(), &registry)),
    };
    let row = RepositoryRow {
        tag_mutability,
        mutability_exclusions: exclusions,
        scan_on_push,
        encryption_type,
        kms_key,
        ..RepositoryRow::new(&registry, name.as_str())
    };
    let reg = &ctx.state.registry;
    if !reg
        .account_exists(&registry)
        .await
        .map_err(EcrError::meta)?
    {
        return Err(EcrError::invalid(format!(
            "The registry with id '{registry}' does not exist"
        )));
    }
    if !reg
        .create_repository(&row, &tags)
        .await
        .map_err(EcrError::meta)?
    {
        return Err(EcrError::new(
            "RepositoryAlreadyExistsException",
            400,
            format!(
                "The repository with name '{name}' already exists in the registry with id '{registry}'"
            ),
        ));
    }
    // As ECR does, a grant lets the ECR service use the key for this repository.
    if let Some(arn) = &row.kms_key {
        let repo_arn = ctx.repository_arn(&registry, name.as_str());
        if let Err(e) = kms
            .grant_for_repository(crate::reference::key_account(&registry), arn, &repo_arn)
            .await
        {
            tracing::warn!(error = %e, key = %arn, "could not record ECR's grant on the key");
        }
    }
    Ok(json!({ "repository": repository_json(ctx, &row) }))
}

pub(super) async fn describe_repositories(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let registry = ctx.registry_id(input)?;
    let reg = &ctx.state.registry;
    if let Some(names) = input.opt_str_list("repositoryNames")? {
        input::check_count("repositoryNames", names.len(), 1, 100)?;
        if input.get("nextToken").is_some() || input.get("maxResults").is_some() {
            return Err(EcrError::invalid(
                "Invalid parameter: nextToken and maxResults cannot be used with repositoryNames",
            ));
        }
        let mut out = Vec::new();
        for n in &names {
            input::check_len("repositoryNames", n, 2, 256)?;
            if crate::reference::RepoName::parse(n).is_none() {
                return Err(EcrError::constraint(
                    "repositoryNames",
                    format!(
                        "must satisfy regular expression '{}'",
                        input::REPOSITORY_NAME_PATTERN
                    ),
                ));
            }
            // Authorize before looking up: whether a repository exists is
            // only told to a caller allowed to describe it.
            ctx.authorize("DescribeRepositories", &registry, Some(n))
                .await?;
            let row = reg
                .get_repository(Repo {
                    registry: &registry,
                    name: n,
                })
                .await
                .map_err(EcrError::meta)?
                .ok_or_else(|| EcrError::repository_not_found(n, &registry))?;
            out.push(repository_json(ctx, &row));
        }
        return Ok(json!({ "repositories": out }));
    }
    // The repositories the caller may describe, in name order. Others are
    // skipped without a trace: never returned, never in an error message,
    // never a cursor (the token is sealed, so it cannot be read or forged).
    let limit = input.max_results(1000, 100)? as usize;
    let mut cursor = ctx.page_token(input, "DescribeRepositories", &registry, None)?;
    let mut out = Vec::new();
    let mut more = false;
    let batch = (limit as i64 + 1).clamp(100, 1000);
    'scan: loop {
        let rows = reg
            .list_repositories(&registry, cursor.as_deref(), batch)
            .await
            .map_err(EcrError::meta)?;
        let exhausted = (rows.len() as i64) < batch;
        for r in &rows {
            ctx.state
                .access
                .prime_policy(&registry, &r.name, r.policy.as_deref());
            if ctx
                .allowed("DescribeRepositories", &registry, Some(&r.name))
                .await?
            {
                if out.len() == limit {
                    more = true;
                    break 'scan;
                }
                out.push((r.name.clone(), repository_json(ctx, r)));
            }
        }
        cursor = rows.last().map(|r| r.name.clone());
        if exhausted {
            break;
        }
    }
    if out.is_empty() {
        // Nothing visible: refuse, naming no repository.
        ctx.authorize("DescribeRepositories", &registry, Some("*"))
            .await?;
    }
    let next = if more {
        out.last().map(|(n, _)| n.clone())
    } else {
        None
    };
    let mut v = json!({ "repositories": out.into_iter().map(|(_, j)| j).collect::<Vec<_>>() });
    if let Some(last) = next {
        v["nextToken"] = json!(ctx.next_token("DescribeRepositories", &registry, None, &last));
    }
    Ok(v)
}

pub(super) async fn delete_repository(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let name = input::repository_name(input)?;
    let registry = ctx.registry_id(input)?;
    let force = input.opt_bool("force")?.unwrap_or(false);
    ctx.authorize("DeleteRepository", &registry, Some(name.as_str()))
        .await?;
    let key = Repo {
        registry: &registry,
        name: name.as_str(),
    };
    match ctx
        .state
        .registry
        .delete_repository(key, force)
        .await
        .map_err(EcrError::meta)?
    {
        None => Err(EcrError::repository_not_found(name.as_str(), &registry)),
        Some(Err(())) => Err(EcrError::new(
            "RepositoryNotEmptyException",
            400,
            format!(
                "The repository with name '{name}' in registry with id '{registry}' cannot be deleted because it still contains images"
            ),
        )),
        Some(Ok(row)) => {
            ctx.state
                .access
                .forget_policy(&registry, Some(name.as_str()));
            // As ECR does, the grant it made on the repository's key goes with it.
            if let Some(arn) = &row.kms_key {
                let repo_arn = ctx.repository_arn(&registry, name.as_str());
                if let Err(e) = ctx
                    .state
                    .registry
                    .kms
                    .retire_repository_grant(
                        crate::reference::key_account(&registry),
                        arn,
                        &repo_arn,
                    )
                    .await
                {
                    tracing::warn!(error = %e, key = %arn, "could not retire ECR's grant on the key");
                }
            }
            Ok(json!({ "repository": repository_json(ctx, &row) }))
        }
    }
}

/// The repository a `resourceArn` names, once the caller is authorized for
/// `ecr:<op>` on it (before it is looked up, so existence is only told to
/// those allowed) and it exists.
async fn repository_from_arn(
    ctx: &Ctx<'_>,
    input: &Input,
    op: &str,
) -> Result<(String, String), EcrError> {
    let arn = input.str("resourceArn")?;
    let invalid = || EcrError::constraint("resourceArn", "Invalid ARN");
    let rest = arn.strip_prefix("arn:aws:ecr:").ok_or_else(invalid)?;
    let mut parts = rest.splitn(3, ':');
    let (Some(region), Some(account), Some(resource)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let name = resource.strip_prefix("repository/").ok_or_else(invalid)?;
    if !ctx.state.access.serves(region)
        || !input::is_account_id(account)
        || crate::reference::RepoName::parse(name).is_none()
    {
        return Err(invalid());
    }
    let key = ctx.state.access.registry_key(account, region);
    ctx.authorize(op, &key, Some(name)).await?;
    if !ctx
        .state
        .registry
        .repository_exists(Repo {
            registry: &key,
            name,
        })
        .await
        .map_err(EcrError::meta)?
    {
        return Err(EcrError::repository_not_found(name, account));
    }
    Ok((key, name.to_string()))
}

pub(super) async fn tag_resource(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let tags = input::resource_tags(input, "tags")?;
    if input.get("tags").is_none() {
        return Err(EcrError::invalid("Missing required parameter: tags"));
    }
    let (registry, name) = repository_from_arn(ctx, input, "TagResource").await?;
    let ok = ctx
        .state
        .registry
        .tag_repository(
            Repo {
                registry: &registry,
                name: &name,
            },
            &tags,
            MAX_RESOURCE_TAGS,
        )
        .await
        .map_err(EcrError::meta)?;
    if !ok {
        return Err(EcrError::new(
            "TooManyTagsException",
            400,
            "A repository can have at most 50 tags",
        ));
    }
    Ok(json!({}))
}

pub(super) async fn untag_resource(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let keys = input
        .opt_str_list("tagKeys")?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: tagKeys"))?;
    for k in &keys {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(EcrError::new(
                "InvalidTagParameterException",
                400,
                "Tag keys must be 1 to 128 characters",
            ));
        }
    }
    let (registry, name) = repository_from_arn(ctx, input, "UntagResource").await?;
    ctx.state
        .registry
        .untag_repository(
            Repo {
                registry: &registry,
                name: &name,
            },
            &keys,
        )
        .await
        .map_err(EcrError::meta)?;
    Ok(json!({}))
}

pub(super) async fn list_tags_for_resource(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let (registry, name) = repository_from_arn(ctx, input, "ListTagsForResource").await?;
    let tags = ctx
        .state
        .registry
        .repository_tags(Repo {
            registry: &registry,
            name: &name,
        })
        .await
        .map_err(EcrError::meta)?;
    let tags: Vec<Value> = tags
        .into_iter()
        .map(|(k, v)| json!({ "Key": k, "Value": v }))
        .collect();
    Ok(json!({ "tags": tags }))
}

pub(super) async fn put_image_tag_mutability(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let name = input::repository_name(input)?;
    let registry = ctx.registry_id(input)?;
    let (m, filters) = mutability(input, true)?;
    ctx.authorize("PutImageTagMutability", &registry, Some(name.as_str()))
        .await?;
    let key = Repo {
        registry: &registry,
        name: name.as_str(),
    };
    if !ctx
        .state
        .registry
        .set_tag_mutability(key, &m, &filters)
        .await
        .map_err(EcrError::meta)?
    {
        return Err(EcrError::repository_not_found(name.as_str(), &registry));
    }
    let mut v = json!({ "registryId": crate::reference::key_account(&registry), "repositoryName": name.as_str(), "imageTagMutability": m });
    if !filters.is_empty() {
        v["imageTagMutabilityExclusionFilters"] = exclusion_json(&filters);
    }
    Ok(v)
}

fn policy_text<'a>(input: &'a Input, kind: &str) -> Result<&'a str, EcrError> {
    let text = input.str("policyText")?;
    input::check_len("policyText", text, 0, MAX_POLICY_CHARS)?;
    Policy::parse(text, PolicyKind::Resource).map_err(|e| {
        // ECR's exact words; what is wrong goes to the log.
        tracing::info!(error = %e, "refused an invalid {kind} policy");
        EcrError::invalid(format!(
            "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid {kind} policy provided'"
        ))
    })?;
    Ok(text)
}

pub(super) async fn set_repository_policy(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let name = input::repository_name(input)?;
    let registry = ctx.registry_id(input)?;
    let text = policy_text(input, "repository")?;
    ctx.authorize("SetRepositoryPolicy", &registry, Some(name.as_str()))
        .await?;
    let key = Repo {
        registry: &registry,
        name: name.as_str(),
    };
    if !ctx
        .state
        .registry
        .set_repository_policy(key, Some(text))
        .await
        .map_err(EcrError::meta)?
    {
        return Err(EcrError::repository_not_found(name.as_str(), &registry));
    }
    ctx.state
        .access
        .forget_policy(&registry, Some(name.as_str()));
    Ok(
        json!({ "registryId": crate::reference::key_account(&registry), "repositoryName": name.as_str(), "policyText": text }),
    )
}

pub(super) async fn get_repository_policy(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let name = input::repository_name(input)?;
    let registry = ctx.registry_id(input)?;
    ctx.authorize("GetRepositoryPolicy", &registry, Some(name.as_str()))
        .await?;
    let key = Repo {
        registry: &registry,
        name: name.as_str(),
    };
    let row = ctx
        .state
        .registry
        .get_repository(key)
        .await
        .map_err(EcrError::meta)?
        .ok_or_else(|| EcrError::repository_not_found(name.as_str(), &registry))?;
    match row.policy {
        Some(p) => Ok(
            json!({ "registryId": crate::reference::key_account(&registry), "repositoryName": name.as_str(), "policyText": p }),
        ),
        None => Err(policy_not_found(name.as_str(), &registry)),
    }
}

fn policy_not_found(name: &str, registry: &str) -> EcrError {
    EcrError::new(
        "RepositoryPolicyNotFoundException",
        400,
        format!(
            "Repository policy does not exist for the repository with name '{name}' in the registry with id '{registry}'"
        ),
    )
}

pub(super) async fn delete_repository_policy(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let name = input::repository_name(input)?;
    let registry = ctx.registry_id(input)?;
    ctx.authorize("DeleteRepositoryPolicy", &registry, Some(name.as_str()))
        .await?;
    let key = Repo {
        registry: &registry,
        name: name.as_str(),
    };
    let reg = &ctx.state.registry;
    let row = reg
        .get_repository(key)
        .await
        .map_err(EcrError::meta)?
        .ok_or_else(|| EcrError::repository_not_found(name.as_str(), &registry))?;
    let Some(p) = row.policy else {
        return Err(policy_not_found(name.as_str(), &registry));
    };
    reg.set_repository_policy(key, None)
        .await
        .map_err(EcrError::meta)?;
    ctx.state
        .access
        .forget_policy(&registry, Some(name.as_str()));
    Ok(
        json!({ "registryId": crate::reference::key_account(&registry), "repositoryName": name.as_str(), "policyText": p }),
    )
}

fn registry_policy_not_found(registry: &str) -> EcrError {
    EcrError::new(
        "RegistryPolicyNotFoundException",
        400,
        format!("Registry policy does not exist in the registry with id '{registry}'"),
    )
}

pub(super) async fn put_registry_policy(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    let text = policy_text(input, "registry")?;
    ctx.authorize("PutRegistryPolicy", &registry, None).await?;
    ctx.state
        .registry
        .set_registry_policy(&registry, Some(text))
        .await
        .map_err(EcrError::meta)?;
    ctx.state.access.forget_policy(&registry, None);
    Ok(json!({ "registryId": crate::reference::key_account(&registry), "policyText": text }))
}

pub(super) async fn get_registry_policy(ctx: &Ctx<'_>, _input: &Input) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    ctx.authorize("GetRegistryPolicy", &registry, None).await?;
    match ctx
        .state
        .registry
        .registry_policy(&registry)
        .await
        .map_err(EcrError::meta)?
    {
        Some(p) => {
            Ok(json!({ "registryId": crate::reference::key_account(&registry), "policyText": p }))
        }
        None => Err(registry_policy_not_found(&registry)),
    }
}

pub(super) async fn delete_registry_policy(
    ctx: &Ctx<'_>,
    _input: &Input,
) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    ctx.authorize("DeleteRegistryPolicy", &registry, None)
        .await?;
    let reg = &ctx.state.registry;
    let Some(p) = reg
        .registry_policy(&registry)
        .await
        .map_err(EcrError::meta)?
    else {
        return Err(registry_policy_not_found(&registry));
    };
    reg.set_registry_policy(&registry, None)
        .await
        .map_err(EcrError::meta)?;
    ctx.state.access.forget_policy(&registry, None);
    Ok(json!({ "registryId": crate::reference::key_account(&registry), "policyText": p }))
}
