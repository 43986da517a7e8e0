//! Races between garbage collection and pushes, run in-process against the
//! real stores with a grace period of zero, so that every unreferenced blob
//! is always eligible and only the protocol (not timing) keeps data safe.
//! After each scenario the invariant of docs/gc.md is checked: every blob a
//! manifest references has a live row and its bytes in storage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;

use super::{GcSettings, collect};
use crate::config::Config;
use crate::digest::Digest;
use crate::metadata::testing::Engine;
use crate::metrics::Metrics;
use crate::reference::{Reference, RepoName};
use crate::registry::{Registry, RegistryError, RepoId};

/// A registry on `engine` (the metadata store; blobs in `dir`).
async fn registry(dir: &std::path::Path, engine: Engine) -> Arc<Registry> {
    let database_url = match engine {
        Engine::Sqlite => None,
        Engine::Postgres => Some(crate::metadata::testing::fresh_postgres_database().await),
    };
    let config = Config {
        data_dir: dir.to_path_buf(),
        database_url,
        gc_grace: Duration::ZERO,
        ..Config::default()
    };
    let mut r = crate::server::open_registry(&config, Arc::new(Metrics::new()))
        .await
        .unwrap();
    r.limits.create_on_push = true;
    Arc::new(r)
}

fn settings() -> GcSettings {
    GcSettings {
        grace: Duration::ZERO,
        upload_max_age: Duration::from_secs(3600),
    }
}

fn repo(name: &str) -> RepoId {
    RepoId::new("123456789012", RepoName::parse(name).unwrap())
}

async fn push_blob(reg: &Registry, repo: &RepoId, data: &[u8]) -> Result<Digest, RegistryError> {
    let digest = Digest::sha256_of(data);
    let session = reg.start_upload(repo, "test").await?;
    let body = stream::iter(vec![Ok::<_, std::io::Error>(Bytes::copy_from_slice(data))]);
    reg.append_upload(session.clone(), None, body).await?;
    reg.finish_upload(repo, &session.id, &digest).await?;
    Ok(digest)
}

fn manifest(config: &Digest, config_len: usize, layer: &Digest, layer_len: usize) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.as_str(), "size": config_len },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.as_str(), "size": layer_len }],
    })
    .to_string()
    .into_bytes()
}

/// Invariant I1: every referenced blob is live and its bytes are stored.
async fn assert_invariant(reg: &Registry) -> usize {
    let refs = reg.meta.referenced_blob_states().await.unwrap();
    for (digest, state) in &refs {
        assert_eq!(
            state.as_deref(),
            Some("live"),
            "{digest} is referenced but its row is {state:?}"
        );
        let d: Digest = digest.parse().unwrap();
        assert!(
            reg.blobs.stat(&d).await.unwrap().is_some(),
            "{digest} is referenced but its bytes are gone"
        );
    }
    refs.len()
}

/// Run `collect` in a loop until `stop` is set; returns how many runs completed.
fn gc_loop(reg: Arc<Registry>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut runs = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = collect(&reg, &settings()).await {
                panic!("a collection failed: {e}");
            }
            runs += 1;
            tokio::task::yield_now().await;
        }
        runs
    })
}

/// Pushes race a collector that runs continuously: uploads (including
/// re-uploads of digests the collector is deleting), existence checks,
/// mounts and manifest PUTs. Whatever the interleaving, a manifest that was
/// stored must stay complete, and an upload that was acknowledged must be
/// readable until the collector may legitimately take it.
async fn pushes_race_a_continuous_collector(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path(), engine).await;
    let stop = Arc::new(AtomicBool::new(false));
    let gc = gc_loop(reg.clone(), stop.clone());
    let (a, b) = (repo("race/a"), repo("race/b"));
    let shared = b"a base layer every image shares".to_vec();
    let (mut stored, mut refused) = (0, 0);
    for i in 0..150u32 {
        let config = format!("{{\"config\":{i}}}").into_bytes();
        // Half the layers repeat an earlier one: re-uploads of digests the
        // collector may be deleting at this very moment.
        let layer = if i % 2 == 0 {
            shared.clone()
        } else {
            format!("layer {i}").into_bytes()
        };
        let (Ok(c), Ok(l)) = (
            push_blob(&reg, &a, &config).await,
            push_blob(&reg, &a, &layer).await,
        ) else {
            continue; // Unavailable: the digest was mid-deletion; a client retries.
        };
        if i % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The client checks before referencing (docker does this); then, for
        // some, mounts into another repository and pushes there.
        let target = if i % 4 == 1
            && reg.mount_blob(&b, &a, &l).await.unwrap()
            && reg.mount_blob(&b, &a, &c).await.unwrap()
        {
            &b
        } else {
            &a
        };
        let _ = reg.check_blob(target, &l).await;
        let body = manifest(&c, config.len(), &l, layer.len());
        let tag = Reference::Tag(format!("t{i}"));
        match reg
            .put_manifest(
                target,
                &tag,
                Some("application/vnd.oci.image.manifest.v1+json"),
                &body,
            )
            .await
        {
            Ok(_) => {
                stored += 1;
                // Stored means complete, now and after more collections.
                for d in [&c, &l] {
                    assert!(
                        reg.blobs.stat(d).await.unwrap().is_some(),
                        "{d} vanished under a stored manifest"
                    );
                }
            }
            Err(RegistryError::ManifestBlobUnknown(_)) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let runs = gc.await.unwrap();
    // A few more collections after the dust settles must not break anything.
    for _ in 0..3 {
        collect(&reg, &settings()).await.unwrap();
    }
    let refs = assert_invariant(&reg).await;
    assert!(
        stored > 0,
        "no manifest was ever stored (refused {refused})"
    );
    assert!(runs > 10, "the collector ran only {runs} times");
    assert!(refs >= 2, "stored manifests reference blobs");
    // Every stored image is still fully readable.
    for i in 0..150u32 {
        for r in [&a, &b] {
            if let Ok(m) = reg.get_manifest(r, &Reference::Tag(format!("t{i}"))).await {
                let v: serde_json::Value = serde_json::from_slice(&m.content).unwrap();
                let layer: Digest = v["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
                assert!(reg.open_blob(r, &layer, |_| Ok(None)).await.is_ok());
            }
        }
    }
}

/// A file in blob storage without a metadata row (a crash after publishing)
/// is an orphan the collector deletes, while an upload of the same digest
/// runs: the upload must never be acknowledged with its bytes deleted.
async fn orphan_deletion_races_an_upload_of_the_same_digest(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path(), engine).await;
    let r = repo("orphans");
    let mut acknowledged = 0;
    for i in 0..40u32 {
        let data = format!("orphan {i}").into_bytes();
        let digest = Digest::sha256_of(&data);
        // Publish bytes with no row, as a crash between publish and commit leaves them.
        let id = uuid::Uuid::new_v4().to_string();
        reg.blobs.create_upload(&id).await.unwrap();
        let mut w = reg.blobs.upload_writer(&id, 0, "").await.unwrap();
        w.write(Bytes::from(data.clone())).await.unwrap();
        let staged = w.finish().await.unwrap();
        reg.blobs
            .commit_upload(&id, data.len() as u64, &staged.staging, &digest, false)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let gc = {
            let reg = reg.clone();
            tokio::spawn(async move { collect(&reg, &settings()).await.unwrap() })
        };
        let pushed = push_blob(&reg, &r, &data).await;
        gc.await.unwrap();
        if pushed.is_ok() {
            acknowledged += 1;
            // Reference it at once, so later collections keep it.
            let cfg = push_blob(&reg, &r, b"{}").await.unwrap();
            let body = manifest(&cfg, 2, &digest, data.len());
            match reg
                .put_manifest(
                    &r,
                    &Reference::Tag(format!("o{i}")),
                    Some("application/vnd.oci.image.manifest.v1+json"),
                    &body,
                )
                .await
            {
                Ok(_) | Err(RegistryError::ManifestBlobUnknown(_)) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_invariant(&reg).await;
    }
    assert!(acknowledged > 0);
    collect(&reg, &settings()).await.unwrap();
    assert_invariant(&reg).await;
}

/// Deleting images frees their bytes; shared layers of surviving images stay.
async fn deleted_images_are_collected_and_shared_layers_kept(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path(), engine).await;
    let r = repo("collect");
    let base = push_blob(&reg, &r, b"shared base").await.unwrap();
    let only_old = push_blob(&reg, &r, b"only in the old image").await.unwrap();
    let cfg_old = push_blob(&reg, &r, b"{\"old\":1}").await.unwrap();
    let cfg_new = push_blob(&reg, &r, b"{\"new\":1}").await.unwrap();
    let old = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_old.as_str(), "size": 9 },
        "layers": [
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": base.as_str(), "size": 11 },
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": only_old.as_str(), "size": 21 }
        ]}).to_string();
    let new = manifest(&cfg_new, 9, &base, 11);
    let ct = Some("application/vnd.oci.image.manifest.v1+json");
    let old_m = reg
        .put_manifest(&r, &Reference::Tag("old".into()), ct, old.as_bytes())
        .await
        .unwrap();
    reg.put_manifest(&r, &Reference::Tag("new".into()), ct, &new)
        .await
        .unwrap();
    // Nothing is collected while both images exist.
    let report = collect(&reg, &settings()).await.unwrap();
    assert_eq!(report.blobs_deleted, 0, "{report:?}");
    reg.delete_manifest(&r, &Reference::Digest(old_m.digest))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let report = collect(&reg, &settings()).await.unwrap();
    assert_eq!(report.blobs_deleted, 2, "{report:?}");
    assert_eq!(report.bytes_reclaimed, 21 + 9);
    assert!(reg.blobs.stat(&only_old).await.unwrap().is_none());
    assert!(reg.blobs.stat(&cfg_old).await.unwrap().is_none());
    assert!(reg.blobs.stat(&base).await.unwrap().is_some());
    assert!(reg.blobs.stat(&cfg_new).await.unwrap().is_some());
    assert_eq!(assert_invariant(&reg).await, 2);
    let m = reg.metrics.render();
    assert!(m.contains("berth_gc_reclaimed_bytes_total 30"), "{m}");
}

/// A stored file no row accounts for is removed (once older than the grace);
/// files with rows are not touched by the sweep.
async fn orphan_files_are_swept(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path(), engine).await;
    let r = repo("sweep");
    let kept = push_blob(&reg, &r, b"has a row").await.unwrap();
    let data = b"no row for me".to_vec();
    let orphan = Digest::sha256_of(&data);
    let id = uuid::Uuid::new_v4().to_string();
    reg.blobs.create_upload(&id).await.unwrap();
    let mut w = reg.blobs.upload_writer(&id, 0, "").await.unwrap();
    w.write(Bytes::from(data.clone())).await.unwrap();
    let staged = w.finish().await.unwrap();
    reg.blobs
        .commit_upload(&id, data.len() as u64, &staged.staging, &orphan, false)
        .await
        .unwrap();
    // Reference the kept blob so step 3 leaves it alone and only the sweep acts.
    let cfg = push_blob(&reg, &r, b"{}").await.unwrap();
    let body = manifest(&cfg, 2, &kept, 9);
    reg.put_manifest(
        &r,
        &Reference::Tag("keep".into()),
        Some("application/vnd.oci.image.manifest.v1+json"),
        &body,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = collect(&reg, &settings()).await.unwrap();
    assert_eq!(report.orphan_files_deleted, 1, "{report:?}");
    assert_eq!(report.blobs_deleted, 0, "{report:?}");
    assert!(reg.blobs.stat(&orphan).await.unwrap().is_none());
    assert!(reg.blobs.stat(&kept).await.unwrap().is_some());
    assert_eq!(reg.meta.blob_size(&orphan).await.unwrap(), None);
    assert_invariant(&reg).await;
}

crate::metadata::testing::on_both_engines!(
    pushes_race_a_continuous_collector,
    orphan_deletion_races_an_upload_of_the_same_digest,
    deleted_images_are_collected_and_shared_layers_kept,
    orphan_files_are_swept,
);
