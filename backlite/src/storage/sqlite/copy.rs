//! The copy operations of the SQLite driver (`backlite copy`): task rows whole in keyset
//! pages by id, inserted as they are unless their id is stored, and the census a copy is
//! verified by.
//!
//! A copy runs while no worker does (the command refuses otherwise), so its inserts use a
//! pooled connection in a `BEGIN IMMEDIATE` transaction of their own rather than the writer
//! thread: the busy timeout covers a writer that is still finishing.

use rusqlite::{Connection, Row, params};

use super::SqliteDriver;
use crate::BoxFuture;
use crate::error::Result;
use crate::storage::copy::{Census, CopyQueue, CopySchedule, CopyTask, MetaInserted};
use crate::task::TaskId;

/// Every column, in the order [`task`] reads them and [`INSERT`] writes them.
const COLUMNS: &str = "id, queue, state, task, attempts, run_at, created_at, priority, \
     expires_at, claimed_at, lease_until, fence, claimed_by, lease_renewed_at, \
     cancel_requested_at, last_executed_at, last_duration_us, last_error, errors, finished_at, \
     unique_key, unique_for";

fn page_sql() -> String {
    format!("SELECT {COLUMNS} FROM backlite_tasks WHERE id > ?1 ORDER BY id LIMIT ?2")
}

fn insert_sql() -> String {
    let marks: Vec<String> = (1..=22).map(|n| format!("?{n}")).collect();
    format!(
        "INSERT INTO backlite_tasks ({COLUMNS}) VALUES ({}) ON CONFLICT (id) DO NOTHING",
        marks.join(", ")
    )
}

fn task(row: &Row<'_>) -> rusqlite::Result<CopyTask> {
    let id: Vec<u8> = row.get(0)?;
    let id: [u8; 16] = id.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "a task id that is not 16 bytes".into(),
        )
    })?;
    Ok(CopyTask {
        id: TaskId::from_bytes(id),
        queue: row.get(1)?,
        state: row.get(2)?,
        payload: row.get(3)?,
        attempts: row.get(4)?,
        run_at: row.get(5)?,
        created_at: row.get(6)?,
        priority: row.get(7)?,
        expires_at: row.get(8)?,
        claimed_at: row.get(9)?,
        lease_until: row.get(10)?,
        fence: row.get(11)?,
        claimed_by: row.get(12)?,
        lease_renewed_at: row.get(13)?,
        cancel_requested_at: row.get(14)?,
        last_executed_at: row.get(15)?,
        last_duration_us: row.get(16)?,
        last_error: row.get(17)?,
        errors: row.get(18)?,
        finished_at: row.get(19)?,
        unique_key: row.get(20)?,
        unique_for: row.get(21)?,
    })
}

fn tasks_page(
    conn: &Connection,
    after: Option<TaskId>,
    limit: usize,
) -> rusqlite::Result<Vec<CopyTask>> {
    // Every 16-byte id sorts after the empty blob.
    let after: Vec<u8> = after.map_or_else(Vec::new, |id| id.as_bytes().to_vec());
    let mut page = conn.prepare_cached(&page_sql())?;
    let rows = page.query_map(
        params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
        task,
    )?;
    rows.collect()
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction of `conn`, rolled back when it fails.
fn immediate<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match f(conn) {
        Ok(value) => {
            conn.execute_batch("COMMIT")?;
            Ok(value)
        }
        Err(e) => {
            // The transaction's own error is the one to report.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn insert_tasks(conn: &Connection, tasks: &[CopyTask]) -> rusqlite::Result<u64> {
    immediate(conn, |conn| {
        let mut insert = conn.prepare_cached(&insert_sql())?;
        let mut inserted = 0;
        for t in tasks {
            inserted += insert.execute(params![
                &t.id.as_bytes()[..],
                t.queue,
                t.state,
                t.payload,
                t.attempts,
                t.run_at,
                t.created_at,
                t.priority,
                t.expires_at,
                t.claimed_at,
                t.lease_until,
                t.fence,
                t.claimed_by,
                t.lease_renewed_at,
                t.cancel_requested_at,
                t.last_executed_at,
                t.last_duration_us,
                t.last_error,
                t.errors,
                t.finished_at,
                t.unique_key,
                t.unique_for,
            ])? as u64;
        }
        Ok(inserted)
    })
}

fn insert_meta(
    conn: &Connection,
    schedules: &[CopySchedule],
    queues: &[CopyQueue],
) -> rusqlite::Result<MetaInserted> {
    immediate(conn, |conn| {
        let mut inserted = MetaInserted::default();
        let mut schedule = conn.prepare_cached(
            "INSERT INTO backlite_schedules (name, definition, next_run_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO NOTHING",
        )?;
        for s in schedules {
            inserted.schedules +=
                schedule.execute(params![s.name, s.definition, s.next_run_at])? as u64;
        }
        let mut queue = conn.prepare_cached(
            "INSERT INTO backlite_queues (name, paused_at) VALUES (?1, ?2) \
             ON CONFLICT (name) DO NOTHING",
        )?;
        for q in queues {
            inserted.queues += queue.execute(params![q.name, q.paused_at])? as u64;
        }
        Ok(inserted)
    })
}

fn census(conn: &Connection) -> rusqlite::Result<Census> {
    let mut counts = conn.prepare_cached(
        "SELECT queue, state, COUNT(*) FROM backlite_tasks GROUP BY queue, state",
    )?;
    let mut tasks = counts
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?
        .collect::<rusqlite::Result<Vec<(String, i16, u64)>>>()?;
    let mut schedules = conn
        .prepare_cached("SELECT name, definition, next_run_at FROM backlite_schedules")?
        .query_map([], |r| {
            Ok(CopySchedule {
                name: r.get(0)?,
                definition: r.get(1)?,
                next_run_at: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut queues = conn
        .prepare_cached("SELECT name, paused_at FROM backlite_queues")?
        .query_map([], |r| {
            Ok(CopyQueue {
                name: r.get(0)?,
                paused_at: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Sorted here, not by SQL: the two backends' collations order names differently.
    tasks.sort();
    schedules.sort();
    queues.sort();
    Ok(Census {
        tasks,
        schedules,
        queues,
    })
}

impl SqliteDriver {
    pub(super) fn copy_tasks_page(
        &self,
        after: Option<TaskId>,
        limit: usize,
    ) -> BoxFuture<Result<Vec<CopyTask>>> {
        self.read(move |conn| tasks_page(conn, after, limit))
    }

    pub(super) fn copy_insert(&self, tasks: Vec<CopyTask>) -> BoxFuture<Result<u64>> {
        self.read(move |conn| insert_tasks(conn, &tasks))
    }

    pub(super) fn copy_meta(
        &self,
        schedules: Vec<CopySchedule>,
        queues: Vec<CopyQueue>,
    ) -> BoxFuture<Result<MetaInserted>> {
        self.read(move |conn| insert_meta(conn, &schedules, &queues))
    }

    pub(super) fn copy_count(&self) -> BoxFuture<Result<Census>> {
        self.read(census)
    }
}

#[cfg(test)]
crate::storage::copy_conformance::copy_conformance!(copy_file, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(false, queues))
});

#[cfg(test)]
crate::storage::copy_conformance::copy_conformance!(copy_memory, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(true, queues))
});
