//! Queries about encryption at rest: which data key seals each blob (stored
//! only wrapped, once per key-encryption key of a repository that holds the
//! blob), the publication of a sealed blob under its row lock, and the
//! progress of re-encrypting a data directory older than encryption.

use sqlx::Row;

use super::{MetadataStore, Result, now_millis};
use crate::digest::Digest;

/// How a live blob is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobSealing {
    /// Sealed under a data key (false: plaintext, from before encryption).
    pub sealed: bool,
    /// The wrapped data key, per key-encryption key (`AES256` or a key ARN).
    pub wraps: Vec<(String, Vec<u8>)>,
}

impl BlobSealing {
    pub fn wrap_for(&self, key_ref: &str) -> Option<&[u8]> {
        self.wraps
            .iter()
            .find(|(k, _)| k == key_ref)
            .map(|(_, w)| w.as_slice())
    }
}

/// The publication of one digest's sealed bytes, holding its row lock (on
/// PostgreSQL a `FOR UPDATE` row lock; on SQLite the write lock) until
/// [`Publication::record`] or drop, so two uploads of the same new digest
/// under different data keys cannot both publish.
pub struct Publication {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    digest: String,
    /// The sealing when the lock was taken.
    pub current: BlobSealing,
}

/// How far re-encryption of plaintext blobs has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealingProgress {
    pub sealed_blobs: u64,
    pub sealed_bytes: u64,
    pub plaintext_blobs: u64,
    pub plaintext_bytes: u64,
    pub plaintext_manifests: u64,
}

/// What a read of a blob through a repository needs, in one query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRead {
    pub size: u64,
    pub sealed: bool,
    /// The repository's encryption settings.
    pub encryption_type: String,
    pub kms_key: Option<String>,
}

impl MetadataStore {
    /// A live blob linked into `repo`: its size, whether it is sealed, and
    /// the repository's encryption settings.
    pub async fn blob_read(
        &self,
        repo: super::Repo<'_>,
        digest: &Digest,
    ) -> Result<Option<BlobRead>> {
        let row = sqlx::query(
            "SELECT b.size, b.sealed, r.encryption_type, r.kms_key FROM repository_blobs rb \
             JOIN blobs b ON b.digest = rb.digest \
             JOIN repositories r ON r.registry_id = rb.registry_id AND r.name = rb.repository \
             WHERE rb.registry_id = $1 AND rb.repository = $2 AND rb.digest = $3 AND b.state = 'live'",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(BlobRead {
                size: r.try_get::<i64, _>(0)? as u64,
                sealed: r.try_get::<i64, _>(1)? != 0,
                encryption_type: r.try_get(2)?,
                kms_key: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// The wrap of sealed blob `digest`'s data key under `key_ref`.
    pub async fn blob_wrap(&self, digest: &Digest, key_ref: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query("SELECT wrapped FROM blob_keys WHERE digest = $1 AND key_ref = $2")
                .bind(digest.as_str())
                .bind(key_ref)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?,
        )
    }

    /// How `digest` is stored, if a live row exists.
    pub async fn blob_sealing(&self, digest: &Digest) -> Result<Option<BlobSealing>> {
        let row = sqlx::query("SELECT sealed FROM blobs WHERE digest = $1 AND state = 'live'")
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sealed = row.try_get::<i64, _>(0)? != 0;
        let wraps = sqlx::query(
            "SELECT key_ref, wrapped FROM blob_keys WHERE digest = $1 ORDER BY created_at, key_ref",
        )
        .bind(digest.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<_>>>()?;
        Ok(Some(BlobSealing { sealed, wraps }))
    }

    /// Add a wrap of a sealed blob's data key under another key (a
    /// repository with a different key now holds the blob). An existing wrap
    /// under the same key is kept.
    pub async fn add_blob_wrap(
        &self,
        digest: &Digest,
        key_ref: &str,
        wrapped: &[u8],
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO blob_keys (digest, key_ref, wrapped, created_at) \
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = $1 AND sealed = 1) \
             ON CONFLICT (digest, key_ref) DO NOTHING",
        )
        .bind(digest.as_str())
        .bind(key_ref)
        .bind(wrapped)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lock `digest`'s row (claimed by the caller) to publish its bytes.
    pub async fn begin_publication(&self, digest: &Digest) -> Result<Publication> {
        let mut tx = self.begin_write().await?;
        self.lock_blob_row(&mut tx, digest, super::LockMode::Update)
            .await?;
        let sealed = sqlx::query("SELECT sealed FROM blobs WHERE digest = $1")
            .bind(digest.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .unwrap_or(0)
            != 0;
        let wraps = sqlx::query("SELECT key_ref, wrapped FROM blob_keys WHERE digest = $1")
            .bind(digest.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Publication {
            tx,
            digest: digest.to_string(),
            current: BlobSealing { sealed, wraps },
        })
    }

    /// Counts of sealed and plaintext content, for `berth encryption status`.
    pub async fn sealing_progress(&self) -> Result<SealingProgress> {
        let mut p = SealingProgress::default();
        for r in sqlx::query(
            "SELECT sealed, COUNT(*), COALESCE(SUM(size), 0) FROM blobs WHERE state = 'live' GROUP BY sealed",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let (n, bytes) = (
                r.try_get::<i64, _>(1)? as u64,
                r.try_get::<i64, _>(2)? as u64,
            );
            if r.try_get::<i64, _>(0)? != 0 {
                (p.sealed_blobs, p.sealed_bytes) = (n, bytes);
            } else {
                (p.plaintext_blobs, p.plaintext_bytes) = (n, bytes);
            }
        }
        p.plaintext_manifests = sqlx::query("SELECT COUNT(*) FROM manifests WHERE key_ref IS NULL")
            .fetch_one(&self.pool)
            .await?
            .try_get::<i64, _>(0)? as u64;
        Ok(p)
    }

    /// Up to `limit` live plaintext blobs after `after`, in digest order, with
    /// one repository that holds each (whose key the re-encrypted copy is
    /// wrapped under first).
    pub async fn plaintext_blobs(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(Digest, u64, Vec<(String, String)>)>> {
        let rows = sqlx::query(
            "SELECT digest, size FROM blobs WHERE state = 'live' AND sealed = 0 AND digest > $1 \
             ORDER BY digest LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let digest: String = r.try_get(0)?;
            let size = r.try_get::<i64, _>(1)? as u64;
            let Ok(d) = digest.parse::<Digest>() else {
                continue;
            };
            let holders = self.blob_holders(&d).await?;
            out.push((d, size, holders));
        }
        Ok(out)
    }

    /// Up to `limit` manifests stored in plaintext (by a version older than
    /// encryption): registry, repository, digest and bytes.
    pub async fn plaintext_manifests(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, String, Digest, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT registry_id, repository, digest, content FROM manifests WHERE key_ref IS NULL \
             ORDER BY registry_id, repository, digest LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let digest: String = r.try_get(2)?;
            let digest = digest.parse().map_err(|_| {
                super::MetaError::Corrupt(format!("bad digest {digest:?} in manifests"))
            })?;
            out.push((r.try_get(0)?, r.try_get(1)?, digest, r.try_get(3)?));
        }
        Ok(out)
    }

    /// Replace a plaintext manifest's bytes with their sealed form (if it is
    /// still in plaintext).
    pub async fn seal_manifest(
        &self,
        repo: super::Repo<'_>,
        digest: &Digest,
        sealed: &[u8],
        annotations: Option<&str>,
        key_ref: &str,
        wrapped: &[u8],
    ) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE manifests SET content = $1, key_ref = $2, wrapped_key = $3, annotations = $7 \
             WHERE registry_id = $4 AND repository = $5 AND digest = $6 AND key_ref IS NULL",
        )
        .bind(sealed)
        .bind(key_ref)
        .bind(wrapped)
        .bind(repo.registry)
        .bind(repo.name)
        .bind(digest.as_str())
        .bind(annotations)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }

    /// Move what SQLite's write-ahead log holds into the database file (a
    /// no-op on PostgreSQL): the pages that held plaintext rows before they
    /// were re-encrypted are overwritten now, not at some later checkpoint.
    pub async fn checkpoint(&self) -> Result<()> {
        if self.dialect == super::Dialect::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Every (registry, repository) that holds `digest`.
    pub async fn blob_holders(&self, digest: &Digest) -> Result<Vec<(String, String)>> {
        sqlx::query(
            "SELECT registry_id, repository FROM repository_blobs WHERE digest = $1 \
             ORDER BY registry_id, repository",
        )
        .bind(digest.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }
}

impl Publication {
    /// The bytes just published are sealed under a data key wrapped as
    /// `wraps` (every other wrap, of an older data key, goes). Commits.
    pub async fn record(mut self, wraps: &[(String, Vec<u8>)]) -> Result<()> {
        sqlx::query("UPDATE blobs SET sealed = 1 WHERE digest = $1")
            .bind(&self.digest)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query("DELETE FROM blob_keys WHERE digest = $1")
            .bind(&self.digest)
            .execute(&mut *self.tx)
            .await?;
        let now = now_millis();
        for (key_ref, wrapped) in wraps {
            sqlx::query(
                "INSERT INTO blob_keys (digest, key_ref, wrapped, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&self.digest)
            .bind(key_ref)
            .bind(wrapped)
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}
