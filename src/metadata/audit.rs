//! The audit log's store: events (CloudTrail records, with the columns
//! LookupEvents filters on) in one hash chain, and the chain's head.
//!
//! Every event gets the next sequence number and its link
//! (`audit::ChainKey::link` of the previous link, the number and the
//! record's bytes) from the head row, which the appending transaction locks
//! last (PostgreSQL `FOR UPDATE`; SQLite's `BEGIN IMMEDIATE` already admits
//! one writer): the numbers have no gaps and the links no forks. A request's
//! event is appended by the transaction that makes its change
//! ([`MetadataStore::commit`]), or on its own by the audit trail's writer.
//! Retention deletes the oldest events and records, in the head, the number
//! and link the chain now starts after.

use sqlx::Row;

use super::{Dialect, MetadataStore, Result};
use crate::audit::{ChainKey, Event};

/// One stored event.
#[derive(Clone, Debug)]
pub struct AuditRow {
    pub seq: i64,
    pub event_time: i64,
    pub account: String,
    pub region: String,
    pub event_id: String,
    pub event_name: String,
    pub event_source: String,
    pub username: Option<String>,
    pub access_key_id: Option<String>,
    pub read_only: bool,
    pub resource_type: Option<String>,
    pub resource_name: Option<String>,
    /// The CloudTrail record, exactly the bytes the link covers.
    pub record: String,
    pub link: String,
}

/// The chain's head: the last event, and where the kept chain starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub link: String,
    /// Events up to this number were removed by retention…
    pub pruned_seq: i64,
    /// …and this was the link of the last one removed.
    pub pruned_link: String,
}

/// The one attribute LookupEvents may filter on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditAttribute {
    EventName(String),
    Username(String),
    ResourceName(String),
    ResourceType(String),
    AccessKeyId(String),
    EventSource(String),
    ReadOnly(bool),
    EventId(String),
}

/// A page of one account's history in one region, newest first.
#[derive(Clone, Debug)]
pub struct AuditQuery {
    pub account: String,
    pub region: String,
    pub attribute: Option<AuditAttribute>,
    /// Inclusive bounds on `event_time` (ms).
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Only events before this one (the previous page's last: its time and
    /// number), in the order pages are in.
    pub before: Option<(i64, i64)>,
    pub limit: i64,
}

const COLUMNS: &str = "seq, event_time, account_id, region, event_id, event_name, event_source, \
    username, access_key_id, read_only, resource_type, resource_name, record, link";

fn row_of(r: &sqlx::any::AnyRow) -> Result<AuditRow> {
    Ok(AuditRow {
        seq: r.try_get(0)?,
        event_time: r.try_get(1)?,
        account: r.try_get(2)?,
        region: r.try_get(3)?,
        event_id: r.try_get(4)?,
        event_name: r.try_get(5)?,
        event_source: r.try_get(6)?,
        username: r.try_get(7)?,
        access_key_id: r.try_get(8)?,
        read_only: r.try_get::<i64, _>(9)? != 0,
        resource_type: r.try_get(10)?,
        resource_name: r.try_get(11)?,
        record: r.try_get(12)?,
        link: r.try_get(13)?,
    })
}

/// The rows an event is stored as: one in the caller's account, and one in
/// the account whose resource it touched when that is another (as
/// CloudTrail delivers a cross-account call to both).
fn recipients(e: &Event) -> Vec<&str> {
    let mut out = vec![e.account.as_str()];
    if e.identity.account_id != e.account && !e.is_service_event() {
        out.push(e.identity.account_id.as_str());
    }
    out
}

impl MetadataStore {
    /// Commit `tx`, with the current audit scope's pending event appended to
    /// it (see `audit`): the change and its record are one transaction.
    pub(super) async fn commit(&self, mut tx: sqlx::Transaction<'static, sqlx::Any>) -> Result<()> {
        let taken = crate::audit::pending();
        if let Some((_, event)) = &taken {
            self.append_in(&mut tx, std::slice::from_ref(event)).await?;
        }
        tx.commit().await?;
        if let Some((scope, _)) = taken {
            scope.recorded();
        }
        Ok(())
    }

    /// [`MetadataStore::commit`] when the transaction `changed` something;
    /// else commit it without the pending event (a request that changed
    /// nothing, such as a create of what exists, is recorded with the
    /// error it is answered with).
    pub(super) async fn commit_if(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Any>,
        changed: bool,
    ) -> Result<()> {
        match changed {
            true => self.commit(tx).await,
            false => Ok(tx.commit().await?),
        }
    }

    /// [`MetadataStore::commit`], with `event` (a service's own action,
    /// completed from what the transaction did) appended too.
    pub(super) async fn commit_recording(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        event: Option<&Event>,
    ) -> Result<()> {
        if let Some(e) = event {
            self.append_in(&mut tx, std::slice::from_ref(e)).await?;
        }
        self.commit(tx).await
    }

    /// Run one writing statement; inside an audit scope with a pending
    /// event, in a transaction that appends it when the statement changed
    /// something.
    pub(super) async fn execute_write<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<u64> {
        if crate::audit::pending().is_none() {
            return Ok(q.execute(&self.pool).await?.rows_affected());
        }
        let mut tx = self.begin_write().await?;
        let n = q.execute(&mut *tx).await?.rows_affected();
        if n > 0 {
            self.commit(tx).await?;
        }
        Ok(n)
    }

    /// Append `events` to the chain in one transaction of their own (the
    /// audit trail's writer).
    pub async fn append_audit(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.retrying(|| async {
            let mut tx = self.begin_write().await?;
            self.append_in(&mut tx, events).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Append `events` within `tx`, the chain's head locked last.
    async fn append_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        events: &[Event],
    ) -> Result<()> {
        let lock = match self.dialect {
            Dialect::Postgres => "SELECT seq, link FROM audit_chain WHERE id = 1 FOR UPDATE",
            Dialect::Sqlite => "SELECT seq, link FROM audit_chain WHERE id = 1",
        };
        let head = sqlx::query(lock).fetch_one(&mut **tx).await?;
        let (mut seq, mut link): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
        let key = self.audit_key();
        // Rows first (links in order), then one INSERT per chunk.
        struct Row<'e> {
            seq: i64,
            e: &'e Event,
            account: &'e str,
            text: String,
            link: String,
        }
        let mut rows = Vec::with_capacity(events.len());
        for e in events {
            let record = e.record();
            for account in recipients(e) {
                let mut record = record.clone();
                record["recipientAccountId"] = serde_json::json!(account);
                let text = record.to_string();
                seq += 1;
                link = key.link(&link, seq, &text);
                rows.push(Row {
                    seq,
                    e,
                    account,
                    text,
                    link: link.clone(),
                });
            }
        }
        const COLS: usize = 14;
        // Sixteen rows per statement: sqlx's SQLite binding looks each
        // parameter up by name, which costs the square of their number.
        for chunk in rows.chunks(16) {
            let values = (0..chunk.len())
                .map(|i| {
                    let p = (1..=COLS)
                        .map(|c| format!("${}", i * COLS + c))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("({p})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO audit_events (seq, event_time, account_id, region, event_id, \
                 event_name, event_source, username, access_key_id, read_only, resource_type, \
                 resource_name, record, link) VALUES {values}"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                let resource = r.e.resources.first();
                q = q
                    .bind(r.seq)
                    .bind(r.e.time_ms)
                    .bind(r.account)
                    .bind(&r.e.region)
                    .bind(&r.e.id)
                    .bind(&r.e.name)
                    .bind(r.e.source)
                    .bind(r.e.identity.username())
                    .bind(r.e.identity.access_key_id.as_deref())
                    .bind(i64::from(r.e.read_only))
                    .bind(resource.map(|x| x.kind.as_str()))
                    .bind(resource.map(|x| x.name.as_str()))
                    .bind(&r.text)
                    .bind(&r.link);
            }
            q.execute(&mut **tx).await?;
        }
        sqlx::query("UPDATE audit_chain SET seq = $1, link = $2 WHERE id = 1")
            .bind(seq)
            .bind(&link)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The chain's head.
    pub async fn audit_head(&self) -> Result<AuditHead> {
        let r =
            sqlx::query("SELECT seq, link, pruned_seq, pruned_link FROM audit_chain WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(AuditHead {
            seq: r.try_get(0)?,
            link: r.try_get(1)?,
            pruned_seq: r.try_get(2)?,
            pruned_link: r.try_get(3)?,
        })
    }

    /// Up to `limit` events numbered above `after`, in order (verify,
    /// export, streaming).
    pub async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        )))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_of).collect()
    }

    /// The first event at or after `time` (ms), for exports by time.
    pub async fn audit_seq_at(&self, time: i64) -> Result<Option<i64>> {
        let r = sqlx::query("SELECT MIN(seq) FROM audit_events WHERE event_time >= $1")
            .bind(time)
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get(0)?)
    }

    /// One page of LookupEvents, newest first.
    pub async fn lookup_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>> {
        // Newest first by the time each call was made (a read's event may be
        // written after a later change's), then by number.
        let mut sql = format!(
            "SELECT {COLUMNS} FROM audit_events WHERE account_id = $1 AND region = $2 \
             AND (event_time < $3 OR (event_time = $3 AND seq < $4))"
        );
        // The attribute's column, and its value as bound.
        enum Value<'a> {
            Text(&'a str),
            Flag(i64),
        }
        let filter = q.attribute.as_ref().map(|a| match a {
            AuditAttribute::EventName(v) => ("event_name", Value::Text(v)),
            AuditAttribute::Username(v) => ("username", Value::Text(v)),
            AuditAttribute::ResourceName(v) => ("resource_name", Value::Text(v)),
            AuditAttribute::ResourceType(v) => ("resource_type", Value::Text(v)),
            AuditAttribute::AccessKeyId(v) => ("access_key_id", Value::Text(v)),
            AuditAttribute::EventSource(v) => ("event_source", Value::Text(v)),
            AuditAttribute::EventId(v) => ("event_id", Value::Text(v)),
            AuditAttribute::ReadOnly(b) => ("read_only", Value::Flag(i64::from(*b))),
        });
        let mut n = 4;
        if let Some((c, _)) = &filter {
            n += 1;
            sql.push_str(&format!(" AND {c} = ${n}"));
        }
        if q.start.is_some() {
            n += 1;
            sql.push_str(&format!(" AND event_time >= ${n}"));
        }
        if q.end.is_some() {
            n += 1;
            sql.push_str(&format!(" AND event_time <= ${n}"));
        }
        n += 1;
        sql.push_str(&format!(" ORDER BY event_time DESC, seq DESC LIMIT ${n}"));
        let (before_time, before_seq) = q.before.unwrap_or((i64::MAX, i64::MAX));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&q.account)
            .bind(&q.region)
            .bind(before_time)
            .bind(before_seq);
        query = match filter {
            Some((_, Value::Text(v))) => query.bind(v),
            Some((_, Value::Flag(f))) => query.bind(f),
            None => query,
        };
        if let Some(s) = q.start {
            query = query.bind(s);
        }
        if let Some(e) = q.end {
            query = query.bind(e);
        }
        let rows = query.bind(q.limit).fetch_all(&self.pool).await?;
        rows.iter().map(row_of).collect()
    }

    /// Delete up to `limit` of the oldest events that happened before
    /// `before` (ms), moving the chain's start past them. Returns how many.
    pub async fn prune_audit(&self, before: i64, limit: i64) -> Result<u64> {
        self.retrying(|| async {
            let mut tx = self.begin_write().await?;
            let lock = match self.dialect {
                Dialect::Postgres => "SELECT pruned_seq FROM audit_chain WHERE id = 1 FOR UPDATE",
                Dialect::Sqlite => "SELECT pruned_seq FROM audit_chain WHERE id = 1",
            };
            let pruned: i64 = sqlx::query(lock).fetch_one(&mut *tx).await?.try_get(0)?;
            // The oldest events, in order, up to the first one still kept.
            let rows = sqlx::query(
                "SELECT seq, event_time, link FROM audit_events WHERE seq > $1 \
                 ORDER BY seq LIMIT $2",
            )
            .bind(pruned)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let mut last = None;
            for r in &rows {
                let (seq, time, link): (i64, i64, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                if time >= before {
                    break;
                }
                last = Some((seq, link));
            }
            let Some((seq, link)) = last else {
                return Ok(0);
            };
            let n = sqlx::query("DELETE FROM audit_events WHERE seq > $1 AND seq <= $2")
                .bind(pruned)
                .bind(seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("UPDATE audit_chain SET pruned_seq = $1, pruned_link = $2 WHERE id = 1")
                .bind(seq)
                .bind(&link)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(n)
        })
        .await
    }

    /// The key the chain's links are made with.
    pub(super) fn audit_key(&self) -> ChainKey {
        self.audit_key
            .get()
            .cloned()
            .unwrap_or_else(|| ChainKey::new([0; 32]))
    }

    /// Set the chain's key (once, from the master key, before any event).
    pub fn set_audit_key(&self, key: ChainKey) {
        let _ = self.audit_key.set(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ECR, Identity, IdentityKind};
    use crate::metadata::testing::{Engine, Fixture, on_both_engines};

    fn user_event(name: &str, account: &str) -> Event {
        let mut e = Event::new(
            ECR,
            name,
            "us-east-1",
            account,
            Identity {
                kind: IdentityKind::IamUser,
                principal_id: "AIDA1".into(),
                arn: Some(format!("arn:aws:iam::{account}:user/ci")),
                account_id: account.into(),
                access_key_id: Some("AKIA1".into()),
                user_name: Some("ci".into()),
                invoked_by: None,
            },
        );
        e.read_only = name.starts_with("Describe");
        e
    }

    async fn chain_is_gapless_and_lookups_filter(engine: Engine) {
        let f = Fixture::new(engine).await;
        let s = f.open().await;
        s.set_audit_key(ChainKey::new([1; 32]));
        let a = "111111111111";
        s.append_audit(&[
            user_event("CreateRepository", a),
            user_event("DescribeRepositories", a),
        ])
        .await
        .unwrap();
        // A cross-account call is in both histories.
        let mut cross = user_event("BatchGetImage", "222222222222");
        cross.identity.account_id = a.into();
        s.append_audit(&[cross]).await.unwrap();
        let head = s.audit_head().await.unwrap();
        assert_eq!(head.seq, 4);
        let rows = s.audit_after(0, 10).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let key = ChainKey::new([1; 32]);
        let mut prev = crate::audit::GENESIS.to_string();
        for r in &rows {
            assert_eq!(r.link, key.link(&prev, r.seq, &r.record));
            prev = r.link.clone();
        }
        assert_eq!(prev, head.link);
        let q = |attribute| AuditQuery {
            account: a.into(),
            region: "us-east-1".into(),
            attribute,
            start: None,
            end: None,
            before: None,
            limit: 50,
        };
        assert_eq!(s.lookup_audit(&q(None)).await.unwrap().len(), 3);
        let named = s
            .lookup_audit(&q(Some(AuditAttribute::EventName(
                "CreateRepository".into(),
            ))))
            .await
            .unwrap();
        assert_eq!(named.len(), 1);
        let ro = s
            .lookup_audit(&q(Some(AuditAttribute::ReadOnly(true))))
            .await
            .unwrap();
        assert_eq!(ro.len(), 1);
        let mut paged = q(None);
        paged.limit = 2;
        let first = s.lookup_audit(&paged).await.unwrap();
        assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 2]);
        paged.before = Some((first[1].event_time, first[1].seq));
        assert_eq!(s.lookup_audit(&paged).await.unwrap()[0].seq, 1);
        // Retention moves the start of the chain.
        let later = rows[3].event_time + 1;
        assert_eq!(s.prune_audit(later, 2).await.unwrap(), 2);
        let head = s.audit_head().await.unwrap();
        assert_eq!(
            (head.pruned_seq, head.pruned_link),
            (2, rows[1].link.clone())
        );
        assert_eq!(s.audit_after(0, 10).await.unwrap()[0].seq, 3);
    }

    on_both_engines!(chain_is_gapless_and_lookups_filter);
}
