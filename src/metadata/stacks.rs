//! The CloudFormation stack store: stacks (status, and a JSON document the
//! `stacks` service owns: template, parameters, resources, outputs), their
//! events, and change sets. A stack's live name is claimed in `stack_names`
//! so that two nodes cannot create the same stack; a status change names the
//! statuses it may come from, so two operations on one stack cannot both
//! start. The rules are `stacks::Stacks`'s; this module stores what it is given.

use sqlx::Row;

use super::{MetadataStore, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackRow {
    pub stack_id: String,
    pub account_id: String,
    pub name: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
    pub deleted_at: Option<i64>,
    /// Until when the operation in progress holds the stack (a node that
    /// stopped mid-operation leaves it to expire).
    pub lease_until: Option<i64>,
    /// The service's document (JSON).
    pub doc: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackEventRow {
    pub seq: i64,
    pub event_id: String,
    pub logical_id: String,
    pub physical_id: Option<String>,
    pub resource_type: String,
    pub status: String,
    pub reason: Option<String>,
    pub timestamp: i64,
    pub properties: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeSetRow {
    pub change_set_id: String,
    pub stack_id: String,
    pub name: String,
    pub status: String,
    pub execution_status: String,
    pub status_reason: Option<String>,
    pub created_at: i64,
    /// The service's document (JSON).
    pub doc: String,
}

const STACK_COLUMNS: &str = "stack_id, account_id, name, status, status_reason, created_at, \
     updated_at, deleted_at, lease_until, doc";
const EVENT_COLUMNS: &str =
    "seq, event_id, logical_id, physical_id, resource_type, status, reason, timestamp, properties";
const CHANGE_SET_COLUMNS: &str = "change_set_id, stack_id, name, status, execution_status, \
     status_reason, created_at, doc";

fn stack_row(r: &sqlx::any::AnyRow) -> Result<StackRow> {
    Ok(StackRow {
        stack_id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        name: r.try_get(2)?,
        status: r.try_get(3)?,
        status_reason: r.try_get(4)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
        deleted_at: r.try_get(7)?,
        lease_until: r.try_get(8)?,
        doc: r.try_get(9)?,
    })
}

fn event_row(r: &sqlx::any::AnyRow) -> Result<StackEventRow> {
    Ok(StackEventRow {
        seq: r.try_get(0)?,
        event_id: r.try_get(1)?,
        logical_id: r.try_get(2)?,
        physical_id: r.try_get(3)?,
        resource_type: r.try_get(4)?,
        status: r.try_get(5)?,
        reason: r.try_get(6)?,
        timestamp: r.try_get(7)?,
        properties: r.try_get(8)?,
    })
}

fn change_set_row(r: &sqlx::any::AnyRow) -> Result<ChangeSetRow> {
    Ok(ChangeSetRow {
        change_set_id: r.try_get(0)?,
        stack_id: r.try_get(1)?,
        name: r.try_get(2)?,
        status: r.try_get(3)?,
        execution_status: r.try_get(4)?,
        status_reason: r.try_get(5)?,
        created_at: r.try_get(6)?,
        doc: r.try_get(7)?,
    })
}

async fn insert_events(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    stack_id: &str,
    events: &[StackEventRow],
) -> Result<()> {
    for e in events {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO stack_events (stack_id, {EVENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )))
        .bind(stack_id)
        .bind(e.seq)
        .bind(&e.event_id)
        .bind(&e.logical_id)
        .bind(&e.physical_id)
        .bind(&e.resource_type)
        .bind(&e.status)
        .bind(&e.reason)
        .bind(e.timestamp)
        .bind(&e.properties)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl MetadataStore {
    /// Store a new stack with its first events, claiming its name in its
    /// account: false (and nothing stored) when a live stack has the name.
    pub async fn stack_create(&self, row: &StackRow, events: &[StackEventRow]) -> Result<bool> {
        self.retrying(|| self.stack_create_once(row, events)).await
    }

    async fn stack_create_once(&self, row: &StackRow, events: &[StackEventRow]) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "INSERT INTO stack_names (account_id, name, stack_id) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id, name) DO NOTHING",
        )
        .bind(&row.account_id)
        .bind(&row.name)
        .bind(&row.stack_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !claimed {
            return Ok(false);
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO stacks ({STACK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )))
        .bind(&row.stack_id)
        .bind(&row.account_id)
        .bind(&row.name)
        .bind(&row.status)
        .bind(&row.status_reason)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(row.deleted_at)
        .bind(row.lease_until)
        .bind(&row.doc)
        .execute(&mut *tx)
        .await?;
        insert_events(&mut tx, &row.stack_id, events).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// The live stack named `name` in `account`.
    pub async fn stack_by_name(&self, account: &str, name: &str) -> Result<Option<StackRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM stacks s JOIN stack_names n ON n.stack_id = s.stack_id \
             WHERE n.account_id = $1 AND n.name = $2",
            STACK_COLUMNS
                .split(", ")
                .map(|c| format!("s.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(account)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stack_row).transpose()
    }

    pub async fn stack_by_id(&self, stack_id: &str) -> Result<Option<StackRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STACK_COLUMNS} FROM stacks WHERE stack_id = $1"
        )))
        .bind(stack_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stack_row).transpose()
    }

    /// The stacks of `account` (deleted ones too when `with_deleted`, those
    /// deleted after `deleted_since`), newest first.
    pub async fn stacks_of(
        &self,
        account: &str,
        with_deleted: bool,
        deleted_since: i64,
    ) -> Result<Vec<StackRow>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STACK_COLUMNS} FROM stacks WHERE account_id = $1 \
             AND (deleted_at IS NULL OR ($2 = 1 AND deleted_at >= $3)) \
             ORDER BY created_at DESC, stack_id"
        )))
        .bind(account)
        .bind(with_deleted as i64)
        .bind(deleted_since)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(stack_row)
        .collect()
    }

    /// Write a stack's status, reason, times, lease and document, with new
    /// events, if its status is one of `expect` (any, when empty): false
    /// when another operation changed it first. A row with `deleted_at`
    /// set gives its name up.
    pub async fn stack_write(
        &self,
        row: &StackRow,
        expect: &[&str],
        events: &[StackEventRow],
    ) -> Result<bool> {
        self.retrying(|| self.stack_write_once(row, expect, events))
            .await
    }

    async fn stack_write_once(
        &self,
        row: &StackRow,
        expect: &[&str],
        events: &[StackEventRow],
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT status FROM stacks WHERE stack_id = $1")
                .bind(&row.stack_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Ok(false);
        };
        if !expect.is_empty() && !expect.contains(&current.as_str()) {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE stacks SET status = $2, status_reason = $3, updated_at = $4, \
             deleted_at = $5, lease_until = $6, doc = $7 WHERE stack_id = $1 AND status = $8",
        )
        .bind(&row.stack_id)
        .bind(&row.status)
        .bind(&row.status_reason)
        .bind(row.updated_at)
        .bind(row.deleted_at)
        .bind(row.lease_until)
        .bind(&row.doc)
        .bind(&current)
        .execute(&mut *tx)
        .await?;
        insert_events(&mut tx, &row.stack_id, events).await?;
        if row.deleted_at.is_some() {
            sqlx::query("DELETE FROM stack_names WHERE stack_id = $1")
                .bind(&row.stack_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM change_sets WHERE stack_id = $1")
                .bind(&row.stack_id)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(true)
    }

    /// Events of a stack with `seq` below `before`, newest first, at most `limit`.
    pub async fn stack_events(
        &self,
        stack_id: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<StackEventRow>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM stack_events WHERE stack_id = $1 AND seq < $2 \
             ORDER BY seq DESC LIMIT $3"
        )))
        .bind(stack_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_row)
        .collect()
    }

    /// Store a change set (and the stack's row when it is new, in
    /// `REVIEW_IN_PROGRESS`): false when the stack already has a change set
    /// of that name, or the new stack's name is taken.
    pub async fn change_set_create(
        &self,
        cs: &ChangeSetRow,
        new_stack: Option<(&StackRow, &[StackEventRow])>,
    ) -> Result<bool> {
        self.retrying(|| self.change_set_create_once(cs, new_stack))
            .await
    }

    async fn change_set_create_once(
        &self,
        cs: &ChangeSetRow,
        new_stack: Option<(&StackRow, &[StackEventRow])>,
    ) -> Result<bool> {
        if let Some((row, events)) = new_stack
            && !self.stack_create(row, events).await?
        {
            return Ok(false);
        }
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO change_sets ({CHANGE_SET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (stack_id, name) DO NOTHING"
        )))
        .bind(&cs.change_set_id)
        .bind(&cs.stack_id)
        .bind(&cs.name)
        .bind(&cs.status)
        .bind(&cs.execution_status)
        .bind(&cs.status_reason)
        .bind(cs.created_at)
        .bind(&cs.doc)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        self.commit_if(tx, inserted).await?;
        Ok(inserted)
    }

    /// A change set by its ARN.
    pub async fn change_set(&self, change_set_id: &str) -> Result<Option<ChangeSetRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHANGE_SET_COLUMNS} FROM change_sets WHERE change_set_id = $1"
        )))
        .bind(change_set_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(change_set_row).transpose()
    }

    /// The change sets of a stack, oldest first.
    pub async fn change_sets_of(&self, stack_id: &str) -> Result<Vec<ChangeSetRow>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHANGE_SET_COLUMNS} FROM change_sets WHERE stack_id = $1 \
             ORDER BY created_at, name"
        )))
        .bind(stack_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(change_set_row)
        .collect()
    }

    pub async fn change_set_delete(&self, change_set_id: &str) -> Result<bool> {
        Ok(
            sqlx::query("DELETE FROM change_sets WHERE change_set_id = $1")
                .bind(change_set_id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    /// A change set was executed: it is kept as `EXECUTE_COMPLETE` and every
    /// other change set of its stack is removed.
    pub async fn change_set_executed(&self, stack_id: &str, change_set_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM change_sets WHERE stack_id = $1 AND change_set_id <> $2")
            .bind(stack_id)
            .bind(change_set_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE change_sets SET execution_status = 'EXECUTE_COMPLETE' WHERE change_set_id = $1",
        )
        .bind(change_set_id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(())
    }
}
