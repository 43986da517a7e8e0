//! Queries of the pull-through cache: the rules of each registry, the sealed
//! upstream credentials their `credentialArn` names, and when each cached tag
//! was last compared with the upstream's.

use sqlx::Row;

use super::{MetadataStore, Repo, Result};

/// One pull-through cache rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullThroughRuleRow {
    pub registry_id: String,
    /// Without a trailing `/`; `ROOT` for the rule of every other name.
    pub prefix: String,
    /// As given (a host name, or an `http://` / `https://` URL).
    pub upstream_url: String,
    /// ECR's name for the upstream (`docker-hub`, `quay`, …), when known.
    pub upstream_registry: Option<String>,
    /// `ROOT`, or the upstream repository prefix without a trailing `/`.
    pub upstream_prefix: String,
    pub credential_arn: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The outcome of [`MetadataStore::create_pull_through_rule`].
#[derive(Debug, PartialEq, Eq)]
pub enum NewRule {
    Created,
    Exists,
    /// The registry already has this many rules.
    Limit(i64),
}

/// The first key of the advisory lock that serialises a registry's rule creations ("ptc").
const RULES_LOCK: i32 = 0x0070_7463;

const RULE_COLUMNS: &str = "registry_id, prefix, upstream_url, upstream_registry, upstream_prefix, \
     credential_arn, created_at, updated_at FROM pull_through_rules";

fn rule_row(r: &sqlx::any::AnyRow) -> Result<PullThroughRuleRow> {
    Ok(PullThroughRuleRow {
        registry_id: r.try_get(0)?,
        prefix: r.try_get(1)?,
        upstream_url: r.try_get(2)?,
        upstream_registry: r.try_get(3)?,
        upstream_prefix: r.try_get(4)?,
        credential_arn: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
    })
}

impl MetadataStore {
    /// Store a new rule unless its prefix is taken or the registry has `max` rules.
    pub async fn create_pull_through_rule(
        &self,
        rule: &PullThroughRuleRow,
        max: i64,
    ) -> Result<NewRule> {
        self.retrying(|| async {
            let mut tx = self.begin_write().await?;
            // Two nodes creating rules at once must not both count 49: the
            // registry's rules are created one at a time (PostgreSQL: this
            // advisory lock, per registry; SQLite: its write lock).
            if self.dialect == super::Dialect::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                    .bind(RULES_LOCK)
                    .bind(&rule.registry_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let exists = sqlx::query(
                "SELECT 1 FROM pull_through_rules WHERE registry_id = $1 AND prefix = $2",
            )
            .bind(&rule.registry_id)
            .bind(&rule.prefix)
            .fetch_optional(&mut *tx)
            .await?;
            if exists.is_some() {
                return Ok(NewRule::Exists);
            }
            let n: i64 =
                sqlx::query("SELECT COUNT(*) FROM pull_through_rules WHERE registry_id = $1")
                    .bind(&rule.registry_id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
            if n >= max {
                return Ok(NewRule::Limit(n));
            }
            let inserted = sqlx::query(
                "INSERT INTO pull_through_rules (registry_id, prefix, upstream_url, \
                 upstream_registry, upstream_prefix, credential_arn, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (registry_id, prefix) DO NOTHING",
            )
            .bind(&rule.registry_id)
            .bind(&rule.prefix)
            .bind(&rule.upstream_url)
            .bind(&rule.upstream_registry)
            .bind(&rule.upstream_prefix)
            .bind(&rule.credential_arn)
            .bind(rule.created_at)
            .bind(rule.updated_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            self.commit_if(tx, inserted == 1).await?;
            Ok(if inserted == 1 {
                NewRule::Created
            } else {
                NewRule::Exists
            })
        })
        .await
    }

    /// The rules of `registry` whose prefix sorts after `after`, at most `limit`, in prefix order.
    pub async fn pull_through_rules(
        &self,
        registry: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<PullThroughRuleRow>> {
        let sql = format!(
            "SELECT {RULE_COLUMNS} WHERE registry_id = $1 AND prefix > $2 ORDER BY prefix LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(registry)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rule_row).collect()
    }

    pub async fn pull_through_rule(
        &self,
        registry: &str,
        prefix: &str,
    ) -> Result<Option<PullThroughRuleRow>> {
        let sql = format!("SELECT {RULE_COLUMNS} WHERE registry_id = $1 AND prefix = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(registry)
            .bind(prefix)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rule_row).transpose()
    }

    /// Set a rule's credential; returns the rule as it is now.
    pub async fn update_pull_through_rule(
        &self,
        registry: &str,
        prefix: &str,
        credential_arn: Option<&str>,
        now: i64,
    ) -> Result<Option<PullThroughRuleRow>> {
        let n = sqlx::query(
            "UPDATE pull_through_rules SET credential_arn = $3, updated_at = $4 \
             WHERE registry_id = $1 AND prefix = $2",
        )
        .bind(registry)
        .bind(prefix)
        .bind(credential_arn)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        self.pull_through_rule(registry, prefix).await
    }

    /// Delete a rule; returns it as it was.
    pub async fn delete_pull_through_rule(
        &self,
        registry: &str,
        prefix: &str,
    ) -> Result<Option<PullThroughRuleRow>> {
        let mut tx = self.begin_write().await?;
        let sql = format!("SELECT {RULE_COLUMNS} WHERE registry_id = $1 AND prefix = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(registry)
            .bind(prefix)
            .fetch_optional(&mut *tx)
            .await?;
        let row = row.as_ref().map(rule_row).transpose()?;
        if row.is_some() {
            sqlx::query("DELETE FROM pull_through_rules WHERE registry_id = $1 AND prefix = $2")
                .bind(registry)
                .bind(prefix)
                .execute(&mut *tx)
                .await?;
        }
        self.commit_if(tx, row.is_some()).await?;
        Ok(row)
    }

    /// Store (or replace) the sealed upstream credential `name` of `account`.
    pub async fn put_pull_through_secret(
        &self,
        account: &str,
        name: &str,
        sealed: &[u8],
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO pull_through_secrets (account_id, name, sealed, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (account_id, name) \
             DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
        )
        .bind(account)
        .bind(name)
        .bind(sealed)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn pull_through_secret(&self, account: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query(
            "SELECT sealed FROM pull_through_secrets WHERE account_id = $1 AND name = $2",
        )
        .bind(account)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    /// When `tag` of `repo` was last compared with the upstream's.
    pub async fn pull_through_tag_checked(&self, repo: Repo<'_>, tag: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT checked_at FROM pull_through_tags \
             WHERE registry_id = $1 AND repository = $2 AND tag = $3",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    pub async fn set_pull_through_tag_checked(
        &self,
        repo: Repo<'_>,
        tag: &str,
        at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO pull_through_tags (registry_id, repository, tag, checked_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (registry_id, repository, tag) \
             DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(tag)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::now_millis;
    use crate::metadata::testing::{Engine, Fixture};

    fn rule(registry: &str, prefix: &str) -> PullThroughRuleRow {
        PullThroughRuleRow {
            registry_id: registry.into(),
            prefix: prefix.into(),
            upstream_url: "registry-1.docker.io".into(),
            upstream_registry: Some("docker-hub".into()),
            upstream_prefix: "ROOT".into(),
            credential_arn: None,
            created_at: now_millis(),
            updated_at: now_millis(),
        }
    }

    async fn rules_secrets_and_tags(engine: Engine) {
        let f = Fixture::new(engine).await;
        let meta = f.open().await;
        let r = "111111111111";
        assert_eq!(
            meta.create_pull_through_rule(&rule(r, "hub"), 2)
                .await
                .unwrap(),
            NewRule::Created
        );
        assert_eq!(
            meta.create_pull_through_rule(&rule(r, "hub"), 2)
                .await
                .unwrap(),
            NewRule::Exists
        );
        assert_eq!(
            meta.create_pull_through_rule(&rule(r, "quay"), 2)
                .await
                .unwrap(),
            NewRule::Created
        );
        assert_eq!(
            meta.create_pull_through_rule(&rule(r, "ghcr"), 2)
                .await
                .unwrap(),
            NewRule::Limit(2)
        );
        // Another registry has its own count.
        assert_eq!(
            meta.create_pull_through_rule(&rule("222222222222", "ghcr"), 2)
                .await
                .unwrap(),
            NewRule::Created
        );
        let all = meta.pull_through_rules(r, None, 10).await.unwrap();
        assert_eq!(
            all.iter().map(|x| x.prefix.as_str()).collect::<Vec<_>>(),
            ["hub", "quay"]
        );
        let page = meta.pull_through_rules(r, Some("hub"), 10).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0], all[1]);
        let arn = "arn:aws:secretsmanager:us-east-1:111111111111:secret:ecr-pullthroughcache/x";
        let up = meta
            .update_pull_through_rule(r, "hub", Some(arn), 5)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(up.credential_arn.as_deref(), Some(arn));
        assert_eq!(up.updated_at, 5);
        assert!(
            meta.update_pull_through_rule(r, "nope", None, 5)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            meta.delete_pull_through_rule(r, "hub")
                .await
                .unwrap()
                .unwrap()
                .prefix,
            "hub"
        );
        assert!(
            meta.delete_pull_through_rule(r, "hub")
                .await
                .unwrap()
                .is_none()
        );

        meta.put_pull_through_secret(r, "ecr-pullthroughcache/x", b"one", 1)
            .await
            .unwrap();
        meta.put_pull_through_secret(r, "ecr-pullthroughcache/x", b"two", 2)
            .await
            .unwrap();
        assert_eq!(
            meta.pull_through_secret(r, "ecr-pullthroughcache/x")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"two"[..])
        );
        assert!(
            meta.pull_through_secret("222222222222", "ecr-pullthroughcache/x")
                .await
                .unwrap()
                .is_none()
        );

        let repo = Repo {
            registry: r,
            name: "hub/library/alpine",
        };
        assert_eq!(
            meta.pull_through_tag_checked(repo, "3").await.unwrap(),
            None
        );
        meta.set_pull_through_tag_checked(repo, "3", 10)
            .await
            .unwrap();
        meta.set_pull_through_tag_checked(repo, "3", 20)
            .await
            .unwrap();
        assert_eq!(
            meta.pull_through_tag_checked(repo, "3").await.unwrap(),
            Some(20)
        );
    }

    /// Creations racing on several connections never pass the limit.
    async fn the_limit_holds_under_concurrent_creates(engine: Engine) {
        let f = Fixture::new(engine).await;
        let meta = f.open().await;
        let r = "333333333333";
        let mut tasks = Vec::new();
        for i in 0..12 {
            let meta = meta.clone();
            tasks.push(tokio::spawn(async move {
                meta.create_pull_through_rule(&rule(r, &format!("p{i:02}")), 5)
                    .await
                    .unwrap()
            }));
        }
        let mut created = 0;
        for t in tasks {
            if t.await.unwrap() == NewRule::Created {
                created += 1;
            }
        }
        assert_eq!(created, 5);
        assert_eq!(meta.pull_through_rules(r, None, 50).await.unwrap().len(), 5);
    }

    crate::metadata::testing::on_both_engines!(
        rules_secrets_and_tags,
        the_limit_holds_under_concurrent_creates
    );
}
