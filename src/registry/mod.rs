//! The registry service: what a registry does, independent of the wire
//! protocol. The OCI `/v2/` controllers (`distribution`) and the ECR API
//! controllers (`ecr_api`) call the same functions, so both faces share one
//! set of rules (what a manifest must reference, when a blob is visible, how an
//! upload is committed, when a tag may move).
//!
//! It owns no state of its own: everything lives in the [`MetadataStore`] and
//! the [`BlobStore`], so any number of nodes can serve the same registry.

pub mod account_settings;
mod catalog;
pub mod creation_templates;
pub mod manifest;
pub mod replication;
pub mod scan_config;
mod sealing;
pub mod uploads;

use std::sync::Arc;

use crate::digest::Digest;
use crate::metadata::{ManifestRow, MetadataStore, NewManifest, PutManifestOutcome};
use crate::metrics::Metrics;
use crate::reference::{Reference, RepoName};
use crate::storage::{BlobStore, ByteStream, StorageError};

// The values the faces see of the stores, so that they need not import them.
pub use crate::metadata::{
    DestinationBacklog, ImageIdRow, ImageRow, LifecyclePolicyRow, MetaError, PreviewRow, Repo,
    RepoCursor, RepoOrder, RepositoryRow, TagFilter, now_millis,
};
pub use crate::storage::ByteRange;

/// Errors of registry operations. The `/v2/` layer maps them to OCI error
/// codes, the ECR layer to ECR exception names.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// ECR's wording, which docker shows after `name unknown:`.
    #[error(
        "The repository with name '{repository}' does not exist in the registry with id '{registry}'"
    )]
    NameUnknown {
        repository: String,
        registry: String,
    },
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    #[error("blob upload invalid: {0}")]
    UploadInvalid(String),
    #[error("provided digest did not match uploaded content")]
    DigestInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest references a blob or manifest that is not in the repository: {0}")]
    ManifestBlobUnknown(Digest),
    #[error("manifest references a child manifest that is not in the repository: {0}")]
    ManifestChildUnknown(Digest),
    #[error("manifest is referenced by an image index in this repository; delete the index first")]
    ManifestReferenced,
    #[error(
        "the blob is a layer or config of manifest {0} in this repository; delete the images that use it (the blob goes with the last of them)"
    )]
    BlobReferenced(String),
    #[error("invalid tag: {0}")]
    TagInvalid(String),
    /// ECR's wording, which docker prints after `tag invalid:`.
    #[error(
        "The image tag '{tag}' already exists in the '{repository}' repository and cannot be overwritten because the repository is immutable."
    )]
    TagImmutable { tag: String, repository: String },
    /// A chunk did not start where the upload ends (`size` bytes received so far).
    #[error("chunk out of order: the upload holds {size} bytes")]
    ChunkOutOfOrder { size: u64 },
    #[error("requested range not satisfiable (blob size {size})")]
    RangeNotSatisfiable { size: u64 },
    #[error("the request body ended early: {0}")]
    BodyInterrupted(String),
    #[error("storage is full")]
    StorageFull,
    /// Too many upload sessions are open (per caller or per repository).
    #[error("{0}")]
    UploadQuota(String),
    /// Temporarily unable (e.g. a digest is being garbage-collected); retry.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The key-encryption key that protects the content cannot be used
    /// (disabled, pending deletion, deleted, missing) or refused the data.
    #[error("{0}")]
    Kms(crate::kms::KmsError),
    /// Stored bytes failed their integrity check: altered or corrupted.
    #[error("stored content failed its integrity check: {0}")]
    Integrity(String),
    #[error(transparent)]
    Storage(StorageError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Full => RegistryError::StorageFull,
            StorageError::Busy => {
                RegistryError::UploadInvalid("another request is writing to this upload".into())
            }
            StorageError::Unavailable(m) => RegistryError::Unavailable(m),
            other => RegistryError::Storage(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// Tunables of the registry service.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Most layers an image manifest may list.
    pub max_image_layers: usize,
    /// Open upload sessions allowed per caller and per repository.
    pub uploads: crate::config::UploadQuotas,
    /// Create a repository on first push instead of refusing (`NAME_UNKNOWN`).
    /// Off in ECR mode, where repositories are created through the API.
    pub create_on_push: bool,
    /// Garbage collection leaves a blob alone for this long after it was
    /// uploaded, mounted or found by an existence check (docs/gc.md).
    pub gc_grace: std::time::Duration,
    /// Blob downloads answered with a presigned storage URL valid this long.
    pub download_redirects: Option<std::time::Duration>,
    /// An image may be scanned once per this period (0: no quota).
    pub scan_quota_interval: std::time::Duration,
}

/// Pull times are recorded at most once per image per this period (ECR
/// documents `lastRecordedPullTime` as approximate, too).
pub const PULL_TIME_RESOLUTION_MS: i64 = 3_600_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 8 << 20,
            max_image_layers: 127,
            uploads: crate::config::UploadQuotas::default(),
            create_on_push: false,
            gc_grace: std::time::Duration::from_secs(3600),
            download_redirects: None,
            scan_quota_interval: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// A repository: the registry (12-digit account id) that owns it and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoId {
    pub registry: String,
    pub name: RepoName,
}

impl RepoId {
    pub fn new(registry: &str, name: RepoName) -> RepoId {
        RepoId {
            registry: registry.to_string(),
            name,
        }
    }

    /// The error for a repository that does not exist.
    pub fn not_found(&self) -> RegistryError {
        RegistryError::NameUnknown {
            repository: self.name.to_string(),
            registry: crate::reference::key_account(&self.registry).to_string(),
        }
    }

    /// The key the metadata store uses.
    pub fn key(&self) -> Repo<'_> {
        Repo {
            registry: &self.registry,
            name: self.name.as_str(),
        }
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name.as_str())
    }
}

/// Whether ECR's tag-mutability setting forbids moving `tag`.
pub fn tag_is_immutable(repo: &RepositoryRow, tag: &str) -> bool {
    let excluded = || {
        repo.mutability_exclusions
            .iter()
            .any(|f| wildcard_match(f, tag))
    };
    match repo.tag_mutability.as_str() {
        "IMMUTABLE" => true,
        "IMMUTABLE_WITH_EXCLUSION" => !excluded(),
        "MUTABLE_WITH_EXCLUSION" => excluded(),
        _ => false,
    }
}

/// ECR's tag filters: `*` matches any run of characters, everything else
/// literally, and the whole tag must match.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A blob ready to be streamed.
pub struct BlobBody {
    pub size: u64,
    pub range: Option<ByteRange>,
    pub stream: ByteStream,
}

/// The outcome of a manifest push.
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub media_type: String,
    /// False when the manifest and the tag were both already in place.
    pub changed: bool,
}

pub struct Registry {
    pub meta: MetadataStore,
    /// Sealed blobs and staged uploads (`storage::sealed`).
    pub blobs: Arc<dyn BlobStore>,
    /// Plaintext blobs of a data directory older than encryption, read until
    /// they are re-encrypted into `blobs`; nothing new is written here.
    pub legacy_blobs: Arc<dyn BlobStore>,
    /// Wraps and unwraps the data keys of everything sealed.
    pub kms: Arc<crate::kms::KeyRing>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Woken when this node queues a job someone waits for (a scan), so
    /// the node's worker starts it without waiting for its next poll.
    pub jobs_queued: Arc<tokio::sync::Notify>,
}

impl Registry {
    // ---- repositories -------------------------------------------------------

    /// An event of Berth acting by itself (`service`) on repository `name`
    /// of registry `key` (lifecycle expiry, garbage collection, replication),
    /// for the audit log.
    pub fn service_event(
        &self,
        event_name: &str,
        key: &str,
        name: &str,
        service: &str,
    ) -> crate::audit::Event {
        let region = crate::reference::key_region(key, self.kms.region());
        let account = crate::reference::key_account(key);
        let mut e = crate::audit::Event::service(event_name, region, account, service);
        e.resources.push(crate::audit::Resource {
            kind: crate::audit::REPOSITORY.to_string(),
            name: name.to_string(),
            arn: crate::reference::repository_arn(region, account, name),
            account_id: account.to_string(),
        });
        e
    }

    /// The repository a push goes to: it must exist, unless repositories are
    /// created on push: by a `CREATE_ON_PUSH` creation template that covers
    /// its name (created with the template's settings, as in ECR), or on an
    /// open registry (`auth = none`: default settings).
    pub async fn writable_repository(&self, repo: &RepoId) -> Result<RepositoryRow> {
        if let Some(row) = self.meta.get_repository(repo.key()).await? {
            return Ok(row);
        }
        let templates = self.creation_templates(&repo.registry).await?;
        let on_push = creation_templates::AppliedFor::CreateOnPush;
        if creation_templates::choose(&templates, repo.name.as_str(), on_push).is_some() {
            return self.create_repository_for(repo, on_push).await;
        }
        if !self.limits.create_on_push {
            return Err(repo.not_found());
        }
        let row = RepositoryRow::new(&repo.registry, repo.name.as_str());
        self.meta.create_repository(&row, &[]).await?;
        Ok(self.meta.get_repository(repo.key()).await?.unwrap_or(row))
    }

    /// The registry's scanning configuration (the default when none was put).
    pub async fn scanning_configuration(
        &self,
        registry: &str,
    ) -> Result<scan_config::ScanningConfiguration> {
        Ok(match self.meta.registry_scanning(registry).await? {
            Some(doc) => serde_json::from_str(&doc)
                .map_err(|e| MetaError::Corrupt(format!("registry scanning configuration: {e}")))?,
            None => scan_config::ScanningConfiguration::default(),
        })
    }

    // ---- blobs --------------------------------------------------------------

    /// Size of a blob visible in `repo`.
    pub async fn stat_blob(&self, repo: &RepoId, digest: &Digest) -> Result<u64> {
        self.meta
            .linked_blob_size(repo.key(), digest)
            .await?
            .ok_or(RegistryError::BlobUnknown)
    }

    /// Size of a blob visible in `repo`, for a client that asks whether it
    /// needs to upload it (HEAD, BatchCheckLayerAvailability). A "yes" must
    /// stay true long enough for the client to reference the blob, so a link
    /// older than half the GC grace period is refreshed first; if garbage
    /// collection removed it meanwhile, the answer is "unknown" and the
    /// client uploads again.
    pub async fn check_blob(&self, repo: &RepoId, digest: &Digest) -> Result<u64> {
        let (size, touched) = self
            .meta
            .linked_blob(repo.key(), digest)
            .await?
            .ok_or(RegistryError::BlobUnknown)?;
        let stale_before = now_millis() - self.limits.gc_grace.as_millis() as i64 / 2;
        if touched < stale_before
            && !self
                .meta
                .touch_link(repo.key(), digest, stale_before)
                .await?
        {
            return Err(RegistryError::BlobUnknown);
        }
        Ok(size)
    }

    /// Open a blob visible in `repo`, optionally a byte range of it.
    /// `range` is resolved against the blob size by the caller-supplied function.
    pub async fn open_blob(
        &self,
        repo: &RepoId,
        digest: &Digest,
        range: impl FnOnce(u64) -> Result<Option<ByteRange>>,
    ) -> Result<BlobBody> {
        // One query for the size, the sealing and the repository's key.
        let blob = self
            .meta
            .blob_read(repo.key(), digest)
            .await?
            .ok_or(RegistryError::BlobUnknown)?;
        let size = blob.size;
        let range = range(size)?;
        let stream = self.read_blob_through(repo, digest, &blob, range).await?;
        Ok(BlobBody {
            size,
            range,
            stream,
        })
    }

    /// Where a client may fetch blob `digest` of `repo` itself, bypassing
    /// this node, when downloads are redirected to the storage (presigned S3
    /// URLs; `storage_redirects`). `None`: stream it with [`Registry::open_blob`].
    pub async fn blob_download_url(
        &self,
        repo: &RepoId,
        digest: &Digest,
    ) -> Result<Option<String>> {
        let Some(valid) = self.limits.download_redirects else {
            return Ok(None);
        };
        self.stat_blob(repo, digest).await?;
        // The storage holds only sealed bytes: a client could not read them.
        // A plaintext blob from before encryption may still be redirected.
        match self.meta.blob_sealing(digest).await? {
            Some(s) if !s.sealed => Ok(self.legacy_blobs.download_url(digest, valid)),
            _ => Ok(None),
        }
    }

    /// Make a blob of repository `from` visible in `repo` without copying it.
    /// Returns false when `from` does not hold it (the caller then starts an upload).
    ///
    /// As in ECR, a mount needs the registry's `BLOB_MOUNTING` setting on
    /// (`account_settings`) and the same encryption settings (type and key)
    /// in both repositories: otherwise it is refused and the client uploads.
    pub async fn mount_blob(&self, repo: &RepoId, from: &RepoId, digest: &Digest) -> Result<bool> {
        let target = self.writable_repository(repo).await?;
        if !self.blob_mounting(&repo.registry).await? {
            return Ok(false);
        }
        let Some(source) = self.meta.get_repository(from.key()).await? else {
            return Ok(false);
        };
        if source.encryption_type != target.encryption_type
            || self.repository_key(&source).await? != self.repository_key(&target).await?
        {
            return Ok(false);
        }
        Ok(self.meta.mount_blob(repo.key(), from.key(), digest).await?)
    }

    /// Remove a blob from a repository. A blob that a manifest of the
    /// repository references is refused: deleting it would break that image
    /// (in ECR a layer goes only with the last image that uses it). The bytes
    /// go when garbage collection finds nothing else referencing them.
    pub async fn delete_blob(&self, repo: &RepoId, digest: &Digest) -> Result<()> {
        match self.meta.unlink_blob(repo.key(), digest).await? {
            crate::metadata::Unlink::Removed => Ok(()),
            crate::metadata::Unlink::NotLinked => Err(RegistryError::BlobUnknown),
            crate::metadata::Unlink::Referenced(m) => Err(RegistryError::BlobReferenced(m)),
        }
    }

    // ---- manifests ----------------------------------------------------------

    /// Validate and store a manifest under `reference` (a tag or its digest),
    /// replicated as the registry's replication configuration says.
    pub async fn put_manifest(
        &self,
        repo: &RepoId,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<PushedManifest> {
        self.store_manifest(repo, reference, content_type, bytes, true)
            .await
    }

    /// Store a manifest that replication brought: as a push, except that it
    /// is not replicated further (ECR replicates a push once, never through
    /// a second hop).
    pub async fn put_replicated_manifest(
        &self,
        repo: &RepoId,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<PushedManifest> {
        self.store_manifest(repo, reference, content_type, bytes, false)
            .await
    }

    async fn store_manifest(
        &self,
        repo: &RepoId,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: &[u8],
        replicate: bool,
    ) -> Result<PushedManifest> {
        if bytes.len() > self.limits.max_manifest_bytes {
            return Err(RegistryError::ManifestInvalid(format!(
                "manifest is {} bytes; the limit is {}",
                bytes.len(),
                self.limits.max_manifest_bytes
            )));
        }
        let (digest, tag) = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), bytes);
                if &actual != d {
                    return Err(RegistryError::DigestInvalid(format!(
                        "manifest digest is {actual}, not {d}"
                    )));
                }
                (actual, None)
            }
            Reference::Tag(t) => (Digest::sha256_of(bytes), Some(t.as_str())),
        };
        let parsed = manifest::parse(content_type, bytes, self.limits.max_image_layers)
            .map_err(RegistryError::ManifestInvalid)?;
        // The push's audit event, written with the manifest, says what was stored.
        crate::audit::note(|e| {
            let mut image_id = serde_json::json!({ "imageDigest": digest.as_str() });
            if let Some(t) = tag {
                image_id["imageTag"] = t.into();
            }
            e.response_elements = Some(serde_json::json!({ "image": {
                "registryId": crate::reference::key_account(&repo.registry),
                "repositoryName": repo.name.as_str(),
                "imageId": image_id,
                "imageManifestMediaType": parsed.media_type,
            }}));
        });
        let settings = self.writable_repository(repo).await?;
        let mut layer_bytes = parsed.layer_bytes;
        for child in &parsed.children {
            if let Some(size) = self.meta.image_size(repo.key(), &child.digest).await? {
                layer_bytes = layer_bytes.max(size);
            }
        }
        // Scan on push: images and indexes (not artifacts) of a repository
        // the scanning configuration scans on push.
        let scannable = match parsed.kind {
            manifest::Kind::Index => true,
            manifest::Kind::Image => {
                scan_config::is_image_config(parsed.config_media_type.as_deref())
            }
        };
        let scanning = if scannable {
            let e = self
                .scanning_configuration(&repo.registry)
                .await?
                .effective(&settings);
            e.on_push().then_some(e.scan_type)
        } else {
            None
        };
        let scan_job = crate::jobs::scan_image(repo.key(), digest.as_str());
        let replicate_to: Vec<_> = if replicate {
            self.replication_configuration(&repo.registry)
                .await?
                .destinations_for(repo.name.as_str())
                .into_iter()
                .map(|d| {
                    let job = crate::jobs::replicate(&d);
                    (d, job)
                })
                .collect()
        } else {
            Vec::new()
        };
        // Sealed at rest like blobs, under a data key of its own wrapped by
        // the repository's key (a push to a repository whose key is
        // disabled fails here).
        let key = self.repository_key(&settings).await?;
        let dek = crate::kms::DataKey::generate();
        let ctx = sealing::manifest_context(repo.key(), &digest);
        let wrapped = self.kms.wrap(&key, &dek, &ctx).await?;
        let sealed = crate::secrets::seal_with(dek.bytes(), bytes, &ctx);
        let sealed_annotations = parsed
            .annotations
            .as_deref()
            .map(|a| sealing::seal_annotations(&dek, &ctx, a));
        let outcome = self
            .meta
            .put_manifest(&NewManifest {
                repo: repo.key(),
                digest: &digest,
                media_type: &parsed.media_type,
                artifact_type: parsed.artifact_type.as_deref(),
                config_media_type: parsed.config_media_type.as_deref(),
                subject: parsed.subject.as_ref(),
                annotations: sealed_annotations.as_deref(),
                content: &sealed,
                sealing: Some((key.as_str(), &wrapped)),
                blobs: &parsed.blobs,
                children: &parsed.children,
                layer_bytes,
                tag,
                tag_immutable: tag.is_some_and(|t| tag_is_immutable(&settings, t)),
                scan: scanning.map(|t| (t.as_str(), &scan_job)),
                replicate: &replicate_to,
            })
            .await?;
        match outcome {
            PutManifestOutcome::Stored {
                new_manifest,
                tag_changed,
            } => {
                if (new_manifest && scanning.is_some())
                    || ((new_manifest || tag_changed) && !replicate_to.is_empty())
                {
                    self.jobs_queued.notify_one();
                }
                Ok(PushedManifest {
                    digest,
                    subject: parsed.subject,
                    media_type: parsed.media_type,
                    changed: new_manifest || tag_changed,
                })
            }
            PutManifestOutcome::MissingBlob(d) => Err(RegistryError::ManifestBlobUnknown(d)),
            PutManifestOutcome::MissingChild(d) => Err(RegistryError::ManifestChildUnknown(d)),
            PutManifestOutcome::SizeMismatch {
                digest,
                declared,
                stored,
            } => Err(RegistryError::ManifestInvalid(format!(
                "the descriptor of {digest} gives size {declared}, but the stored content is {stored} bytes"
            ))),
            PutManifestOutcome::TagImmutable => Err(RegistryError::TagImmutable {
                tag: tag.unwrap_or_default().to_string(),
                repository: repo.name.to_string(),
            }),
        }
    }

    pub async fn get_manifest(&self, repo: &RepoId, reference: &Reference) -> Result<ManifestRow> {
        let row = match reference {
            Reference::Tag(t) => self.meta.get_manifest_by_tag(repo.key(), t).await?,
            Reference::Digest(d) => self.meta.get_manifest(repo.key(), d).await?,
        };
        match row {
            Some(r) => self.open_manifest(repo.key(), r).await,
            // Only on the miss path: say which of repository or manifest is missing.
            None if !self.meta.repository_exists(repo.key()).await? => Err(repo.not_found()),
            None => Err(RegistryError::ManifestUnknown(format!(
                "{repo}:{reference}"
            ))),
        }
    }

    /// A manifest fetched to be pulled: like [`Registry::get_manifest`], and
    /// the pull time is recorded (by a job, at most once per
    /// [`PULL_TIME_RESOLUTION_MS`]) for `lastRecordedPullTime` and lifecycle rules.
    pub async fn pull_manifest(&self, repo: &RepoId, reference: &Reference) -> Result<ManifestRow> {
        let m = self.get_manifest(repo, reference).await?;
        let now = now_millis();
        let stale_before = now - PULL_TIME_RESOLUTION_MS;
        if m.last_pulled_at.is_none_or(|t| t < stale_before) {
            // A job records it: the pull itself writes one queue row at most
            // (a pull already queued for this image is not queued again).
            let job = crate::jobs::record_pull(repo.key(), m.digest.as_str(), now, stale_before);
            if let Err(e) = self.meta.enqueue_job(&job).await {
                tracing::warn!(digest = %m.digest, error = %e, "could not queue the pull time");
            }
        }
        Ok(m)
    }

    /// Delete a tag, or a manifest (with all its tags) by digest. Returns the
    /// tags removed.
    pub async fn delete_manifest(
        &self,
        repo: &RepoId,
        reference: &Reference,
    ) -> Result<Vec<String>> {
        let removed = match reference {
            Reference::Tag(t) => self
                .meta
                .delete_tag(repo.key(), t)
                .await?
                .then(|| vec![t.clone()]),
            Reference::Digest(d) => match self.meta.delete_manifest(repo.key(), d).await? {
                crate::metadata::DeleteManifest::Deleted(tags) => Some(tags),
                crate::metadata::DeleteManifest::NotFound => None,
                crate::metadata::DeleteManifest::Referenced => {
                    return Err(RegistryError::ManifestReferenced);
                }
            },
        };
        removed.ok_or_else(|| RegistryError::ManifestUnknown(format!("{repo}:{reference}")))
    }

    // ---- listing ------------------------------------------------------------

    /// Tags of `repo` after `last`, at most `n`. Also returns whether more follow.
    pub async fn list_tags(
        &self,
        repo: &RepoId,
        last: Option<&str>,
        n: u32,
    ) -> Result<(Vec<String>, bool)> {
        let mut tags = self.meta.list_tags(repo.key(), last, n as i64 + 1).await?;
        if tags.is_empty() && !self.meta.repository_exists(repo.key()).await? {
            return Err(repo.not_found());
        }
        let more = tags.len() > n as usize;
        tags.truncate(n as usize);
        Ok((tags, more))
    }

    /// Names of the repositories of `registry` after `last` that `visible`
    /// admits, at most `n`, and whether more follow. Repositories `visible`
    /// refuses are skipped (never returned, never a cursor).
    pub async fn catalog<F>(
        &self,
        registry: &str,
        last: Option<&str>,
        n: u32,
        visible: impl Fn(&RepositoryRow) -> F,
    ) -> Result<(Vec<String>, bool)>
    where
        F: std::future::Future<Output = Result<bool>>,
    {
        let want = n as usize;
        let mut names = Vec::new();
        let mut cursor = last.map(str::to_string);
        let batch = (want as i64 + 1).clamp(100, 1000);
        loop {
            let rows = self
                .meta
                .list_repositories(registry, cursor.as_deref(), batch)
                .await?;
            let exhausted = (rows.len() as i64) < batch;
            cursor = rows.last().map(|r| r.name.clone());
            for r in &rows {
                if visible(r).await? {
                    if names.len() == want {
                        return Ok((names, true));
                    }
                    names.push(r.name.clone());
                }
            }
            if exhausted {
                return Ok((names, false));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_whole_tags() {
        assert!(wildcard_match("latest", "latest"));
        assert!(!wildcard_match("latest", "latest2"));
        assert!(wildcard_match("dev-*", "dev-1"));
        assert!(!wildcard_match("dev-*", "devX"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXbYc"));
        assert!(!wildcard_match("a*b*c", "aXcYb"));
        assert!(!wildcard_match("ab*ba", "aba"));
    }

    #[test]
    fn mutability_modes() {
        let mut r = RepositoryRow::new("123456789012", "x");
        assert!(!tag_is_immutable(&r, "v1"));
        r.tag_mutability = "IMMUTABLE".into();
        assert!(tag_is_immutable(&r, "v1"));
        r.tag_mutability = "IMMUTABLE_WITH_EXCLUSION".into();
        r.mutability_exclusions = vec!["latest".into(), "dev-*".into()];
        assert!(!tag_is_immutable(&r, "latest"));
        assert!(!tag_is_immutable(&r, "dev-7"));
        assert!(tag_is_immutable(&r, "v1"));
        r.tag_mutability = "MUTABLE_WITH_EXCLUSION".into();
        assert!(tag_is_immutable(&r, "latest"));
        assert!(!tag_is_immutable(&r, "v1"));
    }
}
