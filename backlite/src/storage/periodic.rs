//! What the periodic-task operations take and return: schedules as stored, and the claim of
//! one tick.

use crate::storage::{Millis, NewTask};

/// A schedule as this process defines it, to store if it is new or its definition changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScheduleDef {
    /// Stable across processes and deploys: the queue, and the schedule's own name if given.
    pub(crate) name: String,
    /// The schedule as written (`every 300000ms`, `cron 0 */5 * * * * UTC`): when the stored
    /// one differs, the schedule was changed, and `next_run_at` is stored anew.
    pub(crate) definition: String,
    /// The first tick of the schedule from now, for a new or changed schedule.
    pub(crate) next_run_at: Millis,
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScheduleRow {
    pub(crate) name: String,
    pub(crate) definition: String,
    /// The next tick to enqueue.
    pub(crate) next_run_at: Millis,
}

/// The stored schedules asked for, and the storage's time when they were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schedules {
    pub(crate) rows: Vec<ScheduleRow>,
    pub(crate) now: Millis,
}

/// The claim of the due ticks of one schedule: applies only while the stored `next_run_at` is
/// still `expected`, and then moves it to `next_run_at` and inserts `tasks`, in one
/// transaction.
#[derive(Debug, Clone)]
pub(crate) struct TickClaim {
    pub(crate) name: String,
    pub(crate) expected: Millis,
    pub(crate) next_run_at: Millis,
    /// One task per tick enqueued, each with the id of its tick (see `periodic::tick_id`).
    pub(crate) tasks: Vec<NewTask>,
}

/// What a tick claim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TickOutcome {
    /// The schedule moved on; `inserted` of the claim's tasks were new (a tick's task that is
    /// already stored, waiting or retained, is not inserted twice).
    Claimed { inserted: u64 },
    /// Another claim moved the schedule first: nothing was written.
    Lost,
}
