//! The durable job queue: background work that any node may do and one node
//! does at a time (see `crate::jobs` for the kinds and the worker).
//!
//! A job is a row. One-shot jobs are enqueued (often inside the transaction
//! of the request that asks for them) and deleted when they succeed;
//! periodic jobs are one row per kind, rescheduled after each run. A node
//! claims a due job by leasing it (`SKIP LOCKED` on PostgreSQL, the write
//! lock on SQLite) and renews the lease while it works; a job whose lease
//! lapsed — its node died — is due again. `(kind, dedupe)` is unique, so
//! asking twice for the same work queues it once.

use sqlx::Row;

use super::{Dialect, MetadataStore, Result, now_millis};

/// A job to enqueue.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub kind: String,
    /// Work already queued with the same kind and key is not queued again.
    pub dedupe: String,
    /// The kind's own description of the work (JSON).
    pub payload: String,
    /// Not before this instant (epoch ms).
    pub run_at: i64,
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub dedupe: String,
    pub payload: String,
    /// `queued`, `running` or `failed` (given up after its attempts).
    pub state: String,
    pub run_at: i64,
    /// Attempts started (counting the one running).
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_until: i64,
    pub last_error: Option<String>,
    pub last_started_at: i64,
    pub last_finished_at: i64,
    /// Periodic jobs: the period in ms; one-shot jobs 0.
    pub every_ms: i64,
    pub created_at: i64,
}

const COLUMNS: &str = "id, kind, dedupe, payload, state, run_at, attempts, lease_owner, lease_until, \
     last_error, last_started_at, last_finished_at, every_ms, created_at";

fn job_row(r: &sqlx::any::AnyRow) -> Result<JobRow> {
    Ok(JobRow {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        dedupe: r.try_get(2)?,
        payload: r.try_get(3)?,
        state: r.try_get(4)?,
        run_at: r.try_get(5)?,
        attempts: r.try_get(6)?,
        lease_owner: r.try_get(7)?,
        lease_until: r.try_get(8)?,
        last_error: r.try_get(9)?,
        last_started_at: r.try_get(10)?,
        last_finished_at: r.try_get(11)?,
        every_ms: r.try_get(12)?,
        created_at: r.try_get(13)?,
    })
}

/// Insert `job` in transaction `tx` unless the same work is queued or
/// running already; the same work that failed for good is queued again
/// (asking again is how a given-up job is retried). Returns whether it was
/// queued now.
pub(super) async fn insert_job(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    job: &NewJob,
    every_ms: i64,
) -> Result<bool> {
    let res = sqlx::query(
        "INSERT INTO jobs (id, kind, dedupe, payload, state, run_at, attempts, lease_until, \
         last_started_at, last_finished_at, every_ms, created_at) \
         VALUES ($1, $2, $3, $4, 'queued', $5, 0, 0, 0, 0, $6, $7) \
         ON CONFLICT (kind, dedupe) DO UPDATE SET state = 'queued', attempts = 0, \
         run_at = excluded.run_at, payload = excluded.payload, last_error = NULL \
         WHERE jobs.state = 'failed'",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(&job.kind)
    .bind(&job.dedupe)
    .bind(&job.payload)
    .bind(job.run_at)
    .bind(every_ms)
    .bind(now_millis())
    .execute(&mut **tx)
    .await?;
    Ok(res.rows_affected() > 0)
}

impl MetadataStore {
    /// Queue a one-shot job (unless the same work is queued). Returns whether
    /// it was queued now.
    pub async fn enqueue_job(&self, job: &NewJob) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let queued = insert_job(&mut tx, job, 0).await?;
        tx.commit().await?;
        Ok(queued)
    }

    /// Make sure the periodic job `kind` exists, every `every_ms`. A changed
    /// period takes effect (the next run comes no later than one new period
    /// from now); its schedule and history are otherwise kept.
    pub async fn ensure_periodic_job(&self, kind: &str, every_ms: i64) -> Result<()> {
        let now = now_millis();
        let mut tx = self.begin_write().await?;
        let job = NewJob {
            kind: kind.to_string(),
            dedupe: String::new(),
            payload: String::new(),
            run_at: now,
        };
        if !insert_job(&mut tx, &job, every_ms).await? {
            sqlx::query(
                "UPDATE jobs SET every_ms = $1, \
                 run_at = CASE WHEN run_at > $2 THEN $2 ELSE run_at END, \
                 state = CASE WHEN state = 'failed' THEN 'queued' ELSE state END \
                 WHERE kind = $3 AND dedupe = ''",
            )
            .bind(every_ms)
            .bind(now + every_ms)
            .bind(kind)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Lease the next due job (queued and due, or running with a lapsed
    /// lease) to `owner` until `lease_until`. At most one node holds a job.
    pub async fn claim_job(&self, owner: &str, lease_until: i64) -> Result<Option<JobRow>> {
        self.retrying(|| self.claim_job_once(owner, lease_until))
            .await
    }

    async fn claim_job_once(&self, owner: &str, lease_until: i64) -> Result<Option<JobRow>> {
        let now = now_millis();
        let lock = match self.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let mut tx = self.begin_write().await?;
        // Only constants are spliced in.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs \
             WHERE (state = 'queued' AND run_at <= $1) OR (state = 'running' AND lease_until < $1) \
             ORDER BY run_at LIMIT 1{lock}"
        )))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut job = job_row(&row)?;
        sqlx::query(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, last_started_at = $3 WHERE id = $4",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(&job.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        job.state = "running".into();
        job.lease_owner = Some(owner.to_string());
        job.lease_until = lease_until;
        job.attempts += 1;
        job.last_started_at = now;
        Ok(Some(job))
    }

    /// Extend `owner`'s lease of job `id`; false if it no longer holds it.
    pub async fn renew_job(&self, id: &str, owner: &str, lease_until: i64) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(lease_until)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Job `id`, run by `owner`, succeeded: a one-shot job is removed, a
    /// periodic one is due again one period later.
    pub async fn finish_job(&self, id: &str, owner: &str) -> Result<()> {
        let now = now_millis();
        sqlx::query(
            "DELETE FROM jobs WHERE id = $1 AND lease_owner = $2 AND state = 'running' AND every_ms = 0",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = $1 + every_ms, attempts = 0, \
             lease_owner = NULL, lease_until = 0, last_error = NULL, last_finished_at = $1 \
             WHERE id = $2 AND lease_owner = $3 AND state = 'running' AND every_ms > 0",
        )
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Job `id`, run by `owner`, failed with `error`: it runs again at
    /// `retry_at`, or — a one-shot job out of attempts — stays `failed` for
    /// an operator to see. A periodic job never gives up.
    pub async fn fail_job(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<()> {
        let now = now_millis();
        let (state, run_at) = match retry_at {
            Some(t) => ("queued", t),
            None => ("failed", now),
        };
        sqlx::query(
            "UPDATE jobs SET state = CASE WHEN every_ms > 0 THEN 'queued' ELSE $1 END, \
             run_at = CASE WHEN every_ms > 0 AND $2 > $3 + every_ms THEN $3 + every_ms ELSE $2 END, \
             lease_owner = NULL, lease_until = 0, last_error = $4, last_finished_at = $3 \
             WHERE id = $5 AND lease_owner = $6 AND state = 'running'",
        )
        .bind(state)
        .bind(run_at)
        .bind(now)
        .bind(error)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every job, periodic ones first, then by when they run.
    /// The state of the one-shot job `kind`/`dedupe`, if it is in the queue.
    pub async fn job_state(&self, kind: &str, dedupe: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT state FROM jobs WHERE kind = $1 AND dedupe = $2")
            .bind(kind)
            .bind(dedupe)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn list_jobs(&self) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs ORDER BY every_ms = 0, run_at, id LIMIT 10000"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_row).collect()
    }

    /// Job counts by (kind, state).
    pub async fn count_jobs(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Queue failed job `id` again, now. Returns whether there was one.
    pub async fn retry_job(&self, id: &str) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = $1, attempts = 0 WHERE id = $2 AND state = 'failed'",
        )
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }
}
