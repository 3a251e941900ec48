//! Control of queues and tasks from the application: pause and resume a queue, list the
//! queues, cancel, retry, run now, delete and purge tasks.
//!
//! Every call is one guarded transition in storage (see `Driver::queue_pause` and the rest):
//! it applies only from the states it names, atomically with respect to claims on every
//! process sharing the database, and answers whether it applied.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::{Client, retention_expiry};
use crate::error::{Error, Result};
use crate::storage::{
    CancelRetention, Cancelled, Millis, PurgeFilter, QueueStats, Retain, to_millis,
};
use crate::task::TaskId;

/// A queue the database knows: it has tasks (waiting, running or retained), or it was paused
/// at some time. What [`Client::queues`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueInfo {
    /// Its name and task counts.
    pub stats: QueueStats,
    /// When it was paused, while it is; `None` while its tasks run.
    pub paused_since: Option<SystemTime>,
}

impl QueueInfo {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.stats.queue
    }

    /// Whether claims skip the queue's tasks.
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }
}

/// Which retained (completed) tasks [`Client::purge`] deletes: those that match every
/// condition given. With no condition it deletes every retained task.
///
/// Outcomes add up: `.failed().cancelled()` deletes tasks that failed and tasks that were
/// cancelled. Naming no outcome deletes all three.
///
/// ```no_run
/// # use backlite::{Client, Purge};
/// # use std::time::{Duration, SystemTime};
/// # async fn run(client: Client) -> backlite::Result<()> {
/// let week_ago = SystemTime::now() - Duration::from_secs(7 * 24 * 3600);
/// let deleted = client
///     .purge(Purge::new().queue("emails").failed().cancelled().completed_before(week_ago))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "pass it to `Client::purge`"]
pub struct Purge {
    filter: PurgeFilter,
}

impl Purge {
    /// Every retained task, until narrowed.
    pub fn new() -> Purge {
        Purge::default()
    }

    /// Only tasks of this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.filter.queue = Some(queue.into());
        self
    }

    /// Tasks that succeeded (with any other outcome named).
    pub fn succeeded(mut self) -> Self {
        self.filter.succeeded = true;
        self
    }

    /// Tasks that failed (with any other outcome named).
    pub fn failed(mut self) -> Self {
        self.filter.failed = true;
        self
    }

    /// Tasks that were cancelled (with any other outcome named).
    pub fn cancelled(mut self) -> Self {
        self.filter.cancelled = true;
        self
    }

    /// Only tasks that completed (or were cancelled) before `time`.
    pub fn completed_before(mut self, time: SystemTime) -> Self {
        self.filter.completed_before = Some(to_millis(time));
        self
    }
}

impl Client {
    /// Pauses `queue` on every process that shares the database: claims started after this
    /// returns take none of its tasks. Tasks claimed before it (running, or claimed a moment
    /// ahead for a worker about to be free) still run and finish; tasks can still be added,
    /// and wait. Returns whether the queue was running before (`false`: it was paused
    /// already).
    ///
    /// The queue need not have tasks, or a processor here: a queue can be paused before its
    /// first task is added. The name must follow the queue-name rules
    /// ([`Error::InvalidQueueName`] otherwise).
    ///
    /// ```no_run
    /// # async fn run(client: backlite::Client) -> backlite::Result<()> {
    /// client.pause_queue("emails").await?;   // the mail server is down
    /// // ...
    /// client.resume_queue("emails").await?;  // every process picks them up again
    /// # Ok(()) }
    /// ```
    pub async fn pause_queue(&self, queue: &str) -> Result<bool> {
        check_queue_name(queue)?;
        let paused = self
            .driver()
            .queue_pause(queue.to_owned(), self.test_now())
            .await?;
        if paused {
            tracing::info!(queue, "queue paused");
        }
        Ok(paused)
    }

    /// Resumes a paused `queue`, and wakes every process that shares the database (on
    /// PostgreSQL by a NOTIFY; SQLite processes see the commit within their change check).
    /// Returns whether it was paused.
    pub async fn resume_queue(&self, queue: &str) -> Result<bool> {
        check_queue_name(queue)?;
        let resumed = self.driver().queue_resume(queue.to_owned()).await?;
        if resumed {
            tracing::info!(queue, "queue resumed");
        }
        Ok(resumed)
    }

    /// Every queue the database knows, in name order: those with tasks (waiting, running or
    /// retained) and those ever paused, with their counts and whether they are paused. The
    /// counts and paused states are read from one snapshot.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let records = self.driver().queue_list(self.now()).await?;
        Ok(records
            .into_iter()
            .map(|record| QueueInfo {
                stats: record.stats,
                paused_since: record.paused_at.map(system_time),
            })
            .collect())
    }

    /// Cancels task `id`. Returns `false` for a task that is completed or unknown.
    ///
    /// - **Waiting** (pending or scheduled): it will not run. It moves to the completed tasks
    ///   as [`Cancelled`](crate::TaskStatus::Cancelled), with the error `"cancelled"`, kept
    ///   as its queue's retention keeps a failed task. When this client has no processor for
    ///   the queue, it cannot know that retention: the task is then kept with its payload and
    ///   no expiry, until [`delete`](Self::delete)d, [`purge`](Self::purge)d or
    ///   [`retry`](Self::retry)ed.
    /// - **Running**: the task is marked as asked to cancel, and `true` is returned; the
    ///   process running it learns of it and ends it cancelled. Its attempt may still finish
    ///   first.
    pub async fn cancel(&self, id: &TaskId) -> Result<bool> {
        let retention = self.cancel_retention();
        let cancelled = self
            .driver()
            .task_cancel(*id, retention, self.test_now())
            .await?;
        match cancelled {
            Cancelled::Waiting => {
                tracing::info!(task_id = %id, "task cancelled before it ran");
                Ok(true)
            }
            Cancelled::Requested => {
                tracing::info!(task_id = %id, "cancel requested of a running task");
                // When this process holds the task, its attempt is cancelled here at once,
                // without waiting for the next lease renewal to report the request.
                self.cancel_running_here(*id);
                Ok(true)
            }
            Cancelled::NotFound => Ok(false),
        }
    }

    /// Runs a retained task that failed or was cancelled again, now, with the same id and
    /// its attempts counted from zero. Returns `false` when the task is not retained, did not
    /// fail or get cancelled, was retained without its payload (see
    /// [`Retention::data`](crate::Retention)), when a task with that id is waiting or
    /// running already, or when another task holds its unique key (see
    /// [`AddTasks::unique_key`](crate::AddTasks::unique_key)).
    pub async fn retry(&self, id: &TaskId) -> Result<bool> {
        let retried = self.driver().completed_retry(*id, self.test_now()).await?;
        if retried {
            tracing::info!(task_id = %id, "retained task retried");
        }
        Ok(retried)
    }

    /// [`retry`](Self::retry) for every retained task of `queue` that failed or was
    /// cancelled and kept its payload, in one transaction. Returns how many run again.
    pub async fn retry_failed(&self, queue: &str) -> Result<u64> {
        check_queue_name(queue)?;
        let retried = self
            .driver()
            .completed_retry_queue(queue.to_owned(), self.test_now())
            .await?;
        tracing::info!(queue, retried, "retained tasks retried");
        Ok(retried)
    }

    /// Makes a waiting task that is due later (scheduled, or waiting out a retry's backoff)
    /// due now, and wakes the processes that run its queue. Returns `false` when the task is
    /// due already, running, completed or unknown.
    pub async fn run_now(&self, id: &TaskId) -> Result<bool> {
        let moved = self.driver().task_run_now(*id, self.test_now()).await?;
        if moved {
            tracing::info!(task_id = %id, "task due now");
        }
        Ok(moved)
    }

    /// Deletes task `id` unless it is running: a waiting task then never runs, and a
    /// retained one is forgotten. Returns whether a task was deleted (`false` for a running,
    /// unknown or already deleted task).
    pub async fn delete(&self, id: &TaskId) -> Result<bool> {
        let deleted = self.driver().task_delete(*id).await?;
        if deleted {
            tracing::info!(task_id = %id, "task deleted");
        }
        Ok(deleted)
    }

    /// Deletes the retained (completed) tasks that `purge` names, and returns how many.
    /// Waiting and running tasks are never touched. See [`Purge`].
    pub async fn purge(&self, purge: Purge) -> Result<u64> {
        if let Some(queue) = &purge.filter.queue {
            check_queue_name(queue)?;
        }
        let queue = purge.filter.queue.clone();
        let deleted = self.driver().completed_purge(purge.filter).await?;
        tracing::info!(queue, deleted, "retained tasks purged");
        Ok(deleted)
    }

    /// How each queue this client serves keeps a task cancelled now: as a failed one.
    pub(crate) fn cancel_retention(&self) -> CancelRetention {
        let now = self.now();
        let registry = self.registry();
        let known = registry
            .queues()
            .map(|queue| {
                let retention = registry.config(queue).and_then(|c| c.retention());
                let retain = retention.and_then(|r| {
                    r.keeps(false).map(|payload| Retain {
                        payload,
                        expires_at: retention_expiry(r.duration, now),
                    })
                });
                (queue, retain)
            })
            .collect();
        CancelRetention { known }
    }
}

fn check_queue_name(queue: &str) -> Result<()> {
    crate::rules::validate_queue_name(queue).map_err(|rule| Error::InvalidQueueName {
        name: queue.to_owned(),
        reason: rule.to_string(),
    })
}

fn system_time(millis: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}
