//! The sweep of expired waiting tasks. It runs on the writer thread, inside its
//! `BEGIN IMMEDIATE` transaction, so that a task it reads as waiting cannot be claimed before
//! it ends; the `state = 0` guards keep that so on any connection.

use rusqlite::{Connection, params};

use crate::storage::{CancelRetention, EXPIRED_ERROR, Millis};

/// Ends an expired waiting task in place as failed (state 3): `?1` rowid, `?2` keep the
/// payload, `?3` now, `?4` its retention expiry, `?5` the error. The error history gains the
/// entry of the attempt that never started.
pub(super) const RETAIN_EXPIRED: &str = "UPDATE backlite_tasks SET state = 3, \
         task = CASE WHEN ?2 THEN task END, last_error = ?5, finished_at = ?3, \
         expires_at = ?4, \
         errors = json_insert(CASE WHEN json_array_length(errors) >= 10 \
             THEN json_remove(errors, '$[0]') ELSE COALESCE(errors, '[]') END, '$[#]', \
             json_object('attempt', attempts + 1, 'at', ?3, 'duration_us', 0, 'error', ?5)) \
     WHERE rowid = ?1 AND state = 0";

/// The expired waiting tasks at `?1` of the queues named in the JSON array `?3`, earliest
/// expiry first, up to `?2`: a range of the expires index. The range also holds what the
/// sweep passes over: ended tasks whose retention expired (the retention cleanup deletes
/// them), running tasks claimed before their expiry, and waiting ones of queues this process
/// does not know (it cannot tell their retention). Named, because the due index would
/// otherwise serve `state = 0 AND queue IN ..` and read every waiting task of those queues.
const FIND_EXPIRED: &str = "SELECT rowid, queue FROM backlite_tasks \
     INDEXED BY backlite_tasks_expires \
     WHERE expires_at <= ?1 AND state = 0 \
       AND queue IN (SELECT value FROM json_each(?3)) \
     ORDER BY expires_at LIMIT ?2";

/// Ends up to `limit` expired waiting tasks of the known queues, earliest expiry first, each
/// as its queue's retention says, found by one read of the expires index.
pub(crate) fn task_expire_pending(
    conn: &Connection,
    retention: &CancelRetention,
    limit: usize,
    now: Millis,
) -> rusqlite::Result<u64> {
    let known: Vec<&str> = retention.known.iter().map(|(queue, _)| *queue).collect();
    let known = serde_json::to_string(&known)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let expired: Vec<(i64, String)> = conn
        .prepare_cached(FIND_EXPIRED)?
        .query_map(
            params![now, i64::try_from(limit).unwrap_or(i64::MAX), known],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut retain_expired = conn.prepare_cached(RETAIN_EXPIRED)?;
    let mut delete =
        conn.prepare_cached("DELETE FROM backlite_tasks WHERE rowid = ?1 AND state = 0")?;
    let mut ended = 0u64;
    for (rowid, queue) in expired {
        ended += match retention.of(&queue) {
            Some(retain) => retain_expired.execute(params![
                rowid,
                retain.payload,
                now,
                retain.expires_at,
                EXPIRED_ERROR
            ])?,
            None => delete.execute([rowid])?,
        } as u64;
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
    /// and the sweep finds expired tasks through the expires index: neither scans a table.
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
        assert!(
            sweep.contains("backlite_tasks_expires (expires_at<?)"),
            "{sweep}"
        );
        for plan in [claim, sweep] {
            assert!(!plan.contains("SCAN backlite_"), "{plan}");
        }
    }
}
