//! The metadata schema and its migrations.
//!
//! Migrations are numbered; each is a list of statements written once (a
//! statement starting `PG: ` runs on PostgreSQL only) with two placeholders
//! that differ between the engines: `{BLOB}` (SQLite `BLOB`,
//! PostgreSQL `BYTEA`) and `{TEXTKEY}` (PostgreSQL gets `COLLATE "C"` so that
//! listing order is byte order on both, as the OCI spec's lexical order wants).
//! The applied version is kept in `schema_version`.
//!
//! Every repository-scoped table is keyed by `(registry_id, repository, …)`:
//! the registry id is the 12-digit account id that owns the repository, as in
//! ECR, where names are unique per registry.

use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::{Dialect, Result};

const MIGRATIONS: &[&[&str]] = &[
    &[
        // ---- identities ---------------------------------------------------------
        "CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
        "CREATE TABLE users (
        account_id TEXT NOT NULL,
        name {TEXTKEY} NOT NULL,
        user_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (account_id, name)
    )",
        // Secrets are sealed with the server's master key (see `secrets`).
        // user_name is '' for the account's root key.
        "CREATE TABLE access_keys (
        access_key_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        secret_sealed {BLOB} NOT NULL,
        active BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    )",
        "CREATE INDEX access_keys_by_user ON access_keys (account_id, user_name)",
        "CREATE TABLE user_policies (
        account_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        policy_name TEXT NOT NULL,
        document TEXT NOT NULL,
        PRIMARY KEY (account_id, user_name, policy_name)
    )",
        // Server-wide values shared by every node (e.g. the sealed token-signing key).
        "CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value {BLOB} NOT NULL
    )",
        // ---- repositories -------------------------------------------------------
        "CREATE TABLE repositories (
        registry_id TEXT NOT NULL,
        name {TEXTKEY} NOT NULL,
        created_at BIGINT NOT NULL,
        tag_mutability TEXT NOT NULL,
        mutability_exclusions TEXT NOT NULL,
        scan_on_push BIGINT NOT NULL,
        encryption_type TEXT NOT NULL,
        kms_key TEXT,
        policy TEXT,
        PRIMARY KEY (registry_id, name)
    )",
        "CREATE TABLE repository_tags (
        registry_id TEXT NOT NULL,
        repository TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (registry_id, repository, key)
    )",
        "CREATE TABLE registry_policies (
        registry_id TEXT PRIMARY KEY,
        policy TEXT NOT NULL
    )",
        // ---- content ------------------------------------------------------------
        // Content-addressed blobs known to be stored (bytes live in blob storage).
        "CREATE TABLE blobs (
        digest TEXT PRIMARY KEY,
        size BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    )",
        // Which blobs a repository may serve: pushed into it or mounted.
        "CREATE TABLE repository_blobs (
        registry_id TEXT NOT NULL,
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (registry_id, repository, digest)
    )",
        "CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest)",
        // Manifests with their exact bytes.
        "CREATE TABLE manifests (
        registry_id TEXT NOT NULL,
        repository TEXT NOT NULL,
        digest {TEXTKEY} NOT NULL,
        media_type TEXT NOT NULL,
        artifact_type TEXT,
        config_media_type TEXT,
        subject TEXT,
        annotations TEXT,
        size BIGINT NOT NULL,
        image_size BIGINT NOT NULL,
        pushed_at BIGINT NOT NULL,
        last_pulled_at BIGINT,
        -- Last, so that listings that skip it never walk its overflow pages.
        content {BLOB} NOT NULL,
        PRIMARY KEY (registry_id, repository, digest)
    )",
        "CREATE INDEX manifests_by_subject ON manifests (registry_id, repository, subject)",
        // Edges from a manifest to the blobs and child manifests it references.
        "CREATE TABLE manifest_references (
        registry_id TEXT NOT NULL,
        repository TEXT NOT NULL,
        parent TEXT NOT NULL,
        child TEXT NOT NULL,
        kind TEXT NOT NULL,
        PRIMARY KEY (registry_id, repository, parent, child)
    )",
        "CREATE INDEX manifest_references_by_child ON manifest_references (registry_id, repository, child)",
        "CREATE TABLE tags (
        registry_id TEXT NOT NULL,
        repository TEXT NOT NULL,
        name {TEXTKEY} NOT NULL,
        digest TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (registry_id, repository, name)
    )",
        "CREATE INDEX tags_by_digest ON tags (registry_id, repository, digest, name)",
        // Upload sessions: any node can continue one from this row.
        "CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        registry_id TEXT NOT NULL,
        repository TEXT NOT NULL,
        size BIGINT NOT NULL,
        hash_state {BLOB} NOT NULL,
        started_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
        "CREATE INDEX uploads_by_age ON uploads (updated_at)",
    ],
    &[
        // ---- migration 2: lifecycle policies and online garbage collection ------
        // A blob row is `live` or `deleting` (see `docs/gc.md`): GC moves it to
        // `deleting`, removes the bytes, then the row. `touched_at` is the last
        // time an upload claimed the digest; links carry their own `touched_at`
        // (commit, mount, or an existence check that found the link stale).
        "ALTER TABLE blobs ADD COLUMN state TEXT NOT NULL DEFAULT 'live'",
        "ALTER TABLE blobs ADD COLUMN touched_at BIGINT NOT NULL DEFAULT 0",
        "UPDATE blobs SET touched_at = created_at",
        "ALTER TABLE repository_blobs ADD COLUMN touched_at BIGINT NOT NULL DEFAULT 0",
        "UPDATE repository_blobs SET touched_at = created_at",
        // Is this blob referenced by any manifest, in any repository?
        "CREATE INDEX manifest_references_by_target ON manifest_references (child, kind)",
        "CREATE TABLE lifecycle_policies (
        registry_id TEXT NOT NULL,
        repository TEXT NOT NULL,
        policy TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        last_evaluated_at BIGINT,
        PRIMARY KEY (registry_id, repository)
    )",
        // The latest preview of each repository; `results` is its JSON.
        "CREATE TABLE lifecycle_previews (
        registry_id TEXT NOT NULL,
        repository TEXT NOT NULL,
        policy TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        results TEXT,
        PRIMARY KEY (registry_id, repository)
    )",
        // Every image a lifecycle policy removed: what, when, by which rule, on
        // whose behalf. Kept when the repository is deleted (it is an audit trail).
        "CREATE TABLE lifecycle_events (
        id TEXT PRIMARY KEY,
        registry_id TEXT NOT NULL,
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        tags TEXT NOT NULL,
        action TEXT NOT NULL,
        rule_priority BIGINT NOT NULL,
        reason TEXT NOT NULL,
        image_pushed_at BIGINT NOT NULL,
        occurred_at BIGINT NOT NULL,
        actor TEXT NOT NULL
    )",
        "CREATE INDEX lifecycle_events_by_repository ON lifecycle_events (registry_id, repository, occurred_at)",
    ],
    &[
        // ---- migration 3: upload quotas, push-ordered image listings ------------
        // Who opened each upload session (an access key, or `ip:<address>`
        // without authentication), so open sessions can be counted per
        // caller and per repository.
        "ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX uploads_by_owner ON uploads (owner)",
        "CREATE INDEX uploads_by_repository ON uploads (registry_id, repository)",
        // Image listings (ListImages, DescribeImages) page in push order.
        "CREATE INDEX manifests_by_push ON manifests (registry_id, repository, pushed_at, digest)",
    ],
    &[
        // ---- migration 4: byte order for every digest column (PostgreSQL) ------
        // Range scans (a GC shard: `digest >= 'sha256:ab' AND digest < 'sha256:ab~'`)
        // and merges of two ordered queries in code assume byte order; a
        // database created with a natural-language collation orders otherwise.
        // SQLite compares bytes already.
        "PG: ALTER TABLE blobs ALTER COLUMN digest TYPE TEXT COLLATE \"C\"",
        "PG: ALTER TABLE tags ALTER COLUMN digest TYPE TEXT COLLATE \"C\"",
        "PG: ALTER TABLE repository_blobs ALTER COLUMN digest TYPE TEXT COLLATE \"C\"",
        "PG: ALTER TABLE manifest_references ALTER COLUMN parent TYPE TEXT COLLATE \"C\"",
        "PG: ALTER TABLE manifest_references ALTER COLUMN child TYPE TEXT COLLATE \"C\"",
        "PG: ALTER TABLE manifests ALTER COLUMN subject TYPE TEXT COLLATE \"C\"",
    ],
    &[
        // ---- migration 5: uploads any node can continue --------------------------
        // `staging`: the blob store's description of the staged bytes (on S3
        // the multipart upload, its parts and the tail), advanced with `size`.
        // `writer`/`writer_until`: the one request appending to the session
        // (a lease, renewed while it streams); `contended`: a lease once
        // expired with its writer still set, so a stale writer may have
        // touched the staged bytes and the commit re-reads them.
        "ALTER TABLE uploads ADD COLUMN staging TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE uploads ADD COLUMN writer TEXT",
        "ALTER TABLE uploads ADD COLUMN writer_until BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE uploads ADD COLUMN contended BIGINT NOT NULL DEFAULT 0",
    ],
    &[
        // ---- migration 6: the durable job queue (metadata/jobs.rs) ------------------
        "CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        dedupe TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        run_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL,
        lease_owner TEXT,
        lease_until BIGINT NOT NULL,
        last_error TEXT,
        last_started_at BIGINT NOT NULL,
        last_finished_at BIGINT NOT NULL,
        every_ms BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (kind, dedupe)
    )",
        "CREATE INDEX jobs_due ON jobs (state, run_at)",
    ],
    &[
        // ---- migration 7: ListImages pages that cost their own size ---------------
        // An image's tags in the order they were applied, so a page that ends
        // inside an image resumes with a range of this index, and the join of
        // manifests and tags comes out in listing order without a sort.
        // Replaces (registry_id, repository, digest, name), of which it
        // serves every lookup.
        "CREATE INDEX tags_in_image_order ON tags (registry_id, repository, digest, updated_at, name)",
        "DROP INDEX tags_by_digest",
    ],
    &[
        // ---- migration 8: image scanning (metadata/scanning.rs) --------------------
        // The vulnerability database: OSV records as imported (JSON), and which
        // (ecosystem, package) each names, the index a scan looks packages up in.
        "CREATE TABLE vuln_records (
        id TEXT PRIMARY KEY,
        modified_ms BIGINT NOT NULL,
        record TEXT NOT NULL,
        imported_at BIGINT NOT NULL
    )",
        "CREATE TABLE vuln_packages (
        ecosystem TEXT NOT NULL,
        name TEXT NOT NULL,
        record_id TEXT NOT NULL,
        PRIMARY KEY (ecosystem, name, record_id)
    )",
        "CREATE INDEX vuln_packages_by_record ON vuln_packages (record_id)",
        // What one layer contributes (berth_scanner::layer::LayerScan as JSON),
        // by blob digest and extractor version: a base layer shared by many
        // images is read once.
        "CREATE TABLE layer_inventories (
        digest TEXT NOT NULL,
        extractor BIGINT NOT NULL,
        scan TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (digest, extractor)
    )",
        // The latest scan of each image: its status, the image's inventory
        // (so a new database re-matches without reading a blob) and findings.
        "CREATE TABLE image_scans (
        registry_id TEXT NOT NULL,
        repository {TEXTKEY} NOT NULL,
        digest TEXT NOT NULL,
        status TEXT NOT NULL,
        description TEXT NOT NULL,
        scan_type TEXT NOT NULL,
        requested_at BIGINT NOT NULL,
        completed_at BIGINT,
        source_updated_at BIGINT,
        inventory TEXT,
        findings TEXT,
        counts TEXT,
        PRIMARY KEY (registry_id, repository, digest)
    )",
        // PutRegistryScanningConfiguration's document, per registry.
        "CREATE TABLE registry_scanning (
        registry_id TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
    ],
    &[
        // ---- migration 9: encryption at rest (metadata/encryption.rs) ------------
        // A blob's bytes are sealed under one data key (`sealed` = 1; 0: a
        // plaintext blob of a data directory older than encryption, in the
        // legacy store until re-encrypted), which is stored only wrapped: once
        // per key-encryption key of a repository that holds it (`AES256` or a
        // KMS key ARN), bound to the digest.
        "ALTER TABLE blobs ADD COLUMN sealed BIGINT NOT NULL DEFAULT 0",
        "CREATE TABLE blob_keys (
        digest TEXT NOT NULL,
        key_ref TEXT NOT NULL,
        wrapped {BLOB} NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (digest, key_ref)
    )",
        // An upload's staged bytes are sealed under the session's data key,
        // wrapped by its repository's key (NULL: a session older than encryption).
        "ALTER TABLE uploads ADD COLUMN key_ref TEXT",
        "ALTER TABLE uploads ADD COLUMN wrapped_key {BLOB}",
        // A manifest's bytes likewise (NULL: stored in plaintext by an older version).
        "ALTER TABLE manifests ADD COLUMN key_ref TEXT",
        "ALTER TABLE manifests ADD COLUMN wrapped_key {BLOB}",
    ],
    &[
        // ---- migration 10: KMS keys (metadata/kms.rs) -----------------------------
        // A KMS key of an account. `state` is Enabled, Disabled or
        // PendingDeletion; a key pending deletion whose `deletion_at` has passed
        // is deleted (its material is destroyed by the `kms-delete` job, or on
        // first use, and `destroyed_at` set). `custody` is `local` (material
        // rows hold it, sealed with the master key) or `transit` (the material
        // is the transit key `berth-<key_id>`; the rows hold only versions).
        "CREATE TABLE kms_keys (
        key_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        arn TEXT NOT NULL,
        description TEXT NOT NULL,
        key_usage TEXT NOT NULL,
        key_spec TEXT NOT NULL,
        origin TEXT NOT NULL,
        manager TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        deletion_at BIGINT,
        pending_window_days BIGINT,
        destroyed_at BIGINT,
        rotation_enabled BIGINT NOT NULL,
        rotation_period_days BIGINT NOT NULL,
        next_rotation_at BIGINT,
        policy TEXT NOT NULL,
        custody TEXT NOT NULL
    )",
        "CREATE INDEX kms_keys_by_account ON kms_keys (account_id, key_id)",
        // Versions of a key's material: new encryptions use the newest, older
        // ones stay to decrypt. `material` is sealed with the master key bound
        // to (key id, version); NULL once destroyed, or under transit custody.
        "CREATE TABLE kms_key_material (
        key_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        material {BLOB},
        rotation_type TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (key_id, version)
    )",
        "CREATE TABLE kms_aliases (
        account_id TEXT NOT NULL,
        alias_name {TEXTKEY} NOT NULL,
        key_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (account_id, alias_name)
    )",
        "CREATE TABLE kms_key_tags (
        key_id TEXT NOT NULL,
        tag_key {TEXTKEY} NOT NULL,
        tag_value TEXT NOT NULL,
        PRIMARY KEY (key_id, tag_key)
    )",
        "CREATE TABLE kms_grants (
        grant_id {TEXTKEY} NOT NULL,
        key_id TEXT NOT NULL,
        name TEXT,
        grantee_principal TEXT NOT NULL,
        retiring_principal TEXT,
        issuing_account TEXT NOT NULL,
        operations TEXT NOT NULL,
        constraints TEXT,
        grant_token TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (key_id, grant_id)
    )",
    ],
    &[
        // ---- migration 11: CloudFormation stacks (metadata/stacks.rs) -----------
        // A stack and its document (template, parameters, resources, outputs:
        // JSON the stacks service owns). Deleted stacks stay (DELETE_COMPLETE,
        // `deleted_at`) and give their name up: `stack_names` holds the live
        // stack of each name.
        "CREATE TABLE stacks (
        stack_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT,
        deleted_at BIGINT,
        lease_until BIGINT,
        doc TEXT NOT NULL
    )",
        "CREATE INDEX stacks_by_account ON stacks (account_id, created_at)",
        "CREATE TABLE stack_names (
        account_id TEXT NOT NULL,
        name {TEXTKEY} NOT NULL,
        stack_id TEXT NOT NULL,
        PRIMARY KEY (account_id, name)
    )",
        "CREATE TABLE stack_events (
        stack_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        logical_id TEXT NOT NULL,
        physical_id TEXT,
        resource_type TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        timestamp BIGINT NOT NULL,
        properties TEXT,
        PRIMARY KEY (stack_id, seq)
    )",
        "CREATE TABLE change_sets (
        change_set_id TEXT PRIMARY KEY,
        stack_id TEXT NOT NULL,
        name {TEXTKEY} NOT NULL,
        status TEXT NOT NULL,
        execution_status TEXT NOT NULL,
        status_reason TEXT,
        created_at BIGINT NOT NULL,
        doc TEXT NOT NULL,
        UNIQUE (stack_id, name)
    )",
    ],
    &[
        // ---- migration 12: ECR account settings (metadata/repositories.rs) --------
        // The value of each account setting a registry has put
        // (PutAccountSetting); one never put has the default the service
        // answers (registry/account_settings.rs).
        "CREATE TABLE account_settings (
        registry_id TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (registry_id, name)
    )",
    ],
    &[
        // ---- migration 13: replication and repository creation templates ---------
        // (metadata/replication.rs)
        // A registry's replication configuration (PutReplicationConfiguration),
        // as the JSON document the service validated.
        "CREATE TABLE replication_configs (
        registry_id TEXT NOT NULL PRIMARY KEY,
        document TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
        // The replication log: one entry per pushed image and destination,
        // written in the push's transaction; each destination works through
        // its own entries in push order. `state`: `pending` (to be sent, due
        // at `next_at`; `failure_code` says why the last attempt failed),
        // `complete`, or `failed` (given up).
        "CREATE TABLE replication_log (
        registry_id TEXT NOT NULL,
        repository {TEXTKEY} NOT NULL,
        digest TEXT NOT NULL,
        destination_region TEXT NOT NULL,
        destination_registry TEXT NOT NULL,
        state TEXT NOT NULL,
        failure_code TEXT,
        failure_reason TEXT,
        attempts BIGINT NOT NULL,
        pushed_at BIGINT NOT NULL,
        next_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (registry_id, repository, digest, destination_region, destination_registry)
    )",
        // By state first: every query of the delivery path and of the
        // backlog reads only undelivered entries, whatever the history.
        "CREATE INDEX replication_log_due ON replication_log \
         (state, destination_region, destination_registry, next_at)",
        // Repository creation templates: the settings of repositories that
        // replication, the pull-through cache or a push creates.
        "CREATE TABLE creation_templates (
        registry_id TEXT NOT NULL,
        prefix {TEXTKEY} NOT NULL,
        document TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (registry_id, prefix)
    )",
    ],
    &[
        // ---- migration 14: the pull-through cache (metadata/pull_through.rs) -------
        // A registry's pull-through cache rules: repositories named under
        // `prefix` are fetched from the upstream on a miss.
        "CREATE TABLE pull_through_rules (
        registry_id TEXT NOT NULL,
        prefix {TEXTKEY} NOT NULL,
        upstream_url TEXT NOT NULL,
        upstream_registry TEXT,
        upstream_prefix TEXT NOT NULL,
        credential_arn TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (registry_id, prefix)
    )",
        // The upstream credentials a rule's credentialArn names (Secrets
        // Manager's `ecr-pullthroughcache/…`), sealed with the master key.
        "CREATE TABLE pull_through_secrets (
        account_id TEXT NOT NULL,
        name {TEXTKEY} NOT NULL,
        sealed {BLOB} NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (account_id, name)
    )",
        // When each cached tag was last compared with the upstream's.
        "CREATE TABLE pull_through_tags (
        registry_id TEXT NOT NULL,
        repository TEXT NOT NULL,
        tag TEXT NOT NULL,
        checked_at BIGINT NOT NULL,
        PRIMARY KEY (registry_id, repository, tag)
    )",
    ],
    // 15: the audit log (metadata/audit.rs): CloudTrail records in one hash
    // chain, with the columns LookupEvents filters on, and the chain's head.
    &[
        "CREATE TABLE audit_events (
        seq BIGINT PRIMARY KEY,
        event_time BIGINT NOT NULL,
        account_id {TEXTKEY} NOT NULL,
        region {TEXTKEY} NOT NULL,
        event_id TEXT NOT NULL,
        event_name {TEXTKEY} NOT NULL,
        event_source TEXT NOT NULL,
        username {TEXTKEY},
        access_key_id TEXT,
        read_only BIGINT NOT NULL,
        resource_type TEXT,
        resource_name {TEXTKEY},
        record TEXT NOT NULL,
        link TEXT NOT NULL
    )",
        "CREATE INDEX audit_events_history ON audit_events (account_id, region, event_time, seq)",
        "CREATE INDEX audit_events_by_name ON audit_events (account_id, region, event_name, event_time, seq)",
        "CREATE INDEX audit_events_by_user ON audit_events (account_id, region, username, event_time, seq)",
        "CREATE INDEX audit_events_by_resource ON audit_events (account_id, region, resource_name, event_time, seq)",
        "CREATE TABLE audit_chain (
        id BIGINT PRIMARY KEY,
        seq BIGINT NOT NULL,
        link TEXT NOT NULL,
        pruned_seq BIGINT NOT NULL,
        pruned_link TEXT NOT NULL
    )",
        "INSERT INTO audit_chain (id, seq, link, pruned_seq, pruned_link) VALUES (1, 0, \
         '0000000000000000000000000000000000000000000000000000000000000000', 0, \
         '0000000000000000000000000000000000000000000000000000000000000000')",
    ],
    &[
        // ---- migration 16: the web console (metadata/console.rs) ----------------
        // An IAM user's console password (CreateLoginProfile): a slow salted
        // hash (`pbkdf2-sha256$<iterations>$<salt>$<hash>`), never the password.
        "CREATE TABLE login_profiles (
        account_id TEXT NOT NULL,
        user_name {TEXTKEY} NOT NULL,
        password_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (account_id, user_name)
    )",
        // Console sessions, shared by every node: the SHA-256 of the cookie's
        // token (the token itself is never stored), who signed in (a user's
        // password: `access_key_id` NULL; an access key: its id; the root:
        // `user_name` ''), the session's own credential id (`session_key_id`,
        // what its calls are made as) and when it ends.
        "CREATE TABLE console_sessions (
        token_hash TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        access_key_id TEXT,
        session_key_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        source_ip TEXT
    )",
        "CREATE INDEX console_sessions_by_user ON console_sessions (account_id, user_name)",
        "CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at)",
        // The console's repository list sorted by creation time, a page at a time.
        "CREATE INDEX repositories_by_creation ON repositories (registry_id, created_at, name)",
    ],
];

fn render(stmt: &str, dialect: Dialect) -> String {
    let (blob, textkey) = match dialect {
        Dialect::Sqlite => ("BLOB", "TEXT"),
        Dialect::Postgres => ("BYTEA", "TEXT COLLATE \"C\""),
    };
    stmt.replace("{BLOB}", blob).replace("{TEXTKEY}", textkey)
}

/// The key of the PostgreSQL advisory lock that serialises migrations ("berth").
const MIGRATION_LOCK: i64 = 0x0062_6572_7468;

/// Apply every migration newer than the database's version, each in its own
/// transaction. Nodes that start together on an empty database take turns: on
/// PostgreSQL under an advisory lock held on one connection for the whole
/// run (DDL of two sessions at once fails on the catalog's unique indexes),
/// on SQLite under its write lock.
pub(super) async fn migrate(pool: &AnyPool, dialect: Dialect) -> Result<()> {
    let mut conn = pool.acquire().await?;
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let result = migrate_on(&mut conn, dialect).await;
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    result
}

async fn migrate_on(conn: &mut sqlx::AnyConnection, dialect: Dialect) -> Result<()> {
    use sqlx::Connection;
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .execute(&mut *conn)
        .await?;
    for (i, statements) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        let mut tx = match dialect {
            Dialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => conn.begin().await?,
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
            // `PG: ` marks a statement for PostgreSQL only.
            let stmt = match (stmt.strip_prefix("PG: "), dialect) {
                (Some(_), Dialect::Sqlite) => continue,
                (Some(pg), Dialect::Postgres) => pg,
                (None, _) => stmt,
            };
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
