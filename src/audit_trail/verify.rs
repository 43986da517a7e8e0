//! `berth audit verify`: walk the chain from where retention left it to
//! its head, recomputing every link, and report each event that is
//! missing, altered or out of place.

use serde_json::Value;

use crate::audit::ChainKey;
use crate::metadata::{AuditHead, AuditRow, MetaError, MetadataStore};

/// What a walk of the chain found.
#[derive(Debug)]
pub struct Report {
    pub head: AuditHead,
    /// Events whose links were recomputed.
    pub checked: u64,
    /// What is wrong, in chain order (at most 100 lines; `more` counts the rest).
    pub problems: Vec<String>,
    pub more: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 100 {
            self.problems.push(p);
        } else {
            self.more += 1;
        }
    }
}

/// The columns LookupEvents filters on must say what the record says: an
/// event cannot be hidden from a lookup by editing its columns.
fn columns_match(r: &AuditRow) -> Result<(), String> {
    let rec: Value = serde_json::from_str(&r.record).map_err(|e| format!("not JSON: {e}"))?;
    let s = |k: &str| rec.get(k).and_then(Value::as_str).unwrap_or("");
    let checks = [
        ("eventName", s("eventName") == r.event_name),
        ("eventSource", s("eventSource") == r.event_source),
        ("eventID", s("eventID") == r.event_id),
        ("awsRegion", s("awsRegion") == r.region),
        ("recipientAccountId", s("recipientAccountId") == r.account),
        (
            "readOnly",
            rec.get("readOnly").and_then(Value::as_bool) == Some(r.read_only),
        ),
        (
            "eventTime",
            s("eventTime") == crate::audit::event_time(r.event_time),
        ),
        (
            "accessKeyId",
            rec["userIdentity"]
                .get("accessKeyId")
                .and_then(Value::as_str)
                == r.access_key_id.as_deref(),
        ),
    ];
    match checks.iter().find(|(_, ok)| !ok) {
        Some((k, _)) => Err(format!("its {k} column differs from its record")),
        None => Ok(()),
    }
}

pub async fn verify(meta: &MetadataStore, key: &ChainKey) -> Result<Report, MetaError> {
    let head = meta.audit_head().await?;
    let mut report = Report {
        head: head.clone(),
        checked: 0,
        problems: Vec::new(),
        more: 0,
    };
    let mut prev = head.pruned_link.clone();
    let mut expected = head.pruned_seq + 1;
    let mut after = head.pruned_seq;
    loop {
        let rows = meta.audit_after(after, 1000).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for r in &rows {
            if r.seq > head.seq {
                report.problem(format!(
                    "event {} is beyond the chain's head ({})",
                    r.seq, head.seq
                ));
                continue;
            }
            if r.seq != expected {
                report.problem(match r.seq - expected {
                    1 => format!("event {expected} is missing"),
                    _ => format!("events {expected} to {} are missing", r.seq - 1),
                });
            } else if key.link(&prev, r.seq, &r.record) != r.link {
                report.problem(format!(
                    "event {} ({}, {}) was altered: its link does not match",
                    r.seq, r.event_name, r.event_id
                ));
            } else if let Err(why) = columns_match(r) {
                report.problem(format!(
                    "event {} ({}) was altered: {why}",
                    r.seq, r.event_id
                ));
            }
            report.checked += 1;
            prev = r.link.clone();
            expected = r.seq + 1;
        }
    }
    if expected <= head.seq {
        report.problem(match head.seq - expected {
            0 => format!("event {expected} (the last) is missing"),
            _ => format!("events {expected} to {} (the last) are missing", head.seq),
        });
    } else if prev != head.link && report.problems.is_empty() {
        report.problem("the chain's head does not match its last event".to_string());
    }
    Ok(report)
}
