//! Every statement of the PostgreSQL driver, written once per client with its schema in place.
//!
//! Times are milliseconds since the epoch. A statement that depends on the time takes it as a
//! nullable parameter and falls back on the server's clock (`NOW_MS`), so that every host
//! measures leases and due times on one clock, and tests can still give a time.

/// The server's clock, in milliseconds since the epoch.
pub(super) const NOW_MS: &str = "(extract(epoch from now()) * 1000)::int8";

/// `$n` when given, else the server's clock.
pub(crate) fn now_or(param: &str) -> String {
    format!("COALESCE({param}::int8, {NOW_MS})")
}

pub(crate) struct Statements {
    /// The schema, quoted.
    pub(crate) schema: String,
    /// The channel NOTIFY and LISTEN use: one per schema, so that clients of other schemas on
    /// the same server are not woken for work they cannot see.
    pub(crate) channel: String,
    pub(crate) insert: String,
    /// `insert`, for `save_in`: it inserts only into the database whose identity is `$6`.
    pub(crate) insert_checked: String,
    pub(crate) notify: String,
    pub(crate) claim: String,
    pub(crate) retry: String,
    /// A retry that does not count the attempt (see `dispatch.rs`).
    pub(crate) snooze: String,
    pub(crate) finish: String,
    pub(crate) unclaim: String,
    pub(crate) release: String,
    pub(crate) next_due: String,
    pub(crate) status: String,
    pub(crate) delete_expired: String,
    pub(crate) queue_stats: String,
    pub(crate) running: String,
    pub(crate) upcoming: String,
    pub(crate) task_get: String,
    pub(crate) waiting: String,
    pub(crate) completed_list: String,
    pub(crate) completed_get: String,
}

/// The NOTIFY channel of a schema. Channel names are identifiers of at most 63 bytes: a
/// longer schema name is cut, and a hash of the whole name keeps channels of schemas that
/// share the cut part apart. The hash is FNV-1a, the same on every host and build.
fn channel(schema_name: &str) -> String {
    let channel = format!("backlite {schema_name}");
    if channel.len() <= 63 {
        return channel;
    }
    let hash = schema_name
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    let mut cut = 36;
    while !schema_name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("backlite {}#{hash:016x}", &schema_name[..cut])
}

/// The columns of a `TaskRecord`, with `payload` the expression that reads the payload.
/// The distinct priorities of the waiting tasks of the queue named by the SQL expression
/// `queue`, as rows of `p`, highest first: a walk of the due index, one seek per priority.
fn priority_levels(tasks: &str, queue: &str) -> String {
    let waiting = format!("FROM {tasks} WHERE state = 0 AND queue = {queue}");
    format!(
        "WITH RECURSIVE level(p) AS ( \
             (SELECT priority {waiting} ORDER BY priority DESC LIMIT 1) \
             UNION ALL \
             SELECT (SELECT priority {waiting} AND priority < level.p \
                     ORDER BY priority DESC LIMIT 1) \
             FROM level WHERE level.p IS NOT NULL) \
         SELECT p FROM level WHERE p IS NOT NULL"
    )
}

fn task_columns(payload: &str) -> String {
    format!(
        "t.id, t.queue, {payload}, octet_length(t.task)::int8, t.attempts, t.run_at, \
         t.created_at, t.claimed_at, t.last_executed_at, t.last_duration_us, t.last_error, \
         t.lease_renewed_at"
    )
}

/// An ended task's columns as a `CompletedRecord`: its end is its last time.
fn completed_columns(payload: &str) -> String {
    format!(
        "t.id, t.queue, {payload}, COALESCE(octet_length(t.task), 0)::int8, t.attempts, \
         t.state = 2, COALESCE(t.last_duration_us, 0), t.last_error, t.created_at, \
         t.finished_at, t.expires_at"
    )
}

/// The `errors` of the task row `t` with the attempt of the outcome row `u` appended when it
/// failed, keeping the last [`ERRORS_KEPT`](crate::storage::inspect::ERRORS_KEPT) (each
/// append keeps at most ten, so dropping the first entry of a full array is enough). A
/// success (`u.error` NULL) leaves the array as it is, at the cost of one NULL test.
fn errors_appended(t: &str) -> String {
    format!(
        "CASE WHEN u.error IS NULL THEN {t}.errors ELSE \
         (CASE WHEN jsonb_array_length({t}.errors) >= 10 THEN {t}.errors - 0 \
          ELSE COALESCE({t}.errors, '[]'::jsonb) END) \
         || jsonb_build_array(jsonb_build_object('attempt', {t}.attempts + 1, \
             'at', u.executed_at, 'duration_us', u.duration_us, 'error', u.error)) END"
    )
}

/// Lists read a payload's first `$3` bytes only.
const PREVIEW: &str = "substring(t.task from 1 for $3::int4)";

impl Statements {
    /// `schema` is already a quoted identifier; `schema_name` the plain name, for the channel.
    pub(crate) fn new(schema: &str, schema_name: &str) -> Statements {
        let tasks = format!("{schema}.backlite_tasks");
        let insert_rows = "SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], \
                           $4::int8[], $5::int8[], $6::int2[], $7::int8[], $8::bytea[], \
                           $9::int8[])";
        let insert_columns =
            "(id, queue, task, run_at, created_at, priority, expires_at, unique_key, unique_for)";
        // The served queues (`$1`) that are not paused. The paused test is a subquery per
        // queue, planned as one lookup of the queues table's key, rather than a join that
        // could read that table whole.
        let served_with_room = format!(
            "(SELECT u.name, u.room FROM unnest($1::text[], $6::int8[]) AS u(name, room) \
              WHERE (SELECT p.paused_at FROM {schema}.backlite_queues AS p \
                     WHERE p.name = u.name) IS NULL)"
        );
        let served = format!(
            "(SELECT u.name FROM unnest($1::text[]) AS u(name) \
              WHERE (SELECT p.paused_at FROM {schema}.backlite_queues AS p \
                     WHERE p.name = u.name) IS NULL)"
        );
        Statements {
            schema: schema.to_owned(),
            channel: channel(schema_name),
            insert: format!("INSERT INTO {tasks} {insert_columns} {insert_rows}"),
            insert_checked: format!(
                "INSERT INTO {tasks} {insert_columns} {insert_rows} \
                 WHERE EXISTS (SELECT 1 FROM {schema}.backlite_instance WHERE id = $10)"
            ),
            notify: "SELECT pg_notify($1, '')".into(),
            // One index-ordered arm per served queue and priority that queue holds, so that a
            // backlog in a queue nobody here serves costs nothing, and tasks not yet due of
            // one priority are never read to reach the due ones of the next (the due index
            // is ordered by priority first); rows another claimer holds are skipped, not
            // waited for, and expired ones are left for the sweep. `$6` is each served
            // queue's own limit (its room under its concurrency limit), in the order of `$1`:
            // a queue's arms together give no more than that, and a queue at its limit reads
            // nothing (`LIMIT 0`). RETURNING has no order: the caller sorts by (priority
            // descending, run_at, seq).
            claim: format!(
                "WITH clock AS (SELECT {now} AS now), \
                 picked AS ( \
                     SELECT p.id FROM {served_with_room} AS q \
                     CROSS JOIN LATERAL ( \
                     SELECT a.id, a.priority, a.run_at, a.seq FROM ({levels}) AS l \
                     CROSS JOIN LATERAL ( \
                         SELECT id, priority, run_at, seq FROM {tasks} \
                         WHERE state = 0 AND queue = q.name AND priority = l.p \
                           AND run_at <= (SELECT now FROM clock) \
                           AND (expires_at IS NULL OR expires_at > (SELECT now FROM clock)) \
                         ORDER BY run_at, seq LIMIT LEAST($2, q.room) \
                         FOR UPDATE SKIP LOCKED) AS a \
                     ORDER BY a.priority DESC, a.run_at, a.seq LIMIT LEAST($2, q.room)) AS p \
                     ORDER BY p.priority DESC, p.run_at, p.seq LIMIT $2) \
                 UPDATE {tasks} AS t SET state = 1, claimed_at = clock.now, \
                     lease_until = clock.now + $4::int8, fence = t.fence + 1, \
                     claimed_by = $5::uuid, lease_renewed_at = clock.now \
                 FROM picked, clock WHERE t.id = picked.id \
                 RETURNING t.id, t.queue, t.task, t.attempts, t.fence, t.run_at, t.seq, \
                     t.priority",
                now = now_or("$3"),
                levels = priority_levels(&tasks, "q.name"),
            ),
            retry: format!(
                "UPDATE {tasks} AS t SET state = 0, claimed_at = NULL, lease_until = NULL, \
                     claimed_by = NULL, lease_renewed_at = NULL, attempts = t.attempts + 1, \
                     run_at = u.run_at, last_executed_at = u.executed_at, \
                     last_duration_us = u.duration_us, last_error = u.error, errors = {errors} \
                 FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], \
                     $6::text[]) AS u(id, fence, run_at, executed_at, duration_us, error) \
                 WHERE t.id = u.id AND t.fence = u.fence AND t.state = 1",
                errors = errors_appended("t")
            ),
            snooze: super::dispatch::snooze(&tasks),
            // Ends the finished tasks in one statement: a retained one in its row (its ended
            // state, its payload when kept, its retention expiry), any other deleted. The
            // batch is a CTE that both arms read, and each arm looks its rows up by primary
            // key, one per outcome, also in the generic plan a prepared statement gets after
            // five runs (a plan test holds it to that). A join of the batch's ids as an array
            // (`t.id = ANY($1)`) instead gets a generic plan that compares every outcome with
            // every task found: 346 ms for 1,000 outcomes against 2 ms.
            finish: format!(
                "WITH u AS ( \
                     SELECT * FROM unnest($1::uuid[], $2::int8[], $3::bool[], $4::bool[], \
                         $5::bool[], $6::int8[], $7::text[], $8::int8[], $9::int8[], \
                         $10::bool[]) \
                     AS u(id, fence, retain, keep_payload, succeeded, duration_us, error, \
                         executed_at, expires_at, cancelled)), \
                 kept AS ( \
                     UPDATE {tasks} AS t SET \
                         state = CASE WHEN u.cancelled THEN 4 WHEN u.succeeded THEN 2 ELSE 3 END, \
                         task = CASE WHEN u.keep_payload THEN t.task END, \
                         attempts = t.attempts + 1, claimed_at = NULL, lease_until = NULL, \
                         claimed_by = NULL, lease_renewed_at = NULL, cancel_requested_at = NULL, \
                         last_executed_at = u.executed_at, last_duration_us = u.duration_us, \
                         last_error = u.error, finished_at = u.executed_at, \
                         expires_at = u.expires_at, errors = {errors} \
                     FROM u WHERE t.id = u.id AND u.retain \
                       AND t.fence = u.fence AND t.state = 1 \
                     RETURNING 1), \
                 gone AS ( \
                     DELETE FROM {tasks} AS t USING u \
                     WHERE t.id = u.id AND NOT u.retain \
                       AND t.fence = u.fence AND t.state = 1 \
                     RETURNING 1) \
                 SELECT (SELECT count(*) FROM kept) + (SELECT count(*) FROM gone)",
                errors = errors_appended("t")
            ),
            unclaim: format!(
                "UPDATE {tasks} AS t SET state = 0, claimed_at = NULL, lease_until = NULL, \
                     claimed_by = NULL, lease_renewed_at = NULL \
                 FROM unnest($1::uuid[], $2::int8[]) AS u(id, fence) \
                 WHERE t.id = u.id AND t.fence = u.fence AND t.state = 1"
            ),
            // Rows another transaction holds (a batch of outcomes, a renewal) are skipped, not
            // waited for: locking them in another order than that transaction deadlocked with
            // it, and whatever it leaves stale is released by the next pass.
            release: format!(
                "UPDATE {tasks} AS t SET state = 0, claimed_at = NULL, lease_until = NULL, \
                     claimed_by = NULL, lease_renewed_at = NULL \
                 FROM (SELECT id FROM {tasks} \
                       WHERE state = 1 AND lease_until <= {now} \
                       FOR UPDATE SKIP LOCKED) AS stale \
                 WHERE t.id = stale.id",
                now = now_or("$1")
            ),
            // The top of each priority's run of the due index per served queue, as a wait
            // from now; expired tasks waiting for the sweep would look due forever.
            next_due: format!(
                "SELECT MIN(GREATEST(d.run_at - {now}, 0)) FROM {served} AS q \
                 CROSS JOIN LATERAL ({levels}) AS l \
                 CROSS JOIN LATERAL ( \
                     SELECT run_at FROM {tasks} WHERE state = 0 AND queue = q.name \
                       AND priority = l.p AND (expires_at IS NULL OR expires_at > {now}) \
                     ORDER BY run_at LIMIT 1) AS d",
                now = now_or("$2"),
                levels = priority_levels(&tasks, "q.name"),
            ),
            status: format!("SELECT state::int4 FROM {tasks} WHERE id = $1"),
            // Ended tasks whose retention has expired, from the retention index.
            delete_expired: format!("DELETE FROM {tasks} WHERE state >= 2 AND expires_at <= $1"),
            // One statement, one snapshot; each arm is answered from the partial index of
            // its states.
            queue_stats: format!(
                "SELECT queue, 0, count(*) FILTER (WHERE run_at <= $1), \
                     count(*) FILTER (WHERE run_at > $1), 0::int8 \
                     FROM {tasks} WHERE state = 0 GROUP BY queue \
                 UNION ALL \
                 SELECT queue, 1, count(*), 0, 0 \
                     FROM {tasks} WHERE state = 1 GROUP BY queue \
                 UNION ALL \
                 SELECT queue, 2, count(*) FILTER (WHERE state = 2), \
                     count(*) FILTER (WHERE state = 3), count(*) FILTER (WHERE state = 4) \
                     FROM {tasks} WHERE state >= 2 GROUP BY queue"
            ),
            running: format!(
                "SELECT {} FROM {tasks} AS t WHERE t.state = 1 \
                 ORDER BY t.claimed_at, t.seq LIMIT $1 OFFSET $2",
                task_columns(PREVIEW)
            ),
            // Each queue's first `offset + limit` waiting tasks straight from the due index,
            // merged: the queue names come from a walk of that index, one seek per queue.
            // The order is the index's (priority descending, due time, insertion).
            upcoming: format!(
                "WITH RECURSIVE queues(name) AS ( \
                     (SELECT queue FROM {tasks} WHERE state = 0 ORDER BY queue LIMIT 1) \
                     UNION ALL \
                     SELECT (SELECT queue FROM {tasks} \
                             WHERE state = 0 AND queue > queues.name \
                             ORDER BY queue LIMIT 1) \
                     FROM queues WHERE queues.name IS NOT NULL) \
                 SELECT {} FROM queues CROSS JOIN LATERAL ( \
                     SELECT * FROM {tasks} WHERE state = 0 AND queue = queues.name \
                     ORDER BY priority DESC, run_at, seq LIMIT $1::int8 + $2::int8) AS t \
                 ORDER BY t.priority DESC, t.run_at, t.seq LIMIT $1 OFFSET $2",
                task_columns(PREVIEW)
            ),
            waiting: format!(
                "SELECT {} FROM {tasks} AS t WHERE t.state = 0 AND t.queue = $1 \
                 ORDER BY t.priority DESC, t.run_at, t.seq",
                task_columns("t.task")
            ),
            task_get: format!(
                "SELECT {} FROM {tasks} AS t WHERE t.id = $1 AND t.state <= 1",
                task_columns("t.task")
            ),
            // Each state's range of the (state, finished_at, seq) index of ended rows read
            // backwards, the two of a failed list (failed, cancelled) merged in order.
            completed_list: {
                let arm = |state: &str| {
                    format!(
                        "(SELECT {}, t.seq FROM {tasks} AS t \
                          WHERE t.state >= 2 AND t.state = {state} \
                          ORDER BY t.finished_at DESC, t.seq DESC \
                          LIMIT $1::int8 + $2::int8)",
                        completed_columns(PREVIEW)
                    )
                };
                format!(
                    "SELECT * FROM ({} UNION ALL {} UNION ALL {}) AS t \
                     ORDER BY t.finished_at DESC, t.seq DESC LIMIT $1 OFFSET $2",
                    arm("CASE WHEN $4 THEN 2 END"),
                    arm("CASE WHEN $4 THEN NULL ELSE 3 END"),
                    arm("CASE WHEN $4 THEN NULL ELSE 4 END"),
                )
            },
            completed_get: format!(
                "SELECT {} FROM {tasks} AS t WHERE t.id = $1 AND t.state >= 2",
                completed_columns("t.task")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::channel;

    #[test]
    fn channels_fit_an_identifier_and_keep_long_schemas_apart() {
        assert_eq!(channel("public"), "backlite public");
        let (a, b) = ("s".repeat(60) + "a", "s".repeat(60) + "b");
        assert!(channel(&a).len() <= 63);
        assert_ne!(channel(&a), channel(&b));
        assert!(channel(&"é".repeat(40)).len() <= 63);
    }
}
