//! Web console sessions: signing in (an IAM user's password, or an access
//! key id and secret), the session a sign-in opens, and what it proves on
//! each later request.
//!
//! - A session is a random 256-bit token (the cookie); the store keeps only
//!   its SHA-256, so a copy of the database opens no session. Every node
//!   reads sessions from the store: none lives in process memory.
//! - A session lasts [`SESSION_LIFETIME_SECS`] (12 hours, as a registry
//!   token) and ends earlier on sign-out, when its access key is deleted or
//!   deactivated, when its user is deleted, or (password sessions) when the
//!   user's login profile is deleted or its password changed. Identities are
//!   re-read at most [`super::CACHE_TTL`] apart, as for API calls.
//! - Its CSRF token is an HMAC of the session's token, so it needs no
//!   storage and is known only to whoever holds the session.
//! - The caller a session stands for is a [`Caller`] as an access key's
//!   would be: the user (or root) and its identity policies; a password
//!   session carries an `ASIA…` credential id of its own.
//! - Failed sign-ins are counted per client address and per user (or key)
//!   in bounded per-node caches ([`SignInThrottle`]); past the limit, a
//!   sign-in is refused before any password is checked.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::cache::TtlCache;
use super::{Access, AuthError, Caller, passwords};
use crate::iam::{Policy, PolicyKind, Principal};
use crate::metadata::{MetaError, SessionRow, now_millis};

/// How long a console session lasts.
pub const SESSION_LIFETIME_SECS: i64 = 12 * 3600;
/// Failed sign-ins allowed per client address within [`THROTTLE_WINDOW`].
pub const MAX_FAILURES_PER_ADDRESS: u32 = 20;
/// Failed sign-ins allowed per user (or access key) within [`THROTTLE_WINDOW`].
pub const MAX_FAILURES_PER_USER: u32 = 5;
/// The window failed sign-ins are counted in.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Entries each throttle cache holds at most.
const THROTTLE_CAPACITY: usize = 10_000;

/// What a sign-in gives the console: the token for the cookie.
pub struct NewSession {
    pub token: String,
    pub expires_at: i64,
}

/// A live session: who it stands for.
pub struct Session {
    pub caller: Arc<Caller>,
    pub row: SessionRow,
}

/// Why a sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Wrong account, user, password, key or secret: never which.
    #[error("The credentials are incorrect")]
    Refused,
    /// Too many failures lately from this address or for this user.
    #[error("Too many failed sign-ins; try again in {0} seconds")]
    Throttled(u64),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// Failed sign-in counts: by client address (an IPv6 client by its /64) and
/// by user or access key, each in a [`TtlCache`] bounded in size, a count
/// living [`THROTTLE_WINDOW`] from its first failure.
pub struct SignInThrottle {
    by_address: TtlCache<u32>,
    by_user: TtlCache<u32>,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        SignInThrottle {
            by_address: TtlCache::new(THROTTLE_CAPACITY, THROTTLE_WINDOW),
            by_user: TtlCache::new(THROTTLE_CAPACITY, THROTTLE_WINDOW),
        }
    }
}

impl SignInThrottle {
    /// Refuse (with the seconds until the window ends) when `ip` or `user`
    /// has used up its failures.
    fn check(&self, ip: Option<IpAddr>, user: &str) -> Result<(), SignInError> {
        let over = |cache: &TtlCache<u32>, key: &str, max: u32| {
            cache
                .get(key)
                .filter(|(n, _)| *n >= max)
                .map(|(_, at)| THROTTLE_WINDOW.saturating_sub(at.elapsed()).as_secs() + 1)
        };
        let ip_key = ip.map(|ip| crate::http::client_addr::limit_key(ip).to_string());
        let wait = ip_key
            .as_deref()
            .and_then(|k| over(&self.by_address, k, MAX_FAILURES_PER_ADDRESS))
            .or_else(|| over(&self.by_user, user, MAX_FAILURES_PER_USER));
        match wait {
            Some(secs) => Err(SignInError::Throttled(secs)),
            None => Ok(()),
        }
    }

    /// Count a failure against `ip`, and against `user` when it names one
    /// that exists (so made-up names cannot crowd real ones out).
    fn failed(&self, ip: Option<IpAddr>, user: Option<&str>) {
        let bump = |cache: &TtlCache<u32>, key: String| {
            let (n, at) = cache.get(&key).unwrap_or((0, Instant::now()));
            cache.insert_at(key, n.saturating_add(1), at);
        };
        if let Some(ip) = ip {
            bump(
                &self.by_address,
                crate::http::client_addr::limit_key(ip).to_string(),
            );
        }
        if let Some(u) = user {
            bump(&self.by_user, u.to_string());
        }
    }

    fn succeeded(&self, user: &str) {
        self.by_user.remove(user);
    }
}

/// The hex SHA-256 of a session token: the session's key in the store.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The CSRF token of the session whose cookie holds `token`.
pub fn csrf_token(token: &str) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(b"berth-console-csrf");
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Whether `given` is the CSRF token of the session `token` (constant time).
pub fn csrf_ok(token: &str, given: &str) -> bool {
    let want = csrf_token(token);
    want.as_bytes().ct_eq(given.as_bytes()).into()
}

/// A fresh random token (256 bits, base64url).
fn new_token() -> String {
    let mut b = [0u8; 32];
    crate::secrets::random_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A session's own credential id: `ASIA` + 16 base32 characters, as AWS's
/// temporary credentials look (never a key that SigV4 accepts).
fn session_key_id() -> String {
    let (id, _) = super::new_access_key();
    format!("ASIA{}", &id[4..])
}

/// The throttle's key of a user (or, for a key sign-in, of the key).
fn user_key(account: &str, user: &str) -> String {
    format!("user:{account}/{user}")
}

impl Access {
    /// Sign in as IAM user `user` of `account` with its console password.
    pub async fn sign_in_password(
        &self,
        account: &str,
        user: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<NewSession, SignInError> {
        let key = user_key(account, user);
        self.sign_in_throttle.check(ip, &key)?;
        let stored = self.meta.login_profile(account, user).await?;
        let password = password.to_string();
        let ok = {
            let stored = stored.clone();
            tokio::task::spawn_blocking(move || match stored {
                Some(h) => passwords::verify(&password, &h),
                None => {
                    passwords::verify_nothing(&password);
                    false
                }
            })
            .await
            .unwrap_or(false)
        };
        if !ok {
            self.sign_in_throttle
                .failed(ip, stored.is_some().then_some(key.as_str()));
            return Err(SignInError::Refused);
        }
        self.sign_in_throttle.succeeded(&key);
        self.open_session(account, user, None, ip).await
    }

    /// Sign in with an access key id and its secret (an IAM user's key or
    /// an account's root key); the key must be active.
    pub async fn sign_in_key(
        &self,
        access_key_id: &str,
        secret: &str,
        ip: Option<IpAddr>,
    ) -> Result<NewSession, SignInError> {
        let key = format!("key:{access_key_id}");
        self.sign_in_throttle.check(ip, &key)?;
        let found = if crate::sigv4::is_access_key_id(access_key_id) {
            match self.key(access_key_id).await {
                Ok(found) => Some(found),
                Err(AuthError::Meta(m)) => return Err(m.into()),
                Err(_) => None,
            }
        } else {
            None
        };
        let Some((caller, stored_secret)) = found else {
            self.sign_in_throttle.failed(ip, None);
            return Err(SignInError::Refused);
        };
        if !bool::from(stored_secret.as_bytes().ct_eq(secret.as_bytes())) {
            self.sign_in_throttle.failed(ip, Some(&key));
            return Err(SignInError::Refused);
        }
        self.sign_in_throttle.succeeded(&key);
        let user = caller.principal.username.clone().unwrap_or_default();
        self.open_session(&caller.principal.account, &user, Some(access_key_id), ip)
            .await
    }

    async fn open_session(
        &self,
        account: &str,
        user: &str,
        access_key_id: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<NewSession, SignInError> {
        let token = new_token();
        let now = now_millis();
        let expires_at = now + SESSION_LIFETIME_SECS * 1000;
        self.meta
            .create_session(&SessionRow {
                token_hash: token_hash(&token),
                account_id: account.to_string(),
                user_name: user.to_string(),
                access_key_id: access_key_id.map(str::to_string),
                session_key_id: match access_key_id {
                    Some(k) => k.to_string(),
                    None => session_key_id(),
                },
                created_at: now,
                expires_at,
                source_ip: ip.map(|i| i.to_string()),
            })
            .await?;
        Ok(NewSession { token, expires_at })
    }

    /// The live session the cookie's `token` opens, with the caller it
    /// stands for as of now: `None` when there is none, it expired, or its
    /// key or user is gone or inactive.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, MetaError> {
        if token.is_empty() || token.len() > 128 {
            return Ok(None);
        }
        let Some(row) = self.meta.session(&token_hash(token)).await? else {
            return Ok(None);
        };
        let caller = match &row.access_key_id {
            Some(key) => match self.key(key).await {
                Ok((caller, _)) => caller,
                Err(AuthError::Meta(m)) => return Err(m),
                Err(_) => return Ok(None),
            },
            None => match self.user_caller(&row.account_id, &row.user_name).await? {
                Some(base) => {
                    let mut c = (*base).clone();
                    c.access_key_id = row.session_key_id.clone();
                    Arc::new(c)
                }
                None => return Ok(None),
            },
        };
        Ok(Some(Session { caller, row }))
    }

    /// End the session of `token` (sign-out).
    pub async fn sign_out(&self, token: &str) -> Result<(), MetaError> {
        self.meta.delete_session(&token_hash(token)).await?;
        Ok(())
    }

    /// IAM user `user` of `account` as a caller (its identity policies), as
    /// last read (cached for [`super::CACHE_TTL`]); `None` when it no longer
    /// exists or has no login profile.
    async fn user_caller(
        &self,
        account: &str,
        user: &str,
    ) -> Result<Option<Arc<Caller>>, MetaError> {
        let cache_key = format!("{account}/{user}");
        if let Some((c, _)) = self.users.get(&cache_key) {
            return Ok(c);
        }
        let loaded = self.load_user_caller(account, user).await?;
        self.users.insert(cache_key, loaded.clone());
        Ok(loaded)
    }

    async fn load_user_caller(
        &self,
        account: &str,
        user: &str,
    ) -> Result<Option<Arc<Caller>>, MetaError> {
        let Some(row) = self.meta.get_user(account, user).await? else {
            return Ok(None);
        };
        if self.meta.login_profile(account, user).await?.is_none() {
            return Ok(None);
        }
        let mut identity_policies = Vec::new();
        for (name, doc) in self.meta.user_policies(account, user).await? {
            match Policy::parse(&doc, PolicyKind::Identity) {
                Ok(p) => identity_policies.push(p),
                Err(e) => {
                    tracing::warn!(policy = %name, error = %e, "ignoring an unparsable identity policy")
                }
            }
        }
        Ok(Some(Arc::new(Caller {
            principal: Principal {
                arn: format!("arn:aws:iam::{account}:user/{user}"),
                account: account.to_string(),
                user_id: row.user_id,
                username: Some(user.to_string()),
            },
            access_key_id: String::new(),
            is_root: false,
            identity_policies,
            loaded_at: Instant::now(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::testing::{Engine, Fixture};
    use crate::secrets::MasterKey;

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        let t = csrf_token(&a);
        assert!(csrf_ok(&a, &t));
        assert!(!csrf_ok(&b, &t));
        assert!(!csrf_ok(&a, ""));
        assert!(!csrf_ok(&a, &t[..t.len() - 1]));
        // Not the session token, nor its stored hash.
        assert_ne!(t, a);
        assert_ne!(t, token_hash(&a));
    }

    #[test]
    fn the_throttle_counts_per_address_and_per_user() {
        let t = SignInThrottle::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..MAX_FAILURES_PER_USER {
            assert!(t.check(Some(ip), "user:1/a").is_ok());
            t.failed(Some(ip), Some("user:1/a"));
        }
        assert!(matches!(
            t.check(Some(ip), "user:1/a"),
            Err(SignInError::Throttled(s)) if s > 0 && s <= THROTTLE_WINDOW.as_secs() + 1
        ));
        // Another user from the same address is not yet throttled.
        assert!(t.check(Some(ip), "user:1/b").is_ok());
        // Failures with no user (unknown names) count against the address only.
        for _ in MAX_FAILURES_PER_USER..MAX_FAILURES_PER_ADDRESS {
            t.failed(Some(ip), None);
        }
        assert!(t.check(Some(ip), "user:1/b").is_err());
        // One IPv6 host is its /64.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..MAX_FAILURES_PER_ADDRESS {
            t.failed(Some(a), None);
        }
        assert!(t.check(Some(b), "user:1/c").is_err());
        // A success clears the user's count.
        t.succeeded("user:1/a");
        assert!(
            t.check(Some("198.51.100.1".parse().unwrap()), "user:1/a")
                .is_ok()
        );
    }

    #[tokio::test]
    async fn sessions_open_prove_and_end() {
        let fx = Fixture::new(Engine::Sqlite).await;
        let meta = fx.open().await;
        let access = Access::open(meta.clone(), MasterKey::from_bytes(&[3; 32]), "us-east-1")
            .await
            .unwrap();
        meta.create_account("111111111111", "t").await.unwrap();
        meta.create_user("111111111111", "ana", "AIDAANA")
            .await
            .unwrap();
        let ip = Some("192.0.2.1".parse().unwrap());
        // No login profile yet: refused.
        assert!(matches!(
            access
                .sign_in_password("111111111111", "ana", "password-1", ip)
                .await,
            Err(SignInError::Refused)
        ));
        let h = passwords::hash("password-1");
        assert!(
            meta.put_login_profile("111111111111", "ana", &h, true)
                .await
                .unwrap()
        );
        assert!(
            !meta
                .put_login_profile("111111111111", "ana", &h, true)
                .await
                .unwrap()
        );
        assert!(matches!(
            access
                .sign_in_password("111111111111", "ana", "password-2", ip)
                .await,
            Err(SignInError::Refused)
        ));
        let s = access
            .sign_in_password("111111111111", "ana", "password-1", ip)
            .await
            .unwrap();
        let live = access.session(&s.token).await.unwrap().expect("live");
        assert_eq!(
            live.caller.principal.arn,
            "arn:aws:iam::111111111111:user/ana"
        );
        assert!(live.caller.access_key_id.starts_with("ASIA"));
        assert!(!live.caller.is_root);
        // A token that is not a session's, or its hash, opens nothing.
        assert!(access.session(&new_token()).await.unwrap().is_none());
        assert!(
            access
                .session(&token_hash(&s.token))
                .await
                .unwrap()
                .is_none()
        );
        // A new password ends password sessions (the store is read past the cache).
        let h2 = passwords::hash("password-3");
        assert!(
            meta.put_login_profile("111111111111", "ana", &h2, false)
                .await
                .unwrap()
        );
        assert!(access.session(&s.token).await.unwrap().is_none());
        // Sign-out ends a session.
        let s = access
            .sign_in_password("111111111111", "ana", "password-3", ip)
            .await
            .unwrap();
        assert!(access.session(&s.token).await.unwrap().is_some());
        access.sign_out(&s.token).await.unwrap();
        assert!(access.session(&s.token).await.unwrap().is_none());
        // An access key session ends when its key is deactivated.
        access
            .create_key("111111111111", "", "AKIAROOTKEY000000001", "root-secret")
            .await
            .unwrap();
        assert!(matches!(
            access
                .sign_in_key("AKIAROOTKEY000000001", "wrong", ip)
                .await,
            Err(SignInError::Refused)
        ));
        let s = access
            .sign_in_key("AKIAROOTKEY000000001", "root-secret", ip)
            .await
            .unwrap();
        let live = access.session(&s.token).await.unwrap().expect("live");
        assert!(live.caller.is_root);
        assert_eq!(live.caller.access_key_id, "AKIAROOTKEY000000001");
        meta.set_access_key_active("AKIAROOTKEY000000001", false)
            .await
            .unwrap();
        access.invalidate();
        assert!(access.session(&s.token).await.unwrap().is_none());
    }
}
