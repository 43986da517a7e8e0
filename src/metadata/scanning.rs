//! Image scanning's state: the vulnerability database (OSV records and the
//! package index a scan looks them up in), per-layer inventories (cached by
//! blob digest and extractor version), the latest scan of each image (status,
//! inventory, findings) and each registry's scanning configuration.
//!
//! Documents are stored as JSON text written and read by the scanning
//! service; this module only keeps them and their keys consistent.

use sqlx::Row;

use super::jobs::insert_job;
use super::{MetadataStore, NewJob, Repo, Result, now_millis};

/// The latest scan of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanRow {
    pub digest: String,
    /// ECR's `imageScanStatus.status` (IN_PROGRESS, COMPLETE, FAILED, …).
    pub status: String,
    pub description: String,
    /// BASIC or ENHANCED, as configured when the scan was requested.
    pub scan_type: String,
    /// When the scan was last requested (a push or StartImageScan).
    pub requested_at: i64,
    pub completed_at: Option<i64>,
    /// The vulnerability data's newest modification when it was matched.
    pub source_updated_at: Option<i64>,
    /// The image's inventory (JSON), once read.
    pub inventory: Option<String>,
    /// The findings (JSON), once matched.
    pub findings: Option<String>,
    /// Findings per severity (JSON object), once matched.
    pub counts: Option<String>,
}

const SCAN_COLUMNS: &str = "digest, status, description, scan_type, requested_at, completed_at, \
                            source_updated_at, inventory, findings, counts";

fn scan_row(r: &sqlx::any::AnyRow) -> Result<ScanRow> {
    Ok(ScanRow {
        digest: r.try_get(0)?,
        status: r.try_get(1)?,
        description: r.try_get(2)?,
        scan_type: r.try_get(3)?,
        requested_at: r.try_get(4)?,
        completed_at: r.try_get(5)?,
        source_updated_at: r.try_get(6)?,
        inventory: r.try_get(7)?,
        findings: r.try_get(8)?,
        counts: r.try_get(9)?,
    })
}

/// A scan that was asked for.
#[derive(Clone, Debug)]
pub struct ScanRequest<'a> {
    pub digest: &'a str,
    pub scan_type: &'a str,
    /// Refuse when the image's last request is at or after this instant
    /// (ECR's one scan per image per 24 hours); `None`: no quota.
    pub quota_since: Option<i64>,
    /// The job that runs it.
    pub job: &'a NewJob,
}

/// The outcome of [`MetadataStore::request_scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanRequested {
    /// Marked IN_PROGRESS and queued.
    Queued,
    /// The image was scanned (or asked to be) too recently.
    QuotaExceeded,
}

/// What a finished scan writes.
#[derive(Clone, Debug)]
pub struct ScanResult<'a> {
    pub status: &'a str,
    pub description: &'a str,
    pub inventory: Option<&'a str>,
    pub findings: Option<&'a str>,
    pub counts: Option<&'a str>,
    pub source_updated_at: Option<i64>,
}

/// New findings for one completed scan (see [`MetadataStore::rematch_scans`]).
#[derive(Clone, Debug)]
pub struct Rematch {
    pub registry: String,
    pub repository: String,
    pub digest: String,
    pub read_completed_at: Option<i64>,
    pub findings: String,
    pub counts: String,
}

/// One OSV record for the database, with the (ecosystem, package) keys it
/// is looked up by.
#[derive(Clone, Debug)]
pub struct VulnRecord {
    pub id: String,
    pub modified_ms: i64,
    pub json: String,
    pub keys: Vec<(String, String)>,
}

/// What the vulnerability database holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VulnDbStatus {
    pub records: i64,
    /// Records naming a package of each ecosystem.
    pub per_ecosystem: Vec<(String, i64)>,
    /// The newest `modified` of any record (`vulnerabilitySourceUpdatedAt`).
    pub newest_modified_ms: Option<i64>,
    /// When the last import finished.
    pub last_import_ms: Option<i64>,
}

/// The setting a finished import bumps, so every node's record cache knows
/// its entries are stale.
pub const VULNDB_GENERATION: &str = "vulndb.generation";

/// An import in progress: one transaction, so an import that fails part way
/// changes nothing.
pub struct VulnImport {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    now: i64,
    pub written: u64,
}

impl VulnImport {
    /// Add (or replace) one record; a copy older than the stored one (by
    /// `modified`) is ignored. Returns whether it was written.
    pub async fn add(&mut self, r: &VulnRecord) -> Result<bool> {
        let written = sqlx::query(
            "INSERT INTO vuln_records (id, modified_ms, record, imported_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET modified_ms = excluded.modified_ms, \
             record = excluded.record, imported_at = excluded.imported_at \
             WHERE excluded.modified_ms >= vuln_records.modified_ms",
        )
        .bind(&r.id)
        .bind(r.modified_ms)
        .bind(&r.json)
        .bind(self.now)
        .execute(&mut *self.tx)
        .await?
        .rows_affected()
            > 0;
        if !written {
            return Ok(false);
        }
        sqlx::query("DELETE FROM vuln_packages WHERE record_id = $1")
            .bind(&r.id)
            .execute(&mut *self.tx)
            .await?;
        for (eco, name) in &r.keys {
            sqlx::query(
                "INSERT INTO vuln_packages (ecosystem, name, record_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (ecosystem, name, record_id) DO NOTHING",
            )
            .bind(eco)
            .bind(name)
            .bind(&r.id)
            .execute(&mut *self.tx)
            .await?;
        }
        self.written += 1;
        Ok(true)
    }

    /// Make the import visible to every node under a new generation
    /// (`generation`, unique per import), and queue `jobs` (the re-matching
    /// it calls for) in the same transaction.
    pub async fn commit(mut self, generation: &str, jobs: &[NewJob]) -> Result<u64> {
        let generation = generation.to_string();
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(VULNDB_GENERATION)
        .bind(generation.into_bytes())
        .execute(&mut *self.tx)
        .await?;
        for job in jobs {
            insert_job(&mut self.tx, job, 0).await?;
        }
        self.tx.commit().await?;
        Ok(self.written)
    }
}

impl MetadataStore {
    // ---- registry configuration ---------------------------------------------

    /// The registry's scanning configuration document, if one was put.
    pub async fn registry_scanning(&self, registry: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT config FROM registry_scanning WHERE registry_id = $1")
            .bind(registry)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn put_registry_scanning(&self, registry: &str, config: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO registry_scanning (registry_id, config, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (registry_id) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
        )
        .bind(registry)
        .bind(config)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- scans ----------------------------------------------------------------

    /// The latest scan of image `digest` in `repo`.
    pub async fn image_scan(&self, repo: Repo<'_>, digest: &str) -> Result<Option<ScanRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SCAN_COLUMNS} FROM image_scans \
             WHERE registry_id = $1 AND repository = $2 AND digest = $3"
        )))
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(scan_row).transpose()
    }

    /// The scans of several images of `repo` (for a DescribeImages page),
    /// without their inventories.
    pub async fn image_scans(&self, repo: Repo<'_>, digests: &[&str]) -> Result<Vec<ScanRow>> {
        let mut out = Vec::new();
        for chunk in digests.chunks(100) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "SELECT digest, status, description, scan_type, requested_at, completed_at, \
                 source_updated_at, NULL, NULL, counts FROM image_scans \
                 WHERE registry_id = $1 AND repository = $2 AND digest IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(repo.registry)
                .bind(repo.name);
            for d in chunk {
                q = q.bind(*d);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(scan_row(&r)?);
            }
        }
        Ok(out)
    }

    /// Mark a scan of `req.digest` requested (IN_PROGRESS) and queue its job,
    /// in one transaction — unless the per-image quota refuses it.
    pub async fn request_scan(
        &self,
        repo: Repo<'_>,
        req: &ScanRequest<'_>,
    ) -> Result<ScanRequested> {
        let mut tx = self.begin_write().await?;
        let now = now_millis();
        if let Some(since) = req.quota_since {
            // A scan that failed (no data yet, a storage outage) does not
            // count: asking again is how it is retried.
            let last: Option<i64> = sqlx::query(
                "SELECT requested_at FROM image_scans \
                 WHERE registry_id = $1 AND repository = $2 AND digest = $3 AND status <> 'FAILED'",
            )
            .bind(repo.registry)
            .bind(repo.name)
            .bind(req.digest)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
            if last.is_some_and(|t| t >= since) {
                return Ok(ScanRequested::QuotaExceeded);
            }
        }
        mark_in_progress(&mut tx, repo, req.digest, req.scan_type, now).await?;
        insert_job(&mut tx, req.job, 0).await?;
        self.commit(tx).await?;
        Ok(ScanRequested::Queued)
    }

    /// Record a scan's outcome (the row is created if the request's was lost).
    pub async fn finish_scan(
        &self,
        repo: Repo<'_>,
        digest: &str,
        scan_type: &str,
        r: &ScanResult<'_>,
    ) -> Result<()> {
        let now = now_millis();
        sqlx::query(
            "INSERT INTO image_scans (registry_id, repository, digest, status, description, scan_type, \
             requested_at, completed_at, source_updated_at, inventory, findings, counts) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11 \
             WHERE EXISTS (SELECT 1 FROM manifests WHERE registry_id = $1 AND repository = $2 AND digest = $3) \
             ON CONFLICT (registry_id, repository, digest) DO UPDATE SET status = excluded.status, \
             description = excluded.description, scan_type = excluded.scan_type, \
             completed_at = excluded.completed_at, source_updated_at = excluded.source_updated_at, \
             inventory = COALESCE(excluded.inventory, image_scans.inventory), \
             findings = excluded.findings, counts = excluded.counts",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest)
        .bind(r.status)
        .bind(r.description)
        .bind(scan_type)
        .bind(now)
        .bind(r.source_updated_at)
        .bind(r.inventory)
        .bind(r.findings)
        .bind(r.counts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Completed scans with a stored inventory, in key order after `after`
    /// (registry, repository, digest), at most `limit` — what a re-match
    /// after an import walks.
    pub async fn scans_with_inventory(
        &self,
        after: Option<(&str, &str, &str)>,
        limit: i64,
    ) -> Result<Vec<(String, String, ScanRow)>> {
        let (r0, n0, d0) = after.unwrap_or(("", "", ""));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT registry_id, repository, {SCAN_COLUMNS} FROM image_scans \
             WHERE inventory IS NOT NULL AND status = 'COMPLETE' \
             AND (registry_id > $1 OR (registry_id = $1 AND (repository > $2 OR (repository = $2 AND digest > $3)))) \
             ORDER BY registry_id, repository, digest LIMIT $4"
        )))
        .bind(r0)
        .bind(n0)
        .bind(d0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let registry: String = r.try_get(0)?;
                let repository: String = r.try_get(1)?;
                // The scan columns follow the two key columns.
                let scan = ScanRow {
                    digest: r.try_get(2)?,
                    status: r.try_get(3)?,
                    description: r.try_get(4)?,
                    scan_type: r.try_get(5)?,
                    requested_at: r.try_get(6)?,
                    completed_at: r.try_get(7)?,
                    source_updated_at: r.try_get(8)?,
                    inventory: r.try_get(9)?,
                    findings: r.try_get(10)?,
                    counts: r.try_get(11)?,
                };
                Ok((registry, repository, scan))
            })
            .collect()
    }

    /// Replace the findings of completed scans (a re-match), in one
    /// transaction; a scan that changed since it was read (`completed_at`
    /// is its version) is left to the newer scan. Returns how many changed.
    pub async fn rematch_scans(
        &self,
        updates: &[Rematch],
        source_updated_at: Option<i64>,
    ) -> Result<u64> {
        if updates.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let now = now_millis();
        let mut n = 0;
        for u in updates {
            let res = sqlx::query(
                "UPDATE image_scans SET findings = $1, counts = $2, source_updated_at = $3, completed_at = $4, \
                 scan_type = 'ENHANCED' \
                 WHERE registry_id = $5 AND repository = $6 AND digest = $7 AND status = 'COMPLETE' \
                 AND completed_at = $8",
            )
            .bind(&u.findings)
            .bind(&u.counts)
            .bind(source_updated_at)
            .bind(now)
            .bind(&u.registry)
            .bind(&u.repository)
            .bind(&u.digest)
            .bind(u.read_completed_at.unwrap_or(-1))
            .execute(&mut *tx)
            .await?;
            n += res.rows_affected();
        }
        self.commit(tx).await?;
        Ok(n)
    }

    /// Completed scans of `repo` without an inventory of their own: the
    /// indexes, whose findings are their children's union.
    pub async fn index_scans(&self, repo: Repo<'_>) -> Result<Vec<ScanRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SCAN_COLUMNS} FROM image_scans WHERE registry_id = $1 AND repository = $2 \
             AND status = 'COMPLETE' AND inventory IS NULL ORDER BY digest"
        )))
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(scan_row).collect()
    }

    // ---- layer inventories ----------------------------------------------------

    pub async fn layer_inventory(&self, digest: &str, extractor: i64) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT scan FROM layer_inventories WHERE digest = $1 AND extractor = $2")
                .bind(digest)
                .bind(extractor)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn put_layer_inventory(
        &self,
        digest: &str,
        extractor: i64,
        scan: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO layer_inventories (digest, extractor, scan, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (digest, extractor) DO UPDATE SET scan = excluded.scan",
        )
        .bind(digest)
        .bind(extractor)
        .bind(scan)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Drop cached layer inventories whose blob is gone (run by GC).
    pub async fn forget_layer_inventories(&self) -> Result<u64> {
        let res = sqlx::query(
            "DELETE FROM layer_inventories WHERE NOT EXISTS \
             (SELECT 1 FROM blobs WHERE blobs.digest = layer_inventories.digest)",
        )
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected())
    }

    // ---- the vulnerability database --------------------------------------------

    /// Start an import (one write transaction until [`VulnImport::commit`]).
    pub async fn begin_vuln_import(&self) -> Result<VulnImport> {
        Ok(VulnImport {
            tx: self.begin_write().await?,
            now: now_millis(),
            written: 0,
        })
    }

    /// The records that name package `name` in `ecosystem` (id, JSON).
    pub async fn vuln_records_for(
        &self,
        ecosystem: &str,
        name: &str,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT r.id, r.record FROM vuln_packages p JOIN vuln_records r ON r.id = p.record_id \
             WHERE p.ecosystem = $1 AND p.name = $2 ORDER BY r.id",
        )
        .bind(ecosystem)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The current import generation (changes with every import).
    pub async fn vulndb_generation(&self) -> Result<String> {
        Ok(self
            .get_setting(VULNDB_GENERATION)
            .await?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default())
    }

    pub async fn vulndb_status(&self) -> Result<VulnDbStatus> {
        let row =
            sqlx::query("SELECT COUNT(*), MAX(modified_ms), MAX(imported_at) FROM vuln_records")
                .fetch_one(&self.pool)
                .await?;
        let records: i64 = row.try_get(0)?;
        let newest_modified_ms: Option<i64> = row.try_get(1)?;
        let last_import_ms: Option<i64> = row.try_get(2)?;
        let per = sqlx::query(
            "SELECT ecosystem, COUNT(DISTINCT record_id) FROM vuln_packages \
             GROUP BY ecosystem ORDER BY ecosystem",
        )
        .fetch_all(&self.pool)
        .await?;
        let per_ecosystem = per
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(String, i64)>>>()?;
        Ok(VulnDbStatus {
            records,
            per_ecosystem,
            newest_modified_ms,
            last_import_ms,
        })
    }
}

/// Mark a scan of `digest` IN_PROGRESS in `tx` (keeping its inventory and
/// last findings until the new ones replace them).
pub(super) async fn mark_in_progress(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    repo: Repo<'_>,
    digest: &str,
    scan_type: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO image_scans (registry_id, repository, digest, status, description, scan_type, requested_at) \
         VALUES ($1, $2, $3, 'IN_PROGRESS', '', $4, $5) \
         ON CONFLICT (registry_id, repository, digest) DO UPDATE SET status = 'IN_PROGRESS', \
         description = '', scan_type = excluded.scan_type, requested_at = excluded.requested_at",
    )
    .bind(repo.registry)
    .bind(repo.name)
    .bind(digest)
    .bind(scan_type)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
