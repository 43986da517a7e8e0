//! The sealed object format: how a blob (or a staged upload) is encrypted at
//! rest, in fixed-size segments, so that a range read decrypts only the
//! segments it touches and a chunked upload appends without re-encrypting
//! what it already holds.
//!
//! An object is a sequence of segments, each `nonce (12) ‖ AES-256-GCM
//! ciphertext ‖ tag (16)` under the object's own data key (`docs/security.md`):
//! - every segment but the last holds exactly [`SEGMENT_PLAIN`] bytes and is
//!   exactly [`SEGMENT`] (64 KiB) long on disk, so segment `i` starts at
//!   `i × 64 KiB` and S3's 16 MiB upload parts hold whole segments;
//! - the last segment holds fewer than [`SEGMENT_PLAIN`] bytes (possibly none)
//!   and is marked final.
//!
//! Each segment's associated data is its index and whether it is final, so
//! segments cannot be reordered, dropped, duplicated or moved to another
//! object (another data key) without the read failing authentication, and a
//! truncated object is detected. Nonces are random: the final segment of a
//! staged upload is rewritten when the next chunk arrives, and a random nonce
//! never repeats under a data key that seals at most a few million segments.
//!
//! This module knows nothing of keys' provenance: callers hand it the 32-byte
//! data key (`kms::DataKey`) and the stores below ([`BlobStore`]) see only
//! ciphertext.

use std::io;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{BlobStore, ByteRange, ByteStream, Staged, StorageError, UploadWriter};

/// Size of a full segment on disk.
pub const SEGMENT: u64 = 64 << 10;
/// What sealing adds to each segment: its nonce and tag.
pub const OVERHEAD: u64 = (berth_seal::NONCE + berth_seal::TAG) as u64;
/// Plaintext bytes in a full segment.
pub const SEGMENT_PLAIN: u64 = SEGMENT - OVERHEAD;

/// Size on disk of a sealed object holding `plain` bytes.
pub fn sealed_len(plain: u64) -> u64 {
    (plain / SEGMENT_PLAIN) * SEGMENT + plain % SEGMENT_PLAIN + OVERHEAD
}

/// Plaintext size of a sealed object `sealed` bytes long, or `None` when no
/// sealed object has that length (it was truncated).
pub fn plain_len(sealed: u64) -> Option<u64> {
    let rem = sealed % SEGMENT;
    (rem >= OVERHEAD).then(|| (sealed / SEGMENT) * SEGMENT_PLAIN + rem - OVERHEAD)
}

/// A segment failed authentication: the object was altered, truncated, or
/// is read with the wrong data key.
fn integrity(index: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "integrity check failed: sealed segment {index} does not authenticate (altered, truncated or wrong key)"
        ),
    )
}

/// Seals and opens the segments of one object (the cipher itself is
/// `berth_seal`, compiled optimised in every profile).
#[derive(Clone)]
pub struct SegmentCipher(berth_seal::SegmentCipher);

impl SegmentCipher {
    pub fn new(key: &[u8; 32]) -> SegmentCipher {
        SegmentCipher(berth_seal::SegmentCipher::new(key))
    }

    /// Seal segment `index` where it lies: `segment` holds `NONCE` bytes of
    /// room then the plaintext; the tag is appended. No copy is made.
    pub fn seal_owned(&self, index: u64, last: bool, mut segment: BytesMut) -> Bytes {
        segment.extend_from_slice(&[0u8; berth_seal::TAG]);
        self.0.seal_in_place(index, last, &mut segment);
        segment.freeze()
    }

    /// Open segment `index` where it lies (no copy): its plaintext.
    pub fn open_owned(&self, index: u64, last: bool, mut sealed: BytesMut) -> io::Result<Bytes> {
        self.0
            .open_in_place(index, last, &mut sealed)
            .map_err(|_| integrity(index))?;
        let end = sealed.len() - berth_seal::TAG;
        Ok(sealed.freeze().slice(berth_seal::NONCE..end))
    }
}

/// An [`UploadWriter`] that seals what it is given and hands whole segments
/// to the store's writer. The final (short) segment is written at `finish`,
/// so the staged object is a complete sealed object after every chunk.
pub struct SealedWriter {
    inner: Box<dyn UploadWriter>,
    cipher: SegmentCipher,
    /// Full segments already written.
    index: u64,
    /// The segment being filled: `NONCE` bytes of room, then its plaintext.
    pending: BytesMut,
}

/// Open a sealing writer that appends to upload `upload_id` of `store`, which
/// holds `plain` bytes described by `staging`, sealed under `key`. `tail` is
/// the plaintext of the final (short) segment of what is staged, as the
/// caller recorded it with the acknowledged chunk: the final segment in the
/// store is rewritten from it, so an interrupted chunk that overwrote it
/// there (never acknowledged) loses nothing.
pub async fn upload_writer(
    store: &dyn BlobStore,
    upload_id: &str,
    plain: u64,
    staging: &str,
    key: &[u8; 32],
    tail: &[u8],
) -> Result<SealedWriter, StorageError> {
    let index = plain / SEGMENT_PLAIN;
    if tail.len() as u64 != plain % SEGMENT_PLAIN {
        return Err(integrity(index).into());
    }
    let mut pending = segment_buffer();
    pending.extend_from_slice(tail);
    let inner = store
        .upload_writer(upload_id, index * SEGMENT, staging)
        .await?;
    Ok(SealedWriter {
        inner,
        cipher: SegmentCipher::new(key),
        index,
        pending,
    })
}

/// An empty segment buffer: room for the nonce, capacity for a full segment.
fn segment_buffer() -> BytesMut {
    let mut b = BytesMut::with_capacity(SEGMENT as usize);
    b.extend_from_slice(&[0u8; berth_seal::NONCE]);
    b
}

impl SealedWriter {
    /// Plaintext bytes in the segment being filled.
    fn pending_plain(&self) -> usize {
        self.pending.len() - berth_seal::NONCE
    }

    /// Append plaintext.
    pub async fn write(&mut self, mut chunk: Bytes) -> Result<(), StorageError> {
        while !chunk.is_empty() {
            let room = SEGMENT_PLAIN as usize - self.pending_plain();
            let take = room.min(chunk.len());
            self.pending.extend_from_slice(&chunk.split_to(take));
            if self.pending_plain() as u64 == SEGMENT_PLAIN {
                let full = std::mem::replace(&mut self.pending, segment_buffer());
                let sealed = self.cipher.seal_owned(self.index, false, full);
                self.index += 1;
                self.inner.write(sealed).await?;
            }
        }
        Ok(())
    }

    /// Seal the final segment and make everything durable; the staging
    /// description, with the size in plaintext bytes, and the final
    /// segment's plaintext (to record with the chunk: see [`upload_writer`]).
    pub async fn finish(mut self) -> Result<(Staged, Bytes), StorageError> {
        let tail = Bytes::copy_from_slice(&self.pending[berth_seal::NONCE..]);
        let plain = self.index * SEGMENT_PLAIN + tail.len() as u64;
        let pending = std::mem::take(&mut self.pending);
        let last = self.cipher.seal_owned(self.index, true, pending);
        self.inner.write(last).await?;
        let staged = self.inner.finish().await?;
        if staged.size != sealed_len(plain) {
            return Err(StorageError::Io(io::Error::other(format!(
                "staged {} sealed bytes, expected {}",
                staged.size,
                sealed_len(plain)
            ))));
        }
        Ok((
            Staged {
                size: plain,
                staging: staged.staging,
            },
            tail,
        ))
    }
}

/// The plaintext of bytes `range` (all of it when `None`) of a sealed object
/// holding `plain` bytes, from the sealed stream `open` returns for the
/// sealed range it is given. Only the segments the range touches are read.
/// The first segment is opened before this returns, so an object that is
/// altered there fails here rather than mid-stream.
pub async fn open_range<F, Fut>(
    plain: u64,
    range: Option<ByteRange>,
    key: &[u8; 32],
    open: F,
) -> Result<ByteStream, StorageError>
where
    F: FnOnce(ByteRange) -> Fut,
    Fut: std::future::Future<Output = Result<ByteStream, StorageError>>,
{
    let cipher = SegmentCipher::new(key);
    let (first, last) = match range {
        Some(r) => (r.first, r.last),
        None if plain == 0 => (0, 0),
        None => (0, plain - 1),
    };
    let final_index = plain / SEGMENT_PLAIN;
    let first_seg = first / SEGMENT_PLAIN;
    let last_seg = if plain == 0 {
        0
    } else {
        (last / SEGMENT_PLAIN).min(final_index)
    };
    let sealed_total = sealed_len(plain);
    let sealed_range = ByteRange {
        first: first_seg * SEGMENT,
        last: ((last_seg + 1) * SEGMENT).min(sealed_total) - 1,
    };
    let inner = open(sealed_range).await?;
    let mut state = OpenState {
        inner,
        cipher,
        buf: BytesMut::new(),
        index: first_seg,
        last_seg,
        final_index,
        skip: (first - first_seg * SEGMENT_PLAIN) as usize,
        remaining: if plain == 0 { 0 } else { last - first + 1 },
        done: false,
    };
    // Authenticate the first segment now.
    let head = state.next_plain().await?;
    let stream = futures_util::stream::try_unfold((state, head), |(mut state, head)| async move {
        if let Some(b) = head {
            return Ok(Some((b, (state, None))));
        }
        match state.next_plain().await? {
            Some(b) => Ok(Some((b, (state, None)))),
            None => Ok(None),
        }
    });
    Ok(Box::pin(stream))
}

struct OpenState {
    inner: ByteStream,
    cipher: SegmentCipher,
    buf: BytesMut,
    index: u64,
    last_seg: u64,
    final_index: u64,
    /// Plaintext bytes to drop from the next segment (the range's start).
    skip: usize,
    /// Plaintext bytes still to deliver.
    remaining: u64,
    done: bool,
}

impl OpenState {
    /// The next segment's plaintext within the range, or `None` at the end.
    async fn next_plain(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.done || self.index > self.last_seg {
                return Ok(None);
            }
            let is_final = self.index == self.final_index;
            let want = if is_final {
                None
            } else {
                Some(SEGMENT as usize)
            };
            // Fill one segment (the final one: until the stream ends). A
            // chunk the store handed over whole (its reads are multiples of
            // 64 KiB) becomes the buffer itself, without a copy.
            while want.is_none_or(|w| self.buf.len() < w) {
                match self.inner.next().await {
                    Some(chunk) => {
                        let chunk = chunk?;
                        if self.buf.is_empty() {
                            self.buf = chunk
                                .try_into_mut()
                                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                        } else {
                            self.buf.extend_from_slice(&chunk);
                        }
                    }
                    None => break,
                }
            }
            let take = want.unwrap_or(self.buf.len());
            if self.buf.len() < take || (is_final && self.buf.len() >= SEGMENT as usize) {
                return Err(integrity(self.index));
            }
            let sealed = self.buf.split_to(take);
            let mut plain = self.cipher.open_owned(self.index, is_final, sealed)?;
            self.index += 1;
            if self.skip > 0 {
                if self.skip > plain.len() {
                    return Err(integrity(self.index - 1));
                }
                plain = plain.slice(self.skip..);
                self.skip = 0;
            }
            if plain.len() as u64 > self.remaining {
                plain.truncate(self.remaining as usize);
            }
            self.remaining -= plain.len() as u64;
            if self.remaining == 0 {
                self.done = true;
            }
            if !plain.is_empty() {
                return Ok(Some(plain));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsBlobStore;
    use crate::storage::{BlobStore, collect};

    fn plain_of(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn lengths_round_trip() {
        for p in [
            0,
            1,
            SEGMENT_PLAIN - 1,
            SEGMENT_PLAIN,
            SEGMENT_PLAIN + 1,
            5 * SEGMENT_PLAIN,
            10_000_000,
        ] {
            assert_eq!(plain_len(sealed_len(p)), Some(p), "{p}");
        }
        assert_eq!(sealed_len(SEGMENT_PLAIN), SEGMENT + OVERHEAD);
        assert_eq!(plain_len(SEGMENT), None);
        assert_eq!(plain_len(SEGMENT + 5), None);
    }

    async fn stage(store: &FsBlobStore, id: &str, key: &[u8; 32], chunks: &[&[u8]]) -> u64 {
        store.create_upload(id).await.unwrap();
        let mut size = 0;
        let mut tail = Bytes::new();
        for c in chunks {
            let mut w = upload_writer(store, id, size, "", key, &tail)
                .await
                .unwrap();
            w.write(Bytes::copy_from_slice(c)).await.unwrap();
            let (staged, t) = w.finish().await.unwrap();
            (size, tail) = (staged.size, t);
        }
        size
    }

    async fn read(
        store: &FsBlobStore,
        d: &crate::digest::Digest,
        plain: u64,
        key: &[u8; 32],
        range: Option<ByteRange>,
    ) -> Result<Vec<u8>, StorageError> {
        let s = open_range(plain, range, key, |r| store.read(d, Some(r))).await?;
        let mut out = Vec::new();
        let mut s = s;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn chunked_upload_and_ranges_at_segment_edges() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let key = [9u8; 32];
        let data = plain_of(3 * SEGMENT_PLAIN as usize + 1234);
        // Chunks that end mid-segment, exactly at a segment edge, and tiny ones.
        let s = SEGMENT_PLAIN as usize;
        let cuts = [0, 10, s - 1, s, s + 1, 2 * s, 2 * s + 7, data.len()];
        let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &data[w[0]..w[1]]).collect();
        let id = "00000000-0000-0000-0000-000000000001";
        let size = stage(&store, id, &key, &chunks).await;
        assert_eq!(size, data.len() as u64);
        let d = crate::digest::Digest::sha256_of(&data);
        store
            .commit_upload(id, sealed_len(size), "", &d, false)
            .await
            .unwrap();
        let raw = collect(store.read(&d, None).await.unwrap()).await;
        assert_eq!(raw.len() as u64, sealed_len(size));
        assert!(!raw.windows(64).any(|w| data.windows(64).next() == Some(w)));
        assert_eq!(read(&store, &d, size, &key, None).await.unwrap(), data);
        let n = data.len() as u64;
        let sp = SEGMENT_PLAIN;
        for (a, b) in [
            (0, 0),
            (0, sp - 1),
            (sp - 1, sp),
            (sp, sp),
            (sp - 5, 2 * sp + 5),
            (2 * sp, n - 1),
            (n - 1, n - 1),
            (3 * sp, n - 1),
        ] {
            let got = read(
                &store,
                &d,
                size,
                &key,
                Some(ByteRange { first: a, last: b }),
            )
            .await
            .unwrap();
            assert_eq!(got, &data[a as usize..=b as usize], "range {a}-{b}");
        }
        // The wrong key: refused before anything is served.
        assert!(read(&store, &d, size, &[8u8; 32], None).await.is_err());
    }

    #[tokio::test]
    async fn an_interrupted_chunk_loses_nothing_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let key = [6u8; 32];
        let data = plain_of(2 * SEGMENT_PLAIN as usize + 300);
        let id = "00000000-0000-0000-0000-000000000031";
        let size = stage(&store, id, &key, &[&data[..SEGMENT_PLAIN as usize + 100]]).await;
        let tail = Bytes::copy_from_slice(&data[SEGMENT_PLAIN as usize..size as usize]);
        // A chunk that rewrites the final segment and more, then is dropped
        // (the client went away): never acknowledged.
        let mut w = upload_writer(&store, id, size, "", &key, &tail)
            .await
            .unwrap();
        w.write(Bytes::from(vec![0xEE; 200_000])).await.unwrap();
        drop(w);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // The next chunk continues from what was acknowledged.
        let mut w = upload_writer(&store, id, size, "", &key, &tail)
            .await
            .unwrap();
        w.write(Bytes::copy_from_slice(&data[size as usize..]))
            .await
            .unwrap();
        let (staged, _) = w.finish().await.unwrap();
        assert_eq!(staged.size, data.len() as u64);
        let d = crate::digest::Digest::sha256_of(&data);
        store
            .commit_upload(id, sealed_len(staged.size), "", &d, false)
            .await
            .unwrap();
        assert_eq!(
            read(&store, &d, staged.size, &key, None).await.unwrap(),
            data
        );
    }

    #[tokio::test]
    async fn empty_and_exact_segment_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let key = [1u8; 32];
        for (i, n) in [0usize, SEGMENT_PLAIN as usize, 2 * SEGMENT_PLAIN as usize]
            .into_iter()
            .enumerate()
        {
            let data = plain_of(n);
            let id = format!("00000000-0000-0000-0000-00000000001{i}");
            let size = stage(&store, &id, &key, &[&data]).await;
            let d = crate::digest::Digest::sha256_of(&data);
            store
                .commit_upload(&id, sealed_len(size), "", &d, false)
                .await
                .unwrap();
            assert_eq!(read(&store, &d, size, &key, None).await.unwrap(), data);
        }
    }

    #[tokio::test]
    async fn tampering_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let key = [4u8; 32];
        let data = plain_of(2 * SEGMENT_PLAIN as usize + 100);
        let id = "00000000-0000-0000-0000-000000000021";
        let size = stage(&store, id, &key, &[&data]).await;
        let d = crate::digest::Digest::sha256_of(&data);
        store
            .commit_upload(id, sealed_len(size), "", &d, false)
            .await
            .unwrap();
        let hex = d.hex();
        let path = dir.path().join("blobs/sha256").join(&hex[..2]).join(hex);
        let original = std::fs::read(&path).unwrap();
        // A flipped byte in each segment; a swapped pair of segments; a
        // truncation at a segment edge.
        for at in [20usize, SEGMENT as usize + 3, original.len() - 1] {
            let mut bad = original.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(&store, &d, size, &key, None).await.is_err(), "{at}");
        }
        let mut swapped = original.clone();
        let (a, b) = swapped.split_at_mut(SEGMENT as usize);
        a.swap_with_slice(&mut b[..SEGMENT as usize]);
        std::fs::write(&path, &swapped).unwrap();
        assert!(read(&store, &d, size, &key, None).await.is_err());
        std::fs::write(&path, &original[..2 * SEGMENT as usize]).unwrap();
        assert!(read(&store, &d, size, &key, None).await.is_err());
        std::fs::write(&path, &original).unwrap();
        assert_eq!(read(&store, &d, size, &key, None).await.unwrap(), data);
    }
}
