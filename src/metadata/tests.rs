//! Tests of the metadata store against a real SQLite file.

use super::*;

async fn store() -> (tempfile::TempDir, MetadataStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = MetadataStore::open_sqlite(&dir.path().join("meta.db"))
        .await
        .unwrap();
    (dir, s)
}

fn d(s: &str) -> Digest {
    Digest::sha256_of(s.as_bytes())
}

#[tokio::test]
async fn migrate_is_idempotent_and_repos_list_in_byte_order() {
    let (dir, s) = store().await;
    for n in ["b", "a/z", "a", "B-not-valid-but-stored", "a-b"] {
        s.ensure_repository(n).await.unwrap();
    }
    drop(s);
    let s = MetadataStore::open_sqlite(&dir.path().join("meta.db"))
        .await
        .unwrap();
    assert_eq!(
        s.list_repositories(None, 10).await.unwrap(),
        ["B-not-valid-but-stored", "a", "a-b", "a/z", "b"]
    );
    assert_eq!(s.list_repositories(Some("a-b"), 1).await.unwrap(), ["a/z"]);
}

#[tokio::test]
async fn blobs_are_visible_per_repository_and_mountable() {
    let (_dir, s) = store().await;
    let b = d("layer");
    s.create_upload("u1", "one", b"state").await.unwrap();
    assert_eq!(s.get_upload("u1").await.unwrap().unwrap().size, 0);
    assert!(s.advance_upload("u1", 0, 5, b"s2").await.unwrap());
    assert!(
        !s.advance_upload("u1", 0, 9, b"s3").await.unwrap(),
        "stale CAS must fail"
    );
    s.commit_blob("one", &b, 5, Some("u1")).await.unwrap();
    assert!(s.get_upload("u1").await.unwrap().is_none());
    assert_eq!(s.linked_blob_size("one", &b).await.unwrap(), Some(5));
    assert_eq!(s.linked_blob_size("two", &b).await.unwrap(), None);
    assert!(!s.mount_blob("two", "nowhere", &b).await.unwrap());
    assert!(s.mount_blob("two", "one", &b).await.unwrap());
    assert_eq!(s.linked_blob_size("two", &b).await.unwrap(), Some(5));
    assert!(s.unlink_blob("one", &b).await.unwrap());
    assert_eq!(s.linked_blob_size("one", &b).await.unwrap(), None);
    assert_eq!(s.blob_size(&b).await.unwrap(), Some(5));
}

#[tokio::test]
async fn manifests_tags_and_referrers() {
    let (_dir, s) = store().await;
    let layer = d("l");
    s.commit_blob("r", &layer, 1, None).await.unwrap();
    let m1 = d("m1");
    let missing = d("nope");
    let base = NewManifest {
        repository: "r",
        digest: &m1,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        artifact_type: None,
        subject: None,
        annotations: None,
        content: b"{}",
        blobs: std::slice::from_ref(&layer),
        children: &[],
        tag: Some("v1"),
    };
    assert_eq!(
        s.put_manifest(&base).await.unwrap(),
        PutManifestOutcome::Stored
    );
    let blobs = [missing.clone()];
    let bad = NewManifest {
        blobs: &blobs,
        ..base.clone()
    };
    assert_eq!(
        s.put_manifest(&bad).await.unwrap(),
        PutManifestOutcome::MissingBlob(missing.clone())
    );
    assert_eq!(
        s.get_manifest_by_tag("r", "v1")
            .await
            .unwrap()
            .unwrap()
            .digest,
        m1
    );
    let sig = d("sig");
    let with_subject = NewManifest {
        digest: &sig,
        subject: Some(&m1),
        artifact_type: Some("application/x-sig"),
        tag: None,
        ..base.clone()
    };
    s.put_manifest(&with_subject).await.unwrap();
    assert_eq!(s.referrers("r", &m1, None).await.unwrap().len(), 1);
    assert_eq!(s.referrers("r", &m1, Some("other")).await.unwrap().len(), 0);
    let children = [m1.clone()];
    let idx = d("idx");
    let index = NewManifest {
        digest: &idx,
        blobs: &[],
        children: &children,
        tag: Some("list"),
        ..base
    };
    s.put_manifest(&index).await.unwrap();
    assert!(s.manifest_is_referenced("r", &m1).await.unwrap());
    assert_eq!(s.list_tags("r", None, 10).await.unwrap(), ["list", "v1"]);
    assert!(s.delete_tag("r", "v1").await.unwrap());
    assert!(s.delete_manifest("r", &idx).await.unwrap());
    assert!(!s.manifest_is_referenced("r", &m1).await.unwrap());
    assert!(s.list_tags("r", None, 10).await.unwrap().is_empty());
}
