//! The task mix of the crash harness, shared by the `test_worker` binary that runs it and by
//! `tests/crash.rs` that kills that binary and checks the outcome.
//!
//! Every run of a task appends a `start` line to a log before the processor does anything and
//! an `end` line after it is done, each one `write` on a file opened with `O_APPEND`: a process
//! killed with SIGKILL leaves whole lines only, and the kernel keeps them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backlite::Task;
use serde::{Deserialize, Serialize};

/// Attempts a crash task gets; tasks told to fail this many times end failed.
pub const MAX_ATTEMPTS: u32 = 4;

/// One task of the crash harness. `n` names it in the log.
#[derive(Debug, Clone, Serialize, Deserialize, Task)]
#[queue(name = "crash", max_attempts = 4, backoff = "25ms", retention(data))]
pub struct CrashTask {
    /// The task's number, 0..N.
    pub n: u64,
    /// How long each run sleeps.
    pub millis: u64,
    /// Attempts that fail before one succeeds; `>= MAX_ATTEMPTS` never succeeds.
    pub fail_first: u32,
    /// The earliest time it may start, ms since the epoch (0: at once).
    pub not_before: i64,
}

impl CrashTask {
    /// Whether the task ends succeeded.
    pub fn succeeds(&self) -> bool {
        self.fail_first < MAX_ATTEMPTS
    }

    /// The attempts recorded when it is done: interrupted runs do not count.
    pub fn attempts(&self) -> u32 {
        (self.fail_first + 1).min(MAX_ATTEMPTS)
    }
}

/// Task `n` of a run seeded with `seed`, and how long after saving it becomes due. Of the
/// tasks, about 15 % fail once or twice before succeeding, 2 % fail every attempt, and 15 %
/// are scheduled up to 3 s ahead.
pub fn task(n: u64, seed: u64) -> (CrashTask, Option<Duration>) {
    let mut rng = Rng::new(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let millis = rng.below(9);
    let fail_first = match rng.below(100) {
        0..=1 => MAX_ATTEMPTS,
        2..=9 => 1,
        10..=16 => 2,
        _ => 0,
    };
    let wait = (rng.below(100) < 15).then(|| Duration::from_millis(rng.below(3000)));
    let task = CrashTask {
        n,
        millis,
        fail_first,
        not_before: 0,
    };
    (task, wait)
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A line of the run log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `start <n> <attempt> <pid> <ms>`: a run began at `ms`.
    Start {
        n: u64,
        attempt: u32,
        pid: u32,
        at: i64,
    },
    /// `end <n> <attempt> <pid> ok|err`: the processor returned.
    End {
        n: u64,
        attempt: u32,
        pid: u32,
        ok: bool,
    },
}

impl Line {
    /// The line as written, newline included.
    pub fn render(&self) -> String {
        match self {
            Line::Start {
                n,
                attempt,
                pid,
                at,
            } => format!("start {n} {attempt} {pid} {at}\n"),
            Line::End {
                n,
                attempt,
                pid,
                ok,
            } => {
                let ok = if *ok { "ok" } else { "err" };
                format!("end {n} {attempt} {pid} {ok}\n")
            }
        }
    }

    /// Reads a line written by [`Line::render`].
    pub fn parse(line: &str) -> Option<Line> {
        let parts: Vec<&str> = line.split(' ').collect();
        Some(match parts[..] {
            ["start", n, attempt, pid, at] => Line::Start {
                n: n.parse().ok()?,
                attempt: attempt.parse().ok()?,
                pid: pid.parse().ok()?,
                at: at.parse().ok()?,
            },
            ["end", n, attempt, pid, ok] => Line::End {
                n: n.parse().ok()?,
                attempt: attempt.parse().ok()?,
                pid: pid.parse().ok()?,
                ok: match ok {
                    "ok" => true,
                    "err" => false,
                    _ => return None,
                },
            },
            _ => return None,
        })
    }
}

/// xorshift64*: enough randomness for test timing, with no dependency and a printable seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator; any seed works (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Rng {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        rng.next();
        rng
    }

    /// The next value.
    #[allow(
        clippy::should_implement_trait,
        reason = "not an iterator: it never ends"
    )]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}
