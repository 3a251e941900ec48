//! The SQLite statements of the per-minute counters (`storage/counters.rs`). The outcome
//! counts are added inside the writer's transaction that records the outcomes; samples and
//! deletions are writer commands of their own.

use rusqlite::{Connection, params};

use crate::storage::counters::{Depth, MinuteCounts, outcome_deltas};
use crate::storage::{Completion, Millis};

/// Adds one batch's outcomes, a row per (minute, queue), in the batch's transaction.
const ADD: &str = "INSERT INTO backlite_counters (minute, queue, succeeded, failed, retried) \
     VALUES (?1, ?2, ?3, ?4, ?5) \
     ON CONFLICT (minute, queue) DO UPDATE SET succeeded = succeeded + excluded.succeeded, \
     failed = failed + excluded.failed, retried = retried + excluded.retried";

/// A minute's depth of one queue; the last sample of the minute wins.
const SAMPLE: &str = "INSERT INTO backlite_counters (minute, queue, waiting, running) \
     VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (minute, queue) DO UPDATE SET waiting = excluded.waiting, \
     running = excluded.running";

/// The minutes from `?1` on: a range of the primary key, which leads with the minute.
pub(super) const READ: &str = "SELECT minute, queue, succeeded, failed, retried, waiting, running \
     FROM backlite_counters WHERE minute >= ?1 ORDER BY minute, queue";

pub(super) const DELETE_BEFORE: &str = "DELETE FROM backlite_counters WHERE minute < ?1";

/// Adds the outcomes of a completion batch to the counters: called by the writer right after
/// it stored them, in the same transaction.
pub(super) fn record(conn: &Connection, completions: &[Completion]) -> rusqlite::Result<()> {
    let deltas = outcome_deltas(completions);
    if deltas.is_empty() {
        return Ok(());
    }
    let mut add = conn.prepare_cached(ADD)?;
    for d in &deltas {
        add.execute(params![d.minute, d.queue, d.succeeded, d.failed, d.retried])?;
    }
    Ok(())
}

/// A write of the counters that is not part of a completion batch.
pub(crate) enum Write {
    Sample {
        minute: Millis,
        samples: Vec<(String, Depth)>,
    },
    DeleteBefore(Millis),
}

impl Write {
    /// Runs in the writer's transaction; returns the rows written or deleted.
    pub(super) fn execute(&self, conn: &Connection) -> rusqlite::Result<u64> {
        match self {
            Write::Sample { minute, samples } => {
                let mut sample = conn.prepare_cached(SAMPLE)?;
                for (queue, depth) in samples {
                    let waiting = i64::try_from(depth.waiting).unwrap_or(i64::MAX);
                    let running = i64::try_from(depth.running).unwrap_or(i64::MAX);
                    sample.execute(params![minute, queue, waiting, running])?;
                }
                Ok(samples.len() as u64)
            }
            Write::DeleteBefore(before) => {
                let deleted = conn.prepare_cached(DELETE_BEFORE)?.execute([before])?;
                Ok(deleted as u64)
            }
        }
    }
}

pub(super) fn read(conn: &Connection, since: Millis) -> rusqlite::Result<Vec<MinuteCounts>> {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut statement = conn.prepare_cached(READ)?;
    let rows = statement.query_map([since], |row| {
        let waiting: Option<i64> = row.get(5)?;
        let running: Option<i64> = row.get(6)?;
        Ok(MinuteCounts {
            minute: row.get(0)?,
            queue: row.get(1)?,
            succeeded: count(row.get(2)?),
            failed: count(row.get(3)?),
            retried: count(row.get(4)?),
            depth: waiting.map(|waiting| Depth {
                waiting: count(waiting),
                running: count(running.unwrap_or(0)),
            }),
        })
    })?;
    rows.collect()
}

#[cfg(test)]
crate::storage::counters_conformance::counters_conformance!(
    conformance_file,
    |queues| async move { Some(crate::storage::sqlite::open_for_test(false, queues)) }
);

#[cfg(test)]
crate::storage::counters_conformance::counters_conformance!(
    conformance_memory,
    |queues| async move { Some(crate::storage::sqlite::open_for_test(true, queues)) }
);

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::plans::plan;
    use super::{ADD, DELETE_BEFORE, READ, SAMPLE};

    /// The chart's read and the cleanup are ranges of the key, which leads with the minute;
    /// the upserts find their row by the whole key. No scan, no sort.
    #[test]
    fn counters_are_read_and_written_by_their_key() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn, 0)
            .unwrap()
            .unwrap();
        let read = plan(&conn, READ);
        assert_eq!(
            read, "SEARCH backlite_counters USING PRIMARY KEY (minute>?)",
            "{read}"
        );
        let delete = plan(&conn, DELETE_BEFORE);
        assert_eq!(
            delete, "SEARCH backlite_counters USING PRIMARY KEY (minute<?)",
            "{delete}"
        );
        for upsert in [ADD, SAMPLE] {
            let steps = plan(&conn, upsert);
            assert!(!steps.contains("SCAN"), "{upsert}: {steps}");
        }
    }
}
