//! The statements that browse tasks, for the UI: each one statement, answered from an index.

use tokio_postgres::Row;

use super::{Statements, task_id, uuid};
use crate::storage::browse::{count, micros, sql_int};
use crate::storage::{CompletedRecord, PREVIEW_BYTES, Page, TaskRecord, TaskState};
use crate::task::TaskId;

type Client = deadpool_postgres::Client;
type PgResult<T> = Result<T, tokio_postgres::Error>;

const PREVIEW: i32 = PREVIEW_BYTES as i32;

pub(super) async fn task_list(
    conn: &Client,
    sql: &Statements,
    state: TaskState,
    page: Page,
) -> PgResult<Vec<TaskRecord>> {
    let text = match state {
        TaskState::Running => &sql.running,
        TaskState::Upcoming => &sql.upcoming,
    };
    let statement = conn.prepare_cached(text).await?;
    let rows = conn
        .query(
            &statement,
            &[&sql_int(page.limit), &sql_int(page.offset), &PREVIEW],
        )
        .await?;
    rows.iter().map(task_record).collect()
}

pub(super) async fn task_list_waiting(
    conn: &Client,
    sql: &Statements,
    queue: &str,
) -> PgResult<Vec<TaskRecord>> {
    let statement = conn.prepare_cached(&sql.waiting).await?;
    let rows = conn.query(&statement, &[&queue]).await?;
    rows.iter().map(task_record).collect()
}

pub(super) async fn task_get(
    conn: &Client,
    sql: &Statements,
    id: TaskId,
) -> PgResult<Option<TaskRecord>> {
    let statement = conn.prepare_cached(&sql.task_get).await?;
    let row = conn.query_opt(&statement, &[&uuid(&id)]).await?;
    row.as_ref().map(task_record).transpose()
}

fn task_record(row: &Row) -> PgResult<TaskRecord> {
    let attempts: i32 = row.try_get(4)?;
    Ok(TaskRecord {
        id: task_id(row.try_get(0)?),
        queue: row.try_get(1)?,
        payload: row.try_get(2)?,
        payload_len: count(row.try_get(3)?),
        attempts: u32::try_from(attempts).unwrap_or(0),
        run_at: row.try_get(5)?,
        created_at: row.try_get(6)?,
        claimed_at: row.try_get(7)?,
        last_executed_at: row.try_get(8)?,
        last_duration: row.try_get::<_, Option<i64>>(9)?.map(micros),
        last_error: row.try_get(10)?,
        lease_renewed_at: row.try_get(11)?,
    })
}

pub(super) async fn completed_list(
    conn: &Client,
    sql: &Statements,
    succeeded: bool,
    page: Page,
) -> PgResult<Vec<CompletedRecord>> {
    let statement = conn.prepare_cached(&sql.completed_list).await?;
    let rows = conn
        .query(
            &statement,
            &[
                &sql_int(page.limit),
                &sql_int(page.offset),
                &PREVIEW,
                &succeeded,
            ],
        )
        .await?;
    rows.iter().map(completed_record).collect()
}

pub(super) async fn completed_get(
    conn: &Client,
    sql: &Statements,
    id: TaskId,
) -> PgResult<Option<CompletedRecord>> {
    let statement = conn.prepare_cached(&sql.completed_get).await?;
    let row = conn.query_opt(&statement, &[&uuid(&id)]).await?;
    row.as_ref().map(completed_record).transpose()
}

fn completed_record(row: &Row) -> PgResult<CompletedRecord> {
    let attempts: i32 = row.try_get(4)?;
    Ok(CompletedRecord {
        id: task_id(row.try_get(0)?),
        queue: row.try_get(1)?,
        payload: row.try_get(2)?,
        payload_len: count(row.try_get(3)?),
        attempts: u32::try_from(attempts).unwrap_or(0),
        succeeded: row.try_get(5)?,
        last_duration: micros(row.try_get(6)?),
        error: row.try_get(7)?,
        created_at: row.try_get(8)?,
        last_executed_at: row.try_get(9)?,
        expires_at: row.try_get(10)?,
    })
}
