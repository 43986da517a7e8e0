//! Blob upload sessions: start, append chunks, commit under a digest, cancel,
//! and reap abandoned sessions.
//!
//! A session is a row in the metadata store (repository, bytes received, the
//! SHA-256 state after those bytes) plus a staging area in blob storage. Each
//! chunk is hashed on the request task while a storage thread writes it; only
//! when the chunk is durable is the row advanced (compare-and-swap on the
//! size), so a session survives restarts and a client that disconnects
//! mid-chunk can resume from the last acknowledged offset. A blob becomes
//! visible only after its bytes are published (fsync + rename) and the
//! metadata transaction that links it has committed.

use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{Registry, RegistryError, RepoId, Result};
use crate::digest::{Algorithm, Digest, ResumableSha256};
use crate::kms::{DataKey, KeyRef};
use crate::metadata::{BlobClaim, CreateUpload, UploadRow, WriterClaim, now_millis};
use crate::storage::{Staged, StorageError, UploadWriter, sealed};

/// What a session's running hash state is bound to when sealed (it holds
/// the last bytes of an unfinished block in the clear).
fn state_context(id: &str) -> String {
    format!("upload-hash:{id}")
}

/// A session's state as stored: for a sealed session, its running hash
/// and the plaintext of its final (short) segment, sealed together under
/// its data key (the final segment is rewritten by every chunk, so the row,
/// not the store, is where the acknowledged one is kept).
fn seal_state(id: &str, dek: Option<&DataKey>, hasher: &ResumableSha256, tail: &[u8]) -> Vec<u8> {
    let state = hasher.state();
    match dek {
        Some(k) => {
            let mut plain = Vec::with_capacity(4 + state.len() + tail.len());
            plain.extend_from_slice(&(state.len() as u32).to_be_bytes());
            plain.extend_from_slice(&state);
            plain.extend_from_slice(tail);
            crate::secrets::seal_with(k.bytes(), &plain, &state_context(id))
        }
        None => state,
    }
}

/// The running hash of `session` and the plaintext of its final segment
/// (empty for a plaintext session), from its stored state.
fn open_state(session: &UploadRow, dek: Option<&DataKey>) -> Result<(ResumableSha256, Bytes)> {
    let unreadable = || RegistryError::UploadInvalid("stored hash state is unreadable".into());
    let (state, tail) = match dek {
        Some(k) => {
            let plain = crate::secrets::open_with(
                k.bytes(),
                &session.hash_state,
                &state_context(&session.id),
            )
            .map_err(|_| {
                RegistryError::Integrity(format!("upload {}: session state", session.id))
            })?;
            let n = plain
                .get(..4)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap_or_default()) as usize)
                .ok_or_else(unreadable)?;
            if plain.len() < 4 + n {
                return Err(unreadable());
            }
            (
                plain[4..4 + n].to_vec(),
                Bytes::copy_from_slice(&plain[4 + n..]),
            )
        }
        None => (session.hash_state.clone(), Bytes::new()),
    };
    Ok((
        ResumableSha256::from_state(&state).ok_or_else(unreadable)?,
        tail,
    ))
}

/// Appends a chunk to an upload's staged bytes.
enum ChunkWriter {
    Sealed(Box<sealed::SealedWriter>),
    /// A session opened before encryption.
    Plain(Box<dyn UploadWriter>),
}

impl ChunkWriter {
    async fn write(&mut self, chunk: Bytes) -> std::result::Result<(), StorageError> {
        match self {
            ChunkWriter::Sealed(w) => w.write(chunk).await,
            ChunkWriter::Plain(w) => w.write(chunk).await,
        }
    }

    /// What is staged now, and (sealed) the final segment's plaintext.
    async fn finish(self) -> std::result::Result<(Staged, Bytes), StorageError> {
        match self {
            ChunkWriter::Sealed(w) => w.finish().await,
            ChunkWriter::Plain(w) => Ok((w.finish().await?, Bytes::new())),
        }
    }
}

/// How long a commit waits for a collector deleting the same digest.
const CLAIM_WAIT: Duration = Duration::from_secs(10);
/// A writer's lease lasts this long past its last renewal: a node that dies
/// mid-chunk blocks its session for at most this long.
const LEASE: Duration = Duration::from_secs(15);
/// A writer renews its lease when it is this old.
const LEASE_RENEW: Duration = Duration::from_secs(5);
/// How long a chunk waits for the lease of a request that is winding down.
const LEASE_WAIT: Duration = Duration::from_secs(2);

/// The writer lease of one upload session, held while a chunk streams.
/// Dropped without being consumed by the chunk's record (the client went
/// away, the chunk failed), it is released in the background.
struct WriterLease {
    meta: crate::metadata::MetadataStore,
    id: String,
    token: String,
    renewed: std::time::Instant,
    /// The lease ended with the chunk's record (or was lost).
    released: bool,
}

impl WriterLease {
    /// Renew the lease if it is due; fail if another writer has taken it.
    async fn keep(&mut self, meta: &crate::metadata::MetadataStore, size: u64) -> Result<()> {
        if self.renewed.elapsed() < LEASE_RENEW {
            return Ok(());
        }
        let until = now_millis() + LEASE.as_millis() as i64;
        if !meta
            .renew_upload_writer(&self.id, &self.token, until)
            .await?
        {
            self.released = true;
            return Err(RegistryError::ChunkOutOfOrder { size });
        }
        self.renewed = std::time::Instant::now();
        Ok(())
    }
}

impl Drop for WriterLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (meta, id, token) = (self.meta.clone(), self.id.clone(), self.token.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = meta.release_upload_writer(&id, &token).await {
                    tracing::warn!(upload_id = %id, error = %e, "could not release an upload's writer lease");
                }
            });
        }
    }
}

/// Where a chunk claims to start and end (`Content-Range: first-last`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRange {
    pub first: u64,
    pub last: u64,
}

/// Upload ids are UUIDs we generate; anything else is unknown.
fn valid_upload_id(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Blobs smaller than this are not inventoried ahead of their manifest
/// (configs; a small layer is read at the scan in no time).
const PREFETCH_MIN_BYTES: u64 = 64 << 10;

impl Registry {
    /// Open a new upload session in `repo` for `owner` (the caller's access
    /// key, or `ip:<address>` without authentication), within the quotas.
    ///
    /// The session's bytes are sealed under a data key of its own, wrapped
    /// by the repository's key: a push to a repository whose key is
    /// disabled fails here, before any byte is sent.
    pub async fn start_upload(&self, repo: &RepoId, owner: &str) -> Result<UploadRow> {
        let row = self.writable_repository(repo).await?;
        let key = self.repository_key(&row).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let dek = DataKey::generate();
        let state = seal_state(&id, Some(&dek), &ResumableSha256::new(), &[]);
        let wrapped = self
            .kms
            .wrap(&key, &dek, &super::sealing::upload_context(&id))
            .await?;
        crate::audit::note(|e| {
            e.response_elements = Some(serde_json::json!({ "uploadId": id }));
        });
        // Row first: if it cannot be written (quota, full database) nothing
        // else exists; if the staging file cannot be made, the row goes again.
        match self
            .meta
            .create_upload(
                &id,
                repo.key(),
                owner,
                &state,
                Some((key.as_str(), &wrapped)),
                self.limits.uploads,
            )
            .await?
        {
            CreateUpload::Created => {}
            CreateUpload::CallerQuota(n) => {
                return Err(RegistryError::UploadQuota(format!(
                    "this caller already has {n} upload sessions open; finish or cancel some first"
                )));
            }
            CreateUpload::RepositoryQuota(n) => {
                return Err(RegistryError::UploadQuota(format!(
                    "repository {repo} already has {n} upload sessions open; finish or cancel some first"
                )));
            }
        }
        if let Err(e) = self.blobs.create_upload(&id).await {
            let _ = self.meta.delete_upload(&id).await;
            return Err(e.into());
        }
        self.upload_status(repo, &id).await
    }

    /// The session `id`, which must belong to `repo`.
    pub async fn upload_status(&self, repo: &RepoId, id: &str) -> Result<UploadRow> {
        if !valid_upload_id(id) {
            return Err(RegistryError::UploadUnknown);
        }
        match self.meta.get_upload(id).await? {
            Some(row)
                if row.registry_id == repo.registry && row.repository == repo.name.as_str() =>
            {
                Ok(row)
            }
            _ => Err(RegistryError::UploadUnknown),
        }
    }

    /// Whether a chunk starting at `range` may be appended to session `id` now
    /// (the session exists in `repo` and the chunk starts where it ends).
    pub async fn check_chunk(
        &self,
        repo: &RepoId,
        id: &str,
        range: Option<ChunkRange>,
    ) -> Result<UploadRow> {
        let session = self.upload_status(repo, id).await?;
        match range {
            Some(r) if r.first != session.size || r.last < r.first => {
                Err(RegistryError::ChunkOutOfOrder { size: session.size })
            }
            _ => Ok(session),
        }
    }

    /// Append a chunk to a session. `range`, when the client sent one, must
    /// start exactly where the upload ends. Returns the session after the chunk.
    ///
    /// One request at a time appends to a session, whichever node it reaches:
    /// it holds the session's writer lease (in the metadata store, renewed
    /// while the chunk streams) and records the chunk only if it still holds
    /// it. A second request is told the chunk is out of order.
    pub async fn append_upload<S, E>(
        &self,
        session: UploadRow,
        range: Option<ChunkRange>,
        body: S,
    ) -> Result<UploadRow>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Display,
    {
        let id = session.id.as_str();
        if let Some(r) = range
            && (r.first != session.size || r.last < r.first)
        {
            return Err(RegistryError::ChunkOutOfOrder { size: session.size });
        }
        let key = self.session_key(&session).await?;
        let dek = key.as_ref().map(|(_, d)| d);
        let (mut hasher, tail) = open_state(&session, dek)?;
        let mut lease = self.take_writer_lease(&session).await?;
        let mut writer = self
            .chunk_writer(&session, dek, &tail)
            .await
            .map_err(|e| match e {
                StorageError::Full => RegistryError::StorageFull,
                // Another request is appending: this chunk is out of order.
                StorageError::Busy => RegistryError::ChunkOutOfOrder { size: session.size },
                StorageError::Unavailable(m) => RegistryError::Unavailable(m),
                other => RegistryError::UploadInvalid(format!("staged data unusable: {other}")),
            })?;
        let mut received: u64 = 0;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| RegistryError::BodyInterrupted(e.to_string()))?;
            if chunk.is_empty() {
                continue;
            }
            received += chunk.len() as u64;
            hasher.update(&chunk);
            writer.write(chunk).await?;
            lease.keep(&self.meta, session.size).await?;
        }
        let (staged, tail) = writer.finish().await?;
        self.metrics.bytes_in.inc_by(received);
        if staged.size != session.size + received {
            return Err(RegistryError::UploadInvalid(format!(
                "staged {} bytes, expected {}",
                staged.size,
                session.size + received
            )));
        }
        if let Some(r) = range
            && r.last - r.first + 1 != received
        {
            // Nothing is recorded: the session stays at its old size.
            return Err(RegistryError::ChunkOutOfOrder { size: session.size });
        }
        crate::audit::note(|e| {
            e.response_elements = Some(serde_json::json!({
                "uploadId": id,
                "lastByteReceived": staged.size.saturating_sub(1),
            }));
        });
        let recorded = self
            .meta
            .advance_upload(
                id,
                &lease.token,
                session.size,
                staged.size,
                &seal_state(id, dek, &hasher, &tail),
                &staged.staging,
            )
            .await?;
        lease.released = recorded;
        if !recorded {
            // Another request took the session over (our lease had expired).
            return match self.meta.get_upload(id).await? {
                Some(now) => Err(RegistryError::ChunkOutOfOrder { size: now.size }),
                None => Err(RegistryError::UploadUnknown),
            };
        }
        let store = match session.sealing {
            Some(_) => &self.blobs,
            None => &self.legacy_blobs,
        };
        if let Err(e) = store
            .upload_advanced(id, &session.staging, &staged.staging)
            .await
        {
            tracing::warn!(upload_id = id, error = %e, "could not drop superseded staging");
        }
        Ok(UploadRow {
            size: staged.size,
            hash_state: seal_state(id, dek, &hasher, &tail),
            staging: staged.staging,
            updated_at: now_millis(),
            ..session
        })
    }

    /// The key-encryption key and data key of a sealed session (`None`: a
    /// session opened before encryption). Fails when the repository's key
    /// is unusable now.
    async fn session_key(&self, session: &UploadRow) -> Result<Option<(KeyRef, DataKey)>> {
        let Some((key_ref, wrapped)) = &session.sealing else {
            return Ok(None);
        };
        let key = KeyRef::parse(key_ref);
        let dek = self
            .kms
            .unwrap(&key, wrapped, &super::sealing::upload_context(&session.id))
            .await?;
        Ok(Some((key, dek)))
    }

    /// The writer that appends to `session`'s staged bytes: sealing under
    /// the session's data key, or plaintext for a session opened before
    /// encryption.
    async fn chunk_writer(
        &self,
        session: &UploadRow,
        dek: Option<&DataKey>,
        tail: &[u8],
    ) -> std::result::Result<ChunkWriter, StorageError> {
        match dek {
            None => self
                .legacy_blobs
                .upload_writer(&session.id, session.size, &session.staging)
                .await
                .map(ChunkWriter::Plain),
            Some(dek) => sealed::upload_writer(
                &*self.blobs,
                &session.id,
                session.size,
                &session.staging,
                dek.bytes(),
                tail,
            )
            .await
            .map(|w| ChunkWriter::Sealed(Box::new(w))),
        }
    }

    /// The writer lease of `session`, waiting briefly for a request that is
    /// winding down (a client that disconnected mid-chunk and retries at once).
    async fn take_writer_lease(&self, session: &UploadRow) -> Result<WriterLease> {
        let token = uuid::Uuid::new_v4().to_string();
        let deadline = std::time::Instant::now() + LEASE_WAIT;
        loop {
            let until = now_millis() + LEASE.as_millis() as i64;
            match self
                .meta
                .claim_upload_writer(&session.id, session.size, &token, until)
                .await?
            {
                WriterClaim::Claimed => {
                    return Ok(WriterLease {
                        meta: self.meta.clone(),
                        id: session.id.clone(),
                        token,
                        renewed: std::time::Instant::now(),
                        released: false,
                    });
                }
                WriterClaim::Busy if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                WriterClaim::Busy => {
                    return Err(RegistryError::ChunkOutOfOrder { size: session.size });
                }
                WriterClaim::Moved(size) => return Err(RegistryError::ChunkOutOfOrder { size }),
                WriterClaim::Unknown => return Err(RegistryError::UploadUnknown),
            }
        }
    }

    /// Commit a session as blob `digest` (after appending a final chunk, if any).
    /// On a digest mismatch the session is discarded and nothing is stored.
    pub async fn finish_upload(&self, repo: &RepoId, id: &str, digest: &Digest) -> Result<u64> {
        let session = self.upload_status(repo, id).await?;
        crate::audit::note(|e| {
            e.response_elements = Some(serde_json::json!({
                "registryId": crate::reference::key_account(&repo.registry),
                "repositoryName": repo.name.as_str(),
                "uploadId": id,
                "layerDigest": digest.as_str(),
            }));
        });
        // SHA-256 was hashed as the bytes streamed in; other algorithms, and
        // sessions a stale writer may have touched, are checked by the store
        // re-reading what it staged.
        let verify = digest.algorithm() != Algorithm::Sha256 || session.contended;
        // The session's data key: if its repository's key was disabled
        // since, the push fails here.
        let sealing = self.session_key(&session).await?;
        let (hasher, tail) = open_state(&session, sealing.as_ref().map(|(_, d)| d))?;
        if digest.algorithm() == Algorithm::Sha256 {
            let actual = hasher.finish();
            if &actual != digest {
                return self.refuse_digest(repo, id, &actual, digest).await;
            }
        }
        // No chunk may be appended while the bytes are published.
        let mut lease = self.take_writer_lease(&session).await?;
        // A sealed session's final segment is written again from the row: a
        // chunk that was interrupted after the last acknowledged one may have
        // overwritten it in the store.
        let staging = match &sealing {
            Some((_, dek)) => {
                let (staged, _) = self
                    .chunk_writer(&session, Some(dek), &tail)
                    .await?
                    .finish()
                    .await?;
                if staged.size != session.size {
                    return Err(RegistryError::UploadInvalid(format!(
                        "staged {} bytes, the session records {}",
                        staged.size, session.size
                    )));
                }
                staged.staging
            }
            None => session.staging.clone(),
        };
        // Publish under the GC protocol (docs/gc.md): claim the digest first,
        // so a collector can neither be deleting these bytes while they are
        // published nor start to before the link below is committed.
        self.claim_blob(digest, session.size).await?;
        let published = match &sealing {
            Some((key, dek)) => {
                self.publish_sealed(
                    &super::sealing::SealedUpload {
                        id,
                        staging: &staging,
                        size: session.size,
                        key,
                        dek,
                    },
                    digest,
                    verify,
                )
                .await?
            }
            // A session opened before encryption: published as it was staged,
            // in plaintext (re-encrypted later like every older blob).
            None => match self
                .legacy_blobs
                .commit_upload(id, session.size, &session.staging, digest, verify)
                .await
            {
                Ok(()) => Ok(()),
                Err(StorageError::DigestMismatch(actual)) => Err(actual),
                Err(e) => return Err(e.into()),
            },
        };
        if let Err(actual) = published {
            return self.refuse_digest(repo, id, &actual, digest).await;
        }
        // Committing ends the session, and its lease with it.
        lease.released = true;
        if !self.meta.commit_blob(repo.key(), digest, Some(id)).await? {
            return Err(RegistryError::Unavailable(
                "the blob was garbage-collected while it was being committed; retry the upload"
                    .into(),
            ));
        }
        let elapsed = (now_millis() - session.started_at).max(0) as f64 / 1000.0;
        self.metrics.upload_seconds.observe(elapsed);
        self.prefetch_layer_scan(repo, digest, session.size).await;
        Ok(session.size)
    }

    /// In a repository scanned on push, queue the inventory of a blob that
    /// may be a layer as soon as it is committed: the client is still
    /// sending the other layers and the manifest, and the scan the manifest
    /// starts then finds the layer done. Best effort: the scan reads the
    /// layer itself if this does not happen.
    async fn prefetch_layer_scan(&self, repo: &RepoId, digest: &Digest, size: u64) {
        // Configs and other small blobs: not worth a job.
        if size < PREFETCH_MIN_BYTES {
            return;
        }
        let scanned = async {
            let Some(row) = self.meta.get_repository(repo.key()).await? else {
                return Ok::<bool, RegistryError>(false);
            };
            Ok(self
                .scanning_configuration(&repo.registry)
                .await?
                .effective(&row)
                .on_push())
        };
        match scanned.await {
            Ok(true) => {
                match self
                    .meta
                    .enqueue_job(&crate::jobs::scan_layer(digest.as_str()))
                    .await
                {
                    Ok(_) => self.jobs_queued.notify_one(),
                    Err(e) => {
                        tracing::warn!(%digest, error = %e, "could not queue a layer's inventory")
                    }
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(%digest, error = %e, "could not read the scanning settings"),
        }
    }

    /// Claim `digest` for publishing, waiting (briefly) for a collector that
    /// is deleting the same digest's old bytes to finish.
    pub(crate) async fn claim_blob(&self, digest: &Digest, size: u64) -> Result<()> {
        let deadline = std::time::Instant::now() + CLAIM_WAIT;
        loop {
            match self.meta.claim_blob(digest, size).await? {
                BlobClaim::Claimed => return Ok(()),
                BlobClaim::Deleting if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                BlobClaim::Deleting => {
                    return Err(RegistryError::Unavailable(format!(
                        "{digest} is being garbage-collected; retry shortly"
                    )));
                }
            }
        }
    }

    /// The content is not `digest`: the session is discarded, nothing stored.
    async fn refuse_digest<T>(
        &self,
        repo: &RepoId,
        id: &str,
        actual: &Digest,
        digest: &Digest,
    ) -> Result<T> {
        self.cancel_upload(repo, id).await?;
        Err(RegistryError::DigestInvalid(format!(
            "uploaded content has digest {actual}, not {digest}"
        )))
    }

    /// Abandon a session and its staged bytes.
    pub async fn cancel_upload(&self, repo: &RepoId, id: &str) -> Result<()> {
        self.upload_status(repo, id).await?;
        self.meta.delete_upload(id).await?;
        self.abort_staged(id).await
    }

    /// Remove upload `id`'s staged bytes, in whichever store holds them.
    async fn abort_staged(&self, id: &str) -> Result<()> {
        self.blobs.abort_upload(id).await?;
        self.legacy_blobs.abort_upload(id).await?;
        Ok(())
    }

    /// Remove sessions untouched for longer than `max_age`. Returns how many.
    pub async fn reap_stale_uploads(&self, max_age: Duration) -> Result<usize> {
        let before = now_millis() - max_age.as_millis() as i64;
        let mut total = 0;
        loop {
            let ids = self.meta.stale_uploads(before, 500).await?;
            if ids.is_empty() {
                break;
            }
            for id in &ids {
                // Row first: once it is gone nobody can append to the file.
                self.meta.delete_upload(id).await?;
                self.abort_staged(id).await?;
            }
            total += ids.len();
        }
        self.metrics.uploads_reaped.inc_by(total as u64);
        Ok(total)
    }
}
