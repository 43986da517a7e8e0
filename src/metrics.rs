//! Prometheus metrics: one explicit registry per server (no globals, so tests
//! can run several servers in one process), rendered in the OpenMetrics text
//! format at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobStateLabels {
    pub kind: &'static str,
    pub state: &'static str,
}

/// The job queue (see `jobs`): runs by kind and outcome on this node, their
/// durations, and the queue's rows by kind and state (the whole cluster's,
/// as last counted by this node).
pub struct JobMetrics {
    pub runs: Family<JobLabels, Counter>,
    pub seconds: Family<KindLabels, Histogram>,
    pub queued: Family<JobStateLabels, Gauge>,
}

impl Metrics {
    /// One replication delivery to `destination`: its outcome, how long it
    /// took, and (delivered) how long after its push.
    pub fn replication_delivered(
        &self,
        destination: &str,
        outcome: &'static str,
        seconds: f64,
        lag_seconds: f64,
    ) {
        let r = &self.replication;
        let d = DestinationLabels {
            destination: destination.to_string(),
        };
        r.deliveries
            .get_or_create(&DeliveryLabels {
                destination: destination.to_string(),
                outcome,
            })
            .inc();
        r.delivery_seconds.get_or_create(&d).observe(seconds);
        if outcome == "ok" {
            r.delivered_lag_seconds
                .get_or_create(&d)
                .observe(lag_seconds);
        }
    }

    /// A destination's backlog as just counted.
    pub fn replication_backlog(&self, destination: &str, pending: i64, failed: i64, lag: f64) {
        let r = &self.replication;
        let d = DestinationLabels {
            destination: destination.to_string(),
        };
        r.pending.get_or_create(&d).set(pending);
        r.failed.get_or_create(&d).set(failed);
        r.lag_seconds.get_or_create(&d).set(lag);
    }
}

impl JobMetrics {
    pub fn ran(&self, kind: &'static str, outcome: &'static str) {
        self.runs.get_or_create(&JobLabels { kind, outcome }).inc();
    }

    pub fn observe(&self, kind: &'static str, seconds: f64) {
        self.seconds
            .get_or_create(&KindLabels { kind })
            .observe(seconds);
    }

    pub fn set_queued(&self, kind: &'static str, state: &'static str, n: i64) {
        self.queued
            .get_or_create(&JobStateLabels { kind, state })
            .set(n);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub destination: String,
    pub outcome: &'static str,
}

/// Replication (see `replication`), per destination (`region/registry`).
pub struct ReplicationMetrics {
    /// Deliveries by outcome (`ok`, or the failure code).
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// Time one delivery took.
    pub delivery_seconds: Family<DestinationLabels, Histogram>,
    /// From push to delivered, per delivered image.
    pub delivered_lag_seconds: Family<DestinationLabels, Histogram>,
    /// Age of the oldest undelivered push (0: caught up), as last counted.
    pub lag_seconds: Family<DestinationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Entries not yet delivered, and given up, as last counted.
    pub pending: Family<DestinationLabels, Gauge>,
    pub failed: Family<DestinationLabels, Gauge>,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<KindLabels, Histogram>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub upload_seconds: Histogram,
    pub uploads_reaped: Counter,
    /// Reads of sealed blobs that failed authentication (altered storage).
    pub integrity_failures: Counter,
    /// Connections admitted, refused (every slot busy), evicted (idle, to make
    /// room for a new one) and closed for being idle too long.
    pub connections_accepted: Counter,
    pub connections_refused: Counter,
    pub connections_evicted: Counter,
    pub connections_idle_closed: Counter,
    /// TLS handshakes that failed (a client that does not trust the
    /// certificate, speaks plain HTTP to the HTTPS port, or gave up).
    pub tls_handshakes_failed: Counter,
    /// Certificate reloads that were refused (the old certificate stays).
    pub tls_reloads_failed: Counter,
    /// Requests refused by a limit, by which one (`body_size`, `body_memory`,
    /// `upload_quota`, …; see docs/security.md).
    pub limited: Family<LimitLabels, Counter>,
    pub gc: GcMetrics,
    pub lifecycle_evaluations: Counter,
    pub lifecycle_images_expired: Counter,
    pub jobs: JobMetrics,
    pub scans: ScanMetrics,
    pub replication: ReplicationMetrics,
    pub pull_through: PullThroughMetrics,
    pub audit: AuditMetrics,
}

/// The audit log (see `audit_trail`).
#[derive(Default)]
pub struct AuditMetrics {
    /// Events appended by the writer (reads, refusals, failures); a change's
    /// event is appended by its own transaction instead.
    pub batched: Counter,
    /// Batches whose append failed (retried until it succeeds).
    pub write_failures: Counter,
    /// Events of reads and failures dropped because the queue was full
    /// while the database refused the writer.
    pub dropped: Counter,
}

/// The pull-through cache (see `pull_through`), by kind (`manifest`, `blob`).
#[derive(Default)]
pub struct PullThroughMetrics {
    /// Served from the cache, in a repository a pull-through rule serves.
    pub hits: Family<KindLabels, Counter>,
    /// Not in the cache: fetched from the upstream.
    pub misses: Family<KindLabels, Counter>,
    /// Upstream fetches that failed (down, 429/5xx, refused, not found).
    pub upstream_errors: Family<KindLabels, Counter>,
    /// A stale cached copy served because the upstream could not be asked.
    pub stale_served: Family<KindLabels, Counter>,
    /// Upstream content refused because it did not match its digest.
    pub refused: Family<KindLabels, Counter>,
    /// Bytes of blobs read from upstreams.
    pub upstream_bytes: Counter,
}

/// Image scanning (see `scanning`); durations and queue depth are the
/// `scan-image` job's in `berth_job_*`.
#[derive(Default)]
pub struct ScanMetrics {
    /// Scans finished, by status (COMPLETE, FAILED, UNSUPPORTED_IMAGE).
    pub finished: Family<StatusLabels, Counter>,
    /// Layers whose inventory came from the cache, and layers read.
    pub layer_cache_hits: Counter,
    pub layer_cache_misses: Counter,
    /// Decompressed bytes read from layers.
    pub layer_bytes_read: Counter,
    /// Images re-matched after a vulnerability database import.
    pub rematched: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

/// Garbage collection's progress and results (see `gc`).
#[derive(Default)]
pub struct GcMetrics {
    pub runs: Counter,
    /// 1 while a collection runs on this node.
    pub running: Gauge,
    /// Blob rows examined so far in the current (or last) run, and how many
    /// there were when it started: progress is their ratio.
    pub blobs_scanned: Gauge,
    pub blobs_total: Gauge,
    pub blobs_deleted: Counter,
    pub bytes_reclaimed: Counter,
    /// Referrers whose subject was deleted.
    pub manifests_deleted: Counter,
    /// Files in blob storage that no metadata row accounted for, and staging
    /// files of upload sessions that no longer exist.
    pub orphans_deleted: Counter,
    pub last_completed_seconds: Gauge,
    pub last_duration_ms: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Count a request refused by `limit`.
    pub fn limited(&self, limit: &'static str) {
        self.limited.get_or_create(&LimitLabels { limit }).inc();
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let request_seconds = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 4.0, 10))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to produce response headers, by route",
            request_seconds.clone(),
        );
        let bytes_in = Counter::default();
        registry.register(
            "blob_bytes_received",
            "Blob bytes received in uploads",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "blob_bytes_sent",
            "Blob bytes sent in downloads",
            bytes_out.clone(),
        );
        let upload_seconds = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        registry.register(
            "blob_upload_duration_seconds",
            "Time from the start of an upload session to its commit",
            upload_seconds.clone(),
        );
        let uploads_reaped = Counter::default();
        registry.register(
            "uploads_reaped",
            "Abandoned upload sessions removed",
            uploads_reaped.clone(),
        );
        let integrity_failures = Counter::default();
        registry.register(
            "blob_integrity_failures",
            "Reads of encrypted blobs that failed their integrity check (altered or corrupted storage)",
            integrity_failures.clone(),
        );
        let connections_accepted = Counter::default();
        registry.register(
            "connections_accepted",
            "TCP connections admitted",
            connections_accepted.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "TCP connections refused because every slot was busy",
            connections_refused.clone(),
        );
        let connections_evicted = Counter::default();
        registry.register(
            "connections_evicted",
            "Idle connections closed to make room for a new one",
            connections_evicted.clone(),
        );
        let connections_idle_closed = Counter::default();
        registry.register(
            "connections_idle_closed",
            "Connections closed after idle_timeout without a request",
            connections_idle_closed.clone(),
        );
        let tls_handshakes_failed = Counter::default();
        registry.register(
            "tls_handshakes_failed",
            "TLS handshakes that failed or were abandoned",
            tls_handshakes_failed.clone(),
        );
        let tls_reloads_failed = Counter::default();
        registry.register(
            "tls_reloads_failed",
            "Changed certificate files that could not be loaded (the previous certificate is kept)",
            tls_reloads_failed.clone(),
        );
        let limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "requests_limited",
            "Requests refused by a limit, by limit",
            limited.clone(),
        );
        let gc = GcMetrics::default();
        let g = registry.sub_registry_with_prefix("gc");
        g.register("runs", "Garbage collection runs completed", gc.runs.clone());
        g.register(
            "running",
            "1 while a garbage collection runs",
            gc.running.clone(),
        );
        g.register(
            "blobs_scanned",
            "Blob rows examined by the current or last run",
            gc.blobs_scanned.clone(),
        );
        g.register(
            "blobs_total",
            "Blob rows when the current or last run started",
            gc.blobs_total.clone(),
        );
        g.register(
            "blobs_deleted",
            "Unreferenced blobs deleted",
            gc.blobs_deleted.clone(),
        );
        g.register(
            "reclaimed_bytes",
            "Bytes of blob storage freed",
            gc.bytes_reclaimed.clone(),
        );
        g.register(
            "manifests_deleted",
            "Referrers deleted because their subject was deleted",
            gc.manifests_deleted.clone(),
        );
        g.register(
            "orphans_deleted",
            "Stored files no metadata accounted for, deleted",
            gc.orphans_deleted.clone(),
        );
        g.register(
            "last_completed_timestamp_seconds",
            "When the last run finished",
            gc.last_completed_seconds.clone(),
        );
        g.register(
            "last_duration_milliseconds",
            "How long the last run took",
            gc.last_duration_ms.clone(),
        );
        let lifecycle_evaluations = Counter::default();
        registry.register(
            "lifecycle_evaluations",
            "Lifecycle policy evaluations carried out",
            lifecycle_evaluations.clone(),
        );
        let lifecycle_images_expired = Counter::default();
        registry.register(
            "lifecycle_images_expired",
            "Manifests removed by lifecycle policies (with referrers and index children)",
            lifecycle_images_expired.clone(),
        );
        let scans = ScanMetrics::default();
        let sc = registry.sub_registry_with_prefix("scan");
        sc.register(
            "finished",
            "Image scans finished, by status",
            scans.finished.clone(),
        );
        sc.register(
            "layer_cache_hits",
            "Layers whose inventory was cached (read by no scan again)",
            scans.layer_cache_hits.clone(),
        );
        sc.register(
            "layer_cache_misses",
            "Layers read and decompressed by a scan",
            scans.layer_cache_misses.clone(),
        );
        sc.register(
            "layer_bytes_read",
            "Decompressed layer bytes read by scans",
            scans.layer_bytes_read.clone(),
        );
        sc.register(
            "rematched",
            "Images re-matched from their stored inventory after an import",
            scans.rematched.clone(),
        );
        let pull_through = PullThroughMetrics::default();
        let pt = registry.sub_registry_with_prefix("pull_through");
        pt.register(
            "hits",
            "Pull-through cache: manifests and blobs served from the cache",
            pull_through.hits.clone(),
        );
        pt.register(
            "misses",
            "Pull-through cache: manifests and blobs fetched from the upstream",
            pull_through.misses.clone(),
        );
        pt.register(
            "upstream_errors",
            "Pull-through cache: upstream fetches that failed",
            pull_through.upstream_errors.clone(),
        );
        pt.register(
            "stale_served",
            "Pull-through cache: cached tags served because the upstream could not be asked",
            pull_through.stale_served.clone(),
        );
        pt.register(
            "refused",
            "Pull-through cache: upstream content refused for not matching its digest",
            pull_through.refused.clone(),
        );
        pt.register(
            "upstream_bytes",
            "Pull-through cache: blob bytes read from upstreams",
            pull_through.upstream_bytes.clone(),
        );
        let jobs = JobMetrics {
            runs: Family::default(),
            seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 4.0, 10))
            }),
            queued: Family::default(),
        };
        registry.register(
            "job_runs",
            "Background jobs run on this node, by kind and outcome",
            jobs.runs.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Time a background job took, by kind",
            jobs.seconds.clone(),
        );
        registry.register(
            "jobs",
            "Jobs in the queue by kind and state (queued, running, failed)",
            jobs.queued.clone(),
        );
        let seconds = || Histogram::new(exponential_buckets(0.01, 4.0, 10));
        let replication = ReplicationMetrics {
            deliveries: Family::default(),
            delivery_seconds: Family::new_with_constructor(seconds),
            delivered_lag_seconds: Family::new_with_constructor(seconds),
            lag_seconds: Family::default(),
            pending: Family::default(),
            failed: Family::default(),
        };
        let rp = registry.sub_registry_with_prefix("replication");
        rp.register(
            "deliveries",
            "Replication deliveries by destination and outcome (ok, or the failure code)",
            replication.deliveries.clone(),
        );
        rp.register(
            "delivery_duration_seconds",
            "Time one replication delivery took, by destination",
            replication.delivery_seconds.clone(),
        );
        rp.register(
            "delivered_lag_seconds",
            "From push acknowledged to delivered at the destination, per image",
            replication.delivered_lag_seconds.clone(),
        );
        rp.register(
            "lag_seconds",
            "Age of the oldest push not yet delivered to the destination (0: caught up)",
            replication.lag_seconds.clone(),
        );
        rp.register(
            "pending",
            "Images waiting to be delivered to the destination",
            replication.pending.clone(),
        );
        rp.register(
            "failed",
            "Images given up for the destination (retried for 24 h)",
            replication.failed.clone(),
        );
        let audit = AuditMetrics::default();
        let au = registry.sub_registry_with_prefix("audit");
        au.register(
            "batched_events",
            "Audit events appended by the writer (reads, refusals, failures)",
            audit.batched.clone(),
        );
        au.register(
            "write_failures",
            "Failed attempts to append a batch of audit events (each retried)",
            audit.write_failures.clone(),
        );
        au.register(
            "dropped_events",
            "Audit events of reads and failures dropped: the queue was full while the database refused the writer",
            audit.dropped.clone(),
        );
        Metrics {
            audit,
            replication,
            jobs,
            scans,
            pull_through,
            gc,
            lifecycle_evaluations,
            lifecycle_images_expired,
            registry,
            requests,
            request_seconds,
            bytes_in,
            bytes_out,
            upload_seconds,
            uploads_reaped,
            integrity_failures,
            connections_accepted,
            connections_refused,
            connections_evicted,
            connections_idle_closed,
            tls_handshakes_failed,
            tls_reloads_failed,
            limited,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
