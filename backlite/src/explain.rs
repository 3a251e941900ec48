//! Why a task is where it is: [`Client::explain`]. The driver reads the facts in one
//! operation; the reason is decided here, the same for every backend.

use std::fmt;
use std::time::SystemTime;

use crate::client::Client;
use crate::error::Result;
use crate::storage::inspect::ProcessRecord;
use crate::storage::{Facts, from_millis};
use crate::task::{TaskId, TaskStatus};
use crate::utc::utc_text;

/// Why a task is where it is, as [`Client::explain`] finds it. Its `Display` is one sentence
/// for an operator.
///
/// For a waiting task the reasons are checked in the order an operator acts on them: whether
/// it expired (it will never run), what
/// blocks it whatever the time (its queue is paused, no live process serves its queue), then
/// its own time (scheduled, backing off), then the tasks ahead of it; only then is it ready.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Explanation {
    /// No such task: unknown, or completed and not retained (or its retention expired).
    NotFound,
    /// Its queue is paused: it runs once the queue is resumed.
    QueuePaused {
        /// The queue.
        queue: String,
        /// When the queue was paused.
        since: SystemTime,
    },
    /// No live process serves its queue: none whose registry row names the queue was seen
    /// within `release_after`.
    NoLiveProcess {
        /// The queue.
        queue: String,
    },
    /// Scheduled for a later time.
    Scheduled {
        /// When it becomes due.
        at: SystemTime,
    },
    /// Its last attempt failed; it waits before the next.
    BackingOff {
        /// The attempt that failed last.
        attempt: u32,
        /// When it becomes due again.
        until: SystemTime,
    },
    /// Due, behind other due tasks of its queue that are claimed before it (claim order:
    /// priority, highest first, then due time, then insertion).
    WaitingBehind {
        /// Due, unclaimed tasks of the same queue ahead of it: of a higher priority, or of
        /// its own and earlier in line.
        ahead: u64,
    },
    /// It was not started by its expiry (`AddTasks::expires_in`): it will never run. The
    /// maintenance sweep soon ends it as failed, with the error `"expired"`.
    Expired {
        /// When it expired.
        at: SystemTime,
    },
    /// Due, first in line, and its queue is served: the next free worker takes it.
    Ready,
    /// Claimed by a worker.
    Running {
        /// The process that claimed it, when the claim names one.
        process: Option<Claimer>,
        /// When it was claimed.
        since: SystemTime,
        /// When the claim was last renewed.
        lease_renewed_at: Option<SystemTime>,
        /// When the claim ends unless renewed.
        lease_until: Option<SystemTime>,
    },
    /// It succeeded.
    Succeeded {
        /// When its last attempt ended.
        at: SystemTime,
    },
    /// Its last attempt failed (or it could not be run).
    Failed {
        /// When its last attempt ended.
        at: SystemTime,
    },
    /// It was cancelled.
    Cancelled {
        /// When it ended.
        at: SystemTime,
    },
}

/// The process a running task's claim names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claimer {
    /// The process's id in the process registry.
    pub id: String,
    /// Its host and process id, while its registry row exists.
    pub host: Option<String>,
    /// The operating system's process id.
    pub pid: Option<u32>,
}

impl Explanation {
    fn decide(facts: Facts) -> Explanation {
        match facts {
            Facts::NotFound => Explanation::NotFound,
            Facts::Completed {
                status,
                finished_at,
            } => {
                let at = from_millis(finished_at);
                match status {
                    TaskStatus::Succeeded => Explanation::Succeeded { at },
                    TaskStatus::Cancelled => Explanation::Cancelled { at },
                    _ => Explanation::Failed { at },
                }
            }
            Facts::Running {
                claimed_at,
                claimed_by,
                process,
                lease_renewed_at,
                lease_until,
            } => Explanation::Running {
                process: claimed_by.map(|id| {
                    let (host, pid) = match process {
                        Some(ProcessRecord { host, pid }) => (Some(host), u32::try_from(pid).ok()),
                        None => (None, None),
                    };
                    Claimer { id, host, pid }
                }),
                since: from_millis(claimed_at),
                lease_renewed_at: lease_renewed_at.map(from_millis),
                lease_until: lease_until.map(from_millis),
            },
            Facts::Waiting {
                queue,
                run_at,
                attempts,
                paused_at,
                live_processes,
                ahead,
                expires_at,
                now,
            } => {
                if let Some(at) = expires_at.filter(|at| *at <= now) {
                    Explanation::Expired {
                        at: from_millis(at),
                    }
                } else if let Some(paused_at) = paused_at {
                    Explanation::QueuePaused {
                        queue,
                        since: from_millis(paused_at),
                    }
                } else if live_processes == 0 {
                    Explanation::NoLiveProcess { queue }
                } else if run_at > now && attempts > 0 {
                    Explanation::BackingOff {
                        attempt: attempts,
                        until: from_millis(run_at),
                    }
                } else if run_at > now {
                    Explanation::Scheduled {
                        at: from_millis(run_at),
                    }
                } else if ahead > 0 {
                    Explanation::WaitingBehind { ahead }
                } else {
                    Explanation::Ready
                }
            }
        }
    }
}

fn time(at: SystemTime) -> String {
    utc_text(crate::storage::to_millis(at))
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explanation::NotFound => {
                f.write_str("not found (unknown, or completed and not retained)")
            }
            Explanation::QueuePaused { queue, since } => {
                write!(f, "queue `{queue}` is paused (since {})", time(*since))
            }
            Explanation::NoLiveProcess { queue } => {
                write!(f, "no live process serves queue `{queue}`")
            }
            Explanation::Scheduled { at } => write!(f, "scheduled for {}", time(*at)),
            Explanation::BackingOff { attempt, until } => write!(
                f,
                "backing off after attempt {attempt} until {}",
                time(*until)
            ),
            Explanation::WaitingBehind { ahead } => {
                let tasks = if *ahead == 1 { "task" } else { "tasks" };
                write!(
                    f,
                    "waiting behind {ahead} due {tasks} of equal or higher priority in its queue"
                )
            }
            Explanation::Expired { at } => write!(
                f,
                "expired at {} without starting: it will not run",
                time(*at)
            ),
            Explanation::Ready => f.write_str("ready to run now"),
            Explanation::Running {
                process,
                since,
                lease_renewed_at,
                lease_until,
            } => {
                f.write_str("running")?;
                match process {
                    Some(Claimer {
                        host: Some(host),
                        pid: Some(pid),
                        id,
                    }) => write!(f, " on process {id} ({host}, pid {pid})")?,
                    Some(Claimer { id, .. }) => write!(f, " on process {id}")?,
                    None => {}
                }
                write!(f, " since {}", time(*since))?;
                if let Some(renewed) = lease_renewed_at {
                    write!(f, ", lease renewed at {}", time(*renewed))?;
                }
                if let Some(until) = lease_until {
                    write!(f, ", lease until {}", time(*until))?;
                }
                Ok(())
            }
            Explanation::Succeeded { at } => write!(f, "succeeded at {}", time(*at)),
            Explanation::Failed { at } => write!(f, "failed at {}", time(*at)),
            Explanation::Cancelled { at } => write!(f, "cancelled at {}", time(*at)),
        }
    }
}

impl Client {
    /// Why the task `id` is where it is: see [`Explanation`]. A process counts as live when
    /// its registry row was seen within this client's `release_after`.
    ///
    /// ```no_run
    /// # async fn run(client: backlite::Client, id: backlite::TaskId) -> backlite::Result<()> {
    /// let why = client.explain(&id).await?;
    /// // e.g. "queue `emails` is paused (since 2026-11-22 10:44:12.000 UTC)"
    /// println!("{id}: {why}");
    /// # Ok(()) }
    /// ```
    pub async fn explain(&self, id: &TaskId) -> Result<Explanation> {
        let live_within = self.inner.settings.release_after;
        let facts = self
            .driver()
            .task_facts(*id, self.test_now(), live_within)
            .await?;
        Ok(Explanation::decide(facts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(paused: Option<i64>, live: u64, run_at: i64, attempts: u32, ahead: u64) -> Facts {
        Facts::Waiting {
            queue: "q".into(),
            run_at,
            attempts,
            paused_at: paused,
            live_processes: live,
            ahead,
            expires_at: None,
            now: 1_000,
        }
    }

    /// Blockers come before times, and times before the line: a paused queue is named even
    /// for a task scheduled later, and a served queue's future task is scheduled, not ready.
    #[test]
    fn waiting_reasons_come_in_the_order_an_operator_acts_on() {
        let decide = Explanation::decide;
        assert_eq!(
            decide(waiting(Some(500), 0, 5_000, 2, 3)),
            Explanation::QueuePaused {
                queue: "q".into(),
                since: from_millis(500)
            }
        );
        assert_eq!(
            decide(waiting(None, 0, 5_000, 2, 3)),
            Explanation::NoLiveProcess { queue: "q".into() }
        );
        assert_eq!(
            decide(waiting(None, 1, 5_000, 2, 0)),
            Explanation::BackingOff {
                attempt: 2,
                until: from_millis(5_000)
            }
        );
        assert_eq!(
            decide(waiting(None, 1, 5_000, 0, 0)),
            Explanation::Scheduled {
                at: from_millis(5_000)
            }
        );
        assert_eq!(
            decide(waiting(None, 1, 1_000, 1, 4)),
            Explanation::WaitingBehind { ahead: 4 }
        );
        assert_eq!(decide(waiting(None, 2, 900, 0, 0)), Explanation::Ready);
    }

    /// A task past its expiry will never run, whatever else holds it: that comes first. Its
    /// expiry later than now changes nothing.
    #[test]
    fn an_expired_waiting_task_is_expired_before_anything_else() {
        let expiring = |at| {
            let mut facts = waiting(Some(500), 0, 5_000, 2, 3);
            if let Facts::Waiting { expires_at, .. } = &mut facts {
                *expires_at = Some(at);
            }
            facts
        };
        assert_eq!(
            Explanation::decide(expiring(1_000)),
            Explanation::Expired {
                at: from_millis(1_000)
            }
        );
        assert!(matches!(
            Explanation::decide(expiring(1_001)),
            Explanation::QueuePaused { .. }
        ));
        assert_eq!(
            Explanation::Expired { at: from_millis(0) }.to_string(),
            "expired at 1970-01-01 00:00:00.000 UTC without starting: it will not run"
        );
    }

    #[test]
    fn explanations_read_as_sentences() {
        let running = Explanation::Running {
            process: Some(Claimer {
                id: "p1".into(),
                host: Some("web-1".into()),
                pid: Some(42),
            }),
            since: from_millis(0),
            lease_renewed_at: Some(from_millis(1_000)),
            lease_until: Some(from_millis(61_000)),
        };
        assert_eq!(
            running.to_string(),
            "running on process p1 (web-1, pid 42) since 1970-01-01 00:00:00.000 UTC, lease \
             renewed at 1970-01-01 00:00:01.000 UTC, lease until 1970-01-01 00:01:01.000 UTC"
        );
        assert_eq!(
            Explanation::WaitingBehind { ahead: 1 }.to_string(),
            "waiting behind 1 due task of equal or higher priority in its queue"
        );
        assert_eq!(
            Explanation::BackingOff {
                attempt: 2,
                until: from_millis(0)
            }
            .to_string(),
            "backing off after attempt 2 until 1970-01-01 00:00:00.000 UTC"
        );
    }
}
