//! What the lease and process operations take and return: the renewal of a process's claims,
//! and the rows of the processes table.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::storage::Millis;
use crate::task::TaskId;

/// The identity of one started client: [`Client::start`](crate::Client::start) makes a new
/// one each time. Its claims and its row in the processes table carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId(pub(crate) uuid::Uuid);

impl ProcessId {
    pub(crate) fn new() -> ProcessId {
        ProcessId(uuid::Uuid::now_v7())
    }
}

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// What one renewal found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Renewal {
    /// Tasks not renewed: their claim moved on (released and claimed again) or they are gone.
    /// The process holds them no more, and anything it writes about them is refused.
    pub(crate) lost: Vec<TaskId>,
    /// Renewed tasks that someone asked to cancel.
    pub(crate) cancel_requested: Vec<TaskId>,
    /// How many claims were renewed: those neither lost nor, on a backend with row locks,
    /// skipped because another transaction held them at that moment.
    pub(crate) renewed: u64,
    /// Whether the process's row was there to heartbeat: `false` once others took the
    /// process for dead (it was frozen past its lease) and deleted it.
    pub(crate) registered: bool,
}

/// A row of the processes table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessRecord {
    pub(crate) id: ProcessId,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) queues: Vec<String>,
    pub(crate) workers: u32,
    pub(crate) started_at: Millis,
    pub(crate) last_seen_at: Millis,
}

/// A started client, as the processes table shows it: what
/// [`Client::processes`](crate::Client::processes) lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessInfo {
    /// New for each start of a client.
    pub id: ProcessId,
    /// The host's name.
    pub host: String,
    /// The operating system's process id.
    pub pid: u32,
    /// The queues it serves, in name order.
    pub queues: Vec<String>,
    /// How many tasks it runs at once.
    pub workers: u32,
    /// When it started, on the storage's clock.
    pub started_at: SystemTime,
    /// When it last renewed its leases, on the storage's clock.
    pub last_seen_at: SystemTime,
}

impl From<ProcessRecord> for ProcessInfo {
    fn from(record: ProcessRecord) -> ProcessInfo {
        let time = |ms: Millis| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        ProcessInfo {
            id: record.id,
            host: record.host,
            pid: record.pid,
            queues: record.queues,
            workers: record.workers,
            started_at: time(record.started_at),
            last_seen_at: time(record.last_seen_at),
        }
    }
}
