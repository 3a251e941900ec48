//! Inspecting tasks: one task with its history ([`Client::task`]) and filtered, keyset-paged
//! lists ([`Client::tasks`]).

use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::storage::inspect::{Keyset, ListKind, Span};
use crate::storage::{InfoRecord, ListQuery, Millis, SummaryRecord, from_millis, to_millis};
use crate::task::{TaskId, TaskStatus};

/// A task as it is now: where it is, its times, its failed attempts and, while it runs, its
/// lease. What [`Client::task`] returns.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task's id.
    pub id: TaskId,
    /// Its queue.
    pub queue: String,
    /// Where it is: pending (due or scheduled), running, or retained after its end.
    pub state: TaskStatus,
    /// Attempts that completed (an attempt interrupted by a stop or a lost worker does not
    /// count).
    pub attempts: u32,
    /// When it was added.
    pub created_at: SystemTime,
    /// When it is due, while it waits or runs; `None` once it has completed.
    pub due_at: Option<SystemTime>,
    /// When its current attempt was claimed, for a running task; otherwise when its last
    /// attempt started, if it had one.
    pub started_at: Option<SystemTime>,
    /// When its last attempt ended, for a completed task.
    pub finished_at: Option<SystemTime>,
    /// When its retention ends, for a completed task kept for a limited time. (The expiry of
    /// a task that has not started is [`pending_expires_at`](TaskInfo::pending_expires_at).)
    pub expires_at: Option<SystemTime>,
    /// When a waiting task given an expiry (`AddTasks::expires_in`, `expires_at`) is given up
    /// on unless started by then; `None` without one, and once it has completed.
    pub pending_expires_at: Option<SystemTime>,
    /// Its priority, while it waits or runs (higher runs first); `None` once completed.
    pub priority: Option<i16>,
    /// The errors of its last failed attempts (up to ten), oldest first. A task that succeeded
    /// after failures keeps them.
    pub errors: Vec<AttemptError>,
    /// Who holds it and until when, while it runs.
    pub lease: Option<Lease>,
    /// The stored payload: `None` for a completed task whose payload was not retained.
    payload: Option<Vec<u8>>,
}

impl TaskInfo {
    /// The task's payload as JSON; `None` for a completed task whose payload was not
    /// retained. A payload that is not JSON (written behind backlite's back) is
    /// [`Error::Payload`]: the rest of the task can still be read, its errors first.
    pub fn payload(&self) -> Result<Option<serde_json::Value>> {
        self.payload
            .as_deref()
            .map(|bytes| {
                serde_json::from_slice(bytes).map_err(|source| Error::Payload {
                    id: self.id,
                    source,
                })
            })
            .transpose()
    }
}

/// One failed attempt of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptError {
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// When the attempt started.
    pub at: SystemTime,
    /// How long it ran.
    pub duration: Duration,
    /// Its error, as the processor (or the timeout, or the panic) reported it.
    pub message: String,
}

/// The claim on a running task.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The id of the process that claimed it (its row in the process registry), when the
    /// claimer recorded one.
    pub claimed_by: Option<String>,
    /// When the claim was last renewed (or made).
    pub renewed_at: Option<SystemTime>,
    /// When the claim ends unless renewed: then the task is taken for abandoned and runs
    /// again.
    pub until: Option<SystemTime>,
}

/// One stored entry of a task's `errors` array.
#[derive(serde::Deserialize)]
struct StoredAttemptError {
    attempt: u32,
    at: Millis,
    duration_us: i64,
    error: String,
}

fn attempt_errors(id: TaskId, json: Option<&str>) -> Result<Vec<AttemptError>> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let stored: Vec<StoredAttemptError> = serde_json::from_str(json).map_err(|source| {
        Error::Storage(format!("the error history of task {id} is unreadable: {source}").into())
    })?;
    Ok(stored
        .into_iter()
        .map(|e| AttemptError {
            attempt: e.attempt,
            at: from_millis(e.at),
            duration: Duration::from_micros(u64::try_from(e.duration_us).unwrap_or(0)),
            message: e.error,
        })
        .collect())
}

impl TaskInfo {
    fn from_record(r: InfoRecord) -> Result<TaskInfo> {
        let completed = r.run_at.is_none();
        let finished_at = match (completed, r.last_executed_at, r.last_duration) {
            (true, Some(at), Some(duration)) => Some(from_millis(at) + duration),
            _ => None,
        };
        let lease = r.claimed_at.map(|_| Lease {
            claimed_by: r.claimed_by.clone(),
            renewed_at: r.lease_renewed_at.map(from_millis),
            until: r.lease_until.map(from_millis),
        });
        Ok(TaskInfo {
            errors: attempt_errors(r.id, r.errors.as_deref())?,
            id: r.id,
            queue: r.queue,
            state: r.status,
            attempts: r.attempts,
            created_at: from_millis(r.created_at),
            due_at: r.run_at.map(from_millis),
            started_at: r.claimed_at.or(r.last_executed_at).map(from_millis),
            finished_at,
            expires_at: r.expires_at.map(from_millis),
            pending_expires_at: r.pending_expires_at.map(from_millis),
            priority: r.priority,
            lease,
            payload: r.payload,
        })
    }
}

/// Which tasks a list shows. Each is listed in its own order, from its own index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListState {
    /// Waiting and due now, in the order they will be claimed (due time, then insertion).
    Pending,
    /// Waiting for a later time (scheduled, or backing off after a failure), in the order
    /// they will be claimed.
    Scheduled,
    /// Claimed by a worker, longest-claimed first.
    Running,
    /// Retained after success, most recently completed first.
    Succeeded,
    /// Retained after failure, most recently completed first.
    Failed,
    /// Retained after a cancel, most recently completed first.
    Cancelled,
}

/// A filtered list of tasks, one page at a time: what [`Client::tasks`] starts. Pages are read
/// by keyset (each after the last row of the one before), so a deep page costs what the
/// first does, and a task added meanwhile neither shifts nor repeats rows.
///
/// ```no_run
/// # use backlite::{Client, ListState};
/// # use std::time::{Duration, SystemTime};
/// # async fn run(client: Client) -> backlite::Result<()> {
/// let day_ago = SystemTime::now() - Duration::from_secs(86_400);
/// let mut page = client
///     .tasks(ListState::Failed)
///     .queue("emails")
///     .created(day_ago..)
///     .limit(50)
///     .fetch()
///     .await?;
/// loop {
///     for task in &page.tasks {
///         println!("{} {:?}", task.id, task.last_error);
///     }
///     let Some(next) = page.next else { break };
///     page = client.tasks(ListState::Failed).queue("emails").after(next).fetch().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a task list reads nothing until `fetch` is awaited"]
pub struct TaskList<'a> {
    client: &'a Client,
    state: ListState,
    queue: Option<String>,
    created: Span,
    due: Span,
    after: Option<TaskCursor>,
    limit: u32,
}

impl<'a> TaskList<'a> {
    /// The most rows a page holds.
    pub const MAX_LIMIT: u32 = 1000;

    pub(crate) fn new(client: &'a Client, state: ListState) -> TaskList<'a> {
        TaskList {
            client,
            state,
            queue: None,
            created: Span::ALL,
            due: Span::ALL,
            after: None,
            limit: 100,
        }
    }

    /// Only tasks of this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only tasks added within `range`, e.g. `since..` or `from..until`.
    pub fn created(mut self, range: impl RangeBounds<SystemTime>) -> Self {
        self.created = span(range);
        self
    }

    /// Only tasks due within `range`: pending, scheduled and running tasks have a due time;
    /// a completed task has none, so [`fetch`](TaskList::fetch) refuses this filter on the
    /// succeeded, failed and cancelled lists.
    pub fn due(mut self, range: impl RangeBounds<SystemTime>) -> Self {
        self.due = span(range);
        self
    }

    /// The page after the row `cursor` came from ([`TaskPage::next`]). A cursor pages only
    /// the list of the state it came from, each being in its own order: another state's
    /// list refuses it.
    pub fn after(mut self, cursor: TaskCursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// At most `limit` rows a page (100 unless set; at most [`MAX_LIMIT`](Self::MAX_LIMIT)).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Reads one page: one short statement on one index.
    pub async fn fetch(self) -> Result<TaskPage> {
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err(Error::Config(format!(
                "a task list's limit must be 1 to {}, not {}",
                Self::MAX_LIMIT,
                self.limit
            )));
        }
        if let Some(cursor) = self.after.filter(|c| c.state != self.state) {
            return Err(Error::Config(format!(
                "a cursor of the {:?} list cannot page the {:?} list: each is in its own order",
                cursor.state, self.state
            )));
        }
        let now = self.client.now();
        let (kind, due) = match self.state {
            ListState::Pending => (ListKind::Waiting, self.due.before(now.saturating_add(1))),
            ListState::Scheduled => (ListKind::Waiting, self.due.after(now.saturating_add(1))),
            ListState::Running => (ListKind::Running, self.due),
            ListState::Succeeded => (ListKind::Succeeded, self.finished_due()?),
            ListState::Failed => (ListKind::Failed, self.finished_due()?),
            ListState::Cancelled => (ListKind::Cancelled, self.finished_due()?),
        };
        let query = ListQuery {
            kind,
            queue: self.queue,
            created: self.created,
            due,
            after: self.after.map(|c| c.keyset),
            // One more than asked: whether it comes back says whether a next page exists.
            limit: self.limit + 1,
        };
        let mut rows = self.client.driver().task_page(query).await?;
        let next = (rows.len() > self.limit as usize).then(|| {
            rows.truncate(self.limit as usize);
            rows.last().map(|r| TaskCursor {
                state: self.state,
                keyset: r.keyset,
            })
        });
        Ok(TaskPage {
            tasks: rows.into_iter().map(TaskSummary::from_record).collect(),
            next: next.flatten(),
        })
    }

    fn finished_due(&self) -> Result<Span> {
        if self.due != Span::ALL {
            return Err(Error::Config(format!(
                "a due range selects waiting or running tasks; {:?} tasks have completed and \
                 have no due time",
                self.state
            )));
        }
        Ok(Span::ALL)
    }
}

impl Span {
    /// This span cut to end before `end`.
    fn before(self, end: Millis) -> Span {
        Span {
            to: self.to.min(end),
            ..self
        }
    }

    /// This span cut to start at `start`.
    fn after(self, start: Millis) -> Span {
        Span {
            from: self.from.max(start),
            ..self
        }
    }
}

/// A range of times as the half-open range of stored milliseconds it covers.
fn span(range: impl RangeBounds<SystemTime>) -> Span {
    let from = match range.start_bound() {
        Bound::Included(t) => to_millis(*t),
        Bound::Excluded(t) => to_millis(*t).saturating_add(1),
        Bound::Unbounded => Millis::MIN,
    };
    let to = match range.end_bound() {
        Bound::Included(t) => to_millis(*t).saturating_add(1),
        Bound::Excluded(t) => to_millis(*t),
        Bound::Unbounded => Millis::MAX,
    };
    Span { from, to }
}

/// One page of a task list.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskPage {
    /// The rows, in the list's order.
    pub tasks: Vec<TaskSummary>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<TaskCursor>,
}

/// A row of a task list: no payload and no history (read those with [`Client::task`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskSummary {
    /// The task's id.
    pub id: TaskId,
    /// Its queue.
    pub queue: String,
    /// Where it is.
    pub state: TaskStatus,
    /// Attempts that completed.
    pub attempts: u32,
    /// When it was added.
    pub created_at: SystemTime,
    /// When it is due, while it waits or runs.
    pub due_at: Option<SystemTime>,
    /// When its current attempt was claimed, for a running task; otherwise when its last
    /// attempt started.
    pub started_at: Option<SystemTime>,
    /// How long its last attempt ran.
    pub last_duration: Option<Duration>,
    /// Its last attempt's error, if that attempt failed.
    pub last_error: Option<String>,
}

impl TaskSummary {
    fn from_record(r: SummaryRecord) -> TaskSummary {
        TaskSummary {
            id: r.id,
            queue: r.queue,
            state: r.status,
            attempts: r.attempts,
            created_at: from_millis(r.created_at),
            due_at: r.run_at.map(from_millis),
            started_at: r.claimed_at.or(r.last_executed_at).map(from_millis),
            last_duration: r.last_duration,
            last_error: r.last_error,
        }
    }
}

/// Where the next page of a task list starts: the list's state and the place of the last
/// row read. It shows as text (`Display`, e.g. `failed.1764560000000.42`, or
/// `pending.p5.1764560000000.42` for a waiting list, whose order leads with the priority) and
/// parses back (`FromStr`), to travel in a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskCursor {
    state: ListState,
    keyset: Keyset,
}

/// Each list state's name in a cursor's text.
const STATE_NAMES: [(ListState, &str); 6] = [
    (ListState::Pending, "pending"),
    (ListState::Scheduled, "scheduled"),
    (ListState::Running, "running"),
    (ListState::Succeeded, "succeeded"),
    (ListState::Failed, "failed"),
    (ListState::Cancelled, "cancelled"),
];

impl fmt::Display for TaskCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = STATE_NAMES
            .iter()
            .find(|(state, _)| *state == self.state)
            .map_or("?", |(_, name)| name);
        let Keyset { priority, key, seq } = self.keyset;
        match self.state {
            ListState::Pending | ListState::Scheduled => {
                write!(f, "{name}.p{priority}.{key}.{seq}")
            }
            _ => write!(f, "{name}.{key}.{seq}"),
        }
    }
}

/// The text given to [`TaskCursor::from_str`] is not a cursor.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a task list cursor")]
pub struct ParseTaskCursorError(String);

impl FromStr for TaskCursor {
    type Err = ParseTaskCursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseTaskCursorError(s.chars().take(64).collect());
        let mut parts = s.splitn(4, '.');
        let Some(name) = parts.next() else {
            return Err(invalid());
        };
        let mut rest: Vec<&str> = parts.collect();
        // A waiting list's cursor leads with `p<priority>`; a cursor written before there
        // were priorities has none, and reads as priority 0.
        let priority = match rest.first().and_then(|p| p.strip_prefix('p')) {
            Some(priority) => {
                let priority = priority.parse().map_err(|_| invalid())?;
                rest.remove(0);
                priority
            }
            None => 0,
        };
        let [key, seq] = rest[..] else {
            return Err(invalid());
        };
        let state = STATE_NAMES
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(state, _)| *state)
            .ok_or_else(invalid)?;
        Ok(TaskCursor {
            state,
            keyset: Keyset {
                priority,
                key: key.parse().map_err(|_| invalid())?,
                seq: seq.parse().map_err(|_| invalid())?,
            },
        })
    }
}

impl Client {
    /// The task `id` as it is now, wherever it is: waiting, running, or retained after its
    /// end (with the errors of its last failed attempts, even when a later attempt
    /// succeeded). `None` when there is no such task, or it completed and was not retained.
    ///
    /// ```no_run
    /// # async fn run(client: backlite::Client, id: backlite::TaskId) -> backlite::Result<()> {
    /// if let Some(task) = client.task(&id).await? {
    ///     for error in &task.errors {
    ///         println!("attempt {} failed: {}", error.attempt, error.message);
    ///     }
    ///     let payload = task.payload()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn task(&self, id: &TaskId) -> Result<Option<TaskInfo>> {
        match self.driver().task_info(*id).await? {
            Some(record) => TaskInfo::from_record(record).map(Some),
            None => Ok(None),
        }
    }

    /// A list of the tasks in `state`, filtered by queue, created time and due time, read a
    /// page at a time: see [`TaskList`].
    pub fn tasks(&self, state: ListState) -> TaskList<'_> {
        TaskList::new(self, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_half_open_spans_of_milliseconds() {
        let at = |ms: u64| std::time::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(span(at(5)..at(9)), Span { from: 5, to: 9 });
        assert_eq!(span(at(5)..=at(9)), Span { from: 5, to: 10 });
        assert_eq!(
            span(at(5)..),
            Span {
                from: 5,
                to: Millis::MAX
            }
        );
        assert_eq!(span(..), Span::ALL);
    }

    #[test]
    fn cursors_travel_as_text() {
        for (state, _) in STATE_NAMES {
            let waiting = matches!(state, ListState::Pending | ListState::Scheduled);
            let cursor = TaskCursor {
                state,
                keyset: Keyset {
                    priority: if waiting { -3 } else { 0 },
                    key: -5,
                    seq: 42,
                },
            };
            assert_eq!(cursor.to_string().parse::<TaskCursor>().unwrap(), cursor);
        }
        let keyset = Keyset {
            priority: 0,
            key: -5,
            seq: 42,
        };
        let failed = TaskCursor {
            state: ListState::Failed,
            keyset,
        };
        assert_eq!(failed.to_string(), "failed.-5.42");
        let pending = TaskCursor {
            state: ListState::Pending,
            keyset: Keyset {
                priority: 9,
                ..keyset
            },
        };
        assert_eq!(pending.to_string(), "pending.p9.-5.42");
        // A cursor of a waiting list written before priorities reads as priority 0.
        assert_eq!(
            "pending.-5.42".parse::<TaskCursor>().unwrap(),
            TaskCursor {
                state: ListState::Pending,
                keyset
            }
        );
        for bad in [
            "5",
            "failed.5",
            "failed.a.1",
            "lost.1.2",
            "failed.1.2.3",
            "pending.pX.1.2",
        ] {
            assert!(bad.parse::<TaskCursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn error_history_reads_back_and_a_broken_one_is_a_typed_error() {
        let id = TaskId::new();
        let json = r#"[{"attempt":1,"at":1000,"duration_us":1500,"error":"boom"}]"#;
        let errors = attempt_errors(id, Some(json)).unwrap();
        assert_eq!(
            errors,
            [AttemptError {
                attempt: 1,
                at: from_millis(1000),
                duration: Duration::from_micros(1500),
                message: "boom".into(),
            }]
        );
        assert!(attempt_errors(id, None).unwrap().is_empty());
        assert!(matches!(
            attempt_errors(id, Some("{")),
            Err(Error::Storage(_))
        ));
    }
}
