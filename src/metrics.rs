//! Prometheus metrics: one explicit registry per server (no globals, so tests
//! can run several servers in one process), rendered in the OpenMetrics text
//! format at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<KindLabels, Histogram>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub upload_seconds: Histogram,
    pub uploads_reaped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
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
        Metrics {
            registry,
            requests,
            request_seconds,
            bytes_in,
            bytes_out,
            upload_seconds,
            uploads_reaped,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
