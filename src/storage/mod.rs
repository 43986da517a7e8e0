//! Blob storage: where the bytes of layers and configs live, and the staging
//! area of uploads in progress.
//!
//! Everything that touches blob bytes goes through the [`BlobStore`] trait. The
//! embedded default is [`fs::FsBlobStore`] (a directory on local disk); the
//! scale-out deployment uses [`s3::S3BlobStore`] (objects in an S3 bucket).
//!
//! The store knows nothing about repositories, manifests or who may see what:
//! that is the metadata store's job, which is the single source of truth for
//! "this blob exists". A blob file without a metadata row is invisible (and is
//! garbage for GC to collect), so writes here never need to coordinate.

pub mod fs;
pub mod s3;
pub mod sealed;

use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::digest::Digest;

/// A stream of blob bytes, as served to clients.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Errors the storage layer reports; callers branch on `NotFound` and `Full`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found in blob storage")]
    NotFound,
    #[error("blob storage is full")]
    Full,
    #[error("another request is writing to this upload")]
    Busy,
    /// The bytes staged for an upload do not hash to the digest the client
    /// named (only reported when the commit was asked to verify).
    #[error("uploaded content has digest {0}")]
    DigestMismatch(Digest),
    /// The storage service cannot be reached or refused to serve; retry later.
    #[error("blob storage is unavailable: {0}")]
    Unavailable(String),
    #[error("blob storage I/O error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for StorageError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StorageError::Full,
            io::ErrorKind::WouldBlock => StorageError::Busy,
            _ => StorageError::Io(e),
        }
    }
}

/// An inclusive byte range `first..=last` within a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A committed blob as found by listing the store (for garbage collection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// The blob's digest, or an upload's id.
    pub name: String,
    pub size: u64,
    /// Last modification, epoch milliseconds.
    pub modified_ms: i64,
}

/// What an upload has staged after a chunk: its total size and the store's
/// own description of where those bytes are (`staging`: empty for the
/// filesystem store; the multipart upload and its parts on S3). The metadata
/// store keeps `staging` with the session, so that any node can continue the
/// upload; it is opaque to everyone but the store that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    pub size: u64,
    pub staging: String,
}

/// Receives the bytes of one upload chunk, in order. Obtained from
/// [`BlobStore::upload_writer`]; `finish` must be called for the bytes to count.
#[async_trait]
pub trait UploadWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError>;
    /// Make what was written durable; what the upload now holds.
    async fn finish(self: Box<Self>) -> Result<Staged, StorageError>;
}

/// Content-addressed blob storage plus upload staging.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of a committed blob, or `None` if the store does not hold it.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError>;

    /// Stream a committed blob, or the given range of it.
    async fn read(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StorageError>;

    /// Remove a committed blob; absent blobs are not an error.
    async fn delete(&self, digest: &Digest) -> Result<(), StorageError>;

    /// Create the staging area of a new upload.
    async fn create_upload(&self, upload_id: &str) -> Result<(), StorageError>;

    /// A writer that appends to upload `upload_id` after the first `offset`
    /// bytes of what `staging` describes (as returned by the last
    /// acknowledged chunk's [`UploadWriter::finish`]; empty for a new
    /// upload). Bytes after `offset` are discarded: those left over by an
    /// interrupted chunk that was never acknowledged, and the final segment
    /// of a sealed object, which the sealing writer rewrites
    /// ([`sealed::upload_writer`]; it lies after the last 64 KiB boundary).
    async fn upload_writer(
        &self,
        upload_id: &str,
        offset: u64,
        staging: &str,
    ) -> Result<Box<dyn UploadWriter>, StorageError>;

    /// The session moved from staging `old` to `new` (the chunk that produced
    /// `new` is acknowledged): the store may drop what only `old` needed.
    async fn upload_advanced(
        &self,
        _upload_id: &str,
        _old: &str,
        _new: &str,
    ) -> Result<(), StorageError> {
        Ok(())
    }

    /// Publish the `len` staged bytes described by `staging` as blob `digest`.
    /// With `verify`, first hash them with the digest's algorithm and fail
    /// with [`StorageError::DigestMismatch`] (publishing nothing) when they
    /// differ; otherwise the caller has verified the digest while streaming.
    /// Idempotent: if the blob is already stored, the staged copy is dropped.
    async fn commit_upload(
        &self,
        upload_id: &str,
        len: u64,
        staging: &str,
        digest: &Digest,
        verify: bool,
    ) -> Result<(), StorageError>;

    /// Whether the storage answers as configured (for start-up): a wrong
    /// bucket or credentials is an error; a storage that is merely down is
    /// [`StorageError::Unavailable`].
    async fn check(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// A URL from which a client may `GET` blob `digest` directly for
    /// `expires` (S3 presigned), when the store offers that.
    fn download_url(&self, _digest: &Digest, _expires: std::time::Duration) -> Option<String> {
        None
    }

    /// Remove an upload's staging area; absent uploads are not an error.
    async fn abort_upload(&self, upload_id: &str) -> Result<(), StorageError>;

    /// Committed blobs whose hex digest starts with `shard` (two hex digits),
    /// for every algorithm, in digest order. Garbage collection walks the 256
    /// shards to find files that no metadata row accounts for.
    async fn list_blob_shard(&self, shard: &str) -> Result<Vec<StoredObject>, StorageError>;

    /// Staging areas of uploads (named by upload id).
    async fn list_uploads(&self) -> Result<Vec<StoredObject>, StorageError>;
}

/// All the bytes of a stream (for the stores' tests).
#[cfg(test)]
pub(crate) async fn collect(s: ByteStream) -> Vec<u8> {
    use futures_util::TryStreamExt;
    s.try_fold(Vec::new(), |mut v, b| async move {
        v.extend_from_slice(&b);
        Ok(v)
    })
    .await
    .unwrap()
}
