//! The sweep of expired waiting tasks. It runs on the writer thread, inside its
//! `BEGIN IMMEDIATE` transaction, so that a task it reads as waiting cannot be claimed before
//! it is moved; the `claimed_at IS NULL` guards keep that so on any connection.

use rusqlite::{Connection, params};

use crate::storage::{CancelRetention, EXPIRED_ERROR, Millis};

/// Copies an expired task to the completed table as failed: `?1` rowid, `?2` keep the payload,
/// `?3` now, `?4` the copy's retention expiry, `?5` the error. The error history gains the
/// entry of the attempt that never started.
const RETAIN_EXPIRED: &str = "INSERT OR REPLACE INTO backlite_tasks_completed (id, queue, task, \
     attempts, succeeded, last_duration_us, error, created_at, last_executed_at, expires_at, \
     cancelled, errors) \
     SELECT id, queue, CASE WHEN ?2 THEN task END, attempts, 0, COALESCE(last_duration_us, 0), \
         ?5, created_at, ?3, ?4, 0, \
         json_insert(CASE WHEN json_array_length(errors) >= 10 THEN json_remove(errors, '$[0]') \
             ELSE COALESCE(errors, '[]') END, '$[#]', json_object('attempt', attempts + 1, \
             'at', ?3, 'duration_us', 0, 'error', ?5)) \
     FROM backlite_tasks WHERE rowid = ?1 AND claimed_at IS NULL";

/// The expired waiting tasks of queue `?1` at `?2`, earliest expiry first, up to `?3`.
const FIND_EXPIRED: &str = "SELECT rowid FROM backlite_tasks \
     WHERE queue = ?1 AND expires_at <= ?2 AND claimed_at IS NULL \
     ORDER BY expires_at LIMIT ?3";

/// Ends up to `limit` expired waiting tasks of the known queues, earliest expiry first per
/// queue, each found by the expiring index.
pub(crate) fn task_expire_pending(
    conn: &Connection,
    retention: &CancelRetention,
    limit: usize,
    now: Millis,
) -> rusqlite::Result<u64> {
    let mut find = conn.prepare_cached(FIND_EXPIRED)?;
    let mut retain_copy = conn.prepare_cached(RETAIN_EXPIRED)?;
    let mut delete =
        conn.prepare_cached("DELETE FROM backlite_tasks WHERE rowid = ?1 AND claimed_at IS NULL")?;
    let mut ended = 0u64;
    for (queue, retain) in &retention.known {
        let left = limit.saturating_sub(usize::try_from(ended).unwrap_or(usize::MAX));
        if left == 0 {
            break;
        }
        let rowids: Vec<i64> = find
            .query_map(
                params![queue, now, i64::try_from(left).unwrap_or(i64::MAX)],
                |row| row.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?;
        for rowid in rowids {
            if let Some(retain) = retain {
                retain_copy.execute(params![
                    rowid,
                    retain.payload,
                    now,
                    retain.expires_at,
                    EXPIRED_ERROR
                ])?;
            }
            ended += delete.execute([rowid])? as u64;
        }
    }
    Ok(ended)
}

#[cfg(test)]
crate::storage::expiry_conformance::expiry_conformance!(conformance_file, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(false, queues))
});

#[cfg(test)]
crate::storage::expiry_conformance::expiry_conformance!(conformance_memory, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(true, queues))
});

#[cfg(test)]
crate::storage::priority_conformance::priority_conformance!(priority_file, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(false, queues))
});

#[cfg(test)]
crate::storage::priority_conformance::priority_conformance!(priority_memory, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(true, queues))
});

#[cfg(test)]
mod plans {
    use rusqlite::Connection;

    use super::FIND_EXPIRED;
    use crate::storage::sqlite::sql::CLAIM_LEVEL;

    use super::super::plans::plan;

    /// A claim's read of one priority is a range of the due index in its order (no sort),
    /// and the sweep finds expired tasks through the expiring index: neither scans a table.
    #[test]
    fn the_claim_range_and_the_sweep_read_their_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::storage::sqlite::migrations::migrate(&mut conn, 0)
            .unwrap()
            .unwrap();
        let claim = plan(&conn, CLAIM_LEVEL);
        assert!(
            claim.contains("USING INDEX backlite_tasks_due (queue=? AND priority=? AND run_at<?)"),
            "{claim}"
        );
        assert!(!claim.contains("TEMP B-TREE"), "{claim}");
        let sweep = plan(&conn, FIND_EXPIRED);
        assert!(sweep.contains("backlite_tasks_expiring"), "{sweep}");
        for plan in [claim, sweep] {
            assert!(!plan.contains("SCAN backlite_"), "{plan}");
        }
    }
}
