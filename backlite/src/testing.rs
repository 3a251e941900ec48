//! Helpers for testing code that adds and runs tasks: a clock the test moves, a way to run
//! every due task now, a typed list of what was added, and a [`Context`] to run a processor
//! inline. Behind the `testing` feature; enable it in `[dev-dependencies]` only.
//!
//! ```
//! use std::time::Duration;
//! use backlite::testing::TestClock;
//! use backlite::{Client, Task, processor, processors};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Task)]
//! #[queue(name = "reminders")]
//! struct Reminder { user: u64 }
//!
//! #[processor]
//! async fn remind(task: Reminder) -> Result<(), std::io::Error> { Ok(()) }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> backlite::Result<()> {
//! let clock = TestClock::new();
//! let client = Client::builder()
//!     .database(":memory:")
//!     .processors(processors![remind])
//!     .test_clock(clock.clone())
//!     .build()
//!     .await?;
//! client.add(Reminder { user: 7 }).wait(Duration::from_secs(24 * 3600)).save().await?;
//!
//! assert_eq!(client.drain().await?, 0, "not due yet");
//! assert_eq!(client.enqueued::<Reminder>().await?[0].task.user, 7);
//!
//! clock.advance(Duration::from_secs(24 * 3600));
//! assert_eq!(client.drain().await?, 1);
//! assert!(client.enqueued::<Reminder>().await?.is_empty());
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::dispatcher;
use crate::error::{Error, Result};
use crate::processor::{BoxError, Context, Processor};
use crate::storage::{Millis, duration_millis, to_millis};
use crate::task::{Task, TaskId};

/// A clock that moves only when the test moves it. Give it to
/// [`ClientBuilder::test_clock`](crate::ClientBuilder::test_clock); every clone is the same
/// clock, so the test keeps one to [`advance`](TestClock::advance).
///
/// It replaces the time backlite stores and compares (when a task was added and is due, when
/// a retry's backoff ends, when retention expires, when a claim is old enough to be
/// released); tokio's clock, which times out attempts, is not touched. A task running while
/// the clock passes `release_after` is released, as it would be after that much real time.
#[derive(Clone)]
pub struct TestClock {
    inner: Arc<ClockState>,
}

struct ClockState {
    now: AtomicI64,
    /// The dispatchers of the clients that read this clock, to wake when it moves.
    wakers: Mutex<Vec<Weak<Notify>>>,
}

impl TestClock {
    /// A clock that starts at the current wall-clock time.
    pub fn new() -> TestClock {
        TestClock::at(SystemTime::now())
    }

    /// A clock that starts at `time`.
    pub fn at(time: SystemTime) -> TestClock {
        TestClock {
            inner: Arc::new(ClockState {
                now: AtomicI64::new(to_millis(time)),
                wakers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The clock's time, to the millisecond (the precision of stored times).
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.now_millis()).unwrap_or(0))
    }

    /// Moves the clock forward by `by`. Tasks that fall due are run by the next
    /// [`Client::drain`], or at once by a started client.
    pub fn advance(&self, by: Duration) {
        self.inner
            .now
            .fetch_add(duration_millis(by), Ordering::SeqCst);
        if let Ok(mut wakers) = self.inner.wakers.lock() {
            wakers.retain(|waker| match waker.upgrade() {
                Some(wake) => {
                    wake.notify_one();
                    true
                }
                None => false,
            });
        }
    }

    pub(crate) fn now_millis(&self) -> Millis {
        self.inner.now.load(Ordering::SeqCst)
    }

    pub(crate) fn attach(&self, wake: &Arc<Notify>) {
        if let Ok(mut wakers) = self.inner.wakers.lock() {
            wakers.push(Arc::downgrade(wake));
        }
    }
}

impl Default for TestClock {
    fn default() -> Self {
        TestClock::new()
    }
}

impl std::fmt::Debug for TestClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClock")
            .field("now", &self.now())
            .finish()
    }
}

/// A task waiting in its queue, as [`Client::enqueued`] lists it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Enqueued<T> {
    /// The task's id, as `save` returned it.
    pub id: TaskId,
    /// The task, read back from storage.
    pub task: T,
    /// When it is due (for a task backing off after a failure, when it is retried).
    pub run_at: SystemTime,
    /// Attempts that have failed so far.
    pub attempts: u32,
}

impl Client {
    /// Runs every task that is due now by the client's clock, here and not on the worker
    /// pool, and returns once each has finished and its outcome is recorded; tasks those
    /// tasks add, and retries, that are due by then are run too. Returns how many attempts
    /// ran.
    ///
    /// It takes the place of [`start`](Client::start) in a test, so that the test decides
    /// when tasks run: call it on a client that was not started (it returns
    /// [`Error::Config`] on one that was). It runs up to `workers` tasks at once, each with
    /// its queue's timeout and panic guard, as the worker pool would, and returns when a
    /// claim finds nothing due, so a task that adds a task due at once each time it runs
    /// (or snoozes for zero) keeps it going. A queue's `concurrency` limit bounds how many of
    /// its tasks run at once here too. Give the client a [`TestClock`] to make scheduled tasks and backoffs
    /// due without waiting.
    pub async fn drain(&self) -> Result<usize> {
        let started = self
            .inner
            .running
            .lock()
            .map(|running| running.is_some())
            .unwrap_or(true);
        if started {
            return Err(Error::Config(
                "drain() runs the due tasks itself: call it on a client that was not started"
                    .into(),
            ));
        }
        let limit = self.inner.settings.workers;
        // Each round runs at most a queue's concurrency limit of its tasks, as the pool would.
        let registry = &self.inner.registry;
        let room: Vec<(&'static str, usize)> = registry
            .queues()
            .filter_map(|queue| {
                let most = registry.config(queue)?.concurrency()?;
                Some((queue, usize::try_from(most).unwrap_or(usize::MAX)))
            })
            .collect();
        let mut attempts = 0;
        loop {
            let lease = self.inner.settings.release_after;
            let claimed = self
                .driver()
                .task_claim_within(None, limit, room.clone(), lease, Some(self.now()))
                .await?;
            if claimed.is_empty() {
                return Ok(attempts);
            }
            attempts += claimed.len();
            let mut running = JoinSet::new();
            for task in claimed {
                let client = self.clone();
                running.spawn(async move {
                    dispatcher::attempt(&client, task, CancellationToken::new(), None).await
                });
            }
            let mut completions = Vec::with_capacity(running.len());
            while let Some(joined) = running.join_next().await {
                // An attempt catches its processor's panics; a join error is a panic in
                // backlite itself, which the test should see.
                match joined {
                    Ok(completion) => completions.push(completion),
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
            self.driver().task_complete_many(completions).await?;
        }
    }

    /// The tasks of `T`'s queue that wait to run (due or not, including those backing off
    /// after a failure, not those running), read back as `T`, in the order they will run.
    pub async fn enqueued<T: Task>(&self) -> Result<Vec<Enqueued<T>>> {
        let queue = T::CONFIG.name();
        let records = self.driver().task_list_waiting(queue).await?;
        records
            .into_iter()
            .map(|record| {
                let task = serde_json::from_slice(&record.payload)
                    .map_err(|source| Error::Deserialize { queue, source })?;
                Ok(Enqueued {
                    id: record.id,
                    task,
                    run_at: UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(record.run_at).unwrap_or(0)),
                    attempts: record.attempts,
                })
            })
            .collect()
    }
}

/// A [`Context`] for running a processor inline, with the attempt number and cancellation
/// the test chooses, as a worker would give it for a task of `T`'s queue.
///
/// ```
/// use backlite::testing::TestContext;
/// use backlite::{Client, Context, Task, processor};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Task)]
/// #[queue(name = "charges", max_attempts = 3)]
/// struct Charge { cents: u64 }
///
/// #[processor]
/// async fn charge(ctx: Context, task: Charge) -> Result<(), std::io::Error> {
///     if ctx.attempt() < 3 {
///         return Err(std::io::Error::other("card network down"));
///     }
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> backlite::Result<()> {
/// let client = Client::builder().database(":memory:").build().await?;
/// let first = TestContext::new(&client).run::<charge>(Charge { cents: 100 }).await;
/// assert!(first.is_err());
/// let last = TestContext::new(&client).attempt(3).run::<charge>(Charge { cents: 100 }).await;
/// assert!(last.is_ok());
/// // Or call the function itself with the context.
/// let ctx = TestContext::<Charge>::new(&client).attempt(3).context();
/// assert!(charge(ctx, Charge { cents: 100 }).await.is_ok());
/// # Ok(()) }
/// ```
pub struct TestContext<T: Task> {
    client: Client,
    task_id: TaskId,
    attempt: u32,
    cancel: CancellationToken,
    task: PhantomData<fn() -> T>,
}

impl<T: Task> TestContext<T> {
    /// A context for the first attempt of a new task of `T`'s queue, run by `client`.
    pub fn new(client: &Client) -> Self {
        TestContext {
            client: client.clone(),
            task_id: TaskId::new(),
            attempt: 1,
            cancel: CancellationToken::new(),
            task: PhantomData,
        }
    }

    /// Which attempt the processor sees (default 1).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The id the processor sees.
    pub fn task_id(&self) -> TaskId {
        self.task_id
    }

    /// Asks the attempt to stop, as a timeout or a stopping client would: the context's
    /// `is_cancelled` turns true and `cancelled` completes.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The context to pass to the processor's function.
    pub fn context(&self) -> Context {
        // Whatever else a worker's context carries comes from the client (application
        // state, once contexts have it, goes here too), so that a processor sees the same
        // context inline as on the worker pool.
        Context {
            client: self.client.clone(),
            task_id: self.task_id,
            queue: T::CONFIG.name(),
            attempt: self.attempt,
            fence: 1,
            cancel: self.cancel.clone(),
        }
    }

    /// Runs processor `P` on `task` with this context, here and now, and returns what it
    /// returned. Nothing is stored, and no timeout or panic guard applies.
    pub async fn run<P: Processor<Task = T>>(&self, task: T) -> Result<(), BoxError> {
        P::process(self.context(), task).await
    }
}

impl<T: Task> std::fmt::Debug for TestContext<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestContext")
            .field("queue", &T::CONFIG.name())
            .field("task_id", &self.task_id)
            .field("attempt", &self.attempt)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}
