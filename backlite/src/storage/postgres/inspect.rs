//! The statements that inspect tasks: one task whole, a page of a filtered list, and the
//! facts that explain where a task is. Each list page is one statement that walks the index
//! its order follows from the cursor on (keyset paging), so a deep page costs what the first
//! one does.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{task_id, uuid};
use crate::storage::browse::{count, micros};
use crate::storage::inspect::{Keyset, ListKind, ProcessRecord};
use crate::storage::{Facts, InfoRecord, ListQuery, SummaryRecord};
use crate::task::{TaskId, TaskStatus};

type Client = deadpool_postgres::Client;
type PgResult<T> = Result<T, tokio_postgres::Error>;

/// The server's clock, in milliseconds since the epoch (as in `sql.rs`).
const NOW_MS: &str = "(extract(epoch from now()) * 1000)::int8";

/// Every statement of the inspection, written once per client with its schema in place.
pub(crate) struct InspectSql {
    #[cfg_attr(not(test), allow(dead_code, reason = "tests write fixtures"))]
    schema: String,
    info: String,
    waiting_one_queue: String,
    waiting_all_queues: String,
    running: String,
    completed: String,
    facts: String,
}

/// The columns of a [`SummaryRecord`] read from the tasks table, with `key` the sort key.
fn task_summary(key: &str) -> String {
    format!(
        "t.id, t.queue, t.state::int4, t.attempts, \
         t.created_at, t.run_at, t.claimed_at, t.last_executed_at, t.last_duration_us, \
         t.last_error, {key}, t.seq, t.priority"
    )
}

// The parameters of every list statement: $1 limit, $2 and $3 the keyset (sort key, seq),
// $4 and $5 the created range; then $6 and $7 the due range (waiting, running) or succeeded
// and cancelled (ended); $8 the queue, except in the list of every queue's waiting tasks.

impl InspectSql {
    /// `schema` is already a quoted identifier.
    pub(crate) fn new(schema: &str) -> InspectSql {
        let tasks = format!("{schema}.backlite_tasks");
        let queues = format!("{schema}.backlite_queues");
        let processes = format!("{schema}.backlite_processes");
        InspectSql {
            schema: schema.to_owned(),
            // Every task is one row: one lookup of the primary key. An ended task's end is
            // its last time, and its `expires_at` its retention's.
            info: format!(
                "SELECT t.id, t.queue, t.task, t.attempts, t.created_at, \
                     CASE WHEN t.state <= 1 THEN t.run_at END, \
                     CASE WHEN t.state <= 1 THEN t.claimed_at END, \
                     CASE WHEN t.state <= 1 THEN t.last_executed_at ELSE t.finished_at END, \
                     CASE WHEN t.state <= 1 THEN t.last_duration_us \
                         ELSE COALESCE(t.last_duration_us, 0) END, \
                     t.errors::text, \
                     CASE WHEN t.state <= 1 THEN t.claimed_by::text END, \
                     CASE WHEN t.state <= 1 THEN t.lease_renewed_at END, \
                     CASE WHEN t.state <= 1 THEN t.lease_until END, \
                     CASE WHEN t.state >= 2 THEN t.expires_at END, \
                     t.state::int4, \
                     CASE WHEN t.state <= 1 THEN t.priority END, \
                     CASE WHEN t.state <= 1 THEN t.expires_at END \
                 FROM {tasks} AS t WHERE t.id = $1"
            ),
            // A range of the due index from the cursor on.
            waiting_one_queue: format!(
                "SELECT {} FROM {tasks} AS t \
                 WHERE t.state = 0 AND t.queue = $8 \
                   AND t.run_at >= $6 AND t.run_at < $7 \
                   AND (t.priority < $9 OR (t.priority = $9 AND (t.run_at, t.seq) > ($2, $3))) \
                   AND t.created_at >= $4 AND t.created_at < $5 \
                 ORDER BY t.priority DESC, t.run_at, t.seq LIMIT $1",
                task_summary("t.run_at")
            ),
            // Each queue's first `limit` waiting tasks after the cursor, straight from the
            // due index, merged: the queue names come from a walk of that index.
            waiting_all_queues: format!(
                "WITH RECURSIVE queues(name) AS ( \
                     (SELECT queue FROM {tasks} WHERE state = 0 ORDER BY queue LIMIT 1) \
                     UNION ALL \
                     SELECT (SELECT queue FROM {tasks} \
                             WHERE state = 0 AND queue > queues.name \
                             ORDER BY queue LIMIT 1) \
                     FROM queues WHERE queues.name IS NOT NULL) \
                 SELECT {} FROM queues CROSS JOIN LATERAL ( \
                     SELECT * FROM {tasks} \
                     WHERE state = 0 AND queue = queues.name \
                       AND run_at >= $6 AND run_at < $7 \
                       AND (priority < $8 OR (priority = $8 AND (run_at, seq) > ($2, $3))) \
                       AND created_at >= $4 AND created_at < $5 \
                     ORDER BY priority DESC, run_at, seq LIMIT $1) AS t \
                 ORDER BY t.priority DESC, t.run_at, t.seq LIMIT $1",
                task_summary("t.run_at")
            ),
            running: format!(
                "SELECT {} FROM {tasks} AS t \
                 WHERE t.state = 1 AND (t.claimed_at, t.seq) > ($2, $3) \
                   AND ($8::text IS NULL OR t.queue = $8) \
                   AND t.created_at >= $4 AND t.created_at < $5 \
                   AND t.run_at >= $6 AND t.run_at < $7 \
                 ORDER BY t.claimed_at, t.seq LIMIT $1",
                task_summary("t.claimed_at")
            ),
            // The (state, finished_at, seq) index of ended rows read backwards from the
            // cursor, in the state that `$6` (succeeded) and `$7` (cancelled) name.
            completed: format!(
                "SELECT t.id, t.queue, t.state::int4, \
                     t.attempts, t.created_at, NULL::int8, NULL::int8, t.finished_at, \
                     COALESCE(t.last_duration_us, 0), t.last_error, t.finished_at, t.seq, \
                     NULL::int2 \
                 FROM {tasks} AS t \
                 WHERE t.state >= 2 \
                   AND t.state = CASE WHEN $6::bool THEN 2 WHEN $7::bool THEN 4 ELSE 3 END \
                   AND (t.finished_at, t.seq) < ($2, $3) \
                   AND ($8::text IS NULL OR t.queue = $8) \
                   AND t.created_at >= $4 AND t.created_at < $5 \
                 ORDER BY t.finished_at DESC, t.seq DESC LIMIT $1"
            ),
            // The task's row with its queue's pause, the live processes serving its queue,
            // the due unclaimed tasks ahead of it (counted only when it is due): those of its
            // priority before it (all due too: a range of the due index) and the due ones of
            // every higher priority; expired ones not yet swept count. Then its claimer's row,
            // the clock read, and the task's state and end.
            facts: format!(
                "WITH clock AS (SELECT COALESCE($2::int8, {NOW_MS}) AS now) \
                 SELECT t.queue, t.run_at, t.attempts, t.claimed_at, t.claimed_by::text, \
                     t.lease_renewed_at, t.lease_until, \
                     (SELECT q.paused_at FROM {queues} AS q WHERE q.name = t.queue), \
                     CASE WHEN t.state = 0 THEN ( \
                         SELECT count(*) FROM {processes} AS s \
                         WHERE s.last_seen_at > clock.now - $3::int8 \
                           AND s.queues @> jsonb_build_array(t.queue)) END, \
                     CASE WHEN t.state = 0 AND t.run_at <= clock.now THEN ( \
                         SELECT count(*) FROM {tasks} AS a \
                         WHERE a.state = 0 AND a.queue = t.queue \
                           AND a.priority = t.priority \
                           AND (a.run_at, a.seq) < (t.run_at, t.seq)) + ( \
                         SELECT count(*) FROM {tasks} AS a \
                         WHERE a.state = 0 AND a.queue = t.queue \
                           AND a.priority > t.priority AND a.run_at <= clock.now) END, \
                     p.host, p.pid, clock.now, t.expires_at, t.state::int4, \
                     t.finished_at + COALESCE(t.last_duration_us, 0) / 1000 \
                 FROM clock CROSS JOIN {tasks} AS t \
                     LEFT JOIN {processes} AS p ON p.id = t.claimed_by \
                 WHERE t.id = $1"
            ),
        }
    }
}

fn status(code: i32) -> TaskStatus {
    match code {
        0 => TaskStatus::Pending,
        1 => TaskStatus::Running,
        2 => TaskStatus::Succeeded,
        4 => TaskStatus::Cancelled,
        _ => TaskStatus::Failed,
    }
}

fn attempts(row: &Row, column: usize) -> PgResult<u32> {
    Ok(u32::try_from(row.try_get::<_, i32>(column)?).unwrap_or(0))
}

pub(super) async fn task_info(
    conn: &Client,
    sql: &InspectSql,
    id: TaskId,
) -> PgResult<Option<InfoRecord>> {
    let statement = conn.prepare_cached(&sql.info).await?;
    let Some(row) = conn.query_opt(&statement, &[&uuid(&id)]).await? else {
        return Ok(None);
    };
    Ok(Some(InfoRecord {
        id: task_id(row.try_get(0)?),
        queue: row.try_get(1)?,
        payload: row.try_get(2)?,
        attempts: attempts(&row, 3)?,
        created_at: row.try_get(4)?,
        run_at: row.try_get(5)?,
        claimed_at: row.try_get(6)?,
        last_executed_at: row.try_get(7)?,
        last_duration: row.try_get::<_, Option<i64>>(8)?.map(micros),
        errors: row.try_get(9)?,
        claimed_by: row.try_get(10)?,
        lease_renewed_at: row.try_get(11)?,
        lease_until: row.try_get(12)?,
        expires_at: row.try_get(13)?,
        status: status(row.try_get(14)?),
        priority: row.try_get(15)?,
        pending_expires_at: row.try_get(16)?,
    }))
}

pub(super) async fn task_page(
    conn: &Client,
    sql: &InspectSql,
    query: &ListQuery,
) -> PgResult<Vec<SummaryRecord>> {
    let after = query.after_or_start();
    let limit = i64::from(query.limit);
    let (created_from, created_to) = (query.created.from, query.created.to);
    let (due_from, due_to) = (query.due.from, query.due.to);
    let succeeded = query.kind == ListKind::Succeeded;
    let cancelled = query.kind == ListKind::Cancelled;
    let mut params: Vec<&(dyn ToSql + Sync)> =
        vec![&limit, &after.key, &after.seq, &created_from, &created_to];
    let text = match query.kind {
        ListKind::Waiting => {
            params.extend([&due_from as &(dyn ToSql + Sync), &due_to]);
            match &query.queue {
                Some(_) => {
                    params.extend([&query.queue as &(dyn ToSql + Sync), &after.priority]);
                    &sql.waiting_one_queue
                }
                None => {
                    params.push(&after.priority);
                    &sql.waiting_all_queues
                }
            }
        }
        ListKind::Running => {
            params.extend([&due_from as &(dyn ToSql + Sync), &due_to, &query.queue]);
            &sql.running
        }
        ListKind::Succeeded | ListKind::Failed | ListKind::Cancelled => {
            params.extend([&succeeded as &(dyn ToSql + Sync), &cancelled, &query.queue]);
            &sql.completed
        }
    };
    let statement = conn.prepare_cached(text).await?;
    let rows = conn.query(&statement, &params).await?;
    rows.iter().map(summary_record).collect()
}

fn summary_record(row: &Row) -> PgResult<SummaryRecord> {
    Ok(SummaryRecord {
        id: task_id(row.try_get(0)?),
        queue: row.try_get(1)?,
        status: status(row.try_get(2)?),
        attempts: attempts(row, 3)?,
        created_at: row.try_get(4)?,
        run_at: row.try_get(5)?,
        claimed_at: row.try_get(6)?,
        last_executed_at: row.try_get(7)?,
        last_duration: row.try_get::<_, Option<i64>>(8)?.map(micros),
        last_error: row.try_get(9)?,
        keyset: Keyset {
            priority: row.try_get::<_, Option<i16>>(12)?.unwrap_or(0),
            key: row.try_get(10)?,
            seq: row.try_get(11)?,
        },
    })
}

pub(super) async fn task_facts(
    conn: &Client,
    sql: &InspectSql,
    id: TaskId,
    now: Option<i64>,
    live_within: i64,
) -> PgResult<Facts> {
    let id = uuid(&id);
    let statement = conn.prepare_cached(&sql.facts).await?;
    if let Some(row) = conn
        .query_opt(&statement, &[&id, &now, &live_within])
        .await?
    {
        let state: i32 = row.try_get(14)?;
        let claimed_at: Option<i64> = row.try_get(3)?;
        return Ok(match (state, claimed_at) {
            (2.., _) => Facts::Completed {
                status: status(state),
                finished_at: row.try_get(15)?,
            },
            (1, Some(claimed_at)) => Facts::Running {
                claimed_at,
                claimed_by: row.try_get(4)?,
                process: match (row.try_get(10)?, row.try_get(11)?) {
                    (Some(host), Some(pid)) => Some(ProcessRecord { host, pid }),
                    _ => None,
                },
                lease_renewed_at: row.try_get(5)?,
                lease_until: row.try_get(6)?,
            },
            _ => Facts::Waiting {
                queue: row.try_get(0)?,
                run_at: row.try_get(1)?,
                attempts: attempts(&row, 2)?,
                paused_at: row.try_get(7)?,
                live_processes: row.try_get::<_, Option<i64>>(8)?.map_or(0, count),
                ahead: row.try_get::<_, Option<i64>>(9)?.map_or(0, count),
                expires_at: row.try_get(13)?,
                now: row.try_get(12)?,
            },
        });
    }
    Ok(Facts::NotFound)
}

#[cfg(test)]
pub(super) async fn inspect_fixture(
    conn: &Client,
    sql: &InspectSql,
    fixture: crate::storage::inspect::Fixture,
) -> PgResult<()> {
    use crate::storage::inspect::Fixture;
    let schema = &sql.schema;
    match fixture {
        Fixture::Process {
            id,
            host,
            pid,
            queues,
            last_seen_at,
        } => {
            let queues = serde_json::to_string(&queues).unwrap_or_default();
            conn.execute(
                &format!(
                    "INSERT INTO {schema}.backlite_processes \
                     (id, host, pid, queues, workers, started_at, last_seen_at) \
                     VALUES ($1::text::uuid, $2, $3, $4::text::jsonb, 4, $5, $5)"
                ),
                &[&id, &host, &pid, &queues, &last_seen_at],
            )
            .await?;
        }
        Fixture::ClaimedBy {
            task,
            process,
            renewed_at,
        } => {
            conn.execute(
                &format!(
                    "UPDATE {schema}.backlite_tasks SET claimed_by = $2::text::uuid, \
                     lease_renewed_at = $3 WHERE id = $1"
                ),
                &[&uuid(&task), &process, &renewed_at],
            )
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
crate::storage::inspect_conformance::inspect_conformance!(conformance, |queues| async move {
    crate::storage::postgres::open_for_test(queues).await
});

#[cfg(test)]
mod plans {
    use tokio_postgres::types::ToSql;

    use crate::storage::Driver;
    use crate::storage::Retain;
    use crate::storage::conformance::{LEASE, done, new_task};

    async fn plan(conn: &super::Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> String {
        let statement = conn.prepare(&format!("EXPLAIN {sql}")).await.unwrap();
        let rows = conn.query(&statement, params).await.unwrap();
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every list page, filtered by state, queue, created and due range, walks an index from
    /// the cursor on, and a task's facts read its row and index ranges: no statement costs a
    /// pass over a table, whatever its size.
    #[tokio::test]
    async fn pages_and_facts_read_indexes_not_tables() {
        let Some(d) = crate::storage::postgres::open_for_test(vec!["a", "b"]).await else {
            return;
        };
        let payload = format!("{{\"body\":\"{}\"}}", "x".repeat(300));
        for queue in ["a", "b", "c"] {
            let tasks: Vec<_> = (0..4_000).map(|i| new_task(queue, i, &payload)).collect();
            d.task_insert_many(tasks).await.unwrap();
        }
        let claimed = d.task_claim(None, 500, LEASE, Some(10_000)).await.unwrap();
        let retain = Some(Retain {
            payload: true,
            expires_at: Some(1_000_000),
        });
        let finished = claimed
            .iter()
            .take(400)
            .enumerate()
            .map(|(i, c)| done(c.id, c.token, (i % 3 == 0).then_some("no"), retain))
            .collect();
        d.task_complete_many(finished).await.unwrap();
        let conn = d.pool.get().await.unwrap();
        let schema = &d.statements.schema;
        conn.batch_execute(&format!("VACUUM ANALYZE {schema}.backlite_tasks"))
            .await
            .unwrap();
        // Whether an index serves each statement, whatever VACUUM could mark visible while
        // other tests hold snapshots: where none does, the plan still shows a Seq Scan.
        conn.batch_execute("SET enable_seqscan = off")
            .await
            .unwrap();
        let sql = &d.inspect;
        let (limit, key, seq, priority) = (26i64, 500i64, 1_000i64, 0i16);
        let (from, to) = (i64::MIN, i64::MAX);
        let (due_to, created_from) = (3_000i64, 500i64);
        let queue = Some("b".to_owned());
        let none: Option<String> = None;
        let (ok, cancelled) = (false, false);
        let id = uuid::Uuid::now_v7();
        let (now, live) = (Some(5_000i64), 60_000i64);
        let cases = vec![
            (
                "pending of one queue",
                plan(
                    &conn,
                    &sql.waiting_one_queue,
                    &[
                        &limit, &key, &seq, &from, &to, &from, &due_to, &queue, &priority,
                    ],
                )
                .await,
                "backlite_tasks_due",
            ),
            (
                "scheduled of every queue, created since",
                plan(
                    &conn,
                    &sql.waiting_all_queues,
                    &[
                        &limit,
                        &key,
                        &seq,
                        &created_from,
                        &to,
                        &due_to,
                        &to,
                        &priority,
                    ],
                )
                .await,
                "backlite_tasks_due",
            ),
            (
                "running of one queue",
                plan(
                    &conn,
                    &sql.running,
                    &[&limit, &key, &seq, &from, &to, &from, &to, &queue],
                )
                .await,
                "backlite_tasks_running",
            ),
            (
                "failed of every queue",
                plan(
                    &conn,
                    &sql.completed,
                    &[&limit, &to, &to, &from, &to, &ok, &cancelled, &none],
                )
                .await,
                "backlite_tasks_ended",
            ),
            (
                "facts",
                plan(&conn, &sql.facts, &[&id, &now, &live]).await,
                "backlite_tasks_due",
            ),
            (
                "info",
                plan(&conn, &sql.info, &[&id]).await,
                "backlite_tasks_pkey",
            ),
        ];
        for (name, plan, index) in cases {
            assert!(
                !plan.contains("Seq Scan on backlite_tasks"),
                "{name} scans a table:\n{plan}"
            );
            assert!(
                plan.contains(index),
                "{name} does not read {index}:\n{plan}"
            );
        }
    }
}
