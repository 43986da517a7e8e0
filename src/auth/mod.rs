//! Authentication and authorization: who is calling, and may they do this.
//!
//! - [`Access::begin_sigv4`] / [`Access::finish_sigv4`] verify AWS Signature V4
//!   (the algorithm is `crate::sigv4`) on ECR API requests;
//! - [`tokens`] issues and verifies the registry tokens of `GetAuthorizationToken`
//!   (the `/v2/` Basic-auth password of user `AWS`);
//! - stored secrets are sealed with the master key ([`crate::secrets`]);
//! - [`passwords`] and [`sessions`]: console passwords (login profiles) and
//!   the web console's sessions, each standing for a [`Caller`];
//! - [`Access`] ties them to the metadata store: it resolves an access key or a
//!   token to a [`Caller`] (account, user, identity policies) and decides each
//!   request with the one IAM evaluator (`crate::iam`), for the ECR API and
//!   `/v2/` alike.
//!
//! Lookups of keys and policies are cached per node for a few seconds
//! ([`CACHE_TTL`]); a node that changes a policy drops its own cache entry at
//! once, other nodes see the change within the TTL.

pub mod cache;
pub mod passwords;
pub mod sessions;

use crate::sigv4;
pub mod tokens;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::iam::{self, Decision, Policy, PolicyKind, Principal, RequestContext};
use crate::metadata::{AccessKeyRow, MetaError, MetadataStore, Repo, now_millis};
use crate::secrets::{MasterKey, random_bytes};
use cache::TtlCache;
use tokens::{DownloadGrant, TOKEN_LIFETIME_SECS, TokenClaims, TokenError, TokenSigner};

/// How long a node trusts its cached view of a key or a policy.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Most entries each per-node cache holds (keys, policies, decisions).
pub const CACHE_CAPACITY: usize = 20_000;

/// Actions the root of the account that owns a repository (or registry) may
/// always perform on its policy, even when that policy denies it: AWS's rule
/// for bucket policies (the root can always Get/Put/DeleteBucketPolicy), so a
/// policy that denies everyone cannot lock the owner out for good.
const ROOT_POLICY_ACTIONS: &[&str] = &[
    "ecr:GetRepositoryPolicy",
    "ecr:SetRepositoryPolicy",
    "ecr:DeleteRepositoryPolicy",
    "ecr:GetRegistryPolicy",
    "ecr:PutRegistryPolicy",
    "ecr:DeleteRegistryPolicy",
];

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub access_key_id: String,
    /// True for the account's root key (implicitly allowed everything in its account).
    pub is_root: bool,
    pub identity_policies: Vec<Policy>,
    /// When this view of the key and its policies was read from the store.
    pub loaded_at: Instant,
}

impl Caller {
    /// Who this caller is, as an audit event's `userIdentity` says it.
    pub fn audit_identity(&self) -> crate::audit::Identity {
        use crate::audit::{Identity, IdentityKind};
        let p = &self.principal;
        Identity {
            kind: match self.is_root {
                true => IdentityKind::Root,
                false => IdentityKind::IamUser,
            },
            principal_id: p.user_id.clone(),
            arn: Some(p.arn.clone()),
            account_id: p.account.clone(),
            access_key_id: Some(self.access_key_id.clone()).filter(|k| !k.is_empty()),
            user_name: match self.is_root {
                true => None,
                false => p.username.clone(),
            },
            invoked_by: None,
        }
    }
}

/// Why a request is not authenticated; each maps to an AWS error name.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    SigV4(#[from] sigv4::SigV4Error),
    /// A download URL used for anything but the one blob GET it grants.
    #[error("the download URL does not grant this request")]
    WrongGrant,
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("the access key is not active")]
    KeyInactive,
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// Credentials created at bootstrap, printed once.
pub struct BootstrapReport {
    pub account_id: String,
    pub access_key_id: String,
    /// `None` when the secret came from the environment (not echoed).
    pub secret_access_key: Option<String>,
}

/// A resource policy as last read (`None`: the resource has none).
type CachedPolicy = Option<Arc<Policy>>;

/// An access key as last read: the caller it stands for and its secret, or
/// `None` for a key id that does not exist.
type CachedKey = Option<(Arc<Caller>, Arc<str>, bool)>;

/// The query parameter of the presigned blob URLs GetDownloadUrlForLayer hands out.
pub const DOWNLOAD_GRANT_PARAM: &str = "X-Berth-Grant";

pub struct Access {
    meta: MetadataStore,
    master: MasterKey,
    tokens: TokenSigner,
    /// The home region (of the KMS, CloudFormation, SSM and STS faces too).
    pub region: String,
    /// Every region the ECR API and `/v2/` serve, the home region first.
    pub regions: Vec<String>,
    keys: TtlCache<CachedKey>,
    policies: TtlCache<CachedPolicy>,
    /// Recent decisions by (key, action, registry, repository, source address).
    decisions: TtlCache<bool>,
    /// IAM users of console password sessions, as last read.
    users: TtlCache<Option<Arc<Caller>>>,
    /// Failed console sign-ins, per client address and per user.
    sign_in_throttle: sessions::SignInThrottle,
}

/// A SigV4 request whose envelope (scope, clock, signed headers) checked out
/// and whose access key exists and is active: all that can be known before
/// the body is read. [`Access::finish_sigv4`] checks the signature itself.
pub struct PendingSigV4 {
    parsed: sigv4::ParsedAuthorization,
    caller: Arc<Caller>,
    secret: Arc<str>,
}

impl PendingSigV4 {
    /// The access key the request claims (not yet proven).
    pub fn access_key_id(&self) -> &str {
        &self.parsed.credential.access_key_id
    }

    /// The region the request is signed for (checked: one this deployment serves).
    pub fn region(&self) -> &str {
        &self.parsed.credential.region
    }
}

const TOKEN_KEY_SETTING: &str = "registry_token_key";

/// A random 12-digit account id.
pub fn new_account_id() -> String {
    let mut b = [0u8; 8];
    random_bytes(&mut b);
    format!("{:012}", u64::from_le_bytes(b) % 1_000_000_000_000)
}

/// A new access key id (`AKIA` + 16 upper-case base32 characters) and secret (40 characters).
pub fn new_access_key() -> (String, String) {
    const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut r = [0u8; 56];
    random_bytes(&mut r);
    let id: String = r[..16]
        .iter()
        .map(|b| B32[(b % 32) as usize] as char)
        .collect();
    let secret: String = r[16..]
        .iter()
        .map(|b| B64[(b % 64) as usize] as char)
        .collect();
    (format!("AKIA{id}"), secret)
}

fn now_secs() -> i64 {
    now_millis() / 1000
}

impl Access {
    /// Set up authentication over `meta`, creating the token-signing key on first use.
    pub async fn open(
        meta: MetadataStore,
        master: MasterKey,
        region: &str,
    ) -> anyhow::Result<Access> {
        let mut fresh = [0u8; 32];
        random_bytes(&mut fresh);
        let sealed = meta
            .init_setting(TOKEN_KEY_SETTING, &master.seal(&fresh, TOKEN_KEY_SETTING))
            .await?;
        let key = master.unseal(&sealed, TOKEN_KEY_SETTING).map_err(|_| {
            anyhow::anyhow!(
                "cannot unseal the stored token key: the master key differs from the one this data was created with"
            )
        })?;
        Ok(Access {
            meta,
            master,
            tokens: TokenSigner::new(&key),
            region: region.to_string(),
            regions: vec![region.to_string()],
            keys: TtlCache::new(CACHE_CAPACITY, CACHE_TTL),
            policies: TtlCache::new(CACHE_CAPACITY, CACHE_TTL),
            decisions: TtlCache::new(CACHE_CAPACITY, CACHE_TTL),
            users: TtlCache::new(CACHE_CAPACITY, CACHE_TTL),
            sign_in_throttle: sessions::SignInThrottle::default(),
        })
    }

    /// Serve these regions besides the home region (the ECR API and `/v2/`).
    pub fn serve_regions(&mut self, regions: &[String]) {
        for r in regions {
            if !self.regions.contains(r) {
                self.regions.push(r.clone());
            }
        }
    }

    /// Whether the ECR API and `/v2/` serve `region`.
    pub fn serves(&self, region: &str) -> bool {
        self.regions.iter().any(|r| r == region)
    }

    /// The store's key of `account`'s registry in `region`.
    pub fn registry_key(&self, account: &str, region: &str) -> String {
        crate::reference::registry_key(account, region, &self.region)
    }

    /// On an empty store, create the primary account and its administrator
    /// (root) key, from the given values or generated ones.
    pub async fn bootstrap(
        &self,
        account_id: Option<&str>,
        key: Option<(&str, &str)>,
    ) -> anyhow::Result<Option<BootstrapReport>> {
        if !self.meta.list_accounts().await?.is_empty() {
            return Ok(None);
        }
        let account = match account_id {
            Some(a) if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) => a.to_string(),
            Some(a) => anyhow::bail!("BERTH_ACCOUNT_ID must be 12 digits, not {a:?}"),
            None => new_account_id(),
        };
        let (id, secret, echo) = match key {
            Some((id, _)) if !sigv4::is_access_key_id(id) => anyhow::bail!(
                "BERTH_ROOT_ACCESS_KEY_ID must be 16 to 128 upper-case letters and digits, like AKIAIOSFODNN7EXAMPLE"
            ),
            Some((id, secret)) => (id.to_string(), secret.to_string(), false),
            None => {
                let (id, secret) = new_access_key();
                (id, secret, true)
            }
        };
        // Nodes starting together on an empty store: one of them creates the
        // account and its key, the others find it done.
        let row = AccessKeyRow {
            access_key_id: id.clone(),
            account_id: account.clone(),
            user_name: String::new(),
            secret_sealed: self.master.seal(secret.as_bytes(), &id),
            active: true,
            created_at: now_millis(),
        };
        if !self
            .meta
            .bootstrap_primary(&account, "primary", &row)
            .await?
        {
            return Ok(None);
        }
        Ok(Some(BootstrapReport {
            account_id: account,
            access_key_id: id,
            secret_access_key: echo.then_some(secret),
        }))
    }

    /// The primary account: the first one created.
    pub async fn primary_account(&self) -> anyhow::Result<String> {
        self.meta
            .primary_account()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no account exists; bootstrap has not run"))
    }

    /// Store an access key for `user` (`""` = the account's root).
    pub async fn create_key(
        &self,
        account: &str,
        user: &str,
        id: &str,
        secret: &str,
    ) -> Result<(), MetaError> {
        self.meta
            .create_access_key(&AccessKeyRow {
                access_key_id: id.to_string(),
                account_id: account.to_string(),
                user_name: user.to_string(),
                secret_sealed: self.master.seal(secret.as_bytes(), id),
                active: true,
                created_at: now_millis(),
            })
            .await
    }

    /// The caller an access key stands for, and its secret (cached briefly,
    /// unknown key ids included, so probing random ids costs one query each
    /// per TTL at most).
    async fn key(&self, access_key_id: &str) -> Result<(Arc<Caller>, Arc<str>), AuthError> {
        let cached = match self.keys.get(access_key_id) {
            Some((c, _)) => c,
            None => {
                let loaded = self.load_key(access_key_id).await?;
                self.keys.insert(access_key_id.to_string(), loaded.clone());
                loaded
            }
        };
        match cached {
            None => Err(AuthError::SigV4(sigv4::SigV4Error::unknown_key())),
            Some((_, _, false)) => Err(AuthError::KeyInactive),
            Some((caller, secret, true)) => Ok((caller, secret)),
        }
    }

    async fn load_key(&self, access_key_id: &str) -> Result<CachedKey, AuthError> {
        let Some(row) = self.meta.get_access_key(access_key_id).await? else {
            return Ok(None);
        };
        let secret = self
            .master
            .unseal(&row.secret_sealed, &row.access_key_id)
            .map_err(|_| MetaError::Corrupt("an access key secret cannot be unsealed".into()))?;
        let secret = String::from_utf8(secret)
            .map_err(|_| MetaError::Corrupt("an access key secret is not UTF-8".into()))?;
        let is_root = row.user_name.is_empty();
        let (arn, user_id, username) = if is_root {
            (
                format!("arn:aws:iam::{}:root", row.account_id),
                row.account_id.clone(),
                None,
            )
        } else {
            let user = self.meta.get_user(&row.account_id, &row.user_name).await?;
            let user_id = user.map(|u| u.user_id).unwrap_or_default();
            (
                format!("arn:aws:iam::{}:user/{}", row.account_id, row.user_name),
                user_id,
                Some(row.user_name.clone()),
            )
        };
        let mut identity_policies = Vec::new();
        if !is_root {
            for (name, doc) in self
                .meta
                .user_policies(&row.account_id, &row.user_name)
                .await?
            {
                match Policy::parse(&doc, PolicyKind::Identity) {
                    Ok(p) => identity_policies.push(p),
                    Err(e) => {
                        tracing::warn!(policy = %name, error = %e, "ignoring an unparsable identity policy")
                    }
                }
            }
        }
        let caller = Arc::new(Caller {
            principal: Principal {
                arn,
                account: row.account_id.clone(),
                user_id,
                username,
            },
            access_key_id: row.access_key_id.clone(),
            is_root,
            identity_policies,
            loaded_at: Instant::now(),
        });
        Ok(Some((caller, Arc::from(secret), row.active)))
    }

    /// Forget cached identities (after a key or policy change on this node).
    pub fn invalidate(&self) {
        self.keys.clear();
        self.users.clear();
        self.policies.clear();
        self.decisions.clear();
    }

    /// Authenticate a SigV4-signed request whose body is already read.
    pub async fn authenticate_sigv4(
        &self,
        method: &str,
        uri: &axum::http::Uri,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<Arc<Caller>, AuthError> {
        let pending = self.begin_sigv4(headers).await?;
        self.finish_sigv4(pending, method, uri, headers, body)
    }

    /// Everything that can be checked before the body is read: the
    /// `Authorization` header is well-formed, its scope and clock are right,
    /// `host` and every `x-amz-*` header are signed, and the access key
    /// exists and is active.
    pub async fn begin_sigv4(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<PendingSigV4, AuthError> {
        self.begin_sigv4_for(headers, "ecr").await
    }

    /// [`Access::begin_sigv4`] for requests signed for another service
    /// (`kms` for the KMS API on the same endpoint).
    pub async fn begin_sigv4_for(
        &self,
        headers: &axum::http::HeaderMap,
        service: &str,
    ) -> Result<PendingSigV4, AuthError> {
        let parsed = sigv4::parse(headers)?;
        // The ECR API and CloudTrail (each region's event history) answer
        // in every region served; the other services in the home region.
        let regional = matches!(service, "ecr" | "cloudtrail");
        let region = match regional && self.serves(&parsed.credential.region) {
            true => parsed.credential.region.as_str(),
            false => self.region.as_str(),
        };
        sigv4::check_envelope(&parsed, headers, region, service, now_secs())?;
        let (caller, secret) = self.key(&parsed.credential.access_key_id).await?;
        Ok(PendingSigV4 {
            parsed,
            caller,
            secret,
        })
    }

    /// Check the signature of a request begun with [`Access::begin_sigv4`].
    pub fn finish_sigv4(
        &self,
        pending: PendingSigV4,
        method: &str,
        uri: &axum::http::Uri,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<Arc<Caller>, AuthError> {
        sigv4::verify_signature(method, uri, headers, body, &pending.parsed, &pending.secret)?;
        Ok(pending.caller)
    }

    /// A registry token for `caller`, and its expiry (epoch seconds).
    pub fn issue_token(&self, caller: &Caller) -> (String, i64) {
        self.issue_token_for(caller, TOKEN_LIFETIME_SECS)
    }

    /// A token that lives `lifetime_secs`.
    pub fn issue_token_for(&self, caller: &Caller, lifetime_secs: i64) -> (String, i64) {
        let now = now_secs();
        let claims = TokenClaims {
            k: caller.access_key_id.clone(),
            a: caller.principal.account.clone(),
            i: now,
            e: now + lifetime_secs,
        };
        (self.tokens.issue(&claims), claims.e)
    }

    /// Authenticate `/v2/` Basic credentials (`AWS:<token>`).
    pub async fn authenticate_token(&self, password: &str) -> Result<Arc<Caller>, AuthError> {
        let claims = self.tokens.verify(password, now_secs())?;
        let (caller, _) = self.key(&claims.k).await?;
        Ok(caller)
    }

    /// A download URL's token: it lets its holder GET blob `digest` of
    /// repository `name` in `registry`, and nothing else, for `lifetime_secs`.
    pub fn issue_download_grant(
        &self,
        caller: &Caller,
        registry: &str,
        name: &str,
        digest: &str,
        lifetime_secs: i64,
    ) -> String {
        self.tokens.issue_grant(&DownloadGrant {
            k: caller.access_key_id.clone(),
            r: registry.to_string(),
            n: name.to_string(),
            d: digest.to_string(),
            e: now_secs() + lifetime_secs,
        })
    }

    /// The caller behind a download grant, if it grants exactly this blob GET.
    /// Its access key must still be active.
    pub async fn authenticate_download(
        &self,
        token: &str,
        registry: &str,
        name: &str,
        digest: &str,
    ) -> Result<Arc<Caller>, AuthError> {
        let g = self.tokens.verify_grant(token, now_secs())?;
        if g.r != registry || g.n != name || g.d != digest {
            return Err(AuthError::WrongGrant);
        }
        let (caller, _) = self.key(&g.k).await?;
        Ok(caller)
    }

    /// An opaque, tamper-proof pagination token: `cursor` sealed under the
    /// master key and bound to `scope` (the operation, the registry and the
    /// caller's account), so a client can neither read the key it encodes
    /// nor forge one that starts anywhere else.
    pub fn seal_page_token(&self, scope: &str, cursor: &str) -> String {
        URL_SAFE_NO_PAD.encode(
            self.master
                .seal(cursor.as_bytes(), &format!("page-token\n{scope}")),
        )
    }

    /// The cursor of a token made by [`Access::seal_page_token`] for `scope`.
    pub fn open_page_token(&self, scope: &str, token: &str) -> Option<String> {
        let sealed = URL_SAFE_NO_PAD.decode(token).ok()?;
        let plain = self
            .master
            .unseal(&sealed, &format!("page-token\n{scope}"))
            .ok()?;
        String::from_utf8(plain).ok()
    }

    async fn policy(
        &self,
        cache_key: String,
        load: impl AsyncFnOnce() -> Result<Option<String>, MetaError>,
    ) -> Result<(Option<Arc<Policy>>, Instant), MetaError> {
        if let Some((p, at)) = self.policies.get(&cache_key) {
            return Ok((p, at));
        }
        let text = load().await?;
        let policy = text.and_then(|t| match Policy::parse(&t, PolicyKind::Resource) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unparsable resource policy");
                None
            }
        });
        let now = Instant::now();
        self.policies.insert_at(cache_key, policy.clone(), now);
        Ok((policy, now))
    }

    /// Decide whether `caller` may perform `action` (`ecr:Name`) on the
    /// repository `repo` of `registry` (or on the registry itself when `repo`
    /// is `None`).
    pub async fn authorize(
        &self,
        caller: &Caller,
        action: &str,
        registry: &str,
        repo: Option<&str>,
        source_ip: Option<IpAddr>,
    ) -> Result<bool, MetaError> {
        // Decisions are cached like the policies they come from (CACHE_TTL), so
        // the hot path of a pull is one map lookup.
        let decision_key = format!(
            "{}|{action}|{registry}|{}|{}",
            caller.access_key_id,
            repo.unwrap_or(""),
            source_ip.map(|ip| ip.to_string()).unwrap_or_default()
        );
        if let Some((allowed, _)) = self.decisions.get(&decision_key) {
            return Ok(allowed);
        }
        let (allowed, as_of) = self
            .decide(caller, action, registry, repo, source_ip)
            .await?;
        self.decisions.insert_at(decision_key, allowed, as_of);
        Ok(allowed)
    }

    async fn decide(
        &self,
        caller: &Caller,
        action: &str,
        registry: &str,
        repo: Option<&str>,
        source_ip: Option<IpAddr>,
    ) -> Result<(bool, Instant), MetaError> {
        let (region, account) = (
            crate::reference::key_region(registry, &self.region),
            crate::reference::key_account(registry),
        );
        let resource = match repo {
            Some(name) => repository_arn(region, account, name),
            None if action == "ecr:GetAuthorizationToken" => "*".to_string(),
            None => format!("arn:aws:ecr:{region}:{account}:*"),
        };
        // The decision is as old as the oldest view it rests on.
        let mut oldest = caller.loaded_at;
        let mut resource_policies = Vec::new();
        if let Some(name) = repo {
            let meta = self.meta.clone();
            let (r, n) = (registry.to_string(), name.to_string());
            let (p, at) = self
                .policy(format!("repo/{registry}/{name}"), async move || {
                    Ok(meta
                        .get_repository(Repo {
                            registry: &r,
                            name: &n,
                        })
                        .await?
                        .and_then(|row| row.policy))
                })
                .await?;
            oldest = oldest.min(at);
            resource_policies.extend(p);
        }
        let meta = self.meta.clone();
        let r = registry.to_string();
        let (p, at) = self
            .policy(format!("registry/{registry}"), async move || {
                meta.registry_policy(&r).await
            })
            .await?;
        oldest = oldest.min(at);
        resource_policies.extend(p);
        let extra = HashMap::new();
        let ctx = RequestContext {
            principal: &caller.principal,
            action,
            resource: &resource,
            resource_account: account,
            source_ip,
            secure_transport: false,
            current_time_epoch: now_secs(),
            extra: &extra,
        };
        let decision = iam::authorize(
            &caller.identity_policies,
            resource_policies.iter().map(|p| &**p),
            &ctx,
        );
        // The owner's root may always manage the policies that could lock it out.
        let root_override = caller.is_root
            && caller.principal.account == account
            && ROOT_POLICY_ACTIONS.contains(&action);
        Ok((matches!(decision, Decision::Allow) || root_override, oldest))
    }

    /// Decide whether `caller` may perform `action` (`kms:Name`) on a KMS key
    /// (`key_arn` of `key_account`, whose key policy is `key_policy`), or,
    /// without a key (`None`: CreateKey, ListKeys, ListAliases), on `*` by
    /// identity policies alone. Nothing is cached: a key policy is read with
    /// the key on every request.
    pub fn authorize_kms(
        &self,
        caller: &Caller,
        action: &str,
        key: Option<(&str, &str, &str)>,
        source_ip: Option<IpAddr>,
    ) -> bool {
        match key {
            Some((resource, account, policy)) => {
                decide(caller, action, resource, account, source_ip, Some(policy))
            }
            None => self.authorize_identity(caller, action, "*", None, source_ip),
        }
    }

    /// Decide whether `caller` may perform `action` on `resource` (an ARN,
    /// or `*`) of `account` (default: the caller's) by its identity policies
    /// alone (being the account's root allows everything in it): the rule of
    /// services without resource policies (CloudFormation stacks, SSM
    /// parameters, KMS calls that name no key).
    pub fn authorize_identity(
        &self,
        caller: &Caller,
        action: &str,
        resource: &str,
        account: Option<&str>,
        source_ip: Option<IpAddr>,
    ) -> bool {
        let account = account.unwrap_or(caller.principal.account.as_str());
        decide(caller, action, resource, account, source_ip, None)
    }

    /// Drop the cached policy of a repository (after Set/DeleteRepositoryPolicy).
    pub fn forget_policy(&self, registry: &str, repo: Option<&str>) {
        let key = match repo {
            Some(n) => format!("repo/{registry}/{n}"),
            None => format!("registry/{registry}"),
        };
        self.policies.remove(&key);
        self.decisions.clear();
    }

    /// Seed the policy cache with a repository policy the caller has just read
    /// (e.g. a page of DescribeRepositories), saving a query per repository.
    pub fn prime_policy(&self, registry: &str, repo: &str, policy: Option<&str>) {
        let policy = policy.and_then(|t| Policy::parse(t, PolicyKind::Resource).ok().map(Arc::new));
        self.policies
            .insert(format!("repo/{registry}/{repo}"), policy);
    }
}

/// An uncached decision: identity policies alone, or with a KMS key policy
/// as the primary authority.
fn decide(
    caller: &Caller,
    action: &str,
    resource: &str,
    account: &str,
    source_ip: Option<IpAddr>,
    key_policy: Option<&str>,
) -> bool {
    let extra = HashMap::new();
    let ctx = RequestContext {
        principal: &caller.principal,
        action,
        resource,
        resource_account: account,
        source_ip,
        secure_transport: false,
        current_time_epoch: now_secs(),
        extra: &extra,
    };
    let decision = match key_policy.map(|p| Policy::parse(p, PolicyKind::Key)) {
        None => iam::authorize(&caller.identity_policies, std::iter::empty(), &ctx),
        Some(Ok(p)) => iam::authorize_key(&caller.identity_policies, &p, &ctx),
        Some(Err(e)) => {
            tracing::warn!(error = %e, key = resource, "ignoring an unparsable key policy");
            Decision::NotApplicable
        }
    };
    matches!(decision, Decision::Allow)
}

pub use crate::reference::repository_arn;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::testing::{Engine, Fixture};

    #[tokio::test]
    async fn malformed_key_ids_are_refused_before_lookup_and_never_cached() {
        let fx = Fixture::new(Engine::Sqlite).await;
        let access = Access::open(
            fx.open().await,
            MasterKey::from_bytes(&[1; 32]),
            "us-east-1",
        )
        .await
        .unwrap();
        let now = now_secs();
        let date = sigv4::format_amz_date(now);
        let attempt = |id: String| {
            let mut h = axum::http::HeaderMap::new();
            h.insert("host", "127.0.0.1:5000".parse().unwrap());
            h.insert("x-amz-date", date.parse().unwrap());
            let auth = format!(
                "AWS4-HMAC-SHA256 Credential={id}/{}/us-east-1/ecr/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
                &date[..8],
                "0".repeat(64)
            );
            h.insert("authorization", auth.parse().unwrap());
            let access = &access;
            async move { access.begin_sigv4(&h).await.err() }
        };
        let unknown = |e: &Option<AuthError>| {
            matches!(
                e,
                Some(AuthError::SigV4(sigv4::SigV4Error::UnrecognizedClient))
            )
        };
        // 100 KB of key id: refused as an unknown key, and nothing kept of it.
        let err = attempt("A".repeat(100 << 10)).await;
        assert!(unknown(&err), "{err:?}");
        assert_eq!(access.keys.len(), 0);
        // A well-shaped unknown key is looked up once and remembered as unknown.
        let err = attempt("AKIANOSUCHKEY0000000".into()).await;
        assert!(unknown(&err), "{err:?}");
        assert_eq!(access.keys.len(), 1);
    }
}
