//! Blob storage: where the bytes of layers and configs live, and the staging
//! area of uploads in progress.
//!
//! Everything that touches blob bytes goes through the [`BlobStore`] trait. The
//! embedded default is [`fs::FsBlobStore`] (a directory on local disk); the
//! scale-out mode will add an S3 implementation behind the same trait.
//!
//! The store knows nothing about repositories, manifests or who may see what:
//! that is the metadata store's job, which is the single source of truth for
//! "this blob exists". A blob file without a metadata row is invisible (and is
//! garbage for GC to collect), so writes here never need to coordinate.

pub mod fs;

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

/// Receives the bytes of one upload chunk, in order. Obtained from
/// [`BlobStore::upload_writer`]; `finish` must be called for the bytes to count.
#[async_trait]
pub trait UploadWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError>;
    /// Flush what was written; returns the total size of the staged upload.
    async fn finish(self: Box<Self>) -> Result<u64, StorageError>;
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

    /// A writer that appends to upload `upload_id` starting at `offset`. Bytes
    /// after `offset`, left over by an interrupted chunk that was never
    /// acknowledged, are discarded first.
    async fn upload_writer(
        &self,
        upload_id: &str,
        offset: u64,
    ) -> Result<Box<dyn UploadWriter>, StorageError>;

    /// Stream the first `len` staged bytes of an upload (used to verify digests
    /// that were not hashed while streaming, such as sha512).
    async fn read_upload(&self, upload_id: &str, len: u64) -> Result<ByteStream, StorageError>;

    /// Make the first `len` staged bytes durable and publish them as blob
    /// `digest`. The caller has verified the digest. Idempotent: if the blob is
    /// already stored, the staged copy is dropped.
    async fn commit_upload(
        &self,
        upload_id: &str,
        len: u64,
        digest: &Digest,
    ) -> Result<(), StorageError>;

    /// Remove an upload's staging area; absent uploads are not an error.
    async fn abort_upload(&self, upload_id: &str) -> Result<(), StorageError>;

    /// Committed blobs whose hex digest starts with `shard` (two hex digits),
    /// for every algorithm, in digest order. Garbage collection walks the 256
    /// shards to find files that no metadata row accounts for.
    async fn list_blob_shard(&self, shard: &str) -> Result<Vec<StoredObject>, StorageError>;

    /// Staging areas of uploads (named by upload id).
    async fn list_uploads(&self) -> Result<Vec<StoredObject>, StorageError>;
}
