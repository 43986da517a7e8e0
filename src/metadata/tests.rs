//! Tests of the metadata store, each run on both engines: a real SQLite
//! file and a fresh database on a real PostgreSQL server (`testing`).

use super::*;
use crate::config::UploadQuotas;
use testing::{Engine, Fixture};

const A: &str = "111111111111";

async fn store(engine: Engine) -> (Fixture, MetadataStore) {
    let f = Fixture::new(engine).await;
    let s = f.open().await;
    (f, s)
}

/// A descriptor of a blob stored by [`publish`] (5 bytes).
fn desc(digest: &Digest) -> Descriptor {
    Descriptor {
        digest: digest.clone(),
        size: 5,
    }
}

fn d(s: &str) -> Digest {
    Digest::sha256_of(s.as_bytes())
}

fn repo(name: &str) -> Repo<'_> {
    Repo { registry: A, name }
}

/// Claim a digest and commit it into `repo`, as an upload does.
async fn publish(s: &MetadataStore, repo: Repo<'_>, digest: &Digest, upload: Option<&str>) {
    assert_eq!(s.claim_blob(digest, 5).await.unwrap(), BlobClaim::Claimed);
    assert!(s.commit_blob(repo, digest, upload).await.unwrap());
}

async fn create(s: &MetadataStore, registry: &str, name: &str) {
    assert!(
        s.create_repository(&RepositoryRow::new(registry, name), &[])
            .await
            .unwrap()
    );
}

async fn migrate_is_idempotent_and_repos_list_in_byte_order_per_registry(engine: Engine) {
    let (dir, s) = store(engine).await;
    for n in ["b", "a/z", "a", "a-b"] {
        create(&s, A, n).await;
    }
    create(&s, "222222222222", "other").await;
    assert!(
        !s.create_repository(&RepositoryRow::new(A, "a"), &[])
            .await
            .unwrap()
    );
    drop(s);
    let s = dir.open().await;
    let names = |v: Vec<RepositoryRow>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(s.list_repositories(A, None, 10).await.unwrap()),
        ["a", "a-b", "a/z", "b"]
    );
    assert_eq!(
        names(s.list_repositories(A, Some("a-b"), 1).await.unwrap()),
        ["a/z"]
    );
    assert_eq!(
        names(s.list_repositories("222222222222", None, 10).await.unwrap()),
        ["other"]
    );
}

async fn blobs_are_visible_per_repository_and_mountable(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let b = d("layer");
    assert_eq!(
        s.create_upload(
            "u1",
            repo("one"),
            "owner",
            b"state",
            None,
            UploadQuotas::default()
        )
        .await
        .unwrap(),
        CreateUpload::Created
    );
    assert_eq!(s.get_upload("u1").await.unwrap().unwrap().size, 0);
    let until = now_millis() + 60_000;
    assert_eq!(
        s.claim_upload_writer("u1", 0, "w1", until).await.unwrap(),
        WriterClaim::Claimed
    );
    assert!(
        s.advance_upload("u1", "w1", 0, 5, b"s2", "st")
            .await
            .unwrap()
    );
    assert_eq!(s.get_upload("u1").await.unwrap().unwrap().staging, "st");
    assert!(
        !s.advance_upload("u1", "w1", 0, 9, b"s3", "").await.unwrap(),
        "stale CAS must fail"
    );
    publish(&s, repo("one"), &b, Some("u1")).await;
    assert!(s.get_upload("u1").await.unwrap().is_none());
    assert_eq!(s.linked_blob_size(repo("one"), &b).await.unwrap(), Some(5));
    assert_eq!(s.linked_blob_size(repo("two"), &b).await.unwrap(), None);
    let other_registry = Repo {
        registry: "222222222222",
        name: "one",
    };
    assert_eq!(s.linked_blob_size(other_registry, &b).await.unwrap(), None);
    assert!(
        !s.mount_blob(repo("two"), repo("nowhere"), &b)
            .await
            .unwrap()
    );
    assert!(s.mount_blob(repo("two"), repo("one"), &b).await.unwrap());
    assert_eq!(s.linked_blob_size(repo("two"), &b).await.unwrap(), Some(5));
    assert_eq!(
        s.unlink_blob(repo("one"), &b).await.unwrap(),
        Unlink::Removed
    );
    assert_eq!(s.linked_blob_size(repo("one"), &b).await.unwrap(), None);
    assert_eq!(s.blob_size(&b).await.unwrap(), Some(5));
}

async fn manifests_tags_immutability_referrers_and_images(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let layer = d("l");
    publish(&s, repo("r"), &layer, None).await;
    let m1 = d("m1");
    let missing = d("nope");
    let base = NewManifest {
        repo: repo("r"),
        digest: &m1,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        artifact_type: None,
        config_media_type: Some("application/vnd.oci.image.config.v1+json"),
        subject: None,
        annotations: None,
        content: b"{}",
        sealing: None,
        blobs: &[desc(&layer)],
        children: &[],
        layer_bytes: 1,
        tag: Some("v1"),
        tag_immutable: false,
        scan: None,
        replicate: &[],
    };
    assert_eq!(
        s.put_manifest(&base).await.unwrap(),
        PutManifestOutcome::Stored {
            new_manifest: true,
            tag_changed: true
        }
    );
    assert_eq!(
        s.put_manifest(&base).await.unwrap(),
        PutManifestOutcome::Stored {
            new_manifest: false,
            tag_changed: false
        }
    );
    let blobs = [desc(&missing)];
    let bad = NewManifest {
        blobs: &blobs,
        ..base.clone()
    };
    assert_eq!(
        s.put_manifest(&bad).await.unwrap(),
        PutManifestOutcome::MissingBlob(missing.clone())
    );
    assert_eq!(
        s.get_manifest_by_tag(repo("r"), "v1")
            .await
            .unwrap()
            .unwrap()
            .digest,
        m1
    );
    // An immutable tag does not move; the manifest is not stored either.
    let m2 = d("m2");
    let moved = NewManifest {
        digest: &m2,
        tag_immutable: true,
        ..base.clone()
    };
    assert_eq!(
        s.put_manifest(&moved).await.unwrap(),
        PutManifestOutcome::TagImmutable
    );
    assert!(!s.manifest_exists(repo("r"), &m2).await.unwrap());
    let sig = d("sig");
    let with_subject = NewManifest {
        digest: &sig,
        subject: Some(&m1),
        artifact_type: Some("application/x-sig"),
        tag: None,
        ..base.clone()
    };
    s.put_manifest(&with_subject).await.unwrap();
    assert_eq!(s.referrers(repo("r"), &m1, None).await.unwrap().len(), 1);
    assert_eq!(
        s.referrers(repo("r"), &m1, Some("other"))
            .await
            .unwrap()
            .len(),
        0
    );
    let children = [Descriptor {
        digest: m1.clone(),
        size: 2,
    }];
    let idx = d("idx");
    let index = NewManifest {
        digest: &idx,
        blobs: &[],
        children: &children,
        tag: Some("list"),
        ..base
    };
    s.put_manifest(&index).await.unwrap();
    assert!(s.manifest_is_referenced(repo("r"), &m1).await.unwrap());
    assert_eq!(
        s.list_tags(repo("r"), None, 10).await.unwrap(),
        ["list", "v1"]
    );
    let images = s
        .list_images(repo("r"), None, TagFilter::Any, 10)
        .await
        .unwrap();
    assert_eq!(images.len(), 3);
    let tagged: Vec<_> = images
        .iter()
        .filter(|i| !i.tags.is_empty())
        .map(|i| (i.digest.clone(), i.tags.clone()))
        .collect();
    assert!(tagged.contains(&(m1.to_string(), vec!["v1".to_string()])));
    assert!(tagged.contains(&(idx.to_string(), vec!["list".to_string()])));
    assert!(s.delete_tag(repo("r"), "v1").await.unwrap());
    assert_eq!(
        s.delete_manifest(repo("r"), &idx).await.unwrap(),
        DeleteManifest::Deleted(vec!["list".to_string()])
    );
    assert!(!s.manifest_is_referenced(repo("r"), &m1).await.unwrap());
    assert!(s.list_tags(repo("r"), None, 10).await.unwrap().is_empty());
    assert_eq!(
        s.delete_manifest(repo("r"), &idx).await.unwrap(),
        DeleteManifest::NotFound
    );
}

async fn repositories_settings_tags_and_force_delete(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let mut row = RepositoryRow::new(A, "app");
    row.tag_mutability = "IMMUTABLE_WITH_EXCLUSION".into();
    row.mutability_exclusions = vec!["latest".into()];
    assert!(
        s.create_repository(&row, &[("team".into(), "a".into())])
            .await
            .unwrap()
    );
    let got = s.get_repository(repo("app")).await.unwrap().unwrap();
    assert_eq!(got.mutability_exclusions, ["latest"]);
    assert!(
        s.tag_repository(repo("app"), &[("env".into(), "prod".into())], 50)
            .await
            .unwrap()
    );
    assert!(
        !s.tag_repository(repo("app"), &[("x".into(), "1".into())], 2)
            .await
            .unwrap()
    );
    assert_eq!(s.repository_tags(repo("app")).await.unwrap().len(), 2);
    s.untag_repository(repo("app"), &["team".into()])
        .await
        .unwrap();
    assert_eq!(
        s.repository_tags(repo("app")).await.unwrap(),
        [("env".to_string(), "prod".to_string())]
    );
    assert!(
        s.set_repository_policy(repo("app"), Some("{}"))
            .await
            .unwrap()
    );
    publish(&s, repo("app"), &d("l"), None).await;
    let m = d("m");
    let layers = [desc(&d("l"))];
    s.put_manifest(&NewManifest {
        repo: repo("app"),
        digest: &m,
        media_type: "x",
        artifact_type: None,
        config_media_type: None,
        subject: None,
        annotations: None,
        content: b"{}",
        sealing: None,
        blobs: &layers,
        children: &[],
        layer_bytes: 1,
        tag: None,
        tag_immutable: false,
        scan: None,
        replicate: &[],
    })
    .await
    .unwrap();
    assert_eq!(
        s.delete_repository(repo("app"), false).await.unwrap(),
        Some(Err(()))
    );
    assert!(matches!(
        s.delete_repository(repo("app"), true).await.unwrap(),
        Some(Ok(_))
    ));
    assert!(s.get_repository(repo("app")).await.unwrap().is_none());
    assert_eq!(
        s.linked_blob_size(repo("app"), &d("l")).await.unwrap(),
        None
    );
    assert_eq!(s.delete_repository(repo("app"), true).await.unwrap(), None);
}

async fn identities_and_settings(engine: Engine) {
    let (_dir, s) = store(engine).await;
    assert!(s.create_account(A, "primary").await.unwrap());
    assert!(s.create_user(A, "alice", "AIDAALICE").await.unwrap());
    assert!(!s.create_user(A, "alice", "AIDAALICE").await.unwrap());
    s.create_access_key(&AccessKeyRow {
        access_key_id: "AKIA1".into(),
        account_id: A.into(),
        user_name: "alice".into(),
        secret_sealed: vec![1, 2, 3],
        active: true,
        created_at: 1,
    })
    .await
    .unwrap();
    assert!(s.get_access_key("AKIA1").await.unwrap().unwrap().active);
    assert!(s.set_access_key_active("AKIA1", false).await.unwrap());
    assert!(!s.get_access_key("AKIA1").await.unwrap().unwrap().active);
    s.put_user_policy(A, "alice", "p", "{\"v\":1}")
        .await
        .unwrap();
    s.put_user_policy(A, "alice", "p", "{\"v\":2}")
        .await
        .unwrap();
    assert_eq!(
        s.user_policies(A, "alice").await.unwrap(),
        [("p".to_string(), "{\"v\":2}".to_string())]
    );
    assert_eq!(s.init_setting("k", b"first").await.unwrap(), b"first");
    assert_eq!(s.init_setting("k", b"second").await.unwrap(), b"first");
}

// ---- the garbage-collection protocol, one interleaving at a time ----------
// Each test runs the steps of a push and of the collector in a fixed order
// and checks that the later step sees the earlier one (docs/gc.md).

fn image<'a>(digest: &'a Digest, blobs: &'a [Descriptor]) -> NewManifest<'a> {
    NewManifest {
        repo: repo("r"),
        digest,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        artifact_type: None,
        config_media_type: None,
        subject: None,
        annotations: None,
        content: b"{}",
        sealing: None,
        blobs,
        children: &[],
        layer_bytes: 1,
        tag: None,
        tag_immutable: false,
        scan: None,
        replicate: &[],
    }
}

/// A far-future cutoff: every row counts as old.
const LATER: i64 = i64::MAX / 2;

async fn gc_marking_after_a_manifest_put_sees_its_references(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let b = d("layer");
    publish(&s, repo("r"), &b, None).await;
    let m = d("m");
    s.put_manifest(&image(&m, &[desc(&b)])).await.unwrap();
    assert!(
        s.mark_deleting(&[b.to_string()], LATER)
            .await
            .unwrap()
            .is_empty()
    );
    // Once the manifest is gone, the blob is collectable, links and all.
    s.delete_manifest(repo("r"), &m).await.unwrap();
    let marked = s.mark_deleting(&[b.to_string()], LATER).await.unwrap();
    assert_eq!(
        marked,
        vec![GcCandidate {
            digest: b.to_string(),
            size: 5
        }]
    );
    assert_eq!(s.linked_blob_size(repo("r"), &b).await.unwrap(), None);
    assert_eq!(s.deleting_blobs(10).await.unwrap().len(), 1);
    s.forget_blobs(&[b.to_string()]).await.unwrap();
    assert!(s.deleting_blobs(10).await.unwrap().is_empty());
}

async fn a_manifest_put_after_gc_marking_is_refused(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let b = d("layer");
    publish(&s, repo("r"), &b, None).await;
    assert_eq!(
        s.mark_deleting(&[b.to_string()], LATER)
            .await
            .unwrap()
            .len(),
        1
    );
    let m = d("m");
    assert_eq!(
        s.put_manifest(&image(&m, &[desc(&b)])).await.unwrap(),
        PutManifestOutcome::MissingBlob(b.clone())
    );
    // Mounts, existence checks and commits all see the blob as gone.
    assert!(!s.mount_blob(repo("other"), repo("r"), &b).await.unwrap());
    assert!(!s.touch_link(repo("r"), &b, LATER).await.unwrap());
    assert!(!s.commit_blob(repo("r"), &b, None).await.unwrap());
    assert_eq!(s.claim_blob(&b, 5).await.unwrap(), BlobClaim::Deleting);
    // After phase 2 the digest can be claimed and committed afresh.
    s.forget_blobs(&[b.to_string()]).await.unwrap();
    assert_eq!(s.claim_blob(&b, 5).await.unwrap(), BlobClaim::Claimed);
    assert!(s.commit_blob(repo("r"), &b, None).await.unwrap());
    assert_eq!(s.linked_blob_size(repo("r"), &b).await.unwrap(), Some(5));
}

async fn fresh_claims_and_links_protect_from_marking(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let b = d("layer");
    let now = now_millis();
    // Claimed (bytes about to be published): not marked while fresh.
    assert_eq!(s.claim_blob(&b, 5).await.unwrap(), BlobClaim::Claimed);
    assert!(
        s.mark_deleting(&[b.to_string()], now - 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    // A claimed row shuts out orphan adoption of the same file.
    assert!(!s.adopt_orphan(b.as_str(), 5).await.unwrap());
    // Linked and fresh (uploaded, mounted or confirmed by a HEAD): not marked.
    assert!(s.commit_blob(repo("r"), &b, None).await.unwrap());
    assert!(
        s.mark_deleting(&[b.to_string()], now - 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    // A HEAD refreshes a stale link, and the refresh protects it.
    let (_, touched) = s.linked_blob(repo("r"), &b).await.unwrap().unwrap();
    assert!(s.touch_link(repo("r"), &b, touched + 1).await.unwrap());
    let (_, again) = s.linked_blob(repo("r"), &b).await.unwrap().unwrap();
    assert!(again >= touched);
    assert!(
        s.mark_deleting(&[b.to_string()], again)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn an_adopted_orphan_cannot_be_claimed_until_it_is_gone(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let b = d("orphan file");
    assert!(s.adopt_orphan(b.as_str(), 7).await.unwrap());
    assert_eq!(s.claim_blob(&b, 7).await.unwrap(), BlobClaim::Deleting);
    assert!(!s.commit_blob(repo("r"), &b, None).await.unwrap());
    s.forget_blobs(&[b.to_string()]).await.unwrap();
    assert_eq!(s.claim_blob(&b, 7).await.unwrap(), BlobClaim::Claimed);
}

async fn pull_times_are_recorded_once_per_period(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let b = d("layer");
    publish(&s, repo("r"), &b, None).await;
    let m = d("m");
    s.put_manifest(&image(&m, &[desc(&b)])).await.unwrap();
    assert_eq!(
        s.get_manifest(repo("r"), &m)
            .await
            .unwrap()
            .unwrap()
            .last_pulled_at,
        None
    );
    s.record_pull(repo("r"), &m, 1000, 0).await.unwrap();
    assert_eq!(
        s.get_manifest(repo("r"), &m)
            .await
            .unwrap()
            .unwrap()
            .last_pulled_at,
        Some(1000)
    );
    // Recorded after the period start: no new write.
    s.record_pull(repo("r"), &m, 2000, 500).await.unwrap();
    assert_eq!(
        s.get_manifest(repo("r"), &m)
            .await
            .unwrap()
            .unwrap()
            .last_pulled_at,
        Some(1000)
    );
    s.record_pull(repo("r"), &m, 3000, 1500).await.unwrap();
    assert_eq!(
        s.get_manifest(repo("r"), &m)
            .await
            .unwrap()
            .unwrap()
            .last_pulled_at,
        Some(3000)
    );
}

async fn a_commit_whose_claim_was_collected_is_refused(engine: Engine) {
    // Claim, then the collector marks, deletes the bytes and forgets the row
    // before the upload commits: the commit must not resurrect the row.
    let (_dir, s) = store(engine).await;
    let b = d("slow upload");
    assert_eq!(s.claim_blob(&b, 5).await.unwrap(), BlobClaim::Claimed);
    assert_eq!(
        s.mark_deleting(&[b.to_string()], LATER)
            .await
            .unwrap()
            .len(),
        1
    );
    s.forget_blobs(&[b.to_string()]).await.unwrap();
    assert!(!s.commit_blob(repo("r"), &b, None).await.unwrap());
    assert_eq!(s.linked_blob_size(repo("r"), &b).await.unwrap(), None);
    assert_eq!(s.blob_size(&b).await.unwrap(), None);
}

async fn descriptor_sizes_must_match_what_is_stored(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let (l, m) = (d("l"), d("m"));
    publish(&s, repo("r"), &l, None).await;
    let wrong = [Descriptor {
        digest: l.clone(),
        size: 6,
    }];
    assert_eq!(
        s.put_manifest(&image(&m, &wrong)).await.unwrap(),
        PutManifestOutcome::SizeMismatch {
            digest: l.clone(),
            declared: 6,
            stored: 5
        }
    );
    // The same layer listed twice, once with a wrong size, is refused too.
    let twice = [desc(&l), wrong[0].clone()];
    assert!(matches!(
        s.put_manifest(&image(&m, &twice)).await.unwrap(),
        PutManifestOutcome::SizeMismatch { .. }
    ));
    assert!(!s.manifest_exists(repo("r"), &m).await.unwrap());
    assert!(matches!(
        s.put_manifest(&image(&m, &[desc(&l), desc(&l)]))
            .await
            .unwrap(),
        PutManifestOutcome::Stored { .. }
    ));
    // An index whose child descriptor has the wrong size.
    let idx = d("idx");
    let bad_child = [Descriptor {
        digest: m.clone(),
        size: 3,
    }];
    let index = NewManifest {
        digest: &idx,
        blobs: &[],
        children: &bad_child,
        ..image(&m, &[])
    };
    assert_eq!(
        s.put_manifest(&index).await.unwrap(),
        PutManifestOutcome::SizeMismatch {
            digest: m.clone(),
            declared: 3,
            stored: 2
        }
    );
}

async fn upload_sessions_are_counted_per_owner_and_per_repository(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let q = UploadQuotas {
        per_caller: 2,
        per_repository: 3,
    };
    let open = |id: &'static str, r: &'static str, owner: &'static str| {
        let s = s.clone();
        async move {
            s.create_upload(id, repo(r), owner, b"h", None, q)
                .await
                .unwrap()
        }
    };
    assert_eq!(open("a1", "x", "alice").await, CreateUpload::Created);
    assert_eq!(open("a2", "y", "alice").await, CreateUpload::Created);
    assert_eq!(open("a3", "x", "alice").await, CreateUpload::CallerQuota(2));
    assert_eq!(open("b1", "x", "bob").await, CreateUpload::Created);
    assert_eq!(open("c1", "x", "carol").await, CreateUpload::Created);
    assert_eq!(
        open("c2", "x", "carol").await,
        CreateUpload::RepositoryQuota(3)
    );
    assert!(s.get_upload("a3").await.unwrap().is_none());
    // Finishing a session makes room again.
    assert!(s.delete_upload("a1").await.unwrap());
    assert_eq!(open("a4", "z", "alice").await, CreateUpload::Created);
}

/// A COMMIT that fails on a full disk must not poison the connection it ran
/// on: once space is back, writes work again without a restart.
#[tokio::test]
async fn a_failed_commit_does_not_poison_the_pool() {
    // SQLite only: its page limit stands in for a full disk.
    let (_dir, s) = store(Engine::Sqlite).await;
    // Cap the database at its current size (a max_page_count below it is
    // raised to it): the next page it needs fails with SQLITE_FULL, as a full
    // disk does. Every connection of the pool (8) needs the setting: hold them all.
    let set_max = |n: i64| {
        let pool = s.pool.clone();
        async move {
            let mut held = Vec::new();
            for _ in 0..8 {
                let mut c = pool.acquire().await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {n}")))
                    .execute(&mut *c)
                    .await
                    .unwrap();
                held.push(c);
            }
        }
    };
    set_max(1).await;
    let big = vec![7u8; 1 << 20];
    let mut full = 0;
    for i in 0..8 {
        let e = s
            .create_upload(
                &format!("u{i}"),
                repo("r"),
                "o",
                &big,
                None,
                UploadQuotas::default(),
            )
            .await;
        match e {
            Err(MetaError::Full) => full += 1,
            other => panic!("expected Full, got {other:?}"),
        }
    }
    assert_eq!(full, 8);
    set_max(1 << 30).await;
    for i in 0..16 {
        assert_eq!(
            s.create_upload(
                &format!("ok{i}"),
                repo("r"),
                "o",
                b"h",
                None,
                UploadQuotas::default()
            )
            .await
            .unwrap(),
            CreateUpload::Created
        );
    }
}

// ---- races between nodes: two stores (pools) on one database --------------
// Found on PostgreSQL against the code before these fixes (never on SQLite,
// whose writers take turns); each runs many rounds.

async fn concurrent_claims_of_a_new_blob_all_succeed(engine: Engine) {
    let (f, s1) = store(engine).await;
    let s2 = f.open().await;
    for round in 0..20 {
        let b = d(&format!("new blob {round}"));
        let claims = (0..8).map(|i| {
            let (s, b) = (if i % 2 == 0 { s1.clone() } else { s2.clone() }, b.clone());
            tokio::spawn(async move { s.claim_blob(&b, 5).await })
        });
        for c in futures_util::future::join_all(claims).await {
            assert_eq!(c.unwrap().unwrap(), BlobClaim::Claimed, "round {round}");
        }
    }
}

async fn nodes_migrating_an_empty_database_at_once_all_come_up(engine: Engine) {
    for _ in 0..3 {
        let f = std::sync::Arc::new(Fixture::new(engine).await);
        let opens = (0..4).map(|_| {
            let f = f.clone();
            tokio::spawn(async move { MetadataStore::connect(&f.url).await.map(|_| ()) })
        });
        for o in futures_util::future::join_all(opens).await {
            o.unwrap()
                .expect("every node migrates or waits for the one that does");
        }
    }
}

async fn two_pushes_to_one_new_immutable_tag_have_one_winner(engine: Engine) {
    let (f, s1) = store(engine).await;
    let s2 = f.open().await;
    let layer = d("layer");
    publish(&s1, repo("r"), &layer, None).await;
    for round in 0..20 {
        let tag = format!("t{round}");
        let (m1, m2) = (d(&format!("one {round}")), d(&format!("two {round}")));
        let push = |s: MetadataStore, m: Digest, tag: String, layer: Digest| {
            tokio::spawn(async move {
                let blobs = [desc(&layer)];
                let mut nm = image(&m, &blobs);
                nm.tag = Some(&tag);
                nm.tag_immutable = true;
                s.put_manifest(&nm).await.unwrap()
            })
        };
        let a = push(s1.clone(), m1.clone(), tag.clone(), layer.clone());
        let b = push(s2.clone(), m2.clone(), tag.clone(), layer.clone());
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let won = |o: &PutManifestOutcome| {
            matches!(
                o,
                PutManifestOutcome::Stored {
                    tag_changed: true,
                    ..
                }
            )
        };
        assert!(won(&a) != won(&b), "round {round}: {a:?} and {b:?}");
        let loser = if won(&a) { &b } else { &a };
        assert_eq!(loser, &PutManifestOutcome::TagImmutable, "round {round}");
        let winner = if won(&a) { &m1 } else { &m2 };
        assert_eq!(
            s1.tag_digest(repo("r"), &tag).await.unwrap().as_deref(),
            Some(winner.as_str())
        );
    }
}

async fn gc_marking_and_a_manifest_put_never_deadlock_or_both_win(engine: Engine) {
    use sqlx::Connection;
    let (f, s1) = store(engine).await;
    let s2 = f.open().await;
    for round in 0..10 {
        // Ten layers, listed in the manifest in the opposite order to the
        // collector's (digest order): the lock-order trap.
        let mut layers: Vec<Digest> = (0..10).map(|i| d(&format!("layer {round} {i}"))).collect();
        layers.sort();
        for l in &layers {
            publish(&s1, repo("r"), l, None).await;
        }
        // On PostgreSQL a third session holds the middle layer's row, so that
        // the push and the collector both stop halfway, holding what they
        // locked so far: a deadlock, unless both lock in one order.
        let mut holder = match engine {
            Engine::Postgres => {
                let mut c = sqlx::AnyConnection::connect(&f.url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut c).await.unwrap();
                sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE")
                    .bind(layers[5].as_str())
                    .execute(&mut c)
                    .await
                    .unwrap();
                Some(c)
            }
            Engine::Sqlite => None,
        };
        let m = d(&format!("image {round}"));
        let future_cutoff = now_millis() + 60_000;
        let put = {
            let (s, m) = (s2.clone(), m.clone());
            let blobs: Vec<Descriptor> = layers.iter().rev().map(desc).collect();
            tokio::spawn(async move { s.put_manifest(&image(&m, &blobs)).await })
        };
        let mark = {
            let s = s1.clone();
            let all: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
            tokio::spawn(async move { s.mark_deleting(&all, future_cutoff).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if let Some(c) = holder.as_mut() {
            sqlx::query("COMMIT").execute(c).await.unwrap();
        }
        let put = put
            .await
            .unwrap()
            .expect("no deadlock, no error for the push");
        let marked = mark
            .await
            .unwrap()
            .expect("no deadlock, no error for the collector");
        match put {
            PutManifestOutcome::Stored { .. } => assert!(
                marked.is_empty(),
                "round {round}: GC marked blobs a stored manifest references"
            ),
            PutManifestOutcome::MissingBlob(_) => assert!(!marked.is_empty()),
            other => panic!("round {round}: {other:?}"),
        }
        // Invariant I1: every referenced blob is live.
        for (digest, state) in s1.referenced_blob_states().await.unwrap() {
            assert_eq!(state.as_deref(), Some("live"), "{digest} in round {round}");
        }
    }
    assert_eq!(s1.retries() + s2.retries(), 0, "a deadlock was retried");
}

async fn an_index_push_and_a_delete_of_its_child_never_both_win(engine: Engine) {
    // The reference check of a delete used to run outside its transaction:
    // an index pushed in between would point at a deleted child.
    let (f, s1) = store(engine).await;
    let s2 = f.open().await;
    let layer = d("layer");
    publish(&s1, repo("r"), &layer, None).await;
    for round in 0..20 {
        let child = d(&format!("child {round}"));
        s1.put_manifest(&image(&child, &[desc(&layer)]))
            .await
            .unwrap();
        let idx = d(&format!("index {round}"));
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let push = {
            let (s, idx, child, start) = (s2.clone(), idx.clone(), child.clone(), start.clone());
            tokio::spawn(async move {
                let children = [Descriptor {
                    digest: child,
                    size: 2,
                }];
                let index = NewManifest {
                    digest: &idx,
                    blobs: &[],
                    children: &children,
                    ..image(&idx, &[])
                };
                start.wait().await;
                s.put_manifest(&index).await.unwrap()
            })
        };
        let delete = {
            let (s, child, start) = (s1.clone(), child.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                s.delete_manifest(repo("r"), &child).await.unwrap()
            })
        };
        let (pushed, deleted) = (push.await.unwrap(), delete.await.unwrap());
        let index_stored = matches!(pushed, PutManifestOutcome::Stored { .. });
        let child_deleted = matches!(deleted, DeleteManifest::Deleted(_));
        assert!(
            !(index_stored && child_deleted),
            "round {round}: {pushed:?} and {deleted:?}"
        );
        assert_eq!(
            s1.manifest_exists(repo("r"), &child).await.unwrap(),
            !child_deleted,
            "round {round}"
        );
        if index_stored {
            assert_eq!(deleted, DeleteManifest::Referenced, "round {round}");
        }
    }
}

async fn a_blob_delete_and_a_manifest_put_never_both_win(engine: Engine) {
    // The delete's reference check and its unlink took no lock: on
    // PostgreSQL (READ COMMITTED) a manifest PUT that had checked the link
    // could commit its references after the delete's check, leaving a
    // manifest whose layer is no longer in the repository.
    use sqlx::Connection;
    let (f, s1) = store(engine).await;
    let s2 = f.open().await;
    for round in 0..5 {
        let layer = d(&format!("layer {round}"));
        publish(&s1, repo("r"), &layer, None).await;
        let tag = format!("t{round}");
        // On PostgreSQL a third session holds the manifest's new tag, so the
        // PUT stops after its link check and before its references.
        let mut holder = match engine {
            Engine::Postgres => {
                let mut c = sqlx::AnyConnection::connect(&f.url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut c).await.unwrap();
                sqlx::query(
                    "INSERT INTO tags (registry_id, repository, name, digest, updated_at) \
                     VALUES ($1, 'r', $2, 'held', 0)",
                )
                .bind(A)
                .bind(&tag)
                .execute(&mut c)
                .await
                .unwrap();
                Some(c)
            }
            Engine::Sqlite => None,
        };
        let m = d(&format!("image {round}"));
        let put = {
            let (s, m, layer, tag) = (s2.clone(), m.clone(), layer.clone(), tag.clone());
            tokio::spawn(async move {
                let blobs = [desc(&layer)];
                let new = NewManifest {
                    tag: Some(&tag),
                    ..image(&m, &blobs)
                };
                s.put_manifest(&new).await.unwrap()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let unlink = {
            let (s, layer) = (s1.clone(), layer.clone());
            tokio::spawn(async move { s.unlink_blob(repo("r"), &layer).await.unwrap() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        if let Some(c) = holder.as_mut() {
            sqlx::query("ROLLBACK").execute(c).await.unwrap();
        }
        let (put, unlinked) = (put.await.unwrap(), unlink.await.unwrap());
        let stored = matches!(put, PutManifestOutcome::Stored { .. });
        assert!(
            !(stored && unlinked == Unlink::Removed),
            "round {round}: {put:?} and {unlinked:?}"
        );
        assert_eq!(
            s1.linked_blob_size(repo("r"), &layer)
                .await
                .unwrap()
                .is_some(),
            unlinked != Unlink::Removed,
            "round {round}"
        );
        if engine == Engine::Postgres {
            // The PUT had the blob first: the delete waits for it, then sees it.
            assert!(stored, "round {round}: {put:?}");
            assert_eq!(unlinked, Unlink::Referenced(m.to_string()), "round {round}");
        }
    }
}

async fn nodes_bootstrapping_an_empty_store_at_once_create_one_account(engine: Engine) {
    use crate::auth::Access;
    use crate::secrets::MasterKey;
    let f = std::sync::Arc::new(Fixture::new(engine).await);
    // Nodes with the same configured key, then nodes generating their own.
    for key in [Some(("AKIAEXAMPLEBOOTSTRAP", "secret")), None] {
        let f = if key.is_some() {
            f.clone()
        } else {
            std::sync::Arc::new(Fixture::new(engine).await)
        };
        let runs = (0..4).map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                let meta = f.open().await;
                let access = Access::open(meta, MasterKey::from_bytes(&[3u8; 32]), "us-east-1")
                    .await
                    .unwrap();
                access
                    .bootstrap(Some("123456789012"), key)
                    .await
                    .unwrap()
                    .is_some()
            })
        });
        let created: Vec<bool> = futures_util::future::join_all(runs)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
        let s = f.open().await;
        assert_eq!(s.list_accounts().await.unwrap().len(), 1);
        assert_eq!(
            s.list_access_keys("123456789012", "").await.unwrap().len(),
            1
        );
    }
}

/// ListImages' pages (one id per tag, an untagged image once), walked with
/// every page size and filter, give exactly the ids of the whole listing in
/// its order, each once, also when a page ends inside an image's tags.
async fn image_id_pages_walk_every_tag_once_in_order(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let layer = d("l");
    publish(&s, repo("r"), &layer, None).await;
    let tags_per_image = [0usize, 3, 1, 0, 5, 2];
    for (i, n) in tags_per_image.iter().enumerate() {
        let m = d(&format!("image{i}"));
        let tags: Vec<Option<String>> = if *n == 0 {
            vec![None]
        } else {
            (0..*n).map(|t| Some(format!("t{}-{i}", 9 - t))).collect()
        };
        let blobs = [desc(&layer)];
        for tag in &tags {
            s.put_manifest(&NewManifest {
                tag: tag.as_deref(),
                ..image(&m, &blobs)
            })
            .await
            .unwrap();
        }
    }
    for filter in [TagFilter::Any, TagFilter::Tagged, TagFilter::Untagged] {
        // The oracle: every image with all its tags, flattened.
        let all = s.list_images(repo("r"), None, filter, 100).await.unwrap();
        let expected: Vec<(String, Option<String>)> = all
            .iter()
            .flat_map(|img| {
                if img.tags.is_empty() {
                    vec![(img.digest.clone(), None)]
                } else {
                    img.tags
                        .iter()
                        .map(|t| (img.digest.clone(), Some(t.clone())))
                        .collect()
                }
            })
            .collect();
        assert!(!expected.is_empty());
        for limit in 1..=4 {
            let mut walked = Vec::new();
            let mut after: Option<ImageIdRow> = None;
            loop {
                let page = s
                    .list_image_ids(repo("r"), after.as_ref(), filter, limit)
                    .await
                    .unwrap();
                assert!(page.len() as i64 <= limit);
                walked.extend(
                    page.iter()
                        .map(|e| (e.digest.clone(), e.tag.as_ref().map(|t| t.1.clone()))),
                );
                if (page.len() as i64) < limit {
                    break;
                }
                after = page.last().cloned();
            }
            assert_eq!(walked, expected, "{filter:?}, pages of {limit}");
        }
    }
}

crate::metadata::testing::on_both_engines!(
    image_id_pages_walk_every_tag_once_in_order,
    migrate_is_idempotent_and_repos_list_in_byte_order_per_registry,
    blobs_are_visible_per_repository_and_mountable,
    manifests_tags_immutability_referrers_and_images,
    repositories_settings_tags_and_force_delete,
    identities_and_settings,
    gc_marking_after_a_manifest_put_sees_its_references,
    a_manifest_put_after_gc_marking_is_refused,
    fresh_claims_and_links_protect_from_marking,
    an_adopted_orphan_cannot_be_claimed_until_it_is_gone,
    pull_times_are_recorded_once_per_period,
    a_commit_whose_claim_was_collected_is_refused,
    descriptor_sizes_must_match_what_is_stored,
    upload_sessions_are_counted_per_owner_and_per_repository,
    concurrent_claims_of_a_new_blob_all_succeed,
    nodes_migrating_an_empty_database_at_once_all_come_up,
    two_pushes_to_one_new_immutable_tag_have_one_winner,
    gc_marking_and_a_manifest_put_never_deadlock_or_both_win,
    an_index_push_and_a_delete_of_its_child_never_both_win,
    a_blob_delete_and_a_manifest_put_never_both_win,
    nodes_bootstrapping_an_empty_store_at_once_create_one_account,
    one_writer_per_upload_across_nodes,
    jobs_are_leased_to_one_node_retried_and_rescheduled,
    concurrent_claims_hand_each_job_to_one_node,
    account_settings_are_kept_per_registry,
    the_replication_log_is_appended_by_a_push_and_worked_per_destination,
    the_consoles_storage_totals_add_up,
);

/// The console's storage chart and totals: one row per push day, summing
/// to the repository's total (PostgreSQL's SUM of BIGINT is NUMERIC: cast).
async fn the_consoles_storage_totals_add_up(engine: Engine) {
    let (_dir, s) = store(engine).await;
    assert_eq!(s.repository_usage(repo("r")).await.unwrap(), (0, 0));
    assert!(s.storage_by_day(repo("r"), 30).await.unwrap().is_empty());
    let b = d("layer");
    publish(&s, repo("r"), &b, None).await;
    for m in ["m1", "m2"] {
        s.put_manifest(&image(&d(m), &[desc(&b)])).await.unwrap();
    }
    let (count, total) = s.repository_usage(repo("r")).await.unwrap();
    assert_eq!(count, 2);
    assert!(total > 0);
    let days = s.storage_by_day(repo("r"), 30).await.unwrap();
    assert_eq!(days.len(), 1);
    let today = super::now_millis() / 86_400_000;
    assert!([today - 1, today].contains(&days[0].0), "{days:?}");
    assert_eq!(days[0].1, total);
}

/// A push appends to each destination's log in its transaction (with its
/// job); a delivery completes an entry only as it was read; a destination-wide
/// failure defers every due entry, and its first success makes them due.
async fn the_replication_log_is_appended_by_a_push_and_worked_per_destination(engine: Engine) {
    use super::{DestinationKey, NewJob, ReplicationEntry};
    let (_dir, s) = store(engine).await;
    let layer = d("l");
    publish(&s, repo("r"), &layer, None).await;
    let far = DestinationKey {
        region: "eu-west-1".into(),
        registry: "123456789012".into(),
    };
    let near = DestinationKey {
        region: "us-east-1".into(),
        registry: "222222222222".into(),
    };
    let job = |d: &DestinationKey| NewJob {
        kind: "replicate".into(),
        dedupe: format!("{}/{}", d.region, d.registry),
        payload: "{}".into(),
        run_at: 0,
    };
    let replicate = [(far.clone(), job(&far)), (near.clone(), job(&near))];
    for (digest, tag) in [(d("m1"), "v1"), (d("m2"), "v2")] {
        let m = NewManifest {
            repo: repo("r"),
            digest: &digest,
            media_type: "application/vnd.oci.image.manifest.v1+json",
            artifact_type: None,
            config_media_type: None,
            subject: None,
            annotations: None,
            content: b"{}",
            sealing: None,
            blobs: &[desc(&layer)],
            children: &[],
            layer_bytes: 1,
            tag: Some(tag),
            tag_immutable: false,
            scan: None,
            replicate: &replicate,
        };
        s.put_manifest(&m).await.unwrap();
    }
    assert_eq!(
        s.job_state("replicate", "eu-west-1/123456789012")
            .await
            .unwrap()
            .as_deref(),
        Some("queued")
    );
    let mut due = s.replication_due_destinations(now_millis()).await.unwrap();
    due.sort();
    assert_eq!(due, vec![far.clone(), near.clone()]);
    let entries = s.replication_due(&far, now_millis(), 10).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries[0].pushed_at <= entries[1].pushed_at);
    // The first image fails at the destination as a whole: both wait.
    let later = now_millis() + 60_000;
    s.replication_outcome(
        &entries[0],
        Err(("DESTINATION_UNREACHABLE", "refused", Some(later))),
    )
    .await
    .unwrap();
    assert_eq!(
        s.replication_defer(&far, "DESTINATION_UNREACHABLE", "refused", later)
            .await
            .unwrap(),
        1
    );
    assert!(
        s.replication_due(&far, now_millis(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The other destination is not held back.
    assert_eq!(
        s.replication_due(&near, now_millis(), 10)
            .await
            .unwrap()
            .len(),
        2
    );
    // It answers again: both are due at once.
    assert_eq!(
        s.replication_resume(&far, &["DESTINATION_UNREACHABLE"])
            .await
            .unwrap(),
        2
    );
    let entries = s.replication_due(&far, now_millis(), 10).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0].failure_code.as_deref(),
        Some("DESTINATION_UNREACHABLE")
    );
    s.replication_outcome(&entries[0], Ok(())).await.unwrap();
    // An outcome for an entry pushed again since it was read changes nothing.
    let stale = ReplicationEntry {
        pushed_at: entries[1].pushed_at - 1,
        ..entries[1].clone()
    };
    s.replication_outcome(&stale, Ok(())).await.unwrap();
    let left = s.replication_due(&far, now_millis(), 10).await.unwrap();
    assert_eq!(left.len(), 1);
    let m1 = s
        .replication_entries(repo("r"), d("m1").as_str())
        .await
        .unwrap();
    let states: Vec<_> = m1
        .iter()
        .map(|e| (e.destination.region.as_str(), e.state.as_str()))
        .collect();
    assert_eq!(
        states,
        vec![("eu-west-1", "complete"), ("us-east-1", "pending")]
    );
    let backlog = s.replication_backlogs().await.unwrap();
    let far_backlog = backlog.iter().find(|b| b.destination == far).unwrap();
    assert_eq!((far_backlog.pending, far_backlog.failed), (1, 0));
    assert!(far_backlog.oldest_pending.is_some());
}

/// An account setting is kept per registry and name; a second put replaces
/// the value, and survives reopening the store.
async fn account_settings_are_kept_per_registry(engine: Engine) {
    let (dir, s) = store(engine).await;
    let other = "222222222222";
    assert_eq!(s.account_setting(A, "BLOB_MOUNTING").await.unwrap(), None);
    s.put_account_setting(A, "BLOB_MOUNTING", "DISABLED")
        .await
        .unwrap();
    s.put_account_setting(A, "REGISTRY_POLICY_SCOPE", "V2")
        .await
        .unwrap();
    s.put_account_setting(other, "BLOB_MOUNTING", "ENABLED")
        .await
        .unwrap();
    s.put_account_setting(A, "BLOB_MOUNTING", "ENABLED")
        .await
        .unwrap();
    drop(s);
    let s = dir.open().await;
    let get = |r: &'static str, n: &'static str| {
        let s = &s;
        async move { s.account_setting(r, n).await.unwrap() }
    };
    assert_eq!(get(A, "BLOB_MOUNTING").await.as_deref(), Some("ENABLED"));
    assert_eq!(get(A, "REGISTRY_POLICY_SCOPE").await.as_deref(), Some("V2"));
    assert_eq!(
        get(other, "BLOB_MOUNTING").await.as_deref(),
        Some("ENABLED")
    );
    assert_eq!(get(other, "REGISTRY_POLICY_SCOPE").await, None);
}

/// The writer's lease: one request appends to a session at a time, a lease
/// left behind by a dead node expires and marks the session contended, and a
/// writer that lost its lease cannot record its chunk.
async fn one_writer_per_upload_across_nodes(engine: Engine) {
    let (_dir, s) = store(engine).await;
    s.create_upload("u", repo("one"), "o", b"h", None, UploadQuotas::default())
        .await
        .unwrap();
    let later = now_millis() + 60_000;
    assert_eq!(
        s.claim_upload_writer("u", 0, "a", later).await.unwrap(),
        WriterClaim::Claimed
    );
    assert_eq!(
        s.claim_upload_writer("u", 0, "b", later).await.unwrap(),
        WriterClaim::Busy
    );
    assert_eq!(
        s.claim_upload_writer("u", 7, "b", later).await.unwrap(),
        WriterClaim::Moved(0)
    );
    assert_eq!(
        s.claim_upload_writer("nope", 0, "b", later).await.unwrap(),
        WriterClaim::Unknown
    );
    // Released: the next writer takes it, and nothing is contended.
    s.release_upload_writer("u", "a").await.unwrap();
    assert_eq!(
        s.claim_upload_writer("u", 0, "b", now_millis() - 1)
            .await
            .unwrap(),
        WriterClaim::Claimed
    );
    assert!(!s.get_upload("u").await.unwrap().unwrap().contended);
    // b's lease has expired without release (its node died): c takes over,
    // the session is contended, and b can no longer record anything.
    assert_eq!(
        s.claim_upload_writer("u", 0, "c", later).await.unwrap(),
        WriterClaim::Claimed
    );
    assert!(s.get_upload("u").await.unwrap().unwrap().contended);
    assert!(!s.renew_upload_writer("u", "b", later).await.unwrap());
    assert!(!s.advance_upload("u", "b", 0, 3, b"x", "").await.unwrap());
    assert!(s.renew_upload_writer("u", "c", later).await.unwrap());
    assert!(s.advance_upload("u", "c", 0, 3, b"x", "").await.unwrap());
    assert_eq!(s.get_upload("u").await.unwrap().unwrap().size, 3);
}

fn job(kind: &str, key: &str) -> NewJob {
    NewJob {
        kind: kind.into(),
        dedupe: key.into(),
        payload: "{}".into(),
        run_at: now_millis() - 1,
    }
}

async fn job_of(s: &MetadataStore, kind: &str) -> JobRow {
    let jobs = s.list_jobs().await.unwrap();
    jobs.into_iter().find(|j| j.kind == kind).unwrap()
}

/// The job queue: dedupe, leases, lapsed leases, backoff, giving up,
/// periodic rescheduling.
async fn jobs_are_leased_to_one_node_retried_and_rescheduled(engine: Engine) {
    let (_dir, s) = store(engine).await;
    let later = now_millis() + 60_000;
    assert!(s.enqueue_job(&job("preview", "r1")).await.unwrap());
    assert!(
        !s.enqueue_job(&job("preview", "r1")).await.unwrap(),
        "queued twice"
    );
    let a = s.claim_job("node-a", later).await.unwrap().unwrap();
    assert_eq!((a.kind.as_str(), a.attempts), ("preview", 1));
    assert!(
        s.claim_job("node-b", later).await.unwrap().is_none(),
        "leased twice"
    );
    // node-a fails: due again at the retry instant, not before.
    s.fail_job(&a.id, "node-a", "boom", Some(now_millis() + 60_000))
        .await
        .unwrap();
    assert!(s.claim_job("node-b", later).await.unwrap().is_none());
    let listed = s.list_jobs().await.unwrap();
    assert_eq!(listed[0].last_error.as_deref(), Some("boom"));
    assert_eq!(listed[0].state, "queued");
    // A job whose node died (its lease lapsed) is taken by another node;
    // the dead node can no longer record anything.
    assert!(s.enqueue_job(&job("pull", "x")).await.unwrap());
    let dead = s
        .claim_job("node-a", now_millis() - 1)
        .await
        .unwrap()
        .unwrap();
    let taken = s.claim_job("node-b", later).await.unwrap().unwrap();
    assert_eq!((taken.id.as_str(), taken.attempts), (dead.id.as_str(), 2));
    assert!(!s.renew_job(&dead.id, "node-a", later).await.unwrap());
    s.finish_job(&dead.id, "node-a").await.unwrap();
    assert_eq!(
        s.list_jobs().await.unwrap().len(),
        2,
        "a stale owner finished it"
    );
    assert!(s.renew_job(&taken.id, "node-b", later).await.unwrap());
    s.finish_job(&taken.id, "node-b").await.unwrap();
    assert_eq!(
        s.list_jobs().await.unwrap().len(),
        1,
        "only the preview job is left"
    );
    // Out of attempts: failed, until retried by hand.
    let p = s.list_jobs().await.unwrap().remove(0);
    sqlx::query("UPDATE jobs SET run_at = 0 WHERE id = $1")
        .bind(&p.id)
        .execute(&s.pool)
        .await
        .unwrap();
    let c = s.claim_job("node-b", later).await.unwrap().unwrap();
    s.fail_job(&c.id, "node-b", "still", None).await.unwrap();
    assert_eq!(s.list_jobs().await.unwrap()[0].state, "failed");
    assert!(s.claim_job("node-b", later).await.unwrap().is_none());
    assert!(s.retry_job(&c.id).await.unwrap());
    assert_eq!(
        s.claim_job("node-b", later)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        1
    );
    // Periodic: one row however many nodes register it; after a run it is
    // due one period later; a failure never gives up.
    s.ensure_periodic_job("gc", 3_600_000).await.unwrap();
    s.ensure_periodic_job("gc", 3_600_000).await.unwrap();
    let g = s.claim_job("node-a", later).await.unwrap().unwrap();
    assert_eq!((g.kind.as_str(), g.every_ms), ("gc", 3_600_000));
    s.finish_job(&g.id, "node-a").await.unwrap();
    let row = job_of(&s, "gc").await;
    assert_eq!(row.state, "queued");
    assert!(row.run_at >= now_millis() + 3_500_000);
    assert!(s.claim_job("node-a", later).await.unwrap().is_none());
    // A shorter period brings the next run forward.
    s.ensure_periodic_job("gc", 1).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let g = s.claim_job("node-a", later).await.unwrap().unwrap();
    s.fail_job(&g.id, "node-a", "x", None).await.unwrap();
    let row = job_of(&s, "gc").await;
    assert_eq!(row.state, "queued", "a periodic job gave up");
    let counts = s.count_jobs().await.unwrap();
    assert!(
        counts.contains(&("gc".to_string(), "queued".to_string(), 1)),
        "{counts:?}"
    );
}

/// Eight nodes claiming at once from twenty jobs: each job goes to exactly one.
async fn concurrent_claims_hand_each_job_to_one_node(engine: Engine) {
    let (_dir, s) = store(engine).await;
    for i in 0..20 {
        s.enqueue_job(&job("k", &i.to_string())).await.unwrap();
    }
    let later = now_millis() + 60_000;
    let claimers: Vec<_> = (0..8)
        .map(|n| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(j) = s.claim_job(&format!("node-{n}"), later).await.unwrap() {
                    got.push(j.dedupe);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    all.sort();
    let mut expected: Vec<String> = (0..20).map(|i: i32| i.to_string()).collect();
    expected.sort();
    assert_eq!(all, expected);
}
