//! The S3 store against a real S3 server (SeaweedFS, started by
//! `tests/services/start.sh`), each test under its own key prefix.

use bytes::Bytes;

use super::*;
use crate::storage::collect;

async fn store() -> S3BlobStore {
    let spool = std::env::temp_dir().join("berth-test-spool");
    let prefix = format!("unit/{}", uuid::Uuid::new_v4());
    let s = S3BlobStore::open(test_client(), &prefix, spool).unwrap();
    s.check().await.unwrap();
    s
}

/// Deterministic bytes that differ at every offset.
fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// Append `bytes` as one chunk through a fresh writer (as a request on any
/// node would); the new staging.
async fn chunk(s: &S3BlobStore, id: &str, at: &Staged, bytes: &[u8]) -> Staged {
    let mut w = s.upload_writer(id, at.size, &at.staging).await.unwrap();
    // Delivered in pieces of odd sizes, as a body arrives.
    for piece in bytes.chunks(700_001) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    let next = w.finish().await.unwrap();
    s.upload_advanced(id, &at.staging, &next.staging)
        .await
        .unwrap();
    next
}

fn empty() -> Staged {
    Staged {
        size: 0,
        staging: String::new(),
    }
}

#[tokio::test]
async fn chunks_of_any_size_become_parts_and_a_tail_any_node_can_continue() {
    let s = store().await;
    let all = data(2 * PART_SIZE as usize + 5_000_123);
    let id = uuid::Uuid::new_v4().to_string();
    s.create_upload(&id).await.unwrap();
    // Small chunks (a tail only), then one that crosses two part boundaries,
    // then a small last one.
    let cuts = [
        0,
        3_000,
        2_000_000,
        2 * PART_SIZE as usize + 1_000,
        all.len(),
    ];
    let mut at = empty();
    for w in cuts.windows(2) {
        at = chunk(&s, &id, &at, &all[w[0]..w[1]]).await;
        assert_eq!(at.size, w[1] as u64);
    }
    let staging = Staging::parse(&at.staging).unwrap();
    assert_eq!(staging.parts.len(), 2, "{staging:?}");
    assert!(staging.parts.iter().all(|p| p.2 == PART_SIZE));
    // Superseded tails were dropped: one tail object is left.
    let dir = s.upload_dir(&id);
    let tails: Vec<_> = s.s3.list(&dir).await.unwrap();
    assert_eq!(tails.len(), 1, "{tails:?}");
    assert_eq!(s.list_uploads().await.unwrap()[0].name, id);

    let d = Digest::sha256_of(&all);
    s.commit_upload(&id, at.size, &at.staging, &d, true)
        .await
        .unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(all.len() as u64));
    assert_eq!(collect(s.read(&d, None).await.unwrap()).await, all);
    let r = ByteRange {
        first: PART_SIZE - 10,
        last: PART_SIZE + 10,
    };
    assert_eq!(
        collect(s.read(&d, Some(r)).await.unwrap()).await,
        &all[r.first as usize..=r.last as usize]
    );
    // Nothing of the upload is left, and GC's listings see the blob.
    assert!(s.s3.list(&dir).await.unwrap().is_empty());
    assert!(s.list_uploads().await.unwrap().is_empty());
    let shard = s.list_blob_shard(&d.hex()[..2]).await.unwrap();
    assert_eq!(shard.len(), 1);
    assert_eq!(shard[0].name, d.as_str());
    // A presigned URL serves the same bytes to anyone holding it.
    let url = s.download_url(&d, Duration::from_secs(60)).unwrap();
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), all.as_slice());
    s.delete(&d).await.unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), None);
    assert!(matches!(
        s.read(&d, None).await,
        Err(StorageError::NotFound)
    ));
}

#[tokio::test]
async fn an_interrupted_chunk_leaves_the_acknowledged_bytes_intact() {
    let s = store().await;
    let all = data(PART_SIZE as usize + 1_234_567);
    let id = uuid::Uuid::new_v4().to_string();
    let at = chunk(&s, &id, &empty(), &all[..1_000_000]).await;
    // A chunk that uploads a part (overwriting nothing acknowledged) and dies
    // before it finishes: garbage bytes, never recorded.
    let mut w = s.upload_writer(&id, at.size, &at.staging).await.unwrap();
    w.write(Bytes::from(vec![0xEE; PART_SIZE as usize + 10]))
        .await
        .unwrap();
    drop(w);
    // Another writer continues from the acknowledged staging.
    let at = chunk(&s, &id, &at, &all[1_000_000..]).await;
    let d = Digest::sha256_of(&all);
    s.commit_upload(&id, at.size, &at.staging, &d, false)
        .await
        .unwrap();
    assert_eq!(collect(s.read(&d, None).await.unwrap()).await, all);
    // A commit retried after it succeeded (the client did not hear back).
    s.commit_upload(&id, at.size, &at.staging, &d, false)
        .await
        .unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(all.len() as u64));
}

#[tokio::test]
async fn verified_commits_refuse_content_that_is_not_the_digest() {
    let s = store().await;
    for len in [0usize, 10, PART_SIZE as usize + 3] {
        let all = data(len);
        let id = uuid::Uuid::new_v4().to_string();
        let at = if len == 0 {
            empty()
        } else {
            chunk(&s, &id, &empty(), &all).await
        };
        let wrong = Digest::of(Algorithm::Sha512, b"something else");
        match s
            .commit_upload(&id, at.size, &at.staging, &wrong, true)
            .await
        {
            Err(StorageError::DigestMismatch(actual)) => {
                assert_eq!(actual, Digest::of(Algorithm::Sha512, &all))
            }
            other => panic!("{len}: {other:?}"),
        }
        assert_eq!(s.stat(&wrong).await.unwrap(), None);
        let right = Digest::of(Algorithm::Sha512, &all);
        s.commit_upload(&id, at.size, &at.staging, &right, true)
            .await
            .unwrap();
        assert_eq!(collect(s.read(&right, None).await.unwrap()).await, all);
    }
}

#[tokio::test]
async fn abort_removes_parts_and_tails() {
    let s = store().await;
    let id = uuid::Uuid::new_v4().to_string();
    let at = chunk(&s, &id, &empty(), &data(PART_SIZE as usize + 99)).await;
    assert!(Staging::parse(&at.staging).unwrap().mpu.is_some());
    assert_eq!(s.list_uploads().await.unwrap().len(), 1);
    s.abort_upload(&id).await.unwrap();
    assert!(s.list_uploads().await.unwrap().is_empty());
    assert!(
        s.s3.list_multipart_uploads(&s.upload_dir(&id))
            .await
            .unwrap()
            .is_empty()
    );
    // Aborting what is gone is fine.
    s.abort_upload(&id).await.unwrap();
}

/// The sealed format on S3: chunks that end mid-segment (the final segment
/// is rewritten from the tail the caller recorded) and that cross part boundaries
/// (parts hold whole 64 KiB segments), then range reads at segment edges.
#[tokio::test]
async fn sealed_uploads_rewrite_only_the_tail() {
    use crate::storage::sealed::{self, SEGMENT_PLAIN};
    let s = store().await;
    let key = [3u8; 32];
    let all = data(PART_SIZE as usize + 3 * SEGMENT_PLAIN as usize + 77);
    let id = uuid::Uuid::new_v4().to_string();
    s.create_upload(&id).await.unwrap();
    let cuts = [
        0,
        10,
        SEGMENT_PLAIN as usize,
        PART_SIZE as usize - 5,
        PART_SIZE as usize + 1000,
        all.len(),
    ];
    let mut at = empty();
    let mut tail = Bytes::new();
    for w in cuts.windows(2) {
        let mut wr = sealed::upload_writer(&s, &id, at.size, &at.staging, &key, &tail)
            .await
            .unwrap();
        wr.write(Bytes::copy_from_slice(&all[w[0]..w[1]]))
            .await
            .unwrap();
        let (next, t) = wr.finish().await.unwrap();
        tail = t;
        s.upload_advanced(&id, &at.staging, &next.staging)
            .await
            .unwrap();
        assert_eq!(next.size, w[1] as u64);
        at = next;
    }
    let d = Digest::sha256_of(&all);
    s.commit_upload(&id, sealed::sealed_len(at.size), &at.staging, &d, false)
        .await
        .unwrap();
    let raw = collect(s.read(&d, None).await.unwrap()).await;
    assert_eq!(raw.len() as u64, sealed::sealed_len(all.len() as u64));
    assert!(!raw.windows(32).any(|w| w == &all[1000..1032]));
    async fn read(
        s: &S3BlobStore,
        d: &Digest,
        n: u64,
        key: &[u8; 32],
        r: Option<ByteRange>,
    ) -> Vec<u8> {
        let st = sealed::open_range(n, r, key, |sr| s.read(d, Some(sr)))
            .await
            .unwrap();
        collect(st).await
    }
    let n = all.len() as u64;
    assert_eq!(read(&s, &d, n, &key, None).await, all);
    let edge = PART_SIZE / sealed::SEGMENT * SEGMENT_PLAIN;
    for (a, b) in [
        (edge - 3, edge + 3),
        (0, 0),
        (SEGMENT_PLAIN, 2 * SEGMENT_PLAIN),
    ] {
        assert_eq!(
            read(&s, &d, n, &key, Some(ByteRange { first: a, last: b })).await,
            &all[a as usize..=b as usize]
        );
    }
}
