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
use crate::metadata::{BlobClaim, CreateUpload, UploadRow, now_millis};

/// How long a commit waits for a collector deleting the same digest.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

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

impl Registry {
    /// Open a new upload session in `repo` for `owner` (the caller's access
    /// key, or `ip:<address>` without authentication), within the quotas.
    pub async fn start_upload(&self, repo: &RepoId, owner: &str) -> Result<UploadRow> {
        self.writable_repository(repo).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let state = ResumableSha256::new().state();
        // Row first: if it cannot be written (quota, full database) nothing
        // else exists; if the staging file cannot be made, the row goes again.
        match self
            .meta
            .create_upload(&id, repo.key(), owner, &state, self.limits.uploads)
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
        let mut hasher = ResumableSha256::from_state(&session.hash_state).ok_or_else(|| {
            RegistryError::UploadInvalid("stored hash state is unreadable".into())
        })?;
        let mut writer = self
            .blobs
            .upload_writer(id, session.size)
            .await
            .map_err(|e| match e {
                crate::storage::StorageError::Full => RegistryError::StorageFull,
                // Another request is appending: this chunk is out of order.
                crate::storage::StorageError::Busy => {
                    RegistryError::ChunkOutOfOrder { size: session.size }
                }
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
        }
        let new_size = writer.finish().await?;
        self.metrics.bytes_in.inc_by(received);
        if new_size != session.size + received {
            return Err(RegistryError::UploadInvalid(format!(
                "staged {new_size} bytes, expected {}",
                session.size + received
            )));
        }
        if let Some(r) = range
            && r.last - r.first + 1 != received
        {
            // Nothing is recorded: the session stays at its old size.
            return Err(RegistryError::ChunkOutOfOrder { size: session.size });
        }
        if !self
            .meta
            .advance_upload(id, session.size, new_size, &hasher.state())
            .await?
        {
            // Another request advanced the session concurrently.
            return match self.meta.get_upload(id).await? {
                Some(now) => Err(RegistryError::ChunkOutOfOrder { size: now.size }),
                None => Err(RegistryError::UploadUnknown),
            };
        }
        Ok(UploadRow {
            size: new_size,
            hash_state: hasher.state(),
            updated_at: now_millis(),
            ..session
        })
    }

    /// Commit a session as blob `digest` (after appending a final chunk, if any).
    /// On a digest mismatch the session is discarded and nothing is stored.
    pub async fn finish_upload(&self, repo: &RepoId, id: &str, digest: &Digest) -> Result<u64> {
        let session = self.upload_status(repo, id).await?;
        let actual = match digest.algorithm() {
            Algorithm::Sha256 => ResumableSha256::from_state(&session.hash_state)
                .ok_or_else(|| {
                    RegistryError::UploadInvalid("stored hash state is unreadable".into())
                })?
                .finish(),
            Algorithm::Sha512 => {
                self.hash_staged(id, session.size, Algorithm::Sha512)
                    .await?
            }
        };
        if &actual != digest {
            self.cancel_upload(repo, id).await?;
            return Err(RegistryError::DigestInvalid(format!(
                "uploaded content has digest {actual}, not {digest}"
            )));
        }
        // Publish under the GC protocol (docs/gc.md): claim the digest first,
        // so a collector can neither be deleting these bytes while they are
        // published nor start to before the link below is committed.
        self.claim_blob(digest, session.size).await?;
        self.blobs.commit_upload(id, session.size, digest).await?;
        if !self.meta.commit_blob(repo.key(), digest, Some(id)).await? {
            return Err(RegistryError::Unavailable(
                "the blob was garbage-collected while it was being committed; retry the upload"
                    .into(),
            ));
        }
        let elapsed = (now_millis() - session.started_at).max(0) as f64 / 1000.0;
        self.metrics.upload_seconds.observe(elapsed);
        Ok(session.size)
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

    async fn hash_staged(&self, id: &str, len: u64, algorithm: Algorithm) -> Result<Digest> {
        use sha2::Digest as _;
        let mut stream = self.blobs.read_upload(id, len).await?;
        let mut h = sha2::Sha512::new();
        while let Some(chunk) = stream.next().await {
            h.update(&chunk.map_err(crate::storage::StorageError::from)?);
        }
        debug_assert_eq!(algorithm, Algorithm::Sha512);
        Ok(format!("sha512:{}", hex::encode(h.finalize()))
            .parse()
            .expect("sha512 hex is a valid digest"))
    }

    /// Abandon a session and its staged bytes.
    pub async fn cancel_upload(&self, repo: &RepoId, id: &str) -> Result<()> {
        self.upload_status(repo, id).await?;
        self.meta.delete_upload(id).await?;
        self.blobs.abort_upload(id).await?;
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
                self.blobs.abort_upload(id).await?;
            }
            total += ids.len();
        }
        self.metrics.uploads_reaped.inc_by(total as u64);
        Ok(total)
    }
}
