//! What the copy operations move between two databases (`backlite copy`): every column of a
//! task row, the schedules and the queue rows, and the census the copy is verified by. Each
//! driver's SQL for them is in its `copy.rs`.

use crate::storage::Millis;
use crate::task::TaskId;

/// A task row, whole: what it is (waiting, running or ended), its claim, its history, its
/// uniqueness. A copy keeps every field as it is, ids included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyTask {
    pub(crate) id: TaskId,
    pub(crate) queue: String,
    /// 0 waiting, 1 running, 2 succeeded, 3 failed, 4 cancelled.
    pub(crate) state: i16,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) attempts: i64,
    pub(crate) run_at: Millis,
    pub(crate) created_at: Millis,
    pub(crate) priority: i16,
    pub(crate) expires_at: Option<Millis>,
    pub(crate) claimed_at: Option<Millis>,
    pub(crate) lease_until: Option<Millis>,
    pub(crate) fence: i64,
    /// The claimer's process id, as text.
    pub(crate) claimed_by: Option<String>,
    pub(crate) lease_renewed_at: Option<Millis>,
    pub(crate) cancel_requested_at: Option<Millis>,
    pub(crate) last_executed_at: Option<Millis>,
    pub(crate) last_duration_us: Option<i64>,
    pub(crate) last_error: Option<String>,
    /// The error history, a JSON array as text.
    pub(crate) errors: Option<String>,
    pub(crate) finished_at: Option<Millis>,
    pub(crate) unique_key: Option<Vec<u8>>,
    pub(crate) unique_for: Option<i64>,
}

/// A stored schedule, whole: its definition and next tick.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct CopySchedule {
    pub(crate) name: String,
    pub(crate) definition: String,
    pub(crate) next_run_at: Millis,
}

/// A queue row: a queue that was paused once, and since when while it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct CopyQueue {
    pub(crate) name: String,
    pub(crate) paused_at: Option<Millis>,
}

/// What a copy is verified by: the task count of each queue and state, and the schedules and
/// queue rows whole, each sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Census {
    /// (queue, state, count), by queue then state.
    pub(crate) tasks: Vec<(String, i16, u64)>,
    pub(crate) schedules: Vec<CopySchedule>,
    pub(crate) queues: Vec<CopyQueue>,
}

impl Census {
    /// Every task counted.
    pub(crate) fn total(&self) -> u64 {
        self.tasks.iter().map(|(_, _, n)| n).sum()
    }
}

/// What one import of schedules and queue rows inserted (those already stored are left).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MetaInserted {
    pub(crate) schedules: u64,
    pub(crate) queues: u64,
}
