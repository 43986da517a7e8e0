//! The audit trail: what records, checks and hands out the audit log
//! (docs/audit.md).
//!
//! - [`AuditTrail::begin`] gives a request's scope its event once the caller
//!   is authenticated; [`AuditTrail::finish`] completes an event no
//!   transaction took (a read, a refusal, a failure) and has the writer
//!   append it: a change's event is durable before its answer is sent, a
//!   read's or a failure's is written within the next batch (a crash can
//!   lose those of the last moment, never a change).
//! - The writer ([`AuditTrail::start`]) appends batches of up to 512 events
//!   per transaction (reads linger up to 100 ms for company; a change's
//!   event goes at once), from a bounded queue (a caller flooding reads is
//!   slowed to the writer's pace rather than growing memory).
//! - [`verify`] walks the chain; [`export`] writes CloudTrail log files;
//!   [`stream`] prints JSON lines; [`prune`] applies the retention.

mod export;
mod verify;

pub use crate::metadata::{AuditAttribute, AuditQuery, AuditRow, MetaError};
pub use export::{export, stream};
pub use verify::{Report, verify};

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::audit::{Event, Identity, Resource, Scope};
use crate::metadata::MetadataStore;
use crate::metrics::Metrics;

/// Events a batch holds at most (one transaction).
const BATCH: usize = 512;
/// Events waiting for the writer at most.
const QUEUE: usize = 8192;
/// How long reads and failures wait for company before they are written.
const LINGER: Duration = Duration::from_millis(100);
/// How long a change's answer waits for its event to be durable.
const DURABLE_WAIT: Duration = Duration::from_secs(10);

enum Item {
    Event(Box<Event>, Option<oneshot::Sender<()>>),
    Flush(oneshot::Sender<()>),
}

/// How a request ended, for its event.
pub enum Outcome {
    Ok { response: Option<Value> },
    Failed { code: String, message: String },
}

impl Outcome {
    /// How an AWS JSON call ended: its answer (as responseElements, redacted,
    /// when `with_response`) or its exception's name and message.
    pub fn of_json<E>(
        result: &Result<Value, E>,
        error: impl Fn(&E) -> (&str, &str),
        with_response: bool,
    ) -> Outcome {
        match result {
            Ok(v) => Outcome::Ok {
                response: with_response.then(|| redacted(v)).flatten(),
            },
            Err(e) => {
                let (code, message) = error(e);
                Outcome::Failed {
                    code: code.to_string(),
                    message: message.to_string(),
                }
            }
        }
    }
}

/// The audit trail of one node.
pub struct AuditTrail {
    pub meta: MetadataStore,
    enabled: bool,
    queue: mpsc::Sender<Item>,
    /// Whether the writer's last append succeeded.
    writing: Arc<std::sync::atomic::AtomicBool>,
    metrics: Arc<Metrics>,
    /// Wakes the lingering writer for an event someone waits for.
    wake: Arc<tokio::sync::Notify>,
}

impl AuditTrail {
    /// The trail, with its writer running (`enabled = false`: nothing is
    /// recorded, `audit = false` in the configuration).
    pub fn start(meta: MetadataStore, enabled: bool, metrics: Arc<Metrics>) -> Arc<AuditTrail> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let wake = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(run(
            meta.clone(),
            rx,
            metrics.clone(),
            writing.clone(),
            wake.clone(),
        ));
        Arc::new(AuditTrail {
            meta,
            enabled,
            queue,
            writing,
            metrics,
            wake,
        })
    }

    /// The caller of the request `scope` belongs to is known: record `event`.
    pub fn begin(&self, scope: &Scope, event: Event) {
        if self.enabled {
            scope.begin(event)
        }
    }

    /// The request of `scope` ended: an event no transaction took is
    /// completed with `outcome` and appended (awaited when it records a
    /// change).
    pub async fn finish(&self, scope: &Scope, outcome: Outcome) {
        let Some(mut event) = scope.take_unrecorded() else {
            return;
        };
        let changed = match outcome {
            Outcome::Ok { response } => {
                if !event.read_only && event.response_elements.is_none() {
                    event.response_elements = response;
                }
                !event.read_only && !event.batched
            }
            Outcome::Failed { code, message } => {
                event.error_code = Some(code);
                event.error_message = Some(message);
                event.response_elements = None;
                false
            }
        };
        self.append(event, changed).await
    }

    /// Append `event`; when it records a `change`, wait until it is durable
    /// (a failure changed nothing, and must not wait on a database that may
    /// be the reason it failed).
    pub async fn append(&self, event: Event, change: bool) {
        if !self.enabled {
            return;
        }
        if !change {
            // Backpressure while the writer keeps up; while the database
            // refuses it, a full queue drops reads and failures (counted)
            // rather than hold every request until the database is back.
            let item = Item::Event(Box::new(event), None);
            if self.writing.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = self.queue.send(item).await;
            } else if self.queue.try_send(item).is_err() {
                self.metrics.audit.dropped.inc();
            }
            return;
        }
        let (tx, rx) = oneshot::channel();
        let sent = self
            .queue
            .send(Item::Event(Box::new(event), Some(tx)))
            .await
            .is_ok();
        self.wake.notify_one();
        if sent && tokio::time::timeout(DURABLE_WAIT, rx).await.is_err() {
            tracing::error!(
                "an audit event was not durable within {DURABLE_WAIT:?}; answering anyway"
            );
        }
    }

    /// Wait until every event queued so far is written (shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        let sent = self.queue.send(Item::Flush(tx)).await.is_ok();
        self.wake.notify_one();
        if sent {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
    }

    /// One page of LookupEvents.
    pub async fn lookup(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, MetaError> {
        self.meta.lookup_audit(q).await
    }
}

async fn run(
    meta: MetadataStore,
    mut rx: mpsc::Receiver<Item>,
    metrics: Arc<Metrics>,
    writing: Arc<std::sync::atomic::AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
) {
    while let Some(first) = rx.recv().await {
        // Reads and failures linger up to LINGER so that one transaction
        // takes many of them. The writer sleeps meanwhile rather than wake
        // for each one (a wake-up per event costs a GET more than its
        // event); a change's event (someone waits) or a flush wakes it, and
        // goes at once with whatever is queued.
        let urgent = |i: &Item| matches!(i, Item::Event(_, Some(_)) | Item::Flush(_));
        let mut items = vec![first];
        if !urgent(&items[0]) {
            let linger = tokio::time::sleep(LINGER);
            tokio::select! {
                _ = linger => {}
                _ = wake.notified() => {}
            }
        }
        while items.len() < BATCH {
            match rx.try_recv() {
                Ok(i) => items.push(i),
                Err(_) => break,
            }
        }
        let mut events = Vec::with_capacity(items.len());
        let mut waiters = Vec::new();
        for i in items {
            match i {
                Item::Event(e, w) => {
                    events.push(*e);
                    waiters.extend(w);
                }
                Item::Flush(w) => waiters.push(w),
            }
        }
        let mut pause = Duration::from_millis(50);
        loop {
            match meta.append_audit(&events).await {
                Ok(()) => {
                    writing.store(true, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    writing.store(false, std::sync::atomic::Ordering::Relaxed);
                    metrics.audit.write_failures.inc();
                    tracing::error!(error = %e, events = events.len(), "appending audit events failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        metrics.audit.batched.inc_by(events.len() as u64);
        for w in waiters {
            let _ = w.send(());
        }
    }
}

/// The event of an HTTP request to `source`'s operation `op`: who, from
/// where, with what client, under which request id.
pub fn request_event(
    parts: &axum::http::request::Parts,
    source: &'static str,
    op: &str,
    region: &str,
    account: &str,
    identity: Identity,
) -> Event {
    let mut e = Event::new(source, op, region, account, identity);
    e.source_ip = crate::http::client_ip(parts)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    e.user_agent = parts
        .headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(1024).collect());
    e.request_id = match crate::http::RequestId::of(parts) {
        Some(id) => id.to_string(),
        None => e.id.clone(),
    };
    e
}

/// Whether an operation only reads, as CloudTrail's `readOnly` says.
pub fn is_read_only(op: &str) -> bool {
    [
        "Describe",
        "List",
        "Get",
        "BatchGet",
        "BatchCheck",
        "Lookup",
        "Validate",
    ]
    .iter()
    .any(|p| op.starts_with(p))
}

/// Members never recorded: secrets and bulk content (an upload's bytes, a
/// manifest, key material, a template body), whatever the operation.
const REDACTED: &[&str] = &[
    "layerPartBlob",
    "imageManifest",
    "authorizationData",
    "Plaintext",
    "CiphertextBlob",
    "CiphertextForRecipient",
    "PublicKey",
    "TemplateBody",
    "SecretAccessKey",
    "secretAccessKey",
    "password",
];

/// `v` as an event's requestParameters or responseElements: redacted
/// members removed, at most 64 KiB of JSON (else a note of its size).
pub fn redacted(v: &Value) -> Option<Value> {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| !REDACTED.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    if v.is_null() {
        return None;
    }
    let s = strip(v);
    let len = s.to_string().len();
    Some(match len > 64 << 10 {
        true => serde_json::json!({"omitted": format!("{len} bytes of parameters")}),
        false => s,
    })
}

/// A repository as an event's resource.
pub fn repository_resource(arn: String, account: &str, name: &str) -> Resource {
    Resource {
        kind: crate::audit::REPOSITORY.to_string(),
        name: name.to_string(),
        arn,
        account_id: account.to_string(),
    }
}

/// Delete events older than `keep` (in batches; returns how many).
pub async fn prune(meta: &MetadataStore, keep: Duration) -> Result<u64, MetaError> {
    let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let before = crate::metadata::now_millis().saturating_sub(keep);
    let mut total = 0;
    loop {
        let n = meta.prune_audit(before, 5_000).await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_secrets_and_bulk() {
        let v = serde_json::json!({
            "repositoryName": "a",
            "imageManifest": "{...}",
            "nested": [{"Plaintext": "x", "KeyId": "k"}],
        });
        let r = redacted(&v).unwrap();
        assert_eq!(
            r,
            serde_json::json!({"repositoryName": "a", "nested": [{"KeyId": "k"}]})
        );
        assert!(redacted(&Value::Null).is_none());
        let big = serde_json::json!({"x": "y".repeat(70_000)});
        assert!(redacted(&big).unwrap()["omitted"].is_string());
    }

    #[test]
    fn read_only_operations() {
        assert!(is_read_only("BatchGetImage"));
        assert!(is_read_only("GetAuthorizationToken"));
        assert!(is_read_only("LookupEvents"));
        assert!(!is_read_only("PutImage"));
        assert!(!is_read_only("BatchDeleteImage"));
    }
}
