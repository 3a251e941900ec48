//! The statements of periodic tasks. A tick claim is one transaction: the compare-and-set on
//! `next_run_at` (a concurrent claimer waits for the row's lock, then finds the tick moved and
//! changes nothing), the insert of the ticks' tasks, and a NOTIFY when one was inserted.

use super::sql::now_or;
use super::{InsertColumns, Statements};
use crate::storage::Millis;
use crate::storage::periodic::{ScheduleDef, ScheduleRow, Schedules, TickClaim, TickOutcome};

type PgResult<T> = Result<T, tokio_postgres::Error>;

fn schedules(sql: &Statements) -> String {
    format!("{}.backlite_schedules", sql.schema)
}

/// Stores a new schedule, or a changed one with its new first tick; an unchanged one keeps
/// its stored tick. Returns the schedule as stored. The conflict arm always updates (to the
/// same values when unchanged) so that it locks and returns the row even when another host
/// inserted it after this statement's snapshot was taken.
fn register_sql(sql: &Statements) -> String {
    format!(
        "INSERT INTO {table} AS s (name, definition, next_run_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET \
             next_run_at = CASE WHEN s.definition = excluded.definition \
                 THEN s.next_run_at ELSE excluded.next_run_at END, \
             definition = excluded.definition \
         RETURNING name, definition, next_run_at",
        table = schedules(sql)
    )
}

/// The schedules of the names in `$1`, with the server's clock (or `$2`) on every row, and a
/// row of the clock alone when there is none.
fn list_sql(sql: &Statements) -> String {
    format!(
        "WITH clock AS (SELECT {now} AS now) \
         SELECT clock.now, s.name, s.definition, s.next_run_at \
         FROM clock LEFT JOIN {table} s ON s.name = ANY($1::text[]) \
         ORDER BY s.name",
        now = now_or("$2"),
        table = schedules(sql)
    )
}

fn advance_sql(sql: &Statements) -> String {
    format!(
        "UPDATE {} SET next_run_at = $3 WHERE name = $1 AND next_run_at = $2",
        schedules(sql)
    )
}

/// Inserts each tick's task unless it is stored already, waiting, running or retained: its
/// id is the tick's, and every task, ended ones included, is a row of the one table, so the
/// primary key refuses a second copy.
fn insert_ticks_sql(sql: &Statements) -> String {
    format!(
        "INSERT INTO {schema}.backlite_tasks \
             (id, queue, task, run_at, created_at, priority, expires_at, unique_key, unique_for) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::int8[], $5::int8[], \
                              $6::int2[], $7::int8[], $8::bytea[], $9::int8[]) \
         ON CONFLICT (id) DO NOTHING",
        schema = sql.schema
    )
}

pub(super) async fn schedule_register(
    conn: &mut deadpool_postgres::Client,
    sql: &Statements,
    definitions: Vec<ScheduleDef>,
) -> PgResult<Vec<ScheduleRow>> {
    let tx = conn.transaction().await?;
    let register = tx.prepare_cached(&register_sql(sql)).await?;
    let mut stored = Vec::with_capacity(definitions.len());
    for def in &definitions {
        let row = tx
            .query_one(&register, &[&def.name, &def.definition, &def.next_run_at])
            .await?;
        stored.push(ScheduleRow {
            name: row.try_get(0)?,
            definition: row.try_get(1)?,
            next_run_at: row.try_get(2)?,
        });
    }
    tx.commit().await?;
    Ok(stored)
}

pub(super) async fn schedule_list(
    conn: &deadpool_postgres::Client,
    sql: &Statements,
    names: Vec<String>,
    now: Option<Millis>,
) -> PgResult<Schedules> {
    let list = conn.prepare_cached(&list_sql(sql)).await?;
    let found = conn.query(&list, &[&names, &now]).await?;
    let mut schedules = Schedules {
        rows: Vec::with_capacity(found.len()),
        now: 0,
    };
    for row in found {
        schedules.now = row.try_get(0)?;
        if let Some(name) = row.try_get::<_, Option<String>>(1)? {
            schedules.rows.push(ScheduleRow {
                name,
                definition: row.try_get(2)?,
                next_run_at: row.try_get(3)?,
            });
        }
    }
    Ok(schedules)
}

pub(super) async fn schedule_tick(
    conn: &mut deadpool_postgres::Client,
    sql: &Statements,
    claim: TickClaim,
) -> PgResult<TickOutcome> {
    let tx = conn.transaction().await?;
    let advance = tx.prepare_cached(&advance_sql(sql)).await?;
    let advanced = tx
        .execute(
            &advance,
            &[&claim.name, &claim.expected, &claim.next_run_at],
        )
        .await?;
    if advanced == 0 {
        // Nothing was written: the rollback on drop only ends the transaction.
        return Ok(TickOutcome::Lost);
    }
    let mut inserted = 0;
    if !claim.tasks.is_empty() {
        let columns = InsertColumns::new(claim.tasks);
        let insert = tx.prepare_cached(&insert_ticks_sql(sql)).await?;
        inserted = tx.execute(&insert, &columns.params()).await?;
        if inserted > 0 {
            tx.execute(&sql.notify, &[&sql.channel]).await?;
        }
    }
    tx.commit().await?;
    Ok(TickOutcome::Claimed { inserted })
}
