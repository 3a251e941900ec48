//! The statements that control queues and tasks: pause and resume, cancel, retry, run now,
//! delete and purge. The writes run on the writer thread, inside its `BEGIN IMMEDIATE`
//! transaction, which no other connection (of any process) can write during: each guard (the
//! row's `state`) is read and acted on atomically with respect to every claim.

use rusqlite::{Connection, OptionalExtension, params};

use super::sql;
use crate::storage::{
    CANCELLED_ERROR, CancelRetention, Cancelled, Millis, PurgeFilter, QueueRecord,
};
use crate::task::TaskId;

/// A control operation for the writer thread.
pub(crate) enum Op {
    Pause {
        queue: String,
        now: Millis,
    },
    Resume {
        queue: String,
    },
    Cancel {
        id: TaskId,
        retention: CancelRetention,
        now: Millis,
    },
    Retry {
        id: TaskId,
        now: Millis,
    },
    RetryQueue {
        queue: String,
        now: Millis,
    },
    RunNow {
        id: TaskId,
        now: Millis,
    },
    Delete {
        id: TaskId,
    },
    Purge(PurgeFilter),
}

/// What an [`Op`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Changed(bool),
    Count(u64),
    Cancel(Cancelled),
}

impl Answer {
    pub(crate) fn changed(self) -> Option<bool> {
        match self {
            Answer::Changed(changed) => Some(changed),
            _ => None,
        }
    }

    pub(crate) fn count(self) -> Option<u64> {
        match self {
            Answer::Count(count) => Some(count),
            _ => None,
        }
    }

    pub(crate) fn cancelled(self) -> Option<Cancelled> {
        match self {
            Answer::Cancel(cancelled) => Some(cancelled),
            _ => None,
        }
    }
}

impl Op {
    /// Whether committing this may have made a task due, so the dispatcher should look.
    /// Other processes see the commit through `PRAGMA data_version`, as they see inserts.
    pub(crate) fn may_add_work(&self) -> bool {
        matches!(
            self,
            Op::Resume { .. } | Op::Retry { .. } | Op::RetryQueue { .. } | Op::RunNow { .. }
        )
    }

    pub(crate) fn execute(&self, conn: &Connection) -> rusqlite::Result<Answer> {
        Ok(match self {
            Op::Pause { queue, now } => Answer::Changed(queue_pause(conn, queue, *now)?),
            Op::Resume { queue } => Answer::Changed(queue_resume(conn, queue)?),
            Op::Cancel { id, retention, now } => {
                Answer::Cancel(task_cancel(conn, *id, retention, *now)?)
            }
            Op::Retry { id, now } => Answer::Changed(completed_retry(conn, *id, *now)?),
            Op::RetryQueue { queue, now } => {
                Answer::Count(completed_retry_queue(conn, queue, *now)?)
            }
            Op::RunNow { id, now } => Answer::Changed(task_run_now(conn, *id, *now)?),
            Op::Delete { id } => Answer::Changed(task_delete(conn, *id)?),
            Op::Purge(filter) => Answer::Count(completed_purge(conn, filter)?),
        })
    }
}

fn queue_pause(conn: &Connection, queue: &str, now: Millis) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(
            "INSERT INTO backlite_queues (name, paused_at) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET paused_at = excluded.paused_at \
             WHERE backlite_queues.paused_at IS NULL",
        )?
        .execute(params![queue, now])?;
    Ok(changed == 1)
}

fn queue_resume(conn: &Connection, queue: &str) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE backlite_queues SET paused_at = NULL \
             WHERE name = ?1 AND paused_at IS NOT NULL",
        )?
        .execute([queue])?;
    Ok(changed == 1)
}

/// The counts and the paused state in one read transaction, so that they agree.
pub(crate) fn queue_list(conn: &Connection, now: Millis) -> rusqlite::Result<Vec<QueueRecord>> {
    let tx = conn.unchecked_transaction()?;
    let stats = sql::queue_stats(&tx, now)?;
    let mut paused: std::collections::BTreeMap<String, Option<Millis>> = tx
        .prepare_cached("SELECT name, paused_at FROM backlite_queues")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    tx.commit()?;
    let mut records: Vec<QueueRecord> = stats
        .into_iter()
        .map(|stats| QueueRecord {
            paused_at: paused.remove(&stats.queue).flatten(),
            stats,
        })
        .collect();
    records.extend(paused.into_iter().map(|(queue, paused_at)| QueueRecord {
        stats: crate::storage::QueueStats {
            queue,
            ..Default::default()
        },
        paused_at,
    }));
    records.sort_by(|a, b| a.stats.queue.cmp(&b.stats.queue));
    Ok(records)
}

pub(super) const CANCEL_READ: &str = "SELECT queue, state FROM backlite_tasks WHERE id = ?1";

/// A running task is asked to stop: its worker sees the request at its next renewal.
pub(super) const CANCEL_REQUEST: &str = "UPDATE backlite_tasks \
     SET cancel_requested_at = COALESCE(cancel_requested_at, ?2) WHERE id = ?1 AND state = 1";

/// A waiting task retained by its queue ends in place, cancelled (state 4).
pub(super) const CANCEL_RETAIN: &str = "UPDATE backlite_tasks SET state = 4, \
     task = CASE WHEN ?2 THEN task END, last_error = ?3, finished_at = ?4, expires_at = ?5 \
     WHERE id = ?1 AND state = 0";

pub(super) const CANCEL_DELETE: &str = "DELETE FROM backlite_tasks WHERE id = ?1 AND state = 0";

fn task_cancel(
    conn: &Connection,
    id: TaskId,
    retention: &CancelRetention,
    now: Millis,
) -> rusqlite::Result<Cancelled> {
    let key = &id.as_bytes()[..];
    let found: Option<(String, i64)> = conn
        .prepare_cached(CANCEL_READ)?
        .query_row([key], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let queue = match found {
        Some((queue, 0)) => queue,
        Some((_, 1)) => {
            conn.prepare_cached(CANCEL_REQUEST)?
                .execute(params![key, now])?;
            return Ok(Cancelled::Requested);
        }
        // Ended already, or not there.
        _ => return Ok(Cancelled::NotFound),
    };
    match retention.of(&queue) {
        // It ends in place, cancelled (state 4).
        Some(retain) => conn.prepare_cached(CANCEL_RETAIN)?.execute(params![
            key,
            retain.payload,
            CANCELLED_ERROR,
            now,
            retain.expires_at
        ])?,
        None => conn.prepare_cached(CANCEL_DELETE)?.execute([key])?,
    };
    Ok(Cancelled::Waiting)
}

/// Ended tasks that may run again: they failed or were cancelled, and kept their payload.
const RETRYABLE: &str = "state >= 2 AND state IN (3, 4) AND task IS NOT NULL";

/// A retried task with a unique key waits again only while no other waiting, running or
/// succeeded task holds the key (a lookup of the unique index); otherwise the retry does
/// nothing. A succeeded holder past its window lets go of the key first
/// ([`UNIQUE_RETRY_TAKE_OVER`]).
const KEY_FREE: &str = "(unique_key IS NULL OR NOT EXISTS (SELECT 1 FROM backlite_tasks AS h \
     WHERE h.unique_key = backlite_tasks.unique_key AND h.unique_key IS NOT NULL \
       AND h.state <= 2))";

/// Frees the key of the retryable task `?1` from a succeeded holder whose window ended by
/// `?2`, as an insert does ([`sql::UNIQUE_RELEASE`]).
const UNIQUE_RETRY_TAKE_OVER: &str = "UPDATE backlite_tasks SET unique_key = NULL \
     WHERE unique_key = (SELECT unique_key FROM backlite_tasks WHERE id = ?1 AND state IN (3, 4) \
         AND task IS NOT NULL) \
       AND unique_key IS NOT NULL AND state <= 2 AND state = 2 \
       AND finished_at + COALESCE(unique_for, 0) <= ?2";

/// Makes retryable ended tasks waiting again in their rows, due `?2`, from attempt zero, with
/// no expiry (their `expires_at` was their retention's) and no history of the earlier run.
/// They keep their priority and their insertion order.
pub(super) fn retry_sql(which: &str) -> String {
    format!(
        "UPDATE backlite_tasks SET state = 0, run_at = ?2, attempts = 0, expires_at = NULL, \
         finished_at = NULL, last_executed_at = NULL, last_duration_us = NULL, \
         last_error = NULL, errors = NULL, cancel_requested_at = NULL \
         WHERE {which} AND {RETRYABLE}"
    )
}

fn completed_retry(conn: &Connection, id: TaskId, now: Millis) -> rusqlite::Result<bool> {
    let id = &id.as_bytes()[..];
    conn.prepare_cached(UNIQUE_RETRY_TAKE_OVER)?
        .execute(params![id, now])?;
    let changed = conn
        .prepare_cached(&retry_sql(&format!("id = ?1 AND {KEY_FREE}")))?
        .execute(params![id, now])?;
    Ok(changed == 1)
}

/// Every retryable task of the queue, found by the ended index (queue, state): those
/// without a unique key in one statement, then those with one by one, each guarded as
/// `completed_retry` is (two of them may have the same key: the first one retried holds it).
fn completed_retry_queue(conn: &Connection, queue: &str, now: Millis) -> rusqlite::Result<u64> {
    let mut changed = conn
        .prepare_cached(&retry_sql("queue = ?1 AND unique_key IS NULL"))?
        .execute(params![queue, now])? as u64;
    let keyed: Vec<Vec<u8>> = conn
        .prepare_cached(&format!(
            "SELECT id FROM backlite_tasks WHERE queue = ?1 AND state >= 2 AND {RETRYABLE} \
             AND unique_key IS NOT NULL ORDER BY rowid"
        ))?
        .query_map([queue], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in keyed {
        changed += u64::from(completed_retry(conn, sql::task_id(&id)?, now)?);
    }
    Ok(changed)
}

pub(super) const RUN_NOW: &str =
    "UPDATE backlite_tasks SET run_at = ?2 WHERE id = ?1 AND state = 0 AND run_at > ?2";

fn task_run_now(conn: &Connection, id: TaskId, now: Millis) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(RUN_NOW)?
        .execute(params![&id.as_bytes()[..], now])?;
    Ok(changed == 1)
}

pub(super) const DELETE_TASK: &str = "DELETE FROM backlite_tasks WHERE id = ?1 AND state <> 1";

/// A waiting or an ended task; never a running one.
fn task_delete(conn: &Connection, id: TaskId) -> rusqlite::Result<bool> {
    let deleted = conn
        .prepare_cached(DELETE_TASK)?
        .execute([&id.as_bytes()[..]])?;
    Ok(deleted > 0)
}

/// Ended tasks of the filter's states, from the ended index (the queue, when named, is
/// tested on each row).
pub(super) const PURGE: &str = "DELETE FROM backlite_tasks \
     WHERE state >= 2 AND (?1 IS NULL OR queue = ?1) \
       AND (?2 IS NULL OR finished_at < ?2) \
       AND ((?3 AND state = 2) OR (?4 AND state = 3) OR (?5 AND state = 4))";

fn completed_purge(conn: &Connection, filter: &PurgeFilter) -> rusqlite::Result<u64> {
    let (succeeded, failed, cancelled) = filter.outcomes();
    let deleted = conn.prepare_cached(PURGE)?.execute(params![
        filter.queue,
        filter.completed_before,
        succeeded,
        failed,
        cancelled
    ])?;
    Ok(deleted as u64)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::plans::plan;

    /// The claim and the next-due query stay on indexes with the paused test in them: the
    /// queues table is read by its key, the tasks table by the due index, neither scanned.
    #[test]
    fn claims_and_next_due_look_paused_queues_up_by_key() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn, 0)
            .unwrap()
            .unwrap();
        for queues in [1, 3] {
            for sql in [
                super::sql::claim_sql(queues),
                super::sql::next_due_sql(queues),
            ] {
                let plan = plan(&conn, &sql);
                let lookups = plan.matches("SEARCH backlite_queues USING INDEX").count();
                assert_eq!(lookups, queues, "{plan}");
                assert!(plan.contains("backlite_tasks_due"), "{plan}");
                assert!(!plan.contains("SCAN backlite_"), "{plan}");
            }
        }
    }

    /// Two drivers on one file, as two processes would be: each writes through its own
    /// writer, so a claim of one and a cancel of the other meet only in SQLite's write lock.
    /// Every task still ends one way: claimed (its cancel only a request) or cancelled and
    /// never claimed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancels_of_one_process_race_claims_of_another() {
        use std::collections::HashSet;
        use std::sync::Arc;
        use std::time::Duration;

        use crate::storage::conformance::{LEASE, new_task};
        use crate::storage::sqlite::{Options, SqliteDriver, Synchronous};
        use crate::storage::{CancelRetention, Cancelled, Driver};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.db").to_string_lossy().into_owned();
        let open = || {
            let options = Options {
                path: path.clone(),
                synchronous: Synchronous::Normal,
                busy_timeout: Duration::from_secs(10),
                queues: vec!["a"],
            };
            SqliteDriver::open(options, Arc::default()).unwrap().0
        };
        let (claimer, canceller) = (Arc::new(open()), open());
        let tasks: Vec<_> = (0..200).map(|i| new_task("a", i, "x")).collect();
        canceller.task_insert_many(tasks.clone()).await.unwrap();
        // The cancels start once the first claim is in, so that the two meet even when a
        // loaded machine would otherwise let the cancels run through before any claim.
        let (started, first_claim) = tokio::sync::oneshot::channel();
        let claims = tokio::spawn(async move {
            let mut claimed = Vec::new();
            let mut started = Some(started);
            for _ in 0..150 {
                let batch = claimer
                    .task_claim(None, 2, LEASE, Some(1_000))
                    .await
                    .unwrap();
                claimed.extend(batch.into_iter().map(|c| c.id));
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
            }
            claimed
        });
        first_claim.await.unwrap();
        let mut outcomes = Vec::new();
        for t in tasks.iter().rev() {
            let cancelled = canceller.task_cancel(t.id, CancelRetention::default(), Some(1_000));
            outcomes.push((t.id, cancelled.await.unwrap()));
        }
        let claimed = claims.await.unwrap();
        let claimed_set: HashSet<_> = claimed.iter().copied().collect();
        assert_eq!(claimed.len(), claimed_set.len(), "a task claimed twice");
        for (id, outcome) in outcomes {
            match outcome {
                Cancelled::Requested => assert!(claimed_set.contains(&id)),
                Cancelled::Waiting => assert!(!claimed_set.contains(&id), "cancelled and claimed"),
                Cancelled::NotFound => panic!("task {id} vanished"),
            }
        }
        assert!(!claimed_set.is_empty(), "the claims never met the cancels");
    }
}
