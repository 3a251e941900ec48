//! The SQLite statements of leases and processes: a process's renewal of its claims with its
//! heartbeat, and the processes table. The writes are writer commands, so that a renewal is
//! one transaction (shared with whatever else commits in its group).

use rusqlite::types::{ToSql, Type};
use rusqlite::{Connection, params};

use super::sql::ClaimWrite;
use super::writer::Reply;
use crate::error::{Error, Result};
use crate::storage::{
    ClaimToken, Millis, ProcessId, ProcessRecord, Renewal, duration_millis, now_millis,
};
use crate::task::TaskId;

/// The writer's lease and process requests.
pub(crate) enum Command {
    Renew {
        process: ProcessId,
        tasks: Vec<(TaskId, ClaimToken)>,
        lease: std::time::Duration,
        now: Option<Millis>,
        reply: Reply<Renewal>,
    },
    Register(ProcessRecord, Option<Millis>, Reply<()>),
    Remove(ProcessId, Reply<()>),
}

pub(crate) enum Output {
    Renewed(Renewal),
    Done,
}

impl Command {
    pub(super) fn execute(&self, conn: &Connection) -> rusqlite::Result<Output> {
        Ok(match self {
            Command::Renew {
                process,
                tasks,
                lease,
                now,
                ..
            } => {
                let now = now.unwrap_or_else(now_millis);
                Output::Renewed(renew(conn, *process, tasks, duration_millis(*lease), now)?)
            }
            Command::Register(process, now, _) => {
                register(conn, process, now.unwrap_or_else(now_millis))?;
                Output::Done
            }
            Command::Remove(process, _) => {
                conn.prepare_cached("DELETE FROM backlite_processes WHERE id = ?1")?
                    .execute([process.to_string()])?;
                Output::Done
            }
        })
    }

    /// Sends the outcome; a caller that stopped waiting is no error.
    pub(super) fn finish(self, outcome: Result<Output>) {
        let wrong = || Error::Storage("writer answered the wrong kind".into());
        match self {
            Command::Renew { reply, .. } => {
                let _ = reply.send(outcome.and_then(|out| match out {
                    Output::Renewed(renewal) => Ok(renewal),
                    Output::Done => Err(wrong()),
                }));
            }
            Command::Register(_, _, reply) | Command::Remove(_, reply) => {
                let _ = reply.send(outcome.and_then(|out| match out {
                    Output::Done => Ok(()),
                    Output::Renewed(_) => Err(wrong()),
                }));
            }
        }
    }
}

super::sql::claim_guarded! {
    /// Extends one current claim: `?1` id, `?2` fencing number, `?3` lease end, `?4` now.
    RENEW, RENEW_BY_ROW, row = "?5",
    ["UPDATE backlite_tasks SET lease_until = ?3, lease_renewed_at = ?4"]
    [" RETURNING cancel_requested_at IS NOT NULL"]
}

/// One guarded update per claim (each a lookup by the claimed row, else by the primary key),
/// the heartbeat, and the removal of dead processes' rows.
fn renew(
    conn: &Connection,
    process: ProcessId,
    tasks: &[(TaskId, ClaimToken)],
    lease: i64,
    now: Millis,
) -> rusqlite::Result<Renewal> {
    let mut renewal = Renewal::default();
    let mut extend = ClaimWrite::new(conn, RENEW_BY_ROW, RENEW);
    let lease_until = now.saturating_add(lease);
    for (id, token) in tasks {
        let args: [&dyn ToSql; 4] = [&&id.as_bytes()[..], &token.fence, &lease_until, &now];
        let renewed: Option<bool> = extend.run(*token, &args, |renew| {
            let mut rows = renew.raw_query();
            rows.next()?.map(|row| row.get(0)).transpose()
        })?;
        match renewed {
            None => renewal.lost.push(*id),
            Some(true) => renewal.cancel_requested.push(*id),
            Some(false) => {}
        }
        renewal.renewed += u64::from(renewed.is_some());
    }
    let id = process.to_string();
    renewal.registered = conn
        .prepare_cached("UPDATE backlite_processes SET last_seen_at = ?2 WHERE id = ?1")?
        .execute(params![id, now])?
        == 1;
    conn.prepare_cached("DELETE FROM backlite_processes WHERE last_seen_at < ?1 AND id <> ?2")?
        .execute(params![now.saturating_sub(lease), id])?;
    Ok(renewal)
}

fn register(conn: &Connection, process: &ProcessRecord, now: Millis) -> rusqlite::Result<()> {
    let queues = serde_json::to_string(&process.queues)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO backlite_processes \
         (id, host, pid, queues, workers, started_at, last_seen_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        process.id.to_string(),
        process.host,
        process.pid,
        queues,
        process.workers,
        process.started_at,
        now
    ])?;
    Ok(())
}

/// The processes seen since `since`, from the `last_seen_at` index.
pub(super) fn process_list(
    conn: &Connection,
    since: Millis,
) -> rusqlite::Result<Vec<ProcessRecord>> {
    let mut list = conn.prepare_cached(
        "SELECT id, host, pid, queues, workers, started_at, last_seen_at \
         FROM backlite_processes WHERE last_seen_at >= ?1 ORDER BY started_at, id",
    )?;
    let rows = list.query_map([since], |row| {
        let id: String = row.get(0)?;
        let id = uuid::Uuid::parse_str(&id)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, Type::Text, Box::new(e)))?;
        let queues: String = row.get(3)?;
        let queues = serde_json::from_str(&queues)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, Type::Text, Box::new(e)))?;
        Ok(ProcessRecord {
            id: ProcessId(id),
            host: row.get(1)?,
            pid: u32::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
            queues,
            workers: u32::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
            started_at: row.get(5)?,
            last_seen_at: row.get(6)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
crate::storage::lease_conformance::lease_conformance!(conformance_file, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(false, queues))
});

#[cfg(test)]
crate::storage::lease_conformance::lease_conformance!(conformance_memory, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(true, queues))
});
