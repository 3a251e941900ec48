//! The statements that inspect tasks: one task whole, a page of a filtered list, and the
//! facts that explain where a task is. Each list page is one statement that walks the index
//! its order follows from the cursor on (keyset paging), so a deep page costs what the first
//! one does.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row};

use super::sql::{queues_of, status_of, task_id};
use crate::storage::browse::{count, micros};
use crate::storage::inspect::{Keyset, ListKind, ProcessRecord};
use crate::storage::{Facts, InfoRecord, ListQuery, Millis, SummaryRecord};
use crate::task::TaskId;

pub(super) const TASK_INFO: &str = "SELECT t.id, t.queue, t.task, t.attempts, t.created_at, t.run_at, \
     t.claimed_at, t.last_executed_at, t.last_duration_us, t.errors, t.claimed_by, \
     t.lease_renewed_at, t.lease_until, t.priority, t.expires_at, t.state, t.finished_at \
     FROM backlite_tasks t WHERE t.id = ?1";

/// Every task, waiting, running or ended, is one row: one lookup of the primary key.
pub(crate) fn task_info(conn: &Connection, id: TaskId) -> rusqlite::Result<Option<InfoRecord>> {
    conn.prepare_cached(TASK_INFO)?
        .query_row([&id.as_bytes()[..]], |row| {
            let state: i64 = row.get(15)?;
            let record = InfoRecord {
                id: task_id(row.get_ref(0)?.as_blob()?)?,
                queue: row.get(1)?,
                status: status_of(state),
                payload: row.get(2)?,
                attempts: row.get(3)?,
                created_at: row.get(4)?,
                run_at: row.get(5)?,
                claimed_at: row.get(6)?,
                last_executed_at: row.get(7)?,
                last_duration: row.get::<_, Option<i64>>(8)?.map(micros),
                expires_at: None,
                errors: row.get(9)?,
                claimed_by: row.get(10)?,
                lease_renewed_at: row.get(11)?,
                lease_until: row.get(12)?,
                priority: row.get(13)?,
                pending_expires_at: row.get(14)?,
            };
            if state <= 1 {
                return Ok(record);
            }
            // An ended task: its end is its last time, its expiry its retention's.
            Ok(InfoRecord {
                run_at: None,
                claimed_at: None,
                last_executed_at: row.get(16)?,
                last_duration: Some(record.last_duration.unwrap_or_default()),
                expires_at: record.pending_expires_at,
                claimed_by: None,
                lease_renewed_at: None,
                lease_until: None,
                priority: None,
                pending_expires_at: None,
                ..record
            })
        })
        .optional()
}

// The parameters of every list statement, bound by position: ?1 limit, ?2 and ?3 the keyset
// (sort key, rowid), ?4 the queue or NULL, ?5 and ?6 the created range, ?7 and ?8 the due
// range, ?9 succeeded, ?10 cancelled, ?11 the keyset's priority (waiting lists). Each
// statement uses a prefix of them.

/// The columns of a [`SummaryRecord`] read from the tasks table, with `key` the sort key.
fn task_summary(key: &str) -> String {
    format!(
        "t.id, t.queue, t.state, t.attempts, \
         t.created_at, t.run_at, t.claimed_at, t.last_executed_at, t.last_duration_us, \
         t.last_error, {key}, t.rowid, t.priority"
    )
}

/// Waiting rows after the keyset (`?11` priority, `?2` run_at, `?3` rowid) in the waiting
/// order: priority descending, then `run_at`, then rowid.
const AFTER_WAITING: &str =
    "(t.priority < ?11 OR (t.priority = ?11 AND (t.run_at, t.rowid) > (?2, ?3)))";

const CREATED: &str = "t.created_at >= ?5 AND t.created_at < ?6";

/// Waiting tasks of one queue in claim order: the due index read in order from the cursor on.
fn waiting_one_queue_sql() -> String {
    format!(
        "SELECT {} FROM backlite_tasks t \
         WHERE t.state = 0 AND t.queue = ?4 AND t.run_at >= ?7 \
           AND t.run_at < ?8 AND {AFTER_WAITING} AND {CREATED} \
         ORDER BY t.priority DESC, t.run_at, t.rowid LIMIT ?1",
        task_summary("t.run_at")
    )
}

/// Waiting tasks of every queue in claim order. The due index is per queue: each queue
/// (found by a walk of that index, one seek per queue) gives its first `limit` rows after the
/// cursor, and only those are merged, as the UI's upcoming list does.
fn waiting_all_queues_sql() -> String {
    format!(
        "{walk} \
         SELECT {} FROM queues JOIN backlite_tasks t ON t.rowid IN ( \
             SELECT rowid FROM backlite_tasks \
             WHERE state = 0 AND queue = queues.name AND run_at >= ?7 \
               AND run_at < ?8 \
               AND (priority < ?11 OR (priority = ?11 AND (run_at, rowid) > (?2, ?3))) \
               AND created_at >= ?5 AND created_at < ?6 \
             ORDER BY priority DESC, run_at, rowid LIMIT ?1) \
         ORDER BY t.priority DESC, t.run_at, t.rowid LIMIT ?1",
        task_summary("t.run_at"),
        walk = queues_of("state = 0"),
    )
}

/// Running tasks, longest-claimed first, from the index of running rows (they are few: the
/// workers and prefetch of the live processes).
fn running_sql() -> String {
    format!(
        "SELECT {} FROM backlite_tasks t \
         WHERE t.state = 1 AND t.claimed_at >= ?2 \
           AND (t.claimed_at, t.rowid) > (?2, ?3) \
           AND (?4 IS NULL OR t.queue = ?4) AND {CREATED} AND t.run_at >= ?7 AND t.run_at < ?8 \
         ORDER BY t.claimed_at, t.rowid LIMIT ?1",
        task_summary("t.claimed_at")
    )
}

/// The ended state a list shows: `?9` succeeded, else `?10` cancelled, else failed.
const ENDED_STATE: &str = "CASE WHEN ?9 THEN 2 WHEN ?10 THEN 4 ELSE 3 END";

/// Ended rows before the keyset (`?2` finished_at, `?3` rowid), created in the range.
const BEFORE_ENDED: &str = "finished_at <= ?2 AND (finished_at, rowid) < (?2, ?3) \
     AND created_at >= ?5 AND created_at < ?6";

/// Ended tasks of one queue (`?4`) and one state, most recently ended first: that range of
/// the ended index read backwards from the cursor.
fn completed_one_queue_sql() -> String {
    format!(
        "SELECT {} FROM backlite_tasks t \
         WHERE t.state >= 2 AND t.queue = ?4 AND t.state = {ENDED_STATE} AND {BEFORE_ENDED} \
         ORDER BY t.finished_at DESC, t.rowid DESC LIMIT ?1",
        completed_summary()
    )
}

/// Ended tasks of one state in every queue, most recently ended first. The ended index is
/// per queue: each queue (found by a walk of that index, one seek per queue) gives its first
/// `limit` rows before the cursor, and only those are merged.
fn completed_all_queues_sql() -> String {
    format!(
        "{walk} \
         SELECT {} FROM queues JOIN backlite_tasks t ON t.rowid IN ( \
             SELECT rowid FROM backlite_tasks \
             WHERE state >= 2 AND queue = queues.name AND state = {ENDED_STATE} \
               AND {BEFORE_ENDED} \
             ORDER BY finished_at DESC, rowid DESC LIMIT ?1) \
         ORDER BY t.finished_at DESC, t.rowid DESC LIMIT ?1",
        completed_summary(),
        walk = queues_of("state >= 2"),
    )
}

/// The columns of an ended task's [`SummaryRecord`]: its end is its sort key.
fn completed_summary() -> &'static str {
    "t.id, t.queue, t.state, t.attempts, t.created_at, NULL, NULL, t.finished_at, \
     COALESCE(t.last_duration_us, 0), t.last_error, t.finished_at, t.rowid, NULL"
}

fn list_sql(query: &ListQuery) -> String {
    match query.kind {
        ListKind::Waiting if query.queue.is_some() => waiting_one_queue_sql(),
        ListKind::Waiting => waiting_all_queues_sql(),
        ListKind::Running => running_sql(),
        ListKind::Succeeded | ListKind::Failed | ListKind::Cancelled if query.queue.is_some() => {
            completed_one_queue_sql()
        }
        ListKind::Succeeded | ListKind::Failed | ListKind::Cancelled => completed_all_queues_sql(),
    }
}

pub(crate) fn task_page(
    conn: &Connection,
    query: &ListQuery,
) -> rusqlite::Result<Vec<SummaryRecord>> {
    let mut list = conn.prepare_cached(&list_sql(query))?;
    let after = query.after_or_start();
    let params = [
        Value::Integer(i64::from(query.limit)),
        Value::Integer(after.key),
        Value::Integer(after.seq),
        query.queue.clone().map_or(Value::Null, Value::Text),
        Value::Integer(query.created.from),
        Value::Integer(query.created.to),
        Value::Integer(query.due.from),
        Value::Integer(query.due.to),
        Value::Integer(i64::from(query.kind == ListKind::Succeeded)),
        Value::Integer(i64::from(query.kind == ListKind::Cancelled)),
        Value::Integer(i64::from(after.priority)),
    ];
    for (i, value) in params.iter().take(list.parameter_count()).enumerate() {
        list.raw_bind_parameter(i + 1, value)?;
    }
    let mut rows = list.raw_query();
    let mut page = Vec::with_capacity(query.limit.min(1024) as usize);
    while let Some(row) = rows.next()? {
        page.push(summary_record(row)?);
    }
    Ok(page)
}

fn summary_record(row: &Row<'_>) -> rusqlite::Result<SummaryRecord> {
    Ok(SummaryRecord {
        id: task_id(row.get_ref(0)?.as_blob()?)?,
        queue: row.get(1)?,
        status: status_of(row.get(2)?),
        attempts: row.get(3)?,
        created_at: row.get(4)?,
        run_at: row.get(5)?,
        claimed_at: row.get(6)?,
        last_executed_at: row.get(7)?,
        last_duration: row.get::<_, Option<i64>>(8)?.map(micros),
        last_error: row.get(9)?,
        keyset: Keyset {
            priority: row.get::<_, Option<i16>>(12)?.unwrap_or(0),
            key: row.get(10)?,
            seq: row.get(11)?,
        },
    })
}

/// A task's row with what surrounds it: its queue's pause, the live processes serving its
/// queue (`?2` is the oldest `last_seen_at` that counts as live), the due unclaimed tasks of
/// its queue ahead of it in claim order (counted only when it is due itself, at `?3`): those
/// of its priority before it (all due too: a range of the due index) and the due ones of
/// every higher priority (the index's range above it). Expired tasks not yet swept count.
/// Then its claimer's row, and for an ended task its state and end.
const FACTS: &str = "SELECT t.queue, t.run_at, t.attempts, t.claimed_at, t.claimed_by, \
         t.lease_renewed_at, t.lease_until, \
         (SELECT q.paused_at FROM backlite_queues q WHERE q.name = t.queue), \
         CASE WHEN t.state = 0 THEN ( \
             SELECT COUNT(*) FROM backlite_processes s \
             WHERE s.last_seen_at > ?2 \
               AND EXISTS (SELECT 1 FROM json_each(s.queues) j WHERE j.value = t.queue)) END, \
         CASE WHEN t.state = 0 AND t.run_at <= ?3 THEN ( \
             SELECT COUNT(*) FROM backlite_tasks a \
             WHERE a.state = 0 AND a.queue = t.queue AND a.priority = t.priority \
               AND a.run_at <= t.run_at AND (a.run_at, a.rowid) < (t.run_at, t.rowid)) + ( \
             SELECT COUNT(*) FROM backlite_tasks a \
             WHERE a.state = 0 AND a.queue = t.queue AND a.priority > t.priority \
               AND a.run_at <= ?3) END, \
         p.host, p.pid, t.expires_at, t.state, t.finished_at, \
         COALESCE(t.last_duration_us, 0) \
     FROM backlite_tasks t LEFT JOIN backlite_processes p ON p.id = t.claimed_by \
     WHERE t.id = ?1";

pub(crate) fn task_facts(
    conn: &Connection,
    id: TaskId,
    now: Millis,
    live_within: Millis,
) -> rusqlite::Result<Facts> {
    let key = &id.as_bytes()[..];
    let live_since = now.saturating_sub(live_within);
    let facts = conn
        .prepare_cached(FACTS)?
        .query_row((key, live_since, now), |row| {
            let state: i64 = row.get(13)?;
            let claimed_at: Option<Millis> = row.get(3)?;
            Ok(match (state, claimed_at) {
                (2.., _) => {
                    let (finished_at, duration_us): (Millis, i64) = (row.get(14)?, row.get(15)?);
                    Facts::Completed {
                        status: status_of(state),
                        finished_at: finished_at.saturating_add(duration_us / 1000),
                    }
                }
                (1, Some(claimed_at)) => Facts::Running {
                    claimed_at,
                    claimed_by: row.get(4)?,
                    process: match (row.get(10)?, row.get(11)?) {
                        (Some(host), Some(pid)) => Some(ProcessRecord { host, pid }),
                        _ => None,
                    },
                    lease_renewed_at: row.get(5)?,
                    lease_until: row.get(6)?,
                },
                _ => Facts::Waiting {
                    queue: row.get(0)?,
                    run_at: row.get(1)?,
                    attempts: row.get(2)?,
                    paused_at: row.get(7)?,
                    live_processes: row.get::<_, Option<i64>>(8)?.map_or(0, count),
                    ahead: row.get::<_, Option<i64>>(9)?.map_or(0, count),
                    expires_at: row.get(12)?,
                    now,
                },
            })
        })
        .optional()?;
    Ok(facts.unwrap_or(Facts::NotFound))
}

#[cfg(test)]
pub(crate) fn inspect_fixture(
    conn: &Connection,
    fixture: &crate::storage::inspect::Fixture,
) -> rusqlite::Result<()> {
    use crate::storage::inspect::Fixture;
    match fixture {
        Fixture::Process {
            id,
            host,
            pid,
            queues,
            last_seen_at,
        } => conn.execute(
            "INSERT OR REPLACE INTO backlite_processes \
             (id, host, pid, queues, workers, started_at, last_seen_at) \
             VALUES (?1, ?2, ?3, ?4, 4, ?5, ?5)",
            (
                id,
                host,
                pid,
                serde_json::to_string(queues).unwrap_or_default(),
                last_seen_at,
            ),
        ),
        Fixture::ClaimedBy {
            task,
            process,
            renewed_at,
        } => conn.execute(
            "UPDATE backlite_tasks SET claimed_by = ?2, lease_renewed_at = ?3 WHERE id = ?1",
            (&task.as_bytes()[..], process, renewed_at),
        ),
    }
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::plans::plan;

    /// Every list page walks an index in its order: no scan of a table, no sort.
    #[test]
    fn pages_read_indexes_in_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn, 0)
            .unwrap()
            .unwrap();
        let table_scan = |step: &str| step == "SCAN t" || step.starts_with("SCAN backlite_");
        for (name, sql, index) in [
            ("one queue", waiting_one_queue_sql(), "backlite_tasks_due"),
            ("all queues", waiting_all_queues_sql(), "backlite_tasks_due"),
            ("running", running_sql(), "backlite_tasks_running"),
            (
                "ended, one queue",
                completed_one_queue_sql(),
                "backlite_tasks_ended",
            ),
            (
                "ended, all queues",
                completed_all_queues_sql(),
                "backlite_tasks_ended",
            ),
        ] {
            let plan = plan(&conn, &sql);
            assert!(plan.contains(index), "{name}:\n{plan}");
            assert!(!plan.lines().any(table_scan), "{name}:\n{plan}");
            // Lists across queues merge each queue's first page: a sort of those rows only.
            if !name.ends_with("all queues") {
                assert!(!plan.contains("TEMP B-TREE"), "{name}:\n{plan}");
            }
        }
        let facts = plan(&conn, FACTS);
        assert!(!facts.lines().any(table_scan), "{facts}");
    }
}

#[cfg(test)]
crate::storage::inspect_conformance::inspect_conformance!(conformance_file, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(false, queues))
});

#[cfg(test)]
crate::storage::inspect_conformance::inspect_conformance!(
    conformance_memory,
    |queues| async move { Some(crate::storage::sqlite::open_for_test(true, queues)) }
);
