//! The copy operations of the PostgreSQL driver (`backlite copy`): task rows whole in keyset
//! pages by id, a page inserted by one `unnest` statement that skips ids already stored (so
//! that a copy run again inserts nothing twice), and the census a copy is verified by.
//!
//! `seq`, the tie-break of the claim order, is given by the insert in the order of the page,
//! which is id order: ids are UUID v7, in the order the tasks were added.

use tokio_postgres::Row;

use super::{PgDriver, task_id, uuid};
use crate::BoxFuture;
use crate::error::Result;
use crate::storage::copy::{Census, CopyQueue, CopySchedule, CopyTask, MetaInserted};
use crate::task::TaskId;

/// Every column, in the order [`task`] reads them and the insert writes them.
const COLUMNS: &str = "id, queue, state, task, attempts, run_at, created_at, priority, \
     expires_at, claimed_at, lease_until, fence, claimed_by, lease_renewed_at, \
     cancel_requested_at, last_executed_at, last_duration_us, last_error, errors, finished_at, \
     unique_key, unique_for";

/// The first page (`after` false: `$1` is the limit) or a later one (`$1` the last id read,
/// `$2` the limit).
fn page_sql(schema: &str, after: bool) -> String {
    let columns = COLUMNS
        .replace("claimed_by", "claimed_by::text")
        .replace("errors", "errors::text");
    let (filter, limit) = match after {
        true => ("WHERE id > $1 ", "$2"),
        false => ("", "$1"),
    };
    format!("SELECT {columns} FROM {schema}.backlite_tasks {filter}ORDER BY id LIMIT {limit}")
}

fn insert_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.backlite_tasks ({COLUMNS}) \
         SELECT id, queue, state, task, attempts, run_at, created_at, priority, expires_at, \
             claimed_at, lease_until, fence, claimed_by::uuid, lease_renewed_at, \
             cancel_requested_at, last_executed_at, last_duration_us, last_error, \
             errors::jsonb, finished_at, unique_key, unique_for \
         FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::bytea[], $5::int4[], $6::int8[], \
             $7::int8[], $8::int2[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], \
             $13::text[], $14::int8[], $15::int8[], $16::int8[], $17::int8[], $18::text[], \
             $19::text[], $20::int8[], $21::bytea[], $22::int8[]) WITH ORDINALITY \
             AS c({COLUMNS}, n) \
         ORDER BY n \
         ON CONFLICT (id) DO NOTHING"
    )
}

fn meta_sql(schema: &str) -> String {
    format!(
        "WITH s AS ( \
             INSERT INTO {schema}.backlite_schedules (name, definition, next_run_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) \
             ON CONFLICT (name) DO NOTHING RETURNING 1), \
         q AS ( \
             INSERT INTO {schema}.backlite_queues (name, paused_at) \
             SELECT * FROM unnest($4::text[], $5::int8[]) \
             ON CONFLICT (name) DO NOTHING RETURNING 1) \
         SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM q)"
    )
}

fn task(row: &Row) -> Result<CopyTask, tokio_postgres::Error> {
    Ok(CopyTask {
        id: task_id(row.try_get(0)?),
        queue: row.try_get(1)?,
        state: row.try_get(2)?,
        payload: row.try_get(3)?,
        attempts: i64::from(row.try_get::<_, i32>(4)?),
        run_at: row.try_get(5)?,
        created_at: row.try_get(6)?,
        priority: row.try_get(7)?,
        expires_at: row.try_get(8)?,
        claimed_at: row.try_get(9)?,
        lease_until: row.try_get(10)?,
        fence: row.try_get(11)?,
        claimed_by: row.try_get(12)?,
        lease_renewed_at: row.try_get(13)?,
        cancel_requested_at: row.try_get(14)?,
        last_executed_at: row.try_get(15)?,
        last_duration_us: row.try_get(16)?,
        last_error: row.try_get(17)?,
        errors: row.try_get(18)?,
        finished_at: row.try_get(19)?,
        unique_key: row.try_get(20)?,
        unique_for: row.try_get(21)?,
    })
}

/// A page of rows as the insert's 22 arrays.
#[derive(Default)]
struct Columns {
    id: Vec<uuid::Uuid>,
    queue: Vec<String>,
    state: Vec<i16>,
    payload: Vec<Option<Vec<u8>>>,
    attempts: Vec<i32>,
    run_at: Vec<i64>,
    created_at: Vec<i64>,
    priority: Vec<i16>,
    expires_at: Vec<Option<i64>>,
    claimed_at: Vec<Option<i64>>,
    lease_until: Vec<Option<i64>>,
    fence: Vec<i64>,
    claimed_by: Vec<Option<String>>,
    lease_renewed_at: Vec<Option<i64>>,
    cancel_requested_at: Vec<Option<i64>>,
    last_executed_at: Vec<Option<i64>>,
    last_duration_us: Vec<Option<i64>>,
    last_error: Vec<Option<String>>,
    errors: Vec<Option<String>>,
    finished_at: Vec<Option<i64>>,
    unique_key: Vec<Option<Vec<u8>>>,
    unique_for: Vec<Option<i64>>,
}

impl Columns {
    fn new(tasks: Vec<CopyTask>) -> Columns {
        let mut c = Columns::default();
        for t in tasks {
            c.id.push(uuid(&t.id));
            c.queue.push(t.queue);
            c.state.push(t.state);
            c.payload.push(t.payload);
            c.attempts
                .push(i32::try_from(t.attempts).unwrap_or(i32::MAX));
            c.run_at.push(t.run_at);
            c.created_at.push(t.created_at);
            c.priority.push(t.priority);
            c.expires_at.push(t.expires_at);
            c.claimed_at.push(t.claimed_at);
            c.lease_until.push(t.lease_until);
            c.fence.push(t.fence);
            c.claimed_by.push(t.claimed_by);
            c.lease_renewed_at.push(t.lease_renewed_at);
            c.cancel_requested_at.push(t.cancel_requested_at);
            c.last_executed_at.push(t.last_executed_at);
            c.last_duration_us.push(t.last_duration_us);
            c.last_error.push(t.last_error);
            c.errors.push(t.errors);
            c.finished_at.push(t.finished_at);
            c.unique_key.push(t.unique_key);
            c.unique_for.push(t.unique_for);
        }
        c
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 22] {
        [
            &self.id,
            &self.queue,
            &self.state,
            &self.payload,
            &self.attempts,
            &self.run_at,
            &self.created_at,
            &self.priority,
            &self.expires_at,
            &self.claimed_at,
            &self.lease_until,
            &self.fence,
            &self.claimed_by,
            &self.lease_renewed_at,
            &self.cancel_requested_at,
            &self.last_executed_at,
            &self.last_duration_us,
            &self.last_error,
            &self.errors,
            &self.finished_at,
            &self.unique_key,
            &self.unique_for,
        ]
    }
}

impl PgDriver {
    pub(super) fn copy_tasks_page(
        &self,
        after: Option<TaskId>,
        limit: usize,
    ) -> BoxFuture<Result<Vec<CopyTask>>> {
        let after = after.map(|id| uuid(&id));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn, st| {
            Box::pin(async move {
                let rows = match after {
                    Some(after) => {
                        conn.query(&page_sql(&st.schema, true), &[&after, &limit])
                            .await?
                    }
                    None => conn.query(&page_sql(&st.schema, false), &[&limit]).await?,
                };
                rows.iter().map(task).collect()
            })
        })
    }

    pub(super) fn copy_insert(&self, tasks: Vec<CopyTask>) -> BoxFuture<Result<u64>> {
        let columns = Columns::new(tasks);
        self.with(move |conn, st| {
            Box::pin(async move {
                conn.execute(&insert_sql(&st.schema), &columns.params())
                    .await
            })
        })
    }

    pub(super) fn copy_meta(
        &self,
        schedules: Vec<CopySchedule>,
        queues: Vec<CopyQueue>,
    ) -> BoxFuture<Result<MetaInserted>> {
        let names: Vec<String> = schedules.iter().map(|s| s.name.clone()).collect();
        let definitions: Vec<String> = schedules.iter().map(|s| s.definition.clone()).collect();
        let next: Vec<i64> = schedules.iter().map(|s| s.next_run_at).collect();
        let queue_names: Vec<String> = queues.iter().map(|q| q.name.clone()).collect();
        let paused: Vec<Option<i64>> = queues.iter().map(|q| q.paused_at).collect();
        self.with(move |conn, st| {
            Box::pin(async move {
                let row = conn
                    .query_one(
                        &meta_sql(&st.schema),
                        &[&names, &definitions, &next, &queue_names, &paused],
                    )
                    .await?;
                Ok(MetaInserted {
                    schedules: row.try_get::<_, i64>(0)? as u64,
                    queues: row.try_get::<_, i64>(1)? as u64,
                })
            })
        })
    }

    pub(super) fn copy_count(&self) -> BoxFuture<Result<Census>> {
        self.with(move |conn, st| {
            Box::pin(async move {
                let schema = &st.schema;
                let counts = conn
                    .query(
                        &format!(
                            "SELECT queue, state, count(*) FROM {schema}.backlite_tasks \
                             GROUP BY queue, state"
                        ),
                        &[],
                    )
                    .await?;
                let mut tasks = Vec::with_capacity(counts.len());
                for r in &counts {
                    tasks.push((r.try_get(0)?, r.try_get(1)?, r.try_get::<_, i64>(2)? as u64));
                }
                let rows = conn
                    .query(
                        &format!(
                            "SELECT name, definition, next_run_at FROM {schema}.backlite_schedules"
                        ),
                        &[],
                    )
                    .await?;
                let mut schedules = Vec::with_capacity(rows.len());
                for r in &rows {
                    schedules.push(CopySchedule {
                        name: r.try_get(0)?,
                        definition: r.try_get(1)?,
                        next_run_at: r.try_get(2)?,
                    });
                }
                let rows = conn
                    .query(
                        &format!("SELECT name, paused_at FROM {schema}.backlite_queues"),
                        &[],
                    )
                    .await?;
                let mut queues = Vec::with_capacity(rows.len());
                for r in &rows {
                    queues.push(CopyQueue {
                        name: r.try_get(0)?,
                        paused_at: r.try_get(1)?,
                    });
                }
                // Sorted here, not by SQL: the two backends' collations order names
                // differently.
                tasks.sort();
                schedules.sort();
                queues.sort();
                Ok(Census {
                    tasks,
                    schedules,
                    queues,
                })
            })
        })
    }
}

#[cfg(test)]
crate::storage::copy_conformance::copy_conformance!(copy_conformance, |queues| async move {
    crate::storage::postgres::open_for_test(queues).await
});

/// The cut-over's path: an SQLite database into PostgreSQL.
#[cfg(test)]
#[tokio::test]
async fn sqlite_copies_into_postgres_whole() {
    use crate::storage::copy_conformance::{RUN, copy_between};
    let Some(to) = crate::storage::postgres::open_for_test(vec![RUN]).await else {
        return;
    };
    let from = crate::storage::sqlite::open_for_test(false, vec![RUN]);
    copy_between(&from, &to).await;
}
