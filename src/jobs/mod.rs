//! Background work: durable, retried, and done by one node at a time.
//!
//! Every kind of background work is a job in the metadata store's queue
//! (`metadata::jobs`): the periodic ones (garbage collection, the lifecycle
//! schedule, reaping abandoned uploads) are one row each, rescheduled after
//! every run; one-shot ones (a lifecycle policy preview, recording a pull
//! time) are enqueued by the request that needs them — the preview inside
//! the transaction that starts it — and removed when done. Each node runs a
//! [`Worker`] that leases due jobs and renews the lease while it works; a job
//! whose node died becomes due again when its lease lapses and another node
//! takes it. Failures are retried with exponential backoff; a one-shot job
//! that keeps failing stays `failed` for `berth jobs` to show. Handlers are
//! idempotent (GC and lifecycle re-check everything in their own
//! transactions), so a job that ran twice — a lease lost to a stalled node —
//! does no harm.
//!
//! This module is the vocabulary (the kinds and their payloads), low enough
//! for any service to enqueue work; [`worker`] runs the jobs and sits above
//! the services it calls.

pub mod worker;

use serde::{Deserialize, Serialize};

use crate::metadata::{NewJob, Repo, now_millis};

pub use worker::{Schedule, Worker};

/// Garbage collection (periodic).
pub const GC: &str = "gc";
/// The lifecycle schedule: evaluate the policies that are due (periodic).
pub const LIFECYCLE: &str = "lifecycle";
/// Remove upload sessions untouched for `upload_max_age` (periodic).
pub const REAP_UPLOADS: &str = "reap-uploads";
/// A lifecycle policy preview of one repository (one-shot).
pub const LIFECYCLE_PREVIEW: &str = "lifecycle-preview";
/// Record when an image was last pulled (one-shot).
pub const RECORD_PULL: &str = "record-pull";
/// Scan one image (one-shot: a push under scan on push, or StartImageScan).
pub const SCAN_IMAGE: &str = "scan-image";
/// Re-match stored inventories after a vulnerability database import
/// (one-shot, queued by the import).
pub const RESCAN: &str = "rescan";
/// Inventory one uploaded layer ahead of its manifest (one-shot, queued when
/// an upload commits in a repository scanned on push).
pub const SCAN_LAYER: &str = "scan-layer";
/// KMS keys (periodic): destroy the material of keys whose deletion waiting
/// period is over (crypto-shredding) and run due automatic rotations.
pub const KMS_KEYS: &str = "kms-keys";

/// Re-encrypt plaintext blobs and manifests of a data directory older than
/// encryption (periodic; a no-op once everything is sealed).
pub const RESEAL: &str = "reseal";

/// Deliver the due entries of one replication destination's log (one-shot,
/// one per destination: queued by the push that appends to it).
pub const REPLICATE: &str = "replicate";
/// Queue [`REPLICATE`] for every destination with due entries (retries
/// after a backoff, a wake-up lost to a running job) and refresh the
/// replication gauges (periodic).
pub const REPLICATION: &str = "replication";

/// Delete audit events older than the retention (periodic, hourly).
pub const AUDIT_RETENTION: &str = "audit-retention";

/// Every kind a worker runs (the metrics' label values).
pub const KINDS: [&str; 13] = [
    GC,
    LIFECYCLE,
    REAP_UPLOADS,
    LIFECYCLE_PREVIEW,
    RECORD_PULL,
    SCAN_IMAGE,
    RESCAN,
    SCAN_LAYER,
    RESEAL,
    KMS_KEYS,
    REPLICATE,
    REPLICATION,
    AUDIT_RETENTION,
];

/// The setting that pauses garbage collection on every node (`berth gc pause`).
pub const GC_PAUSED_SETTING: &str = "gc.paused";

/// The payload of a [`RECORD_PULL`] job.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PullRecord {
    pub(crate) registry: String,
    pub(crate) repository: String,
    pub(crate) digest: String,
    pub(crate) at: i64,
    pub(crate) stale_before: i64,
}

/// The payload of a [`LIFECYCLE_PREVIEW`] job: the repository; the policy
/// and the instant are in its preview row.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PreviewOf {
    pub(crate) registry: String,
    pub(crate) repository: String,
}

/// The job that runs the preview started for `repo` (enqueue it in the
/// transaction that starts the preview).
pub fn lifecycle_preview(repo: Repo<'_>) -> NewJob {
    NewJob {
        kind: LIFECYCLE_PREVIEW.into(),
        dedupe: format!("{}/{}", repo.registry, repo.name),
        payload: serde_json::to_string(&PreviewOf {
            registry: repo.registry.into(),
            repository: repo.name.into(),
        })
        .expect("serialises"),
        run_at: now_millis(),
    }
}

/// The job that records a pull of `digest` at `at` (if the last recorded
/// pull is older than `stale_before`).
pub fn record_pull(repo: Repo<'_>, digest: &str, at: i64, stale_before: i64) -> NewJob {
    NewJob {
        kind: RECORD_PULL.into(),
        dedupe: format!("{}/{}@{digest}", repo.registry, repo.name),
        payload: serde_json::to_string(&PullRecord {
            registry: repo.registry.into(),
            repository: repo.name.into(),
            digest: digest.into(),
            at,
            stale_before,
        })
        .expect("serialises"),
        run_at: at,
    }
}

/// The payload of a [`SCAN_IMAGE`] job; the scan type is in the image's
/// scan row.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ScanOf {
    pub(crate) registry: String,
    pub(crate) repository: String,
    pub(crate) digest: String,
}

/// The job that scans image `digest` of `repo`.
pub fn scan_image(repo: Repo<'_>, digest: &str) -> NewJob {
    NewJob {
        kind: SCAN_IMAGE.into(),
        dedupe: format!("{}/{}@{digest}", repo.registry, repo.name),
        payload: serde_json::to_string(&ScanOf {
            registry: repo.registry.into(),
            repository: repo.name.into(),
            digest: digest.into(),
        })
        .expect("serialises"),
        run_at: now_millis(),
    }
}

/// The job that re-matches stored inventories after the import that made
/// database generation `generation` (one job per import, so an import
/// committed while an earlier re-match runs is matched too).
pub fn rescan(generation: &str) -> NewJob {
    NewJob {
        kind: RESCAN.into(),
        dedupe: generation.into(),
        payload: "{}".into(),
        run_at: now_millis(),
    }
}

/// The payload of a [`SCAN_LAYER`] job.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LayerOf {
    pub(crate) digest: String,
}

/// The job that inventories blob `digest` before a manifest asks for it.
pub fn scan_layer(digest: &str) -> NewJob {
    NewJob {
        kind: SCAN_LAYER.into(),
        dedupe: digest.into(),
        payload: serde_json::to_string(&LayerOf {
            digest: digest.into(),
        })
        .expect("serialises"),
        run_at: now_millis(),
    }
}

/// The payload of a [`REPLICATE`] job: the destination whose log it works through.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReplicateTo {
    pub(crate) region: String,
    pub(crate) registry: String,
}

/// The job that delivers what is due for `destination`.
pub fn replicate(destination: &crate::metadata::DestinationKey) -> NewJob {
    NewJob {
        kind: REPLICATE.into(),
        dedupe: format!("{}/{}", destination.region, destination.registry),
        payload: serde_json::to_string(&ReplicateTo {
            region: destination.region.clone(),
            registry: destination.registry.clone(),
        })
        .expect("serialises"),
        run_at: now_millis(),
    }
}
