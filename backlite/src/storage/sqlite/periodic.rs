//! The statements of periodic tasks. The writer runs `schedule_register` and `schedule_tick`
//! inside its `BEGIN IMMEDIATE` transactions, which serialize them with every other process
//! on the file; the compare-and-set on `next_run_at` and the tick's primary key would keep a
//! tick single on any connection.

use rusqlite::{Connection, params};

use crate::storage::periodic::{ScheduleDef, ScheduleRow, Schedules, TickClaim, TickOutcome};
use crate::storage::{Millis, NewTask};

/// Stores a new schedule, or a changed one with its new first tick; an unchanged one keeps
/// its stored tick.
const REGISTER: &str = "INSERT INTO backlite_schedules (name, definition, next_run_at) \
     VALUES (?1, ?2, ?3) \
     ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, \
         next_run_at = excluded.next_run_at \
     WHERE backlite_schedules.definition <> excluded.definition";

const SELECT: &str = "SELECT name, definition, next_run_at FROM backlite_schedules WHERE name = ?1";

/// The compare-and-set: moves the schedule on only from the tick the claimer read.
const ADVANCE: &str =
    "UPDATE backlite_schedules SET next_run_at = ?3 WHERE name = ?1 AND next_run_at = ?2";

/// Inserts a tick's task unless it is stored already, waiting, running or retained: its id is
/// the tick's, and every task, ended ones included, is a row of the one table, so the
/// primary key refuses a second copy.
pub(super) const INSERT_TICK: &str = "INSERT INTO backlite_tasks \
     (id, queue, task, run_at, created_at, priority, expires_at, unique_key, unique_for) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (id) DO NOTHING";

pub(crate) fn schedule_register(
    conn: &Connection,
    schedules: &[ScheduleDef],
) -> rusqlite::Result<Vec<ScheduleRow>> {
    let mut register = conn.prepare_cached(REGISTER)?;
    let mut select = conn.prepare_cached(SELECT)?;
    let mut stored = Vec::with_capacity(schedules.len());
    for schedule in schedules {
        register.execute(params![
            schedule.name,
            schedule.definition,
            schedule.next_run_at
        ])?;
        stored.push(select.query_row([&schedule.name], schedule_row)?);
    }
    Ok(stored)
}

pub(crate) fn schedule_list(
    conn: &Connection,
    names: &[String],
    now: Millis,
) -> rusqlite::Result<Schedules> {
    let mut select = conn.prepare_cached(SELECT)?;
    let mut rows = Vec::with_capacity(names.len());
    for name in names {
        match select.query_row([name], schedule_row) {
            Ok(row) => rows.push(row),
            Err(rusqlite::Error::QueryReturnedNoRows) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Schedules { rows, now })
}

pub(crate) fn schedule_tick(conn: &Connection, claim: &TickClaim) -> rusqlite::Result<TickOutcome> {
    let advanced = conn.prepare_cached(ADVANCE)?.execute(params![
        claim.name,
        claim.expected,
        claim.next_run_at
    ])?;
    if advanced == 0 {
        return Ok(TickOutcome::Lost);
    }
    let mut insert = conn.prepare_cached(INSERT_TICK)?;
    let mut inserted = 0;
    for NewTask {
        id,
        queue,
        payload,
        created_at,
        run_at,
        priority,
        expires_at,
        unique_key,
        unique_for,
    } in &claim.tasks
    {
        inserted += insert.execute(params![
            &id.as_bytes()[..],
            queue,
            payload,
            run_at,
            created_at,
            priority,
            expires_at,
            unique_key,
            unique_for
        ])? as u64;
    }
    Ok(TickOutcome::Claimed { inserted })
}

fn schedule_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRow> {
    Ok(ScheduleRow {
        name: row.get(0)?,
        definition: row.get(1)?,
        next_run_at: row.get(2)?,
    })
}
