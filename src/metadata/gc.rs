//! Queries of online garbage collection and of the protocol that keeps it
//! safe: claiming a digest before its bytes are published, refreshing links,
//! marking unreferenced blobs `deleting`, and finding orphans. The invariant
//! these statements maintain is written down in `docs/gc.md`.

use sqlx::Row;

use super::{LockMode, MetadataStore, Repo, Result, now_millis};
use crate::digest::Digest;

/// Outcome of [`MetadataStore::claim_blob`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobClaim {
    /// The row is `live` and freshly touched: its bytes may be published.
    Claimed,
    /// Garbage collection is deleting this digest's bytes right now; wait
    /// until the row is gone, then claim again.
    Deleting,
}

/// A blob that garbage collection is deleting (or considering).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcCandidate {
    pub digest: String,
    pub size: i64,
}

/// A blob row as the GC scan sees it.
#[derive(Clone, Debug)]
pub struct BlobScanRow {
    pub digest: String,
    pub state: String,
    pub touched_at: i64,
}

/// The clause "no manifest references the blob and no link is younger than
/// the cutoff `$2`", for a statement whose blob row is aliased `blobs`.
const UNREFERENCED: &str = "NOT EXISTS (SELECT 1 FROM manifest_references r \
       WHERE r.child = blobs.digest AND r.kind = 'blob') \
     AND NOT EXISTS (SELECT 1 FROM repository_blobs l \
       WHERE l.digest = blobs.digest AND l.touched_at >= $2)";

impl MetadataStore {
    /// Announce that an upload is about to publish the bytes of `digest`:
    /// create the row `live` or refresh its `touched_at`, so garbage
    /// collection leaves the digest alone for a grace period. Refused while
    /// GC is deleting the digest (its bytes may vanish under the publish).
    pub async fn claim_blob(&self, digest: &Digest, size: u64) -> Result<BlobClaim> {
        self.retrying(|| self.claim_blob_once(digest, size)).await
    }

    async fn claim_blob_once(&self, digest: &Digest, size: u64) -> Result<BlobClaim> {
        let mut tx = self.begin_write().await?;
        let now = now_millis();
        // Insert first: two nodes claiming the same new digest both succeed
        // (the second waits for the first's row, then finds it), where a
        // read-then-insert would fail the second with a duplicate key.
        let inserted = sqlx::query(
            "INSERT INTO blobs (digest, size, created_at, state, touched_at) \
             VALUES ($1, $2, $3, 'live', $3) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest.as_str())
        .bind(size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        let outcome = if inserted {
            BlobClaim::Claimed
        } else {
            self.lock_blob_row(&mut tx, digest, LockMode::Update)
                .await?;
            match super::content::blob_state(&mut tx, digest)
                .await?
                .as_deref()
            {
                Some("live") => {
                    sqlx::query("UPDATE blobs SET touched_at = $1 WHERE digest = $2")
                        .bind(now)
                        .bind(digest.as_str())
                        .execute(&mut *tx)
                        .await?;
                    BlobClaim::Claimed
                }
                // Deleting, or gone again since the insert (GC finished): wait and retry.
                _ => BlobClaim::Deleting,
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Size of a live blob linked into `repo`, and when the link was last touched.
    pub async fn linked_blob(&self, repo: Repo<'_>, digest: &Digest) -> Result<Option<(u64, i64)>> {
        let row = sqlx::query(
            "SELECT b.size, rb.touched_at FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.registry_id = $1 AND rb.repository = $2 AND rb.digest = $3 AND b.state = 'live'",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get::<i64, _>(0)? as u64, r.try_get::<i64, _>(1)?)))
            .transpose()
    }

    /// Refresh a link that was last touched before `stale_before`, so that a
    /// client that was just told "this blob exists" can still reference it.
    /// Returns false when the link is gone (garbage collection won the race).
    pub async fn touch_link(
        &self,
        repo: Repo<'_>,
        digest: &Digest,
        stale_before: i64,
    ) -> Result<bool> {
        self.retrying(|| self.touch_link_once(repo, digest, stale_before))
            .await
    }

    async fn touch_link_once(
        &self,
        repo: Repo<'_>,
        digest: &Digest,
        stale_before: i64,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        self.lock_blob_row(&mut tx, digest, LockMode::Share).await?;
        sqlx::query(
            "UPDATE repository_blobs SET touched_at = $1 \
             WHERE registry_id = $2 AND repository = $3 AND digest = $4 AND touched_at < $5",
        )
        .bind(now_millis())
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .bind(stale_before)
        .execute(&mut *tx)
        .await?;
        let linked = super::content::live_link(&mut tx, repo, digest).await?;
        tx.commit().await?;
        Ok(linked)
    }

    /// Up to `limit` blob rows after `after` in digest order (the GC scan).
    pub async fn scan_blobs(&self, after: &str, limit: i64) -> Result<Vec<BlobScanRow>> {
        let rows = sqlx::query(
            "SELECT digest, state, touched_at FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BlobScanRow {
                    digest: r.try_get(0)?,
                    state: r.try_get(1)?,
                    touched_at: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Number of blob rows (for GC progress).
    pub async fn count_blobs(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM blobs")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    /// Phase 1 of deleting blobs: in one transaction, move each of `digests`
    /// that is still live, untouched since `cutoff`, referenced by no manifest
    /// and linked nowhere since `cutoff` to `deleting`, and drop its links.
    /// Returns the blobs marked; their bytes may now be deleted.
    pub async fn mark_deleting(&self, digests: &[String], cutoff: i64) -> Result<Vec<GcCandidate>> {
        self.retrying(|| self.mark_deleting_once(digests, cutoff))
            .await
    }

    async fn mark_deleting_once(
        &self,
        digests: &[String],
        cutoff: i64,
    ) -> Result<Vec<GcCandidate>> {
        let mut tx = self.begin_write().await?;
        let mut marked = Vec::new();
        for d in digests {
            if let Ok(digest) = d.parse::<Digest>() {
                self.lock_blob_row(&mut tx, &digest, LockMode::Update)
                    .await?;
            }
            let sql = format!(
                "UPDATE blobs SET state = 'deleting' WHERE digest = $1 AND state = 'live' \
                 AND touched_at < $2 AND {UNREFERENCED}"
            );
            let hit = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(d)
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            if !hit {
                continue;
            }
            sqlx::query("DELETE FROM repository_blobs WHERE digest = $1")
                .bind(d)
                .execute(&mut *tx)
                .await?;
            let size: i64 = sqlx::query("SELECT size FROM blobs WHERE digest = $1")
                .bind(d)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            marked.push(GcCandidate {
                digest: d.clone(),
                size,
            });
        }
        tx.commit().await?;
        Ok(marked)
    }

    /// Blobs in state `deleting` (left by a collector that stopped midway, or
    /// being deleted now by another node; finishing them twice is harmless).
    pub async fn deleting_blobs(&self, limit: i64) -> Result<Vec<GcCandidate>> {
        let rows = sqlx::query(
            "SELECT digest, size FROM blobs WHERE state = 'deleting' ORDER BY digest LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(GcCandidate {
                    digest: r.try_get(0)?,
                    size: r.try_get(1)?,
                })
            })
            .collect()
    }

    /// Phase 2: the bytes are gone; remove the `deleting` rows, a batch in
    /// one statement (one durable commit, not one per blob).
    pub async fn forget_blobs(&self, digests: &[String]) -> Result<()> {
        for chunk in digests.chunks(super::content::CHECK_BATCH) {
            // The wrapped data keys go first: a digest pushed again later is
            // sealed under a new data key.
            let sql = format!(
                "DELETE FROM blob_keys WHERE digest IN ({}) AND EXISTS \
                 (SELECT 1 FROM blobs WHERE blobs.digest = blob_keys.digest AND state = 'deleting')",
                super::content::placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in chunk {
                q = q.bind(d.as_str());
            }
            q.execute(&self.pool).await?;
            let sql = format!(
                "DELETE FROM blobs WHERE state = 'deleting' AND digest IN ({})",
                super::content::placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in chunk {
                q = q.bind(d.as_str());
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// For a file in blob storage with no row: insert a `deleting` row so no
    /// upload can claim the digest while the file is removed. Returns false if
    /// a row exists (an upload claimed it meanwhile; leave the file alone).
    pub async fn adopt_orphan(&self, digest: &str, size: u64) -> Result<bool> {
        let now = now_millis();
        let res = sqlx::query(
            "INSERT INTO blobs (digest, size, created_at, state, touched_at) \
             VALUES ($1, $2, $3, 'deleting', $3) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(size as i64)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Digests with a blob row whose hex starts with `shard` (two hex
    /// digits), for the algorithms in `algorithms`: one range query each, so
    /// the orphan sweep reads a shard's rows at once instead of per file.
    pub async fn blob_rows_in_shard(
        &self,
        algorithms: &[&str],
        shard: &str,
    ) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for alg in algorithms {
            // '~' sorts after every hex digit.
            let rows = sqlx::query("SELECT digest FROM blobs WHERE digest >= $1 AND digest < $2")
                .bind(format!("{alg}:{shard}"))
                .bind(format!("{alg}:{shard}~"))
                .fetch_all(&self.pool)
                .await?;
            for r in &rows {
                out.insert(r.try_get(0)?);
            }
        }
        Ok(out)
    }

    /// Whether an upload session row exists.
    pub async fn upload_exists(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Referrers pushed before `before` whose subject is not in their
    /// repository (its subject was deleted), and that no index references.
    /// Returns `(registry_id, repository, digest)`.
    pub async fn dangling_referrers(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT m.registry_id, m.repository, m.digest FROM manifests m \
             WHERE m.subject IS NOT NULL AND m.pushed_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM manifests s WHERE s.registry_id = m.registry_id \
               AND s.repository = m.repository AND s.digest = m.subject) \
             AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.registry_id = m.registry_id \
               AND r.repository = m.repository AND r.child = m.digest AND r.kind = 'manifest') \
             ORDER BY m.registry_id, m.repository, m.digest LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Record that an image was pulled now, unless a pull was recorded after
    /// `stale_before` (so a busy image costs one write per period, not per pull).
    pub async fn record_pull(
        &self,
        repo: Repo<'_>,
        digest: &Digest,
        now: i64,
        stale_before: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE manifests SET last_pulled_at = $1 WHERE registry_id = $2 AND repository = $3 \
             AND digest = $4 AND (last_pulled_at IS NULL OR last_pulled_at < $5)",
        )
        .bind(now)
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .bind(stale_before)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl MetadataStore {
    /// Every (blob digest, blob row state) that some manifest references; the
    /// state is `None` when the row is missing. For consistency checks: in a
    /// healthy store every state is `live` (docs/gc.md, invariant I1).
    pub async fn referenced_blob_states(&self) -> Result<Vec<(String, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT r.child, b.state FROM manifest_references r \
             LEFT JOIN blobs b ON b.digest = r.child WHERE r.kind = 'blob' ORDER BY r.child",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
