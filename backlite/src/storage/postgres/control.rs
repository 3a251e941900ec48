//! The statements that control queues and tasks: pause and resume, cancel, retry, run now,
//! delete and purge.
//!
//! Each guarded transition locks the rows it reads or changes, so that it races safely with
//! claims: a claim skips rows locked here (`SKIP LOCKED`), and a statement here that finds a
//! row locked by a claim waits for it and then sees it claimed. Whatever may make a task due
//! sends the driver's NOTIFY in its transaction, so that every host claims it at once.

use super::sql::now_or;
use super::{PgDriver, Statements, map_error, pool_error, queue_stats_of, uuid};
use crate::BoxFuture;
use crate::error::Result;
use crate::storage::{
    CANCELLED_ERROR, CancelRetention, Cancelled, Millis, PurgeFilter, QueueRecord, QueueStats,
};
use crate::task::TaskId;

/// The control statements, written once per client with its schema in place.
pub(crate) struct ControlStatements {
    pause: String,
    resume: String,
    paused: String,
    lock_task: String,
    request_cancel: String,
    pub(super) cancel_waiting: String,
    pub(super) retry: String,
    pub(super) retry_queue: String,
    pub(super) run_now: String,
    pub(super) delete: String,
    pub(super) purge: String,
}

impl ControlStatements {
    /// `schema` is already a quoted identifier.
    pub(crate) fn new(schema: &str) -> ControlStatements {
        let tasks = format!("{schema}.backlite_tasks");
        let queues = format!("{schema}.backlite_queues");
        // Ended tasks that may run again: they failed or were cancelled, and kept their
        // payload.
        let retryable = "t.state IN (3, 4) AND t.task IS NOT NULL";
        // A retried task waits again in its row, due now, from attempt zero, with no expiry
        // (its `expires_at` was its retention's) and no history of the earlier run; it keeps
        // its priority and its place in insertion order.
        let retried = "state = 0, run_at = clock.now, attempts = 0, expires_at = NULL, \
                       finished_at = NULL, last_executed_at = NULL, last_duration_us = NULL, \
                       last_error = NULL, errors = NULL, cancel_requested_at = NULL";
        ControlStatements {
            pause: format!(
                "INSERT INTO {queues} AS q (name, paused_at) VALUES ($1, {now}) \
                 ON CONFLICT (name) DO UPDATE SET paused_at = excluded.paused_at \
                 WHERE q.paused_at IS NULL",
                now = now_or("$2")
            ),
            resume: format!(
                "UPDATE {queues} SET paused_at = NULL WHERE name = $1 AND paused_at IS NOT NULL"
            ),
            paused: format!("SELECT name, paused_at FROM {queues}"),
            lock_task: format!("SELECT queue, state::int4 FROM {tasks} WHERE id = $1 FOR UPDATE"),
            request_cancel: format!(
                "UPDATE {tasks} SET cancel_requested_at = COALESCE(cancel_requested_at, {now}) \
                 WHERE id = $1 AND state = 1",
                now = now_or("$2")
            ),
            // Ends the waiting task: in its row as cancelled when `$6` retains it (its
            // payload when `$2`), else deleted.
            cancel_waiting: format!(
                "WITH kept AS ( \
                     UPDATE {tasks} SET state = 4, task = CASE WHEN $2::bool THEN task END, \
                         last_error = $3::text, finished_at = {now}, expires_at = $5::int8 \
                     WHERE id = $1 AND state = 0 AND $6::bool RETURNING 1), \
                 gone AS ( \
                     DELETE FROM {tasks} WHERE id = $1 AND state = 0 AND NOT $6::bool \
                     RETURNING 1) \
                 SELECT (SELECT count(*) FROM kept) + (SELECT count(*) FROM gone)",
                now = now_or("$4")
            ),
            retry: format!(
                "WITH clock AS (SELECT {now} AS now) \
                 UPDATE {tasks} AS t SET {retried} FROM clock WHERE t.id = $1 AND {retryable}",
                now = now_or("$2")
            ),
            // Every retryable task of the queue, found by the (queue, state) index of ended
            // rows.
            retry_queue: format!(
                "WITH clock AS (SELECT {now} AS now) \
                 UPDATE {tasks} AS t SET {retried} FROM clock \
                 WHERE t.queue = $1 AND t.state >= 2 AND {retryable}",
                now = now_or("$2")
            ),
            run_now: format!(
                "WITH clock AS (SELECT {now} AS now) \
                 UPDATE {tasks} AS t SET run_at = clock.now FROM clock \
                 WHERE t.id = $1 AND t.state = 0 AND t.run_at > clock.now",
                now = now_or("$2")
            ),
            // A waiting or an ended task; never a running one.
            delete: format!("DELETE FROM {tasks} WHERE id = $1 AND state <> 1"),
            // Ended tasks of the filter's states, from the ended index.
            purge: format!(
                "DELETE FROM {tasks} \
                 WHERE state >= 2 AND ($1::text IS NULL OR queue = $1) \
                   AND ($2::int8 IS NULL OR finished_at < $2) \
                   AND (($3::bool AND state = 2) OR ($4::bool AND state = 3) \
                     OR ($5::bool AND state = 4))"
            ),
        }
    }
}

/// Runs `f` in a transaction on a pooled connection and commits; when `f` answers that work
/// may have become due, its transaction also NOTIFYs every host, and the local dispatcher is
/// woken once it has committed.
fn in_transaction<T, F>(driver: &PgDriver, f: F) -> BoxFuture<Result<T>>
where
    T: Send + 'static,
    F: for<'t> FnOnce(
            &'t tokio_postgres::Transaction<'t>,
            &'t ControlStatements,
        ) -> super::BoxFutureRef<'t, Result<(T, bool), tokio_postgres::Error>>
        + Send
        + 'static,
{
    let (pool, statements, control, wake) = (
        driver.pool.clone(),
        driver.statements.clone(),
        driver.control.clone(),
        driver.wake.clone(),
    );
    Box::pin(async move {
        let mut conn = pool.get().await.map_err(pool_error)?;
        let tx = conn.transaction().await.map_err(map_error)?;
        let (value, wakes) = f(&tx, &control).await.map_err(map_error)?;
        if wakes {
            notify(&tx, &statements).await.map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)?;
        if wakes {
            wake.notify_one();
        }
        Ok(value)
    })
}

async fn notify(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &Statements,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(&statements.notify, &[&statements.channel])
        .await
        .map(drop)
}

impl PgDriver {
    pub(super) fn control_pause(
        &self,
        queue: String,
        now: Option<Millis>,
    ) -> BoxFuture<Result<bool>> {
        in_transaction(self, move |tx, sql| {
            Box::pin(async move {
                let changed = tx.execute(&sql.pause, &[&queue, &now]).await?;
                Ok((changed == 1, false))
            })
        })
    }

    pub(super) fn control_resume(&self, queue: String) -> BoxFuture<Result<bool>> {
        in_transaction(self, move |tx, sql| {
            Box::pin(async move {
                let changed = tx.execute(&sql.resume, &[&queue]).await? == 1;
                Ok((changed, changed))
            })
        })
    }

    /// The counts and the paused state from one snapshot, so that they agree.
    pub(super) fn control_queue_list(&self, now: Millis) -> BoxFuture<Result<Vec<QueueRecord>>> {
        let (pool, statements, control) = (
            self.pool.clone(),
            self.statements.clone(),
            self.control.clone(),
        );
        Box::pin(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            let read = async {
                let tx = conn
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let counts = tx.prepare_cached(&statements.queue_stats).await?;
                let stats = queue_stats_of(tx.query(&counts, &[&now]).await?)?;
                let mut paused = std::collections::BTreeMap::new();
                for row in tx.query(&control.paused, &[]).await? {
                    let name: String = row.try_get(0)?;
                    let since: Option<i64> = row.try_get(1)?;
                    paused.insert(name, since);
                }
                tx.commit().await?;
                Ok::<_, tokio_postgres::Error>((stats, paused))
            };
            let (stats, mut paused) = read.await.map_err(map_error)?;
            let mut records: Vec<QueueRecord> = stats
                .into_iter()
                .map(|stats| QueueRecord {
                    paused_at: paused.remove(&stats.queue).flatten(),
                    stats,
                })
                .collect();
            records.extend(paused.into_iter().map(|(queue, paused_at)| QueueRecord {
                stats: QueueStats {
                    queue,
                    ..Default::default()
                },
                paused_at,
            }));
            records.sort_by(|a, b| a.stats.queue.cmp(&b.stats.queue));
            Ok(records)
        })
    }

    pub(super) fn control_cancel(
        &self,
        id: TaskId,
        retention: CancelRetention,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Cancelled>> {
        in_transaction(self, move |tx, sql| {
            Box::pin(async move {
                let key = uuid(&id);
                // Locked until commit: a claim now skips the task, and a claim that holds it
                // already has been waited for.
                let Some(row) = tx.query_opt(&sql.lock_task, &[&key]).await? else {
                    return Ok((Cancelled::NotFound, false));
                };
                let (queue, state): (String, i32) = (row.try_get(0)?, row.try_get(1)?);
                match state {
                    0 => {}
                    1 => {
                        tx.execute(&sql.request_cancel, &[&key, &now]).await?;
                        return Ok((Cancelled::Requested, false));
                    }
                    // Ended already.
                    _ => return Ok((Cancelled::NotFound, false)),
                }
                let retain = retention.of(&queue);
                tx.execute(
                    &sql.cancel_waiting,
                    &[
                        &key,
                        &retain.is_some_and(|r| r.payload),
                        &CANCELLED_ERROR,
                        &now,
                        &retain.and_then(|r| r.expires_at),
                        &retain.is_some(),
                    ],
                )
                .await?;
                Ok((Cancelled::Waiting, false))
            })
        })
    }

    pub(super) fn control_retry(&self, id: TaskId, now: Option<Millis>) -> BoxFuture<Result<bool>> {
        in_transaction(self, move |tx, sql| {
            Box::pin(async move {
                let retried = tx.execute(&sql.retry, &[&uuid(&id), &now]).await? == 1;
                Ok((retried, retried))
            })
        })
    }

    pub(super) fn control_retry_queue(
        &self,
        queue: String,
        now: Option<Millis>,
    ) -> BoxFuture<Result<u64>> {
        in_transaction(self, move |tx, sql| {
            Box::pin(async move {
                let moved = tx.execute(&sql.retry_queue, &[&queue, &now]).await?;
                Ok((moved, moved > 0))
            })
        })
    }

    pub(super) fn control_run_now(
        &self,
        id: TaskId,
        now: Option<Millis>,
    ) -> BoxFuture<Result<bool>> {
        in_transaction(self, move |tx, sql| {
            Box::pin(async move {
                let changed = tx.execute(&sql.run_now, &[&uuid(&id), &now]).await? == 1;
                Ok((changed, changed))
            })
        })
    }

    pub(super) fn control_delete(&self, id: TaskId) -> BoxFuture<Result<bool>> {
        in_transaction(self, move |tx, sql| {
            Box::pin(async move {
                let deleted = tx.execute(&sql.delete, &[&uuid(&id)]).await?;
                Ok((deleted > 0, false))
            })
        })
    }

    pub(super) fn control_purge(&self, filter: PurgeFilter) -> BoxFuture<Result<u64>> {
        in_transaction(self, move |tx, sql| {
            Box::pin(async move {
                let (succeeded, failed, cancelled) = filter.outcomes();
                let deleted = tx
                    .execute(
                        &sql.purge,
                        &[
                            &filter.queue,
                            &filter.completed_before,
                            &succeeded,
                            &failed,
                            &cancelled,
                        ],
                    )
                    .await?;
                Ok((deleted, false))
            })
        })
    }
}
