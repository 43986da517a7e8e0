//! Queries of lifecycle policies: the policy per repository with its
//! `lastEvaluatedAt`, the latest preview, the image facts the planner reads,
//! and expiry, which deletes images (with the referrers and index children
//! that go with them) and records each deletion in `lifecycle_events`.

use std::collections::{BTreeSet, HashSet};

use sqlx::Row;

use super::{MetadataStore, Repo, Result};

/// A repository's lifecycle policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecyclePolicyRow {
    pub registry_id: String,
    pub repository: String,
    pub policy: String,
    pub updated_at: i64,
    pub last_evaluated_at: Option<i64>,
}

/// The latest lifecycle policy preview of a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewRow {
    pub policy: String,
    /// `IN_PROGRESS`, `COMPLETE` or `FAILED`.
    pub status: String,
    pub started_at: i64,
    /// JSON written by the preview job.
    pub results: Option<String>,
}

/// What the lifecycle planner needs to know about one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoImage {
    pub digest: String,
    /// Sorted.
    pub tags: Vec<String>,
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
    pub subject: Option<String>,
    /// Referenced by an index in the same repository.
    pub in_index: bool,
}

/// One image removed by a lifecycle policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryRecord {
    pub registry_id: String,
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub action: String,
    pub rule_priority: i64,
    /// `rule`, `referrer of <digest>` or `child of <digest>`.
    pub reason: String,
    pub image_pushed_at: i64,
    pub occurred_at: i64,
    pub actor: String,
}

/// An image the planner decided to expire, with the tags it had in the
/// snapshot the decision was made on.
#[derive(Clone, Debug)]
pub struct PlannedExpiry {
    pub digest: String,
    pub tags: Vec<String>,
    pub rule_priority: i64,
}

const POLICY_COLUMNS: &str =
    "registry_id, repository, policy, updated_at, last_evaluated_at FROM lifecycle_policies";

fn policy_row(r: &sqlx::any::AnyRow) -> Result<LifecyclePolicyRow> {
    Ok(LifecyclePolicyRow {
        registry_id: r.try_get(0)?,
        repository: r.try_get(1)?,
        policy: r.try_get(2)?,
        updated_at: r.try_get(3)?,
        last_evaluated_at: r.try_get(4)?,
    })
}

impl MetadataStore {
    pub async fn put_lifecycle_policy(&self, repo: Repo<'_>, text: &str, now: i64) -> Result<()> {
        self.execute_write(
            sqlx::query(
                "INSERT INTO lifecycle_policies (registry_id, repository, policy, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (registry_id, repository) \
             DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
            )
            .bind(repo.registry)
            .bind(repo.name)
            .bind(text)
            .bind(now),
        )
        .await?;
        Ok(())
    }

    pub async fn get_lifecycle_policy(&self, repo: Repo<'_>) -> Result<Option<LifecyclePolicyRow>> {
        let sql = format!("SELECT {POLICY_COLUMNS} WHERE registry_id = $1 AND repository = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(repo.registry)
            .bind(repo.name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(policy_row).transpose()
    }

    /// Delete the policy; returns it as it was.
    pub async fn delete_lifecycle_policy(
        &self,
        repo: Repo<'_>,
    ) -> Result<Option<LifecyclePolicyRow>> {
        let mut tx = self.begin_write().await?;
        let sql = format!("SELECT {POLICY_COLUMNS} WHERE registry_id = $1 AND repository = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(repo.registry)
            .bind(repo.name)
            .fetch_optional(&mut *tx)
            .await?;
        let row = row.as_ref().map(policy_row).transpose()?;
        if row.is_some() {
            sqlx::query(
                "DELETE FROM lifecycle_policies WHERE registry_id = $1 AND repository = $2",
            )
            .bind(repo.registry)
            .bind(repo.name)
            .execute(&mut *tx)
            .await?;
        }
        self.commit_if(tx, row.is_some()).await?;
        Ok(row)
    }

    /// Policies whose last evaluation (or, if never evaluated, whose last
    /// change) is before `before`, oldest first. A new or changed policy thus
    /// waits one interval before it acts, leaving time to preview it.
    pub async fn lifecycle_policies_due(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<LifecyclePolicyRow>> {
        let sql = format!(
            "SELECT {POLICY_COLUMNS} WHERE COALESCE(last_evaluated_at, updated_at) < $1 \
             ORDER BY COALESCE(last_evaluated_at, updated_at), registry_id, repository LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(policy_row).collect()
    }

    /// Take the next evaluation of a policy: set `last_evaluated_at` to `now`
    /// if it still is `seen` (compare-and-swap, so two nodes never evaluate the
    /// same policy for the same period) and the text is still `text`.
    pub async fn claim_lifecycle_evaluation(
        &self,
        repo: Repo<'_>,
        text: &str,
        seen: Option<i64>,
        now: i64,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE lifecycle_policies SET last_evaluated_at = $1 WHERE registry_id = $2 \
             AND repository = $3 AND policy = $4 AND COALESCE(last_evaluated_at, -1) = $5",
        )
        .bind(now)
        .bind(repo.registry)
        .bind(repo.name)
        .bind(text)
        .bind(seen.unwrap_or(-1))
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Begin a preview unless one started after `stale_before` is still in
    /// progress, and queue `job` (which carries it out) in the same
    /// transaction. Returns false when one is in progress.
    pub async fn start_lifecycle_preview(
        &self,
        repo: Repo<'_>,
        text: &str,
        now: i64,
        stale_before: i64,
        job: &super::NewJob,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let busy = sqlx::query(
            "SELECT 1 FROM lifecycle_previews WHERE registry_id = $1 AND repository = $2 \
             AND status = 'IN_PROGRESS' AND started_at >= $3",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(stale_before)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if busy {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO lifecycle_previews (registry_id, repository, policy, status, started_at, results) \
             VALUES ($1, $2, $3, 'IN_PROGRESS', $4, NULL) ON CONFLICT (registry_id, repository) \
             DO UPDATE SET policy = excluded.policy, status = excluded.status, \
             started_at = excluded.started_at, results = NULL",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(text)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // A job of this repository's still queued (a stale preview's) does
        // this one: jobs read the preview row when they run.
        super::jobs::insert_job(&mut tx, job, 0).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// Store the outcome of the preview that started at `started_at`.
    pub async fn finish_lifecycle_preview(
        &self,
        repo: Repo<'_>,
        started_at: i64,
        status: &str,
        results: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE lifecycle_previews SET status = $1, results = $2 \
             WHERE registry_id = $3 AND repository = $4 AND started_at = $5",
        )
        .bind(status)
        .bind(results)
        .bind(repo.registry)
        .bind(repo.name)
        .bind(started_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_lifecycle_preview(&self, repo: Repo<'_>) -> Result<Option<PreviewRow>> {
        let row = sqlx::query(
            "SELECT policy, status, started_at, results FROM lifecycle_previews \
             WHERE registry_id = $1 AND repository = $2",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(PreviewRow {
                policy: r.try_get(0)?,
                status: r.try_get(1)?,
                started_at: r.try_get(2)?,
                results: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Every image of a repository with what the planner needs, in digest order.
    pub async fn repository_images(&self, repo: Repo<'_>) -> Result<Vec<RepoImage>> {
        let rows = sqlx::query(
            "SELECT digest, pushed_at, last_pulled_at, subject FROM manifests \
             WHERE registry_id = $1 AND repository = $2 ORDER BY digest",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_all(&self.pool)
        .await?;
        let mut images: Vec<RepoImage> = rows
            .iter()
            .map(|r| {
                Ok(RepoImage {
                    digest: r.try_get(0)?,
                    tags: Vec::new(),
                    pushed_at: r.try_get(1)?,
                    last_pulled_at: r.try_get(2)?,
                    subject: r.try_get(3)?,
                    in_index: false,
                })
            })
            .collect::<Result<_>>()?;
        let tags = sqlx::query(
            "SELECT digest, name FROM tags WHERE registry_id = $1 AND repository = $2 ORDER BY digest, name",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_all(&self.pool)
        .await?;
        let children = sqlx::query(
            "SELECT DISTINCT child FROM manifest_references WHERE registry_id = $1 \
             AND repository = $2 AND kind = 'manifest' ORDER BY child",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_all(&self.pool)
        .await?;
        let index = |d: &str, images: &[RepoImage]| {
            images.binary_search_by(|i| i.digest.as_str().cmp(d)).ok()
        };
        for t in &tags {
            let d: String = t.try_get(0)?;
            if let Some(i) = index(&d, &images) {
                images[i].tags.push(t.try_get(1)?);
            }
        }
        for c in &children {
            let d: String = c.try_get(0)?;
            if let Some(i) = index(&d, &images) {
                images[i].in_index = true;
            }
        }
        Ok(images)
    }

    /// Expire images in one transaction. Each planned image is removed only if
    /// it is unchanged since the planner's snapshot (same tags, still in no
    /// index); otherwise it is skipped and the next evaluation decides. With it
    /// go its referrers (recursively) and the children of an expired index
    /// that are untagged and referenced by no surviving index. Every removed
    /// manifest is recorded in `lifecycle_events`. Returns the records.
    pub async fn expire_images(
        &self,
        repo: Repo<'_>,
        planned: &[PlannedExpiry],
        actor: &str,
        now: i64,
        audit: Option<&crate::audit::Event>,
    ) -> Result<Vec<ExpiryRecord>> {
        self.retrying(|| self.expire_images_once(repo, planned, actor, now, audit))
            .await
    }

    async fn expire_images_once(
        &self,
        repo: Repo<'_>,
        planned: &[PlannedExpiry],
        actor: &str,
        now: i64,
        audit: Option<&crate::audit::Event>,
    ) -> Result<Vec<ExpiryRecord>> {
        let mut tx = self.begin_write().await?;
        let mut records = Vec::new();
        let mut gone: HashSet<String> = HashSet::new();
        for p in planned {
            if gone.contains(&p.digest) {
                continue;
            }
            let Some((tags, pushed_at)) = image_state(&mut tx, repo, &p.digest).await? else {
                continue;
            };
            let mut expected = p.tags.clone();
            expected.sort();
            if tags != expected || referenced_by_index(&mut tx, repo, &p.digest).await? {
                continue;
            }
            // The closure: referrers of anything removed, and exclusive untagged children.
            let mut queue = vec![(p.digest.clone(), "rule".to_string(), tags, pushed_at)];
            while let Some((digest, reason, tags, pushed_at)) = queue.pop() {
                if !gone.insert(digest.clone()) {
                    continue;
                }
                let children = child_manifests(&mut tx, repo, &digest).await?;
                delete_manifest_rows(&mut tx, repo, &digest).await?;
                let record = ExpiryRecord {
                    registry_id: repo.registry.to_string(),
                    repository: repo.name.to_string(),
                    digest: digest.clone(),
                    tags,
                    action: "EXPIRE".into(),
                    rule_priority: p.rule_priority,
                    reason,
                    image_pushed_at: pushed_at,
                    occurred_at: now,
                    actor: actor.to_string(),
                };
                insert_event(&mut tx, &record).await?;
                records.push(record);
                for r in referrers_of(&mut tx, repo, &digest).await? {
                    if let Some((tags, pushed)) = image_state(&mut tx, repo, &r).await? {
                        queue.push((r, format!("referrer of {digest}"), tags, pushed));
                    }
                }
                for c in children {
                    let Some((tags, pushed)) = image_state(&mut tx, repo, &c).await? else {
                        continue;
                    };
                    if tags.is_empty() && !referenced_by_index(&mut tx, repo, &c).await? {
                        queue.push((c, format!("child of {digest}"), tags, pushed));
                    }
                }
            }
        }
        // The expiry's audit event (ECR's PolicyExecutionEvent) lists what
        // this transaction removed.
        let event = audit.filter(|_| !records.is_empty()).map(|e| {
            let mut e = e.clone();
            e.id = uuid::Uuid::new_v4().to_string();
            e.time_ms = super::now_millis();
            e.additional = Some(serde_json::json!({
                "lifecycleEventPolicy": { "lifecycleEventRules": records
                    .iter()
                    .map(|r| r.rule_priority)
                    .collect::<std::collections::BTreeSet<_>>() },
                "lifecycleEventImageActions": records.iter().map(|r| serde_json::json!({
                    "lifecycleEventImage": {
                        "digest": r.digest,
                        "tagStatus": if r.tags.is_empty() { "UNTAGGED" } else { "TAGGED" },
                        "imageTags": r.tags,
                        "pushedAt": r.image_pushed_at,
                    },
                    "actionType": r.action,
                    "rulePriority": r.rule_priority,
                    "reason": r.reason,
                })).collect::<Vec<_>>(),
                "actor": actor,
            }));
            e
        });
        self.commit_recording(tx, event.as_ref()).await?;
        Ok(records)
    }

    /// Lifecycle events of a repository, oldest first.
    pub async fn lifecycle_events(&self, repo: Repo<'_>) -> Result<Vec<ExpiryRecord>> {
        let rows = sqlx::query(
            "SELECT registry_id, repository, digest, tags, action, rule_priority, reason, \
             image_pushed_at, occurred_at, actor FROM lifecycle_events \
             WHERE registry_id = $1 AND repository = $2 ORDER BY occurred_at, digest",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let tags: String = r.try_get(3)?;
                Ok(ExpiryRecord {
                    registry_id: r.try_get(0)?,
                    repository: r.try_get(1)?,
                    digest: r.try_get(2)?,
                    tags: serde_json::from_str(&tags).unwrap_or_default(),
                    action: r.try_get(4)?,
                    rule_priority: r.try_get(5)?,
                    reason: r.try_get(6)?,
                    image_pushed_at: r.try_get(7)?,
                    occurred_at: r.try_get(8)?,
                    actor: r.try_get(9)?,
                })
            })
            .collect()
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Tags (sorted) and push time of a manifest, or `None` if it is gone.
async fn image_state(
    tx: &mut Tx,
    repo: Repo<'_>,
    digest: &str,
) -> Result<Option<(Vec<String>, i64)>> {
    let Some(row) = sqlx::query(
        "SELECT pushed_at FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
    )
    .bind(repo.registry)
    .bind(repo.name)
    .bind(digest)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let tags: BTreeSet<String> = sqlx::query(
        "SELECT name FROM tags WHERE registry_id = $1 AND repository = $2 AND digest = $3",
    )
    .bind(repo.registry)
    .bind(repo.name)
    .bind(digest)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<std::result::Result<_, _>>()?;
    Ok(Some((tags.into_iter().collect(), row.try_get(0)?)))
}

async fn referenced_by_index(tx: &mut Tx, repo: Repo<'_>, digest: &str) -> Result<bool> {
    Ok(sqlx::query(
        "SELECT 1 FROM manifest_references WHERE registry_id = $1 AND repository = $2 \
         AND child = $3 AND kind = 'manifest'",
    )
    .bind(repo.registry)
    .bind(repo.name)
    .bind(digest)
    .fetch_optional(&mut **tx)
    .await?
    .is_some())
}

async fn child_manifests(tx: &mut Tx, repo: Repo<'_>, digest: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT child FROM manifest_references WHERE registry_id = $1 AND repository = $2 \
         AND parent = $3 AND kind = 'manifest' ORDER BY child",
    )
    .bind(repo.registry)
    .bind(repo.name)
    .bind(digest)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

async fn referrers_of(tx: &mut Tx, repo: Repo<'_>, digest: &str) -> Result<Vec<String>> {
    // No ORDER BY: with one, SQLite walks the primary key (every manifest of
    // the repository) to avoid a sort, instead of the subject index.
    let rows = sqlx::query(
        "SELECT digest FROM manifests WHERE registry_id = $1 AND repository = $2 AND subject = $3",
    )
    .bind(repo.registry)
    .bind(repo.name)
    .bind(digest)
    .fetch_all(&mut **tx)
    .await?;
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    out.sort();
    Ok(out)
}

async fn delete_manifest_rows(tx: &mut Tx, repo: Repo<'_>, digest: &str) -> Result<()> {
    for sql in [
        "DELETE FROM tags WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        "DELETE FROM manifest_references WHERE registry_id = $1 AND repository = $2 AND parent = $3",
        "DELETE FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3",
        "DELETE FROM image_scans WHERE registry_id = $1 AND repository = $2 AND digest = $3",
    ] {
        sqlx::query(sql)
            .bind(repo.registry)
            .bind(repo.name)
            .bind(digest)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn insert_event(tx: &mut Tx, r: &ExpiryRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO lifecycle_events (id, registry_id, repository, digest, tags, action, \
         rule_priority, reason, image_pushed_at, occurred_at, actor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(&r.registry_id)
    .bind(&r.repository)
    .bind(&r.digest)
    .bind(serde_json::to_string(&r.tags).unwrap_or_else(|_| "[]".into()))
    .bind(&r.action)
    .bind(r.rule_priority)
    .bind(&r.reason)
    .bind(r.image_pushed_at)
    .bind(r.occurred_at)
    .bind(&r.actor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
