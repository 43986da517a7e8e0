//! The metadata schema and its migrations.
//!
//! Migrations are numbered; each is a list of statements written once with
//! two placeholders that differ between the engines: `{BLOB}` (SQLite `BLOB`,
//! PostgreSQL `BYTEA`) and `{TEXTKEY}` (PostgreSQL gets `COLLATE "C"` so that
//! listing order is byte order on both, as the OCI spec's lexical order wants).
//! The applied version is kept in `schema_version`.

use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::{Dialect, Result};

const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE repositories (
        name {TEXTKEY} PRIMARY KEY,
        created_at BIGINT NOT NULL
    )",
    // Content-addressed blobs known to be stored (bytes live in blob storage).
    "CREATE TABLE blobs (
        digest TEXT PRIMARY KEY,
        size BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    )",
    // Which blobs a repository may serve: pushed into it or mounted.
    "CREATE TABLE repository_blobs (
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (repository, digest)
    )",
    "CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest)",
    // Manifests with their exact bytes.
    "CREATE TABLE manifests (
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        artifact_type TEXT,
        subject TEXT,
        annotations TEXT,
        size BIGINT NOT NULL,
        content {BLOB} NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (repository, digest)
    )",
    "CREATE INDEX manifests_by_subject ON manifests (repository, subject)",
    // Edges from a manifest to the blobs and child manifests it references.
    "CREATE TABLE manifest_references (
        repository TEXT NOT NULL,
        parent TEXT NOT NULL,
        child TEXT NOT NULL,
        kind TEXT NOT NULL,
        PRIMARY KEY (repository, parent, child)
    )",
    "CREATE INDEX manifest_references_by_child ON manifest_references (repository, child)",
    "CREATE TABLE tags (
        repository TEXT NOT NULL,
        name {TEXTKEY} NOT NULL,
        digest TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (repository, name)
    )",
    "CREATE INDEX tags_by_digest ON tags (repository, digest)",
    // Upload sessions: any node can continue one from this row.
    "CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        repository TEXT NOT NULL,
        size BIGINT NOT NULL,
        hash_state {BLOB} NOT NULL,
        started_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
    "CREATE INDEX uploads_by_age ON uploads (updated_at)",
]];

fn render(stmt: &str, dialect: Dialect) -> String {
    let (blob, textkey) = match dialect {
        Dialect::Sqlite => ("BLOB", "TEXT"),
        Dialect::Postgres => ("BYTEA", "TEXT COLLATE \"C\""),
    };
    stmt.replace("{BLOB}", blob).replace("{TEXTKEY}", textkey)
}

/// Apply every migration newer than the database's version, each in its own transaction.
pub(super) async fn migrate(pool: &AnyPool, dialect: Dialect) -> Result<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .execute(pool)
        .await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    for (i, statements) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= current {
            continue;
        }
        let mut tx = match dialect {
            Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => pool.begin().await?,
        };
        // Another node may have migrated while we waited for the lock.
        let now: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if now >= version {
            continue;
        }
        for stmt in statements.iter() {
            sqlx::query(AssertSqlSafe(render(stmt, dialect)))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}
