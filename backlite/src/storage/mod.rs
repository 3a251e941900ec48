//! Storage drivers. The dispatcher, the client and the UI speak to storage in operations
//! (insert, claim, complete, release); only the drivers hold SQL.

mod browse;
#[cfg(test)]
pub(crate) mod browse_conformance;
mod control;
#[cfg(test)]
pub(crate) mod control_conformance;
#[cfg(test)]
#[macro_use]
pub(crate) mod conformance;
#[cfg_attr(
    not(all(feature = "cli", feature = "postgres")),
    allow(dead_code, reason = "only `backlite copy` copies")
)]
pub(crate) mod copy;
#[cfg(test)]
pub(crate) mod copy_conformance;
pub(crate) mod counters;
#[cfg(test)]
pub(crate) mod counters_conformance;
#[cfg(test)]
pub(crate) mod dispatch_conformance;
mod expiry;
#[cfg(test)]
pub(crate) mod expiry_conformance;
pub(crate) mod inspect;
#[cfg(test)]
pub(crate) mod inspect_conformance;
mod lease;
#[cfg(test)]
pub(crate) mod lease_conformance;
#[cfg(test)]
pub(crate) mod model;
pub(crate) mod periodic;
#[cfg(test)]
pub(crate) mod periodic_conformance;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(test)]
pub(crate) mod priority_conformance;
pub(crate) mod sqlite;
#[cfg(test)]
pub(crate) mod unique_conformance;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::BoxFuture;
use crate::error::Result;
use crate::storage::periodic::{ScheduleDef, ScheduleRow, Schedules, TickClaim, TickOutcome};
use crate::task::{TaskId, TaskStatus};

pub(crate) use browse::{CompletedRecord, PREVIEW_BYTES, Page, TaskRecord, TaskState};
pub(crate) use control::{CANCELLED_ERROR, CancelRetention, Cancelled, PurgeFilter, QueueRecord};
pub(crate) use expiry::{EXPIRE_BATCH, EXPIRED_ERROR};
pub(crate) use inspect::{Facts, InfoRecord, ListQuery, SummaryRecord};
pub use lease::{ProcessId, ProcessInfo};
pub(crate) use lease::{ProcessRecord, Renewal};

/// Milliseconds since the Unix epoch: the unit of every stored time.
pub(crate) type Millis = i64;

pub(crate) fn now_millis() -> Millis {
    to_millis(SystemTime::now())
}

pub(crate) fn to_millis(time: SystemTime) -> Millis {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A stored time as a `SystemTime`.
pub(crate) fn from_millis(ms: Millis) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

pub(crate) fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A task to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewTask {
    pub(crate) id: TaskId,
    pub(crate) queue: &'static str,
    pub(crate) payload: Vec<u8>,
    pub(crate) created_at: Millis,
    pub(crate) run_at: Millis,
    /// Claimed before every waiting task of its queue with a lower priority.
    pub(crate) priority: i16,
    /// Not run unless claimed before this time; `None`: waits as long as it takes.
    pub(crate) expires_at: Option<Millis>,
    /// The key that makes the task unique among waiting, running and succeeded tasks (the
    /// unique index of the tasks table); `None`: not unique.
    pub(crate) unique_key: Option<Vec<u8>>,
    /// How long, in milliseconds, a succeeded task keeps its key; `None`: no window.
    pub(crate) unique_for: Option<i64>,
}

/// Names one claim of one task. Every write about a claimed task (completing it, handing it
/// back) carries the token of the claim it speaks for, and the driver applies it only while
/// that claim is the task's current one: a worker whose claim was released and taken again
/// cannot overwrite the new owner's work. Only the driver that issued a token reads it; it
/// grows with every claim of the task (a fencing number).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimToken {
    /// The fencing number of the claim: the task's writes apply only while it is current.
    pub(crate) fence: i64,
    /// Where the issuing driver found the claimed row (SQLite: its rowid; PostgreSQL: none),
    /// so that a write about the claim can go straight to it. A hint only: the row may have
    /// moved since, and every write still guards on the task's id and `fence`, so a wrong
    /// hint costs a second lookup, never a write to another task.
    pub(crate) row: Option<i64>,
}

impl ClaimToken {
    /// A token of a fencing number alone, without a row hint.
    pub(crate) const fn fenced(fence: i64) -> Self {
        ClaimToken { fence, row: None }
    }
}

// One claim is one token: the fencing number names it, and the row hint, a locator that
// does not decide which claim a write speaks for, takes no part in comparing tokens.
impl PartialEq for ClaimToken {
    fn eq(&self, other: &Self) -> bool {
        self.fence == other.fence
    }
}

impl Eq for ClaimToken {}

impl std::hash::Hash for ClaimToken {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.fence.hash(state);
    }
}

/// A task claimed for execution.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedTask {
    pub(crate) id: TaskId,
    pub(crate) queue: String,
    pub(crate) payload: Vec<u8>,
    /// Attempts that completed before this one (interrupted attempts do not count).
    pub(crate) attempts: u32,
    pub(crate) token: ClaimToken,
    /// When it was due: the start of its pickup latency.
    pub(crate) run_at: Millis,
}

/// The end of one attempt.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub(crate) id: TaskId,
    /// The task's queue, whose per-minute counters the outcome adds to, as its processor's
    /// configuration names it (no allocation per outcome); `None`: not counted (an outcome
    /// sent only to be refused by its claim's token).
    pub(crate) queue: Option<&'static str>,
    pub(crate) token: ClaimToken,
    pub(crate) executed_at: Millis,
    pub(crate) duration: Duration,
    pub(crate) error: Option<String>,
    pub(crate) next: Next,
}

/// The most tasks of `queue` a claim may take: its `room`, when named there, and `limit`
/// in any case.
pub(crate) fn queue_room(room: &[(&'static str, usize)], queue: &str, limit: usize) -> usize {
    room.iter()
        .find(|(name, _)| *name == queue)
        .map_or(limit, |(_, free)| (*free).min(limit))
}

/// What follows an attempt.
#[derive(Debug, Clone)]
pub(crate) enum Next {
    /// Run again at this time.
    Retry { run_at: Millis },
    /// Run again at this time, as if the attempt had not happened: the processor snoozed.
    /// Attempts, the last error and the error history stay as they were.
    Snooze { run_at: Millis },
    /// Done: delete the task, or end it in its row (payload and retention as `retain` says)
    /// when `retain` keeps it.
    /// `cancelled`: it ended by a cancel, not by its last attempt (the error names why).
    Done {
        retain: Option<Retain>,
        cancelled: bool,
    },
}

/// How a completed task is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retain {
    pub(crate) payload: bool,
    pub(crate) expires_at: Option<Millis>,
}

/// Counts of tasks per queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue's name.
    pub queue: String,
    /// Waiting and due now.
    pub pending: u64,
    /// Waiting for a later time (scheduled or backing off).
    pub scheduled: u64,
    /// Claimed by a worker.
    pub running: u64,
    /// Retained tasks that succeeded.
    pub succeeded: u64,
    /// Retained tasks that failed (or expired).
    pub failed: u64,
    /// Retained tasks that were cancelled.
    pub cancelled: u64,
}

/// The operations every storage backend provides. Futures are boxed so that the client holds
/// a `dyn Driver` and a second backend needs no type parameter on `Client`.
///
/// Operations that depend on the time take `now: Option<Millis>`: `None` is the storage's own
/// clock (the database server's, on a shared database, so that hosts whose clocks disagree
/// still agree on when a lease ends), `Some` a given time, for tests.
pub(crate) trait Driver: Send + Sync + 'static {
    /// The most tasks a dispatcher may hold claimed beyond its free workers. Tasks held
    /// ahead wait for this process while another could run them: where many hosts share the
    /// queue that costs more than the claims it saves.
    fn prefetch_max(&self) -> usize;

    /// Inserts all tasks or none, and returns, per task in order, the id of the task stored
    /// for it: its own, or, when its `unique_key` is held by a waiting, running or succeeded
    /// task (one stored before, or earlier in `tasks`), that task's, and it is not inserted.
    /// A succeeded holder whose `finished_at + unique_for` is at or before the new task's
    /// `created_at` lets go of its key first, in the same transaction. A database index
    /// enforces the rule, so it holds across concurrent inserts by any number of processes.
    fn task_insert_many(&self, tasks: Vec<NewTask>) -> BoxFuture<Result<Vec<TaskId>>>;

    /// Claims up to `limit` due, unclaimed, unexpired tasks of the served queues, in claim
    /// order (priority descending, then due time, then insertion), each under a lease of
    /// `lease`, for `process` (`None`: a claimer that is no started client, such as a test's
    /// `drain`). A claim may return fewer tasks than are due when other claimers hold some of
    /// them at that moment.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "claimers claim within their queues' limits")
    )]
    fn task_claim(
        &self,
        process: Option<ProcessId>,
        limit: usize,
        lease: Duration,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Vec<ClaimedTask>>> {
        self.task_claim_within(process, limit, Vec::new(), lease, now)
    }

    /// [`task_claim`](Driver::task_claim), taking at most `room` tasks of each queue that
    /// `room` names (none of a queue whose room is zero; queues it does not name are bounded
    /// by `limit` only). The bound is in the statement, per queue, so that a claimer never
    /// takes tasks it would have to hold back: the dispatcher passes what each queue's
    /// concurrency limit leaves free in this process.
    fn task_claim_within(
        &self,
        process: Option<ProcessId>,
        limit: usize,
        room: Vec<(&'static str, usize)>,
        lease: Duration,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Vec<ClaimedTask>>>;

    /// Records the end of attempts: retries, deletions and retained copies. A completion whose
    /// token is not its task's current claim changes nothing. In the same transaction, adds
    /// the batch's outcomes to the per-minute counters of their queues
    /// ([`counters::outcome_deltas`]), without looking at the rows: an outcome that its token
    /// refuses (an attempt that ran on after its claim was lost) is counted too.
    fn task_complete_many(&self, completions: Vec<Completion>) -> BoxFuture<Result<()>>;

    /// Returns claimed tasks to the pending state, as if they had not been claimed.
    fn task_unclaim_many(&self, tasks: Vec<(TaskId, ClaimToken)>) -> BoxFuture<Result<()>>;

    /// Releases claimed tasks whose lease has ended by `now`: their worker is taken for dead.
    fn task_release_stuck(&self, now: Option<Millis>) -> BoxFuture<Result<u64>>;

    /// How long until the earliest unclaimed, unexpired task of the served queues is due
    /// (zero when one is due already); `None` when there is none.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "the dispatcher leaves out its full queues")
    )]
    fn task_next_due(&self, now: Option<Millis>) -> BoxFuture<Result<Option<Duration>>> {
        self.task_next_due_except(Vec::new(), now)
    }

    /// [`task_next_due`](Driver::task_next_due) over the served queues but those in `full`:
    /// the dispatcher leaves out the queues at their concurrency limit, whose due tasks it
    /// could not claim, so that they neither wake it nor hide the next task of another queue.
    fn task_next_due_except(
        &self,
        full: Vec<&'static str>,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Option<Duration>>>;

    /// Extends the leases of claims that `process` holds to `now + lease`, in one write: only
    /// claims still current (the token matches and the task is claimed) are renewed; the rest
    /// are reported lost. The same write heartbeats the process's row and deletes the rows of
    /// processes not seen for `lease` (dead ones).
    fn task_renew_leases(
        &self,
        process: ProcessId,
        tasks: Vec<(TaskId, ClaimToken)>,
        lease: Duration,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Renewal>>;

    /// Adds a started client's row to the processes table; its `started_at` and
    /// `last_seen_at` are `now`, whatever the record says.
    fn process_register(
        &self,
        process: ProcessRecord,
        now: Option<Millis>,
    ) -> BoxFuture<Result<()>>;

    /// Deletes a stopped client's row.
    fn process_remove(&self, process: ProcessId) -> BoxFuture<Result<()>>;

    /// The processes seen within `live_within` of `now`, oldest start first.
    fn process_list(
        &self,
        live_within: Duration,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Vec<ProcessRecord>>>;

    /// Where a task is.
    fn task_status(&self, id: TaskId) -> BoxFuture<Result<TaskStatus>>;

    /// Deletes retained tasks whose retention has expired.
    fn completed_delete_expired(&self, now: Millis) -> BoxFuture<Result<u64>>;

    /// Ends up to `limit` waiting tasks of the queues `retention` knows whose expiry is at or
    /// before `now`: each ends as failed with [`EXPIRED_ERROR`] (also appended to its error
    /// history), retained in its row or deleted as `retention` says for its queue. Running
    /// tasks are not touched. The count ended.
    fn task_expire_pending(
        &self,
        retention: CancelRetention,
        limit: usize,
        now: Option<Millis>,
    ) -> BoxFuture<Result<u64>>;

    /// Task counts per queue, over every queue in the database.
    fn queue_stats(&self, now: Millis) -> BoxFuture<Result<Vec<QueueStats>>>;

    // Reads for browsing (the UI). Each is one short statement: a page of a list must never
    // hold a read transaction long enough to keep the WAL from being checkpointed.

    /// One page of the running or the upcoming tasks, payloads cut to [`PREVIEW_BYTES`].
    #[cfg_attr(not(feature = "ui"), allow(dead_code, reason = "only the UI browses"))]
    fn task_list(&self, state: TaskState, page: Page) -> BoxFuture<Result<Vec<TaskRecord>>>;

    /// A waiting or running task, with its whole payload.
    #[cfg_attr(not(feature = "ui"), allow(dead_code, reason = "only the UI browses"))]
    fn task_get(&self, id: TaskId) -> BoxFuture<Result<Option<TaskRecord>>>;

    /// One page of the retained tasks that succeeded (or failed), most recently completed
    /// first, payloads cut to [`PREVIEW_BYTES`].
    #[cfg_attr(not(feature = "ui"), allow(dead_code, reason = "only the UI browses"))]
    fn completed_list(
        &self,
        succeeded: bool,
        page: Page,
    ) -> BoxFuture<Result<Vec<CompletedRecord>>>;

    /// A retained completed task, with its whole payload when that was retained.
    #[cfg_attr(not(feature = "ui"), allow(dead_code, reason = "only the UI browses"))]
    fn completed_get(&self, id: TaskId) -> BoxFuture<Result<Option<CompletedRecord>>>;

    /// Every waiting (unclaimed) task of one queue, payloads whole, in claim order: what a
    /// test lists with `Client::enqueued`. It reads the whole queue, so it is for tests.
    #[cfg_attr(
        not(feature = "testing"),
        allow(dead_code, reason = "only the testing helpers list a queue whole")
    )]
    fn task_list_waiting(&self, queue: &'static str) -> BoxFuture<Result<Vec<TaskRecord>>>;

    // Control of queues and tasks (`Client::pause_queue`, `cancel`, `retry`, ...). Each is a
    // guarded transition: it applies only from the states it names, atomically with respect
    // to claims, so that it races safely with every claimer on the database.

    /// Marks `queue` paused from `now` on: no claim that starts after this returns tasks of
    /// it, and the next-due query ignores it. Whether it was running before.
    fn queue_pause(&self, queue: String, now: Option<Millis>) -> BoxFuture<Result<bool>>;

    /// Lets claims take `queue`'s tasks again, and wakes every claimer on the database.
    /// Whether it was paused before.
    fn queue_resume(&self, queue: String) -> BoxFuture<Result<bool>>;

    /// Every queue that has tasks (waiting, running or retained) or was ever paused, with
    /// its counts and paused state, in name order.
    fn queue_list(&self, now: Millis) -> BoxFuture<Result<Vec<QueueRecord>>>;

    /// Cancels task `id`: a waiting one ends cancelled (retained in its row, or deleted, as
    /// `retention` says for its queue); a running one is marked for its worker and runs on.
    fn task_cancel(
        &self,
        id: TaskId,
        retention: CancelRetention,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Cancelled>>;

    /// Makes a retained task that failed or was cancelled, with its payload, waiting again in
    /// its row, due `now`, attempts at zero: whether it did. A waiting or running task is not
    /// retained, so it is left alone.
    fn completed_retry(&self, id: TaskId, now: Option<Millis>) -> BoxFuture<Result<bool>>;

    /// `completed_retry` for every retained task of `queue` that failed or was cancelled and
    /// kept its payload; the count moved.
    fn completed_retry_queue(&self, queue: String, now: Option<Millis>) -> BoxFuture<Result<u64>>;

    /// Makes a waiting task that is due later (scheduled, or backing off) due `now`, and
    /// wakes the claimers. Whether it did.
    fn task_run_now(&self, id: TaskId, now: Option<Millis>) -> BoxFuture<Result<bool>>;

    /// Deletes task `id` unless it is running: a waiting task, or a retained one. Whether
    /// one was deleted.
    fn task_delete(&self, id: TaskId) -> BoxFuture<Result<bool>>;

    /// Deletes the retained tasks the filter names; the count deleted.
    fn completed_purge(&self, filter: PurgeFilter) -> BoxFuture<Result<u64>>;
    // Reads for inspecting tasks (`Client::task`, `Client::tasks`, `Client::explain`), each
    // one short statement (or, for a task's facts, a few reads of one row each).

    /// A task wherever it is (waiting, running or retained), its payload whole and its
    /// errors' JSON array; `None` when there is no such task.
    fn task_info(&self, id: TaskId) -> BoxFuture<Result<Option<InfoRecord>>>;

    /// Up to `query.limit` rows of one list after its keyset, in the list's order, from the
    /// index that order follows.
    fn task_page(&self, query: ListQuery) -> BoxFuture<Result<Vec<SummaryRecord>>>;

    /// What explains where a task is: its row, its queue's pause, the processes seen within
    /// `live_within` of `now` that serve its queue, the due tasks ahead of it, its claimer.
    fn task_facts(
        &self,
        id: TaskId,
        now: Option<Millis>,
        live_within: Duration,
    ) -> BoxFuture<Result<Facts>>;

    /// Writes rows that other layers own, for the inspection suite.
    #[cfg(test)]
    fn inspect_fixture(&self, fixture: inspect::Fixture) -> BoxFuture<Result<()>>;
    // Periodic tasks (`periodic.rs`).

    /// Stores each schedule that is new, or whose stored definition differs (its next tick
    /// then becomes the one given); leaves the others as they are. Returns them all as stored.
    fn schedule_register(&self, schedules: Vec<ScheduleDef>)
    -> BoxFuture<Result<Vec<ScheduleRow>>>;

    /// The stored schedules of these names, and the storage's time (`now` when given).
    fn schedule_list(
        &self,
        names: Vec<String>,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Schedules>>;

    /// Enqueues the due ticks of one schedule: only while its stored next tick is still the
    /// claim's `expected` (compare-and-set), moves it to the claim's `next_run_at` and inserts
    /// the ticks' tasks that are not stored yet, in one transaction.
    fn schedule_tick(&self, claim: TickClaim) -> BoxFuture<Result<TickOutcome>>;

    // Copying a database into another (`backlite copy`, `storage/*/copy.rs`): rows whole,
    // ids kept, so that a copy run again inserts nothing twice.

    /// Up to `limit` task rows of every state, whole, in id order after `after`: one keyset
    /// page, read in one statement.
    #[cfg_attr(
        not(all(feature = "cli", feature = "postgres")),
        allow(dead_code, reason = "only `backlite copy` copies")
    )]
    fn copy_tasks(
        &self,
        after: Option<TaskId>,
        limit: usize,
    ) -> BoxFuture<Result<Vec<copy::CopyTask>>>;

    /// Inserts the rows whose id is not stored yet, as they are, in one transaction; the
    /// count inserted.
    #[cfg_attr(
        not(all(feature = "cli", feature = "postgres")),
        allow(dead_code, reason = "only `backlite copy` copies")
    )]
    fn copy_insert_tasks(&self, tasks: Vec<copy::CopyTask>) -> BoxFuture<Result<u64>>;

    /// Inserts the schedules and queue rows whose name is not stored yet, in one transaction.
    #[cfg_attr(
        not(all(feature = "cli", feature = "postgres")),
        allow(dead_code, reason = "only `backlite copy` copies")
    )]
    fn copy_insert_meta(
        &self,
        schedules: Vec<copy::CopySchedule>,
        queues: Vec<copy::CopyQueue>,
    ) -> BoxFuture<Result<copy::MetaInserted>>;

    /// The task count of each queue and state, and every schedule and queue row.
    #[cfg_attr(
        not(all(feature = "cli", feature = "postgres")),
        allow(dead_code, reason = "only `backlite copy` copies")
    )]
    fn copy_census(&self) -> BoxFuture<Result<copy::Census>>;
    /// Stores the depth of each queue in `samples` (its waiting and running tasks) as the
    /// depth of `minute`, replacing a sample already taken in that minute (by this process
    /// or another), and keeping the minute's outcome counts. The outcome counts themselves
    /// are written by [`task_complete_many`](Driver::task_complete_many), in its transaction.
    fn counters_sample(
        &self,
        minute: Millis,
        samples: Vec<(String, counters::Depth)>,
    ) -> BoxFuture<Result<()>>;

    /// Every queue's counts of the minutes from `since` on, by minute then queue.
    fn counters_read(&self, since: Millis) -> BoxFuture<Result<Vec<counters::MinuteCounts>>>;

    /// Deletes the counts of the minutes before `before`; returns how many rows went.
    fn counters_delete_before(&self, before: Millis) -> BoxFuture<Result<u64>>;

    /// How many claims and next-due queries this driver has run.
    #[cfg(test)]
    fn table_reads(&self) -> u64;
}

/// The wait from `now` until `due`, both in milliseconds since the epoch.
pub(crate) fn wait_until(due: Millis, now: Millis) -> Duration {
    Duration::from_millis(u64::try_from(due.saturating_sub(now)).unwrap_or(0))
}
