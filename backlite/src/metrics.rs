//! The metrics backlite records, by name. With the `metrics` feature they go to the
//! [`metrics`](https://docs.rs/metrics) facade, to whatever recorder the application
//! installed (a Prometheus exporter, OpenTelemetry through a bridge, StatsD, ...); without it
//! nothing is recorded. The names are constants here, for dashboards and tests.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | [`TASKS_ADDED`] | counter | `queue` |
//! | [`TASKS_SUCCEEDED`] | counter | `queue` |
//! | [`TASKS_RETRIED`] | counter | `queue` |
//! | [`TASKS_FAILED`] | counter | `queue` |
//! | [`TASKS_RELEASED`] | counter | none |
//! | [`LEASE_RENEWALS`] | counter | none |
//! | [`LEASES_RENEWED`] | counter | none |
//! | [`LEASES_LOST`] | counter | none |
//! | [`ATTEMPT_DURATION`] | histogram, seconds | `queue` |
//! | [`PICKUP_LATENCY`] | histogram, seconds | `queue` |
//! | [`QUEUE_DEPTH`] | gauge | `queue`, `state` |

// One module holds every metric: its name, its description, and the code that records it;
// the client and the dispatcher only call the functions below.

use std::time::Duration;

use crate::storage::QueueStats;
use crate::unique::Saved;

/// Whether metrics are recorded at all.
pub(crate) const ENABLED: bool = cfg!(feature = "metrics");

/// How often a started client reads the queue counts for the depth gauges.
pub(crate) const DEPTH_INTERVAL: Duration = Duration::from_secs(5);

/// Tasks stored by `save` or `save_in` (for `save_in`, whether or not the application's
/// transaction then commits).
pub const TASKS_ADDED: &str = "backlite_tasks_added_total";
/// Attempts that succeeded.
pub const TASKS_SUCCEEDED: &str = "backlite_tasks_succeeded_total";
/// Failed attempts whose task will be retried after its backoff.
pub const TASKS_RETRIED: &str = "backlite_tasks_retried_total";
/// Tasks that failed for good: attempts used up, or a failure retrying cannot fix.
pub const TASKS_FAILED: &str = "backlite_tasks_failed_total";
/// Tasks taken back from a process that stopped renewing their lease (for longer than
/// `release_after`), to run again. The release is one statement over every queue, which
/// counts the tasks without naming their queues, hence no label.
pub const TASKS_RELEASED: &str = "backlite_tasks_released_total";
/// Renewal writes of a started client: one every third of `release_after`, whatever it
/// holds (it heartbeats the process too).
pub const LEASE_RENEWALS: &str = "backlite_lease_renewals_total";
/// Claims whose lease a renewal extended.
pub const LEASES_RENEWED: &str = "backlite_leases_renewed_total";
/// Claims a renewal found lost: the process did not renew them in time and the task was
/// released (and perhaps claimed by another process).
pub const LEASES_LOST: &str = "backlite_leases_lost_total";
/// How long each attempt ran, in seconds.
pub const ATTEMPT_DURATION: &str = "backlite_attempt_duration_seconds";
/// From a task's due time to the start of its attempt, in seconds.
pub const PICKUP_LATENCY: &str = "backlite_pickup_latency_seconds";
/// Tasks per queue and `state`: `pending` (due), `scheduled` (due later, or backing off)
/// and `running`, over every queue in the database; read by a started client every
/// 5 seconds.
pub const QUEUE_DEPTH: &str = "backlite_queue_depth";

/// How an attempt ended, for the counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Succeeded,
    Retried,
    Failed,
}

/// Registers each metric's description and unit with the recorder, for exporters that show
/// them (Prometheus' `# HELP`). Called once per client built.
pub(crate) fn describe() {
    #[cfg(feature = "metrics")]
    {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(TASKS_ADDED, Unit::Count, "Tasks added to a queue.");
        describe_counter!(
            TASKS_SUCCEEDED,
            Unit::Count,
            "Tasks whose attempt succeeded."
        );
        describe_counter!(
            TASKS_RETRIED,
            Unit::Count,
            "Failed attempts whose task will be retried after its backoff."
        );
        describe_counter!(
            TASKS_FAILED,
            Unit::Count,
            "Tasks that failed for good: attempts used up, or a failure retrying cannot fix."
        );
        describe_counter!(
            TASKS_RELEASED,
            Unit::Count,
            "Tasks taken back from a process that stopped renewing their lease, to be run again."
        );
        describe_counter!(
            LEASE_RENEWALS,
            Unit::Count,
            "Renewal writes: the leases of every task a client holds, and its heartbeat."
        );
        describe_counter!(
            LEASES_RENEWED,
            Unit::Count,
            "Claims whose lease a renewal extended."
        );
        describe_counter!(
            LEASES_LOST,
            Unit::Count,
            "Claims a renewal found lost: not renewed in time, and released."
        );
        describe_histogram!(
            ATTEMPT_DURATION,
            Unit::Seconds,
            "How long each attempt ran."
        );
        describe_histogram!(
            PICKUP_LATENCY,
            Unit::Seconds,
            "From a task's due time to the start of its attempt."
        );
        describe_gauge!(
            QUEUE_DEPTH,
            Unit::Count,
            "Tasks per queue and state (pending: due, scheduled: due later, running)."
        );
    }
}

/// Tasks added by one `save` or `save_in`, counted per queue once the batch is stored; a
/// duplicate of a unique task, which stored nothing, is not counted.
#[must_use]
pub(crate) struct Added {
    #[cfg(feature = "metrics")]
    per_queue: Vec<(&'static str, u64)>,
}

impl Added {
    /// `queues` are the queues of the batch's tasks and `saved` what storing them did, in
    /// the same order.
    pub(crate) fn count(queues: &[&'static str], saved: &[Saved]) -> Added {
        #[cfg(feature = "metrics")]
        {
            // A batch is usually of one queue or a few: a short list, no map.
            let mut per_queue: Vec<(&'static str, u64)> = Vec::new();
            for (&queue, saved) in queues.iter().zip(saved) {
                if saved.is_duplicate() {
                    continue;
                }
                match per_queue.iter_mut().find(|(q, _)| *q == queue) {
                    Some((_, n)) => *n += 1,
                    None => per_queue.push((queue, 1)),
                }
            }
            Added { per_queue }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (queues, saved);
            Added {}
        }
    }

    pub(crate) fn record(self) {
        #[cfg(feature = "metrics")]
        for (queue, n) in self.per_queue {
            metrics::counter!(TASKS_ADDED, "queue" => queue).increment(n);
        }
    }
}

/// An attempt starts, `pickup` after its task was due.
pub(crate) fn attempt_started(queue: &str, pickup: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(PICKUP_LATENCY, "queue" => queue.to_owned()).record(pickup);
    #[cfg(not(feature = "metrics"))]
    let _ = (queue, pickup);
}

/// An attempt ended after running for `duration`.
pub(crate) fn attempt_finished(queue: &str, outcome: Outcome, duration: Duration) {
    #[cfg(feature = "metrics")]
    {
        let queue = queue.to_owned();
        metrics::histogram!(ATTEMPT_DURATION, "queue" => queue.clone()).record(duration);
        let name = match outcome {
            Outcome::Succeeded => TASKS_SUCCEEDED,
            Outcome::Retried => TASKS_RETRIED,
            Outcome::Failed => TASKS_FAILED,
        };
        metrics::counter!(name, "queue" => queue).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (queue, outcome, duration);
}

/// Stuck tasks were released. The release is one statement over every queue, which counts
/// them but does not name their queues.
pub(crate) fn tasks_released(count: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(TASKS_RELEASED).increment(count);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

/// One renewal write: `renewed` claims extended, `lost` found lost.
pub(crate) fn leases_renewed(renewed: u64, lost: u64) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!(LEASE_RENEWALS).increment(1);
        metrics::counter!(LEASES_RENEWED).increment(renewed);
        metrics::counter!(LEASES_LOST).increment(lost);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (renewed, lost);
}

/// The queues the depth gauges have reported, so that a queue that empties (and drops out of
/// the counts) is reported at zero rather than left at its last value.
#[derive(Debug, Default)]
pub(crate) struct DepthGauges {
    #[cfg(feature = "metrics")]
    reported: std::collections::BTreeSet<String>,
}

impl DepthGauges {
    pub(crate) fn update(&mut self, stats: &[QueueStats]) {
        #[cfg(feature = "metrics")]
        {
            let gauges = |queue: &str, pending: u64, scheduled: u64, running: u64| {
                for (state, value) in [
                    ("pending", pending),
                    ("scheduled", scheduled),
                    ("running", running),
                ] {
                    metrics::gauge!(QUEUE_DEPTH, "queue" => queue.to_owned(), "state" => state)
                        .set(value as f64);
                }
            };
            let mut now = std::collections::BTreeSet::new();
            for s in stats {
                gauges(&s.queue, s.pending, s.scheduled, s.running);
                now.insert(s.queue.clone());
            }
            for gone in self.reported.difference(&now) {
                gauges(gone, 0, 0, 0);
            }
            self.reported = now;
        }
        #[cfg(not(feature = "metrics"))]
        let _ = stats;
    }
}
