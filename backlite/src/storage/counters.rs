//! Per-minute counters, for the UI's charts: per queue and minute, the attempts that ended in
//! success, in failure (the task's last attempt failed, or it was cancelled), and in a retry;
//! and the queue's depth (waiting and running tasks) as the maintenance loop sampled it in that
//! minute.
//!
//! The outcome counts are written by the completion batch itself, in its own transaction, as
//! one more statement over the batch's rows grouped by minute and queue: a batch of a thousand
//! outcomes of one queue adds one or two rows' worth of work. Each driver's statements are in
//! its `counters.rs`.

use std::collections::BTreeMap;

use crate::storage::{Completion, Millis, Next};

/// A minute, in the milliseconds of the stored times.
pub(crate) const MINUTE: Millis = 60_000;

/// How long counts are kept: a day. The charts show the last hour.
pub(crate) const COUNTERS_KEPT: Millis = 24 * 60 * MINUTE;

/// The start of the minute that holds `at`.
pub(crate) fn minute_of(at: Millis) -> Millis {
    at.div_euclid(MINUTE) * MINUTE
}

/// One queue's counts of one minute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MinuteCounts {
    /// The minute's start.
    pub(crate) minute: Millis,
    pub(crate) queue: String,
    pub(crate) succeeded: u64,
    /// Tasks whose last attempt failed, and tasks cancelled at the end of an attempt.
    pub(crate) failed: u64,
    /// Attempts that failed and were given another.
    pub(crate) retried: u64,
    /// Waiting and running tasks, when a sample was taken in that minute.
    pub(crate) depth: Option<Depth>,
}

/// A queue's tasks at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Depth {
    pub(crate) waiting: u64,
    pub(crate) running: u64,
}

/// What a completion batch adds to one (minute, queue).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OutcomeDelta {
    pub(crate) minute: Millis,
    pub(crate) queue: String,
    pub(crate) succeeded: i64,
    pub(crate) failed: i64,
    pub(crate) retried: i64,
}

/// The counts a batch adds, one entry per (minute, queue) in that order. The order is the
/// same in every batch, so that concurrent batches on PostgreSQL lock counter rows in the
/// same order and cannot deadlock on them. An outcome is counted in the minute its attempt
/// ended; snoozes and outcomes without a queue (sent only to be refused) are not counted.
pub(crate) fn outcome_deltas(completions: &[Completion]) -> Vec<OutcomeDelta> {
    let mut sums: BTreeMap<(Millis, &str), [i64; 3]> = BTreeMap::new();
    for c in completions {
        let Some(queue) = c.queue else {
            continue;
        };
        let column = match &c.next {
            Next::Snooze { .. } => continue,
            Next::Retry { .. } => 2,
            Next::Done { cancelled, .. } if c.error.is_none() && !cancelled => 0,
            Next::Done { .. } => 1,
        };
        let ended = c
            .executed_at
            .saturating_add(i64::try_from(c.duration.as_millis()).unwrap_or(i64::MAX));
        sums.entry((minute_of(ended), queue)).or_default()[column] += 1;
    }
    sums.into_iter()
        .map(
            |((minute, queue), [succeeded, failed, retried])| OutcomeDelta {
                minute,
                queue: queue.to_owned(),
                succeeded,
                failed,
                retried,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::{ClaimToken, Retain};
    use crate::task::TaskId;

    fn outcome(
        queue: Option<&'static str>,
        at: Millis,
        error: Option<&str>,
        next: Next,
    ) -> Completion {
        Completion {
            id: TaskId::new(),
            queue,
            token: ClaimToken::fenced(1),
            executed_at: at,
            duration: Duration::from_millis(500),
            error: error.map(str::to_owned),
            next,
        }
    }

    #[test]
    fn a_batch_adds_its_outcomes_per_minute_and_queue_in_order() {
        let done = |cancelled| Next::Done {
            retain: None::<Retain>,
            cancelled,
        };
        let batch = [
            outcome(Some("b"), 60_100, None, done(false)),
            outcome(Some("a"), 60_200, None, done(false)),
            outcome(Some("a"), 60_300, Some("boom"), done(false)),
            outcome(Some("a"), 60_400, Some("cancelled"), done(true)),
            outcome(Some("a"), 60_500, Some("boom"), Next::Retry { run_at: 0 }),
            outcome(Some("a"), 60_600, None, Next::Snooze { run_at: 0 }),
            // Ends in the next minute: counted there.
            outcome(Some("a"), 119_800, None, done(false)),
            outcome(None, 60_100, None, done(false)),
        ];
        let delta = |minute, queue: &str, succeeded, failed, retried| OutcomeDelta {
            minute,
            queue: queue.to_owned(),
            succeeded,
            failed,
            retried,
        };
        assert_eq!(
            outcome_deltas(&batch),
            [
                delta(60_000, "a", 1, 2, 1),
                delta(60_000, "b", 1, 0, 0),
                delta(120_000, "a", 1, 0, 0),
            ]
        );
        assert_eq!(minute_of(-1), -60_000);
        assert_eq!(minute_of(59_999), 0);
    }
}
