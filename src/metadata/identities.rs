//! Queries about identities: accounts, IAM users, access keys (secrets stored
//! sealed; this layer never sees plaintext), users' identity policies, and
//! server-wide settings.

use sqlx::Row;

use super::{MetadataStore, Result, now_millis};

/// The PostgreSQL advisory lock key of [`MetadataStore::bootstrap_primary`] ("bootst").
const BOOTSTRAP_LOCK: i64 = 0x626f_6f74_7374;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub account_id: String,
    pub name: String,
    pub user_id: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessKeyRow {
    pub access_key_id: String,
    pub account_id: String,
    /// Empty for the account's root key.
    pub user_name: String,
    pub secret_sealed: Vec<u8>,
    pub active: bool,
    pub created_at: i64,
}

/// The statement that stores an access key.
fn insert_access_key(
    key: &AccessKeyRow,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO access_keys (access_key_id, account_id, user_name, secret_sealed, active, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key.access_key_id)
    .bind(&key.account_id)
    .bind(&key.user_name)
    .bind(&key.secret_sealed)
    .bind(key.active as i64)
    .bind(key.created_at)
}

impl MetadataStore {
    /// On an empty store, create the primary account and its root key, in one
    /// transaction that nodes starting at once take in turn (PostgreSQL: an
    /// advisory lock; SQLite: its write lock). False when an account exists.
    pub async fn bootstrap_primary(
        &self,
        id: &str,
        name: &str,
        key: &AccessKeyRow,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        if self.dialect == super::Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(BOOTSTRAP_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let any = sqlx::query("SELECT 1 FROM accounts LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if any {
            return Ok(false);
        }
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        insert_access_key(key).execute(&mut *tx).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// Create an account. Returns false if it exists.
    pub async fn create_account(&self, id: &str, name: &str) -> Result<bool> {
        let res = sqlx::query(
            "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// The primary account: the first one created (its registry is the one
    /// the bare host serves and the CLI defaults to).
    pub async fn primary_account(&self) -> Result<Option<String>> {
        Ok(self
            .list_accounts()
            .await?
            .into_iter()
            .next()
            .map(|(id, _)| id))
    }

    pub async fn list_accounts(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT id, name FROM accounts ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub async fn account_exists(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Create an IAM user. Returns false if it exists.
    pub async fn create_user(&self, account_id: &str, name: &str, user_id: &str) -> Result<bool> {
        let res = sqlx::query(
            "INSERT INTO users (account_id, name, user_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, name) DO NOTHING",
        )
        .bind(account_id)
        .bind(name)
        .bind(user_id)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn get_user(&self, account_id: &str, name: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query(
            "SELECT account_id, name, user_id, created_at FROM users WHERE account_id = $1 AND name = $2",
        )
        .bind(account_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(UserRow {
                account_id: r.try_get(0)?,
                name: r.try_get(1)?,
                user_id: r.try_get(2)?,
                created_at: r.try_get(3)?,
            })
        })
        .transpose()
    }

    pub async fn list_users(&self, account_id: &str) -> Result<Vec<UserRow>> {
        let rows = sqlx::query(
            "SELECT account_id, name, user_id, created_at FROM users WHERE account_id = $1 ORDER BY name",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UserRow {
                    account_id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    user_id: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    pub async fn create_access_key(&self, key: &AccessKeyRow) -> Result<()> {
        insert_access_key(key).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn get_access_key(&self, access_key_id: &str) -> Result<Option<AccessKeyRow>> {
        let row = sqlx::query(
            "SELECT access_key_id, account_id, user_name, secret_sealed, active, created_at \
             FROM access_keys WHERE access_key_id = $1",
        )
        .bind(access_key_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(AccessKeyRow {
                access_key_id: r.try_get(0)?,
                account_id: r.try_get(1)?,
                user_name: r.try_get(2)?,
                secret_sealed: r.try_get(3)?,
                active: r.try_get::<i64, _>(4)? != 0,
                created_at: r.try_get(5)?,
            })
        })
        .transpose()
    }

    /// The access keys of `user` (`""`: the account root) in `account_id`,
    /// secrets left out, oldest first.
    pub async fn list_access_keys(
        &self,
        account_id: &str,
        user: &str,
    ) -> Result<Vec<(String, bool, i64)>> {
        let rows = sqlx::query(
            "SELECT access_key_id, active, created_at FROM access_keys \
             WHERE account_id = $1 AND user_name = $2 ORDER BY created_at, access_key_id",
        )
        .bind(account_id)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? != 0, r.try_get(2)?)))
            .collect()
    }

    /// Delete an access key for good. Returns false if it does not exist.
    pub async fn delete_access_key(&self, access_key_id: &str) -> Result<bool> {
        let res = sqlx::query("DELETE FROM access_keys WHERE access_key_id = $1")
            .bind(access_key_id)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Delete a user that has no access keys, policies or login profile left (as IAM's
    /// DeleteUser). `Ok(None)`: no such user; `Ok(Some(false))`: it still has some.
    pub async fn delete_user(&self, account_id: &str, name: &str) -> Result<Option<bool>> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM users WHERE account_id = $1 AND name = $2")
            .bind(account_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let attached = sqlx::query(
            "SELECT 1 FROM access_keys WHERE account_id = $1 AND user_name = $2 \
             UNION ALL SELECT 1 FROM user_policies WHERE account_id = $1 AND user_name = $2 \
             UNION ALL SELECT 1 FROM login_profiles WHERE account_id = $1 AND user_name = $2 LIMIT 1",
        )
        .bind(account_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if attached {
            return Ok(Some(false));
        }
        sqlx::query("DELETE FROM users WHERE account_id = $1 AND name = $2")
            .bind(account_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(Some(true))
    }

    /// Deactivate (or reactivate) a key. Returns false if it does not exist.
    pub async fn set_access_key_active(&self, access_key_id: &str, active: bool) -> Result<bool> {
        let res = sqlx::query("UPDATE access_keys SET active = $1 WHERE access_key_id = $2")
            .bind(active as i64)
            .bind(access_key_id)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Attach (or replace) an inline identity policy on a user.
    pub async fn put_user_policy(
        &self,
        account_id: &str,
        user: &str,
        name: &str,
        document: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO user_policies (account_id, user_name, policy_name, document) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, user_name, policy_name) DO UPDATE SET document = excluded.document",
        )
        .bind(account_id)
        .bind(user)
        .bind(name)
        .bind(document)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_user_policy(
        &self,
        account_id: &str,
        user: &str,
        name: &str,
    ) -> Result<bool> {
        let res = sqlx::query(
            "DELETE FROM user_policies WHERE account_id = $1 AND user_name = $2 AND policy_name = $3",
        )
        .bind(account_id)
        .bind(user)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// The identity policy documents attached to a user.
    pub async fn user_policies(
        &self,
        account_id: &str,
        user: &str,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT policy_name, document FROM user_policies WHERE account_id = $1 AND user_name = $2 ORDER BY policy_name",
        )
        .bind(account_id)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub async fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Store (or replace) a setting.
    pub async fn set_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Remove a setting; returns whether there was one.
    pub async fn delete_setting(&self, name: &str) -> Result<bool> {
        let res = sqlx::query("DELETE FROM settings WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Store a setting unless one exists; returns the value now stored (so two
    /// nodes racing to initialise agree on one value).
    pub async fn init_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(self
            .get_setting(name)
            .await?
            .unwrap_or_else(|| value.to_vec()))
    }
}
