//! The KMS key store: keys of an account (settings, state, rotation), the
//! versions of each key's material (sealed by the caller, never plaintext
//! here), aliases, resource tags and grants. The rules (state transitions,
//! what a state allows, sealing) are `kms::KeyRing`'s; this module only
//! stores what it is given.

use sqlx::Row;

use super::{MetadataStore, Result, now_millis};

/// A KMS key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsKeyRow {
    pub key_id: String,
    pub account_id: String,
    pub arn: String,
    pub description: String,
    pub key_usage: String,
    pub key_spec: String,
    pub origin: String,
    /// `CUSTOMER` or `AWS` (the `aws/ecr` key).
    pub manager: String,
    /// `Enabled`, `Disabled` or `PendingDeletion`.
    pub state: String,
    pub created_at: i64,
    pub deletion_at: Option<i64>,
    pub pending_window_days: Option<i64>,
    /// When the material was destroyed (the key is gone for good).
    pub destroyed_at: Option<i64>,
    pub rotation_enabled: bool,
    pub rotation_period_days: i64,
    pub next_rotation_at: Option<i64>,
    pub policy: String,
    /// `local` or `transit`.
    pub custody: String,
}

/// One version of a key's material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsMaterialRow {
    pub version: i64,
    /// Sealed material; `None` once destroyed or under transit custody.
    pub material: Option<Vec<u8>>,
    /// `` for the first version, `AUTOMATIC` or `ON_DEMAND` for rotations.
    pub rotation_type: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsAliasRow {
    pub alias_name: String,
    pub key_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsGrantRow {
    pub grant_id: String,
    pub key_id: String,
    pub name: Option<String>,
    pub grantee_principal: String,
    pub retiring_principal: Option<String>,
    pub issuing_account: String,
    /// JSON list of operation names.
    pub operations: String,
    /// JSON object (`EncryptionContextSubset` / `EncryptionContextEquals`), if any.
    pub constraints: Option<String>,
    pub grant_token: String,
    pub created_at: i64,
}

const KEY_COLUMNS: &str = "key_id, account_id, arn, description, key_usage, key_spec, origin, \
     manager, state, created_at, deletion_at, pending_window_days, destroyed_at, \
     rotation_enabled, rotation_period_days, next_rotation_at, policy, custody";

fn key_row(r: &sqlx::any::AnyRow) -> Result<KmsKeyRow> {
    Ok(KmsKeyRow {
        key_id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        arn: r.try_get(2)?,
        description: r.try_get(3)?,
        key_usage: r.try_get(4)?,
        key_spec: r.try_get(5)?,
        origin: r.try_get(6)?,
        manager: r.try_get(7)?,
        state: r.try_get(8)?,
        created_at: r.try_get(9)?,
        deletion_at: r.try_get(10)?,
        pending_window_days: r.try_get(11)?,
        destroyed_at: r.try_get(12)?,
        rotation_enabled: r.try_get::<i64, _>(13)? != 0,
        rotation_period_days: r.try_get(14)?,
        next_rotation_at: r.try_get(15)?,
        policy: r.try_get(16)?,
        custody: r.try_get(17)?,
    })
}

fn grant_row(r: &sqlx::any::AnyRow) -> Result<KmsGrantRow> {
    Ok(KmsGrantRow {
        grant_id: r.try_get(0)?,
        key_id: r.try_get(1)?,
        name: r.try_get(2)?,
        grantee_principal: r.try_get(3)?,
        retiring_principal: r.try_get(4)?,
        issuing_account: r.try_get(5)?,
        operations: r.try_get(6)?,
        constraints: r.try_get(7)?,
        grant_token: r.try_get(8)?,
        created_at: r.try_get(9)?,
    })
}

const GRANT_COLUMNS: &str = "grant_id, key_id, name, grantee_principal, retiring_principal, \
     issuing_account, operations, constraints, grant_token, created_at";

const MATERIAL_COLUMNS: &str = "version, material, rotation_type, created_at";

const ALIAS_COLUMNS: &str = "alias_name, key_id, created_at, updated_at";

impl MetadataStore {
    /// Store a new key with its first material version (sealed by the
    /// caller, or `None` under transit custody), its tags and, optionally, an
    /// alias. Returns false (and stores nothing) if the key id, or the
    /// alias, already exists.
    pub async fn kms_create_key(
        &self,
        key: &KmsKeyRow,
        material: Option<&[u8]>,
        tags: &[(String, String)],
        alias: Option<&str>,
    ) -> Result<bool> {
        self.retrying(|| self.kms_create_key_once(key, material, tags, alias))
            .await
    }

    async fn kms_create_key_once(
        &self,
        key: &KmsKeyRow,
        material: Option<&[u8]>,
        tags: &[(String, String)],
        alias: Option<&str>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO kms_keys ({KEY_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
             ON CONFLICT (key_id) DO NOTHING"
        )))
        .bind(&key.key_id)
        .bind(&key.account_id)
        .bind(&key.arn)
        .bind(&key.description)
        .bind(&key.key_usage)
        .bind(&key.key_spec)
        .bind(&key.origin)
        .bind(&key.manager)
        .bind(&key.state)
        .bind(key.created_at)
        .bind(key.deletion_at)
        .bind(key.pending_window_days)
        .bind(key.destroyed_at)
        .bind(key.rotation_enabled as i64)
        .bind(key.rotation_period_days)
        .bind(key.next_rotation_at)
        .bind(&key.policy)
        .bind(&key.custody)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !inserted {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO kms_key_material (key_id, version, material, rotation_type, created_at) \
             VALUES ($1, 1, $2, '', $3)",
        )
        .bind(&key.key_id)
        .bind(material.map(<[u8]>::to_vec))
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
        insert_tags(&mut tx, &key.key_id, tags).await?;
        if let Some(alias) = alias
            && !insert_alias(&mut tx, &key.account_id, alias, &key.key_id, key.created_at).await?
        {
            return Ok(false);
        }
        self.commit(tx).await?;
        Ok(true)
    }

    pub async fn kms_key(&self, key_id: &str) -> Result<Option<KmsKeyRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM kms_keys WHERE key_id = $1"
        )))
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_row).transpose()
    }

    /// The keys of `account` after `after` (key id order), at most `limit`.
    pub async fn kms_list_keys(
        &self,
        account: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<KmsKeyRow>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM kms_keys WHERE account_id = $1 AND key_id > $2 \
             AND destroyed_at IS NULL ORDER BY key_id LIMIT $3"
        )))
        .bind(account)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_row)
        .collect()
    }

    /// Write the mutable settings of a key (state, deletion, rotation,
    /// description, policy) if its state is still `expect_state`: false when
    /// another writer changed it first.
    pub async fn kms_update_key(&self, key: &KmsKeyRow, expect_state: &str) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE kms_keys SET state = $2, deletion_at = $3, pending_window_days = $4, \
             rotation_enabled = $5, rotation_period_days = $6, next_rotation_at = $7, \
             description = $8, policy = $9 \
             WHERE key_id = $1 AND state = $10 AND destroyed_at IS NULL",
        )
        .bind(&key.key_id)
        .bind(&key.state)
        .bind(key.deletion_at)
        .bind(key.pending_window_days)
        .bind(key.rotation_enabled as i64)
        .bind(key.rotation_period_days)
        .bind(key.next_rotation_at)
        .bind(&key.description)
        .bind(&key.policy)
        .bind(expect_state)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }

    /// One version of a key's material (`None`: no such version).
    pub async fn kms_material(&self, key_id: &str, version: i64) -> Result<Option<KmsMaterialRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MATERIAL_COLUMNS} FROM kms_key_material \
             WHERE key_id = $1 AND version = $2"
        )))
        .bind(key_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(material_row).transpose()
    }

    /// Every material version of a key, oldest first.
    pub async fn kms_materials(&self, key_id: &str) -> Result<Vec<KmsMaterialRow>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MATERIAL_COLUMNS} FROM kms_key_material \
             WHERE key_id = $1 ORDER BY version"
        )))
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(material_row)
        .collect()
    }

    /// The newest material version of a key.
    pub async fn kms_latest_material(&self, key_id: &str) -> Result<Option<KmsMaterialRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MATERIAL_COLUMNS} FROM kms_key_material \
             WHERE key_id = $1 ORDER BY version DESC LIMIT 1"
        )))
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(material_row).transpose()
    }

    /// Add material version `version` (the newest + 1, sealed by the caller
    /// for that version) and move the next automatic rotation. False if that
    /// version exists already (a concurrent rotation won).
    pub async fn kms_add_material(
        &self,
        key_id: &str,
        version: i64,
        material: Option<&[u8]>,
        rotation_type: &str,
        next_rotation_at: Option<i64>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let added = sqlx::query(
            "INSERT INTO kms_key_material (key_id, version, material, rotation_type, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id, version) DO NOTHING",
        )
        .bind(key_id)
        .bind(version)
        .bind(material.map(<[u8]>::to_vec))
        .bind(rotation_type)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !added {
            return Ok(false);
        }
        sqlx::query("UPDATE kms_keys SET next_rotation_at = $2 WHERE key_id = $1")
            .bind(key_id)
            .bind(next_rotation_at)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// Destroy a deleted key's material for good (crypto-shredding): every
    /// version's material, its aliases, grants and tags. The key row stays
    /// (with `destroyed_at`), so its ARN is reported as deleted rather than
    /// unknown.
    pub async fn kms_destroy_key(&self, key_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_millis();
        sqlx::query(
            "UPDATE kms_keys SET destroyed_at = $2 WHERE key_id = $1 AND destroyed_at IS NULL",
        )
        .bind(key_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE kms_key_material SET material = NULL WHERE key_id = $1")
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        for table in ["kms_aliases", "kms_grants", "kms_key_tags"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE key_id = $1"
            )))
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// Keys pending deletion whose waiting period ended before `now` and
    /// whose material is not yet destroyed.
    pub async fn kms_keys_due_for_deletion(&self, now: i64) -> Result<Vec<String>> {
        self.kms_key_ids_due(
            "SELECT key_id FROM kms_keys WHERE state = 'PendingDeletion' AND deletion_at <= $1 \
             AND destroyed_at IS NULL ORDER BY key_id LIMIT 1000",
            now,
        )
        .await
    }

    /// Enabled keys with automatic rotation due before `now`.
    pub async fn kms_keys_due_for_rotation(&self, now: i64) -> Result<Vec<String>> {
        self.kms_key_ids_due(
            "SELECT key_id FROM kms_keys WHERE state = 'Enabled' AND rotation_enabled = 1 \
             AND next_rotation_at <= $1 AND destroyed_at IS NULL ORDER BY key_id LIMIT 1000",
            now,
        )
        .await
    }

    /// The key ids a `SELECT key_id …` query with `now` as `$1` returns.
    async fn kms_key_ids_due(&self, sql: &'static str, now: i64) -> Result<Vec<String>> {
        sqlx::query(sql)
            .bind(now)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    // ---- aliases ----------------------------------------------------------

    /// Create an alias; false if the account has one of that name.
    pub async fn kms_create_alias(&self, account: &str, name: &str, key_id: &str) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        insert_alias(&mut conn, account, name, key_id, now_millis()).await
    }

    /// Point an existing alias at another key; false if there is no such alias.
    pub async fn kms_update_alias(&self, account: &str, name: &str, key_id: &str) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE kms_aliases SET key_id = $3, updated_at = $4 \
             WHERE account_id = $1 AND alias_name = $2",
        )
        .bind(account)
        .bind(name)
        .bind(key_id)
        .bind(now_millis())
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }

    pub async fn kms_delete_alias(&self, account: &str, name: &str) -> Result<bool> {
        Ok(
            sqlx::query("DELETE FROM kms_aliases WHERE account_id = $1 AND alias_name = $2")
                .bind(account)
                .bind(name)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    pub async fn kms_alias(&self, account: &str, name: &str) -> Result<Option<KmsAliasRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ALIAS_COLUMNS} FROM kms_aliases \
             WHERE account_id = $1 AND alias_name = $2"
        )))
        .bind(account)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(alias_row).transpose()
    }

    /// Aliases of `account` (of one key, if given) after `after`, by name.
    pub async fn kms_list_aliases(
        &self,
        account: &str,
        key_id: Option<&str>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<KmsAliasRow>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ALIAS_COLUMNS} FROM kms_aliases \
             WHERE account_id = $1 AND ($2 = '' OR key_id = $2) AND alias_name > $3 \
             ORDER BY alias_name LIMIT $4"
        )))
        .bind(account)
        .bind(key_id.unwrap_or(""))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(alias_row)
        .collect()
    }

    // ---- tags -------------------------------------------------------------

    /// Add or replace tags of a key.
    pub async fn kms_tag_key(&self, key_id: &str, tags: &[(String, String)]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_tags(&mut tx, key_id, tags).await?;
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn kms_untag_key(&self, key_id: &str, keys: &[String]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for k in keys {
            sqlx::query("DELETE FROM kms_key_tags WHERE key_id = $1 AND tag_key = $2")
                .bind(key_id)
                .bind(k)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// A key's tags after tag key `after`, at most `limit`, by tag key.
    pub async fn kms_key_tags(
        &self,
        key_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        sqlx::query(
            "SELECT tag_key, tag_value FROM kms_key_tags WHERE key_id = $1 AND tag_key > $2 \
             ORDER BY tag_key LIMIT $3",
        )
        .bind(key_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }

    // ---- grants -----------------------------------------------------------

    pub async fn kms_create_grant(&self, g: &KmsGrantRow) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO kms_grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )))
        .bind(&g.grant_id)
        .bind(&g.key_id)
        .bind(g.name.as_deref())
        .bind(&g.grantee_principal)
        .bind(g.retiring_principal.as_deref())
        .bind(&g.issuing_account)
        .bind(&g.operations)
        .bind(g.constraints.as_deref())
        .bind(&g.grant_token)
        .bind(g.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Grants on a key after `after` (grant id order), at most `limit`.
    pub async fn kms_list_grants(
        &self,
        key_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<KmsGrantRow>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM kms_grants WHERE key_id = $1 AND grant_id > $2 \
             ORDER BY grant_id LIMIT $3"
        )))
        .bind(key_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(grant_row)
        .collect()
    }

    /// The grant with this token (RetireGrant by GrantToken).
    pub async fn kms_grant_by_token(&self, token: &str) -> Result<Option<KmsGrantRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM kms_grants WHERE grant_token = $1"
        )))
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(grant_row).transpose()
    }

    pub async fn kms_delete_grant(&self, key_id: &str, grant_id: &str) -> Result<bool> {
        Ok(
            sqlx::query("DELETE FROM kms_grants WHERE key_id = $1 AND grant_id = $2")
                .bind(key_id)
                .bind(grant_id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }
}

/// Add or replace tags of a key.
async fn insert_tags(
    conn: &mut sqlx::AnyConnection,
    key_id: &str,
    tags: &[(String, String)],
) -> Result<()> {
    for (k, v) in tags {
        sqlx::query(
            "INSERT INTO kms_key_tags (key_id, tag_key, tag_value) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
        )
        .bind(key_id)
        .bind(k)
        .bind(v)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Create an alias; false if the account has one of that name.
async fn insert_alias(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    name: &str,
    key_id: &str,
    at: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO kms_aliases (account_id, alias_name, key_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (account_id, alias_name) DO NOTHING",
    )
    .bind(account)
    .bind(name)
    .bind(key_id)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0)
}

fn material_row(r: &sqlx::any::AnyRow) -> Result<KmsMaterialRow> {
    Ok(KmsMaterialRow {
        version: r.try_get(0)?,
        material: r.try_get(1)?,
        rotation_type: r.try_get(2)?,
        created_at: r.try_get(3)?,
    })
}

fn alias_row(r: &sqlx::any::AnyRow) -> Result<KmsAliasRow> {
    Ok(KmsAliasRow {
        alias_name: r.try_get(0)?,
        key_id: r.try_get(1)?,
        created_at: r.try_get(2)?,
        updated_at: r.try_get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::testing::{Engine, Fixture};

    fn key(id: &str, account: &str) -> KmsKeyRow {
        KmsKeyRow {
            key_id: id.into(),
            account_id: account.into(),
            arn: format!("arn:aws:kms:us-east-1:{account}:key/{id}"),
            description: String::new(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            origin: "AWS_KMS".into(),
            manager: "CUSTOMER".into(),
            state: "Enabled".into(),
            created_at: now_millis(),
            deletion_at: None,
            pending_window_days: None,
            destroyed_at: None,
            rotation_enabled: false,
            rotation_period_days: 365,
            next_rotation_at: None,
            policy: "{}".into(),
            custody: "local".into(),
        }
    }

    async fn keys_materials_and_destruction(engine: Engine) {
        let fx = Fixture::new(engine).await;
        let meta = fx.open().await;
        let a = key("a1", "111111111111");
        let tags = vec![("env".to_string(), "prod".to_string())];
        assert!(
            meta.kms_create_key(&a, Some(b"sealed-1"), &tags, Some("alias/x"))
                .await
                .unwrap()
        );
        assert!(!meta.kms_create_key(&a, None, &[], None).await.unwrap());
        // The alias name is taken: nothing of the second key is stored.
        let b = key("b2", "111111111111");
        assert!(
            !meta
                .kms_create_key(&b, None, &[], Some("alias/x"))
                .await
                .unwrap()
        );
        assert!(meta.kms_key("b2").await.unwrap().is_none());
        assert!(meta.kms_create_key(&b, None, &[], None).await.unwrap());
        assert_eq!(meta.kms_key("a1").await.unwrap().unwrap(), a);
        let listed = meta
            .kms_list_keys("111111111111", "", 1)
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.key_id)
            .collect::<Vec<_>>();
        assert_eq!(listed, ["a1"]);
        assert_eq!(
            meta.kms_list_keys("111111111111", "a1", 10).await.unwrap()[0].key_id,
            "b2"
        );
        assert!(
            meta.kms_list_keys("222222222222", "", 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Rotation adds versions; a concurrent duplicate version is refused.
        assert!(
            meta.kms_add_material("a1", 2, Some(b"sealed-2"), "ON_DEMAND", Some(5))
                .await
                .unwrap()
        );
        assert!(
            !meta
                .kms_add_material("a1", 2, Some(b"x"), "ON_DEMAND", None)
                .await
                .unwrap()
        );
        assert_eq!(
            meta.kms_latest_material("a1")
                .await
                .unwrap()
                .unwrap()
                .material
                .as_deref(),
            Some(&b"sealed-2"[..])
        );
        assert_eq!(meta.kms_materials("a1").await.unwrap().len(), 2);
        assert_eq!(
            meta.kms_key("a1").await.unwrap().unwrap().next_rotation_at,
            Some(5)
        );
        assert_eq!(
            meta.kms_keys_due_for_rotation(10).await.unwrap(),
            Vec::<String>::new()
        );
        // State changes are compare-and-set on the state.
        let mut pending = a.clone();
        pending.state = "PendingDeletion".into();
        pending.deletion_at = Some(1000);
        assert!(!meta.kms_update_key(&pending, "Disabled").await.unwrap());
        assert!(meta.kms_update_key(&pending, "Enabled").await.unwrap());
        assert_eq!(
            meta.kms_keys_due_for_deletion(999).await.unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(meta.kms_keys_due_for_deletion(1000).await.unwrap(), ["a1"]);
        meta.kms_destroy_key("a1").await.unwrap();
        assert!(
            meta.kms_keys_due_for_deletion(2000)
                .await
                .unwrap()
                .is_empty()
        );
        let gone = meta.kms_key("a1").await.unwrap().unwrap();
        assert!(gone.destroyed_at.is_some());
        assert!(
            meta.kms_materials("a1")
                .await
                .unwrap()
                .iter()
                .all(|m| m.material.is_none())
        );
        assert!(
            meta.kms_alias("111111111111", "alias/x")
                .await
                .unwrap()
                .is_none()
        );
        assert!(meta.kms_key_tags("a1", "", 10).await.unwrap().is_empty());
        // A destroyed key takes no more updates and is not listed.
        assert!(
            !meta
                .kms_update_key(&pending, "PendingDeletion")
                .await
                .unwrap()
        );
        assert_eq!(
            meta.kms_list_keys("111111111111", "", 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    async fn aliases_tags_and_grants(engine: Engine) {
        let fx = Fixture::new(engine).await;
        let meta = fx.open().await;
        let acct = "111111111111";
        meta.kms_create_key(&key("k1", acct), None, &[], None)
            .await
            .unwrap();
        meta.kms_create_key(&key("k2", acct), None, &[], None)
            .await
            .unwrap();
        assert!(meta.kms_create_alias(acct, "alias/b", "k1").await.unwrap());
        assert!(meta.kms_create_alias(acct, "alias/a", "k2").await.unwrap());
        assert!(!meta.kms_create_alias(acct, "alias/a", "k1").await.unwrap());
        // Another account may use the same name.
        assert!(
            meta.kms_create_alias("222222222222", "alias/a", "k9")
                .await
                .unwrap()
        );
        let names = |v: Vec<KmsAliasRow>| v.into_iter().map(|a| a.alias_name).collect::<Vec<_>>();
        assert_eq!(
            names(meta.kms_list_aliases(acct, None, "", 10).await.unwrap()),
            ["alias/a", "alias/b"]
        );
        assert_eq!(
            names(
                meta.kms_list_aliases(acct, Some("k1"), "", 10)
                    .await
                    .unwrap()
            ),
            ["alias/b"]
        );
        assert_eq!(
            names(
                meta.kms_list_aliases(acct, None, "alias/a", 10)
                    .await
                    .unwrap()
            ),
            ["alias/b"]
        );
        assert!(meta.kms_update_alias(acct, "alias/b", "k2").await.unwrap());
        assert!(!meta.kms_update_alias(acct, "alias/zz", "k2").await.unwrap());
        assert_eq!(
            meta.kms_alias(acct, "alias/b")
                .await
                .unwrap()
                .unwrap()
                .key_id,
            "k2"
        );
        assert!(meta.kms_delete_alias(acct, "alias/b").await.unwrap());
        assert!(!meta.kms_delete_alias(acct, "alias/b").await.unwrap());

        meta.kms_tag_key("k1", &[("b".into(), "1".into()), ("a".into(), "2".into())])
            .await
            .unwrap();
        meta.kms_tag_key("k1", &[("b".into(), "3".into())])
            .await
            .unwrap();
        assert_eq!(
            meta.kms_key_tags("k1", "", 10).await.unwrap(),
            [("a".to_string(), "2".to_string()), ("b".into(), "3".into())]
        );
        meta.kms_untag_key("k1", &["a".into()]).await.unwrap();
        assert_eq!(meta.kms_key_tags("k1", "", 10).await.unwrap().len(), 1);

        let g = KmsGrantRow {
            grant_id: "g1".into(),
            key_id: "k1".into(),
            name: Some("ecr".into()),
            grantee_principal: "ecr.amazonaws.com".into(),
            retiring_principal: None,
            issuing_account: format!("arn:aws:iam::{acct}:root"),
            operations: r#"["Decrypt"]"#.into(),
            constraints: None,
            grant_token: "tok1".into(),
            created_at: 1,
        };
        meta.kms_create_grant(&g).await.unwrap();
        meta.kms_create_grant(&KmsGrantRow {
            grant_id: "g2".into(),
            grant_token: "tok2".into(),
            ..g.clone()
        })
        .await
        .unwrap();
        assert_eq!(
            meta.kms_list_grants("k1", "", 1).await.unwrap(),
            std::slice::from_ref(&g)
        );
        assert_eq!(
            meta.kms_list_grants("k1", "g1", 5).await.unwrap()[0].grant_id,
            "g2"
        );
        assert_eq!(
            meta.kms_grant_by_token("tok2")
                .await
                .unwrap()
                .unwrap()
                .grant_id,
            "g2"
        );
        assert!(meta.kms_delete_grant("k1", "g1").await.unwrap());
        assert!(!meta.kms_delete_grant("k1", "g1").await.unwrap());
    }

    crate::metadata::testing::on_both_engines!(
        keys_materials_and_destruction,
        aliases_tags_and_grants
    );
}
