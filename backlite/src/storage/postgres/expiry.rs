//! The sweep of expired waiting tasks, as one statement: it locks the expired rows it takes
//! (skipping those a claim holds at that moment) and ends them as failed, in their rows when
//! their queue retains failed tasks, else deleted.

use super::{PgDriver, map_error, pool_error};
use crate::BoxFuture;
use crate::error::Result;
use crate::storage::{CancelRetention, EXPIRED_ERROR, Millis};

use super::sql::now_or;

/// `$1..$4`: per known queue, its name, whether a failed task is kept, with its payload, and
/// until when; `$5` the batch size; `$6` now; `$7` the error.
pub(super) fn expire_sql(schema: &str) -> String {
    let tasks = format!("{schema}.backlite_tasks");
    format!(
        "WITH clock AS (SELECT {now} AS now), \
         known AS ( \
             SELECT * FROM unnest($1::text[], $2::bool[], $3::bool[], $4::int8[]) \
             AS k(queue, retain, keep_payload, expires_at)), \
         picked AS ( \
             SELECT x.id, k.retain, k.keep_payload, k.expires_at FROM known AS k \
             CROSS JOIN LATERAL ( \
                 SELECT id FROM {tasks} \
                 WHERE queue = k.queue AND state = 0 \
                   AND expires_at <= (SELECT now FROM clock) \
                 ORDER BY expires_at LIMIT $5 \
                 FOR UPDATE SKIP LOCKED) AS x \
             LIMIT $5), \
         kept AS ( \
             UPDATE {tasks} AS t SET state = 3, \
                 task = CASE WHEN p.keep_payload THEN t.task END, last_error = $7::text, \
                 finished_at = clock.now, expires_at = p.expires_at, \
                 errors = (CASE WHEN jsonb_array_length(t.errors) >= 10 THEN t.errors - 0 \
                           ELSE COALESCE(t.errors, '[]'::jsonb) END) \
                     || jsonb_build_array(jsonb_build_object('attempt', t.attempts + 1, \
                         'at', clock.now, 'duration_us', 0, 'error', $7::text)) \
             FROM picked AS p, clock \
             WHERE t.id = p.id AND p.retain AND t.state = 0 \
             RETURNING 1), \
         gone AS ( \
             DELETE FROM {tasks} AS t USING picked AS p \
             WHERE t.id = p.id AND NOT p.retain AND t.state = 0 \
             RETURNING 1) \
         SELECT (SELECT count(*) FROM kept) + (SELECT count(*) FROM gone)",
        now = now_or("$6"),
    )
}

impl PgDriver {
    pub(super) fn expire_pending(
        &self,
        retention: CancelRetention,
        limit: usize,
        now: Option<Millis>,
    ) -> BoxFuture<Result<u64>> {
        let (pool, statements) = (self.pool.clone(), self.statements.clone());
        Box::pin(async move {
            let conn = pool.get().await.map_err(pool_error)?;
            let (mut names, mut retain, mut payload, mut until) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (queue, kept) in &retention.known {
                names.push(*queue);
                retain.push(kept.is_some());
                payload.push(kept.is_some_and(|k| k.payload));
                until.push(kept.and_then(|k| k.expires_at));
            }
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let statement = conn
                .prepare_cached(&expire_sql(&statements.schema))
                .await
                .map_err(map_error)?;
            let row = conn
                .query_one(
                    &statement,
                    &[
                        &names,
                        &retain,
                        &payload,
                        &until,
                        &limit,
                        &now,
                        &EXPIRED_ERROR,
                    ],
                )
                .await
                .map_err(map_error)?;
            let ended: i64 = row.try_get(0).map_err(map_error)?;
            Ok(u64::try_from(ended).unwrap_or(0))
        })
    }
}

#[cfg(test)]
crate::storage::expiry_conformance::expiry_conformance!(conformance, |queues| async move {
    crate::storage::postgres::open_for_test(queues).await
});

#[cfg(test)]
crate::storage::priority_conformance::priority_conformance!(
    priority_conformance,
    |queues| async move { crate::storage::postgres::open_for_test(queues).await }
);
