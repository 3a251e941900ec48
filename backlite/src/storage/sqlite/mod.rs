//! The SQLite driver.
//!
//! Writes go through one connection owned by a dedicated thread (see [`writer`]): it drains
//! the requests waiting in its channel and commits them in one transaction, so concurrent
//! saves and task completions share a commit, and no two connections of this process ever
//! fight over SQLite's write lock. Reads use a small pool of connections on tokio's blocking
//! threads; in WAL mode they never wait for the writer.

mod browse;
mod checkpoint;
mod control;
#[cfg_attr(
    not(all(feature = "cli", feature = "postgres")),
    allow(dead_code, reason = "only `backlite copy` copies")
)]
mod copy;
mod counters;
mod dispatch;
mod expiry;
mod inspect;
mod lease;
mod migrations;
mod periodic;
#[cfg(test)]
mod plans;
pub(crate) mod schema;
pub(crate) mod sql;
#[cfg(feature = "sqlx-sqlite")]
mod sqlx_conn;
mod wal_hook;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{Notify, oneshot};

use crate::BoxFuture;
use crate::error::{Error, Result};
use crate::storage::periodic::{ScheduleDef, ScheduleRow, Schedules, TickClaim, TickOutcome};
use crate::storage::{
    CancelRetention, Cancelled, ClaimToken, ClaimedTask, CompletedRecord, Completion, Driver,
    Facts, InfoRecord, ListQuery, Millis, NewTask, Page, ProcessId, ProcessRecord, PurgeFilter,
    QueueRecord, QueueStats, Renewal, SummaryRecord, TaskRecord, TaskState, duration_millis,
    now_millis,
};
use crate::task::{TaskId, TaskStatus};

use writer::{Command, Request};

/// How hard SQLite works to make each commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// WAL with `synchronous = NORMAL`: a commit survives a crash of the process; the last
    /// commits before a power loss or OS crash may be rolled back (never corrupted).
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is on disk before `save()` returns.
    Full,
}

/// What the driver needs to open a database.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) path: String,
    pub(crate) synchronous: Synchronous,
    pub(crate) busy_timeout: Duration,
    /// The queues this process serves: the claim and the next-due query look at these only.
    pub(crate) queues: Vec<&'static str>,
}

/// Where connections point: a file, or a named in-memory database shared by this process's
/// connections (SQLite's `memdb` VFS), so that `":memory:"` behaves like a file.
#[derive(Debug, Clone)]
struct Target {
    uri: String,
    flags: OpenFlags,
    in_memory: bool,
}

impl Target {
    fn new(path: &str) -> Target {
        let base = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if path == ":memory:" {
            Target {
                uri: format!("file:/backlite-{}?vfs=memdb", uuid::Uuid::now_v7().simple()),
                flags: base | OpenFlags::SQLITE_OPEN_URI,
                in_memory: true,
            }
        } else {
            Target {
                uri: path.to_owned(),
                flags: base,
                in_memory: false,
            }
        }
    }
}

pub(crate) struct SqliteDriver {
    writer: std::sync::mpsc::Sender<Request>,
    /// Statements that read the tasks table for the dispatcher (claims, next-due queries),
    /// counted so that a test can prove an idle client does not poll.
    table_reads: Arc<std::sync::atomic::AtomicU64>,
    readers: Arc<Readers>,
    queues: Arc<[&'static str]>,
    next_due_sql: Arc<str>,
}

struct Readers {
    target: Target,
    options: Options,
    idle: Mutex<Vec<Connection>>,
}

/// Idle reader connections kept open; more are opened under load and closed after.
const IDLE_READERS: usize = 4;

impl Readers {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.target, &self.options)?,
        };
        let result =
            f(&conn).map_err(|e| map_error(&e, self.options.busy_timeout, &self.options.path));
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
        }
        result
    }
}

impl SqliteDriver {
    /// Opens (creating if needed) and migrates the database, then starts the writer thread.
    /// `wake` is notified whenever new work may be due: after our own inserts, and when the
    /// database was changed by another connection or process.
    pub(crate) fn open(
        options: Options,
        wake: Arc<Notify>,
    ) -> Result<(SqliteDriver, SqliteTarget)> {
        let target = Target::new(&options.path);
        if !target.in_memory {
            check_parent_dir(&options.path)?;
        }
        let mut conn = open_connection(&target, &options)?;
        // SQLite quietly opens a file it may not write in read-only mode. Refuse it here,
        // rather than build a client whose every save and claim fails.
        let read_only = conn
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(|e| open_error(&options.path, &e, options.busy_timeout))?;
        if read_only {
            return Err(Error::ReadOnly {
                path: options.path.clone(),
            });
        }
        migrations::migrate(&mut conn, now_millis())
            .map_err(|e| open_error(&options.path, &e, options.busy_timeout))??;
        let table_reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut conn = wal_hook::HookedConnection::new(conn);
        let checkpointer = checkpoint::start(&mut conn, &target, &options)?;
        let save_in = SqliteTarget {
            given: options.path.clone(),
            file: conn.path().map(file_identity).unwrap_or_default(),
            busy_timeout: options.busy_timeout,
        };
        let writer = writer::spawn(conn, checkpointer, &options, wake, table_reads.clone())?;
        let driver = SqliteDriver {
            writer,
            table_reads,
            queues: options.queues.clone().into(),
            next_due_sql: sql::next_due_sql(options.queues.len()).into(),
            readers: Arc::new(Readers {
                target,
                options,
                idle: Mutex::new(Vec::new()),
            }),
        };
        Ok((driver, save_in))
    }

    fn send<T: Send + 'static>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> BoxFuture<Result<T>> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .writer
            .send((std::time::Instant::now(), command(reply)));
        Box::pin(async move {
            sent.map_err(|_| Error::Closed)?;
            answer.await.map_err(|_| Error::Closed)?
        })
    }

    /// Runs a control operation on the writer and reads its answer with `pick`.
    fn control<T: Send + 'static>(
        &self,
        op: control::Op,
        pick: fn(control::Answer) -> Option<T>,
    ) -> BoxFuture<Result<T>> {
        let answer = self.send(|reply| Command::Control(op, reply));
        Box::pin(async move {
            pick(answer.await?)
                .ok_or_else(|| Error::Storage("writer answered the wrong kind".into()))
        })
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<Result<T>> {
        let readers = self.readers.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || readers.with(f))
                .await
                .map_err(|e| Error::Storage(e.to_string().into()))?
        })
    }
}

/// The database file of a client, for `save_in` to check a transaction against.
#[derive(Debug, Clone)]
pub(crate) struct SqliteTarget {
    /// The path the builder was given.
    given: String,
    /// The file as SQLite names it, canonical: two paths to one file compare equal.
    file: String,
    busy_timeout: Duration,
}

impl std::fmt::Display for SqliteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.given)
    }
}

impl SqliteTarget {
    /// Inserts tasks inside the application's own transaction, once it is known to be on the
    /// client's file: on another file the tasks would wait where no client looks.
    pub(crate) fn insert_in(&self, conn: &Connection, tasks: &[NewTask]) -> Result<Vec<TaskId>> {
        self.check_file(conn.path().unwrap_or_default())?;
        sql::task_insert_many(conn, tasks)
            .map_err(|e| map_error(&e, self.busy_timeout, conn.path().unwrap_or_default()))
    }

    /// Refuses a connection whose main database SQLite names `file` (empty for a temporary or
    /// in-memory one) unless it is the client's.
    fn check_file(&self, file: &str) -> Result<()> {
        let found = file_identity(file);
        if found != self.file {
            return Err(Error::WrongDatabase {
                expected: self.to_string(),
                found: match found.as_str() {
                    "" => "a temporary or in-memory database".into(),
                    file => format!("`{file}`"),
                },
            });
        }
        Ok(())
    }
}

/// A file's canonical path (symbolic links and `..` resolved); SQLite's name for it when that
/// cannot be had (an in-memory database's name).
fn file_identity(path: &str) -> String {
    std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_owned())
}

impl Driver for SqliteDriver {
    /// One machine: a claim costs the writer a transaction, and the processes that could take
    /// the tasks instead share this machine's cores.
    fn prefetch_max(&self) -> usize {
        2000
    }

    fn task_insert_many(&self, tasks: Vec<NewTask>) -> BoxFuture<Result<Vec<TaskId>>> {
        self.send(|reply| Command::Insert(tasks, reply))
    }

    fn task_claim_within(
        &self,
        process: Option<ProcessId>,
        limit: usize,
        room: Vec<(&'static str, usize)>,
        lease: Duration,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Vec<ClaimedTask>>> {
        self.send(|reply| Command::Claim {
            process,
            limit,
            room,
            lease,
            now,
            reply,
        })
    }

    fn task_complete_many(&self, completions: Vec<Completion>) -> BoxFuture<Result<()>> {
        self.send(|reply| Command::Complete(completions, reply))
    }

    fn task_unclaim_many(&self, tasks: Vec<(TaskId, ClaimToken)>) -> BoxFuture<Result<()>> {
        self.send(|reply| Command::Unclaim(tasks, reply))
    }

    fn task_release_stuck(&self, now: Option<Millis>) -> BoxFuture<Result<u64>> {
        self.send(|reply| Command::Release(now, reply))
    }

    fn task_next_due_except(
        &self,
        full: Vec<&'static str>,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Option<Duration>>> {
        self.table_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sql, queues) = (self.next_due_sql.clone(), self.queues.clone());
        self.read(move |conn| {
            let due =
                sql::task_next_due(conn, &sql, &queues, &full, now.unwrap_or_else(now_millis))?;
            Ok(due.map(|due| match now {
                Some(now) => crate::storage::wait_until(due, now),
                // This machine's clock is the database's: measured to the microsecond, so
                // that the dispatcher wakes neither early (its claim would find nothing due)
                // nor a millisecond late.
                None => {
                    let due = std::time::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(due).unwrap_or(0));
                    due.duration_since(std::time::SystemTime::now())
                        .unwrap_or_default()
                }
            }))
        })
    }

    fn task_renew_leases(
        &self,
        process: ProcessId,
        tasks: Vec<(TaskId, ClaimToken)>,
        lease: Duration,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Renewal>> {
        self.send(|reply| {
            Command::Lease(lease::Command::Renew {
                process,
                tasks,
                lease,
                now,
                reply,
            })
        })
    }

    fn process_register(
        &self,
        process: ProcessRecord,
        now: Option<Millis>,
    ) -> BoxFuture<Result<()>> {
        self.send(|reply| Command::Lease(lease::Command::Register(process, now, reply)))
    }

    fn process_remove(&self, process: ProcessId) -> BoxFuture<Result<()>> {
        self.send(|reply| Command::Lease(lease::Command::Remove(process, reply)))
    }

    fn process_list(
        &self,
        live_within: Duration,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Vec<ProcessRecord>>> {
        let since = now
            .unwrap_or_else(now_millis)
            .saturating_sub(duration_millis(live_within));
        self.read(move |conn| lease::process_list(conn, since))
    }

    fn task_status(&self, id: TaskId) -> BoxFuture<Result<TaskStatus>> {
        self.read(move |conn| sql::task_status(conn, id))
    }

    fn task_expire_pending(
        &self,
        retention: CancelRetention,
        limit: usize,
        now: Option<Millis>,
    ) -> BoxFuture<Result<u64>> {
        let now = now.unwrap_or_else(now_millis);
        self.send(|reply| Command::ExpirePending {
            retention,
            limit,
            now,
            reply,
        })
    }

    fn completed_delete_expired(&self, now: Millis) -> BoxFuture<Result<u64>> {
        self.send(|reply| Command::DeleteExpired(now, reply))
    }

    fn queue_stats(&self, now: Millis) -> BoxFuture<Result<Vec<QueueStats>>> {
        self.read(move |conn| sql::queue_stats(conn, now))
    }

    fn queue_pause(&self, queue: String, now: Option<Millis>) -> BoxFuture<Result<bool>> {
        let now = now.unwrap_or_else(now_millis);
        self.control(control::Op::Pause { queue, now }, control::Answer::changed)
    }

    fn queue_resume(&self, queue: String) -> BoxFuture<Result<bool>> {
        self.control(control::Op::Resume { queue }, control::Answer::changed)
    }

    fn queue_list(&self, now: Millis) -> BoxFuture<Result<Vec<QueueRecord>>> {
        self.read(move |conn| control::queue_list(conn, now))
    }

    fn task_cancel(
        &self,
        id: TaskId,
        retention: CancelRetention,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Cancelled>> {
        let now = now.unwrap_or_else(now_millis);
        self.control(
            control::Op::Cancel { id, retention, now },
            control::Answer::cancelled,
        )
    }

    fn completed_retry(&self, id: TaskId, now: Option<Millis>) -> BoxFuture<Result<bool>> {
        let now = now.unwrap_or_else(now_millis);
        self.control(control::Op::Retry { id, now }, control::Answer::changed)
    }

    fn completed_retry_queue(&self, queue: String, now: Option<Millis>) -> BoxFuture<Result<u64>> {
        let now = now.unwrap_or_else(now_millis);
        self.control(
            control::Op::RetryQueue { queue, now },
            control::Answer::count,
        )
    }

    fn task_run_now(&self, id: TaskId, now: Option<Millis>) -> BoxFuture<Result<bool>> {
        let now = now.unwrap_or_else(now_millis);
        self.control(control::Op::RunNow { id, now }, control::Answer::changed)
    }

    fn task_delete(&self, id: TaskId) -> BoxFuture<Result<bool>> {
        self.control(control::Op::Delete { id }, control::Answer::changed)
    }

    fn completed_purge(&self, filter: PurgeFilter) -> BoxFuture<Result<u64>> {
        self.control(control::Op::Purge(filter), control::Answer::count)
    }

    fn task_list(&self, state: TaskState, page: Page) -> BoxFuture<Result<Vec<TaskRecord>>> {
        self.read(move |conn| browse::task_list(conn, state, page))
    }

    fn task_get(&self, id: TaskId) -> BoxFuture<Result<Option<TaskRecord>>> {
        self.read(move |conn| browse::task_get(conn, id))
    }

    fn completed_list(
        &self,
        succeeded: bool,
        page: Page,
    ) -> BoxFuture<Result<Vec<CompletedRecord>>> {
        self.read(move |conn| browse::completed_list(conn, succeeded, page))
    }

    fn completed_get(&self, id: TaskId) -> BoxFuture<Result<Option<CompletedRecord>>> {
        self.read(move |conn| browse::completed_get(conn, id))
    }

    fn task_list_waiting(&self, queue: &'static str) -> BoxFuture<Result<Vec<TaskRecord>>> {
        self.read(move |conn| browse::task_list_waiting(conn, queue))
    }

    fn task_info(&self, id: TaskId) -> BoxFuture<Result<Option<InfoRecord>>> {
        self.read(move |conn| inspect::task_info(conn, id))
    }

    fn task_page(&self, query: ListQuery) -> BoxFuture<Result<Vec<SummaryRecord>>> {
        self.read(move |conn| inspect::task_page(conn, &query))
    }

    fn task_facts(
        &self,
        id: TaskId,
        now: Option<Millis>,
        live_within: Duration,
    ) -> BoxFuture<Result<Facts>> {
        let live_within = duration_millis(live_within);
        self.read(move |conn| {
            inspect::task_facts(conn, id, now.unwrap_or_else(now_millis), live_within)
        })
    }

    /// On a reader connection: it can write, waiting for the writer's lock like any other.
    #[cfg(test)]
    fn inspect_fixture(&self, fixture: crate::storage::inspect::Fixture) -> BoxFuture<Result<()>> {
        self.read(move |conn| inspect::inspect_fixture(conn, &fixture))
    }

    fn schedule_register(
        &self,
        schedules: Vec<ScheduleDef>,
    ) -> BoxFuture<Result<Vec<ScheduleRow>>> {
        self.send(|reply| Command::ScheduleRegister(schedules, reply))
    }

    fn schedule_list(
        &self,
        names: Vec<String>,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Schedules>> {
        self.read(move |conn| periodic::schedule_list(conn, &names, now.unwrap_or_else(now_millis)))
    }

    fn schedule_tick(&self, claim: TickClaim) -> BoxFuture<Result<TickOutcome>> {
        self.send(|reply| Command::ScheduleTick(claim, reply))
    }

    fn copy_tasks(
        &self,
        after: Option<TaskId>,
        limit: usize,
    ) -> BoxFuture<Result<Vec<crate::storage::copy::CopyTask>>> {
        self.copy_tasks_page(after, limit)
    }

    fn copy_insert_tasks(
        &self,
        tasks: Vec<crate::storage::copy::CopyTask>,
    ) -> BoxFuture<Result<u64>> {
        self.copy_insert(tasks)
    }

    fn copy_insert_meta(
        &self,
        schedules: Vec<crate::storage::copy::CopySchedule>,
        queues: Vec<crate::storage::copy::CopyQueue>,
    ) -> BoxFuture<Result<crate::storage::copy::MetaInserted>> {
        self.copy_meta(schedules, queues)
    }

    fn copy_census(&self) -> BoxFuture<Result<crate::storage::copy::Census>> {
        self.copy_count()
    }

    fn counters_sample(
        &self,
        minute: Millis,
        samples: Vec<(String, crate::storage::counters::Depth)>,
    ) -> BoxFuture<Result<()>> {
        let write = counters::Write::Sample { minute, samples };
        let written = self.send(|reply| Command::Counters(write, reply));
        Box::pin(async move { written.await.map(|_| ()) })
    }

    fn counters_read(
        &self,
        since: Millis,
    ) -> BoxFuture<Result<Vec<crate::storage::counters::MinuteCounts>>> {
        self.read(move |conn| counters::read(conn, since))
    }

    fn counters_delete_before(&self, before: Millis) -> BoxFuture<Result<u64>> {
        self.send(|reply| Command::Counters(counters::Write::DeleteBefore(before), reply))
    }

    #[cfg(test)]
    fn table_reads(&self) -> u64 {
        self.table_reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn open_connection(target: &Target, options: &Options) -> Result<Connection> {
    let busy = options.busy_timeout;
    let conn = Connection::open_with_flags(&target.uri, target.flags)
        .map_err(|e| open_error(&options.path, &e, busy))?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(busy)?;
        if !target.in_memory {
            // WAL: readers never block the writer; the pragma is a no-op once set.
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(
                    mode,
                    "SQLite refused WAL mode; readers may wait for writers"
                );
            }
            // Bound the WAL file after checkpoints; it is reused, not grown, under load.
            conn.execute_batch("PRAGMA journal_size_limit = 67108864")?;
        }
        conn.execute_batch(match options.synchronous {
            Synchronous::Normal => "PRAGMA synchronous = NORMAL",
            Synchronous::Full => "PRAGMA synchronous = FULL",
        })?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(())
    };
    setup().map_err(|e| open_error(&options.path, &e, busy))?;
    Ok(conn)
}

fn check_parent_dir(path: &str) -> Result<()> {
    let parent = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty());
    match parent {
        Some(dir) if !dir.is_dir() => Err(Error::Open {
            path: path.to_owned(),
            source: format!("directory `{}` does not exist", dir.display()).into(),
        }),
        _ => Ok(()),
    }
}

/// Maps errors of opening and migrating, which know the path.
fn open_error(path: &str, error: &rusqlite::Error, busy: Duration) -> Error {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Error::NotADatabase {
            path: path.to_owned(),
        },
        // The file is missing and its directory exists, so SQLite could not create it there.
        Some(ErrorCode::CannotOpen) if !Path::new(path).exists() && parent_dir_exists(path) => {
            Error::ReadOnly {
                path: path.to_owned(),
            }
        }
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => Error::Open {
            path: path.to_owned(),
            source: error.to_string().into(),
        },
        _ => map_error(error, busy, path),
    }
}

fn parent_dir_exists(path: &str) -> bool {
    let parent = Path::new(path).parent();
    parent.is_none_or(|p| p.as_os_str().is_empty() || p.is_dir())
}

/// Maps an SQLite error on the database at `path` to the kinds the application can act on.
pub(crate) fn map_error(error: &rusqlite::Error, busy: Duration, path: &str) -> Error {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Busy(busy),
        Some(ErrorCode::DiskFull) => Error::Full,
        Some(ErrorCode::ReadOnly) => Error::ReadOnly {
            path: path.to_owned(),
        },
        _ => Error::Storage(error.to_string().into()),
    }
}

/// A driver on a fresh database for the conformance suite: a file in a directory that lives
/// as long as the test process, or `":memory:"`.
#[cfg(test)]
pub(crate) fn open_for_test(in_memory: bool, queues: Vec<&'static str>) -> SqliteDriver {
    let path = if in_memory {
        ":memory:".to_owned()
    } else {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        dir.join("conformance.db").to_string_lossy().into_owned()
    };
    let options = Options {
        path,
        synchronous: Synchronous::Normal,
        busy_timeout: Duration::from_secs(5),
        queues,
    };
    SqliteDriver::open(options, Arc::new(Notify::new()))
        .expect("open")
        .0
}

#[cfg(test)]
crate::storage::conformance::driver_conformance!(conformance_file, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(false, queues))
});

#[cfg(test)]
crate::storage::conformance::driver_conformance!(conformance_memory, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(true, queues))
});

#[cfg(test)]
crate::storage::dispatch_conformance::dispatch_conformance!(dispatch_file, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(false, queues))
});

#[cfg(test)]
crate::storage::dispatch_conformance::dispatch_conformance!(dispatch_memory, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(true, queues))
});

#[cfg(test)]
crate::storage::control_conformance::control_conformance!(control_file, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(false, queues))
});

#[cfg(test)]
crate::storage::periodic_conformance::periodic_conformance!(periodic_file, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(false, queues))
});

#[cfg(test)]
crate::storage::control_conformance::control_conformance!(control_memory, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(true, queues))
});

#[cfg(test)]
crate::storage::periodic_conformance::periodic_conformance!(periodic_memory, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(true, queues))
});

// On `:memory:` only: the same SQL as on a file, without leaving a directory per case.
#[cfg(test)]
crate::storage::model::lifecycle_model!(lifecycle_memory, |queues| async move {
    Some(crate::storage::sqlite::open_for_test(true, queues))
});
