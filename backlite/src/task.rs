//! The `Task` trait and the queue configuration each task type carries.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::rules;

/// A type whose values can be queued and processed in the background.
///
/// Derive it with `#[derive(Task)]` and a `#[queue(..)]` attribute; the macro checks the
/// settings at compile time and builds [`Task::CONFIG`] as a constant:
///
/// ```
/// use backlite::Task;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Task)]
/// #[queue(name = "new_order_email", max_attempts = 5, backoff = "5s", timeout = "10s",
///         retention(duration = "6h", data(only_failed)))]
/// struct NewOrderEmail {
///     order_id: String,
/// }
///
/// assert_eq!(NewOrderEmail::CONFIG.name(), "new_order_email");
/// assert_eq!(NewOrderEmail::CONFIG.max_attempts(), 5);
/// ```
///
/// The payload is stored as JSON, so a task type can gain optional fields without breaking
/// the tasks already waiting in the database.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a backlite task",
    label = "not a task",
    note = "add `#[derive(backlite::Task)]` and `#[queue(name = \"..\")]` to `{Self}`"
)]
pub trait Task: Serialize + DeserializeOwned + Send + 'static {
    /// The queue this type is stored in and how its tasks are run.
    const CONFIG: QueueConfig;

    /// The schedule of `#[queue(.., periodic(..))]`: a client whose processors include this
    /// queue's enqueues the task's `Default` value at every tick.
    #[doc(hidden)]
    const PERIODIC: Option<crate::__private::PeriodicSpec> = None;
}

/// How the tasks of one queue are run: attempts, backoff, timeout and retention.
///
/// Built at compile time by `#[derive(Task)]`, or by hand with [`QueueConfig::builder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    name: &'static str,
    max_attempts: u32,
    backoff: Backoff,
    timeout: Option<Duration>,
    retention: Option<Retention>,
    concurrency: Option<u32>,
    priority: i16,
}

impl QueueConfig {
    /// Starts a configuration for the queue `name`: one attempt, no backoff, no timeout, no
    /// retention.
    ///
    /// ```
    /// use std::time::Duration;
    /// use backlite::{Backoff, QueueConfig};
    ///
    /// const CONFIG: QueueConfig = QueueConfig::builder("reports")
    ///     .max_attempts(3)
    ///     .backoff(Backoff::Fixed(Duration::from_secs(5)))
    ///     .build();
    /// assert_eq!(CONFIG.max_attempts(), 3);
    /// ```
    pub const fn builder(name: &'static str) -> QueueConfigBuilder {
        QueueConfigBuilder {
            config: QueueConfig {
                name,
                max_attempts: 1,
                backoff: Backoff::NONE,
                timeout: None,
                retention: None,
                concurrency: None,
                priority: 0,
            },
        }
    }

    /// The queue's name, unique among the processors of one client.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// How many times a task is run before it counts as failed; at least 1.
    pub const fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// How long a failed attempt waits before the next one.
    pub const fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// How long one attempt may run before it is dropped (at its next `.await`) and counted
    /// as failed. A processor that blocks its thread cannot be dropped: when it returns after
    /// its timeout, the attempt still counts as timed out.
    pub const fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// What is kept of a task once it has completed; `None` keeps nothing.
    pub const fn retention(&self) -> Option<Retention> {
        self.retention
    }

    /// The most tasks of this queue that one client runs at once; `None`: as many as it has
    /// workers. Held per process (see [`QueueConfigBuilder::concurrency`]).
    pub const fn concurrency(&self) -> Option<u32> {
        self.concurrency
    }

    /// The priority of the queue's tasks unless an add sets another: among the due tasks of
    /// one queue, higher runs first. 0 unless set.
    pub const fn priority(&self) -> i16 {
        self.priority
    }

    /// Checks the rules `build()` enforces, for configurations that did not go through it.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let name = self.name;
        rules::validate_queue_name(name).map_err(|e| format!("queue `{name}`: {e}"))?;
        if self.max_attempts == 0 {
            return Err(format!("queue `{name}`: max_attempts must be at least 1"));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(format!("queue `{name}`: timeout must be greater than zero"));
        }
        if self.concurrency == Some(0) {
            return Err(format!("queue `{name}`: concurrency must be at least 1"));
        }
        if let Backoff::Exponential { base, cap, .. } = self.backoff {
            if base.is_zero() || cap < base {
                return Err(format!(
                    "queue `{name}`: exponential backoff needs base > 0 and cap >= base"
                ));
            }
        }
        Ok(())
    }
}

/// Builds a [`QueueConfig`] in a `const` context; invalid values stop compilation there.
#[derive(Debug, Clone, Copy)]
#[must_use = "call `.build()` to get the QueueConfig"]
pub struct QueueConfigBuilder {
    config: QueueConfig,
}

impl QueueConfigBuilder {
    /// Sets how many times a task is run before it counts as failed (at least 1).
    pub const fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.config.max_attempts = max_attempts;
        self
    }

    /// Sets the wait between a failed attempt and the next.
    pub const fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Sets how long one attempt may run (greater than zero).
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// Sets what is kept of completed tasks.
    pub const fn retention(mut self, retention: Retention) -> Self {
        self.config.retention = Some(retention);
        self
    }

    /// Sets the most tasks of this queue that one client runs at once (at least 1), so that
    /// a slow queue cannot take every worker while the other queues keep flowing. The
    /// client's claims take no more of the queue's tasks than the limit leaves free, so a
    /// queue at its limit holds no claimed task back from other processes.
    ///
    /// The limit holds per process: two clients serving the queue run up to twice as many.
    ///
    /// ```
    /// use backlite::QueueConfig;
    ///
    /// const CONFIG: QueueConfig = QueueConfig::builder("thumbnails").concurrency(4).build();
    /// assert_eq!(CONFIG.concurrency(), Some(4));
    /// ```
    pub const fn concurrency(mut self, limit: u32) -> Self {
        self.config.concurrency = Some(limit);
        self
    }

    /// Sets the default priority of the queue's tasks: higher runs first (default 0).
    pub const fn priority(mut self, priority: i16) -> Self {
        self.config.priority = priority;
        self
    }

    /// Checks the settings and returns the configuration.
    ///
    /// # Panics
    /// On an invalid queue name, `max_attempts` or `concurrency` of 0, a zero timeout or an exponential backoff
    /// with a zero base or a cap below its base. In a `const` this is a compile error.
    pub const fn build(self) -> QueueConfig {
        let c = self.config;
        if rules::validate_queue_name(c.name).is_err() {
            panic!(
                "invalid queue name: use 1 to 100 ASCII letters, digits or the characters `_ - . :`"
            );
        }
        if c.max_attempts == 0 {
            panic!("max_attempts must be at least 1");
        }
        if let Some(0) = c.concurrency {
            panic!("concurrency must be at least 1");
        }
        if let Some(timeout) = c.timeout {
            if timeout.is_zero() {
                panic!("timeout must be greater than zero");
            }
        }
        if let Backoff::Exponential { base, cap, .. } = c.backoff {
            if base.is_zero() || cap.as_nanos() < base.as_nanos() {
                panic!("exponential backoff needs base > 0 and cap >= base");
            }
        }
        c
    }
}

/// The wait between a failed attempt and the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backoff {
    /// The same wait after every failure.
    Fixed(Duration),
    /// `base` after the first failure, doubling after each further one, never above `cap`.
    Exponential {
        /// The wait after the first failed attempt.
        base: Duration,
        /// The longest wait.
        cap: Duration,
        /// Spread retries over the second half of each wait, so that tasks which failed
        /// together (say, when a service went down) do not all retry at the same moment. The
        /// point in that half is drawn at random for every retry: two runs of the same task
        /// and attempt wait different times.
        jitter: bool,
    },
}

impl Backoff {
    /// Retry at once.
    pub const NONE: Backoff = Backoff::Fixed(Duration::ZERO);

    /// The wait after failed attempt number `attempt` (1-based). With jitter, `entropy` picks
    /// where in the second half of the wait it ends; the dispatcher passes a fresh random
    /// number each time.
    pub(crate) fn delay(&self, attempt: u32, entropy: u64) -> Duration {
        match *self {
            Backoff::Fixed(wait) => wait,
            Backoff::Exponential { base, cap, jitter } => {
                let doublings = attempt.saturating_sub(1).min(63);
                let wait = base
                    .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
                    .map_or(cap, |w| w.min(cap));
                if jitter {
                    let half = wait / 2;
                    let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
                    let extra = if spread == 0 {
                        0
                    } else {
                        entropy % (spread + 1)
                    };
                    half + Duration::from_nanos(extra)
                } else {
                    wait
                }
            }
        }
    }
}

/// What is kept of a task once it has completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long a completed task is kept; `None` keeps it until deleted by hand.
    pub duration: Option<Duration>,
    /// Keep only tasks that failed; succeeded tasks are deleted at once.
    pub only_failed: bool,
    /// Whether the payload is kept along with the outcome.
    pub data: RetainData,
}

/// Whether a retained task keeps its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainData {
    /// Keep the outcome only.
    None,
    /// Keep the payload of every retained task.
    All,
    /// Keep the payload only of tasks that failed.
    OnlyFailed,
}

impl Retention {
    /// Whether a task with this outcome is kept, and whether its payload is.
    pub(crate) fn keeps(&self, succeeded: bool) -> Option<bool> {
        if succeeded && self.only_failed {
            return None;
        }
        Some(match self.data {
            RetainData::None => false,
            RetainData::All => true,
            RetainData::OnlyFailed => !succeeded,
        })
    }
}

/// The identifier of a task: a UUID v7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(uuid::Uuid);

impl TaskId {
    pub(crate) fn new() -> Self {
        TaskId(uuid::Uuid::now_v7())
    }

    pub(crate) fn from_bytes(bytes: [u8; 16]) -> Self {
        TaskId(uuid::Uuid::from_bytes(bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The time the id carries, to the millisecond: when the task was added, or, for a task
    /// enqueued by a [`Schedule`](crate::Schedule), the tick it was enqueued for. `None` for
    /// an id that is not a UUID v7 (one parsed from elsewhere).
    ///
    /// ```
    /// let id: backlite::TaskId = "0190b6ba-3c00-7000-8000-000000000000".parse()?;
    /// let ms = id.timestamp().unwrap().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    /// assert_eq!(ms, 1_721_052_576_768);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timestamp(&self) -> Option<std::time::SystemTime> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Some(std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0.hyphenated())
    }
}

/// The text given to [`TaskId::from_str`] is not a UUID.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a task id (a UUID such as 0193a8a0-7c3e-7d6e-9a1b-3f2c4d5e6f70)")]
pub struct ParseTaskIdError(String);

impl FromStr for TaskId {
    type Err = ParseTaskIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(TaskId)
            .map_err(|_| ParseTaskIdError(s.chars().take(64).collect()))
    }
}

impl Serialize for TaskId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.hyphenated())
    }
}

impl<'de> serde::Deserialize<'de> for TaskId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Waiting to run: new, scheduled, or waiting for a retry.
    Pending,
    /// Claimed by a worker and running now (or its worker died and it awaits release).
    Running,
    /// Completed successfully and retained.
    Succeeded,
    /// Failed its last attempt (or expired) and retained.
    Failed,
    /// Cancelled, by `Client::cancel` or by its processor, and retained.
    Cancelled,
    /// Unknown id, or completed and not retained (or its retention expired).
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_up_to_its_cap() {
        let backoff = Backoff::Exponential {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            jitter: false,
        };
        let waits: Vec<u64> = (1..=6).map(|a| backoff.delay(a, 0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff.delay(u32::MAX, 0), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_in_the_second_half() {
        let backoff = Backoff::Exponential {
            base: Duration::from_secs(8),
            cap: Duration::from_secs(8),
            jitter: true,
        };
        for entropy in [0, 1, 12345, u64::MAX] {
            let wait = backoff.delay(1, entropy);
            assert!(wait >= Duration::from_secs(4) && wait <= Duration::from_secs(8));
        }
    }

    #[test]
    fn retention_rules() {
        let r = |only_failed, data| Retention {
            duration: None,
            only_failed,
            data,
        };
        assert_eq!(r(false, RetainData::None).keeps(true), Some(false));
        assert_eq!(r(true, RetainData::All).keeps(true), None);
        assert_eq!(r(true, RetainData::All).keeps(false), Some(true));
        assert_eq!(r(false, RetainData::OnlyFailed).keeps(true), Some(false));
        assert_eq!(r(false, RetainData::OnlyFailed).keeps(false), Some(true));
    }

    #[test]
    fn task_ids_round_trip_and_sort_by_time() {
        let a = TaskId::new();
        let b = TaskId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<TaskId>().ok(), Some(a));
        assert!("nope".parse::<TaskId>().is_err());
    }
}
