//! The pull-through cache (ECR's pull-through cache rules). It owns:
//! - the rules of each registry (validated here, `rules.rs`; stored in
//!   `metadata`, `pull_through_rules`) and the upstream credentials a rule's
//!   `credentialArn` names, sealed with the master key (`pull_through_secrets`);
//! - the miss path: a pull of `<prefix>/<upstream repository>` that the
//!   registry does not have is fetched from the upstream (`upstream.rs`),
//!   every digest verified, and stored through the normal push path
//!   (`Registry::start_upload` … `finish_upload`, `Registry::put_manifest`:
//!   scanning on push, lifecycle and encryption at rest apply) into a
//!   repository created on first use ([`PullThrough::create_pull_through_repository`]);
//!   a blob streams to the client while it is stored, its last bytes held
//!   back until the upload has committed under its digest;
//! - freshness: a cached tag is compared with the upstream's at most once per
//!   `pull_through_interval`; an upstream that is down (or answers 429/5xx)
//!   leaves the cached copy served.
//!
//! Concurrent misses of one manifest or blob fetch it once per node
//! (`flight.rs`); two nodes missing at once each fetch it, and their pushes
//! of the same content are idempotent. Authorization (`ecr:BatchImportUpstreamImage`,
//! `ecr:CreateRepository`) is the face's, before it calls in.

mod flight;
pub mod rules;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::digest::{Descriptor, Digest};
use crate::metadata::{MetaError, NewRule, now_millis};
use crate::metrics::Metrics;
use crate::reference::Reference;
use crate::registry::{Registry, RegistryError, RepoId};
use crate::secrets::MasterKey;
use flight::{Flights, Joined};
use rules::{RuleInputError, UpstreamUrl};
use upstream::{Credentials, TokenCache, Upstream, UpstreamError};

pub use crate::metadata::PullThroughRuleRow as Rule;

/// Rules are re-read from the store at most this often per node.
const RULES_TTL: Duration = Duration::from_secs(5);
/// After an upstream outage, a stale tag is tried again this long later
/// (instead of at every pull).
const OUTAGE_RETRY_MS: i64 = 60_000;
/// An import waits this long for the client to ask for a blob (and so
/// stream it) before it fetches the blob itself.
const CLIENT_GRACE: Duration = Duration::from_secs(2);
/// Most manifests held in memory for imports under way on this node (each
/// under its reference and its digest).
const MAX_PENDING: usize = 256;
/// The owner of the upload sessions the cache opens (for the upload quotas).
const UPLOAD_OWNER: &str = "pull-through-cache";

/// Why a rule operation failed; the ECR face names each ECR's exception.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error(transparent)]
    Input(#[from] RuleInputError),
    #[error(
        "A pull through cache rule with the ecrRepositoryPrefix '{prefix}' already exists in the registry with id '{registry}'"
    )]
    Exists { prefix: String, registry: String },
    #[error(
        "The pull through cache rule with the ecrRepositoryPrefix '{prefix}' does not exist in the registry with id '{registry}'"
    )]
    NotFound { prefix: String, registry: String },
    #[error(
        "The maximum number of pull through cache rules ({max}) has been reached in the registry with id '{registry}'"
    )]
    Limit { max: i64, registry: String },
    #[error("The secret with ARN '{0}' does not exist; create it with `berth secrets put`")]
    SecretNotFound(String),
    #[error("The secret with ARN '{0}' cannot be decrypted with this server's master key")]
    SecretUnreadable(String),
    #[error("{0}")]
    SecretInaccessible(String),
    /// A member Berth would not act on, refused by name.
    #[error("{message}")]
    Refused {
        member: &'static str,
        message: String,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// Why a pull through the cache failed; the `/v2/` face gives each an OCI error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PullError {
    /// The upstream has no such manifest or blob.
    #[error("{0}")]
    NotFound(String),
    /// The upstream is down, refused us, or answered nonsense, and nothing is cached.
    #[error("{0}")]
    Upstream(String),
    /// The upstream served bytes that are not what their digest says: refused, nothing cached.
    #[error("{0}")]
    Tampered(String),
    /// The upstream's manifest is one the registry does not accept.
    #[error("{0}")]
    Invalid(String),
    /// Too many imports under way on this node.
    #[error("{0}")]
    Busy(String),
    /// The rule's credentials cannot be used.
    #[error("{0}")]
    Credentials(String),
    #[error(transparent)]
    Registry(Arc<RegistryError>),
}

impl From<RegistryError> for PullError {
    fn from(e: RegistryError) -> Self {
        PullError::Registry(Arc::new(e))
    }
}

impl From<MetaError> for PullError {
    fn from(e: MetaError) -> Self {
        RegistryError::Meta(e).into()
    }
}

/// A registry's rules as this node last read them, and when.
type CachedRules = (Instant, Arc<Vec<Rule>>);

/// A repository the cache serves, and where its content comes from.
#[derive(Clone, Debug)]
pub struct Plan {
    pub repo: RepoId,
    pub rule: Rule,
    /// The repository's name at the upstream.
    pub upstream_repository: String,
    url: UpstreamUrl,
}

/// A manifest fetched from the upstream, its digest verified.
#[derive(Debug)]
pub struct Fetched {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// What a blob miss gives the client.
pub enum BlobFetch {
    /// The blob is stored now: serve it from the registry.
    Stored,
    /// The blob streams from the upstream as it is stored; the stream ends
    /// in an error (never in complete wrong bytes) if its digest does not match.
    Streaming {
        size: Option<u64>,
        body: BoxStream<'static, Result<Bytes, std::io::Error>>,
    },
}

/// The new rule, as CreatePullThroughCacheRule gives it.
pub struct NewRuleInput<'a> {
    pub registry: &'a str,
    pub prefix: &'a str,
    pub upstream_url: &'a str,
    pub upstream_registry: Option<&'a str>,
    pub upstream_prefix: Option<&'a str>,
    pub credential_arn: Option<&'a str>,
    pub custom_role_arn: Option<&'a str>,
}

pub struct PullThrough {
    registry: Arc<Registry>,
    master: MasterKey,
    region: String,
    /// A cached tag is compared with the upstream's at most this often.
    interval: Duration,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    tokens: TokenCache,
    rules_cache: Mutex<HashMap<String, CachedRules>>,
    fetches: Flights<Arc<Fetched>, PullError>,
    imports: Flights<(), PullError>,
    blobs: Flights<(), PullError>,
    refreshes: Flights<(), PullError>,
    /// Manifests fetched whose import is under way, by `<repo>:<reference>`.
    pending: Mutex<HashMap<String, Arc<Fetched>>>,
}

fn abandoned() -> PullError {
    PullError::Upstream("the fetch from the upstream was abandoned; retry".into())
}

fn upstream_error(e: UpstreamError, what: &str) -> PullError {
    if e.is_not_found() {
        PullError::NotFound(format!("the upstream has no {what}"))
    } else {
        PullError::Upstream(format!("fetching {what}: {e}"))
    }
}

fn secret_context(account: &str, name: &str) -> String {
    format!("pull-through-secret\n{account}\n{name}")
}

impl PullThrough {
    pub fn new(
        registry: Arc<Registry>,
        master: MasterKey,
        region: &str,
        interval: Duration,
    ) -> PullThrough {
        let metrics = registry.metrics.clone();
        PullThrough {
            registry,
            master,
            region: region.to_string(),
            interval,
            metrics,
            client: upstream::client(),
            tokens: TokenCache::default(),
            rules_cache: Mutex::default(),
            fetches: Flights::default(),
            imports: Flights::default(),
            blobs: Flights::default(),
            refreshes: Flights::default(),
            pending: Mutex::default(),
        }
    }

    // ---- rules --------------------------------------------------------------

    fn forget_rules(&self, registry: &str) {
        self.rules_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(registry);
    }

    /// The rules of `registry`, from this node's cache (at most [`RULES_TTL`] old).
    async fn rules_of(&self, registry: &str) -> Result<Arc<Vec<Rule>>, MetaError> {
        if let Some((at, rules)) = self
            .rules_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)
            && at.elapsed() < RULES_TTL
        {
            return Ok(rules.clone());
        }
        let rules = Arc::new(
            self.registry
                .meta
                .pull_through_rules(registry, None, rules::MAX_RULES + 1)
                .await?,
        );
        let mut cache = self.rules_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(registry.to_string(), (Instant::now(), rules.clone()));
        Ok(rules)
    }

    /// The secret a `credentialArn` names must exist and open.
    async fn check_credential(&self, registry: &str, arn: &str) -> Result<(), RuleError> {
        self.credentials_for(registry, arn).await.map(|_| ())
    }

    async fn credentials_for(&self, registry: &str, arn: &str) -> Result<Credentials, RuleError> {
        let (_, account, name) = rules::credential_arn(arn)?;
        // Secrets are the account's, whichever region's registry uses them.
        let registry = crate::reference::key_account(registry);
        if account != registry {
            return Err(RuleError::SecretInaccessible(format!(
                "The secret with ARN '{arn}' belongs to account {account}; a rule of registry {registry} can use only that registry's secrets"
            )));
        }
        let sealed = self
            .registry
            .meta
            .pull_through_secret(&account, &name)
            .await?
            .ok_or_else(|| RuleError::SecretNotFound(arn.to_string()))?;
        let plain = self
            .master
            .unseal(&sealed, &secret_context(&account, &name))
            .map_err(|_| RuleError::SecretUnreadable(arn.to_string()))?;
        let v: serde_json::Value = serde_json::from_slice(&plain)
            .map_err(|_| RuleError::SecretUnreadable(arn.to_string()))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        match (field("username"), field("accessToken")) {
            (Some(username), Some(password)) => Ok(Credentials { username, password }),
            _ => Err(RuleError::SecretUnreadable(arn.to_string())),
        }
    }

    /// Store upstream credentials (see [`put_secret`]).
    pub async fn put_secret(
        &self,
        account: &str,
        name: &str,
        username: &str,
        password: &str,
    ) -> Result<String, RuleError> {
        put_secret(
            &self.registry.meta,
            &self.master,
            &self.region,
            account,
            name,
            username,
            password,
        )
        .await
    }

    pub async fn create_rule(&self, n: NewRuleInput<'_>) -> Result<Rule, RuleError> {
        let prefix = rules::prefix("ecrRepositoryPrefix", n.prefix)?;
        let url = rules::upstream_url(n.upstream_url)?;
        // Not given: empty, which routes as ROOT and is not shown (as ECR:
        // DescribePullThroughCacheRules answers only a prefix that was set,
        // and Terraform's provider plans a replacement otherwise).
        let upstream_prefix = match n.upstream_prefix {
            Some(p) => rules::prefix("upstreamRepositoryPrefix", p)?,
            None => String::new(),
        };
        refuse_role(n.custom_role_arn)?;
        let known = rules::upstream_registry(&url, n.upstream_registry)?;
        if let Some(arn) = n.credential_arn {
            rules::credential_arn(arn)?;
        }
        if let Some(k) = known
            && rules::needs_credentials(k)
            && n.credential_arn.is_none()
        {
            return Err(RuleInputError::Constraint {
                member: "credentialArn",
                detail: format!("a credentialArn is required for the upstream registry {k}"),
            }
            .into());
        }
        if let Some(arn) = n.credential_arn {
            self.check_credential(n.registry, arn).await?;
        }
        let now = now_millis();
        let rule = Rule {
            registry_id: n.registry.to_string(),
            prefix,
            upstream_url: n.upstream_url.to_string(),
            upstream_registry: known.map(str::to_string),
            upstream_prefix,
            credential_arn: n.credential_arn.map(str::to_string),
            created_at: now,
            updated_at: now,
        };
        let outcome = self
            .registry
            .meta
            .create_pull_through_rule(&rule, rules::MAX_RULES)
            .await?;
        self.forget_rules(n.registry);
        match outcome {
            NewRule::Created => Ok(rule),
            NewRule::Exists => Err(RuleError::Exists {
                prefix: rule.prefix,
                registry: rule.registry_id,
            }),
            NewRule::Limit(_) => Err(RuleError::Limit {
                max: rules::MAX_RULES,
                registry: rule.registry_id,
            }),
        }
    }

    /// The rules of `registry` after `after` (at most `limit`), or those named
    /// (each must exist).
    pub async fn describe_rules(
        &self,
        registry: &str,
        prefixes: Option<&[String]>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Rule>, RuleError> {
        let Some(names) = prefixes else {
            return Ok(self
                .registry
                .meta
                .pull_through_rules(registry, after, limit)
                .await?);
        };
        let mut wanted = Vec::new();
        for p in names {
            wanted.push(rules::prefix("ecrRepositoryPrefixes", p)?);
        }
        wanted.sort();
        wanted.dedup();
        let mut out = Vec::new();
        for p in wanted
            .iter()
            .filter(|p| after.is_none_or(|a| p.as_str() > a))
        {
            if out.len() as i64 == limit {
                break;
            }
            out.push(self.rule(registry, p).await?);
        }
        Ok(out)
    }

    async fn rule(&self, registry: &str, prefix: &str) -> Result<Rule, RuleError> {
        self.registry
            .meta
            .pull_through_rule(registry, prefix)
            .await?
            .ok_or_else(|| RuleError::NotFound {
                prefix: prefix.to_string(),
                registry: registry.to_string(),
            })
    }

    /// UpdatePullThroughCacheRule: a new `credentialArn` (the only setting
    /// ECR lets one change besides `customRoleArn`, which Berth refuses).
    pub async fn update_rule(
        &self,
        registry: &str,
        prefix: &str,
        credential_arn: Option<&str>,
        custom_role_arn: Option<&str>,
    ) -> Result<Rule, RuleError> {
        let prefix = rules::prefix("ecrRepositoryPrefix", prefix)?;
        refuse_role(custom_role_arn)?;
        let Some(arn) = credential_arn else {
            return Err(RuleInputError::Constraint {
                member: "credentialArn",
                detail: "an update must give a credentialArn".into(),
            }
            .into());
        };
        rules::credential_arn(arn)?;
        self.rule(registry, &prefix).await?;
        self.check_credential(registry, arn).await?;
        let row = self
            .registry
            .meta
            .update_pull_through_rule(registry, &prefix, Some(arn), now_millis())
            .await?;
        self.forget_rules(registry);
        row.ok_or(RuleError::NotFound {
            prefix,
            registry: registry.to_string(),
        })
    }

    pub async fn delete_rule(&self, registry: &str, prefix: &str) -> Result<Rule, RuleError> {
        let prefix = rules::prefix("ecrRepositoryPrefix", prefix)?;
        let row = self
            .registry
            .meta
            .delete_pull_through_rule(registry, &prefix)
            .await?;
        self.forget_rules(registry);
        row.ok_or(RuleError::NotFound {
            prefix,
            registry: registry.to_string(),
        })
    }

    /// ValidatePullThroughCacheRule: the rule, and why the upstream cannot be
    /// used with it now (`None`: it can: its credentials open and `GET /v2/` succeeds).
    pub async fn validate_rule(
        &self,
        registry: &str,
        prefix: &str,
    ) -> Result<(Rule, Option<String>), RuleError> {
        let prefix = rules::prefix("ecrRepositoryPrefix", prefix)?;
        let rule = self.rule(registry, &prefix).await?;
        let failure = match self.upstream_parts(&rule).await {
            Err(e) => Some(e.to_string()),
            Ok((url, creds)) => self
                .client_for(&url, creds.as_ref())
                .check()
                .await
                .err()
                .map(|e| e.to_string()),
        };
        Ok((rule, failure))
    }

    async fn upstream_parts(
        &self,
        rule: &Rule,
    ) -> Result<(UpstreamUrl, Option<Credentials>), RuleError> {
        let url = rules::upstream_url(&rule.upstream_url)?;
        let creds = match &rule.credential_arn {
            Some(arn) => Some(self.credentials_for(&rule.registry_id, arn).await?),
            None => None,
        };
        Ok((url, creds))
    }

    // ---- the miss path ------------------------------------------------------

    /// Whether `repo` is (or would be) a pull-through cache repository, and from where.
    pub async fn plan(&self, repo: &RepoId) -> Result<Option<Plan>, MetaError> {
        let rules = self.rules_of(&repo.registry).await?;
        if rules.is_empty() {
            return Ok(None);
        }
        let routed = rules::route(
            &rules,
            |r: &Rule| match r.upstream_prefix.as_str() {
                "" => (r.prefix.as_str(), rules::ROOT),
                p => (r.prefix.as_str(), p),
            },
            repo.name.as_str(),
        );
        let Some((rule, upstream_repository)) = routed else {
            return Ok(None);
        };
        let Ok(url) = rules::upstream_url(&rule.upstream_url) else {
            return Ok(None);
        };
        Ok(Some(Plan {
            repo: repo.clone(),
            rule: rule.clone(),
            upstream_repository,
            url,
        }))
    }

    /// Whether the repository of `plan` exists (if not, a fetch creates it).
    pub async fn repository_exists(&self, plan: &Plan) -> Result<bool, MetaError> {
        self.registry.meta.repository_exists(plan.repo.key()).await
    }

    /// Create the repository `plan` caches into, on its first pull: with the
    /// settings of the `PULL_THROUGH_CACHE` creation template that covers
    /// its name, else ECR's defaults (MUTABLE tags, AES256; scanning as the
    /// registry's scanning rules say). The one place a pull-through cache
    /// repository is made.
    pub async fn create_pull_through_repository(&self, plan: &Plan) -> Result<(), PullError> {
        // The `PULL_THROUGH_CACHE` creation template that covers the name,
        // else ECR's defaults; one that another pull made first is kept.
        self.registry
            .create_repository_for(
                &plan.repo,
                crate::registry::creation_templates::AppliedFor::PullThroughCache,
            )
            .await?;
        Ok(())
    }

    fn metric(&self, which: Outcome, kind: &'static str) {
        let m = &self.metrics.pull_through;
        let l = crate::metrics::KindLabels { kind };
        match which {
            Outcome::Hit => m.hits.get_or_create(&l).inc(),
            Outcome::Miss => m.misses.get_or_create(&l).inc(),
            Outcome::UpstreamError => m.upstream_errors.get_or_create(&l).inc(),
            Outcome::Stale => m.stale_served.get_or_create(&l).inc(),
            Outcome::Refused => m.refused.get_or_create(&l).inc(),
        };
    }

    /// Count a manifest (`manifest`) or blob (`blob`) served from the cache.
    pub fn hit(&self, kind: &'static str) {
        self.metric(Outcome::Hit, kind);
    }

    async fn upstream(&self, plan: &Plan) -> Result<Option<Credentials>, PullError> {
        match &plan.rule.credential_arn {
            None => Ok(None),
            Some(arn) => self
                .credentials_for(&plan.rule.registry_id, arn)
                .await
                .map(Some)
                .map_err(|e| PullError::Credentials(e.to_string())),
        }
    }

    fn client_for<'a>(
        &'a self,
        url: &'a UpstreamUrl,
        credentials: Option<&'a Credentials>,
    ) -> Upstream<'a> {
        Upstream {
            url,
            credentials,
            client: &self.client,
            tokens: &self.tokens,
        }
    }

    fn pending_get(&self, key: &str) -> Option<Arc<Fetched>> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// The manifest `reference` of a repository the cache serves, from the
    /// upstream (or from an import under way on this node). Its import (blobs,
    /// children, then the manifest itself) continues in the background.
    pub async fn fetch_manifest(
        self: &Arc<Self>,
        plan: &Plan,
        reference: &Reference,
    ) -> Result<Arc<Fetched>, PullError> {
        let key = format!("{}/{}:{reference}", plan.repo.registry, plan.repo.name);
        if let Some(f) = self.pending_get(&key) {
            return Ok(f);
        }
        match self.fetches.join(&key, abandoned()) {
            Joined::Follow(f) => f.wait().await,
            Joined::Lead(lead) => {
                let r = self.fetch_and_import(plan, reference, &key).await;
                lead.finish(r.clone());
                r
            }
        }
    }

    async fn fetch_and_import(
        self: &Arc<Self>,
        plan: &Plan,
        reference: &Reference,
        key: &str,
    ) -> Result<Arc<Fetched>, PullError> {
        if self.pending.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_PENDING {
            return Err(PullError::Busy(
                "too many images are being fetched from upstreams; retry shortly".into(),
            ));
        }
        self.metric(Outcome::Miss, "manifest");
        let fetched = match self.download_manifest(plan, reference).await {
            Ok(f) => Arc::new(f),
            Err(e) => {
                self.metric(
                    match e {
                        PullError::Tampered(_) => Outcome::Refused,
                        _ => Outcome::UpstreamError,
                    },
                    "manifest",
                );
                return Err(e);
            }
        };
        if !self.repository_exists(plan).await? {
            self.create_pull_through_repository(plan).await?;
        }
        let digest_key = format!(
            "{}/{}:{}",
            plan.repo.registry, plan.repo.name, fetched.digest
        );
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.insert(key.to_string(), fetched.clone());
            p.insert(digest_key.clone(), fetched.clone());
        }
        let tag = match reference {
            Reference::Tag(t) => Some(t.clone()),
            Reference::Digest(_) => None,
        };
        let (this, plan, f, key) = (self.clone(), plan.clone(), fetched.clone(), key.to_string());
        tokio::spawn(async move {
            if let Err(e) = this.import(&plan, f.clone(), tag).await {
                tracing::warn!(repository = %plan.repo, digest = %f.digest, error = %e, "pull-through import failed; nothing of it was cached");
            }
            let mut p = this.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.remove(&key);
            p.remove(&digest_key);
        });
        Ok(fetched)
    }

    /// Fetch and verify a manifest: its bytes must have the digest asked
    /// for, or the one the upstream announces; it must be one the registry accepts.
    async fn download_manifest(
        &self,
        plan: &Plan,
        reference: &Reference,
    ) -> Result<Fetched, PullError> {
        let creds = self.upstream(plan).await?;
        let up = self.client_for(&plan.url, creds.as_ref());
        let what = format!("manifest {}:{reference}", plan.upstream_repository);
        let limit = self.registry.limits.max_manifest_bytes;
        let m = up
            .manifest(&plan.upstream_repository, &reference.to_string(), limit)
            .await
            .map_err(|e| match e {
                UpstreamError::TooLarge(_) => PullError::Invalid(format!("{what}: {e}")),
                e => upstream_error(e, &what),
            })?;
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => match m.digest_header.as_deref().map(str::parse::<Digest>) {
                Some(Ok(d)) => Some(d),
                _ => None,
            },
        };
        let digest = match &expected {
            Some(d) => {
                let actual = Digest::of(d.algorithm(), &m.bytes);
                if &actual != d {
                    return Err(PullError::Tampered(format!(
                        "the upstream served {what} with digest {actual}, not {d}; nothing was cached"
                    )));
                }
                Digest::sha256_of(&m.bytes)
            }
            None => Digest::sha256_of(&m.bytes),
        };
        let parsed = crate::registry::manifest::parse(
            m.media_type.as_deref(),
            &m.bytes,
            self.registry.limits.max_image_layers,
        )
        .map_err(|e| PullError::Invalid(format!("{what}: {e}")))?;
        Ok(Fetched {
            digest,
            media_type: parsed.media_type,
            bytes: m.bytes,
        })
    }

    /// Store a fetched manifest (and under `tag`): its blobs or children
    /// first, as a push would. Once per (repository, digest, tag) on this node.
    /// (Boxed, with `Send` spelled out: an index's import imports its children.)
    fn import<'a>(
        self: &'a Arc<Self>,
        plan: &'a Plan,
        f: Arc<Fetched>,
        tag: Option<String>,
    ) -> futures_util::future::BoxFuture<'a, Result<(), PullError>> {
        Box::pin(async move {
            let key = format!(
                "{}/{}@{}#{}",
                plan.repo.registry,
                plan.repo.name,
                f.digest,
                tag.as_deref().unwrap_or("")
            );
            match self.imports.join(&key, abandoned()) {
                Joined::Follow(w) => w.wait().await,
                Joined::Lead(lead) => {
                    let r = self.import_once(plan, &f, tag.as_deref()).await;
                    lead.finish(r.clone());
                    r
                }
            }
        })
    }

    async fn import_once(
        self: &Arc<Self>,
        plan: &Plan,
        f: &Fetched,
        tag: Option<&str>,
    ) -> Result<(), PullError> {
        let parsed = crate::registry::manifest::parse(
            Some(&f.media_type),
            &f.bytes,
            self.registry.limits.max_image_layers,
        )
        .map_err(PullError::Invalid)?;
        // An index: every child, as ECR caches them.
        for child in &parsed.children {
            if self
                .registry
                .meta
                .get_manifest(plan.repo.key(), &child.digest)
                .await?
                .is_some()
            {
                continue;
            }
            let cf = self
                .fetch_manifest(plan, &Reference::Digest(child.digest.clone()))
                .await?;
            self.import(plan, cf, None).await?;
        }
        self.ensure_blobs(plan, &parsed.blobs).await?;
        let reference = match tag {
            Some(t) => Reference::Tag(t.to_string()),
            None => Reference::Digest(f.digest.clone()),
        };
        self.registry
            .put_manifest(&plan.repo, &reference, Some(&f.media_type), &f.bytes)
            .await?;
        if let Some(t) = tag {
            self.registry
                .meta
                .set_pull_through_tag_checked(plan.repo.key(), t, now_millis())
                .await?;
        }
        Ok(())
    }

    fn blob_key(plan: &Plan, digest: &Digest) -> String {
        format!("{}/{}@{digest}", plan.repo.registry, plan.repo.name)
    }

    /// Every blob of `blobs` stored in the repository: those the client asks
    /// for stream to it (and are awaited here); those it does not ask for
    /// within [`CLIENT_GRACE`] are fetched here.
    async fn ensure_blobs(
        self: &Arc<Self>,
        plan: &Plan,
        blobs: &[Descriptor],
    ) -> Result<(), PullError> {
        let mut idle_since = Instant::now();
        loop {
            let mut missing = Vec::new();
            for b in blobs {
                match self.registry.stat_blob(&plan.repo, &b.digest).await {
                    Ok(_) => {}
                    Err(RegistryError::BlobUnknown) => missing.push(b),
                    Err(e) => return Err(e.into()),
                }
            }
            let Some(first) = missing.first() else {
                return Ok(());
            };
            if let Some(w) = missing.iter().find_map(|b| {
                self.blobs
                    .follow(&Self::blob_key(plan, &b.digest), abandoned())
            }) {
                w.wait().await?;
                idle_since = Instant::now();
                continue;
            }
            if idle_since.elapsed() < CLIENT_GRACE {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            match self.fetch_blob(plan, &first.digest).await? {
                BlobFetch::Stored => {}
                BlobFetch::Streaming { mut body, .. } => {
                    // No client: drain what the store is fed.
                    while let Some(chunk) = body.next().await {
                        chunk.map_err(|e| PullError::Upstream(e.to_string()))?;
                    }
                }
            }
            idle_since = Instant::now();
        }
    }

    /// A blob of a repository the cache serves that the registry does not
    /// have: stored once, streamed to the first asker as it is stored;
    /// others wait for it to be stored.
    pub async fn fetch_blob(
        self: &Arc<Self>,
        plan: &Plan,
        digest: &Digest,
    ) -> Result<BlobFetch, PullError> {
        let lead = match self.blobs.join(&Self::blob_key(plan, digest), abandoned()) {
            Joined::Follow(w) => {
                w.wait().await?;
                return Ok(BlobFetch::Stored);
            }
            Joined::Lead(lead) => lead,
        };
        match self.registry.stat_blob(&plan.repo, digest).await {
            Ok(_) => {
                lead.finish(Ok(()));
                return Ok(BlobFetch::Stored);
            }
            Err(RegistryError::BlobUnknown) => {}
            Err(e) => {
                let e = PullError::from(e);
                lead.finish(Err(e.clone()));
                return Err(e);
            }
        }
        self.metric(Outcome::Miss, "blob");
        if !self.repository_exists(plan).await? {
            self.create_pull_through_repository(plan).await?;
        }
        let opened = async {
            let creds = self.upstream(plan).await?;
            let up = self.client_for(&plan.url, creds.as_ref());
            up.blob(&plan.upstream_repository, digest.as_str())
                .await
                .map_err(|e| {
                    upstream_error(e, &format!("blob {digest} of {}", plan.upstream_repository))
                })
        };
        let blob = match opened.await {
            Ok(b) => b,
            Err(e) => {
                self.metric(Outcome::UpstreamError, "blob");
                lead.finish(Err(e.clone()));
                return Err(e);
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let size = blob.size;
        let (this, plan, digest) = (self.clone(), plan.clone(), digest.clone());
        tokio::spawn(async move {
            let r = this.store_blob(&plan, &digest, blob.body, tx).await;
            if let Err(e) = &r {
                this.metric(
                    match e {
                        PullError::Tampered(_) => Outcome::Refused,
                        _ => Outcome::UpstreamError,
                    },
                    "blob",
                );
                tracing::warn!(repository = %plan.repo, %digest, error = %e, "pull-through blob not cached");
            }
            lead.finish(r);
        });
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        Ok(BlobFetch::Streaming { size, body })
    }

    /// Feed `body` into a new upload and to `client` at once; commit the
    /// upload under `digest`, and only then give the client the last chunk
    /// (an error instead, if the bytes are not `digest`'s).
    async fn store_blob(
        &self,
        plan: &Plan,
        digest: &Digest,
        mut body: BoxStream<'static, Result<Bytes, UpstreamError>>,
        client: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<(), PullError> {
        let reg = &self.registry;
        let fail = |client: &tokio::sync::mpsc::Sender<_>, e: &PullError| {
            let _ = client.try_send(Err(std::io::Error::other(e.to_string())));
        };
        let session = match reg.start_upload(&plan.repo, UPLOAD_OWNER).await {
            Ok(s) => s,
            Err(e) => {
                let e = PullError::from(e);
                fail(&client, &e);
                return Err(e);
            }
        };
        let id = session.id.clone();
        let (utx, urx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(4);
        let upload = reg.append_upload(
            session,
            None,
            futures_util::stream::unfold(urx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            }),
        );
        let fetched = &self.metrics.pull_through.upstream_bytes;
        let feed = async move {
            let mut client = Some(client);
            let mut held: Option<Bytes> = None;
            while let Some(item) = body.next().await {
                let chunk = match item {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = utx.send(Err(e.to_string())).await;
                        return (Err(PullError::Upstream(e.to_string())), client, None);
                    }
                };
                fetched.inc_by(chunk.len() as u64);
                if utx.send(Ok(chunk.clone())).await.is_err() {
                    // The upload failed: its error says why.
                    break;
                }
                if let Some(prev) = held.replace(chunk)
                    && let Some(c) = &client
                    && c.send(Ok(prev)).await.is_err()
                {
                    // The client went away; the blob is still stored.
                    client = None;
                }
            }
            (Ok(()), client, held)
        };
        let (uploaded, (fed, client, held)) = tokio::join!(upload, feed);
        let outcome = match (uploaded, fed) {
            (_, Err(e)) => Err(e),
            (Err(e), _) => Err(PullError::from(e)),
            (Ok(_), Ok(())) => match reg.finish_upload(&plan.repo, &id, digest).await {
                Ok(_) => Ok(()),
                Err(RegistryError::DigestInvalid(m)) => Err(PullError::Tampered(format!(
                    "the upstream served blob {digest} with other content ({m}); nothing was cached"
                ))),
                Err(e) => Err(PullError::from(e)),
            },
        };
        if outcome.is_err() {
            // A digest mismatch discarded the session already.
            let _ = reg.cancel_upload(&plan.repo, &id).await;
        }
        if let Some(c) = client {
            // Waits for room: a client must see the end, or the error (a
            // client that stopped reading is cut off by the send timeout).
            let last = match &outcome {
                Ok(()) => held.map(Ok),
                Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
            };
            if let Some(item) = last {
                let _ = c.send(item).await;
            }
        }
        outcome
    }

    /// The digest a cached tag points at, if the tag is due for a comparison
    /// with the upstream's (not compared within the interval).
    pub async fn tag_due(&self, plan: &Plan, tag: &str) -> Option<String> {
        let repo = plan.repo.key();
        let cached = self.registry.tag_digest(repo, tag).await.ok()??;
        let checked = self
            .registry
            .meta
            .pull_through_tag_checked(repo, tag)
            .await
            .ok()?;
        let interval = self.interval.as_millis() as i64;
        match checked {
            Some(t) if now_millis() - t < interval => None,
            _ => Some(cached),
        }
    }

    /// Compare a tag that is [`due`](PullThrough::tag_due) with the
    /// upstream's. A different digest upstream is fetched (and imported) and
    /// returned; the same digest, or an upstream that fails, leaves the cached
    /// copy to be served (`None`).
    pub async fn refresh_tag(
        self: &Arc<Self>,
        plan: &Plan,
        tag: &str,
        cached: &str,
    ) -> Option<Arc<Fetched>> {
        // One comparison at a time per tag on this node; pulls meanwhile get the cached copy.
        let key = format!("{}/{}:{tag}", plan.repo.registry, plan.repo.name);
        let Joined::Lead(lead) = self.refreshes.join(&key, abandoned()) else {
            return None;
        };
        let newer = self.compare_tag(plan, tag, cached).await;
        lead.finish(Ok(()));
        newer
    }

    async fn compare_tag(
        self: &Arc<Self>,
        plan: &Plan,
        tag: &str,
        cached: &str,
    ) -> Option<Arc<Fetched>> {
        let repo = plan.repo.key();
        let meta = &self.registry.meta;
        let now = now_millis();
        let interval = self.interval.as_millis() as i64;
        let creds = self.upstream(plan).await.ok()?;
        let up = self.client_for(&plan.url, creds.as_ref());
        let mark = |at: i64| async move {
            if let Err(e) = meta.set_pull_through_tag_checked(repo, tag, at).await {
                tracing::warn!(error = %e, "could not record a pull-through tag check");
            }
        };
        match up.manifest_digest(&plan.upstream_repository, tag).await {
            Ok(Some(d)) if d == cached => {
                mark(now).await;
                None
            }
            Ok(_) => match self
                .fetch_manifest(plan, &Reference::Tag(tag.to_string()))
                .await
            {
                Ok(f) if f.digest.as_str() == cached => {
                    mark(now).await;
                    None
                }
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(repository = %plan.repo, tag, error = %e, "the upstream's tag could not be fetched; serving the cached copy");
                    self.metric(Outcome::Stale, "manifest");
                    mark(now - interval + OUTAGE_RETRY_MS.min(interval)).await;
                    None
                }
            },
            Err(e) => {
                tracing::warn!(repository = %plan.repo, tag, error = %e, "the upstream did not answer; serving the cached copy");
                self.metric(Outcome::UpstreamError, "manifest");
                self.metric(Outcome::Stale, "manifest");
                mark(now - interval + OUTAGE_RETRY_MS.min(interval)).await;
                None
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Outcome {
    Hit,
    Miss,
    UpstreamError,
    Stale,
    Refused,
}

/// Store upstream credentials under `name` (`ecr-pullthroughcache/…`) for
/// `account`, sealed with the master key, as a Secrets Manager secret for
/// ECR's pull-through cache holds them (`username`, `accessToken`). Returns
/// the ARN a rule's `credentialArn` gives (`berth secrets put`).
pub async fn put_secret(
    meta: &crate::metadata::MetadataStore,
    master: &MasterKey,
    region: &str,
    account: &str,
    name: &str,
    username: &str,
    password: &str,
) -> Result<String, RuleError> {
    let arn = format!("arn:aws:secretsmanager:{region}:{account}:secret:{name}");
    rules::credential_arn(&arn)?;
    let doc = serde_json::json!({ "username": username, "accessToken": password });
    let sealed = master.seal(doc.to_string().as_bytes(), &secret_context(account, name));
    meta.put_pull_through_secret(account, name, &sealed, now_millis())
        .await?;
    Ok(arn)
}

/// `customRoleArn`: ECR assumes it to reach an ECR upstream; Berth assumes no roles.
fn refuse_role(arn: Option<&str>) -> Result<(), RuleError> {
    match arn {
        None | Some("") => Ok(()),
        Some(_) => Err(RuleError::Refused {
            member: "customRoleArn",
            message: "Berth does not support customRoleArn: it assumes no IAM roles to reach an upstream. Store the upstream's credentials with `berth secrets put` and give their credentialArn".into(),
        }),
    }
}
