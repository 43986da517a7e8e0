//! Image lifecycle: ECR lifecycle policies (parsing and validation in
//! [`policy`], the pure evaluation in [`planner`]) and their execution.
//!
//! Preview and execution share one path: `MetadataStore::repository_images`
//! reads a repository's images, [`planner::plan`] decides, and then either [`preview_json`]
//! renders the decisions or [`evaluate`] carries them out (expiry in
//! `metadata::lifecycle`, which re-checks every image against the snapshot).
//! [`run_due`] is the background schedule and [`run_preview`] a preview's
//! job (both run by `jobs`); `berth lifecycle` is the CLI.

pub mod planner;
pub mod policy;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::metadata::{
    ExpiryRecord, LifecyclePolicyRow, MetaError, MetadataStore, PlannedExpiry, Repo, RepoImage,
};
use crate::registry::Registry;
use planner::{Decision, ImageFacts};
use policy::{Action, Policy, PolicyError, StorageClass};

/// Parse a policy for storing or previewing: full ECR validation, and archive
/// rules (which need the archive storage class, not built yet) refused by name.
pub fn parse_supported(text: &str) -> Result<Policy, PolicyError> {
    let policy = policy::parse(text)?;
    if let Some(rule) = policy.rules.iter().find(|r| r.uses_archive()) {
        return Err(PolicyError(format!(
            "rule with rulePriority {}: the archive storage class (transition actions, \
             sinceImagePulled, sinceImageTransitioned, storageClass archive) is not supported \
             by this registry yet",
            rule.priority
        )));
    }
    Ok(policy)
}

/// The planner's view of a repository's images. A referrer whose subject is
/// in the repository is `attached` (it goes with its subject).
pub fn facts(images: &[RepoImage]) -> Vec<ImageFacts> {
    let present: HashSet<&str> = images.iter().map(|i| i.digest.as_str()).collect();
    images
        .iter()
        .map(|i| ImageFacts {
            digest: i.digest.clone(),
            tags: i.tags.clone(),
            pushed_at: i.pushed_at,
            storage_class: StorageClass::Standard,
            last_pulled_at: i.last_pulled_at,
            last_activated_at: None,
            last_archived_at: None,
            in_index: i.in_index,
            attached: i.subject.as_deref().is_some_and(|s| present.contains(s)),
        })
        .collect()
}

/// The preview of `decisions` over `images`, in GetLifecyclePolicyPreview's
/// shapes: `previewResults` and `summary`.
pub fn preview_json(images: &[RepoImage], decisions: &[Decision]) -> Value {
    let by_digest: std::collections::HashMap<&str, &RepoImage> =
        images.iter().map(|i| (i.digest.as_str(), i)).collect();
    let mut expiring = 0u64;
    let mut transitioning = 0u64;
    let results: Vec<Value> = decisions
        .iter()
        .filter_map(|d| {
            let img = by_digest.get(d.digest.as_str())?;
            let mut action = json!({ "type": d.action.as_ecr() });
            match d.action {
                Action::Expire => expiring += 1,
                Action::Transition => {
                    transitioning += 1;
                    action["targetStorageClass"] = json!("ARCHIVE");
                }
            }
            let mut v = json!({
                "imageDigest": img.digest,
                // Epoch seconds, as ECR puts timestamps on the wire.
                "imagePushedAt": img.pushed_at as f64 / 1000.0,
                "action": action,
                "appliedRulePriority": d.rule_priority,
                "storageClass": "STANDARD",
            });
            if !img.tags.is_empty() {
                v["imageTags"] = json!(img.tags);
            }
            Some(v)
        })
        .collect();
    let mut summary = json!({ "expiringImageTotalCount": expiring });
    if transitioning > 0 {
        summary["transitioningImageTotalCounts"] =
            json!([{ "targetStorageClass": "ARCHIVE", "imageTotalCount": transitioning }]);
    }
    json!({ "previewResults": results, "summary": summary })
}

/// Plan `policy` over the repository as it is now, evaluated at `at` (epoch ms).
pub async fn preview(
    meta: &MetadataStore,
    repo: Repo<'_>,
    policy: &Policy,
    at: i64,
) -> Result<Value, MetaError> {
    let images = meta.repository_images(repo).await?;
    let decisions = planner::plan(policy, &facts(&images), at);
    Ok(preview_json(&images, &decisions))
}

/// Carry out the preview started for `repo` (the job the API enqueued):
/// plan its policy as of the instant it started, over the images now, and
/// store the result. A preview finished already, or superseded by a newer
/// one, is left alone (the newer one's job does its own).
pub async fn run_preview(registry: &Registry, repo: Repo<'_>) -> Result<(), MetaError> {
    let Some(row) = registry.meta.get_lifecycle_preview(repo).await? else {
        return Ok(());
    };
    if row.status != "IN_PROGRESS" {
        return Ok(());
    }
    let (status, results) = match parse_supported(&row.policy) {
        Ok(policy) => match preview(&registry.meta, repo, &policy, row.started_at).await {
            Ok(v) => ("COMPLETE", Some(v.to_string())),
            Err(e) => return Err(e),
        },
        Err(e) => {
            tracing::warn!(registry = repo.registry, repository = repo.name, error = %e,
                "a lifecycle preview's policy is not usable");
            ("FAILED", None)
        }
    };
    registry
        .meta
        .finish_lifecycle_preview(repo, row.started_at, status, results.as_deref())
        .await
}

/// What one evaluation of a repository's policy did.
#[derive(Debug, Default)]
pub struct Evaluation {
    pub decisions: usize,
    /// Every manifest removed, including referrers and index children.
    pub expired: Vec<ExpiryRecord>,
}

/// Expiries are applied in transactions of this many planned images.
const EXPIRE_BATCH: usize = 200;

/// Evaluate `row`'s policy now and carry it out. `actor` is recorded with
/// every expiry. The caller has claimed the evaluation (see [`run_due`]).
pub async fn evaluate(
    registry: &Registry,
    row: &LifecyclePolicyRow,
    actor: &str,
    now: i64,
) -> Result<Evaluation, EvaluateError> {
    let repo = Repo {
        registry: &row.registry_id,
        name: &row.repository,
    };
    let policy = parse_supported(&row.policy)?;
    let images = registry.meta.repository_images(repo).await?;
    let decisions = planner::plan(&policy, &facts(&images), now);
    let by_digest: std::collections::HashMap<&str, &RepoImage> =
        images.iter().map(|i| (i.digest.as_str(), i)).collect();
    let planned: Vec<PlannedExpiry> = decisions
        .iter()
        .filter(|d| d.action == Action::Expire)
        .filter_map(|d| {
            by_digest.get(d.digest.as_str()).map(|img| PlannedExpiry {
                digest: d.digest.clone(),
                tags: img.tags.clone(),
                rule_priority: d.rule_priority as i64,
            })
        })
        .collect();
    let mut out = Evaluation {
        decisions: decisions.len(),
        expired: Vec::new(),
    };
    let event = registry.service_event(
        "PolicyExecutionEvent",
        &row.registry_id,
        &row.repository,
        crate::audit::ECR,
    );
    for batch in planned.chunks(EXPIRE_BATCH) {
        let records = registry
            .meta
            .expire_images(repo, batch, actor, now, Some(&event))
            .await?;
        for r in &records {
            tracing::info!(
                registry = %r.registry_id, repository = %r.repository, digest = %r.digest,
                tags = ?r.tags, rule = r.rule_priority, reason = %r.reason,
                "lifecycle policy expired an image"
            );
        }
        out.expired.extend(records);
    }
    registry.metrics.lifecycle_evaluations.inc();
    registry
        .metrics
        .lifecycle_images_expired
        .inc_by(out.expired.len() as u64);
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// Evaluate every policy not evaluated within `interval`. Each evaluation is
/// claimed first (compare-and-swap on `lastEvaluatedAt`), so nodes sharing a
/// database split the work instead of repeating it. Returns how many
/// repositories were evaluated and how many manifests expired.
pub async fn run_due(
    registry: &Registry,
    interval: Duration,
    actor: &str,
) -> Result<(usize, usize), MetaError> {
    let now = crate::metadata::now_millis();
    let before = now - interval.as_millis() as i64;
    let mut repos = 0;
    let mut expired = 0;
    loop {
        let due = registry.meta.lifecycle_policies_due(before, 100).await?;
        if due.is_empty() {
            break;
        }
        let mut progressed = false;
        for row in due {
            let repo = Repo {
                registry: &row.registry_id,
                name: &row.repository,
            };
            let now = crate::metadata::now_millis();
            if !registry
                .meta
                .claim_lifecycle_evaluation(repo, &row.policy, row.last_evaluated_at, now)
                .await?
            {
                continue;
            }
            progressed = true;
            match evaluate(registry, &row, actor, now).await {
                Ok(e) => {
                    repos += 1;
                    expired += e.expired.len();
                }
                Err(EvaluateError::Meta(e)) => return Err(e),
                Err(EvaluateError::Policy(e)) => {
                    tracing::warn!(registry = %row.registry_id, repository = %row.repository,
                        error = %e, "stored lifecycle policy is not usable; skipped");
                }
            }
        }
        if !progressed {
            break;
        }
    }
    Ok((repos, expired))
}
