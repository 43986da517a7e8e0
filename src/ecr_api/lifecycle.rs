//! Lifecycle policy operations: Put/Get/DeleteLifecyclePolicy and
//! Start/GetLifecyclePolicyPreview. Validation and planning live in
//! `crate::lifecycle`; a preview runs as a background task whose result is
//! stored in the metadata store, so any node can answer for it.

use serde_json::{Value, json};

use super::input::{self, Input};
use super::{Ctx, EcrError, timestamp};
use crate::registry::RepoId;
use crate::registry::now_millis;

/// A preview still `IN_PROGRESS` after this long was lost with its node.
const PREVIEW_TIMEOUT_MS: i64 = 10 * 60 * 1000;

fn policy_not_found(repo: &RepoId) -> EcrError {
    EcrError::new(
        "LifecyclePolicyNotFoundException",
        400,
        format!(
            "Lifecycle policy does not exist for the repository with name '{}' in the registry with id '{}'",
            repo.name, repo.registry
        ),
    )
}

fn invalid_policy(e: crate::lifecycle::policy::PolicyError) -> EcrError {
    EcrError::invalid(e.to_string())
}

/// `lifecyclePolicyText`, length-checked as the service model says.
fn policy_text(input: &Input, required: bool) -> Result<Option<&str>, EcrError> {
    let text = input.opt_str("lifecyclePolicyText")?;
    match text {
        None if required => Err(EcrError::invalid(
            "Missing required parameter: lifecyclePolicyText",
        )),
        None => Ok(None),
        Some(t) => {
            input::check_len("lifecyclePolicyText", t, 100, 30720)?;
            Ok(Some(t))
        }
    }
}

pub(super) async fn put_lifecycle_policy(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "PutLifecyclePolicy").await?;
    let text = policy_text(input, true)?.unwrap_or_default();
    crate::lifecycle::parse_supported(text).map_err(invalid_policy)?;
    ctx.state
        .registry
        .put_lifecycle_policy(repo.key(), text, now_millis())
        .await
        .map_err(EcrError::meta)?;
    Ok(json!({
        "registryId": crate::reference::key_account(&repo.registry),
        "repositoryName": repo.name.as_str(),
        "lifecyclePolicyText": text,
    }))
}

fn policy_json(repo: &RepoId, row: &crate::registry::LifecyclePolicyRow) -> Value {
    let mut v = json!({
        "registryId": crate::reference::key_account(&repo.registry),
        "repositoryName": repo.name.as_str(),
        "lifecyclePolicyText": row.policy,
    });
    if let Some(t) = row.last_evaluated_at {
        v["lastEvaluatedAt"] = timestamp(t);
    }
    v
}

pub(super) async fn get_lifecycle_policy(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "GetLifecyclePolicy").await?;
    let row = ctx
        .state
        .registry
        .get_lifecycle_policy(repo.key())
        .await
        .map_err(EcrError::meta)?
        .ok_or_else(|| policy_not_found(&repo))?;
    Ok(policy_json(&repo, &row))
}

pub(super) async fn delete_lifecycle_policy(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "DeleteLifecyclePolicy").await?;
    let row = ctx
        .state
        .registry
        .delete_lifecycle_policy(repo.key())
        .await
        .map_err(EcrError::meta)?
        .ok_or_else(|| policy_not_found(&repo))?;
    Ok(policy_json(&repo, &row))
}

pub(super) async fn start_lifecycle_policy_preview(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let repo = ctx
        .existing_repo(input, "StartLifecyclePolicyPreview")
        .await?;
    let reg = &ctx.state.registry;
    let text = match policy_text(input, false)? {
        Some(t) => t.to_string(),
        None => {
            reg.get_lifecycle_policy(repo.key())
                .await
                .map_err(EcrError::meta)?
                .ok_or_else(|| policy_not_found(&repo))?
                .policy
        }
    };
    crate::lifecycle::parse_supported(&text).map_err(invalid_policy)?;
    let started = now_millis();
    let fresh = reg
        .start_lifecycle_preview(repo.key(), &text, started, started - PREVIEW_TIMEOUT_MS)
        .await
        .map_err(EcrError::meta)?;
    if !fresh {
        return Err(EcrError::new(
            "LifecyclePolicyPreviewInProgressException",
            400,
            format!(
                "The previous lifecycle policy preview request has not completed for the repository with name '{}' in the registry with id '{}'",
                repo.name, repo.registry
            ),
        ));
    }
    Ok(json!({
        "registryId": crate::reference::key_account(&repo.registry),
        "repositoryName": repo.name.as_str(),
        "lifecyclePolicyText": text,
        "status": "IN_PROGRESS",
    }))
}

pub(super) async fn get_lifecycle_policy_preview(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let repo = ctx
        .existing_repo(input, "GetLifecyclePolicyPreview")
        .await?;
    let limit = input.max_results(100, 100)? as usize;
    let offset: usize = match ctx.page_token(
        input,
        "GetLifecyclePolicyPreview",
        &repo.registry,
        Some(repo.name.as_str()),
    )? {
        Some(k) => k.parse().map_err(|_| {
            EcrError::invalid("Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid pagination token'")
        })?,
        None => 0,
    };
    let tag_status = match input.opt_object("filter")? {
        Some(f) => match f.get("tagStatus") {
            None | Some(Value::Null) => "ANY".to_string(),
            Some(Value::String(s)) => {
                input::check_enum("filter.tagStatus", s, &["TAGGED", "UNTAGGED", "ANY"])?;
                s.clone()
            }
            Some(_) => return Err(EcrError::serialization("tagStatus must be a string")),
        },
        None => "ANY".into(),
    };
    let ids = super::images::image_ids(input)?;
    let row = ctx
        .state
        .registry
        .get_lifecycle_preview(repo.key())
        .await
        .map_err(EcrError::meta)?
        .ok_or_else(|| {
            EcrError::new(
                "LifecyclePolicyPreviewNotFoundException",
                400,
                format!(
                    "There is no lifecycle policy preview for the repository with name '{}' in the registry with id '{}'",
                    repo.name, repo.registry
                ),
            )
        })?;
    let mut status = row.status.clone();
    if status == "IN_PROGRESS" && row.started_at < now_millis() - PREVIEW_TIMEOUT_MS {
        status = "FAILED".into();
    }
    let mut out = json!({
        "registryId": crate::reference::key_account(&repo.registry),
        "repositoryName": repo.name.as_str(),
        "lifecyclePolicyText": row.policy,
        "status": status,
        "previewResults": [],
    });
    let Some(results) = row.results.as_deref() else {
        return Ok(out);
    };
    let results: Value = serde_json::from_str(results).map_err(EcrError::server)?;
    let all = results["previewResults"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let selected: Vec<Value> = all
        .into_iter()
        .filter(|r| {
            let tagged = r["imageTags"].as_array().is_some_and(|t| !t.is_empty());
            match tag_status.as_str() {
                "TAGGED" => tagged,
                "UNTAGGED" => !tagged,
                _ => true,
            }
        })
        .filter(|r| {
            ids.as_ref().is_none_or(|ids| {
                ids.iter().any(|id| {
                    id.digest
                        .as_deref()
                        .is_none_or(|d| r["imageDigest"] == json!(d))
                        && id.tag.as_deref().is_none_or(|t| {
                            r["imageTags"]
                                .as_array()
                                .is_some_and(|tags| tags.contains(&json!(t)))
                        })
                })
            })
        })
        .collect();
    let page: Vec<Value> = selected.iter().skip(offset).take(limit).cloned().collect();
    if offset + page.len() < selected.len() {
        out["nextToken"] = json!(ctx.next_token(
            "GetLifecyclePolicyPreview",
            &repo.registry,
            Some(repo.name.as_str()),
            &(offset + page.len()).to_string()
        ));
    }
    out["previewResults"] = json!(page);
    out["summary"] = results["summary"].clone();
    Ok(out)
}
