//! The replication store: each registry's replication configuration, the
//! replication log (one entry per pushed image and destination, appended in
//! the push's transaction by `content::put_manifest`), and repository
//! creation templates. The rules — which rules match, what a destination
//! accepts, which template applies — are `registry::replication`'s and the
//! `replication` service's; this module stores what it is given.

use sqlx::Row;

use super::{MetadataStore, Repo, Result, now_millis};

/// Where an image is replicated to: a region and a registry (account).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestinationKey {
    pub region: String,
    pub registry: String,
}

/// One entry of the replication log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationEntry {
    pub registry: String,
    pub repository: String,
    pub digest: String,
    pub destination: DestinationKey,
    /// `pending`, `complete` or `failed`.
    pub state: String,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub attempts: i64,
    pub pushed_at: i64,
    pub next_at: i64,
    pub updated_at: i64,
}

/// How far one destination is behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationBacklog {
    pub destination: DestinationKey,
    /// Entries not yet delivered.
    pub pending: i64,
    /// Of those, entries whose last attempt failed.
    pub failing: i64,
    /// When the oldest undelivered image was pushed.
    pub oldest_pending: Option<i64>,
    /// Entries given up.
    pub failed: i64,
    /// The most recent failure of an undelivered entry.
    pub last_failure: Option<String>,
}

/// A repository creation template as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreationTemplateRow {
    pub registry: String,
    pub prefix: String,
    /// The service's document (JSON).
    pub document: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const ENTRY_COLUMNS: &str = "registry_id, repository, digest, destination_region, \
     destination_registry, state, failure_code, failure_reason, attempts, pushed_at, next_at, updated_at";

fn entry_row(r: &sqlx::any::AnyRow) -> Result<ReplicationEntry> {
    Ok(ReplicationEntry {
        registry: r.try_get(0)?,
        repository: r.try_get(1)?,
        digest: r.try_get(2)?,
        destination: DestinationKey {
            region: r.try_get(3)?,
            registry: r.try_get(4)?,
        },
        state: r.try_get(5)?,
        failure_code: r.try_get(6)?,
        failure_reason: r.try_get(7)?,
        attempts: r.try_get(8)?,
        pushed_at: r.try_get(9)?,
        next_at: r.try_get(10)?,
        updated_at: r.try_get(11)?,
    })
}

/// Append `digest` of `repo` to the log of each destination, in the push's
/// transaction. An image already there (pushed again, with a new tag) is due
/// again at once: a delivery that was under way when it was pushed again
/// does not complete it (`replication_outcome` compares `pushed_at`), so the
/// new tag is sent too.
pub(super) async fn append(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    repo: Repo<'_>,
    digest: &str,
    destinations: &[DestinationKey],
    now: i64,
) -> Result<()> {
    for d in destinations {
        sqlx::query(
            "INSERT INTO replication_log (registry_id, repository, digest, destination_region, \
             destination_registry, state, attempts, pushed_at, next_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6) \
             ON CONFLICT (registry_id, repository, digest, destination_region, destination_registry) \
             DO UPDATE SET state = 'pending', attempts = 0, failure_code = NULL, failure_reason = NULL, \
             pushed_at = excluded.pushed_at, next_at = excluded.next_at, updated_at = excluded.updated_at",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest)
        .bind(&d.region)
        .bind(&d.registry)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl MetadataStore {
    // ---- configuration ------------------------------------------------------

    /// A registry's replication configuration document.
    pub async fn replication_config(&self, registry: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT document FROM replication_configs WHERE registry_id = $1")
            .bind(registry)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Replace (or with `None`, remove) a registry's replication configuration.
    pub async fn put_replication_config(&self, registry: &str, doc: Option<&str>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        match doc {
            Some(doc) => {
                sqlx::query(
                    "INSERT INTO replication_configs (registry_id, document, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (registry_id) DO UPDATE SET document = excluded.document, \
                     updated_at = excluded.updated_at",
                )
                .bind(registry)
                .bind(doc)
                .bind(now_millis())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM replication_configs WHERE registry_id = $1")
                    .bind(registry)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// Every registry's replication configuration document.
    pub async fn replication_configs(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT document FROM replication_configs")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    // ---- the log ------------------------------------------------------------

    /// The destinations that have entries due at `now`.
    pub async fn replication_due_destinations(&self, now: i64) -> Result<Vec<DestinationKey>> {
        let rows = sqlx::query(
            "SELECT DISTINCT destination_region, destination_registry FROM replication_log \
             WHERE state = 'pending' AND next_at <= $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DestinationKey {
                    region: r.try_get(0)?,
                    registry: r.try_get(1)?,
                })
            })
            .collect()
    }

    /// Up to `limit` entries of `destination` due at `now`, oldest push first.
    pub async fn replication_due(
        &self,
        destination: &DestinationKey,
        now: i64,
        limit: i64,
    ) -> Result<Vec<ReplicationEntry>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM replication_log \
             WHERE destination_region = $1 AND destination_registry = $2 AND state = 'pending' \
             AND next_at <= $3 ORDER BY pushed_at, registry_id, repository, digest LIMIT $4"
        )))
        .bind(&destination.region)
        .bind(&destination.registry)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_row).collect()
    }

    /// Record the outcome of delivering `entry` (as it was read: an entry
    /// pushed again meanwhile keeps its new push). `Ok`: complete.
    /// `Err((code, reason, retry_at))`: pending again at `retry_at`, or
    /// failed for good when `retry_at` is `None`.
    pub async fn replication_outcome(
        &self,
        entry: &ReplicationEntry,
        outcome: std::result::Result<(), (&str, &str, Option<i64>)>,
    ) -> Result<()> {
        let now = now_millis();
        let (state, code, reason, next_at) = match outcome {
            Ok(()) => ("complete", None, None, now),
            Err((code, reason, Some(at))) => ("pending", Some(code), Some(reason), at),
            Err((code, reason, None)) => ("failed", Some(code), Some(reason), now),
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE replication_log SET state = $1, failure_code = $2, failure_reason = $3, \
             attempts = attempts + 1, next_at = $4, updated_at = $5 \
             WHERE registry_id = $6 AND repository = $7 AND digest = $8 AND destination_region = $9 \
             AND destination_registry = $10 AND pushed_at = $11 AND state = 'pending'",
        )
        .bind(state)
        .bind(code)
        .bind(reason)
        .bind(next_at)
        .bind(now)
        .bind(&entry.registry)
        .bind(&entry.repository)
        .bind(&entry.digest)
        .bind(&entry.destination.region)
        .bind(&entry.destination.registry)
        .bind(entry.pushed_at)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// A destination-wide failure (it is unreachable or failing): every
    /// entry of `destination` due now records it and waits until `retry_at`.
    pub async fn replication_defer(
        &self,
        destination: &DestinationKey,
        code: &str,
        reason: &str,
        retry_at: i64,
    ) -> Result<u64> {
        let now = now_millis();
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE replication_log SET failure_code = $1, failure_reason = $2,              attempts = attempts + 1, next_at = $3, updated_at = $4              WHERE destination_region = $5 AND destination_registry = $6              AND state = 'pending' AND next_at <= $4",
        )
        .bind(code)
        .bind(reason)
        .bind(retry_at)
        .bind(now)
        .bind(&destination.region)
        .bind(&destination.registry)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.commit(tx).await?;
        Ok(n)
    }

    /// `destination` answers again: the entries deferred by destination-wide
    /// failures (`codes`) are due now.
    pub async fn replication_resume(
        &self,
        destination: &DestinationKey,
        codes: &[&str],
    ) -> Result<u64> {
        let now = now_millis();
        let mut tx = self.begin_write().await?;
        let mut n = 0;
        for code in codes {
            n += sqlx::query(
                "UPDATE replication_log SET next_at = $1                  WHERE destination_region = $2 AND destination_registry = $3                  AND state = 'pending' AND failure_code = $4 AND next_at > $1",
            )
            .bind(now)
            .bind(&destination.region)
            .bind(&destination.registry)
            .bind(*code)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        self.commit(tx).await?;
        Ok(n)
    }

    /// The entries of one image (DescribeImageReplicationStatus).
    pub async fn replication_entries(
        &self,
        repo: Repo<'_>,
        digest: &str,
    ) -> Result<Vec<ReplicationEntry>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM replication_log \
             WHERE registry_id = $1 AND repository = $2 AND digest = $3 \
             ORDER BY destination_region, destination_registry"
        )))
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_row).collect()
    }

    /// The backlog of every destination that has one: undelivered or
    /// given-up entries (`/metrics`, `berth replication status`). Delivered
    /// entries, the whole history, are not read.
    pub async fn replication_backlogs(&self) -> Result<Vec<DestinationBacklog>> {
        self.backlogs(None).await
    }

    /// [`MetadataStore::replication_backlogs`] of the images one source
    /// registry pushed (what its owner's console shows).
    pub async fn replication_backlogs_from(
        &self,
        registry: &str,
    ) -> Result<Vec<DestinationBacklog>> {
        self.backlogs(Some(registry)).await
    }

    async fn backlogs(&self, source: Option<&str>) -> Result<Vec<DestinationBacklog>> {
        let from = if source.is_some() {
            " AND registry_id = $1"
        } else {
            ""
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT destination_region, destination_registry, \
             SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), \
             SUM(CASE WHEN state = 'pending' AND failure_code IS NOT NULL THEN 1 ELSE 0 END), \
             MIN(CASE WHEN state = 'pending' THEN pushed_at END), \
             SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) \
             FROM replication_log WHERE state IN ('pending', 'failed'){from} \
             GROUP BY destination_region, destination_registry \
             ORDER BY destination_region, destination_registry"
        )));
        let rows = match source {
            Some(r) => rows.bind(r),
            None => rows,
        }
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let destination = DestinationKey {
                region: r.try_get(0)?,
                registry: r.try_get(1)?,
            };
            let from = if source.is_some() {
                " AND registry_id = $3"
            } else {
                ""
            };
            let q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT failure_code, failure_reason FROM replication_log \
                 WHERE destination_region = $1 AND destination_registry = $2 \
                 AND state = 'pending' AND failure_code IS NOT NULL{from} \
                 ORDER BY updated_at DESC LIMIT 1"
            )))
            .bind(&destination.region)
            .bind(&destination.registry);
            let last_failure = match source {
                Some(r) => q.bind(r),
                None => q,
            }
            .fetch_optional(&self.pool)
            .await?
            .map(|r| -> Result<String> {
                let code: String = r.try_get(0)?;
                let reason: Option<String> = r.try_get(1)?;
                Ok(format!("{code}: {}", reason.unwrap_or_default()))
            })
            .transpose()?;
            out.push(DestinationBacklog {
                destination,
                pending: r.try_get::<Option<i64>, _>(2)?.unwrap_or(0),
                failing: r.try_get::<Option<i64>, _>(3)?.unwrap_or(0),
                oldest_pending: r.try_get(4)?,
                failed: r.try_get::<Option<i64>, _>(5)?.unwrap_or(0),
                last_failure,
            });
        }
        Ok(out)
    }

    // ---- creation templates -------------------------------------------------

    /// Insert a template; false if one with its prefix exists.
    pub async fn create_creation_template(&self, t: &CreationTemplateRow) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO creation_templates (registry_id, prefix, document, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (registry_id, prefix) DO NOTHING",
        )
        .bind(&t.registry)
        .bind(&t.prefix)
        .bind(&t.document)
        .bind(t.created_at)
        .bind(t.updated_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        self.commit_if(tx, inserted).await?;
        Ok(inserted)
    }

    /// Replace a template's document; false if there is none with its prefix.
    pub async fn update_creation_template(&self, t: &CreationTemplateRow) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE creation_templates SET document = $1, updated_at = $2 \
             WHERE registry_id = $3 AND prefix = $4",
        )
        .bind(&t.document)
        .bind(t.updated_at)
        .bind(&t.registry)
        .bind(&t.prefix)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        self.commit_if(tx, updated).await?;
        Ok(updated)
    }

    /// Remove a template; the one removed.
    pub async fn delete_creation_template(
        &self,
        registry: &str,
        prefix: &str,
    ) -> Result<Option<CreationTemplateRow>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT registry_id, prefix, document, created_at, updated_at FROM creation_templates \
             WHERE registry_id = $1 AND prefix = $2",
        )
        .bind(registry)
        .bind(prefix)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| template_row(&r))
        .transpose()?;
        if row.is_some() {
            sqlx::query("DELETE FROM creation_templates WHERE registry_id = $1 AND prefix = $2")
                .bind(registry)
                .bind(prefix)
                .execute(&mut *tx)
                .await?;
        }
        self.commit_if(tx, row.is_some()).await?;
        Ok(row)
    }

    /// A registry's templates in prefix order, after `after`, at most `limit`.
    pub async fn creation_templates(
        &self,
        registry: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CreationTemplateRow>> {
        let rows = sqlx::query(
            "SELECT registry_id, prefix, document, created_at, updated_at FROM creation_templates \
             WHERE registry_id = $1 AND prefix > $2 ORDER BY prefix LIMIT $3",
        )
        .bind(registry)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(template_row).collect()
    }
}

fn template_row(r: &sqlx::any::AnyRow) -> Result<CreationTemplateRow> {
    Ok(CreationTemplateRow {
        registry: r.try_get(0)?,
        prefix: r.try_get(1)?,
        document: r.try_get(2)?,
        created_at: r.try_get(3)?,
        updated_at: r.try_get(4)?,
    })
}
