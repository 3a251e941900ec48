//! The PostgreSQL statements of leases and processes: a process's renewal of its claims with
//! its heartbeat (one statement), and the processes table. Times come from the server's clock
//! unless a test gives one, as for claims.

use std::time::Duration;

use super::sql::now_or;
use super::{task_id, uuid};
use crate::storage::{ClaimToken, Millis, ProcessId, ProcessRecord, Renewal, duration_millis};
use crate::task::TaskId;

type PgResult<T> = Result<T, tokio_postgres::Error>;

pub(crate) struct Statements {
    /// The tasks table, for the test-only write.
    #[cfg_attr(not(test), allow(dead_code, reason = "only the lease suite writes it"))]
    tasks: String,
    renew: String,
    register: String,
    remove: String,
    list: String,
}

impl Statements {
    /// `schema` is already a quoted identifier.
    pub(crate) fn new(schema: &str) -> Statements {
        let tasks = format!("{schema}.backlite_tasks");
        let processes = format!("{schema}.backlite_processes");
        Statements {
            tasks: tasks.clone(),
            // One statement: the renewal of every claim still current, the heartbeat, and the
            // removal of the processes not seen for a lease (never this one: a statement may
            // not both update and delete a row). The heartbeat's row comes back with a NULL
            // id; the caller reports the claims that did not come back as lost.
            renew: format!(
                "WITH clock AS (SELECT {now} AS now), \
                 renewed AS ( \
                     UPDATE {tasks} AS t SET lease_until = clock.now + $3::int8, \
                         lease_renewed_at = clock.now \
                     FROM unnest($1::uuid[], $2::int8[]) AS u(id, fence), clock \
                     WHERE t.id = u.id AND t.fence = u.fence AND t.claimed_at IS NOT NULL \
                     RETURNING t.id, t.cancel_requested_at IS NOT NULL AS cancel), \
                 seen AS ( \
                     UPDATE {processes} AS p SET last_seen_at = clock.now FROM clock \
                     WHERE p.id = $5::uuid RETURNING p.id), \
                 gone AS ( \
                     DELETE FROM {processes} AS p USING clock \
                     WHERE p.last_seen_at < clock.now - $3::int8 AND p.id <> $5::uuid) \
                 SELECT r.id, r.cancel FROM renewed AS r \
                 UNION ALL SELECT NULL::uuid, false FROM seen",
                now = now_or("$4")
            ),
            register: format!(
                "INSERT INTO {processes} \
                     (id, host, pid, queues, workers, started_at, last_seen_at) \
                 VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, {now}) \
                 ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
                now = now_or("$7")
            ),
            remove: format!("DELETE FROM {processes} WHERE id = $1"),
            list: format!(
                "SELECT id, host, pid, queues::text, workers, started_at, last_seen_at \
                 FROM {processes} WHERE last_seen_at >= {now} - $1::int8 \
                 ORDER BY started_at, id",
                now = now_or("$2")
            ),
        }
    }
}

pub(super) async fn renew(
    conn: &deadpool_postgres::Client,
    sql: &Statements,
    process: ProcessId,
    tasks: Vec<(TaskId, ClaimToken)>,
    lease: Duration,
    now: Option<Millis>,
) -> PgResult<Renewal> {
    let ids: Vec<uuid::Uuid> = tasks.iter().map(|(id, _)| uuid(id)).collect();
    let fences: Vec<i64> = tasks.iter().map(|(_, token)| token.0).collect();
    let statement = conn.prepare_cached(&sql.renew).await?;
    let rows = conn
        .query(
            &statement,
            &[&ids, &fences, &duration_millis(lease), &now, &process.0],
        )
        .await?;
    let mut renewal = Renewal::default();
    let mut renewed = std::collections::HashSet::with_capacity(rows.len());
    for row in rows {
        match row.try_get::<_, Option<uuid::Uuid>>(0)? {
            None => renewal.registered = true,
            Some(id) => {
                let id = task_id(id);
                renewed.insert(id);
                if row.try_get(1)? {
                    renewal.cancel_requested.push(id);
                }
            }
        }
    }
    renewal.lost = tasks
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !renewed.contains(id))
        .collect();
    Ok(renewal)
}

pub(super) async fn register(
    conn: &deadpool_postgres::Client,
    sql: &Statements,
    process: ProcessRecord,
    now: Option<Millis>,
) -> PgResult<()> {
    // serde_json writes a list of strings without fail.
    let queues = serde_json::to_string(&process.queues).unwrap_or_else(|_| "[]".into());
    let statement = conn.prepare_cached(&sql.register).await?;
    conn.execute(
        &statement,
        &[
            &process.id.0,
            &process.host,
            &i64::from(process.pid),
            &queues,
            &i32::try_from(process.workers).unwrap_or(i32::MAX),
            &process.started_at,
            &now,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn remove(
    conn: &deadpool_postgres::Client,
    sql: &Statements,
    process: ProcessId,
) -> PgResult<()> {
    let statement = conn.prepare_cached(&sql.remove).await?;
    conn.execute(&statement, &[&process.0]).await?;
    Ok(())
}

pub(super) async fn list(
    conn: &deadpool_postgres::Client,
    sql: &Statements,
    live_within: Duration,
    now: Option<Millis>,
) -> PgResult<Vec<ProcessRecord>> {
    let statement = conn.prepare_cached(&sql.list).await?;
    let rows = conn
        .query(&statement, &[&duration_millis(live_within), &now])
        .await?;
    let mut processes = Vec::with_capacity(rows.len());
    for row in rows {
        let queues: String = row.try_get(3)?;
        processes.push(ProcessRecord {
            id: ProcessId(row.try_get(0)?),
            host: row.try_get(1)?,
            pid: u32::try_from(row.try_get::<_, i64>(2)?).unwrap_or(0),
            // Written by `register` as a JSON list of strings; anything else reads as none.
            queues: serde_json::from_str(&queues).unwrap_or_default(),
            workers: u32::try_from(row.try_get::<_, i32>(4)?).unwrap_or(0),
            started_at: row.try_get(5)?,
            last_seen_at: row.try_get(6)?,
        });
    }
    Ok(processes)
}

/// What the control operations write to ask a running task to stop, for the lease suite.
#[cfg(test)]
pub(super) async fn request_cancel_for_test(
    conn: &deadpool_postgres::Client,
    sql: &Statements,
    id: TaskId,
) -> PgResult<()> {
    let update = format!(
        "UPDATE {} SET cancel_requested_at = 1 WHERE id = $1",
        sql.tasks
    );
    conn.execute(&update, &[&uuid(&id)]).await.map(drop)
}

#[cfg(test)]
crate::storage::lease_conformance::lease_conformance!(conformance, |queues| async move {
    crate::storage::postgres::open_for_test(queues).await
});
