//! Online garbage collection: frees the storage of blobs nothing references
//! any more (after image deletes, lifecycle expiry, retags, repository
//! deletes, abandoned uploads), deletes referrers whose subject is gone, and
//! removes files that no metadata accounts for. It runs while the registry
//! serves pushes and pulls: no read-only mode, no lock held across a run.
//!
//! Safety rests on a protocol between the metadata transactions of pushes
//! and of the collector, not on timing; the grace period only keeps pushes in
//! progress from failing. The invariant and the argument are in `docs/gc.md`;
//! the statements are in `metadata::gc`.

use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::metadata::{GcCandidate, MetaError, Repo, now_millis};
use crate::registry::Registry;
use crate::storage::StorageError;

/// Tunables of one collection.
#[derive(Clone, Debug)]
pub struct GcSettings {
    /// Nothing touched more recently than this is collected.
    pub grace: Duration,
    /// Staging files of upload sessions that no longer exist are removed
    /// once they are this old (upload sessions expire after it, too).
    pub upload_max_age: Duration,
}

/// What one collection did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub blobs_scanned: u64,
    pub blobs_deleted: u64,
    pub bytes_reclaimed: u64,
    pub referrers_deleted: u64,
    pub orphan_files_deleted: u64,
    pub orphan_uploads_deleted: u64,
    /// Cached layer inventories (scanning) of blobs that are gone.
    pub layer_inventories_deleted: u64,
    pub duration_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Blob rows read per scan query.
const SCAN_PAGE: i64 = 1000;
/// Blobs marked `deleting` per metadata transaction (keeps the write lock short).
const MARK_BATCH: usize = 100;

/// Run one full collection.
pub async fn collect(registry: &Registry, settings: &GcSettings) -> Result<GcReport, GcError> {
    let started = Instant::now();
    let m = &registry.metrics.gc;
    m.running.set(1);
    let result = collect_inner(registry, settings).await;
    m.running.set(0);
    let mut report = result?;
    report.layer_inventories_deleted = registry.meta.forget_layer_inventories().await?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    m.runs.inc();
    m.last_completed_seconds.set(now_millis() / 1000);
    m.last_duration_ms.set(report.duration_ms as i64);
    Ok(report)
}

async fn collect_inner(registry: &Registry, settings: &GcSettings) -> Result<GcReport, GcError> {
    let mut report = GcReport::default();
    let cutoff = now_millis() - settings.grace.as_millis() as i64;

    // 1. Finish deletions a previous run (on any node) left half done.
    loop {
        let left = registry.meta.deleting_blobs(MARK_BATCH as i64).await?;
        if left.is_empty() {
            break;
        }
        delete_batch(registry, &left, &mut report).await?;
    }

    // 2. Referrers whose subject is gone (signatures, SBOMs of deleted images).
    loop {
        let dangling = registry.meta.dangling_referrers(cutoff, 100).await?;
        if dangling.is_empty() {
            break;
        }
        let mut progressed = false;
        for (registry_id, repository, digest) in &dangling {
            let Ok(d) = digest.parse::<Digest>() else {
                continue;
            };
            let repo = Repo {
                registry: registry_id,
                name: repository,
            };
            // Recorded in the deletion's transaction, as Berth's own BatchDeleteImage.
            let scope = crate::audit::Scope::new();
            let mut event = registry.service_event(
                "BatchDeleteImage",
                registry_id,
                repository,
                crate::audit::ECR,
            );
            event.request_parameters = Some(serde_json::json!({
                "registryId": crate::reference::key_account(registry_id),
                "repositoryName": repository,
                "imageIds": [{ "imageDigest": digest }],
            }));
            event.additional = Some(serde_json::json!({
                "reason": "garbage collection: a referrer whose subject is gone",
            }));
            scope.begin(event);
            if let crate::metadata::DeleteManifest::Deleted(_) =
                scope.run(registry.meta.delete_manifest(repo, &d)).await?
            {
                progressed = true;
                report.referrers_deleted += 1;
                registry.metrics.gc.manifests_deleted.inc();
                tracing::info!(%registry_id, %repository, %digest, "deleted a referrer whose subject is gone");
            }
        }
        if !progressed {
            break;
        }
    }

    // 3. Blobs no manifest references and no fresh link or claim protects.
    let m = &registry.metrics.gc;
    m.blobs_total.set(registry.meta.count_blobs().await?);
    m.blobs_scanned.set(0);
    let mut after = String::new();
    loop {
        let page = registry.meta.scan_blobs(&after, SCAN_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.digest.clone();
        report.blobs_scanned += page.len() as u64;
        m.blobs_scanned.inc_by(page.len() as i64);
        // A cheap first filter; mark_deleting re-checks everything in its transaction.
        let candidates: Vec<String> = page
            .iter()
            .filter(|b| b.state == "live" && b.touched_at < cutoff)
            .map(|b| b.digest.clone())
            .collect();
        for batch in candidates.chunks(MARK_BATCH) {
            let marked = registry.meta.mark_deleting(batch, cutoff).await?;
            delete_batch(registry, &marked, &mut report).await?;
        }
    }

    // 4. Files in blob storage without a row (a crash between publishing and
    //    recording, or content from before the metadata was restored).
    //    Both stores: sealed blobs, and plaintext ones from before encryption.
    for shard in 0..=255u8 {
        let shard = format!("{shard:02x}");
        let mut files = registry.blobs.list_blob_shard(&shard).await?;
        files.extend(registry.legacy_blobs.list_blob_shard(&shard).await?);
        // (A plaintext copy of a blob sealed since has a row; `berth
        // encryption run` and the re-encryption that sealed it remove it.)
        let old: Vec<_> = files
            .into_iter()
            .filter(|f| f.modified_ms < cutoff)
            .collect();
        if old.is_empty() {
            continue;
        }
        let mut algorithms: Vec<&str> = old
            .iter()
            .filter_map(|f| f.name.split_once(':').map(|(alg, _)| alg))
            .collect();
        algorithms.dedup();
        let rows = registry
            .meta
            .blob_rows_in_shard(&algorithms, &shard)
            .await?;
        for f in old.iter().filter(|f| !rows.contains(&f.name)) {
            if registry.meta.adopt_orphan(&f.name, f.size).await? {
                let c = GcCandidate {
                    digest: f.name.clone(),
                    size: f.size as i64,
                };
                delete_bytes(registry, &c, &mut report, true).await?;
            }
        }
    }

    // 5. Staging files whose upload session no longer exists.
    let upload_cutoff = now_millis() - settings.upload_max_age.as_millis() as i64;
    for store in [&registry.blobs, &registry.legacy_blobs] {
        for f in store.list_uploads().await? {
            if f.modified_ms >= upload_cutoff || registry.meta.upload_exists(&f.name).await? {
                continue;
            }
            store.abort_upload(&f.name).await?;
            report.orphan_uploads_deleted += 1;
            registry.metrics.gc.orphans_deleted.inc();
        }
    }
    Ok(report)
}

/// Blob deletions in flight at once (on S3 each is a round trip).
const DELETE_CONCURRENCY: usize = 8;

/// Phase 2 for a batch of blobs in state `deleting`: remove their bytes (a
/// few at a time), then their rows in one statement. A failure leaves every
/// row of the batch `deleting`, for the next run to finish (step 1).
async fn delete_batch(
    registry: &Registry,
    batch: &[GcCandidate],
    report: &mut GcReport,
) -> Result<(), GcError> {
    use futures_util::stream::{self, TryStreamExt};
    if batch.is_empty() {
        return Ok(());
    }
    stream::iter(batch.iter().map(Ok::<_, GcError>))
        .try_for_each_concurrent(DELETE_CONCURRENCY, |c| async move {
            if let Ok(d) = c.digest.parse::<Digest>() {
                delete_copies(registry, &d).await?;
            }
            Ok(())
        })
        .await?;
    let digests: Vec<String> = batch.iter().map(|c| c.digest.clone()).collect();
    registry.meta.forget_blobs(&digests).await?;
    for c in batch {
        count_deleted(registry, c, report, false);
    }
    Ok(())
}

/// Phase 2 for one blob in state `deleting`: remove its bytes, then its row.
/// `orphan`: a file that had no row (counted separately).
async fn delete_bytes(
    registry: &Registry,
    c: &GcCandidate,
    report: &mut GcReport,
    orphan: bool,
) -> Result<(), GcError> {
    if let Ok(d) = c.digest.parse::<Digest>() {
        delete_copies(registry, &d).await?;
    }
    registry
        .meta
        .forget_blobs(std::slice::from_ref(&c.digest))
        .await?;
    count_deleted(registry, c, report, orphan);
    Ok(())
}

/// Remove a blob's bytes from both stores (sealed, and plaintext from
/// before encryption).
async fn delete_copies(registry: &Registry, d: &Digest) -> Result<(), GcError> {
    registry.blobs.delete(d).await?;
    registry.legacy_blobs.delete(d).await?;
    Ok(())
}

fn count_deleted(registry: &Registry, c: &GcCandidate, report: &mut GcReport, orphan: bool) {
    if orphan {
        report.orphan_files_deleted += 1;
        registry.metrics.gc.orphans_deleted.inc();
    } else {
        report.blobs_deleted += 1;
        registry.metrics.gc.blobs_deleted.inc();
    }
    report.bytes_reclaimed += c.size.max(0) as u64;
    registry
        .metrics
        .gc
        .bytes_reclaimed
        .inc_by(c.size.max(0) as u64);
}

#[cfg(test)]
mod tests;
