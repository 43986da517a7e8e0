//! What the web console keeps: IAM users' login profiles (the hash of a
//! console password, never the password), console sessions (by the SHA-256
//! of the cookie's token), and the listings only the console asks for (a
//! registry's repositories searched and sorted a page at a time, a
//! repository's storage by push day, one registry's replication backlog).
//! Nothing here is cached: every node sees every session.

use sqlx::Row;

use super::{MetadataStore, Repo, RepositoryRow, Result, now_millis};

/// A console session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// Hex SHA-256 of the cookie's token.
    pub token_hash: String,
    pub account_id: String,
    /// `""`: the account's root (signed in with its access key).
    pub user_name: String,
    /// The access key the session was opened with; `None` for a password.
    pub access_key_id: Option<String>,
    /// The id the session's calls are made as (an `ASIA…` id of its own
    /// for a password session, the access key's for a key session).
    pub session_key_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub source_ip: Option<String>,
}

/// The order of the console's repository list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoOrder {
    NameAsc,
    NameDesc,
    CreatedAsc,
    CreatedDesc,
}

/// Where a page of the repository list starts: after this row (exclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoCursor {
    pub created_at: i64,
    pub name: String,
}

/// `LIKE '%s%'` for `s`, its wildcards escaped (with `\`).
fn like_contains(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn session_row(r: &sqlx::any::AnyRow) -> Result<SessionRow> {
    Ok(SessionRow {
        token_hash: r.try_get(0)?,
        account_id: r.try_get(1)?,
        user_name: r.try_get(2)?,
        access_key_id: r.try_get(3)?,
        session_key_id: r.try_get(4)?,
        created_at: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        source_ip: r.try_get(7)?,
    })
}

const SESSION_COLUMNS: &str = "token_hash, account_id, user_name, access_key_id, \
     session_key_id, created_at, expires_at, source_ip";

impl MetadataStore {
    // ---- login profiles ---------------------------------------------------

    /// Store a user's password hash: `create` refuses (false) when the user
    /// has one already (CreateLoginProfile's EntityAlreadyExists), otherwise
    /// it is replaced (UpdateLoginProfile) and the user's password sessions
    /// end in the same transaction. False also when the user does not exist.
    pub async fn put_login_profile(
        &self,
        account_id: &str,
        user: &str,
        hash: &str,
        create: bool,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let user_exists = sqlx::query("SELECT 1 FROM users WHERE account_id = $1 AND name = $2")
            .bind(account_id)
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !user_exists {
            return Ok(false);
        }
        let now = now_millis();
        let sql = if create {
            "INSERT INTO login_profiles (account_id, user_name, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (account_id, user_name) DO NOTHING"
        } else {
            "UPDATE login_profiles SET password_hash = $3, updated_at = $4 \
             WHERE account_id = $1 AND user_name = $2"
        };
        let changed = sqlx::query(sql)
            .bind(account_id)
            .bind(user)
            .bind(hash)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        end_password_sessions(&mut tx, account_id, user).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A user's password hash, if it has a login profile.
    pub async fn login_profile(&self, account_id: &str, user: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT password_hash FROM login_profiles WHERE account_id = $1 AND user_name = $2",
        )
        .bind(account_id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Remove a user's login profile and end its password sessions. False
    /// when it had none.
    pub async fn delete_login_profile(&self, account_id: &str, user: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let gone =
            sqlx::query("DELETE FROM login_profiles WHERE account_id = $1 AND user_name = $2")
                .bind(account_id)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
        end_password_sessions(&mut tx, account_id, user).await?;
        tx.commit().await?;
        Ok(gone)
    }

    // ---- sessions ---------------------------------------------------------

    /// Store a new session, first removing every expired one (so the table
    /// holds only live sessions and what expired since the last sign-in).
    pub async fn create_session(&self, s: &SessionRow) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO console_sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )))
        .bind(&s.token_hash)
        .bind(&s.account_id)
        .bind(&s.user_name)
        .bind(&s.access_key_id)
        .bind(&s.session_key_id)
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(&s.source_ip)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live (unexpired) session whose token hashes to `token_hash`.
    pub async fn session(&self, token_hash: &str) -> Result<Option<SessionRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM console_sessions WHERE token_hash = $1 AND expires_at > $2"
        )))
        .bind(token_hash)
        .bind(now_millis())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_row).transpose()
    }

    /// End a session (sign-out). False when there was none.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        Ok(
            sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
                .bind(token_hash)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    // ---- listings ---------------------------------------------------------

    /// A page of `registry`'s repositories whose name contains `contains`
    /// (any when empty), in `order`, after `after` (exclusive): at most
    /// `limit` rows. Each page is one range of an index (name, or creation
    /// time then name), so a page costs its own size wherever it starts.
    pub async fn search_repositories(
        &self,
        registry: &str,
        contains: &str,
        order: RepoOrder,
        after: Option<&RepoCursor>,
        limit: i64,
    ) -> Result<Vec<RepositoryRow>> {
        // Placeholders are numbered as the clauses that need them are added.
        enum Arg {
            Text(String),
            Int(i64),
        }
        let mut args: Vec<Arg> = vec![Arg::Text(registry.into())];
        let next = |args: &mut Vec<Arg>, a: Arg| {
            args.push(a);
            format!("${}", args.len())
        };
        let mut clauses = String::new();
        if let Some(c) = after {
            let cmp = match order {
                RepoOrder::NameAsc | RepoOrder::CreatedAsc => ">",
                RepoOrder::NameDesc | RepoOrder::CreatedDesc => "<",
            };
            let name = next(&mut args, Arg::Text(c.name.clone()));
            match order {
                RepoOrder::NameAsc | RepoOrder::NameDesc => {
                    clauses.push_str(&format!(" AND name {cmp} {name}"))
                }
                RepoOrder::CreatedAsc | RepoOrder::CreatedDesc => {
                    let at = next(&mut args, Arg::Int(c.created_at));
                    clauses.push_str(&format!(" AND (created_at, name) {cmp} ({at}, {name})"))
                }
            }
        }
        if !contains.is_empty() {
            let p = next(&mut args, Arg::Text(like_contains(contains)));
            clauses.push_str(&format!(" AND name LIKE {p} ESCAPE '\\'"));
        }
        let order_by = match order {
            RepoOrder::NameAsc => "name",
            RepoOrder::NameDesc => "name DESC",
            RepoOrder::CreatedAsc => "created_at, name",
            RepoOrder::CreatedDesc => "created_at DESC, name DESC",
        };
        let lim = next(&mut args, Arg::Int(limit));
        let sql = format!(
            "SELECT {} FROM repositories WHERE registry_id = $1{clauses} ORDER BY {order_by} LIMIT {lim}",
            super::repositories::REPO_COLUMNS
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in args {
            q = match a {
                Arg::Text(t) => q.bind(t),
                Arg::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(super::repositories::repository_row)
            .collect()
    }

    /// The bytes of `repo`'s images by the day they were pushed (epoch day,
    /// total `image_size`), oldest first, for the last `days` days.
    pub async fn storage_by_day(&self, repo: Repo<'_>, days: i64) -> Result<Vec<(i64, i64)>> {
        // One day in milliseconds, written out: the same expression in the
        // select list and GROUP BY (PostgreSQL matches them as written).
        let since = now_millis() - days * 86_400_000;
        let rows = sqlx::query(
            "SELECT pushed_at / 86400000, CAST(SUM(image_size) AS BIGINT) FROM manifests \
             WHERE registry_id = $1 AND repository = $2 AND pushed_at >= $3 \
             GROUP BY pushed_at / 86400000 ORDER BY pushed_at / 86400000",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>(0)?,
                    r.try_get::<Option<i64>, _>(1)?.unwrap_or(0),
                ))
            })
            .collect()
    }

    /// The number of images of `repo` and their total size.
    pub async fn repository_usage(&self, repo: Repo<'_>) -> Result<(i64, i64)> {
        let r = sqlx::query(
            "SELECT COUNT(*), CAST(SUM(image_size) AS BIGINT) FROM manifests \
             WHERE registry_id = $1 AND repository = $2",
        )
        .bind(repo.registry)
        .bind(repo.name)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            r.try_get::<i64, _>(0)?,
            r.try_get::<Option<i64>, _>(1)?.unwrap_or(0),
        ))
    }
}

/// End `user`'s password sessions (its key sessions end with its keys).
async fn end_password_sessions(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    account_id: &str,
    user: &str,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM console_sessions WHERE account_id = $1 AND user_name = $2 \
         AND access_key_id IS NULL",
    )
    .bind(account_id)
    .bind(user)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::testing::{Engine, Fixture};

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_contains("app"), "%app%");
        assert_eq!(like_contains("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    /// The repository search: every order pages through exactly the
    /// matching names, a wildcard in the search is taken literally.
    async fn repository_search_pages_in_every_order(engine: Engine) {
        let fx = Fixture::new(engine).await;
        let s = fx.open().await;
        let names = ["app-a", "app_b", "tools", "team/app", "appx", "zeta"];
        for (i, n) in names.iter().enumerate() {
            let mut row = RepositoryRow::new("111111111111", n);
            row.created_at = 1000 + i as i64;
            s.create_repository(&row, &[]).await.unwrap();
        }
        let other = RepositoryRow::new("222222222222", "app-other");
        s.create_repository(&other, &[]).await.unwrap();
        for (order, search, want) in [
            (
                RepoOrder::NameAsc,
                "",
                vec!["app-a", "app_b", "appx", "team/app", "tools", "zeta"],
            ),
            (
                RepoOrder::NameDesc,
                "app",
                vec!["team/app", "appx", "app_b", "app-a"],
            ),
            (
                RepoOrder::CreatedAsc,
                "app",
                vec!["app-a", "app_b", "team/app", "appx"],
            ),
            (
                RepoOrder::CreatedDesc,
                "",
                vec!["zeta", "appx", "team/app", "tools", "app_b", "app-a"],
            ),
            (RepoOrder::NameAsc, "_", vec!["app_b"]),
            (RepoOrder::NameAsc, "%", vec![]),
        ] {
            for limit in [1, 2, 10] {
                let mut got: Vec<String> = Vec::new();
                let mut after: Option<RepoCursor> = None;
                loop {
                    let page = s
                        .search_repositories("111111111111", search, order, after.as_ref(), limit)
                        .await
                        .unwrap();
                    got.extend(page.iter().map(|r| r.name.clone()));
                    match page.last() {
                        Some(l) if page.len() as i64 == limit => {
                            after = Some(RepoCursor {
                                created_at: l.created_at,
                                name: l.name.clone(),
                            })
                        }
                        _ => break,
                    }
                }
                assert_eq!(got, want, "{order:?} {search:?} by {limit}");
            }
        }
    }

    /// A login profile replaced or deleted ends the user's password
    /// sessions, never its key sessions; expired sessions are not found.
    async fn login_profiles_and_sessions(engine: Engine) {
        let fx = Fixture::new(engine).await;
        let s = fx.open().await;
        s.create_account("111111111111", "t").await.unwrap();
        assert!(
            !s.put_login_profile("111111111111", "nobody", "h", true)
                .await
                .unwrap()
        );
        s.create_user("111111111111", "ana", "AIDA1").await.unwrap();
        assert!(
            s.put_login_profile("111111111111", "ana", "h1", true)
                .await
                .unwrap()
        );
        assert!(
            !s.put_login_profile("111111111111", "ana", "h2", true)
                .await
                .unwrap()
        );
        assert_eq!(
            s.login_profile("111111111111", "ana")
                .await
                .unwrap()
                .as_deref(),
            Some("h1")
        );
        assert_eq!(
            s.delete_user("111111111111", "ana").await.unwrap(),
            Some(false)
        );
        let now = now_millis();
        let session = |hash: &str, key: Option<&str>, expires_at: i64| SessionRow {
            token_hash: hash.into(),
            account_id: "111111111111".into(),
            user_name: "ana".into(),
            access_key_id: key.map(str::to_string),
            session_key_id: "ASIA1".into(),
            created_at: now,
            expires_at,
            source_ip: None,
        };
        s.create_session(&session("p", None, now + 60_000))
            .await
            .unwrap();
        s.create_session(&session("k", Some("AKIA1"), now + 60_000))
            .await
            .unwrap();
        s.create_session(&session("old", None, now - 1))
            .await
            .unwrap();
        assert!(s.session("p").await.unwrap().is_some());
        assert!(s.session("old").await.unwrap().is_none());
        assert!(
            s.put_login_profile("111111111111", "ana", "h2", false)
                .await
                .unwrap()
        );
        assert!(s.session("p").await.unwrap().is_none());
        assert!(s.session("k").await.unwrap().is_some());
        s.create_session(&session("p2", None, now + 60_000))
            .await
            .unwrap();
        assert!(s.delete_login_profile("111111111111", "ana").await.unwrap());
        assert!(!s.delete_login_profile("111111111111", "ana").await.unwrap());
        assert!(s.session("p2").await.unwrap().is_none());
        assert!(s.delete_session("k").await.unwrap());
        assert!(s.session("k").await.unwrap().is_none());
        // The expired row went with the next sign-in.
        s.create_session(&session("new", None, now + 60_000))
            .await
            .unwrap();
        assert!(!s.delete_session("old").await.unwrap());
    }

    crate::metadata::testing::on_both_engines!(
        repository_search_pages_in_every_order,
        login_profiles_and_sessions,
    );
}
