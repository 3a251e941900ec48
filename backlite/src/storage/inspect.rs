//! What the inspecting reads return: one task with its history, a page of a filtered list,
//! and the facts that explain why a task is where it is. The drivers fill these; the client
//! turns them into the public `TaskInfo`, `TaskPage` and `Explanation`.

use std::time::Duration;

use crate::storage::Millis;
use crate::task::{TaskId, TaskStatus};

/// How many failed attempts a task's `errors` keeps: the last ones, oldest first. The
/// drivers' statements write the number out; the conformance suite holds them to it.
#[cfg_attr(not(test), allow(dead_code, reason = "the statements write it out"))]
pub(crate) const ERRORS_KEPT: usize = 10;

/// One task as stored, waiting, running or retained, with its payload whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InfoRecord {
    pub(crate) id: TaskId,
    pub(crate) queue: String,
    pub(crate) status: TaskStatus,
    /// `None` for a retained task whose payload was not kept.
    pub(crate) payload: Option<Vec<u8>>,
    /// Attempts that completed.
    pub(crate) attempts: u32,
    pub(crate) created_at: Millis,
    /// When a waiting or running task is due; `None` once completed.
    pub(crate) run_at: Option<Millis>,
    pub(crate) claimed_at: Option<Millis>,
    pub(crate) last_executed_at: Option<Millis>,
    pub(crate) last_duration: Option<Duration>,
    pub(crate) expires_at: Option<Millis>,
    /// The `errors` JSON array, as text.
    pub(crate) errors: Option<String>,
    pub(crate) claimed_by: Option<String>,
    pub(crate) lease_renewed_at: Option<Millis>,
    pub(crate) lease_until: Option<Millis>,
    /// A waiting or running task's priority; `None` once completed.
    pub(crate) priority: Option<i16>,
    /// When a waiting task expires unless started (not the retention's `expires_at`).
    pub(crate) pending_expires_at: Option<Millis>,
}

/// Which tasks a list reads, each kind in the order of the index it walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// Unclaimed, in claim order (priority descending, `run_at`, then insertion); the due
    /// range tells pending from scheduled.
    Waiting,
    /// Claimed, longest-claimed first.
    Running,
    /// Retained, most recently completed first.
    Succeeded,
    Failed,
    Cancelled,
}

impl ListKind {
    /// Whether the list runs from the greatest key down.
    pub(crate) fn descending(self) -> bool {
        matches!(
            self,
            ListKind::Succeeded | ListKind::Failed | ListKind::Cancelled
        )
    }
}

/// A half-open range `[from, to)` of stored times; unbounded ends are `Millis::MIN`/`MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) from: Millis,
    pub(crate) to: Millis,
}

impl Span {
    pub(crate) const ALL: Span = Span {
        from: Millis::MIN,
        to: Millis::MAX,
    };
}

/// Where a page starts: the sort key of the last row of the previous page, and the row's
/// insertion number (SQLite's rowid, PostgreSQL's `seq`) that breaks ties. The waiting list's
/// order leads with the priority, highest first; the other lists carry 0 there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Keyset {
    pub(crate) priority: i16,
    pub(crate) key: i64,
    pub(crate) seq: i64,
}

/// One page of a filtered list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListQuery {
    pub(crate) kind: ListKind,
    pub(crate) queue: Option<String>,
    pub(crate) created: Span,
    /// Applies to waiting and running tasks; the client refuses it for retained ones.
    pub(crate) due: Span,
    /// `None`: the first page.
    pub(crate) after: Option<Keyset>,
    pub(crate) limit: u32,
}

impl ListQuery {
    /// The keyset to read after: the cursor, or the first key of the list's order.
    pub(crate) fn after_or_start(&self) -> Keyset {
        self.after.unwrap_or(if self.kind.descending() {
            Keyset {
                priority: 0,
                key: i64::MAX,
                seq: i64::MAX,
            }
        } else {
            Keyset {
                // Only the waiting list reads it: its highest priority comes first.
                priority: i16::MAX,
                key: i64::MIN,
                seq: i64::MIN,
            }
        })
    }
}

/// One row of a list: no payload, no history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SummaryRecord {
    pub(crate) id: TaskId,
    pub(crate) queue: String,
    pub(crate) status: TaskStatus,
    pub(crate) attempts: u32,
    pub(crate) created_at: Millis,
    pub(crate) run_at: Option<Millis>,
    pub(crate) claimed_at: Option<Millis>,
    pub(crate) last_executed_at: Option<Millis>,
    pub(crate) last_duration: Option<Duration>,
    pub(crate) last_error: Option<String>,
    /// The row's place in the list's order, for the next page's cursor.
    pub(crate) keyset: Keyset,
}

/// A live process's row in `backlite_processes`, as far as an explanation names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessRecord {
    pub(crate) host: String,
    pub(crate) pid: i64,
}

/// What decides why a task is where it is, read in one go; the client decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Facts {
    NotFound,
    /// Retained after its end.
    Completed {
        status: TaskStatus,
        /// When its last attempt ended.
        finished_at: Millis,
    },
    Waiting {
        queue: String,
        run_at: Millis,
        attempts: u32,
        /// When its queue was paused, if it is.
        paused_at: Option<Millis>,
        /// Processes seen within the liveness window whose `queues` include this one.
        live_processes: u64,
        /// Due, unclaimed tasks of its queue that the claim takes before it: of a higher
        /// priority, or of its own and earlier in line.
        ahead: u64,
        /// When it expires unless started.
        expires_at: Option<Millis>,
        /// The storage's "now" the facts were read at.
        now: Millis,
    },
    Running {
        claimed_at: Millis,
        claimed_by: Option<String>,
        /// The claimer's row, when it has one.
        process: Option<ProcessRecord>,
        lease_renewed_at: Option<Millis>,
        lease_until: Option<Millis>,
    },
}

/// Rows the inspection reads and other layers write (live processes, a claim's owner),
/// written by the conformance suite directly.
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) enum Fixture {
    Process {
        id: String,
        host: &'static str,
        pid: i64,
        queues: Vec<&'static str>,
        last_seen_at: Millis,
    },
    ClaimedBy {
        task: TaskId,
        process: String,
        renewed_at: Millis,
    },
}
