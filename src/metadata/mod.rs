//! The metadata store: repositories, which blobs each repository may see,
//! manifests (their exact bytes and what they reference), tags and upload
//! sessions. It is the single source of truth for "this exists"; blob bytes
//! live in `storage`.
//!
//! All access goes through [`MetadataStore`], which speaks SQL through sqlx's
//! `Any` driver. The embedded default is SQLite in WAL mode; the statements are
//! written in the dialect SQLite and PostgreSQL share (`$N` placeholders,
//! `ON CONFLICT`, epoch-millisecond `BIGINT` timestamps), so the scale-out mode
//! only adds a PostgreSQL URL and its DDL (see [`schema`]). Nothing here is
//! cached in process memory, so several nodes can share one database.

mod schema;

use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row};

use crate::digest::Digest;

/// Which SQL engine backs the store; only DDL and transaction start differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("metadata is inconsistent: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, MetaError>;

/// An upload session as stored: enough for any node to continue it.
#[derive(Clone, Debug)]
pub struct UploadRow {
    pub id: String,
    pub repository: String,
    /// Bytes received and durable so far.
    pub size: u64,
    /// Serialised SHA-256 state after `size` bytes.
    pub hash_state: Vec<u8>,
    pub started_at: i64,
    pub updated_at: i64,
}

/// A stored manifest.
#[derive(Clone, Debug)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub content: Vec<u8>,
}

/// What a new manifest records besides its bytes.
#[derive(Clone, Debug)]
pub struct NewManifest<'a> {
    pub repository: &'a str,
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a Digest>,
    pub annotations: Option<&'a str>,
    pub content: &'a [u8],
    /// Blobs (config, layers) the manifest references.
    pub blobs: &'a [Digest],
    /// Child manifests (of an index) it references.
    pub children: &'a [Digest],
    pub tag: Option<&'a str>,
}

/// A descriptor of a manifest that refers to a subject (for the referrers API).
#[derive(Clone, Debug)]
pub struct ReferrerRow {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Clone)]
pub struct MetadataStore {
    pool: AnyPool,
    dialect: Dialect,
}

impl MetadataStore {
    /// Open the embedded SQLite database at `path`, creating it if needed.
    pub async fn open_sqlite(path: &Path) -> Result<MetadataStore> {
        Self::connect(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    /// Connect to `url` (`sqlite://…` or `postgres://…`) and bring the schema up to date.
    pub async fn connect(url: &str) -> Result<MetadataStore> {
        install_default_drivers();
        let dialect = if url.starts_with("postgres") {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        };
        let mut opts = AnyPoolOptions::new();
        if dialect == Dialect::Sqlite {
            opts = opts.max_connections(8).after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL: readers never block the writer. FULL: a committed
                    // transaction survives power loss, not only a process kill.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 30000").await?;
                    Ok(())
                })
            });
        } else {
            opts = opts.max_connections(16);
        }
        let _ = sqlx::any::AnyConnectOptions::from_str(url)?;
        let pool = opts.connect(url).await?;
        let store = MetadataStore { pool, dialect };
        schema::migrate(&store.pool, dialect).await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Start a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes can
    /// never fail to upgrade its lock.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    /// A cheap query that proves the database answers (for `/healthz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- repositories -------------------------------------------------------

    /// Record that a repository exists (idempotent).
    pub async fn ensure_repository(&self, name: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn repository_exists(&self, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Repository names in lexical (byte) order after `last`, at most `limit`.
    pub async fn list_repositories(&self, last: Option<&str>, limit: i64) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2")
                .bind(last.unwrap_or(""))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }

    // ---- blobs --------------------------------------------------------------

    /// Size of `digest` if it is linked into `repository`.
    pub async fn linked_blob_size(&self, repository: &str, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query(
            "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.repository = $1 AND rb.digest = $2",
        )
        .bind(repository)
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .map(|s| s as u64))
    }

    /// Size of `digest` if any repository holds it (content is global; visibility is per repository).
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .map(|s| s as u64))
    }

    /// Link an already stored blob into `repository` (cross-repository mount).
    /// Returns false if the blob is not linked into `from`.
    pub async fn mount_blob(&self, repository: &str, from: &str, digest: &Digest) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let now = now_millis();
        let linked =
            sqlx::query("SELECT 1 FROM repository_blobs WHERE repository = $1 AND digest = $2")
                .bind(from)
                .bind(digest.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if linked {
            insert_repository(&mut tx, repository, now).await?;
            sqlx::query(
                "INSERT INTO repository_blobs (repository, digest, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (repository, digest) DO NOTHING",
            )
            .bind(repository)
            .bind(digest.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(linked)
    }

    /// Make a committed blob visible in `repository` and end the upload session
    /// that produced it, in one transaction.
    pub async fn commit_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        upload_id: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_millis();
        insert_repository(&mut tx, repository, now).await?;
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest.as_str())
        .bind(size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO repository_blobs (repository, digest, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (repository, digest) DO NOTHING",
        )
        .bind(repository)
        .bind(digest.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(id) = upload_id {
            sqlx::query("DELETE FROM uploads WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Remove a blob from a repository's view. Returns whether it was linked.
    pub async fn unlink_blob(&self, repository: &str, digest: &Digest) -> Result<bool> {
        let res = sqlx::query("DELETE FROM repository_blobs WHERE repository = $1 AND digest = $2")
            .bind(repository)
            .bind(digest.as_str())
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    // ---- upload sessions ----------------------------------------------------

    pub async fn create_upload(&self, id: &str, repository: &str, hash_state: &[u8]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_millis();
        insert_repository(&mut tx, repository, now).await?;
        sqlx::query(
            "INSERT INTO uploads (id, repository, size, hash_state, started_at, updated_at) \
             VALUES ($1, $2, 0, $3, $4, $4)",
        )
        .bind(id)
        .bind(repository)
        .bind(hash_state)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>> {
        let row = sqlx::query(
            "SELECT id, repository, size, hash_state, started_at, updated_at FROM uploads WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(UploadRow {
                id: r.try_get(0)?,
                repository: r.try_get(1)?,
                size: r.try_get::<i64, _>(2)? as u64,
                hash_state: r.try_get(3)?,
                started_at: r.try_get(4)?,
                updated_at: r.try_get(5)?,
            })
        })
        .transpose()
    }

    /// Record progress of an upload, only if nobody else advanced it since
    /// `expected_size` was read (compare-and-swap). Returns whether it was recorded.
    pub async fn advance_upload(
        &self,
        id: &str,
        expected_size: u64,
        new_size: u64,
        hash_state: &[u8],
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE uploads SET size = $1, hash_state = $2, updated_at = $3 WHERE id = $4 AND size = $5",
        )
        .bind(new_size as i64)
        .bind(hash_state)
        .bind(now_millis())
        .bind(id)
        .bind(expected_size as i64)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn delete_upload(&self, id: &str) -> Result<bool> {
        let res = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Upload sessions last touched before `before` (epoch ms).
    pub async fn stale_uploads(&self, before: i64, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM uploads WHERE updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }

    // ---- manifests and tags -------------------------------------------------

    pub async fn manifest_exists(&self, repository: &str, digest: &Digest) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM manifests WHERE repository = $1 AND digest = $2")
            .bind(repository)
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Store a manifest with its references and, if given, point a tag at it,
    /// in one transaction. Blobs must already be linked (checked by the caller);
    /// they are checked again inside the transaction so a concurrent unlink
    /// cannot leave a manifest pointing at nothing.
    pub async fn put_manifest(&self, m: &NewManifest<'_>) -> Result<PutManifestOutcome> {
        let mut tx = self.begin_write().await?;
        let now = now_millis();
        insert_repository(&mut tx, m.repository, now).await?;
        for b in m.blobs {
            let ok =
                sqlx::query("SELECT 1 FROM repository_blobs WHERE repository = $1 AND digest = $2")
                    .bind(m.repository)
                    .bind(b.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
            if !ok {
                return Ok(PutManifestOutcome::MissingBlob(b.clone()));
            }
        }
        for c in m.children {
            let ok = sqlx::query("SELECT 1 FROM manifests WHERE repository = $1 AND digest = $2")
                .bind(m.repository)
                .bind(c.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !ok {
                return Ok(PutManifestOutcome::MissingChild(c.clone()));
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO manifests (repository, digest, media_type, artifact_type, subject, annotations, size, content, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (repository, digest) DO NOTHING",
        )
        .bind(m.repository)
        .bind(m.digest.as_str())
        .bind(m.media_type)
        .bind(m.artifact_type)
        .bind(m.subject.map(|d| d.as_str()))
        .bind(m.annotations)
        .bind(m.content.len() as i64)
        .bind(m.content)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if inserted {
            for (kind, list) in [("blob", m.blobs), ("manifest", m.children)] {
                for child in list {
                    sqlx::query(
                        "INSERT INTO manifest_references (repository, parent, child, kind) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (repository, parent, child) DO NOTHING",
                    )
                    .bind(m.repository)
                    .bind(m.digest.as_str())
                    .bind(child.as_str())
                    .bind(kind)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        if let Some(tag) = m.tag {
            sqlx::query(
                "INSERT INTO tags (repository, name, digest, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (repository, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(m.repository)
            .bind(tag)
            .bind(m.digest.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(PutManifestOutcome::Stored)
    }

    pub async fn get_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(
            "SELECT digest, media_type, content FROM manifests WHERE repository = $1 AND digest = $2",
        )
        .bind(repository)
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(manifest_row).transpose()
    }

    pub async fn get_manifest_by_tag(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.content FROM tags t \
             JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest \
             WHERE t.repository = $1 AND t.name = $2",
        )
        .bind(repository)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        row.map(manifest_row).transpose()
    }

    /// Delete a manifest, its tags and its reference rows. Returns whether it existed.
    pub async fn delete_manifest(&self, repository: &str, digest: &Digest) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let existed = sqlx::query("DELETE FROM manifests WHERE repository = $1 AND digest = $2")
            .bind(repository)
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        sqlx::query("DELETE FROM tags WHERE repository = $1 AND digest = $2")
            .bind(repository)
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM manifest_references WHERE repository = $1 AND parent = $2")
            .bind(repository)
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(existed)
    }

    /// Whether another manifest in the repository (an index) references `digest`.
    pub async fn manifest_is_referenced(&self, repository: &str, digest: &Digest) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM manifest_references WHERE repository = $1 AND child = $2 AND kind = 'manifest'",
        )
        .bind(repository)
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    pub async fn delete_tag(&self, repository: &str, tag: &str) -> Result<bool> {
        let res = sqlx::query("DELETE FROM tags WHERE repository = $1 AND name = $2")
            .bind(repository)
            .bind(tag)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Tags of a repository in lexical order after `last`, at most `limit`.
    pub async fn list_tags(
        &self,
        repository: &str,
        last: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT name FROM tags WHERE repository = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(repository)
        .bind(last.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }

    /// Manifests in `repository` whose `subject` is `subject`, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRow>> {
        let rows = sqlx::query(
            "SELECT digest, media_type, size, artifact_type, annotations FROM manifests \
             WHERE repository = $1 AND subject = $2 AND ($3 = '' OR artifact_type = $3) ORDER BY digest",
        )
        .bind(repository)
        .bind(subject.as_str())
        .bind(artifact_type.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReferrerRow {
                    digest: r.try_get(0)?,
                    media_type: r.try_get(1)?,
                    size: r.try_get(2)?,
                    artifact_type: r.try_get(3)?,
                    annotations: r.try_get(4)?,
                })
            })
            .collect()
    }
}

/// Result of [`MetadataStore::put_manifest`].
#[derive(Debug, PartialEq, Eq)]
pub enum PutManifestOutcome {
    Stored,
    MissingBlob(Digest),
    MissingChild(Digest),
}

async fn insert_repository(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    name: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn manifest_row(r: sqlx::any::AnyRow) -> Result<ManifestRow> {
    let digest: String = r.try_get(0)?;
    Ok(ManifestRow {
        digest: digest
            .parse()
            .map_err(|_| MetaError::Corrupt(format!("bad digest {digest:?} in manifests")))?,
        media_type: r.try_get(1)?,
        content: r.try_get(2)?,
    })
}

#[cfg(test)]
mod tests;
