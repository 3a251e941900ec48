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
    cancel_waiting: String,
    retry: String,
    retry_delete: String,
    retry_queue: String,
    run_now: String,
    delete: String,
    purge: String,
}

impl ControlStatements {
    /// `schema` is already a quoted identifier.
    pub(crate) fn new(schema: &str) -> ControlStatements {
        let tasks = format!("{schema}.backlite_tasks");
        let completed = format!("{schema}.backlite_tasks_completed");
        let queues = format!("{schema}.backlite_queues");
        // Retained tasks that may run again: they failed or were cancelled, and kept their
        // payload.
        let retryable = "NOT c.succeeded AND c.task IS NOT NULL";
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
            lock_task: format!(
                "SELECT queue, claimed_at IS NOT NULL FROM {tasks} WHERE id = $1 FOR UPDATE"
            ),
            request_cancel: format!(
                "UPDATE {tasks} SET cancel_requested_at = COALESCE(cancel_requested_at, {now}) \
                 WHERE id = $1 AND claimed_at IS NOT NULL",
                now = now_or("$2")
            ),
            // Deletes the waiting task, and keeps a cancelled copy when `$6` says so.
            cancel_waiting: format!(
                "WITH gone AS ( \
                     DELETE FROM {tasks} WHERE id = $1 AND claimed_at IS NULL \
                     RETURNING id, queue, task, attempts, last_duration_us, created_at, errors) \
                 INSERT INTO {completed} (id, queue, task, attempts, succeeded, \
                     last_duration_us, error, created_at, last_executed_at, expires_at, \
                     cancelled, errors) \
                 SELECT g.id, g.queue, CASE WHEN $2::bool THEN g.task END, g.attempts, false, \
                     COALESCE(g.last_duration_us, 0), $3::text, g.created_at, {now}, \
                     $5::int8, true, g.errors \
                 FROM gone AS g WHERE $6::bool \
                 ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, task = excluded.task, \
                     attempts = excluded.attempts, succeeded = excluded.succeeded, \
                     last_duration_us = excluded.last_duration_us, error = excluded.error, \
                     created_at = excluded.created_at, \
                     last_executed_at = excluded.last_executed_at, \
                     expires_at = excluded.expires_at, cancelled = excluded.cancelled, \
                     errors = excluded.errors",
                now = now_or("$4")
            ),
            // A task with the same id waiting or running keeps its place: the insert does
            // nothing (once that task's own transaction has ended), and nothing is deleted.
            retry: format!(
                "INSERT INTO {tasks} (id, queue, task, run_at, created_at) \
                 SELECT c.id, c.queue, c.task, {now}, c.created_at FROM {completed} AS c \
                 WHERE c.id = $1 AND {retryable} \
                 ON CONFLICT (id) DO NOTHING",
                now = now_or("$2")
            ),
            retry_delete: format!("DELETE FROM {completed} WHERE id = $1"),
            retry_queue: format!(
                "WITH moved AS ( \
                     INSERT INTO {tasks} (id, queue, task, run_at, created_at) \
                     SELECT c.id, c.queue, c.task, {now}, c.created_at FROM {completed} AS c \
                     WHERE c.queue = $1 AND {retryable} \
                     ORDER BY c.last_executed_at, c.seq \
                     ON CONFLICT (id) DO NOTHING \
                     RETURNING id) \
                 DELETE FROM {completed} AS c USING moved WHERE c.id = moved.id",
                now = now_or("$2")
            ),
            run_now: format!(
                "WITH clock AS (SELECT {now} AS now) \
                 UPDATE {tasks} AS t SET run_at = clock.now FROM clock \
                 WHERE t.id = $1 AND t.claimed_at IS NULL AND t.run_at > clock.now",
                now = now_or("$2")
            ),
            delete: format!(
                "WITH waiting AS ( \
                     DELETE FROM {tasks} WHERE id = $1 AND claimed_at IS NULL RETURNING 1), \
                 retained AS (DELETE FROM {completed} WHERE id = $1 RETURNING 1) \
                 SELECT (SELECT count(*) FROM waiting) + (SELECT count(*) FROM retained)"
            ),
            purge: format!(
                "DELETE FROM {completed} \
                 WHERE ($1::text IS NULL OR queue = $1) \
                   AND ($2::int8 IS NULL OR last_executed_at < $2) \
                   AND (($3::bool AND succeeded) \
                     OR ($4::bool AND NOT succeeded AND NOT cancelled) \
                     OR ($5::bool AND NOT succeeded AND cancelled))"
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
                let (queue, claimed): (String, bool) = (row.try_get(0)?, row.try_get(1)?);
                if claimed {
                    tx.execute(&sql.request_cancel, &[&key, &now]).await?;
                    return Ok((Cancelled::Requested, false));
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
                let key = uuid(&id);
                if tx.execute(&sql.retry, &[&key, &now]).await? == 0 {
                    return Ok((false, false));
                }
                tx.execute(&sql.retry_delete, &[&key]).await?;
                Ok((true, true))
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
                let row = tx.query_one(&sql.delete, &[&uuid(&id)]).await?;
                let deleted: i64 = row.try_get(0)?;
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
