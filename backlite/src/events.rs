//! Task events for the application's own hook ([`ClientBuilder::on_event`]): what happens to
//! each attempt, as it happens, for what metrics do not cover (an alert on a failure with its
//! error text, an audit log, a test's assertions).
//!
//! [`ClientBuilder::on_event`]: crate::ClientBuilder::on_event

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use crate::task::TaskId;

/// What happened to a task. Passed by reference to every hook given to
/// [`ClientBuilder::on_event`](crate::ClientBuilder::on_event).
///
/// ```
/// use backlite::{Client, TaskEvent};
///
/// # async fn run() -> backlite::Result<()> {
/// let client = Client::builder()
///     .database(":memory:")
///     .on_event(|event: &TaskEvent<'_>| {
///         if let TaskEvent::Failed { task_id, queue, error, .. } = event {
///             eprintln!("task {task_id} of {queue} failed for good: {error}");
///         }
///     })
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TaskEvent<'a> {
    /// An attempt is starting.
    #[non_exhaustive]
    Started {
        /// The task.
        task_id: TaskId,
        /// Its queue.
        queue: &'a str,
        /// Which attempt, from 1.
        attempt: u32,
    },
    /// The attempt succeeded; its outcome is being recorded.
    #[non_exhaustive]
    Succeeded {
        /// The task.
        task_id: TaskId,
        /// Its queue.
        queue: &'a str,
        /// Which attempt, from 1.
        attempt: u32,
        /// How long the attempt ran.
        duration: Duration,
    },
    /// The attempt failed and the task will run again after `retry_in`.
    #[non_exhaustive]
    Retried {
        /// The task.
        task_id: TaskId,
        /// Its queue.
        queue: &'a str,
        /// Which attempt failed, from 1.
        attempt: u32,
        /// How long the attempt ran.
        duration: Duration,
        /// The error, with its chain of sources.
        error: &'a str,
        /// The backoff before the next attempt.
        retry_in: Duration,
    },
    /// The processor returned [`Snooze`](crate::Snooze): the task runs again after `snooze`,
    /// and this attempt does not count.
    #[non_exhaustive]
    Snoozed {
        /// The task.
        task_id: TaskId,
        /// Its queue.
        queue: &'a str,
        /// Which attempt snoozed, from 1; the next one has the same number.
        attempt: u32,
        /// How long the attempt ran.
        duration: Duration,
        /// The wait before it runs again.
        snooze: Duration,
    },
    /// The attempt failed and the task will not run again: its attempts are used up, or its
    /// failure cannot pass (a payload that does not decode).
    #[non_exhaustive]
    Failed {
        /// The task.
        task_id: TaskId,
        /// Its queue.
        queue: &'a str,
        /// Which attempt failed, from 1.
        attempt: u32,
        /// How long the attempt ran.
        duration: Duration,
        /// The error, with its chain of sources.
        error: &'a str,
    },
    /// Tasks whose lease ended (their process did not renew it for `release_after`) were
    /// handed back to be run again: their process is taken for dead.
    #[non_exhaustive]
    Released {
        /// How many tasks, over every queue.
        count: u64,
    },
}

/// A hook on task events.
pub(crate) type Hook = Arc<dyn Fn(&TaskEvent<'_>) + Send + Sync + 'static>;

/// The hooks of one client, called in the order they were given.
#[derive(Clone, Default)]
pub(crate) struct Hooks(Vec<Hook>);

impl Hooks {
    pub(crate) fn push(&mut self, hook: Hook) {
        self.0.push(hook);
    }

    /// Calls every hook. A hook runs on the worker that ran the attempt, before its outcome
    /// is recorded; a panicking hook is logged and skipped, so that it cannot cost the task
    /// its outcome.
    pub(crate) fn emit(&self, event: &TaskEvent<'_>) {
        for hook in &self.0 {
            if std::panic::catch_unwind(AssertUnwindSafe(|| hook(event))).is_err() {
                tracing::error!(?event, "a backlite task event hook panicked");
            }
        }
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} hook(s)", self.0.len())
    }
}
