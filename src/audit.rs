//! Audit events as values: one [`Event`] per API call, `/v2/` action or
//! service action, in CloudTrail's record shape ([`Event::record`]); the
//! keyed hash chain that makes a deleted or edited event detectable
//! ([`ChainKey::link`]); and the request's audit scope ([`Scope`]), through
//! which the metadata store writes a request's event in the same
//! transaction as the change it records.
//!
//! How a request is recorded: the face opens a [`Scope`] for it and, once
//! the caller is authenticated, [`Scope::begin`]s its event. Any write
//! transaction the metadata store commits inside that scope takes the event
//! along ([`pending`] before the commit, [`Scope::recorded`] after it), so a
//! change that is acknowledged is never missing from the log. An event no
//! transaction took (a read, a refusal, a failure) is written by the audit
//! trail's writer when the request ends (`audit_trail`). Nothing here does
//! I/O.

use std::sync::{Arc, Mutex};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// CloudTrail's record version these events follow.
pub const EVENT_VERSION: &str = "1.09";

/// The event sources Berth records, as CloudTrail names them.
pub const ECR: &str = "ecr.amazonaws.com";
pub const KMS: &str = "kms.amazonaws.com";
pub const CLOUDFORMATION: &str = "cloudformation.amazonaws.com";
pub const STS: &str = "sts.amazonaws.com";
pub const SSM: &str = "ssm.amazonaws.com";
pub const CLOUDTRAIL: &str = "cloudtrail.amazonaws.com";

/// The resource type of a repository in `resources` (and LookupEvents'
/// `ResourceType`).
pub const REPOSITORY: &str = "AWS::ECR::Repository";

/// Who acted, as CloudTrail's `userIdentity` says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityKind {
    /// The account's root key.
    Root,
    IamUser,
    /// Berth acting by itself (lifecycle expiry, garbage collection,
    /// replication), `invokedBy` the service.
    AwsService,
    /// A request no credentials came with (`auth = "none"`).
    Unknown,
}

impl IdentityKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            IdentityKind::Root => "Root",
            IdentityKind::IamUser => "IAMUser",
            IdentityKind::AwsService => "AWSService",
            IdentityKind::Unknown => "Unknown",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Identity {
    pub kind: IdentityKind,
    pub principal_id: String,
    pub arn: Option<String>,
    pub account_id: String,
    pub access_key_id: Option<String>,
    pub user_name: Option<String>,
    /// For a service's own action, or a call a service made for its caller
    /// (`cloudformation.amazonaws.com` for a stack's resources).
    pub invoked_by: Option<String>,
}

impl Identity {
    /// A service acting by itself in `account`.
    pub fn service(account: &str, service: &str) -> Identity {
        Identity {
            kind: IdentityKind::AwsService,
            principal_id: service.to_string(),
            arn: None,
            account_id: account.to_string(),
            access_key_id: None,
            user_name: None,
            invoked_by: Some(service.to_string()),
        }
    }

    /// An anonymous caller of `account`'s registry.
    pub fn anonymous(account: &str) -> Identity {
        Identity {
            kind: IdentityKind::Unknown,
            principal_id: "anonymous".to_string(),
            arn: None,
            account_id: account.to_string(),
            access_key_id: None,
            user_name: None,
            invoked_by: None,
        }
    }

    /// LookupEvents' `Username`: the IAM user's name, `root`, or the service.
    pub fn username(&self) -> Option<String> {
        match self.kind {
            IdentityKind::Root => Some("root".to_string()),
            IdentityKind::IamUser => self.user_name.clone(),
            IdentityKind::AwsService => self.invoked_by.clone(),
            IdentityKind::Unknown => None,
        }
    }

    fn record(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), json!(self.kind.as_str()));
        if self.kind != IdentityKind::AwsService {
            m.insert("principalId".into(), json!(self.principal_id));
        }
        if let Some(arn) = &self.arn {
            m.insert("arn".into(), json!(arn));
        }
        m.insert("accountId".into(), json!(self.account_id));
        if let Some(k) = &self.access_key_id {
            m.insert("accessKeyId".into(), json!(k));
        }
        if let Some(u) = &self.user_name {
            m.insert("userName".into(), json!(u));
        }
        if let Some(by) = &self.invoked_by {
            m.insert("invokedBy".into(), json!(by));
        }
        Value::Object(m)
    }
}

/// A resource an event names (CloudTrail's `resources`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub kind: String,
    /// The resource's name for LookupEvents' `ResourceName` (a
    /// repository's name).
    pub name: String,
    pub arn: String,
    pub account_id: String,
}

/// One audit event.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: String,
    pub time_ms: i64,
    pub source: &'static str,
    pub name: String,
    pub region: String,
    /// The account whose history holds the event (`recipientAccountId`).
    pub account: String,
    pub identity: Identity,
    pub source_ip: String,
    pub user_agent: Option<String>,
    pub request_parameters: Option<Value>,
    pub response_elements: Option<Value>,
    pub additional: Option<Value>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_id: String,
    pub read_only: bool,
    pub resources: Vec<Resource>,
}

impl Event {
    /// An event named `name` of `source`, happening now, with a fresh id.
    pub fn new(
        source: &'static str,
        name: &str,
        region: &str,
        account: &str,
        identity: Identity,
    ) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            time_ms: now_millis(),
            source,
            name: name.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            identity,
            source_ip: String::new(),
            user_agent: None,
            request_parameters: None,
            response_elements: None,
            additional: None,
            error_code: None,
            error_message: None,
            request_id: String::new(),
            read_only: false,
            resources: Vec::new(),
        }
    }

    /// A service's own action in `account` (lifecycle expiry, GC,
    /// replication): CloudTrail's `AwsServiceEvent`.
    pub fn service(name: &str, region: &str, account: &str, service: &str) -> Event {
        let mut e = Event::new(
            ECR,
            name,
            region,
            account,
            Identity::service(account, service),
        );
        e.source_ip = service.to_string();
        e.user_agent = Some(service.to_string());
        e
    }

    /// Whether Berth acted by itself (no caller).
    pub fn is_service_event(&self) -> bool {
        self.identity.kind == IdentityKind::AwsService && self.identity.arn.is_none()
    }

    /// The CloudTrail record.
    pub fn record(&self) -> Value {
        let mut m = Map::new();
        m.insert("eventVersion".into(), json!(EVENT_VERSION));
        m.insert("userIdentity".into(), self.identity.record());
        m.insert("eventTime".into(), json!(event_time(self.time_ms)));
        m.insert("eventSource".into(), json!(self.source));
        m.insert("eventName".into(), json!(self.name));
        m.insert("awsRegion".into(), json!(self.region));
        m.insert("sourceIPAddress".into(), json!(self.source_ip));
        m.insert(
            "userAgent".into(),
            json!(self.user_agent.as_deref().unwrap_or("")),
        );
        if let Some(code) = &self.error_code {
            m.insert("errorCode".into(), json!(code));
            m.insert(
                "errorMessage".into(),
                json!(self.error_message.as_deref().unwrap_or("")),
            );
        }
        m.insert(
            "requestParameters".into(),
            self.request_parameters.clone().unwrap_or(Value::Null),
        );
        m.insert(
            "responseElements".into(),
            self.response_elements.clone().unwrap_or(Value::Null),
        );
        if let Some(a) = &self.additional {
            m.insert("additionalEventData".into(), a.clone());
        }
        m.insert("requestID".into(), json!(self.request_id));
        m.insert("eventID".into(), json!(self.id));
        m.insert("readOnly".into(), json!(self.read_only));
        if !self.resources.is_empty() {
            let rs: Vec<Value> = self
                .resources
                .iter()
                .map(|r| json!({"accountId": r.account_id, "type": r.kind, "ARN": r.arn}))
                .collect();
            m.insert("resources".into(), Value::Array(rs));
        }
        m.insert(
            "eventType".into(),
            json!(match self.is_service_event() {
                true => "AwsServiceEvent",
                false => "AwsApiCall",
            }),
        );
        m.insert("managementEvent".into(), json!(true));
        m.insert("recipientAccountId".into(), json!(self.account));
        m.insert("eventCategory".into(), json!("Management"));
        Value::Object(m)
    }
}

/// CloudTrail's `eventTime`: UTC to the second, `2026-12-02T05:30:00Z`.
pub fn event_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = crate::sigv4::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The key of the audit log's hash chain (derived from the master key, so
/// whoever can write the database but not read the master key cannot forge
/// a link).
#[derive(Clone)]
pub struct ChainKey([u8; 32]);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

/// The link before the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl ChainKey {
    pub fn new(key: [u8; 32]) -> ChainKey {
        ChainKey(key)
    }

    /// The link of event `seq` whose stored record is `record`, after the
    /// link `prev` (hex): HMAC-SHA256 over the previous link, the sequence
    /// number and the record's exact bytes.
    pub fn link(&self, prev: &str, seq: i64, record: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        mac.update(prev.as_bytes());
        mac.update(b"\n");
        mac.update(seq.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(record.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

tokio::task_local! {
    static CURRENT: Arc<Scope>;
}

/// One request's (or one service action's) audit scope; see the module doc.
#[derive(Debug, Default)]
pub struct Scope {
    state: Mutex<ScopeState>,
}

#[derive(Debug, Default)]
enum ScopeState {
    /// Not authenticated (yet): nothing to record.
    #[default]
    Empty,
    Pending(Box<Event>),
    /// Written by a transaction; later notes are ignored.
    Recorded,
}

impl Scope {
    pub fn new() -> Arc<Scope> {
        Arc::new(Scope::default())
    }

    /// Run `f` inside this scope.
    pub async fn run<F: std::future::Future>(self: &Arc<Self>, f: F) -> F::Output {
        CURRENT.scope(self.clone(), f).await
    }

    /// The caller is known: this is the event to record.
    pub fn begin(&self, event: Event) {
        *self.state.lock().expect("audit scope lock") = ScopeState::Pending(Box::new(event));
    }

    /// Change the pending event (nothing once recorded, or before begun).
    pub fn note(&self, f: impl FnOnce(&mut Event)) {
        if let ScopeState::Pending(e) = &mut *self.state.lock().expect("audit scope lock") {
            f(e)
        }
    }

    /// A copy of the pending event.
    pub fn pending(&self) -> Option<Event> {
        match &*self.state.lock().expect("audit scope lock") {
            ScopeState::Pending(e) => Some((**e).clone()),
            _ => None,
        }
    }

    /// The transaction that took [`Scope::pending`] committed.
    pub fn recorded(&self) {
        *self.state.lock().expect("audit scope lock") = ScopeState::Recorded;
    }

    /// The event when no transaction took it, for the trail's writer.
    pub fn take_unrecorded(&self) -> Option<Event> {
        let mut s = self.state.lock().expect("audit scope lock");
        match std::mem::take(&mut *s) {
            ScopeState::Pending(e) => {
                *s = ScopeState::Recorded;
                Some(*e)
            }
            other => {
                *s = other;
                None
            }
        }
    }

    pub fn is_recorded(&self) -> bool {
        matches!(
            *self.state.lock().expect("audit scope lock"),
            ScopeState::Recorded
        )
    }
}

/// The current scope's pending event, for the transaction about to commit.
pub fn pending() -> Option<(Arc<Scope>, Event)> {
    CURRENT
        .try_with(|s| s.pending().map(|e| (s.clone(), e)))
        .ok()
        .flatten()
}

/// Change the current scope's pending event, if any.
pub fn note(f: impl FnOnce(&mut Event)) {
    let _ = CURRENT.try_with(|s| s.note(f));
}

/// Run `f` with no audit scope: its commits record nothing (work a request
/// does on the side, such as a pull-through fetch, or a service's own
/// action that opens a scope of its own).
pub async fn outside<F: std::future::Future>(f: F) -> F::Output {
    Scope::new().run(f).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_is_utc_seconds() {
        assert_eq!(event_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(event_time(1_796_189_400_123), "2026-12-02T05:30:00Z");
    }

    #[test]
    fn links_depend_on_key_previous_sequence_and_bytes() {
        let k = ChainKey::new([7; 32]);
        let a = k.link(GENESIS, 1, "{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, k.link(GENESIS, 2, "{}"));
        assert_ne!(a, k.link(&a, 1, "{}"));
        assert_ne!(a, k.link(GENESIS, 1, "{ }"));
        assert_ne!(a, ChainKey::new([8; 32]).link(GENESIS, 1, "{}"));
        assert_eq!(a, k.link(GENESIS, 1, "{}"));
    }

    #[test]
    fn record_has_cloudtrail_fields() {
        let mut e = Event::new(
            ECR,
            "PutImage",
            "us-east-1",
            "123456789012",
            Identity {
                kind: IdentityKind::IamUser,
                principal_id: "AIDAEXAMPLE".into(),
                arn: Some("arn:aws:iam::123456789012:user/ci".into()),
                account_id: "123456789012".into(),
                access_key_id: Some("AKIAEXAMPLE".into()),
                user_name: Some("ci".into()),
                invoked_by: None,
            },
        );
        e.error_code = Some("ImageTagAlreadyExistsException".into());
        let r = e.record();
        for k in [
            "eventTime",
            "eventName",
            "eventSource",
            "awsRegion",
            "sourceIPAddress",
            "userAgent",
            "userIdentity",
            "requestParameters",
            "responseElements",
            "requestID",
            "eventID",
            "errorCode",
            "errorMessage",
            "readOnly",
            "eventType",
            "recipientAccountId",
        ] {
            assert!(r.get(k).is_some(), "{k} missing");
        }
        assert_eq!(r["userIdentity"]["type"], "IAMUser");
        assert_eq!(r["eventType"], "AwsApiCall");
        let s = Event::service("PolicyExecutionEvent", "us-east-1", "1", ECR);
        assert_eq!(s.record()["eventType"], "AwsServiceEvent");
        assert_eq!(s.record()["userIdentity"]["invokedBy"], ECR);
    }

    #[tokio::test]
    async fn a_scope_hands_its_event_to_one_transaction() {
        let scope = Scope::new();
        scope
            .run(async {
                assert!(pending().is_none(), "nothing before begin");
                CURRENT.with(|s| {
                    s.begin(Event::service("X", "r", "1", ECR));
                });
                note(|e| e.read_only = true);
                let (s, e) = pending().expect("pending");
                assert!(e.read_only);
                s.recorded();
                assert!(pending().is_none());
                outside(async { assert!(pending().is_none()) }).await;
            })
            .await;
        assert!(scope.is_recorded());
        assert!(scope.take_unrecorded().is_none());
    }
}
