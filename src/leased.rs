//! The task of the lease tests, shared by the `test_worker` binary that runs it and by
//! `tests/leases.rs` that freezes that binary mid-run: each run logs its start (with its
//! process, its claim's fence and the time) and its end, as the crash harness does.

use backlite::Task;
use serde::{Deserialize, Serialize};

/// Runs `millis`, or until its context is cancelled. Retained, so that the test reads which
/// run's outcome was stored.
#[derive(Debug, Clone, Serialize, Deserialize, Task)]
#[queue(name = "leased", retention)]
pub struct Leased {
    /// How long a run takes.
    pub millis: u64,
}

/// One line of the lease log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseLine {
    /// `start <task id> <pid> <fence> <ms since the epoch>`
    Start { pid: u32, fence: u64, at: i64 },
    /// `end <task id> <pid> <fence> <cancelled>`
    End {
        pid: u32,
        fence: u64,
        cancelled: bool,
    },
}

impl LeaseLine {
    /// Reads one line of the log; `None` for anything else.
    pub fn parse(line: &str) -> Option<LeaseLine> {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["start", _, pid, fence, at] => Some(LeaseLine::Start {
                pid: pid.parse().ok()?,
                fence: fence.parse().ok()?,
                at: at.parse().ok()?,
            }),
            ["end", _, pid, fence, cancelled] => Some(LeaseLine::End {
                pid: pid.parse().ok()?,
                fence: fence.parse().ok()?,
                cancelled: cancelled.parse().ok()?,
            }),
            _ => None,
        }
    }
}
