//! Replication's ECR operations: PutReplicationConfiguration, DescribeRegistry
//! (which shows it), DescribeImageReplicationStatus; and the repository
//! creation templates (Create/Describe/Update/DeleteRepositoryCreationTemplate)
//! that decide the settings of the repositories replication creates.

use serde_json::{Value, json};

use super::{Ctx, EcrError, Input, input, timestamp};
use crate::registry::creation_templates::{AppliedFor, CreationTemplate, ROOT};
use crate::registry::replication::{
    ReplicationConfiguration, ReplicationDestination, ReplicationRule, RepositoryFilter,
};

/// ECR's quotas: rules per configuration, unique destinations overall.
const MAX_RULES: usize = 10;
const MAX_DESTINATIONS: usize = 25;

fn is_region(s: &str) -> bool {
    (2..=25).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// ECR's `RepositoryFilterValue`: name-like segments, possibly cut short.
fn is_filter_value(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'/')
    }) && !s.starts_with(['.', '_', '-', '/'])
        && !s.contains("//")
}

fn parse_configuration(
    ctx: &Ctx<'_>,
    registry: &str,
    v: &Value,
) -> Result<ReplicationConfiguration, EcrError> {
    let rules = v
        .get("rules")
        .ok_or_else(|| {
            EcrError::invalid("Missing required parameter: replicationConfiguration.rules")
        })?
        .as_array()
        .ok_or_else(|| EcrError::serialization("replicationConfiguration.rules must be a list"))?;
    input::check_count("replicationConfiguration.rules", rules.len(), 0, MAX_RULES)?;
    let reachable = ctx.state.replicator.reachable_regions();
    let mut out = ReplicationConfiguration::default();
    let mut unique = Vec::new();
    for r in rules {
        let dests = r
            .get("destinations")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                EcrError::invalid("Missing required parameter: rules.member.destinations")
            })?;
        input::check_count("rules.member.destinations", dests.len(), 0, 100)?;
        let mut rule = ReplicationRule {
            destinations: Vec::new(),
            repository_filters: Vec::new(),
        };
        for d in dests {
            let region = d.get("region").and_then(Value::as_str).ok_or_else(|| {
                EcrError::invalid("Missing required parameter: destinations.member.region")
            })?;
            let dest_registry = d.get("registryId").and_then(Value::as_str).ok_or_else(|| {
                EcrError::invalid("Missing required parameter: destinations.member.registryId")
            })?;
            input::check_pattern(
                "destinations.member.region",
                region,
                is_region,
                "[0-9a-z-]{2,25}",
            )?;
            input::check_pattern(
                "destinations.member.registryId",
                dest_registry,
                input::is_account_id,
                "[0-9]{12}",
            )?;
            if region == ctx.region && dest_registry == crate::reference::key_account(registry) {
                return Err(EcrError::invalid(
                    "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: 'Replication destination cannot be the same as the source registry'",
                ));
            }
            // A destination nothing here could reach would be stored and
            // never served: refused by name instead.
            if !reachable.contains(&region) {
                return Err(EcrError::invalid(format!(
                    "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: 'Berth cannot replicate to region {region}: this deployment serves {} and no peer serves {region} (add it to [[peers]] in the config file)'",
                    ctx.state.access.regions.join(", ")
                )));
            }
            let dest = ReplicationDestination {
                region: region.to_string(),
                registry_id: dest_registry.to_string(),
            };
            if !unique.contains(&dest) {
                unique.push(dest.clone());
            }
            rule.destinations.push(dest);
        }
        if let Some(filters) = r.get("repositoryFilters").filter(|f| !f.is_null()) {
            let filters = filters
                .as_array()
                .ok_or_else(|| EcrError::serialization("repositoryFilters must be a list"))?;
            input::check_count("rules.member.repositoryFilters", filters.len(), 1, 100)?;
            for f in filters {
                let value = f.get("filter").and_then(Value::as_str).ok_or_else(|| {
                    EcrError::invalid("Missing required parameter: repositoryFilters.member.filter")
                })?;
                let kind = f.get("filterType").and_then(Value::as_str).ok_or_else(|| {
                    EcrError::invalid(
                        "Missing required parameter: repositoryFilters.member.filterType",
                    )
                })?;
                input::check_len("repositoryFilters.member.filter", value, 2, 256)?;
                input::check_pattern(
                    "repositoryFilters.member.filter",
                    value,
                    is_filter_value,
                    "^(?:[a-z0-9]+(?:[._-][a-z0-9]*)*/)*[a-z0-9]*(?:[._-][a-z0-9]*)*$",
                )?;
                input::check_enum(
                    "repositoryFilters.member.filterType",
                    kind,
                    &["PREFIX_MATCH"],
                )?;
                rule.repository_filters.push(RepositoryFilter {
                    filter: value.to_string(),
                    filter_type: kind.to_string(),
                });
            }
        }
        out.rules.push(rule);
    }
    if unique.len() > MAX_DESTINATIONS {
        return Err(EcrError::invalid(format!(
            "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: 'a replication configuration can have at most {MAX_DESTINATIONS} unique destinations'"
        )));
    }
    Ok(out)
}

pub(super) async fn put_replication_configuration(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    let v = input
        .opt_object("replicationConfiguration")?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: replicationConfiguration"))?
        .clone();
    let config = parse_configuration(ctx, &registry, &Value::Object(v))?;
    ctx.authorize("PutReplicationConfiguration", &registry, None)
        .await?;
    ctx.state
        .registry
        .put_replication_configuration(&registry, &config)
        .await
        .map_err(|e| EcrError::from_registry(e, "", &registry))?;
    Ok(json!({ "replicationConfiguration": config }))
}

pub(super) async fn describe_registry(ctx: &Ctx<'_>, _input: &Input) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    ctx.authorize("DescribeRegistry", &registry, None).await?;
    let config = ctx
        .state
        .registry
        .replication_configuration(&registry)
        .await
        .map_err(|e| EcrError::from_registry(e, "", &registry))?;
    Ok(
        json!({ "registryId": crate::reference::key_account(&registry), "replicationConfiguration": config }),
    )
}

pub(super) async fn describe_image_replication_status(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let id = super::scanning::image_id_input(input)?;
    let repo = ctx
        .existing_repo(input, "DescribeImageReplicationStatus")
        .await?;
    let (digest, image_id) = super::scanning::resolved(ctx, &repo, &id).await?;
    let entries = ctx
        .state
        .registry
        .replication_entries(&repo, &digest)
        .await
        .map_err(EcrError::meta)?;
    let statuses: Vec<Value> = entries
        .iter()
        .map(|e| {
            let status = match e.state.as_str() {
                "complete" => "COMPLETE",
                "failed" => "FAILED",
                // Retrying after a failure: FAILED with its code until it succeeds.
                _ if e.failure_code.is_some() => "FAILED",
                _ => "IN_PROGRESS",
            };
            let mut s = json!({
                "region": e.destination.region,
                "registryId": e.destination.registry,
                "status": status,
            });
            if status == "FAILED" {
                s["failureCode"] = json!(e.failure_code.clone().unwrap_or_default());
            }
            s
        })
        .collect();
    Ok(json!({
        "repositoryName": repo.name.as_str(),
        "imageId": image_id,
        "replicationStatuses": statuses,
    }))
}

// ---- repository creation templates ------------------------------------------

fn is_prefix(s: &str) -> bool {
    if s == ROOT {
        return true;
    }
    let body = s.strip_suffix('/').unwrap_or(s);
    !body.is_empty() && crate::reference::RepoName::parse(body).is_some()
}

const PREFIX_PATTERN: &str =
    "^([a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*\\/?|ROOT)$";

fn prefix_input(input: &Input) -> Result<String, EcrError> {
    let p = input.str("prefix")?;
    input::check_len("prefix", p, 1, 256)?;
    input::check_pattern("prefix", p, is_prefix, PREFIX_PATTERN)?;
    Ok(p.to_string())
}

/// The template's settings from the request, over `base` (Update keeps
/// what it does not name).
async fn template_input(
    ctx: &Ctx<'_>,
    registry: &str,
    input: &Input,
    mut t: CreationTemplate,
    creating: bool,
) -> Result<CreationTemplate, EcrError> {
    if let Some(arn) = input.opt_str("customRoleArn")?.filter(|a| !a.is_empty()) {
        input::check_len("customRoleArn", arn, 0, 2048)?;
        return Err(EcrError::invalid(
            "Invalid parameter at 'customRoleArn' failed to satisfy constraint: 'Berth has no IAM roles to assume; create the template without customRoleArn (the repository is created with Berth's own rights)'",
        ));
    }
    if let Some(d) = input.opt_str("description")? {
        input::check_len("description", d, 0, 256)?;
        t.description = Some(d.to_string());
    }
    match input.opt_str_list("appliedFor")? {
        Some(list) => {
            let mut applied = Vec::new();
            for a in &list {
                input::check_enum(
                    "appliedFor.member",
                    a,
                    &["REPLICATION", "PULL_THROUGH_CACHE", "CREATE_ON_PUSH"],
                )?;
                if AppliedFor::parse(a).is_some() && !applied.contains(a) {
                    applied.push(a.clone());
                }
            }
            if applied.is_empty() {
                return Err(EcrError::invalid(
                    "appliedFor must name at least one of REPLICATION, PULL_THROUGH_CACHE, CREATE_ON_PUSH",
                ));
            }
            t.applied_for = applied;
        }
        None if creating => {
            return Err(EcrError::invalid("Missing required parameter: appliedFor"));
        }
        None => {}
    }
    if input.get("imageTagMutability").is_some() || creating {
        let (m, filters) = super::repositories::mutability(input, false)?;
        t.image_tag_mutability = m;
        t.mutability_exclusions = filters;
    }
    if let Some(c) = input.opt_object("encryptionConfiguration")? {
        let kind = c
            .get("encryptionType")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                EcrError::invalid(
                    "Missing required parameter: encryptionConfiguration.encryptionType",
                )
            })?;
        input::check_enum(
            "encryptionConfiguration.encryptionType",
            kind,
            &["AES256", "KMS", "KMS_DSSE"],
        )?;
        if kind == "KMS_DSSE" {
            return Err(EcrError::invalid(
                "Invalid parameter at 'encryptionConfiguration' failed to satisfy constraint: 'Berth does not offer KMS_DSSE (dual-layer encryption); use KMS or AES256'",
            ));
        }
        let key = c
            .get("kmsKey")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty());
        if let Some(k) = key {
            let full_arn = k.starts_with("arn:aws") && k.contains(":kms:") && k.contains(":key/");
            if !full_arn {
                return Err(EcrError::constraint(
                    "encryptionConfiguration.kmsKey",
                    "must satisfy regular expression '^$|arn:aws[a-z0-9-]*:kms:[a-z0-9-]+:[0-9]{12}:key\\/[a-z0-9-]+'",
                ));
            }
            if kind == "AES256" {
                return Err(EcrError::invalid(
                    "Invalid parameter at 'encryptionConfiguration' failed to satisfy constraint: 'kmsKey can only be specified with encryptionType KMS'",
                ));
            }
            // The key must exist and be usable now, as for CreateRepository.
            ctx.state
                .registry
                .kms
                .repository_key(registry, "KMS", Some(k))
                .await
                .map_err(|e| EcrError::new("KmsException", 400, e.to_string()))?;
        }
        t.encryption_type = kind.to_string();
        t.kms_key = key.map(str::to_string);
    } else if creating {
        t.encryption_type = "AES256".into();
    }
    if input.get("resourceTags").is_some() {
        let tags = input::resource_tags(input, "resourceTags")?;
        if tags.len() > 50 {
            return Err(EcrError::new(
                "TooManyTagsException",
                400,
                "A template can have at most 50 tags",
            ));
        }
        t.resource_tags = tags;
    }
    if let Some(p) = input.opt_str("repositoryPolicy")? {
        input::check_len("repositoryPolicy", p, 0, 10_240)?;
        t.repository_policy = if p.is_empty() {
            None
        } else {
            crate::iam::Policy::parse(p, crate::iam::PolicyKind::Resource).map_err(|_| {
                EcrError::invalid(
                    "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided'",
                )
            })?;
            Some(p.to_string())
        };
    }
    if let Some(p) = input.opt_str("lifecyclePolicy")? {
        input::check_len("lifecyclePolicy", p, 0, 30_720)?;
        t.lifecycle_policy = if p.is_empty() {
            None
        } else {
            crate::lifecycle::parse_supported(p).map_err(|e| {
                EcrError::invalid(format!(
                    "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: '{e}'"
                ))
            })?;
            Some(p.to_string())
        };
    }
    Ok(t)
}

fn template_json(t: &CreationTemplate, created_at: i64, updated_at: i64) -> Value {
    let mut enc = json!({ "encryptionType": t.encryption_type });
    if let Some(k) = &t.kms_key {
        enc["kmsKey"] = json!(k);
    }
    let mut v = json!({
        "prefix": t.prefix,
        "encryptionConfiguration": enc,
        "resourceTags": t.resource_tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
        "imageTagMutability": t.image_tag_mutability,
        "appliedFor": t.applied_for,
        "createdAt": timestamp(created_at),
        "updatedAt": timestamp(updated_at),
    });
    if !t.mutability_exclusions.is_empty() {
        v["imageTagMutabilityExclusionFilters"] = json!(
            t.mutability_exclusions
                .iter()
                .map(|f| json!({"filterType": "WILDCARD", "filter": f}))
                .collect::<Vec<_>>()
        );
    }
    if let Some(d) = &t.description {
        v["description"] = json!(d);
    }
    if let Some(p) = &t.repository_policy {
        v["repositoryPolicy"] = json!(p);
    }
    if let Some(p) = &t.lifecycle_policy {
        v["lifecyclePolicy"] = json!(p);
    }
    v
}

fn template_not_found(prefix: &str, registry: &str) -> EcrError {
    EcrError::new(
        "TemplateNotFoundException",
        400,
        format!(
            "The repository creation template with prefix '{prefix}' does not exist in the registry with id '{registry}'"
        ),
    )
}

/// Most templates a registry may have (ECR's quota).
const MAX_TEMPLATES: usize = 50;

pub(super) async fn create_repository_creation_template(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    let prefix = prefix_input(input)?;
    let base = CreationTemplate {
        prefix: prefix.clone(),
        ..CreationTemplate::default()
    };
    let t = template_input(ctx, &registry, input, base, true).await?;
    ctx.authorize("CreateRepositoryCreationTemplate", &registry, None)
        .await?;
    let reg = &ctx.state.registry;
    let existing = reg
        .creation_templates(&registry)
        .await
        .map_err(|e| EcrError::from_registry(e, "", &registry))?;
    if existing.len() >= MAX_TEMPLATES {
        return Err(EcrError::new(
            "LimitExceededException",
            400,
            format!("A registry can have at most {MAX_TEMPLATES} repository creation templates"),
        ));
    }
    let now = crate::registry::now_millis();
    if !reg
        .create_creation_template(&registry, &t, now)
        .await
        .map_err(EcrError::meta)?
    {
        return Err(EcrError::new(
            "TemplateAlreadyExistsException",
            400,
            format!(
                "The repository creation template with prefix '{prefix}' already exists in the registry with id '{registry}'"
            ),
        ));
    }
    Ok(
        json!({ "registryId": crate::reference::key_account(&registry), "repositoryCreationTemplate": template_json(&t, now, now) }),
    )
}

pub(super) async fn update_repository_creation_template(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    let prefix = prefix_input(input)?;
    ctx.authorize("UpdateRepositoryCreationTemplate", &registry, None)
        .await?;
    let reg = &ctx.state.registry;
    let (current, created_at) = reg
        .creation_template(&registry, &prefix)
        .await
        .map_err(|e| EcrError::from_registry(e, "", &registry))?
        .ok_or_else(|| template_not_found(&prefix, &registry))?;
    let t = template_input(ctx, &registry, input, current, false).await?;
    let now = crate::registry::now_millis();
    if !reg
        .update_creation_template(&registry, &t, now)
        .await
        .map_err(EcrError::meta)?
    {
        return Err(template_not_found(&prefix, &registry));
    }
    Ok(
        json!({ "registryId": crate::reference::key_account(&registry), "repositoryCreationTemplate": template_json(&t, created_at, now) }),
    )
}

pub(super) async fn delete_repository_creation_template(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    let prefix = prefix_input(input)?;
    ctx.authorize("DeleteRepositoryCreationTemplate", &registry, None)
        .await?;
    let (t, created, updated) = ctx
        .state
        .registry
        .delete_creation_template(&registry, &prefix)
        .await
        .map_err(|e| EcrError::from_registry(e, "", &registry))?
        .ok_or_else(|| template_not_found(&prefix, &registry))?;
    Ok(
        json!({ "registryId": crate::reference::key_account(&registry), "repositoryCreationTemplate": template_json(&t, created, updated) }),
    )
}

pub(super) async fn describe_repository_creation_templates(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    let wanted = match input.opt_str_list("prefixes")? {
        Some(list) => {
            for p in &list {
                input::check_len("prefixes.member", p, 1, 256)?;
                input::check_pattern("prefixes.member", p, is_prefix, PREFIX_PATTERN)?;
            }
            Some(list)
        }
        None => None,
    };
    let limit = input.max_results(1000, 100)? as usize;
    ctx.authorize("DescribeRepositoryCreationTemplates", &registry, None)
        .await?;
    let after = ctx.page_token(
        input,
        "DescribeRepositoryCreationTemplates",
        &registry,
        None,
    )?;
    let all = ctx
        .state
        .registry
        .creation_template_rows(&registry)
        .await
        .map_err(|e| EcrError::from_registry(e, "", &registry))?;
    let mut out = Vec::new();
    let mut next = None;
    for (t, created, updated) in all
        .iter()
        .filter(|(t, ..)| after.as_deref().is_none_or(|a| t.prefix.as_str() > a))
        .filter(|(t, ..)| wanted.as_ref().is_none_or(|w| w.contains(&t.prefix)))
    {
        if out.len() == limit {
            next = Some(
                ctx.next_token(
                    "DescribeRepositoryCreationTemplates",
                    &registry,
                    None,
                    out.last()
                        .and_then(|v: &Value| v["prefix"].as_str())
                        .unwrap_or_default(),
                ),
            );
            break;
        }
        out.push(template_json(t, *created, *updated));
    }
    let mut v = json!({ "registryId": crate::reference::key_account(&registry), "repositoryCreationTemplates": out });
    if let Some(n) = next {
        v["nextToken"] = json!(n);
    }
    Ok(v)
}
