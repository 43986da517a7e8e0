//! The worker every node runs: leases due jobs from the queue, runs them
//! (at most a few at once), renews their leases while they run, and records
//! the outcome with retries and backoff (see the module above).

use std::sync::Arc;
use std::time::Duration;

use super::{
    AUDIT_RETENTION, GC, GC_PAUSED_SETTING, KINDS, KMS_KEYS, LIFECYCLE, LIFECYCLE_PREVIEW, LayerOf,
    PreviewOf, PullRecord, REAP_UPLOADS, RECORD_PULL, REPLICATE, REPLICATION, RESCAN, RESEAL,
    ReplicateTo, SCAN_IMAGE, SCAN_LAYER, ScanOf,
};
use crate::metadata::{JobRow, MetaError, Repo, now_millis};
use crate::registry::Registry;

/// A worker holds a job this long past its last renewal.
const LEASE: Duration = Duration::from_secs(60);
/// A running job's lease is renewed this often.
const RENEW_EVERY: Duration = Duration::from_secs(20);
/// How often a worker with nothing to do looks for due jobs.
const POLL: Duration = Duration::from_millis(500);
/// Jobs one node runs at once (a long GC does not hold up a preview).
const CONCURRENCY: usize = 3;
/// How often plaintext content from before encryption is looked for.
const RESEAL_EVERY: Duration = Duration::from_secs(60);
/// Blobs one re-encryption run copies (the next run continues).
const RESEAL_PER_RUN: u64 = 1000;
/// One-shot jobs give up after this many attempts.
const MAX_ATTEMPTS: i64 = 6;
/// How often destinations with due replication entries are looked for.
const REPLICATION_SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How often audit events past the retention are looked for.
const AUDIT_RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// What the periodic jobs are and how often they run.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub gc_every: Duration,
    pub gc: crate::gc::GcSettings,
    pub lifecycle_interval: Duration,
    pub reap_every: Duration,
    /// How often KMS keys due for deletion or rotation are looked for.
    pub kms_every: Duration,
    pub upload_max_age: Duration,
    /// Audit events older than this are deleted (0: kept forever).
    pub audit_retention: Duration,
    /// `<data_dir>/gc.pause`: pauses this node's collections (a backup of
    /// this node's disk); the `gc.paused` setting pauses every node's.
    pub gc_pause_file: std::path::PathBuf,
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Gc(#[from] crate::gc::GcError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Scan(#[from] crate::scanning::ScanError),
    #[error(transparent)]
    Kms(#[from] crate::kms::KmsError),
    #[error("{0}")]
    Invalid(String),
}

/// Runs due jobs on this node until dropped.
pub struct Worker {
    registry: Arc<Registry>,
    /// This node's view of the vulnerability database (its record cache).
    vulndb: crate::scanning::VulnDb,
    schedule: Schedule,
    /// This node's name in leases: host, process and a random part.
    owner: String,
    /// Delivers replication log entries (`None`: replication jobs wait for
    /// a node that has one).
    replicator: Option<Arc<crate::replication::Replicator>>,
}

impl Worker {
    pub fn new(registry: Arc<Registry>, schedule: Schedule) -> Worker {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        let owner = format!(
            "{host}/{}/{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Worker {
            vulndb: crate::scanning::VulnDb::new(registry.meta.clone()),
            registry,
            schedule,
            owner,
            replicator: None,
        }
    }

    /// Deliver replication with `replicator`.
    pub fn with_replicator(mut self, replicator: Arc<crate::replication::Replicator>) -> Worker {
        self.replicator = Some(replicator);
        self
    }

    /// Register the periodic jobs (their periods are this node's settings:
    /// the last node started wins) and run jobs forever.
    pub async fn run(self) {
        let me = Arc::new(self);
        loop {
            match me.register().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not register the periodic jobs; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut last_count = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            if last_count.elapsed() >= Duration::from_secs(10) {
                me.count().await;
                last_count = std::time::Instant::now();
            }
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let until = now_millis() + LEASE.as_millis() as i64;
            match me.registry.meta.claim_job(&me.owner, until).await {
                Ok(Some(job)) => {
                    let me = me.clone();
                    use tracing::Instrument;
                    // ERROR level: recorded under any filter, as the request span.
                    let span = tracing::error_span!("job", id = %job.id, kind = %job.kind);
                    tokio::spawn(
                        async move {
                            me.execute(job).await;
                            drop(permit);
                        }
                        .instrument(span),
                    );
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = me.registry.jobs_queued.notified() => {}
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "could not look for due jobs");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    async fn register(&self) -> Result<(), MetaError> {
        let meta = &self.registry.meta;
        let ms = |d: Duration| d.as_millis().max(1) as i64;
        meta.ensure_periodic_job(GC, ms(self.schedule.gc_every))
            .await?;
        // The schedule looks for due policies once a minute, or every
        // lifecycle_interval if that is shorter.
        let lifecycle_every = self
            .schedule
            .lifecycle_interval
            .min(Duration::from_secs(60));
        meta.ensure_periodic_job(LIFECYCLE, ms(lifecycle_every))
            .await?;
        meta.ensure_periodic_job(REAP_UPLOADS, ms(self.schedule.reap_every))
            .await?;
        meta.ensure_periodic_job(RESEAL, ms(RESEAL_EVERY)).await?;
        meta.ensure_periodic_job(REPLICATION, ms(REPLICATION_SWEEP_EVERY))
            .await?;
        meta.ensure_periodic_job(KMS_KEYS, ms(self.schedule.kms_every))
            .await?;
        meta.ensure_periodic_job(AUDIT_RETENTION, ms(AUDIT_RETENTION_EVERY))
            .await
    }

    /// Refresh the queue gauges.
    async fn count(&self) {
        let Ok(counts) = self.registry.meta.count_jobs().await else {
            return;
        };
        let m = &self.registry.metrics.jobs;
        for kind in KINDS {
            for state in ["queued", "running", "failed"] {
                let n = counts
                    .iter()
                    .find(|(k, s, _)| k == kind && s == state)
                    .map_or(0, |c| c.2);
                m.set_queued(kind, state, n);
            }
        }
    }

    /// Run one leased job, renewing the lease meanwhile, and record the outcome.
    async fn execute(&self, job: JobRow) {
        let kind = KINDS
            .into_iter()
            .find(|k| *k == job.kind)
            .unwrap_or("unknown");
        let started = std::time::Instant::now();
        let work = self.handle(kind, &job);
        let mut work = std::pin::pin!(work);
        let mut renew = tokio::time::interval(RENEW_EVERY);
        renew.tick().await;
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = renew.tick() => {
                    let until = now_millis() + LEASE.as_millis() as i64;
                    match self.registry.meta.renew_job(&job.id, &self.owner, until).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(job = %job.id, kind, "lost the lease of a running job"),
                        Err(e) => tracing::warn!(job = %job.id, kind, error = %e, "could not renew a job's lease"),
                    }
                }
            }
        };
        let m = &self.registry.metrics.jobs;
        m.observe(kind, started.elapsed().as_secs_f64());
        let recorded = match &result {
            Ok(()) => {
                m.ran(kind, "ok");
                let finished = self.registry.meta.finish_job(&job.id, &self.owner).await;
                if finished.is_ok() && kind == REPLICATE {
                    self.requeue_replication(&job).await;
                }
                finished
            }
            Err(e) => {
                m.ran(kind, "error");
                let retry_at = (job.attempts < MAX_ATTEMPTS).then(|| {
                    let backoff = Duration::from_secs(1 << job.attempts.clamp(0, 8) as u32);
                    now_millis() + backoff.min(Duration::from_secs(300)).as_millis() as i64
                });
                let gives_up = retry_at.is_none() && job.every_ms == 0;
                tracing::warn!(job = %job.id, kind, attempt = job.attempts, error = %e,
                    gives_up, "a background job failed");
                if gives_up && kind == SCAN_IMAGE {
                    // The scan says so, rather than staying IN_PROGRESS.
                    self.give_up_scan(&job, &e.to_string()).await;
                }
                self.registry
                    .meta
                    .fail_job(&job.id, &self.owner, &e.to_string(), retry_at)
                    .await
            }
        };
        if let Err(e) = recorded {
            // The lease lapses and the job runs again: handlers are idempotent.
            tracing::warn!(job = %job.id, kind, error = %e, "could not record a job's outcome");
        }
    }

    /// A `replicate` job is gone once it finished: whatever a push appended
    /// while it was finishing gets a new one.
    async fn requeue_replication(&self, job: &JobRow) {
        let (Some(r), Ok(p)) = (&self.replicator, payload::<ReplicateTo>(job)) else {
            return;
        };
        let destination = crate::metadata::DestinationKey {
            region: p.region,
            registry: p.registry,
        };
        if let Err(e) = r.requeue_if_due(&destination).await {
            // The periodic sweep queues it within seconds.
            tracing::warn!(job = %job.id, error = %e, "could not queue replication again");
        }
    }

    /// Record FAILED on the scan of a `scan-image` job that ran out of attempts.
    async fn give_up_scan(&self, job: &JobRow, error: &str) {
        let Ok(p) = payload::<ScanOf>(job) else {
            return;
        };
        let Ok(digest) = payload_digest(&p.digest) else {
            return;
        };
        let repo = Repo {
            registry: &p.registry,
            name: &p.repository,
        };
        let description = format!(
            "The scan failed {} times; the last error: {error}",
            job.attempts
        );
        if let Err(e) = crate::scanning::give_up(&self.registry, repo, &digest, &description).await
        {
            tracing::warn!(job = %job.id, error = %e, "could not record a failed scan");
        }
    }

    async fn handle(&self, kind: &str, job: &JobRow) -> Result<(), JobError> {
        let registry = &self.registry;
        match kind {
            GC => {
                if self.schedule.gc_pause_file.exists() {
                    tracing::info!(file = %self.schedule.gc_pause_file.display(), "garbage collection paused on this node");
                    return Ok(());
                }
                if registry
                    .meta
                    .get_setting(GC_PAUSED_SETTING)
                    .await?
                    .is_some()
                {
                    tracing::info!("garbage collection paused (berth gc pause)");
                    return Ok(());
                }
                let r = crate::gc::collect(registry, &self.schedule.gc).await?;
                if r.blobs_deleted + r.referrers_deleted + r.orphan_files_deleted > 0 {
                    tracing::info!(
                        blobs = r.blobs_deleted,
                        bytes = r.bytes_reclaimed,
                        referrers = r.referrers_deleted,
                        orphans = r.orphan_files_deleted,
                        ms = r.duration_ms,
                        "garbage collection freed storage"
                    );
                }
                Ok(())
            }
            LIFECYCLE => {
                let (repos, n) = crate::lifecycle::run_due(
                    registry,
                    self.schedule.lifecycle_interval,
                    "berth-lifecycle",
                )
                .await?;
                if n > 0 {
                    tracing::info!(
                        repositories = repos,
                        expired = n,
                        "lifecycle policies evaluated"
                    );
                }
                Ok(())
            }
            REAP_UPLOADS => {
                let n = registry
                    .reap_stale_uploads(self.schedule.upload_max_age)
                    .await?;
                if n > 0 {
                    tracing::info!(removed = n, "removed abandoned upload sessions");
                }
                Ok(())
            }
            LIFECYCLE_PREVIEW => {
                let p: PreviewOf = payload(job)?;
                let repo = Repo {
                    registry: &p.registry,
                    name: &p.repository,
                };
                crate::lifecycle::run_preview(registry, repo).await?;
                Ok(())
            }
            RECORD_PULL => {
                let p: PullRecord = payload(job)?;
                let repo = Repo {
                    registry: &p.registry,
                    name: &p.repository,
                };
                let digest = payload_digest(&p.digest)?;
                registry
                    .meta
                    .record_pull(repo, &digest, p.at, p.stale_before)
                    .await?;
                Ok(())
            }
            SCAN_IMAGE => {
                let p: ScanOf = payload(job)?;
                let repo = Repo {
                    registry: &p.registry,
                    name: &p.repository,
                };
                let digest = payload_digest(&p.digest)?;
                crate::scanning::run_scan(registry, &self.vulndb, repo, &digest).await?;
                Ok(())
            }
            SCAN_LAYER => {
                let p: LayerOf = payload(job)?;
                let digest = payload_digest(&p.digest)?;
                crate::scanning::prefetch_layer(registry, &digest).await?;
                Ok(())
            }
            AUDIT_RETENTION => {
                let keep = self.schedule.audit_retention;
                if !keep.is_zero() {
                    let n = crate::audit_trail::prune(&registry.meta, keep).await?;
                    if n > 0 {
                        tracing::info!(deleted = n, "audit events past the retention deleted");
                    }
                }
                Ok(())
            }
            KMS_KEYS => {
                let (deleted, rotated) = registry.kms.run_due().await?;
                if deleted + rotated > 0 {
                    tracing::info!(deleted, rotated, "KMS keys deleted and rotated");
                }
                Ok(())
            }
            RESCAN => {
                let r = crate::scanning::rematch_continuous(registry, &self.vulndb).await?;
                tracing::info!(
                    images = r.images,
                    changed = r.changed,
                    "re-matched continuously scanned images"
                );
                Ok(())
            }
            RESEAL => {
                let r = registry.reseal_legacy(RESEAL_PER_RUN).await?;
                if r.blobs + r.manifests > 0 {
                    tracing::info!(
                        blobs = r.blobs,
                        bytes = r.bytes,
                        manifests = r.manifests,
                        skipped = r.skipped,
                        "re-encrypted content stored in plaintext by an older version"
                    );
                }
                Ok(())
            }
            REPLICATE | REPLICATION => {
                let Some(r) = &self.replicator else {
                    return Err(JobError::Invalid(
                        "this node does not replicate (no replicator)".into(),
                    ));
                };
                if kind == REPLICATION {
                    return Ok(r.sweep().await?);
                }
                let p = payload::<ReplicateTo>(job)?;
                let destination = crate::metadata::DestinationKey {
                    region: p.region,
                    registry: p.registry,
                };
                let n = r.deliver_due(&destination).await?;
                if n > 0 {
                    tracing::debug!(delivered = n, region = %destination.region,
                        registry = %destination.registry, "replicated");
                }
                Ok(())
            }
            _ => Err(JobError::Invalid(format!(
                "no node of this version runs jobs of kind {:?}",
                job.kind
            ))),
        }
    }
}

/// A digest named by a job's payload.
fn payload_digest(digest: &str) -> Result<crate::digest::Digest, JobError> {
    digest
        .parse()
        .map_err(|e| JobError::Invalid(format!("digest {digest:?}: {e}")))
}

fn payload<T: serde::de::DeserializeOwned>(job: &JobRow) -> Result<T, JobError> {
    serde_json::from_str(&job.payload)
        .map_err(|e| JobError::Invalid(format!("unreadable payload of job {}: {e}", job.id)))
}
