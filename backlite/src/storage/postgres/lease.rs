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
            // One statement: the renewal of every claim still current, the heartbeat, and the
            // removal of the processes not seen for a lease (never this one: a statement may
            // not both update and delete a row).
            //
            // Claims whose rows are locked at this moment are skipped, not waited for: the
            // locker is this client's own completer or hand-back (the claim is ending), or a
            // release or a cancel. Waiting would order this statement's row locks against
            // the completer's, and PostgreSQL resolves such a deadlock only after
            // `deadlock_timeout` (1 s), long enough for a short lease to end. A skipped claim
            // is renewed at the next tick. `held` reads the claims still current (in the
            // statement's snapshot, where a row being deleted is still there): those not in
            // it are lost. Rows come back as (0, renewed id, cancel requested), (1, held id)
            // and (2) for the heartbeat.
            renew: format!(
                "WITH clock AS (SELECT {now} AS now), \
                 u AS (SELECT * FROM unnest($1::uuid[], $2::int8[]) AS u(id, fence)), \
                 free AS ( \
                     SELECT t.id FROM {tasks} AS t JOIN u ON t.id = u.id AND t.fence = u.fence \
                     WHERE t.state = 1 \
                     FOR UPDATE OF t SKIP LOCKED), \
                 renewed AS ( \
                     UPDATE {tasks} AS t SET lease_until = clock.now + $3::int8, \
                         lease_renewed_at = clock.now \
                     FROM free, clock WHERE t.id = free.id \
                     RETURNING t.id, t.cancel_requested_at IS NOT NULL AS cancel), \
                 held AS ( \
                     SELECT u.id FROM u WHERE EXISTS ( \
                         SELECT 1 FROM {tasks} AS t \
                         WHERE t.id = u.id AND t.fence = u.fence AND t.state = 1)), \
                 seen AS ( \
                     UPDATE {processes} AS p SET last_seen_at = clock.now FROM clock \
                     WHERE p.id = $5::uuid RETURNING p.id), \
                 gone AS ( \
                     DELETE FROM {processes} AS p USING clock \
                     WHERE p.last_seen_at < clock.now - $3::int8 AND p.id <> $5::uuid) \
                 SELECT 0, r.id, r.cancel FROM renewed AS r \
                 UNION ALL SELECT 1, h.id, false FROM held AS h \
                 UNION ALL SELECT 2, NULL::uuid, false FROM seen",
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
    let fences: Vec<i64> = tasks.iter().map(|(_, token)| token.fence).collect();
    let statement = conn.prepare_cached(&sql.renew).await?;
    let rows = conn
        .query(
            &statement,
            &[&ids, &fences, &duration_millis(lease), &now, &process.0],
        )
        .await?;
    let mut renewal = Renewal::default();
    let mut held = std::collections::HashSet::with_capacity(rows.len());
    for row in rows {
        match row.try_get::<_, i32>(0)? {
            0 => {
                renewal.renewed += 1;
                if row.try_get(2)? {
                    renewal.cancel_requested.push(task_id(row.try_get(1)?));
                }
            }
            1 => {
                held.insert(task_id(row.try_get(1)?));
            }
            _ => renewal.registered = true,
        }
    }
    renewal.lost = tasks
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !held.contains(id))
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

#[cfg(test)]
crate::storage::lease_conformance::lease_conformance!(conformance, |queues| async move {
    crate::storage::postgres::open_for_test(queues).await
});

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::storage::conformance::{LEASE, new_task};
    use crate::storage::{Driver, ProcessId};

    /// A claim whose row another transaction holds locked (the client's own completer, say) is
    /// skipped, not waited for: waiting would let the two deadlock, and PostgreSQL breaks a
    /// deadlock only after a second. It is neither renewed nor reported lost.
    #[tokio::test]
    async fn a_renewal_skips_a_locked_claim_instead_of_waiting_for_it() {
        let Some(d) = super::super::open_for_test(vec!["a"]).await else {
            return;
        };
        let p = ProcessId::new();
        let (locked, free) = (new_task("a", 10, "locked"), new_task("a", 11, "free"));
        d.task_insert_many(vec![locked.clone(), free.clone()])
            .await
            .unwrap();
        let claimed = d.task_claim(Some(p), 2, LEASE, Some(100)).await.unwrap();
        let held: Vec<_> = claimed.iter().map(|c| (c.id, c.token)).collect();
        let mut conn = d.pool.get().await.unwrap();
        let tx = conn.transaction().await.unwrap();
        let lock = format!(
            "SELECT 1 FROM {}.backlite_tasks WHERE id = $1 FOR UPDATE",
            d.statements.schema
        );
        tx.execute(&lock, &[&super::uuid(&locked.id)])
            .await
            .unwrap();
        let renewal = tokio::time::timeout(
            Duration::from_millis(900),
            d.task_renew_leases(p, held, LEASE, Some(600)),
        )
        .await
        .expect("the renewal waited for the lock")
        .unwrap();
        tx.rollback().await.unwrap();
        assert!(renewal.lost.is_empty(), "{renewal:?}");
        assert_eq!(renewal.renewed, 1, "{renewal:?}");
        // The free claim's lease now ends at 1600, the locked one's still at 1100.
        assert_eq!(d.task_release_stuck(Some(1100)).await.unwrap(), 1);
        assert_eq!(d.task_release_stuck(Some(1600)).await.unwrap(), 1);
    }

    /// A release skips a stale claim that another transaction holds (a batch of outcomes
    /// recording it), releases the others, and takes the skipped one on a later pass.
    #[tokio::test]
    async fn a_release_skips_a_locked_claim_instead_of_waiting_for_it() {
        let Some(d) = super::super::open_for_test(vec!["a"]).await else {
            return;
        };
        let (locked, free) = (new_task("a", 10, "locked"), new_task("a", 11, "free"));
        d.task_insert_many(vec![locked.clone(), free.clone()])
            .await
            .unwrap();
        assert_eq!(
            d.task_claim(None, 2, LEASE, Some(100)).await.unwrap().len(),
            2
        );
        let mut conn = d.pool.get().await.unwrap();
        let tx = conn.transaction().await.unwrap();
        let lock = format!(
            "SELECT 1 FROM {}.backlite_tasks WHERE id = $1 FOR UPDATE",
            d.statements.schema
        );
        tx.execute(&lock, &[&super::uuid(&locked.id)])
            .await
            .unwrap();
        let released = tokio::time::timeout(
            Duration::from_millis(900),
            d.task_release_stuck(Some(5_000)),
        )
        .await
        .expect("the release waited for the lock")
        .unwrap();
        assert_eq!(released, 1);
        tx.rollback().await.unwrap();
        assert_eq!(d.task_release_stuck(Some(5_000)).await.unwrap(), 1);
        assert_eq!(d.task_release_stuck(Some(5_000)).await.unwrap(), 0);
    }
}
