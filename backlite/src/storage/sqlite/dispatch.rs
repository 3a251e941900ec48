//! The SQLite statements of the dispatcher's own outcomes: a snooze.

/// A snooze hands the claim back with a new due time, as a retry does, but leaves the
/// attempts, the last error and the error history alone: the attempt does not count.
/// `?1` id, `?2` fence, `?3` run_at, `?4` executed_at, `?5` duration in microseconds.
pub(crate) const SNOOZE: &str = "UPDATE backlite_tasks SET state = 0, claimed_at = NULL, \
     lease_until = NULL, claimed_by = NULL, lease_renewed_at = NULL, run_at = ?3, \
     last_executed_at = ?4, last_duration_us = ?5 \
     WHERE id = ?1 AND fence = ?2 AND state = 1";
