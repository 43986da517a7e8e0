//! Queries about repositories as resources: their settings (tag mutability,
//! scanning, encryption), resource tags, repository policies, and the
//! registry's own: its policy and its account settings.

use sqlx::Row;

use super::{MetadataStore, Repo, Result, now_millis};

/// A repository and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryRow {
    pub registry_id: String,
    pub name: String,
    pub created_at: i64,
    /// `MUTABLE`, `IMMUTABLE`, `MUTABLE_WITH_EXCLUSION` or `IMMUTABLE_WITH_EXCLUSION`.
    pub tag_mutability: String,
    /// Wildcard filters of the `*_WITH_EXCLUSION` modes.
    pub mutability_exclusions: Vec<String>,
    pub scan_on_push: bool,
    pub encryption_type: String,
    pub kms_key: Option<String>,
    pub policy: Option<String>,
}

impl RepositoryRow {
    /// A repository with ECR's default settings.
    pub fn new(registry_id: &str, name: &str) -> RepositoryRow {
        RepositoryRow {
            registry_id: registry_id.to_string(),
            name: name.to_string(),
            created_at: now_millis(),
            tag_mutability: "MUTABLE".into(),
            mutability_exclusions: Vec::new(),
            scan_on_push: false,
            encryption_type: "AES256".into(),
            kms_key: None,
            policy: None,
        }
    }
}

pub(super) const REPO_COLUMNS: &str = "registry_id, name, created_at, tag_mutability, mutability_exclusions, \
     scan_on_push, encryption_type, kms_key, policy";

pub(super) fn repository_row(r: &sqlx::any::AnyRow) -> Result<RepositoryRow> {
    let exclusions: String = r.try_get(4)?;
    Ok(RepositoryRow {
        registry_id: r.try_get(0)?,
        name: r.try_get(1)?,
        created_at: r.try_get(2)?,
        tag_mutability: r.try_get(3)?,
        mutability_exclusions: serde_json::from_str(&exclusions).unwrap_or_default(),
        scan_on_push: r.try_get::<i64, _>(5)? != 0,
        encryption_type: r.try_get(6)?,
        kms_key: r.try_get(7)?,
        policy: r.try_get(8)?,
    })
}

impl MetadataStore {
    /// Create a repository with its resource tags. Returns false if it exists.
    pub async fn create_repository(
        &self,
        repo: &RepositoryRow,
        tags: &[(String, String)],
    ) -> Result<bool> {
        self.retrying(|| self.create_repository_once(repo, tags))
            .await
    }

    async fn create_repository_once(
        &self,
        repo: &RepositoryRow,
        tags: &[(String, String)],
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO repositories (registry_id, name, created_at, tag_mutability, mutability_exclusions, \
             scan_on_push, encryption_type, kms_key, policy) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (registry_id, name) DO NOTHING",
        )
        .bind(&repo.registry_id)
        .bind(&repo.name)
        .bind(repo.created_at)
        .bind(&repo.tag_mutability)
        .bind(serde_json::to_string(&repo.mutability_exclusions).expect("strings serialise"))
        .bind(repo.scan_on_push as i64)
        .bind(&repo.encryption_type)
        .bind(repo.kms_key.as_deref())
        .bind(repo.policy.as_deref())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if inserted {
            for (k, v) in tags {
                sqlx::query(
                    "INSERT INTO repository_tags (registry_id, repository, key, value) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (registry_id, repository, key) DO UPDATE SET value = excluded.value",
                )
                .bind(&repo.registry_id)
                .bind(&repo.name)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
            }
        }
        self.commit_if(tx, inserted).await?;
        Ok(inserted)
    }

    pub async fn get_repository(&self, repo: Repo<'_>) -> Result<Option<RepositoryRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REPO_COLUMNS} FROM repositories WHERE registry_id = $1 AND name = $2"
        )))
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(repository_row).transpose()
    }

    pub async fn repository_exists(&self, repo: Repo<'_>) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE registry_id = $1 AND name = $2")
            .bind(repo.registry)
            .bind(repo.name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Repositories of a registry in lexical (byte) order after `last`, at most `limit`.
    pub async fn list_repositories(
        &self,
        registry: &str,
        last: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RepositoryRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REPO_COLUMNS} FROM repositories WHERE registry_id = $1 AND name > $2 ORDER BY name LIMIT $3"
        )))
        .bind(registry)
        .bind(last.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(repository_row).collect()
    }

    /// Delete a repository and everything in it (tags, manifests, links,
    /// uploads, resource tags). Blob bytes are left to garbage collection.
    /// With `force == false` it refuses (returns `Ok(Err(()))`) when images remain.
    pub async fn delete_repository(
        &self,
        repo: Repo<'_>,
        force: bool,
    ) -> Result<Option<std::result::Result<RepositoryRow, ()>>> {
        self.retrying(|| self.delete_repository_once(repo, force))
            .await
    }

    async fn delete_repository_once(
        &self,
        repo: Repo<'_>,
        force: bool,
    ) -> Result<Option<std::result::Result<RepositoryRow, ()>>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REPO_COLUMNS} FROM repositories WHERE registry_id = $1 AND name = $2"
        )))
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let row = repository_row(&row)?;
        let images: i64 = sqlx::query(
            "SELECT COUNT(*) FROM manifests WHERE registry_id = $1 AND repository = $2",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if images > 0 && !force {
            return Ok(Some(Err(())));
        }
        for table in [
            "tags",
            "manifest_references",
            "manifests",
            "repository_blobs",
            "uploads",
            "repository_tags",
            "lifecycle_policies",
            "lifecycle_previews",
            "image_scans",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE registry_id = $1 AND repository = $2"
            )))
            .bind(repo.registry)
            .bind(repo.name)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM repositories WHERE registry_id = $1 AND name = $2")
            .bind(repo.registry)
            .bind(repo.name)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(Some(Ok(row)))
    }

    /// Change tag mutability. Returns false if the repository does not exist.
    pub async fn set_tag_mutability(
        &self,
        repo: Repo<'_>,
        mutability: &str,
        exclusions: &[String],
    ) -> Result<bool> {
        let n = self
            .execute_write(
                sqlx::query(
                    "UPDATE repositories SET tag_mutability = $1, mutability_exclusions = $2 \
             WHERE registry_id = $3 AND name = $4",
                )
                .bind(mutability)
                .bind(serde_json::to_string(exclusions).expect("strings serialise"))
                .bind(repo.registry)
                .bind(repo.name),
            )
            .await?;
        Ok(n > 0)
    }

    /// Set a repository's own scan on push (PutImageScanningConfiguration).
    /// Returns false if the repository does not exist.
    pub async fn set_scan_on_push(&self, repo: Repo<'_>, on: bool) -> Result<bool> {
        let n = self
            .execute_write(
                sqlx::query(
            "UPDATE repositories SET scan_on_push = $1 WHERE registry_id = $2 AND name = $3",
        )
        .bind(on as i64)
        .bind(repo.registry)
        .bind(repo.name),
            )
            .await?;
        Ok(n > 0)
    }

    /// Set or clear (`None`) a repository policy. Returns false if the repository does not exist.
    pub async fn set_repository_policy(
        &self,
        repo: Repo<'_>,
        policy: Option<&str>,
    ) -> Result<bool> {
        let n = self
            .execute_write(
                sqlx::query(
                    "UPDATE repositories SET policy = $1 WHERE registry_id = $2 AND name = $3",
                )
                .bind(policy)
                .bind(repo.registry)
                .bind(repo.name),
            )
            .await?;
        Ok(n > 0)
    }

    pub async fn repository_tags(&self, repo: Repo<'_>) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT key, value FROM repository_tags WHERE registry_id = $1 AND repository = $2 ORDER BY key",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Add or overwrite resource tags; refuses (returns false) when the total would exceed `max`.
    pub async fn tag_repository(
        &self,
        repo: Repo<'_>,
        tags: &[(String, String)],
        max: usize,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        for (k, v) in tags {
            sqlx::query(
                "INSERT INTO repository_tags (registry_id, repository, key, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (registry_id, repository, key) DO UPDATE SET value = excluded.value",
            )
            .bind(repo.registry)
            .bind(repo.name)
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
        }
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM repository_tags WHERE registry_id = $1 AND repository = $2",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if n as usize > max {
            tx.rollback().await?;
            return Ok(false);
        }
        self.commit(tx).await?;
        Ok(true)
    }

    pub async fn untag_repository(&self, repo: Repo<'_>, keys: &[String]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for k in keys {
            sqlx::query("DELETE FROM repository_tags WHERE registry_id = $1 AND repository = $2 AND key = $3")
                .bind(repo.registry)
                .bind(repo.name)
                .bind(k)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn registry_policy(&self, registry: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT policy FROM registry_policies WHERE registry_id = $1")
            .bind(registry)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Set (`Some`) or delete (`None`) the registry policy. Returns whether one existed before.
    pub async fn set_registry_policy(&self, registry: &str, policy: Option<&str>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let existed = sqlx::query("DELETE FROM registry_policies WHERE registry_id = $1")
            .bind(registry)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if let Some(p) = policy {
            sqlx::query("INSERT INTO registry_policies (registry_id, policy) VALUES ($1, $2)")
                .bind(registry)
                .bind(p)
                .execute(&mut *tx)
                .await?;
        }
        self.commit_if(tx, existed || policy.is_some()).await?;
        Ok(existed)
    }

    /// The value `registry` put for account setting `name`, if it put one.
    pub async fn account_setting(&self, registry: &str, name: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT value FROM account_settings WHERE registry_id = $1 AND name = $2")
                .bind(registry)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Store `registry`'s value of account setting `name`.
    pub async fn put_account_setting(&self, registry: &str, name: &str, value: &str) -> Result<()> {
        self.execute_write(
            sqlx::query(
            "INSERT INTO account_settings (registry_id, name, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (registry_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(registry)
        .bind(name)
        .bind(value)
        .bind(now_millis()),
        )
        .await?;
        Ok(())
    }
}
