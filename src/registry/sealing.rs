//! Encryption at rest, as the registry applies it (`docs/security.md`):
//! which key-encryption key protects a repository's content, how a blob's
//! data key is found for a read through a repository, how a committed upload
//! becomes a sealed blob (or joins the one already stored), and the
//! re-encryption of plaintext blobs from before encryption.
//!
//! One blob, one data key, whatever the number of repositories holding it:
//! the data key is wrapped once per key-encryption key of those
//! repositories, so a repository whose key is disabled cannot read the blob
//! while the others still can.

use super::{ManifestRow, Registry, RegistryError, Repo, RepoId, RepositoryRow, Result};
use crate::digest::Digest;
use crate::kms::{DataKey, KeyRef, KmsError};
use crate::metadata::BlobSealing;
use crate::storage::{ByteRange, ByteStream, StorageError, sealed};

/// What a blob's data key is bound to when wrapped.
fn blob_context(digest: &Digest) -> String {
    format!("blob:{digest}")
}

/// What a manifest's data key (and its sealed bytes) are bound to.
pub(super) fn manifest_context(repo: Repo<'_>, digest: &Digest) -> String {
    format!("manifest:{}/{}@{digest}", repo.registry, repo.name)
}

/// A manifest's annotations sealed with its data key, as stored.
pub(super) fn seal_annotations(dek: &DataKey, ctx: &str, annotations: &str) -> String {
    let sealed = crate::secrets::seal_with(
        dek.bytes(),
        annotations.as_bytes(),
        &format!("{ctx}#annotations"),
    );
    format!("{SEALED_TEXT}{}", hex::encode(sealed))
}

/// How sealed annotations start.
const SEALED_TEXT: &str = "sealed:";

/// The annotations object of a manifest, as compact JSON.
fn annotations_of(content: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(content).ok()?;
    v.get("annotations")
        .filter(|a| a.is_object())
        .map(|a| a.to_string())
}

/// What an upload session's data key is bound to when wrapped.
pub(super) fn upload_context(id: &str) -> String {
    format!("upload:{id}")
}

/// What [`Registry::replace_with_staged`] did.
enum Replaced {
    /// The staged copy is the blob now.
    Done,
    /// Someone changed the blob's sealing first: look again.
    Changed,
    /// The staged bytes are not the digest (verified): nothing published.
    Mismatch(Digest),
}

/// A sealed upload ready to be published.
#[derive(Clone, Copy)]
pub(super) struct SealedUpload<'a> {
    pub id: &'a str,
    pub staging: &'a str,
    /// Plaintext bytes staged.
    pub size: u64,
    pub key: &'a KeyRef,
    pub dek: &'a DataKey,
}

impl From<KmsError> for RegistryError {
    fn from(e: KmsError) -> Self {
        match e {
            KmsError::Meta(m) => RegistryError::Meta(m),
            KmsError::Unavailable(m) => RegistryError::Unavailable(m),
            other => RegistryError::Kms(other),
        }
    }
}

/// A blob the metadata store has and the storage lacks: logged, and unknown
/// to the client.
fn missing_bytes(digest: &Digest) -> RegistryError {
    tracing::error!(%digest, "blob is in the metadata store but missing from blob storage");
    RegistryError::BlobUnknown
}

/// A sealed-segment read that failed authentication: reported, never served.
fn integrity_error(digest: &Digest, e: std::io::Error) -> RegistryError {
    tracing::error!(%digest, error = %e, "blob failed its integrity check: altered or corrupted in storage");
    RegistryError::Integrity(format!("{digest}: {e}"))
}

impl Registry {
    /// The key-encryption key of a repository's content.
    pub async fn repository_key(&self, row: &RepositoryRow) -> Result<KeyRef> {
        Ok(self
            .kms
            .repository_key(
                &row.registry_id,
                &row.encryption_type,
                row.kms_key.as_deref(),
            )
            .await?)
    }

    /// The data key of sealed blob `digest` through `key`: its wrap under
    /// `key`, or (for a repository that holds the blob without one yet, such
    /// as after re-encryption) any usable wrap, re-wrapped under `key` — which
    /// fails if `key` itself is unusable, so a disabled key always stops reads.
    async fn blob_key(
        &self,
        digest: &Digest,
        sealing: &BlobSealing,
        key: &KeyRef,
    ) -> Result<DataKey> {
        let ctx = blob_context(digest);
        if let Some(w) = sealing.wrap_for(key.as_str()) {
            return Ok(self.kms.unwrap(key, w, &ctx).await?);
        }
        let dek = self.any_blob_key(digest, sealing).await?;
        let wrapped = self.kms.wrap(key, &dek, &ctx).await?;
        self.meta
            .add_blob_wrap(digest, key.as_str(), &wrapped)
            .await?;
        Ok(dek)
    }

    /// The data key of sealed blob `digest` through whichever of its wraps
    /// is usable; the first key's error when none is.
    async fn any_blob_key(&self, digest: &Digest, sealing: &BlobSealing) -> Result<DataKey> {
        let ctx = blob_context(digest);
        let mut first_err = None;
        for (k, w) in &sealing.wraps {
            match self.kms.unwrap(&KeyRef::parse(k), w, &ctx).await {
                Ok(dek) => return Ok(dek),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err
            .map(RegistryError::from)
            .unwrap_or_else(|| RegistryError::Integrity(format!("{digest}: no wrapped data key"))))
    }

    /// Stream blob `digest` (or `range` of its `size` bytes) as `key` may
    /// read it: sealed blobs are decrypted, plaintext ones from before
    /// encryption are read from the legacy store.
    pub(super) async fn read_blob(
        &self,
        digest: &Digest,
        size: u64,
        range: Option<ByteRange>,
        key: Option<&KeyRef>,
    ) -> Result<ByteStream> {
        let sealing = self
            .meta
            .blob_sealing(digest)
            .await?
            .ok_or(RegistryError::BlobUnknown)?;
        if !sealing.sealed {
            return match self.legacy_blobs.read(digest, range).await {
                Ok(s) => Ok(s),
                Err(StorageError::NotFound) => Err(missing_bytes(digest)),
                Err(e) => Err(e.into()),
            };
        }
        let dek = match key {
            Some(k) => self.blob_key(digest, &sealing, k).await?,
            None => self.any_blob_key(digest, &sealing).await?,
        };
        self.open_sealed(digest, size, range, &dek).await
    }

    /// Stream sealed blob `digest` (or `range` of its `size` bytes) opened
    /// with `dek`; integrity failures are reported, never served.
    async fn open_sealed(
        &self,
        digest: &Digest,
        size: u64,
        range: Option<ByteRange>,
        dek: &DataKey,
    ) -> Result<ByteStream> {
        let store = self.blobs.clone();
        let d = digest.clone();
        let opened = sealed::open_range(size, range, dek.bytes(), |r| async move {
            store.read(&d, Some(r)).await
        })
        .await;
        match opened {
            Ok(s) => {
                let d = digest.clone();
                let metrics = self.metrics.clone();
                Ok(Box::pin(futures_util::StreamExt::map(s, move |r| {
                    r.inspect_err(|e| {
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            metrics.integrity_failures.inc();
                            tracing::error!(digest = %d, error = %e, "blob failed its integrity check mid-stream: altered or corrupted in storage");
                        }
                    })
                })))
            }
            Err(StorageError::NotFound) => Err(missing_bytes(digest)),
            Err(StorageError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                self.metrics.integrity_failures.inc();
                Err(integrity_error(digest, e))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A stored manifest with its bytes opened: a sealed one through the
    /// key that wrapped its data key (which must be usable), a plaintext one
    /// from before encryption as it is.
    pub async fn open_manifest(&self, repo: Repo<'_>, mut row: ManifestRow) -> Result<ManifestRow> {
        let Some((key_ref, wrapped)) = row.sealing.take() else {
            return Ok(row);
        };
        let ctx = manifest_context(repo, &row.digest);
        let dek = self
            .kms
            .unwrap(&KeyRef::parse(&key_ref), &wrapped, &ctx)
            .await?;
        row.content = crate::secrets::open_with(dek.bytes(), &row.content, &ctx).map_err(|_| {
            tracing::error!(digest = %row.digest, "manifest failed its integrity check: altered or corrupted in the database");
            RegistryError::Integrity(format!("manifest {}", row.digest))
        })?;
        Ok(row)
    }

    /// The manifests of `repo` that refer to `subject`, their annotations opened.
    pub async fn referrers(
        &self,
        repo: &RepoId,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<crate::metadata::ReferrerRow>> {
        let mut rows = self
            .meta
            .referrers(repo.key(), subject, artifact_type)
            .await?;
        for r in &mut rows {
            let (Some((key_ref, wrapped)), Some(text)) =
                (r.sealing.take(), r.annotations.as_deref())
            else {
                continue;
            };
            let Some(hexed) = text.strip_prefix(SEALED_TEXT) else {
                continue;
            };
            let digest: Digest = r
                .digest
                .parse()
                .map_err(|_| RegistryError::Integrity(format!("referrer digest {:?}", r.digest)))?;
            let ctx = manifest_context(repo.key(), &digest);
            let dek = self
                .kms
                .unwrap(&KeyRef::parse(&key_ref), &wrapped, &ctx)
                .await?;
            let opened = hex::decode(hexed)
                .ok()
                .and_then(|b| {
                    crate::secrets::open_with(dek.bytes(), &b, &format!("{ctx}#annotations")).ok()
                })
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    RegistryError::Integrity(format!("annotations of manifest {digest}"))
                })?;
            r.annotations = Some(opened);
        }
        Ok(rows)
    }

    /// Manifest `digest` of `repo`, opened, if stored (for the services).
    pub async fn stored_manifest(
        &self,
        repo: Repo<'_>,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>> {
        match self.meta.get_manifest(repo, digest).await? {
            Some(row) => Ok(Some(self.open_manifest(repo, row).await?)),
            None => Ok(None),
        }
    }

    /// Stream blob `digest` (or `range` of it) of `repo`, as `blob` (from
    /// [`crate::metadata::MetadataStore::blob_read`]) describes it: through
    /// the repository's key's wrap, found with one more query; the general
    /// path when the wrap is missing or the blob is plaintext.
    pub(super) async fn read_blob_through(
        &self,
        repo: &RepoId,
        digest: &Digest,
        blob: &crate::metadata::BlobRead,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        let key = self
            .kms
            .repository_key(
                &repo.registry,
                &blob.encryption_type,
                blob.kms_key.as_deref(),
            )
            .await?;
        if blob.sealed
            && let Some(wrapped) = self.meta.blob_wrap(digest, key.as_str()).await?
        {
            let dek = self
                .kms
                .unwrap(&key, &wrapped, &blob_context(digest))
                .await?;
            return self.open_sealed(digest, blob.size, range, &dek).await;
        }
        self.read_blob(digest, blob.size, range, Some(&key)).await
    }

    /// Blob `digest` whole, for the server's own use (scanning): through any
    /// usable wrap of its data key.
    pub async fn read_blob_internal(&self, digest: &Digest) -> Result<ByteStream> {
        let size = self
            .meta
            .blob_size(digest)
            .await?
            .ok_or(RegistryError::BlobUnknown)?;
        self.read_blob(digest, size, None, None).await
    }

    /// Publish the sealed upload `id` of `size` bytes, sealed under `dek`
    /// for `key`, as blob `digest` (claimed by the caller): the staged copy
    /// becomes the blob, or, when the blob is already stored sealed, the
    /// stored copy's data key is wrapped for `key` and the staged copy goes.
    /// With `verify`, a published copy is first read back and hashed.
    pub(super) async fn publish_sealed(
        &self,
        upload: &SealedUpload<'_>,
        digest: &Digest,
        verify: bool,
    ) -> Result<std::result::Result<(), Digest>> {
        let SealedUpload { id, key, .. } = *upload;
        let ctx = blob_context(digest);
        for _ in 0..5 {
            let current = self.meta.blob_sealing(digest).await?.unwrap_or_default();
            if current.sealed {
                let joined = match current.wrap_for(key.as_str()) {
                    Some(_) => true,
                    None => match self.any_blob_key(digest, &current).await {
                        Ok(existing) => {
                            let wrapped = self.kms.wrap(key, &existing, &ctx).await?;
                            self.meta
                                .add_blob_wrap(digest, key.as_str(), &wrapped)
                                .await?;
                            true
                        }
                        // No key that could open the stored copy is usable
                        // (disabled, pending deletion, deleted): the staged
                        // copy replaces it, wrapped for this key alone. The
                        // other repositories lose nothing: each re-wraps this
                        // copy's key for itself on its next read, which needs
                        // its own key to be usable, as before.
                        Err(RegistryError::Kms(e)) if e.is_key_state() => false,
                        Err(e) => return Err(e),
                    },
                };
                if joined {
                    if let Err(e) = self.blobs.abort_upload(id).await {
                        tracing::warn!(upload_id = id, error = %e, "could not remove a staged copy");
                    }
                    return Ok(Ok(()));
                }
            }
            match self
                .replace_with_staged(upload, digest, verify, &current)
                .await?
            {
                Replaced::Done => return Ok(Ok(())),
                Replaced::Changed => continue,
                Replaced::Mismatch(actual) => return Ok(Err(actual)),
            }
        }
        Err(RegistryError::Unavailable(format!(
            "{digest} is being published by another upload; retry shortly"
        )))
    }

    /// Under the blob's row lock, and if its sealing is still `seen`, make
    /// the staged copy the blob.
    async fn replace_with_staged(
        &self,
        upload: &SealedUpload<'_>,
        digest: &Digest,
        verify: bool,
        seen: &BlobSealing,
    ) -> Result<Replaced> {
        let SealedUpload {
            id,
            staging,
            size,
            key,
            dek,
        } = *upload;
        let wrapped = self.kms.wrap(key, dek, &blob_context(digest)).await?;
        let publication = self.meta.begin_publication(digest).await?;
        if publication.current != *seen {
            return Ok(Replaced::Changed);
        }
        self.blobs
            .commit_upload(id, sealed::sealed_len(size), staging, digest, false)
            .await?;
        if verify {
            let actual = self.hash_sealed(digest, size, dek).await?;
            if &actual != digest {
                drop(publication);
                if let Err(e) = self.blobs.delete(digest).await {
                    tracing::warn!(%digest, error = %e, "could not remove a copy that failed verification");
                }
                return Ok(Replaced::Mismatch(actual));
            }
        }
        publication
            .record(&[(key.as_str().to_string(), wrapped)])
            .await?;
        if !seen.sealed {
            // A plaintext copy from before encryption, if any, is superseded.
            if let Err(e) = self.legacy_blobs.delete(digest).await {
                tracing::warn!(%digest, error = %e, "could not remove a superseded plaintext copy");
            }
        }
        Ok(Replaced::Done)
    }

    /// The digest of what the sealed object `digest` holds.
    async fn hash_sealed(&self, digest: &Digest, size: u64, dek: &DataKey) -> Result<Digest> {
        use futures_util::StreamExt;
        let mut s = self.open_sealed(digest, size, None, dek).await?;
        let mut h = crate::digest::Hasher::new(digest.algorithm());
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(|e| integrity_error(digest, e))?;
            h.update(&chunk);
        }
        Ok(h.finish())
    }
}

/// What one pass of re-encryption did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResealReport {
    pub blobs: u64,
    pub bytes: u64,
    pub manifests: u64,
    /// Blobs left in plaintext for now: every key of the repositories that
    /// hold them is unusable, or their bytes do not match their digest.
    pub skipped: u64,
}

/// Blobs and manifests re-encrypted per batch.
const RESEAL_BATCH: u32 = 64;

impl Registry {
    /// Re-encrypt what a data directory older than encryption holds in
    /// plaintext: every plaintext manifest, and up to `max_blobs` plaintext
    /// blobs (each copied into the sealed store under a new data key wrapped
    /// for every repository that holds it, then its plaintext copy removed).
    /// Reads keep working throughout: a blob is read from the legacy store
    /// until the transaction that records its sealed copy commits.
    pub async fn reseal_legacy(&self, max_blobs: u64) -> Result<ResealReport> {
        let mut report = ResealReport::default();
        loop {
            let batch = self.meta.plaintext_manifests(RESEAL_BATCH).await?;
            if batch.is_empty() {
                break;
            }
            let mut progressed = false;
            for (registry, repository, digest, content) in batch {
                let repo = Repo {
                    registry: &registry,
                    name: &repository,
                };
                let Some(row) = self.meta.get_repository(repo).await? else {
                    continue;
                };
                let key = match self.repository_key(&row).await {
                    Ok(k) => k,
                    Err(RegistryError::Kms(_)) => continue,
                    Err(e) => return Err(e),
                };
                let dek = DataKey::generate();
                let ctx = manifest_context(repo, &digest);
                let wrapped = match self.kms.wrap(&key, &dek, &ctx).await {
                    Ok(w) => w,
                    Err(e) if e.is_key_state() => continue,
                    Err(e) => return Err(e.into()),
                };
                let sealed = crate::secrets::seal_with(dek.bytes(), &content, &ctx);
                let annotations =
                    annotations_of(&content).map(|a| seal_annotations(&dek, &ctx, &a));
                if self
                    .meta
                    .seal_manifest(
                        repo,
                        &digest,
                        &sealed,
                        annotations.as_deref(),
                        key.as_str(),
                        &wrapped,
                    )
                    .await?
                {
                    report.manifests += 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        let mut after = String::new();
        while report.blobs + report.skipped < max_blobs {
            let batch = self.meta.plaintext_blobs(&after, RESEAL_BATCH).await?;
            if batch.is_empty() {
                break;
            }
            for (digest, size, holders) in batch {
                after = digest.to_string();
                if report.blobs + report.skipped >= max_blobs {
                    break;
                }
                if self.reseal_blob(&digest, size, &holders).await? {
                    report.blobs += 1;
                    report.bytes += size;
                } else {
                    report.skipped += 1;
                }
            }
        }
        if report.manifests + report.blobs > 0 {
            self.meta.checkpoint().await?;
        }
        Ok(report)
    }

    /// Remove plaintext copies of blobs that are sealed by now (a
    /// re-encryption interrupted between recording the sealed copy and
    /// deleting the old one leaves one behind). Returns how many.
    pub async fn sweep_legacy_copies(&self) -> Result<u64> {
        let mut removed = 0;
        for shard in 0..=255u8 {
            for f in self
                .legacy_blobs
                .list_blob_shard(&format!("{shard:02x}"))
                .await?
            {
                let Ok(d) = f.name.parse::<Digest>() else {
                    continue;
                };
                if self.meta.blob_sealing(&d).await?.is_some_and(|s| s.sealed) {
                    self.legacy_blobs.delete(&d).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Copy one plaintext blob into the sealed store. False when it must
    /// wait (no usable key, or it changed meanwhile) or its bytes are bad.
    async fn reseal_blob(
        &self,
        digest: &Digest,
        size: u64,
        holders: &[(String, String)],
    ) -> Result<bool> {
        use futures_util::StreamExt;
        // The keys of the repositories that hold it; unusable ones are left
        // out (such a repository re-wraps for itself once its key is back).
        let ctx = blob_context(digest);
        let dek = DataKey::generate();
        let mut wraps: Vec<(String, Vec<u8>)> = Vec::new();
        let mut keys: Vec<KeyRef> = Vec::new();
        for (registry, repository) in holders {
            let repo = Repo {
                registry,
                name: repository,
            };
            if let Some(row) = self.meta.get_repository(repo).await?
                && let Ok(k) = self.repository_key(&row).await
                && !keys.contains(&k)
            {
                keys.push(k);
            }
        }
        if keys.is_empty() {
            // Held by no repository any more (GC will collect it) or only by
            // ones whose key is gone: the server-managed key protects it.
            keys.push(KeyRef::ServerManaged);
        }
        for k in &keys {
            match self.kms.wrap(k, &dek, &ctx).await {
                Ok(w) => wraps.push((k.as_str().to_string(), w)),
                Err(e) if e.is_key_state() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if wraps.is_empty() {
            return Ok(false);
        }
        let seen = BlobSealing {
            sealed: false,
            wraps: Vec::new(),
        };
        // Copy outside any lock: the plaintext copy stays readable.
        let id = uuid::Uuid::new_v4().to_string();
        self.blobs.create_upload(&id).await?;
        let copied = async {
            let mut src = match self.legacy_blobs.read(digest, None).await {
                Ok(s) => s,
                Err(StorageError::NotFound) => return Ok(None),
                Err(e) => return Err(RegistryError::from(e)),
            };
            let mut w = sealed::upload_writer(&*self.blobs, &id, 0, "", dek.bytes(), &[]).await?;
            let mut h = crate::digest::Hasher::new(digest.algorithm());
            while let Some(chunk) = src.next().await {
                let chunk = chunk.map_err(|e| RegistryError::Storage(StorageError::Io(e)))?;
                h.update(&chunk);
                w.write(chunk).await?;
            }
            let (staged, _) = w.finish().await?;
            Ok(Some((h.finish(), staged)))
        }
        .await;
        let (actual, staged) = match copied {
            Ok(Some(c)) => c,
            Ok(None) => {
                tracing::error!(%digest, "plaintext blob is in the metadata store but missing from blob storage");
                let _ = self.blobs.abort_upload(&id).await;
                return Ok(false);
            }
            Err(e) => {
                let _ = self.blobs.abort_upload(&id).await;
                return Err(e);
            }
        };
        if &actual != digest || staged.size != size {
            tracing::error!(%digest, %actual, "plaintext blob does not match its digest; left as it is");
            let _ = self.blobs.abort_upload(&id).await;
            return Ok(false);
        }
        let publication = self.meta.begin_publication(digest).await?;
        if publication.current != seen {
            drop(publication);
            let _ = self.blobs.abort_upload(&id).await;
            return Ok(false);
        }
        self.blobs
            .commit_upload(
                &id,
                sealed::sealed_len(size),
                &staged.staging,
                digest,
                false,
            )
            .await?;
        publication.record(&wraps).await?;
        if let Err(e) = self.legacy_blobs.delete(digest).await {
            tracing::warn!(%digest, error = %e, "could not remove a re-encrypted blob's plaintext copy");
        }
        Ok(true)
    }
}
