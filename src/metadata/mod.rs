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

mod audit;
mod console;
mod content;
mod encryption;
mod gc;
mod identities;
mod jobs;
mod kms;
mod lifecycle;
mod pull_through;
mod replication;
mod repositories;
mod scanning;
mod schema;
mod stacks;
#[doc(hidden)]
pub mod testing;

pub use audit::{AuditAttribute, AuditHead, AuditQuery, AuditRow};
pub use console::{RepoCursor, RepoOrder, SessionRow};
pub use content::{CreateUpload, DeleteManifest, TagFilter, Unlink, WriterClaim};
pub use encryption::{BlobRead, BlobSealing, Publication, SealingProgress};
pub use gc::{BlobClaim, BlobScanRow, GcCandidate};
pub use identities::{AccessKeyRow, UserRow};
pub use jobs::{JobRow, NewJob};
pub use kms::{KmsAliasRow, KmsGrantRow, KmsKeyRow, KmsMaterialRow};
pub use lifecycle::{ExpiryRecord, LifecyclePolicyRow, PlannedExpiry, PreviewRow, RepoImage};
pub use pull_through::{NewRule, PullThroughRuleRow};
pub use replication::{CreationTemplateRow, DestinationBacklog, DestinationKey, ReplicationEntry};
pub use repositories::RepositoryRow;
pub use scanning::{
    Rematch, ScanRequest, ScanRequested, ScanResult, ScanRow, VULNDB_GENERATION, VulnDbStatus,
    VulnImport, VulnRecord,
};
pub use stacks::{ChangeSetRow, StackEventRow, StackRow};

use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row};

use crate::digest::{Descriptor, Digest};

/// Which SQL engine backs the store; only DDL and transaction start differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database error: {0}")]
    Db(sqlx::Error),
    /// The database (or the disk under it) is out of space; nothing was written.
    #[error("the metadata database is out of space")]
    Full,
    /// The database cannot be reached, or is shutting down or refusing
    /// connections: nothing was written; retry once it is back.
    #[error("the metadata database is unavailable: {0}")]
    Unavailable(String),
    #[error("metadata is inconsistent: {0}")]
    Corrupt(String),
}

impl MetaError {
    /// A deadlock victim or a serialization failure (PostgreSQL `40P01`,
    /// `40001`): the transaction can simply run again.
    pub fn is_transient(&self) -> bool {
        match self {
            MetaError::Db(sqlx::Error::Database(d)) => {
                matches!(d.code().as_deref(), Some("40P01") | Some("40001"))
            }
            _ => false,
        }
    }
}

impl From<sqlx::Error> for MetaError {
    fn from(e: sqlx::Error) -> Self {
        // SQLite's SQLITE_FULL (13, also as an extended code) and
        // PostgreSQL's disk_full (53100).
        let full = match &e {
            sqlx::Error::Database(d) => {
                let code = d.code();
                matches!(code.as_deref(), Some("13") | Some("53100"))
                    || code
                        .as_deref()
                        .and_then(|c| c.parse::<i32>().ok())
                        .is_some_and(|c| c & 0xff == 13)
                    || d.message().contains("database or disk is full")
            }
            sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        };
        // Connection trouble: no server, a server shutting down or
        // restarting (PostgreSQL class 08, 57P01–57P03), out of connections
        // (53300), or a pool that could not hand out a connection in time.
        let unavailable = match &e {
            sqlx::Error::Database(d) => d.code().as_deref().is_some_and(|c| {
                c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "53300")
            }),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => !full,
            _ => false,
        };
        if full {
            MetaError::Full
        } else if unavailable {
            MetaError::Unavailable(e.to_string())
        } else {
            MetaError::Db(e)
        }
    }
}

pub type Result<T> = std::result::Result<T, MetaError>;

/// A repository as the SQL sees it: the owning registry (account id) and the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repo<'a> {
    pub registry: &'a str,
    pub name: &'a str,
}

/// An upload session as stored: enough for any node to continue it.
#[derive(Clone, Debug)]
pub struct UploadRow {
    pub id: String,
    pub registry_id: String,
    pub repository: String,
    /// Bytes received and durable so far.
    pub size: u64,
    /// Serialised SHA-256 state after `size` bytes.
    pub hash_state: Vec<u8>,
    /// Where the blob store keeps those bytes (see `storage::Staged`).
    pub staging: String,
    /// A writer's lease once expired unreleased: verify the bytes at commit.
    pub contended: bool,
    /// The key-encryption key (`AES256` or a KMS key ARN) and the wrapped
    /// data key the staged bytes are sealed under; `None` for a session
    /// opened by a version older than encryption (staged in plaintext).
    pub sealing: Option<(String, Vec<u8>)>,
    pub started_at: i64,
    pub updated_at: i64,
}

/// A stored manifest.
#[derive(Clone, Debug)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    /// The bytes, as stored: sealed when `sealing` is set (the registry
    /// opens them), else plaintext.
    pub content: Vec<u8>,
    /// When a pull was last recorded (see [`MetadataStore::record_pull`]).
    pub last_pulled_at: Option<i64>,
    /// The key-encryption key and wrapped data key that sealed `content`.
    pub sealing: Option<(String, Vec<u8>)>,
}

/// What a new manifest records besides its bytes.
#[derive(Clone, Debug)]
pub struct NewManifest<'a> {
    pub repo: Repo<'a>,
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub artifact_type: Option<&'a str>,
    pub config_media_type: Option<&'a str>,
    pub subject: Option<&'a Digest>,
    pub annotations: Option<&'a str>,
    /// The manifest's bytes: sealed (`secrets::seal_with` under a data key
    /// wrapped as `sealing` says), or plaintext when `sealing` is `None`.
    pub content: &'a [u8],
    /// The key-encryption key (`AES256` or a KMS key ARN) and the wrapped
    /// data key that sealed `content`.
    pub sealing: Option<(&'a str, &'a [u8])>,
    /// Blobs (config, layers) the manifest references, with their declared sizes.
    pub blobs: &'a [Descriptor],
    /// Child manifests (of an index) it references, with their declared sizes.
    pub children: &'a [Descriptor],
    /// Sum of layer sizes (for an index: computed from the children).
    pub layer_bytes: u64,
    pub tag: Option<&'a str>,
    /// Refuse to move `tag` if it already points at another manifest.
    pub tag_immutable: bool,
    /// Scan the manifest when it is new (scan on push): its scan type and
    /// the job, queued in the push's transaction.
    pub scan: Option<(&'a str, &'a NewJob)>,
    /// Replicate the push (a new manifest, or a tag it now has) to these
    /// destinations: their log entries and jobs, in the push's transaction.
    pub replicate: &'a [(DestinationKey, NewJob)],
}

/// A descriptor of a manifest that refers to a subject (for the referrers API).
#[derive(Clone, Debug)]
pub struct ReferrerRow {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    /// As stored: sealed with the manifest's data key (`sealed:<hex>`) when
    /// `sealing` is set; the registry opens it.
    pub annotations: Option<String>,
    /// The key-encryption key and wrapped data key of the manifest.
    pub sealing: Option<(String, Vec<u8>)>,
}

/// One image (manifest) with its tags, as DescribeImages shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRow {
    pub digest: String,
    pub tags: Vec<String>,
    pub media_type: String,
    pub config_media_type: Option<String>,
    pub subject: Option<String>,
    pub image_size: i64,
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
}

/// One entry of an image-id listing (ECR's ListImages): an image and one of
/// its tags, or an untagged image with none. The tag carries the time it was
/// applied, its place in the image's tag order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageIdRow {
    pub pushed_at: i64,
    pub digest: String,
    pub tag: Option<(i64, String)>,
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
    /// Transactions run again after a deadlock or serialization failure.
    retries: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The audit chain's key ([`MetadataStore::set_audit_key`]).
    audit_key: std::sync::Arc<std::sync::OnceLock<crate::audit::ChainKey>>,
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
        // A connection whose transaction could not be closed (a COMMIT that
        // failed on a full disk leaves sqlx's transaction depth behind, and
        // every later BEGIN on it fails) is closed instead of reused. A queued
        // rollback of a dropped transaction runs first (the ping waits for it).
        let mut opts = AnyPoolOptions::new().before_acquire(|conn, _meta| {
            Box::pin(async move {
                use sqlx::Connection;
                if conn.is_in_transaction() {
                    conn.ping().await?;
                }
                Ok(!conn.is_in_transaction())
            })
        });
        if dialect == Dialect::Sqlite {
            opts = opts.max_connections(8).after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL: readers never block the writer. FULL: a committed
                    // transaction survives power loss, not only a process kill.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 30000").await?;
                    // Deleted and overwritten rows are zeroed, not left in
                    // free pages: content re-encrypted from an older data
                    // directory leaves no plaintext behind in the file.
                    conn.execute("PRAGMA secure_delete = ON").await?;
                    Ok(())
                })
            });
        } else {
            // Fail fast when the server is away: a request waits this long
            // for a connection, then answers 503 (and the pool reconnects by
            // itself once the server is back).
            opts = opts
                .max_connections(16)
                .acquire_timeout(std::time::Duration::from_secs(3));
        }
        let _ = sqlx::any::AnyConnectOptions::from_str(url)?;
        let pool = opts.connect(url).await?;
        let store = MetadataStore {
            pool,
            dialect,
            retries: Default::default(),
            audit_key: Default::default(),
        };
        schema::migrate(&store.pool, dialect).await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Transactions this store ran again after PostgreSQL aborted them as a
    /// deadlock victim or a serialization failure.
    pub fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Run `op` (one whole transaction) again when PostgreSQL aborted it as a
    /// deadlock victim or a serialization failure: a few times, with a short
    /// random pause, as PostgreSQL's documentation asks of such clients.
    async fn retrying<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if attempt < 6 && e.is_transient() => {
                    attempt += 1;
                    self.retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut jitter = [0u8; 1];
                    getrandom::fill(&mut jitter)
                        .expect("the operating system's random source failed");
                    let ms = (1u64 << attempt) + u64::from(jitter[0] % 16);
                    tracing::debug!(error = %e, attempt, "retrying a transaction");
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                r => return r,
            }
        }
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

    /// On PostgreSQL, lock the `blobs` row of `digest` for the rest of the
    /// transaction: `Share` by writers that rely on the blob staying live
    /// (manifest PUT, mount), `Update` by garbage collection and commits, so the
    /// two serialise. SQLite needs nothing: `BEGIN IMMEDIATE` already admits one
    /// writer at a time, and its reads see everything committed before.
    async fn lock_blob_row(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        digest: &Digest,
        mode: LockMode,
    ) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            let sql = match mode {
                LockMode::Share => "SELECT 1 FROM blobs WHERE digest = $1 FOR SHARE",
                LockMode::Update => "SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE",
            };
            sqlx::query(sql)
                .bind(digest.as_str())
                .fetch_optional(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// [`MetadataStore::lock_blob_row`] for several digests in one statement,
    /// in digest order (one global order, so two lockers cannot deadlock).
    async fn lock_blob_rows(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        digests: &[&Digest],
        mode: LockMode,
    ) -> Result<()> {
        if self.dialect == Dialect::Postgres && !digests.is_empty() {
            let list = (1..=digests.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let strength = match mode {
                LockMode::Share => "SHARE",
                LockMode::Update => "UPDATE",
            };
            let sql = format!(
                "SELECT 1 FROM blobs WHERE digest IN ({list}) ORDER BY digest FOR {strength}"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in digests {
                q = q.bind(d.as_str());
            }
            q.fetch_all(&mut **tx).await?;
        }
        Ok(())
    }

    /// A cheap query that proves the database answers (for `/healthz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Row lock strength for [`MetadataStore::lock_blob_row`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockMode {
    Share,
    Update,
}

/// Result of [`MetadataStore::put_manifest`].
#[derive(Debug, PartialEq, Eq)]
pub enum PutManifestOutcome {
    /// Stored. `new_manifest`: the digest was not in the repository before;
    /// `tag_changed`: the tag was created or moved.
    Stored {
        new_manifest: bool,
        tag_changed: bool,
    },
    MissingBlob(Digest),
    MissingChild(Digest),
    /// A descriptor's size is not the size of the content stored under its digest.
    SizeMismatch {
        digest: Digest,
        declared: u64,
        stored: u64,
    },
    /// The tag points at another manifest and may not move.
    TagImmutable,
}

fn manifest_row(r: sqlx::any::AnyRow) -> Result<ManifestRow> {
    let digest: String = r.try_get(0)?;
    Ok(ManifestRow {
        digest: digest
            .parse()
            .map_err(|_| MetaError::Corrupt(format!("bad digest {digest:?} in manifests")))?,
        media_type: r.try_get(1)?,
        content: r.try_get(2)?,
        last_pulled_at: r.try_get(3)?,
        sealing: match (r.try_get::<Option<String>, _>(4)?, r.try_get(5)?) {
            (Some(k), Some(w)) => Some((k, w)),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests;
