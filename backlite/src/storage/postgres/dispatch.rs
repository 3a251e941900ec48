//! The PostgreSQL statements of the dispatcher's own outcomes: a snooze.

/// A snooze hands claims back with new due times, as a retry does, but leaves the attempts,
/// the last error and the error history alone: the attempt does not count. One `unnest`
/// statement for the batch: ids, fences, run_at, executed_at, durations in microseconds.
pub(super) fn snooze(tasks: &str) -> String {
    format!(
        "UPDATE {tasks} AS t SET state = 0, claimed_at = NULL, lease_until = NULL, \
             claimed_by = NULL, lease_renewed_at = NULL, run_at = u.run_at, \
             last_executed_at = u.executed_at, last_duration_us = u.duration_us \
         FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) \
             AS u(id, fence, run_at, executed_at, duration_us) \
         WHERE t.id = u.id AND t.fence = u.fence AND t.state = 1"
    )
}
