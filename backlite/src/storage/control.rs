//! What the control operations take and return: pausing queues, cancelling, retrying,
//! running now, deleting and purging tasks. The SQL is in each driver's `control.rs`.

use crate::storage::{Millis, QueueStats, Retain};

/// A queue as the database knows it: its counts, and whether it is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueRecord {
    pub(crate) stats: QueueStats,
    /// When it was paused; `None` while it runs.
    pub(crate) paused_at: Option<Millis>,
}

/// How a task cancelled before it ran is retained: as its queue's retention says, for the
/// queues the client knows; kept whole and without expiry for the others, since nothing
/// says how long their owner wants them.
#[derive(Debug, Clone, Default)]
pub(crate) struct CancelRetention {
    pub(crate) known: Vec<(&'static str, Option<Retain>)>,
}

impl CancelRetention {
    /// The retention of a task of `queue` cancelled now: `None` deletes it outright.
    pub(crate) fn of(&self, queue: &str) -> Option<Retain> {
        match self.known.iter().find(|(name, _)| *name == queue) {
            Some((_, retain)) => *retain,
            None => Some(Retain {
                payload: true,
                expires_at: None,
            }),
        }
    }
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// The task was waiting: it will not run, and it is retained as cancelled (or deleted,
    /// when its retention keeps nothing).
    Waiting,
    /// The task is running: it is marked, for its worker to learn through its lease.
    Requested,
    /// No waiting or running task has this id.
    NotFound,
}

/// Which retained tasks a purge deletes: all that match every given condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PurgeFilter {
    pub(crate) queue: Option<String>,
    /// Outcomes to delete; all three when every one is false.
    pub(crate) succeeded: bool,
    pub(crate) failed: bool,
    pub(crate) cancelled: bool,
    /// Only tasks that completed strictly before this time.
    pub(crate) completed_before: Option<Millis>,
}

impl PurgeFilter {
    /// The outcomes to delete, as (succeeded, failed, cancelled), all when none was named.
    pub(crate) fn outcomes(&self) -> (bool, bool, bool) {
        if self.succeeded || self.failed || self.cancelled {
            (self.succeeded, self.failed, self.cancelled)
        } else {
            (true, true, true)
        }
    }
}

/// The error text of a task cancelled before it ran.
pub(crate) const CANCELLED_ERROR: &str = "cancelled";
