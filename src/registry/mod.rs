//! The registry service: what a registry does, independent of the wire
//! protocol. The OCI `/v2/` controllers (`distribution`) call it today; the
//! ECR API controllers will call the same functions, so both faces share one
//! set of rules (what a manifest must reference, when a blob is visible, how an
//! upload is committed).
//!
//! It owns no state of its own: everything lives in the [`MetadataStore`] and
//! the [`BlobStore`], so any number of nodes can serve the same registry.

pub mod manifest;
pub mod uploads;

use std::sync::Arc;

use crate::digest::Digest;
use crate::metadata::{
    ManifestRow, MetaError, MetadataStore, NewManifest, PutManifestOutcome, ReferrerRow,
};
use crate::metrics::Metrics;
use crate::reference::{Reference, RepoName};
use crate::storage::{BlobStore, ByteRange, ByteStream, StorageError};

/// Errors of registry operations. The `/v2/` layer maps them to OCI error
/// codes, the ECR layer to ECR exception names.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("repository name not known to registry")]
    NameUnknown,
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
    #[error("manifest is referenced by an image index in this repository; delete the index first")]
    ManifestReferenced,
    #[error("invalid tag: {0}")]
    TagInvalid(String),
    /// A chunk did not start where the upload ends (`size` bytes received so far).
    #[error("chunk out of order: the upload holds {size} bytes")]
    ChunkOutOfOrder { size: u64 },
    #[error("requested range not satisfiable (blob size {size})")]
    RangeNotSatisfiable { size: u64 },
    #[error("the request body ended early: {0}")]
    BodyInterrupted(String),
    #[error("storage is full")]
    StorageFull,
    #[error(transparent)]
    Storage(StorageError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Full => RegistryError::StorageFull,
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 8 << 20,
        }
    }
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
}

pub struct Registry {
    pub meta: MetadataStore,
    pub blobs: Arc<dyn BlobStore>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
}

impl Registry {
    // ---- blobs --------------------------------------------------------------

    /// Size of a blob visible in `repo`.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.meta
            .linked_blob_size(repo.as_str(), digest)
            .await?
            .ok_or(RegistryError::BlobUnknown)
    }

    /// Open a blob visible in `repo`, optionally a byte range of it.
    /// `range` is resolved against the blob size by the caller-supplied function.
    pub async fn open_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: impl FnOnce(u64) -> Result<Option<ByteRange>>,
    ) -> Result<BlobBody> {
        let size = self.stat_blob(repo, digest).await?;
        let range = range(size)?;
        let stream = match self.blobs.read(digest, range).await {
            Ok(s) => s,
            Err(StorageError::NotFound) => {
                tracing::error!(%digest, "blob is in the metadata store but missing from blob storage");
                return Err(RegistryError::BlobUnknown);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(BlobBody {
            size,
            range,
            stream,
        })
    }

    /// Make a blob of repository `from` visible in `repo` without copying it.
    /// Returns false when `from` does not hold it (the caller then starts an upload).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<bool> {
        Ok(self
            .meta
            .mount_blob(repo.as_str(), from.as_str(), digest)
            .await?)
    }

    /// Remove a blob from a repository. The bytes go when garbage collection
    /// finds nothing else referencing them.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if self.meta.unlink_blob(repo.as_str(), digest).await? {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown)
        }
    }

    // ---- manifests ----------------------------------------------------------

    /// Validate and store a manifest under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: &[u8],
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
        let parsed =
            manifest::parse(content_type, bytes).map_err(RegistryError::ManifestInvalid)?;
        let outcome = self
            .meta
            .put_manifest(&NewManifest {
                repository: repo.as_str(),
                digest: &digest,
                media_type: &parsed.media_type,
                artifact_type: parsed.artifact_type.as_deref(),
                subject: parsed.subject.as_ref(),
                annotations: parsed.annotations.as_deref(),
                content: bytes,
                blobs: &parsed.blobs,
                children: &parsed.children,
                tag,
            })
            .await?;
        match outcome {
            PutManifestOutcome::Stored => Ok(PushedManifest {
                digest,
                subject: parsed.subject,
            }),
            PutManifestOutcome::MissingBlob(d) | PutManifestOutcome::MissingChild(d) => {
                Err(RegistryError::ManifestBlobUnknown(d))
            }
        }
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestRow> {
        let row = match reference {
            Reference::Tag(t) => self.meta.get_manifest_by_tag(repo.as_str(), t).await?,
            Reference::Digest(d) => self.meta.get_manifest(repo.as_str(), d).await?,
        };
        row.ok_or_else(|| RegistryError::ManifestUnknown(format!("{repo}:{reference}")))
    }

    /// Delete a tag, or a manifest (with all its tags) by digest.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let found = match reference {
            Reference::Tag(t) => self.meta.delete_tag(repo.as_str(), t).await?,
            Reference::Digest(d) => {
                if self.meta.manifest_is_referenced(repo.as_str(), d).await? {
                    return Err(RegistryError::ManifestReferenced);
                }
                self.meta.delete_manifest(repo.as_str(), d).await?
            }
        };
        if found {
            Ok(())
        } else {
            Err(RegistryError::ManifestUnknown(format!(
                "{repo}:{reference}"
            )))
        }
    }

    // ---- listing ------------------------------------------------------------

    /// Tags of `repo` after `last`, at most `n`. Also returns whether more follow.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: u32,
    ) -> Result<(Vec<String>, bool)> {
        let mut tags = self
            .meta
            .list_tags(repo.as_str(), last, n as i64 + 1)
            .await?;
        if tags.is_empty() && !self.meta.repository_exists(repo.as_str()).await? {
            return Err(RegistryError::NameUnknown);
        }
        let more = tags.len() > n as usize;
        tags.truncate(n as usize);
        Ok((tags, more))
    }

    /// Repository names after `last`, at most `n`, and whether more follow.
    pub async fn catalog(&self, last: Option<&str>, n: u32) -> Result<(Vec<String>, bool)> {
        let mut names = self.meta.list_repositories(last, n as i64 + 1).await?;
        let more = names.len() > n as usize;
        names.truncate(n as usize);
        Ok((names, more))
    }

    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRow>> {
        Ok(self
            .meta
            .referrers(repo.as_str(), subject, artifact_type)
            .await?)
    }
}
