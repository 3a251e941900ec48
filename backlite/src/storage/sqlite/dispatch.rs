//! The SQLite statements of the dispatcher's own outcomes: a snooze.

super::sql::claim_guarded! {
    /// A snooze hands the claim back with a new due time, as a retry does, but leaves the
    /// attempts, the last error and the error history alone: the attempt does not count.
    /// `?1` id, `?2` fence, `?3` run_at, `?4` executed_at, `?5` duration in microseconds.
    SNOOZE, SNOOZE_BY_ROW, row = "?6",
    [
        "UPDATE backlite_tasks SET state = 0, claimed_at = NULL, \
         lease_until = NULL, claimed_by = NULL, lease_renewed_at = NULL, run_at = ?3, \
         last_executed_at = ?4, last_duration_us = ?5"
    ]
}
