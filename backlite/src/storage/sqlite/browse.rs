//! The statements that browse tasks, for the UI. Each read is one statement, so it holds its
//! read transaction (and the WAL snapshot) only for as long as it runs, and each is answered
//! from a partial index of its state: browsing adds no write cost to the queues.

#![cfg_attr(not(feature = "ui"), allow(dead_code, reason = "only the UI browses"))]

use rusqlite::{Connection, OptionalExtension, Row};

use super::sql::{queues_of, task_id};
use crate::storage::browse::{count, micros, sql_int};
use crate::storage::{CompletedRecord, PREVIEW_BYTES, Page, TaskRecord, TaskState};
use crate::task::TaskId;

/// The columns of a [`TaskRecord`], with `payload` the expression that reads the payload.
fn task_columns(payload: &str) -> String {
    format!(
        "t.id, t.queue, {payload}, length(t.task), t.attempts, t.run_at, t.created_at, \
         t.claimed_at, t.last_executed_at, t.last_duration_us, t.last_error, \
         t.lease_renewed_at"
    )
}

/// Lists read a payload's first `?3` bytes only.
const PREVIEW: &str = "substr(t.task, 1, ?3)";

/// Running tasks, longest-claimed first, from the index of running rows.
fn running_sql() -> String {
    format!(
        "SELECT {} FROM backlite_tasks t WHERE t.state = 1 \
         ORDER BY t.claimed_at, t.rowid LIMIT ?1 OFFSET ?2",
        task_columns(PREVIEW)
    )
}

/// Waiting tasks in the due index's order (priority descending, `run_at`, then rowid)
/// across all queues: the claim order, not yet due tasks included. The due index is per
/// queue, so a single `ORDER BY` would sort every waiting task. Instead the
/// recursive `queues` finds each queue name with one index seek, each queue contributes its
/// first `offset + limit` tasks straight from the index, and only those are merged.
fn upcoming_sql() -> String {
    format!(
        "{walk} \
         SELECT {} FROM queues JOIN backlite_tasks t ON t.rowid IN ( \
             SELECT rowid FROM backlite_tasks \
             WHERE state = 0 AND queue = queues.name \
             ORDER BY priority DESC, run_at, rowid LIMIT ?1 + ?2) \
         ORDER BY t.priority DESC, t.run_at, t.rowid LIMIT ?1 OFFSET ?2",
        task_columns(PREVIEW),
        walk = queues_of("state = 0"),
    )
}

pub(crate) fn task_list(
    conn: &Connection,
    state: TaskState,
    page: Page,
) -> rusqlite::Result<Vec<TaskRecord>> {
    let sql = match state {
        TaskState::Running => running_sql(),
        TaskState::Upcoming => upcoming_sql(),
    };
    let mut list = conn.prepare_cached(&sql)?;
    let rows = list.query_map(
        (
            sql_int(page.limit),
            sql_int(page.offset),
            PREVIEW_BYTES as i64,
        ),
        task_record,
    )?;
    rows.collect()
}

pub(crate) fn task_get(conn: &Connection, id: TaskId) -> rusqlite::Result<Option<TaskRecord>> {
    let sql = format!(
        "SELECT {} FROM backlite_tasks t WHERE t.id = ?1 AND t.state <= 1",
        task_columns("t.task")
    );
    conn.prepare_cached(&sql)?
        .query_row([&id.as_bytes()[..]], task_record)
        .optional()
}

/// The waiting tasks of one queue, whole, in claim order: a range of the due index.
fn waiting_sql() -> String {
    format!(
        "SELECT {} FROM backlite_tasks t WHERE t.state = 0 AND t.queue = ?1 \
         ORDER BY t.priority DESC, t.run_at, t.rowid",
        task_columns("t.task")
    )
}

pub(crate) fn task_list_waiting(
    conn: &Connection,
    queue: &str,
) -> rusqlite::Result<Vec<TaskRecord>> {
    let mut list = conn.prepare_cached(&waiting_sql())?;
    let rows = list.query_map([queue], task_record)?;
    rows.collect()
}

fn task_record(row: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        id: task_id(row.get_ref(0)?.as_blob()?)?,
        queue: row.get(1)?,
        payload: row.get(2)?,
        payload_len: count(row.get(3)?),
        attempts: row.get(4)?,
        run_at: row.get(5)?,
        created_at: row.get(6)?,
        claimed_at: row.get(7)?,
        last_executed_at: row.get(8)?,
        last_duration: row.get::<_, Option<i64>>(9)?.map(micros),
        last_error: row.get(10)?,
        lease_renewed_at: row.get(11)?,
    })
}

/// The columns of a [`CompletedRecord`], with `payload` as in [`task_columns`]: an ended
/// task's end is its last time.
fn completed_columns(payload: &str) -> String {
    format!(
        "t.id, t.queue, {payload}, length(t.task), t.attempts, t.state = 2, \
         COALESCE(t.last_duration_us, 0), t.last_error, t.created_at, t.finished_at, \
         t.expires_at"
    )
}

/// Ended tasks that succeeded (`?4`), or that did not (failed, cancelled), most recently
/// ended first. The ended index is per queue and state: each queue (found by a walk of that
/// index, one seek per queue) gives, for each state listed, its first `offset + limit` rows
/// read backwards from that range, and only those are merged.
fn completed_sql() -> String {
    let columns = completed_columns(PREVIEW);
    let arm = |state: &str| {
        format!(
            "SELECT {columns}, t.rowid AS seq FROM queues JOIN backlite_tasks t ON t.rowid IN ( \
                 SELECT rowid FROM backlite_tasks \
                 WHERE state >= 2 AND queue = queues.name AND state = {state} \
                 ORDER BY finished_at DESC, rowid DESC LIMIT ?1 + ?2)"
        )
    };
    format!(
        "{walk} \
         {} UNION ALL {} UNION ALL {} \
         ORDER BY 10 DESC, seq DESC LIMIT ?1 OFFSET ?2",
        arm("CASE WHEN ?4 THEN 2 END"),
        arm("CASE WHEN ?4 THEN NULL ELSE 3 END"),
        arm("CASE WHEN ?4 THEN NULL ELSE 4 END"),
        walk = queues_of("state >= 2"),
    )
}

pub(crate) fn completed_list(
    conn: &Connection,
    succeeded: bool,
    page: Page,
) -> rusqlite::Result<Vec<CompletedRecord>> {
    let mut list = conn.prepare_cached(&completed_sql())?;
    let rows = list.query_map(
        (
            sql_int(page.limit),
            sql_int(page.offset),
            PREVIEW_BYTES as i64,
            succeeded,
        ),
        completed_record,
    )?;
    rows.collect()
}

pub(crate) fn completed_get(
    conn: &Connection,
    id: TaskId,
) -> rusqlite::Result<Option<CompletedRecord>> {
    let sql = format!(
        "SELECT {} FROM backlite_tasks t WHERE t.id = ?1 AND t.state >= 2",
        completed_columns("t.task")
    );
    conn.prepare_cached(&sql)?
        .query_row([&id.as_bytes()[..]], completed_record)
        .optional()
}

fn completed_record(row: &Row<'_>) -> rusqlite::Result<CompletedRecord> {
    Ok(CompletedRecord {
        id: task_id(row.get_ref(0)?.as_blob()?)?,
        queue: row.get(1)?,
        payload: row.get(2)?,
        payload_len: row.get::<_, Option<i64>>(3)?.map_or(0, count),
        attempts: row.get(4)?,
        succeeded: row.get(5)?,
        last_duration: micros(row.get(6)?),
        error: row.get(7)?,
        created_at: row.get(8)?,
        last_executed_at: row.get(9)?,
        expires_at: row.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::plans::plan;

    /// Every list reads an index in order: no page costs a scan of a table or a sort of it.
    #[test]
    fn lists_read_indexes_and_never_scan_a_table() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn, 0)
            .unwrap()
            .unwrap();
        let running = plan(&conn, &running_sql());
        assert!(running.contains("backlite_tasks_running"), "{running}");
        assert!(!running.contains("TEMP B-TREE"), "{running}");

        let upcoming = plan(&conn, &upcoming_sql());
        assert!(upcoming.contains("backlite_tasks_due"), "{upcoming}");
        assert!(
            upcoming.contains("SEARCH t USING INTEGER PRIMARY KEY"),
            "{upcoming}"
        );
        let table_scan = |step: &str| step == "SCAN t" || step.starts_with("SCAN backlite_tasks");
        assert!(!upcoming.lines().any(table_scan), "{upcoming}");

        let waiting = plan(&conn, &waiting_sql());
        assert!(waiting.contains("backlite_tasks_due"), "{waiting}");
        assert!(!waiting.contains("TEMP B-TREE"), "{waiting}");

        // Each state's arm reads the ended index; only the queues' first pages are sorted.
        let completed = plan(&conn, &completed_sql());
        assert!(
            completed.matches("backlite_tasks_ended").count() >= 3,
            "{completed}"
        );
        assert!(!completed.lines().any(table_scan), "{completed}");
    }

    /// Every page's header counts tasks per queue: from indexes, never from the tables' rows.
    #[test]
    fn counts_read_indexes_only() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn, 0)
            .unwrap()
            .unwrap();
        let counts = plan(&conn, super::super::sql::QUEUE_STATS_SQL);
        for step in counts
            .lines()
            .filter(|s| s.starts_with("SCAN") || s.starts_with("SEARCH"))
        {
            assert!(step.contains(" INDEX "), "{step} in\n{counts}");
        }
        for index in [
            "backlite_tasks_due",
            "backlite_tasks_running",
            "COVERING INDEX backlite_tasks_ended",
        ] {
            assert!(counts.contains(index), "{index} in\n{counts}");
        }
    }
}

#[cfg(test)]
crate::storage::browse_conformance::browse_conformance!(conformance_file, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(false, queues))
});

#[cfg(test)]
crate::storage::browse_conformance::browse_conformance!(conformance_memory, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(true, queues))
});
