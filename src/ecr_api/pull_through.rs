//! Pull-through cache rule operations: Create/Describe/Update/Delete/
//! ValidatePullThroughCacheRule. The rules (prefixes, upstream URLs,
//! credentials) are the `pull_through` service's; this is their wire shape
//! and ECR's exception names.

use serde_json::{Value, json};

use super::input::{self, Input};
use super::{Ctx, EcrError, timestamp};
use crate::pull_through::{NewRuleInput, Rule, RuleError, rules::RuleInputError};

fn rule_error(e: RuleError) -> EcrError {
    let msg = e.to_string();
    match e {
        RuleError::Input(RuleInputError::Constraint { .. }) => EcrError::invalid(msg),
        RuleError::Input(RuleInputError::UnsupportedUpstream(_)) => {
            EcrError::new("UnsupportedUpstreamRegistryException", 400, msg)
        }
        RuleError::Exists { .. } => {
            EcrError::new("PullThroughCacheRuleAlreadyExistsException", 400, msg)
        }
        RuleError::NotFound { .. } => {
            EcrError::new("PullThroughCacheRuleNotFoundException", 400, msg)
        }
        RuleError::Limit { .. } => EcrError::new("LimitExceededException", 400, msg),
        RuleError::SecretNotFound(_) => EcrError::new("SecretNotFoundException", 400, msg),
        RuleError::SecretUnreadable(_) => {
            EcrError::new("UnableToDecryptSecretValueException", 400, msg)
        }
        RuleError::SecretInaccessible(_) => {
            EcrError::new("UnableToAccessSecretException", 400, msg)
        }
        RuleError::Refused { .. } => EcrError::invalid(msg),
        RuleError::Meta(m) => EcrError::meta(m),
    }
}

/// The `PullThroughCacheRule` shape (and the members each output shares with it).
fn rule_json(r: &Rule) -> Value {
    let mut v = json!({
        "ecrRepositoryPrefix": r.prefix,
        "upstreamRegistryUrl": r.upstream_url,
        "createdAt": timestamp(r.created_at),
        "registryId": crate::reference::key_account(&r.registry_id),
        "updatedAt": timestamp(r.updated_at),
    });
    if !r.upstream_prefix.is_empty() {
        v["upstreamRepositoryPrefix"] = json!(r.upstream_prefix);
    }
    if let Some(u) = &r.upstream_registry {
        v["upstreamRegistry"] = json!(u);
    }
    if let Some(c) = &r.credential_arn {
        v["credentialArn"] = json!(c);
    }
    v
}

/// Keep only the members of `v` an operation's output has.
fn only(mut v: Value, members: &[&str]) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| members.contains(&k.as_str()));
    }
    v
}

/// `customRoleArn`, within the model's length (the service refuses any).
fn custom_role_arn(input: &Input) -> Result<Option<&str>, EcrError> {
    let arn = input.opt_str("customRoleArn")?;
    if let Some(r) = arn {
        input::check_len("customRoleArn", r, 0, 2048)?;
    }
    Ok(arn)
}

pub(super) async fn create_pull_through_cache_rule(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let registry = ctx.registry_id(input)?;
    let prefix = input.str("ecrRepositoryPrefix")?;
    let url = input.str("upstreamRegistryUrl")?;
    let credential_arn = input.opt_str("credentialArn")?;
    let custom_role_arn = custom_role_arn(input)?;
    ctx.authorize("CreatePullThroughCacheRule", &registry, None)
        .await?;
    let rule = ctx
        .state
        .pull_through
        .create_rule(NewRuleInput {
            registry: &registry,
            prefix,
            upstream_url: url,
            upstream_registry: input.opt_str("upstreamRegistry")?,
            upstream_prefix: input.opt_str("upstreamRepositoryPrefix")?,
            credential_arn,
            custom_role_arn,
        })
        .await
        .map_err(rule_error)?;
    Ok(only(
        rule_json(&rule),
        &[
            "ecrRepositoryPrefix",
            "upstreamRegistryUrl",
            "createdAt",
            "registryId",
            "upstreamRegistry",
            "credentialArn",
            "upstreamRepositoryPrefix",
        ],
    ))
}

pub(super) async fn describe_pull_through_cache_rules(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    const OP: &str = "DescribePullThroughCacheRules";
    let registry = ctx.registry_id(input)?;
    let prefixes = input.opt_str_list("ecrRepositoryPrefixes")?;
    if let Some(p) = &prefixes {
        input::check_count("ecrRepositoryPrefixes", p.len(), 1, 100)?;
    }
    let limit = input.max_results(1000, 100)?;
    ctx.authorize(OP, &registry, None).await?;
    let after = ctx.page_token(input, OP, &registry, None)?;
    let mut rules = ctx
        .state
        .pull_through
        .describe_rules(&registry, prefixes.as_deref(), after.as_deref(), limit + 1)
        .await
        .map_err(rule_error)?;
    let more = rules.len() as i64 > limit;
    rules.truncate(limit as usize);
    let mut out = json!({
        "pullThroughCacheRules": rules.iter().map(rule_json).collect::<Vec<_>>(),
    });
    if more && let Some(last) = rules.last() {
        out["nextToken"] = json!(ctx.next_token(OP, &registry, None, &last.prefix));
    }
    Ok(out)
}

pub(super) async fn update_pull_through_cache_rule(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let registry = ctx.registry_id(input)?;
    let prefix = input.str("ecrRepositoryPrefix")?;
    let custom_role_arn = custom_role_arn(input)?;
    ctx.authorize("UpdatePullThroughCacheRule", &registry, None)
        .await?;
    let rule = ctx
        .state
        .pull_through
        .update_rule(
            &registry,
            prefix,
            input.opt_str("credentialArn")?,
            custom_role_arn,
        )
        .await
        .map_err(rule_error)?;
    Ok(only(
        rule_json(&rule),
        &[
            "ecrRepositoryPrefix",
            "registryId",
            "updatedAt",
            "credentialArn",
            "upstreamRepositoryPrefix",
        ],
    ))
}

/// The registry and `ecrRepositoryPrefix` of an operation on one rule, once
/// the caller may perform `ecr:<op>`.
async fn named_rule<'a>(
    ctx: &Ctx<'_>,
    input: &'a Input,
    op: &str,
) -> Result<(String, &'a str), EcrError> {
    let registry = ctx.registry_id(input)?;
    let prefix = input.str("ecrRepositoryPrefix")?;
    ctx.authorize(op, &registry, None).await?;
    Ok((registry, prefix))
}

pub(super) async fn delete_pull_through_cache_rule(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let (registry, prefix) = named_rule(ctx, input, "DeletePullThroughCacheRule").await?;
    let rule = ctx
        .state
        .pull_through
        .delete_rule(&registry, prefix)
        .await
        .map_err(rule_error)?;
    Ok(only(
        rule_json(&rule),
        &[
            "ecrRepositoryPrefix",
            "upstreamRegistryUrl",
            "createdAt",
            "registryId",
            "credentialArn",
            "upstreamRepositoryPrefix",
        ],
    ))
}

pub(super) async fn validate_pull_through_cache_rule(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let (registry, prefix) = named_rule(ctx, input, "ValidatePullThroughCacheRule").await?;
    let (rule, failure) = ctx
        .state
        .pull_through
        .validate_rule(&registry, prefix)
        .await
        .map_err(rule_error)?;
    let mut out = only(
        rule_json(&rule),
        &[
            "ecrRepositoryPrefix",
            "registryId",
            "upstreamRegistryUrl",
            "credentialArn",
            "upstreamRepositoryPrefix",
        ],
    );
    out["isValid"] = json!(failure.is_none());
    if let Some(f) = failure {
        out["failure"] = json!(f);
    }
    Ok(out)
}
