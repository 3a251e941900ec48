//! The writer thread: the only connection of this process that writes.
//!
//! It blocks for the first request, takes every other request already waiting, and runs them
//! all in one `BEGIN IMMEDIATE` transaction, each inside a savepoint so that one failing
//! request does not undo the others. Under load, many saves and completions share a commit;
//! when idle, a request costs one transaction, as it would without batching.
//!
//! Each request waits for another connection's lock at most the busy timeout from the moment
//! it was sent, however many groups go before it: when the lock stays taken, the requests
//! whose time is up fail with `Error::Busy` and the others try again with those that arrived
//! meanwhile.

use std::cell::Cell;
use std::ops::DerefMut;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{Notify, oneshot};

use super::checkpoint::Checkpointer;
use super::control;
use super::wal_hook::HookedConnection;
use super::{Options, counters, expiry, lease, map_error, periodic, sql};
use crate::error::{Error, Result};
use crate::storage::periodic::{ScheduleDef, ScheduleRow, TickClaim, TickOutcome};
use crate::storage::{
    CancelRetention, ClaimToken, ClaimedTask, Completion, Millis, NewTask, ProcessId,
    duration_millis, now_millis,
};
use crate::task::TaskId;

pub(super) type Reply<T> = oneshot::Sender<Result<T>>;

/// A command and when it was sent: its busy timeout runs from then.
pub(crate) type Request = (Instant, Command);

pub(crate) enum Command {
    Insert(Vec<NewTask>, Reply<Vec<TaskId>>),
    Claim {
        process: Option<ProcessId>,
        limit: usize,
        room: Vec<(&'static str, usize)>,
        lease: Duration,
        now: Option<Millis>,
        reply: Reply<Vec<ClaimedTask>>,
    },
    Complete(Vec<Completion>, Reply<()>),
    Unclaim(Vec<(TaskId, ClaimToken)>, Reply<()>),
    Release(Option<Millis>, Reply<u64>),
    DeleteExpired(Millis, Reply<u64>),
    ExpirePending {
        retention: CancelRetention,
        limit: usize,
        now: Millis,
        reply: Reply<u64>,
    },
    Lease(lease::Command),
    Control(control::Op, Reply<control::Answer>),
    ScheduleRegister(Vec<ScheduleDef>, Reply<Vec<ScheduleRow>>),
    ScheduleTick(TickClaim, Reply<TickOutcome>),
    Counters(counters::Write, Reply<u64>),
}

enum Output {
    Done,
    Ids(Vec<TaskId>),
    Claimed(Vec<ClaimedTask>),
    Count(u64),
    Lease(lease::Output),
    Control(control::Answer),
    Schedules(Vec<ScheduleRow>),
    Tick(TickOutcome),
}

impl Command {
    /// Whether committing this may have made a task due, so the dispatcher should look.
    fn may_add_work(&self) -> bool {
        match self {
            Command::Insert(..) | Command::Unclaim(..) | Command::Release(..) => true,
            Command::Complete(completions, _) => completions.iter().any(|c| {
                matches!(
                    c.next,
                    crate::storage::Next::Retry { .. } | crate::storage::Next::Snooze { .. }
                )
            }),
            Command::Control(op, _) => op.may_add_work(),
            // A tick's tasks are due at their tick, which has come.
            Command::ScheduleTick(claim, _) => !claim.tasks.is_empty(),
            Command::Claim { .. }
            | Command::DeleteExpired(..)
            | Command::ExpirePending { .. }
            | Command::Lease(..)
            | Command::ScheduleRegister(..)
            | Command::Counters(..) => false,
        }
    }

    fn execute(&self, conn: &Connection, claim: &Claim) -> rusqlite::Result<Output> {
        Ok(match self {
            Command::Insert(tasks, _) => Output::Ids(sql::task_insert_many(conn, tasks)?),
            Command::Claim {
                process,
                limit,
                room,
                lease,
                now,
                ..
            } => Output::Claimed({
                claim.count.fetch_add(1, Ordering::Relaxed);
                let now = now.unwrap_or_else(now_millis);
                let lease_until = now.saturating_add(duration_millis(*lease));
                let claimer = process.map(|p| p.to_string());
                sql::task_claim(
                    conn,
                    &claim.sql,
                    &claim.queues,
                    (*limit, room, claimer.as_deref()),
                    lease_until,
                    now,
                )?
            }),
            Command::Complete(completions, _) => {
                sql::task_complete_many(conn, completions)?;
                counters::record(conn, completions)?;
                Output::Done
            }
            Command::Unclaim(tasks, _) => {
                sql::task_unclaim_many(conn, tasks)?;
                Output::Done
            }
            Command::Release(now, _) => Output::Count(sql::task_release_stuck(
                conn,
                now.unwrap_or_else(now_millis),
            )?),
            Command::DeleteExpired(now, _) => {
                Output::Count(sql::completed_delete_expired(conn, *now)?)
            }
            Command::ExpirePending {
                retention,
                limit,
                now,
                ..
            } => Output::Count(expiry::task_expire_pending(conn, retention, *limit, *now)?),
            Command::Lease(command) => Output::Lease(command.execute(conn)?),
            Command::Control(op, _) => Output::Control(op.execute(conn)?),
            Command::ScheduleRegister(schedules, _) => {
                Output::Schedules(periodic::schedule_register(conn, schedules)?)
            }
            Command::ScheduleTick(claim, _) => Output::Tick(periodic::schedule_tick(conn, claim)?),
            Command::Counters(write, _) => Output::Count(write.execute(conn)?),
        })
    }

    /// Sends the outcome; a caller that stopped waiting is no error.
    fn finish(self, outcome: Result<Output>) {
        fn send<T>(reply: Reply<T>, outcome: Result<Output>, pick: fn(Output) -> Option<T>) {
            let value = outcome.and_then(|out| {
                pick(out).ok_or_else(|| Error::Storage("writer answered the wrong kind".into()))
            });
            let _ = reply.send(value);
        }
        match self {
            Command::Insert(_, reply) => send(reply, outcome, |o| match o {
                Output::Ids(ids) => Some(ids),
                _ => None,
            }),
            Command::Complete(_, reply) | Command::Unclaim(_, reply) => {
                send(reply, outcome, |o| matches!(o, Output::Done).then_some(()))
            }
            Command::Claim { reply, .. } => send(reply, outcome, |o| match o {
                Output::Claimed(tasks) => Some(tasks),
                _ => None,
            }),
            Command::Release(_, reply)
            | Command::DeleteExpired(_, reply)
            | Command::ExpirePending { reply, .. }
            | Command::Counters(_, reply) => send(reply, outcome, |o| match o {
                Output::Count(n) => Some(n),
                _ => None,
            }),
            Command::Lease(command) => command.finish(outcome.and_then(|out| match out {
                Output::Lease(out) => Ok(out),
                _ => Err(Error::Storage("writer answered the wrong kind".into())),
            })),
            Command::Control(_, reply) => send(reply, outcome, |o| match o {
                Output::Control(answer) => Some(answer),
                _ => None,
            }),
            Command::ScheduleRegister(_, reply) => send(reply, outcome, |o| match o {
                Output::Schedules(rows) => Some(rows),
                _ => None,
            }),
            Command::ScheduleTick(_, reply) => send(reply, outcome, |o| match o {
                Output::Tick(outcome) => Some(outcome),
                _ => None,
            }),
        }
    }
}

/// How often an idle writer looks for commits by other connections (other processes, or the
/// application's own transactions). `PRAGMA data_version` reads no table.
const CHANGE_CHECK: Duration = Duration::from_millis(25);

/// Requests committed together at most, so that one commit's latency stays bounded.
const MAX_GROUP: usize = 512;

/// How often a writer that is never idle looks at the WAL's length.
const WAL_CHECK: Duration = Duration::from_millis(250);

/// WAL frames (pages) past which the writer makes the WAL start over: about 16 MiB of 4 KiB
/// pages.
const WAL_RESTART_FRAMES: i64 = 4096;

/// How long making the WAL start over may wait for readers still reading from it, per
/// `WAL_RESTART_FRAMES` of WAL: the writer waits in the meantime, so this is short while the
/// WAL is, and grows with it, which slows writers down to what checkpoints can keep up with.
/// A read that outlasts the wait only makes it try again later.
const WAL_RESTART_WAIT: Duration = Duration::from_millis(20);
const WAL_RESTART_WAIT_MAX: Duration = Duration::from_millis(500);

/// Runs a transaction-control statement, prepared once: a group costs several of them, and
/// parsing each anew is a measurable part of a one-request group.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// How long the writer looks for the next request after a commit before it sleeps. The next
/// request often follows within tens of microseconds: a caller saving in a loop, the
/// dispatcher claiming the task just saved, the completer sending the next batch. Taking it
/// without sleeping saves a sleep and a wake-up of this thread, which on an idle virtual
/// machine costs about 25 us (a two-thread ping-pong takes 50 us per round trip on the
/// benchmark machine). The writer yields its core between looks, so a thread it waits for can
/// run there, and spends at most this long per commit when nothing comes.
const POLL_AFTER_COMMIT: Duration = Duration::from_micros(50);

/// The next request if one arrives within [`POLL_AFTER_COMMIT`].
fn poll_briefly(receiver: &Receiver<Request>) -> Option<Request> {
    let until = Instant::now() + POLL_AFTER_COMMIT;
    loop {
        match receiver.try_recv() {
            Ok(request) => return Some(request),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if Instant::now() >= until => return None,
            Err(TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
}

/// The claim statement of the queues this process serves.
struct Claim {
    sql: String,
    queues: Vec<&'static str>,
    /// Shared with the driver: claims run, for the test that an idle client does not poll.
    count: Arc<AtomicU64>,
}

struct Writer {
    conn: HookedConnection,
    claim: Claim,
    busy: Duration,
    wake: Arc<Notify>,
    data_version: i64,
    last_check: Instant,
    last_wal_check: Instant,
    dirty_since_checkpoint: bool,
    /// Copies the WAL into the database on a thread of its own; `None` in memory.
    checkpointer: Option<Checkpointer>,
}

thread_local! {
    /// When the writer's busy handler gives up waiting for a lock: the busy timeout of the
    /// oldest request in the transaction being attempted. `None`: at once.
    static BUSY_DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Waits for a lock held by another connection until [`BUSY_DEADLINE`], polling often enough
/// to notice its release within a few milliseconds.
fn busy_handler(retries: i32) -> bool {
    let Some(deadline) = BUSY_DEADLINE.get() else {
        return false;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    let pause = Duration::from_millis(1 << retries.clamp(0, 4)).min(left);
    std::thread::sleep(pause);
    true
}

pub(super) fn spawn(
    mut conn: HookedConnection,
    checkpointer: Option<Checkpointer>,
    options: &Options,
    wake: Arc<Notify>,
    claims: Arc<AtomicU64>,
) -> Result<Sender<Request>> {
    // `deref_mut`: rusqlite takes `&self` here before 0.41 and `&mut self` from it, and a
    // plain call would leave `mut conn` unused before 0.41.
    conn.deref_mut()
        .busy_handler(Some(busy_handler))
        .map_err(|e| map_error(&e, options.busy_timeout, &options.path))?;
    let (sender, receiver) = mpsc::channel();
    let mut writer = Writer {
        conn,
        claim: Claim {
            sql: sql::claim_sql(options.queues.len().max(1)),
            queues: options.queues.clone(),
            count: claims,
        },
        busy: options.busy_timeout,
        wake,
        data_version: 0,
        last_check: Instant::now(),
        last_wal_check: Instant::now(),
        dirty_since_checkpoint: false,
        checkpointer,
    };
    writer.data_version = writer.read_data_version().unwrap_or(0);
    std::thread::Builder::new()
        .name("backlite-writer".into())
        .spawn(move || writer.run(receiver))
        .map_err(|e| Error::Storage(Box::new(e)))?;
    Ok(sender)
}

impl Writer {
    fn run(mut self, receiver: Receiver<Request>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        let mut just_committed = false;
        loop {
            // A group left over is waiting for another connection's lock: no blocking then.
            if group.is_empty() {
                let first = if just_committed {
                    poll_briefly(&receiver)
                } else {
                    None
                };
                match first.map_or_else(|| receiver.recv_timeout(CHANGE_CHECK), Ok) {
                    Ok(request) => group.push(request),
                    Err(RecvTimeoutError::Timeout) => {
                        just_committed = false;
                        self.idle();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            self.commit(&mut group);
            just_committed = true;
            if self.last_check.elapsed() >= CHANGE_CHECK {
                self.check_external_changes();
            }
            if self.last_wal_check.elapsed() >= WAL_CHECK {
                self.bound_wal();
            }
        }
        // Every handle is gone: leave a small WAL behind.
        BUSY_DEADLINE.set(Some(Instant::now() + self.busy));
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    }

    /// Commits the group and answers its requests; leaves in `group` the requests that found
    /// the database locked but have not waited their busy timeout yet.
    fn commit(&mut self, group: &mut Vec<Request>) {
        let may_add_work = group.iter().any(|(_, command)| command.may_add_work());
        let single = group.len() == 1;
        let mut outcomes = Vec::with_capacity(group.len());
        let (claim, busy) = (&self.claim, self.busy);
        let oldest = group.iter().map(|(sent, _)| *sent).min();
        BUSY_DEADLINE.set(oldest.map(|sent| sent + busy));
        let conn = &self.conn;
        let committed = (|| -> rusqlite::Result<()> {
            control(conn, "BEGIN IMMEDIATE")?;
            for (_, command) in group.iter() {
                if single {
                    // Nothing to isolate: a failure rolls back the transaction below.
                    let outcome = command.execute(conn, claim)?;
                    outcomes.push(Ok(outcome));
                    continue;
                }
                control(conn, "SAVEPOINT request")?;
                match command.execute(conn, claim) {
                    Ok(outcome) => {
                        control(conn, "RELEASE request")?;
                        outcomes.push(Ok(outcome));
                    }
                    Err(e) => {
                        // Undoes this request only.
                        control(conn, "ROLLBACK TO request")?;
                        control(conn, "RELEASE request")?;
                        let path = conn.path().unwrap_or_default();
                        outcomes.push(Err(map_error(&e, busy, path)));
                    }
                }
            }
            control(conn, "COMMIT")
        })();
        if committed.is_err() && !conn.is_autocommit() {
            if let Err(e) = control(conn, "ROLLBACK") {
                tracing::error!(error = %e, "backlite could not roll back a failed write");
            }
        }
        match committed {
            Ok(()) => {
                self.dirty_since_checkpoint = true;
                if may_add_work {
                    self.wake.notify_one();
                }
                for ((_, command), outcome) in group.drain(..).zip(outcomes) {
                    command.finish(outcome);
                }
            }
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) =>
            {
                let now = Instant::now();
                let (expired, waiting): (Vec<_>, Vec<_>) = group
                    .drain(..)
                    .partition(|(sent, _)| now >= *sent + self.busy);
                if expired.is_empty() {
                    // Locked without the handler being asked (it is, for every lock this
                    // connection takes): do not spin.
                    std::thread::sleep(Duration::from_millis(1));
                }
                for (_, command) in expired {
                    command.finish(Err(Error::Busy(self.busy)));
                }
                *group = waiting;
            }
            Err(e) => {
                tracing::error!(error = %e, requests = group.len(), "backlite write failed");
                for (_, command) in group.drain(..) {
                    let path = self.conn.path().unwrap_or_default();
                    command.finish(Err(map_error(&e, self.busy, path)));
                }
            }
        }
    }

    fn idle(&mut self) {
        self.check_external_changes();
        if self.dirty_since_checkpoint {
            // A checkpoint while nothing is waiting keeps the WAL short without making any
            // request wait for it.
            self.dirty_since_checkpoint = false;
            self.bound_wal();
        }
    }

    /// Copies the WAL into the database as far as readers allow (SQLite's own checkpoints,
    /// every 1000 pages, do the same), and when the WAL has grown long, makes it start over.
    ///
    /// SQLite rewinds the WAL only when a write begins while no reader is inside it. Under
    /// steady load some reader almost always is (stats, the dispatcher's next-due query, the
    /// application), so the WAL grew by hundreds of megabytes in a minute. A `RESTART`
    /// checkpoint waits briefly for those readers to leave, then rewinds it; past
    /// `journal_size_limit`, SQLite also shrinks the file.
    ///
    /// With a checkpoint thread, copying is its job, off the commits' path: the writer steps
    /// in only to make a long WAL start over, which needs the writer's lock.
    fn bound_wal(&mut self) {
        self.last_wal_check = Instant::now();
        if let Some(checkpointer) = &self.checkpointer {
            if checkpointer.wal_pages() < WAL_RESTART_FRAMES {
                checkpointer.request();
                return;
            }
        }
        let checkpoint = |mode: &str| -> rusqlite::Result<i64> {
            self.conn
                .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
                    row.get(1)
                })
        };
        match checkpoint("PASSIVE") {
            Ok(frames) if frames >= WAL_RESTART_FRAMES => {
                let wait = WAL_RESTART_WAIT * (frames / WAL_RESTART_FRAMES) as u32;
                BUSY_DEADLINE.set(Some(Instant::now() + wait.min(WAL_RESTART_WAIT_MAX)));
                if let Err(e) = checkpoint("RESTART") {
                    tracing::debug!(error = %e, frames, "WAL restart skipped");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "checkpoint skipped"),
        }
    }

    fn read_data_version(&self) -> rusqlite::Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))
    }

    /// Wakes the dispatcher when another connection committed: a task added by another process
    /// or inside the application's own transaction is then picked up without any call.
    fn check_external_changes(&mut self) {
        self.last_check = Instant::now();
        if let Ok(version) = self.read_data_version() {
            if version != self.data_version {
                self.data_version = version;
                self.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::{Synchronous, Target, migrations, open_connection};

    fn writer(path: &str) -> Writer {
        let options = Options {
            path: path.to_owned(),
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(1),
            queues: vec!["q"],
        };
        let mut conn = open_connection(&Target::new(path), &options).expect("open");
        migrations::migrate(&mut conn, 0)
            .expect("migrate")
            .expect("schema");
        Writer {
            conn: HookedConnection::new(conn),
            claim: Claim {
                sql: sql::claim_sql(1),
                queues: options.queues.clone(),
                count: Arc::default(),
            },
            busy: options.busy_timeout,
            wake: Arc::default(),
            data_version: 0,
            last_check: Instant::now(),
            last_wal_check: Instant::now(),
            dirty_since_checkpoint: false,
            checkpointer: None,
        }
    }

    fn insert(task: &NewTask) -> (Request, oneshot::Receiver<Result<Vec<TaskId>>>) {
        let (reply, answer) = oneshot::channel();
        let request = (Instant::now(), Command::Insert(vec![task.clone()], reply));
        (request, answer)
    }

    #[test]
    fn a_failing_request_leaves_the_rest_of_its_group() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = writer(&dir.path().join("w.db").to_string_lossy());
        let task = |n: u8| NewTask {
            id: TaskId::new(),
            queue: "q",
            payload: vec![b'0' + n],
            created_at: 0,
            run_at: 0,
            priority: 0,
            expires_at: None,
            unique_key: None,
            unique_for: None,
        };
        let (first, again) = (task(1), task(2));
        let (a, a_done) = insert(&first);
        let (b, b_done) = insert(&again);
        let (c, c_done) = insert(&again); // same id as `b`: refused
        let (d, d_done) = insert(&task(3));
        let mut group = vec![a, b, c, d];
        writer.commit(&mut group);

        assert!(a_done.blocking_recv().expect("answered").is_ok());
        assert!(b_done.blocking_recv().expect("answered").is_ok());
        assert!(c_done.blocking_recv().expect("answered").is_err());
        assert!(d_done.blocking_recv().expect("answered").is_ok());
        let stored: i64 = writer
            .conn
            .query_row("SELECT COUNT(*) FROM backlite_tasks", [], |r| r.get(0))
            .expect("count");
        assert_eq!(stored, 3);
        assert!(
            writer.conn.is_autocommit(),
            "the group's transaction is closed"
        );

        // A lone request that fails leaves no transaction open behind it.
        let (e, e_done) = insert(&first);
        writer.commit(&mut vec![e]);
        assert!(e_done.blocking_recv().expect("answered").is_err());
        assert!(writer.conn.is_autocommit());
    }
}
