//! The PostgreSQL statements of the per-minute counters (`storage/counters.rs`). A completion
//! batch adds its outcomes with one statement, pipelined right behind its finished tasks'
//! statement (no round trip of its own) and run after it: the counter rows it locks are
//! locked for a short time, always after the batch's task rows and in (minute, queue) order,
//! so two batches cannot deadlock on them.

use super::{PgDriver, map_error, pool_error};
use crate::BoxFuture;
use crate::error::Result;
use crate::storage::counters::{Depth, MinuteCounts, outcome_deltas};
use crate::storage::{Completion, Millis};

fn add_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.backlite_counters AS c (minute, queue, succeeded, failed, retried) \
         SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) \
         ON CONFLICT (minute, queue) DO UPDATE SET \
             succeeded = c.succeeded + excluded.succeeded, \
             failed = c.failed + excluded.failed, \
             retried = c.retried + excluded.retried"
    )
}

fn sample_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.backlite_counters AS c (minute, queue, waiting, running) \
         SELECT $1::int8, q, w, r FROM unnest($2::text[], $3::int8[], $4::int8[]) AS s(q, w, r) \
         ORDER BY q \
         ON CONFLICT (minute, queue) DO UPDATE SET waiting = excluded.waiting, \
             running = excluded.running"
    )
}

pub(super) fn read_sql(schema: &str) -> String {
    format!(
        "SELECT minute, queue, succeeded, failed, retried, waiting, running \
         FROM {schema}.backlite_counters WHERE minute >= $1 ORDER BY minute, queue"
    )
}

pub(super) fn delete_sql(schema: &str) -> String {
    format!("DELETE FROM {schema}.backlite_counters WHERE minute < $1")
}

/// Adds the outcomes of a completion batch to the counters, in the batch's transaction.
pub(super) async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    schema: &str,
    completions: &[Completion],
) -> Result<(), tokio_postgres::Error> {
    let deltas = outcome_deltas(completions);
    if deltas.is_empty() {
        return Ok(());
    }
    let minutes: Vec<i64> = deltas.iter().map(|d| d.minute).collect();
    let queues: Vec<&str> = deltas.iter().map(|d| d.queue.as_str()).collect();
    let succeeded: Vec<i64> = deltas.iter().map(|d| d.succeeded).collect();
    let failed: Vec<i64> = deltas.iter().map(|d| d.failed).collect();
    let retried: Vec<i64> = deltas.iter().map(|d| d.retried).collect();
    let statement = tx.prepare_cached(&add_sql(schema)).await?;
    tx.execute(
        &statement,
        &[&minutes, &queues, &succeeded, &failed, &retried],
    )
    .await?;
    Ok(())
}

impl PgDriver {
    pub(super) fn sample_counters(
        &self,
        minute: Millis,
        samples: Vec<(String, Depth)>,
    ) -> BoxFuture<Result<()>> {
        let (pool, sql) = (self.pool.clone(), sample_sql(&self.statements.schema));
        Box::pin(async move {
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            let queues: Vec<&str> = samples.iter().map(|(q, _)| q.as_str()).collect();
            let waiting: Vec<i64> = samples.iter().map(|(_, d)| count(d.waiting)).collect();
            let running: Vec<i64> = samples.iter().map(|(_, d)| count(d.running)).collect();
            let conn = pool.get().await.map_err(pool_error)?;
            conn.execute(&sql, &[&minute, &queues, &waiting, &running])
                .await
                .map_err(map_error)?;
            Ok(())
        })
    }

    pub(super) fn read_counters(&self, since: Millis) -> BoxFuture<Result<Vec<MinuteCounts>>> {
        let (pool, sql) = (self.pool.clone(), read_sql(&self.statements.schema));
        Box::pin(async move {
            let conn = pool.get().await.map_err(pool_error)?;
            let rows = conn.query(&sql, &[&since]).await.map_err(map_error)?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            rows.iter()
                .map(|row| {
                    let waiting: Option<i64> = row.try_get(5)?;
                    let running: Option<i64> = row.try_get(6)?;
                    Ok(MinuteCounts {
                        minute: row.try_get(0)?,
                        queue: row.try_get(1)?,
                        succeeded: count(row.try_get(2)?),
                        failed: count(row.try_get(3)?),
                        retried: count(row.try_get(4)?),
                        depth: waiting.map(|waiting| Depth {
                            waiting: count(waiting),
                            running: count(running.unwrap_or(0)),
                        }),
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                .map_err(map_error)
        })
    }

    pub(super) fn delete_counters(&self, before: Millis) -> BoxFuture<Result<u64>> {
        let (pool, sql) = (self.pool.clone(), delete_sql(&self.statements.schema));
        Box::pin(async move {
            let conn = pool.get().await.map_err(pool_error)?;
            conn.execute(&sql, &[&before]).await.map_err(map_error)
        })
    }
}

#[cfg(test)]
crate::storage::counters_conformance::counters_conformance!(conformance, |queues| async move {
    crate::storage::postgres::open_for_test(queues).await
});
