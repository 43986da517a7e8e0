//! The scale-out blob store: objects in an S3-compatible bucket
//! (`--storage-url s3://BUCKET/PREFIX`).
//!
//! Layout under the prefix:
//! - `blobs/<algorithm>/<first two hex>/<hex>`: committed blobs, immutable;
//! - `uploads/<upload id>/data`: the multipart upload an upload's parts go to;
//! - `uploads/<upload id>/tail-<uuid>`: the bytes after an upload's last part.
//!
//! **Staging.** S3 parts are immutable and, except the last, at least 5 MiB,
//! while clients send chunks of any size (docker one chunk per layer, others
//! a few KiB at a time). A chunk is spooled to a local temporary file; every
//! [`PART_SIZE`] bytes become a part, uploaded while the next part spools;
//! what is left when the chunk ends is stored as a *tail* object, which the
//! next chunk — on whichever node — reads back first. The session's `staging`
//! string records the multipart upload, its parts (number, ETag, size) and
//! the tail. It is stored in the metadata database with the session's size, in
//! the same compare-and-swap, so the database — not the bucket — says what an
//! upload holds: an interrupted chunk leaves only parts and tails that no
//! staging string names, which the next chunk overwrites (part numbers are
//! reused) or commit and abort remove (everything under `uploads/<id>/`).
//!
//! **Commit.** The tail becomes the last part, the multipart upload completes
//! into `data`, which is copied inside S3 to the blob's key, and the staging
//! objects are deleted. Nothing is visible to clients until the metadata
//! store links the digest afterwards, so an S3 server that ignores
//! conditional writes is as safe as one that honours them.

pub mod client;

use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::task::JoinHandle;

use self::client::{Body, S3Client, S3Error};
use super::{BlobStore, ByteRange, ByteStream, Staged, StorageError, StoredObject, UploadWriter};
use crate::digest::{Algorithm, Digest, Hasher};

/// Size of the parts an upload is cut into (S3 allows 10,000 parts, so one
/// upload holds up to 156 GiB).
pub const PART_SIZE: u64 = 16 << 20;
/// Largest object S3 copies in one `CopyObject`; larger blobs are copied
/// part by part.
const COPY_LIMIT: u64 = 5 << 30;
/// Size of the ranges a large copy is made of.
const COPY_PART: u64 = 1 << 30;
/// Reads from a spool file are this big.
const SPOOL_READ: usize = 1 << 20;

impl From<S3Error> for StorageError {
    fn from(e: S3Error) -> Self {
        match e {
            S3Error::NotFound(_) => StorageError::NotFound,
            S3Error::Unavailable(m) => StorageError::Unavailable(m),
            S3Error::Api { code, message, .. }
                if code == "QuotaExceeded" || code == "EntityTooLarge" =>
            {
                StorageError::Io(io::Error::new(io::ErrorKind::StorageFull, message))
            }
            other => StorageError::Io(io::Error::other(other.to_string())),
        }
    }
}

/// What an upload has staged (the `staging` string, as JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Staging {
    /// The multipart upload of `uploads/<id>/data`, once a part exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mpu: Option<String>,
    /// Parts uploaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parts: Vec<Part>,
    /// The tail object (a key relative to the upload's directory) and its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail: Option<(String, u64)>,
}

impl Staging {
    fn parse(s: &str) -> Result<Staging, StorageError> {
        if s.is_empty() {
            return Ok(Staging::default());
        }
        serde_json::from_str(s).map_err(|e| {
            StorageError::Io(io::Error::other(format!("unreadable upload staging: {e}")))
        })
    }

    fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.2).sum::<u64>() + self.tail.as_ref().map_or(0, |t| t.1)
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("staging serialises")
    }
}

pub struct S3BlobStore {
    s3: S3Client,
    /// `""` or `"some/prefix/"`.
    prefix: String,
    /// Where chunks are spooled before they become parts.
    spool_dir: PathBuf,
}

impl S3BlobStore {
    /// A store in the client's bucket under `prefix`. Nothing is sent to S3
    /// yet (commands that never touch blobs work without it); `berth serve`
    /// calls [`BlobStore::check`] at start.
    pub fn open(
        s3: S3Client,
        prefix: &str,
        spool_dir: PathBuf,
    ) -> Result<S3BlobStore, StorageError> {
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        std::fs::create_dir_all(&spool_dir)?;
        Ok(S3BlobStore {
            s3,
            prefix,
            spool_dir,
        })
    }

    fn blob_key(&self, digest: &Digest) -> String {
        let hex = digest.hex();
        format!(
            "{}blobs/{}/{}/{hex}",
            self.prefix,
            digest.algorithm().as_str(),
            &hex[..2]
        )
    }

    fn upload_dir(&self, upload_id: &str) -> String {
        debug_assert!(
            upload_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        );
        format!("{}uploads/{upload_id}/", self.prefix)
    }

    /// The digest (in `like`'s algorithm) of object `key`.
    async fn hash_object(&self, key: &str, like: &Digest) -> Result<Digest, StorageError> {
        let mut h = Hasher::new(like.algorithm());
        let mut s = std::pin::pin!(self.s3.get_object(key, None).await?);
        while let Some(chunk) = s.next().await {
            h.update(&chunk.map_err(|e| StorageError::Unavailable(e.to_string()))?);
        }
        Ok(h.finish())
    }

    /// The one object holding all `len` staged bytes of an upload (`None`
    /// for an empty upload): the tail alone, or the multipart upload
    /// completed with the tail as its last part.
    async fn assemble(
        &self,
        dir: &str,
        staging: &Staging,
        len: u64,
    ) -> Result<Option<String>, StorageError> {
        let Some(mpu) = &staging.mpu else {
            return Ok(staging.tail.as_ref().map(|(t, _)| format!("{dir}{t}")));
        };
        let data = format!("{dir}data");
        // Only completing the multipart upload writes `data`: if it is there,
        // an earlier attempt of this commit got that far.
        if self.s3.head_object(&data).await? == Some(len) {
            return Ok(Some(data));
        }
        let mut parts: Vec<(u32, String)> =
            staging.parts.iter().map(|p| (p.0, p.1.clone())).collect();
        if let Some((tail, size)) = &staging.tail {
            let n = parts.last().map_or(1, |p| p.0 + 1);
            let etag = self
                .s3
                .upload_part_copy(&data, mpu, n, &format!("{dir}{tail}"), (0, size - 1))
                .await?;
            parts.push((n, etag));
        }
        self.s3
            .complete_multipart_upload(&data, mpu, &parts)
            .await?;
        Ok(Some(data))
    }

    /// Copy `source` (of `size` bytes) to `target` inside S3.
    async fn copy(&self, source: &str, target: &str, size: u64) -> Result<(), StorageError> {
        if size <= COPY_LIMIT {
            return Ok(self.s3.copy_object(source, target).await?);
        }
        let mpu = self.s3.create_multipart_upload(target).await?;
        let mut parts = Vec::new();
        let mut first = 0;
        while first < size {
            let last = (first + COPY_PART).min(size) - 1;
            let n = parts.len() as u32 + 1;
            match self
                .s3
                .upload_part_copy(target, &mpu, n, source, (first, last))
                .await
            {
                Ok(etag) => parts.push((n, etag)),
                Err(e) => {
                    let _ = self.s3.abort_multipart_upload(target, &mpu).await;
                    return Err(e.into());
                }
            }
            first = last + 1;
        }
        if let Err(e) = self
            .s3
            .complete_multipart_upload(target, &mpu, &parts)
            .await
        {
            let _ = self.s3.abort_multipart_upload(target, &mpu).await;
            return Err(e.into());
        }
        Ok(())
    }
}

/// A spool file: an unnamed temporary file with a running SHA-256 of what it
/// holds (the payload hash SigV4 needs before a part is sent).
struct Spool {
    file: Arc<std::fs::File>,
    len: u64,
    sha: sha2::Sha256,
}

impl Spool {
    fn new(dir: &std::path::Path) -> io::Result<Spool> {
        Ok(Spool {
            file: Arc::new(tempfile::tempfile_in(dir)?),
            len: 0,
            sha: sha2::Sha256::new(),
        })
    }

    /// Empty it for reuse (the previous body stream must be finished).
    fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        (&*self.file).seek(SeekFrom::Start(0))?;
        self.len = 0;
        self.sha = sha2::Sha256::new();
        Ok(())
    }

    /// Append `chunk` (on the blocking pool).
    async fn append(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.sha.update(&chunk);
        self.len += chunk.len() as u64;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || (&*file).write_all(&chunk))
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e)))??;
        Ok(())
    }

    /// The spooled bytes as a request body (read back with positioned reads).
    fn body(&self) -> Body {
        let file = self.file.clone();
        let len = self.len;
        let stream = futures_util::stream::try_unfold(0u64, move |pos| {
            let file = file.clone();
            async move {
                if pos >= len {
                    return Ok(None);
                }
                let want = SPOOL_READ.min((len - pos) as usize);
                let buf = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; want];
                    file.read_exact_at(&mut buf, pos)?;
                    Ok::<_, io::Error>(buf)
                })
                .await
                .map_err(io::Error::other)??;
                Ok::<_, io::Error>(Some((Bytes::from(buf), pos + want as u64)))
            }
        });
        Body::Stream {
            body: reqwest::Body::wrap_stream(stream),
            len,
            sha256: hex::encode(self.sha.clone().finalize()),
        }
    }
}

/// An uploaded part: number, ETag, size.
type Part = (u32, String, u64);

/// Appends one chunk to an upload: spools, cuts parts, stores the tail.
struct S3UploadWriter {
    s3: S3Client,
    data_key: String,
    upload_dir: String,
    staging: Staging,
    spool_dir: PathBuf,
    /// The spool being filled, and a spare one whose part may be in flight.
    filling: Spool,
    spare: Option<Spool>,
    inflight: Option<JoinHandle<Result<(Part, Spool), StorageError>>>,
}

impl S3UploadWriter {
    /// Wait for the part in flight (if any) and record it.
    async fn settle(&mut self) -> Result<(), StorageError> {
        if let Some(task) = self.inflight.take() {
            let (part, mut spool) = task
                .await
                .map_err(|e| StorageError::Io(io::Error::other(e)))??;
            self.staging.parts.push(part);
            spool.reset()?;
            self.spare = Some(spool);
        }
        Ok(())
    }

    /// Send the filled spool as the next part, in the background.
    async fn cut_part(&mut self) -> Result<(), StorageError> {
        self.settle().await?;
        let mpu = match &self.staging.mpu {
            Some(m) => m.clone(),
            None => {
                let m = self.s3.create_multipart_upload(&self.data_key).await?;
                self.staging.mpu = Some(m.clone());
                m
            }
        };
        let next = match self.spare.take() {
            Some(s) => s,
            None => Spool::new(&self.spool_dir)?,
        };
        let full = std::mem::replace(&mut self.filling, next);
        let number = self.staging.parts.last().map_or(1, |p| p.0 + 1);
        let (s3, key) = (self.s3.clone(), self.data_key.clone());
        self.inflight = Some(tokio::spawn(async move {
            let etag = s3.upload_part(&key, &mpu, number, full.body()).await?;
            Ok(((number, etag, full.len), full))
        }));
        Ok(())
    }
}

#[async_trait]
impl UploadWriter for S3UploadWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        let room = PART_SIZE.saturating_sub(self.filling.len) as usize;
        if chunk.len() < room {
            return self.filling.append(chunk).await;
        }
        // Fill this part exactly, send it, and spool the rest.
        let (head, rest) = (chunk.slice(..room), chunk.slice(room..));
        self.filling.append(head).await?;
        self.cut_part().await?;
        let mut rest = rest;
        while rest.len() as u64 >= PART_SIZE {
            let part = rest.split_to(PART_SIZE as usize);
            self.filling.append(part).await?;
            self.cut_part().await?;
        }
        if !rest.is_empty() {
            self.filling.append(rest).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<Staged, StorageError> {
        self.settle().await?;
        self.staging.tail = if self.filling.len > 0 {
            let name = format!("tail-{}", uuid::Uuid::new_v4());
            let key = format!("{}{name}", self.upload_dir);
            self.s3.put_object(&key, self.filling.body()).await?;
            Some((name, self.filling.len))
        } else {
            None
        };
        Ok(Staged {
            size: self.staging.size(),
            staging: self.staging.to_json(),
        })
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        Ok(self.s3.head_object(&self.blob_key(digest)).await?)
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StorageError> {
        let stream = self
            .s3
            .get_object(&self.blob_key(digest), range.map(|r| (r.first, r.last)))
            .await?;
        Ok(Box::pin(stream))
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        Ok(self.s3.delete_object(&self.blob_key(digest)).await?)
    }

    async fn create_upload(&self, _upload_id: &str) -> Result<(), StorageError> {
        // Nothing to create: the multipart upload starts with the first part.
        Ok(())
    }

    async fn upload_writer(
        &self,
        upload_id: &str,
        offset: u64,
        staging: &str,
    ) -> Result<Box<dyn UploadWriter>, StorageError> {
        let mut staging = Staging::parse(staging)?;
        let in_parts = staging.size() - staging.tail.as_ref().map_or(0, |t| t.1);
        if offset > staging.size() || offset < in_parts {
            return Err(StorageError::Io(io::Error::other(format!(
                "upload staging holds {} bytes ({in_parts} in parts), cannot continue at {offset}",
                staging.size()
            ))));
        }
        let upload_dir = self.upload_dir(upload_id);
        let mut filling = Spool::new(&self.spool_dir)?;
        // The tail (up to `offset`) goes back into the spool: the next part
        // starts with it.
        if let Some((name, _)) = staging.tail.take()
            && offset > in_parts
        {
            let size = offset - in_parts;
            let mut s = std::pin::pin!(
                self.s3
                    .get_object(&format!("{upload_dir}{name}"), Some((0, size - 1)))
                    .await?
            );
            while let Some(chunk) = s.next().await {
                let chunk = chunk.map_err(|e| StorageError::Unavailable(e.to_string()))?;
                filling.append(chunk).await?;
            }
            if filling.len != size {
                return Err(StorageError::Unavailable(format!(
                    "tail object {name} holds {} bytes, expected {size}",
                    filling.len
                )));
            }
        }
        Ok(Box::new(S3UploadWriter {
            s3: self.s3.clone(),
            data_key: format!("{upload_dir}data"),
            upload_dir,
            staging,
            spool_dir: self.spool_dir.clone(),
            filling,
            spare: None,
            inflight: None,
        }))
    }

    async fn upload_advanced(
        &self,
        upload_id: &str,
        old: &str,
        new: &str,
    ) -> Result<(), StorageError> {
        let (old, new) = (Staging::parse(old)?, Staging::parse(new)?);
        if let Some((name, _)) = old.tail
            && new.tail.as_ref().is_none_or(|t| t.0 != name)
        {
            let key = format!("{}{name}", self.upload_dir(upload_id));
            self.s3.delete_object(&key).await?;
        }
        Ok(())
    }

    async fn commit_upload(
        &self,
        upload_id: &str,
        len: u64,
        staging: &str,
        digest: &Digest,
        verify: bool,
    ) -> Result<(), StorageError> {
        let staging = Staging::parse(staging)?;
        if staging.size() != len {
            return Err(StorageError::Io(io::Error::other(format!(
                "upload staging holds {} bytes, the session records {len}",
                staging.size()
            ))));
        }
        let dir = self.upload_dir(upload_id);
        let target = self.blob_key(digest);
        let assembled = match self.assemble(&dir, &staging, len).await {
            Ok(a) => a,
            // The staging is gone: an earlier attempt of this commit
            // published the blob and cleaned up, and its answer was lost.
            Err(StorageError::NotFound) if self.s3.head_object(&target).await? == Some(len) => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if verify {
            let actual = match &assembled {
                Some(key) => self.hash_object(key, digest).await?,
                None => Digest::of(digest.algorithm(), b""),
            };
            if &actual != digest {
                return Err(StorageError::DigestMismatch(actual));
            }
        }
        // A copy already there is replaced: a sealed object is readable only
        // with the data key the metadata store records for it, and the
        // caller publishes only when it records this copy's.
        match &assembled {
            Some(key) => self.copy(key, &target, len).await?,
            None => self.s3.put_object(&target, Body::Empty).await?,
        }
        // The blob is in place: what staged it can go (best effort: GC
        // sweeps staging nobody owns).
        if let Err(e) = self.abort_upload(upload_id).await {
            tracing::warn!(upload_id, error = %e, "could not remove an upload's staging objects");
        }
        Ok(())
    }

    async fn abort_upload(&self, upload_id: &str) -> Result<(), StorageError> {
        let dir = self.upload_dir(upload_id);
        for (key, mpu, _) in self.s3.list_multipart_uploads(&dir).await? {
            self.s3.abort_multipart_upload(&key, &mpu).await?;
        }
        for o in self.s3.list(&dir).await? {
            self.s3.delete_object(&o.key).await?;
        }
        Ok(())
    }

    async fn list_blob_shard(&self, shard: &str) -> Result<Vec<StoredObject>, StorageError> {
        let shard = shard.to_ascii_lowercase();
        if shard.len() != 2 || !shard.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StorageError::Io(io::Error::other(format!(
                "bad shard {shard:?}"
            ))));
        }
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = format!("{}blobs/{}/{shard}/", self.prefix, alg.as_str());
            for o in self.s3.list(&dir).await? {
                if let Some(hex) = o.key.strip_prefix(&dir) {
                    out.push(StoredObject {
                        name: format!("{}:{hex}", alg.as_str()),
                        size: o.size,
                        modified_ms: o.modified_ms,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn list_uploads(&self) -> Result<Vec<StoredObject>, StorageError> {
        let dir = format!("{}uploads/", self.prefix);
        let mut by_id: std::collections::BTreeMap<String, StoredObject> = Default::default();
        let mut note = |key: &str, size: u64, modified_ms: i64| {
            let Some((id, _)) = key.strip_prefix(&dir).and_then(|r| r.split_once('/')) else {
                return;
            };
            let e = by_id.entry(id.to_string()).or_insert(StoredObject {
                name: id.to_string(),
                size: 0,
                modified_ms,
            });
            e.size += size;
            e.modified_ms = e.modified_ms.max(modified_ms);
        };
        for o in self.s3.list(&dir).await? {
            note(&o.key, o.size, o.modified_ms);
        }
        for (key, _, initiated) in self.s3.list_multipart_uploads(&dir).await? {
            note(&key, 0, initiated);
        }
        Ok(by_id.into_values().collect())
    }

    async fn check(&self) -> Result<(), StorageError> {
        Ok(self.s3.check_bucket().await?)
    }

    fn download_url(&self, digest: &Digest, expires: Duration) -> Option<String> {
        Some(
            self.s3
                .presigned_get(&self.blob_key(digest), expires.as_secs()),
        )
    }
}

#[cfg(test)]
mod tests;

/// The S3 server of the tests (`tests/services/start.sh`): a client of its
/// bucket; panics with what to do when there is none.
#[cfg(test)]
pub(crate) fn test_client() -> S3Client {
    use crate::metadata::testing::service_var;
    let need = |name: &str| {
        service_var(name).unwrap_or_else(|| {
            panic!(
                "the S3 tests need a server: run tests/services/start.sh (CI does), or set {name}"
            )
        })
    };
    S3Client::new(client::S3Settings {
        endpoint: need("BERTH_TEST_S3_ENDPOINT"),
        bucket: need("BERTH_TEST_S3_BUCKET"),
        path_style: true,
        signer: crate::sigv4::S3Signer {
            access_key_id: need("BERTH_TEST_S3_ACCESS_KEY"),
            secret_access_key: need("BERTH_TEST_S3_SECRET_KEY"),
            session_token: None,
            region: "us-east-1".into(),
        },
    })
    .expect("S3 client")
}
