//! What the browsing reads return: pages of tasks for the UI.

#![cfg_attr(not(feature = "ui"), allow(dead_code, reason = "only the UI browses"))]

use std::time::Duration;

use crate::storage::Millis;
use crate::task::TaskId;

/// Which unfinished tasks to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskState {
    /// Claimed by a worker, longest-claimed first.
    Running,
    /// Waiting, in the order they will be claimed: by `run_at`, then by insertion.
    Upcoming,
}

/// A window on a list: `limit` rows after the first `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) offset: u64,
    pub(crate) limit: u64,
}

/// Lists carry at most this many bytes of each payload: enough for a preview, and a list of
/// large payloads stays a small read.
pub(crate) const PREVIEW_BYTES: usize = 256;

/// A waiting or running task, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRecord {
    pub(crate) id: TaskId,
    pub(crate) queue: String,
    /// The payload, cut to [`PREVIEW_BYTES`] in lists; whole in `task_get`.
    pub(crate) payload: Vec<u8>,
    /// The length of the whole payload.
    pub(crate) payload_len: u64,
    /// Completed attempts.
    pub(crate) attempts: u32,
    pub(crate) run_at: Millis,
    pub(crate) created_at: Millis,
    pub(crate) claimed_at: Option<Millis>,
    pub(crate) last_executed_at: Option<Millis>,
    pub(crate) last_duration: Option<Duration>,
    pub(crate) last_error: Option<String>,
    /// When the claim's holder last renewed its lease (the claim's time until then).
    pub(crate) lease_renewed_at: Option<Millis>,
}

/// A retained completed task, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompletedRecord {
    pub(crate) id: TaskId,
    pub(crate) queue: String,
    /// `None` unless the payload was retained; cut to [`PREVIEW_BYTES`] in lists.
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) payload_len: u64,
    pub(crate) attempts: u32,
    pub(crate) succeeded: bool,
    pub(crate) last_duration: Duration,
    pub(crate) error: Option<String>,
    pub(crate) created_at: Millis,
    pub(crate) last_executed_at: Millis,
    pub(crate) expires_at: Option<Millis>,
}

/// A page bound as an SQL integer.
pub(crate) fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored count or length; never negative, but read as signed.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A stored duration in microseconds.
pub(crate) fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}
