//! The PostgreSQL driver.
//!
//! Connections come from a pool (deadpool-postgres over tokio-postgres). Claims are one
//! `FOR UPDATE SKIP LOCKED` statement, so claimers on many hosts never wait for each other;
//! outcomes are one statement per kind and batch (`unnest` arrays); saves that arrive together
//! share one transaction and one NOTIFY (see [`writer`]). The server's clock decides claims,
//! leases and due times. One connection per client LISTENs for the commits of every host (see
//! [`listener`]).

mod browse;
mod commit_watch;
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
mod listener;
mod migrations;
mod periodic;
pub(crate) mod schema;
mod sql;
#[cfg(feature = "sqlx-postgres")]
mod sqlx_tx;
pub(crate) mod unique;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::Notify;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;

use crate::BoxFuture;
use crate::database::redact;
use crate::error::{Error, Result};
use crate::storage::periodic::{ScheduleDef, ScheduleRow, Schedules, TickClaim, TickOutcome};
use crate::storage::{
    CancelRetention, Cancelled, ClaimToken, ClaimedTask, CompletedRecord, Completion, Driver,
    Facts, InfoRecord, ListQuery, Millis, NewTask, Next, Page, ProcessId, ProcessRecord,
    PurgeFilter, QueueRecord, QueueStats, Renewal, SummaryRecord, TaskRecord, TaskState,
    duration_millis, queue_room,
};
use crate::task::{TaskId, TaskStatus};

pub(crate) use sql::Statements;

/// What the driver needs to open a database.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
    /// `Some`: look for work at this interval instead of LISTENing.
    pub(crate) poll_interval: Option<Duration>,
    /// The queues this process serves: the claim and the next-due query look at these only.
    pub(crate) queues: Vec<&'static str>,
    pub(crate) save_in_wakeup: SaveInWakeup,
}

/// How tasks added with `save_in` on PostgreSQL wake the workers once the application's
/// transaction commits.
///
/// A NOTIFY makes PostgreSQL commit notifying transactions one at a time, so a NOTIFY inside
/// the application's transaction costs its commits their concurrency with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SaveInWakeup {
    /// NOTIFY inside the application's transaction: workers on every host wake the moment it
    /// commits, and the application's notifying commits serialize.
    #[default]
    InTransaction,
    /// No NOTIFY in the application's transaction: the client asks the server (every few
    /// milliseconds, only while such transactions are open) whether they committed, and then
    /// sends one NOTIFY for all of them. The application's commits stay concurrent; workers
    /// wake a few milliseconds later, and `save_in` costs one more round trip
    /// (`txid_current()`).
    AfterCommit,
}

/// Where a client's PostgreSQL database is, for `save_in` to write into a transaction there.
#[derive(Clone)]
pub(crate) struct PgTarget {
    statements: Arc<Statements>,
    /// The identity stored in the schema at its creation: `save_in` inserts only where it is.
    instance: uuid::Uuid,
    shown: Arc<str>,
    /// With `SaveInWakeup::AfterCommit`: where `save_in` hands the application's transaction
    /// id to the commit watcher.
    commit_watch: Option<tokio::sync::mpsc::UnboundedSender<i64>>,
}

impl PgTarget {
    /// Inserts tasks inside the application's own transaction, and arranges the wake-up of
    /// every client once it commits. The insert applies only where the schema's identity is
    /// the client's: on another database (or schema) it stores nothing and is refused.
    pub(crate) async fn insert_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<TaskId>> {
        let statements = &self.statements;
        let wrong = |found: String| Error::WrongDatabase {
            expected: self.shown.to_string(),
            found,
        };
        let missing_tables = || wrong("a database without backlite's tables in that schema".into());
        let instance = self.instance;
        let ids = if tasks.iter().any(|t| t.unique_key.is_some()) {
            // Some tasks may not be stored (duplicates), so the checked insert's count
            // cannot tell another database: the identity is read first.
            let check = unique::instance_check(&statements.schema);
            let here = match tx.query_opt(&check, &[&instance]).await {
                Ok(row) => row.is_some(),
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                    return Err(missing_tables());
                }
                Err(e) => return Err(map_error(e)),
            };
            if !here {
                return Err(wrong("another backlite database".into()));
            }
            unique::insert_in_tx(tx, &statements.schema, tasks).await?
        } else {
            let ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
            let columns = InsertColumns::new(tasks);
            let [
                ids_column,
                queues,
                payloads,
                run_at,
                created_at,
                priority,
                expires_at,
                unique_key,
                unique_for,
            ] = columns.params();
            let inserted = match tx
                .execute(
                    &statements.insert_checked,
                    &[
                        ids_column, queues, payloads, run_at, created_at, priority, expires_at,
                        unique_key, unique_for, &instance,
                    ],
                )
                .await
            {
                Ok(inserted) => inserted,
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                    return Err(missing_tables());
                }
                Err(e) => return Err(map_error(e)),
            };
            if inserted as usize != columns.len() {
                return Err(wrong("another backlite database".into()));
            }
            ids
        };
        match &self.commit_watch {
            None => {
                tx.execute(&statements.notify, &[&statements.channel])
                    .await
                    .map_err(map_error)?;
            }
            Some(watch) => {
                let xid: i64 = tx
                    .query_one("SELECT txid_current()", &[])
                    .await
                    .map_err(map_error)?
                    .try_get(0)
                    .map_err(map_error)?;
                // The watcher lives as long as the client; a closed one means the client,
                // and its workers, are gone.
                let _ = watch.send(xid);
            }
        }
        Ok(ids)
    }
}

impl std::fmt::Display for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

pub(crate) struct PgDriver {
    pool: Pool,
    statements: Arc<Statements>,
    lease_statements: Arc<lease::Statements>,
    control: Arc<control::ControlStatements>,
    inspect: Arc<inspect::InspectSql>,
    queues: Arc<Vec<String>>,
    writer: writer::Writer,
    wake: Arc<Notify>,
    /// Ends the listener (or the poll timer) when the driver is dropped.
    background: CancellationToken,
    table_reads: Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for PgDriver {
    fn drop(&mut self) {
        self.background.cancel();
    }
}

/// A schema name as an SQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PgDriver {
    /// Connects, migrates the schema, and starts the listener (or the poll timer). `wake` is
    /// notified whenever new work may be due, on this host or another.
    pub(crate) async fn open(options: Options, wake: Arc<Notify>) -> Result<(PgDriver, PgTarget)> {
        let shown = redact(&options.url);
        if options.schema.is_empty() || options.schema.len() > 63 {
            return Err(Error::Config(format!(
                "schema `{}` must be 1 to 63 bytes long",
                options.schema
            )));
        }
        let config: tokio_postgres::Config = options.url.parse().map_err(|e| Error::Open {
            path: shown.clone(),
            source: Box::new(e),
        })?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            // A pool with every connection busy for this long is reported, not waited on
            // forever: the caller gets a transient error to retry.
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::Config(format!("PostgreSQL pool: {e}")))?;
        let schema = quote_ident(&options.schema);
        let statements = Arc::new(Statements::new(&schema, &options.schema));
        let instance = {
            let mut conn = pool.get().await.map_err(|e| open_error(&shown, e))?;
            migrations::migrate(&mut conn, &schema).await?
        };
        let background = CancellationToken::new();
        match options.poll_interval {
            None => {
                tokio::spawn(listener::run(
                    config,
                    statements.channel.clone(),
                    shown.clone(),
                    wake.clone(),
                    background.clone(),
                ));
            }
            Some(interval) => {
                let (wake, stop) = (wake.clone(), background.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tick.tick() => wake.notify_one(),
                        }
                    }
                });
            }
        }
        let writer = writer::Writer::start(pool.clone(), statements.clone(), wake.clone());
        let commit_watch = (options.save_in_wakeup == SaveInWakeup::AfterCommit)
            .then(|| commit_watch::start(pool.clone(), statements.clone(), background.clone()));
        let target = PgTarget {
            statements: statements.clone(),
            instance,
            shown: shown.into(),
            commit_watch,
        };
        let driver = PgDriver {
            pool,
            lease_statements: Arc::new(lease::Statements::new(&schema)),
            inspect: Arc::new(inspect::InspectSql::new(&schema)),
            statements,
            control: Arc::new(control::ControlStatements::new(&schema)),
            queues: Arc::new(options.queues.iter().map(|q| q.to_string()).collect()),
            writer,
            wake,
            background,
            table_reads: Arc::default(),
        };
        Ok((driver, target))
    }

    /// Runs `f` on a pooled connection.
    fn with<T, F>(&self, f: F) -> BoxFuture<Result<T>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c deadpool_postgres::Client,
                &'c Statements,
            ) -> BoxFutureRef<'c, Result<T, tokio_postgres::Error>>
            + Send
            + 'static,
    {
        let (pool, statements) = (self.pool.clone(), self.statements.clone());
        Box::pin(async move {
            let conn = pool.get().await.map_err(pool_error)?;
            f(&conn, &statements).await.map_err(map_error)
        })
    }
}

/// A boxed future that borrows a connection.
type BoxFutureRef<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn uuid(id: &TaskId) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*id.as_bytes())
}

fn task_id(id: uuid::Uuid) -> TaskId {
    TaskId::from_bytes(id.into_bytes())
}

/// The columns of a batch of tasks, as the insert statements take them.
pub(crate) struct InsertColumns {
    ids: Vec<uuid::Uuid>,
    queues: Vec<&'static str>,
    payloads: Vec<Vec<u8>>,
    run_at: Vec<i64>,
    created_at: Vec<i64>,
    priority: Vec<i16>,
    expires_at: Vec<Option<i64>>,
    unique_key: Vec<Option<Vec<u8>>>,
    unique_for: Vec<Option<i64>>,
}

impl InsertColumns {
    pub(crate) fn new(tasks: Vec<NewTask>) -> InsertColumns {
        let mut columns = InsertColumns {
            ids: Vec::with_capacity(tasks.len()),
            queues: Vec::with_capacity(tasks.len()),
            payloads: Vec::with_capacity(tasks.len()),
            run_at: Vec::with_capacity(tasks.len()),
            created_at: Vec::with_capacity(tasks.len()),
            priority: Vec::with_capacity(tasks.len()),
            expires_at: Vec::with_capacity(tasks.len()),
            unique_key: Vec::with_capacity(tasks.len()),
            unique_for: Vec::with_capacity(tasks.len()),
        };
        for task in tasks {
            columns.ids.push(uuid(&task.id));
            columns.queues.push(task.queue);
            columns.payloads.push(task.payload);
            columns.run_at.push(task.run_at);
            columns.created_at.push(task.created_at);
            columns.priority.push(task.priority);
            columns.expires_at.push(task.expires_at);
            columns.unique_key.push(task.unique_key);
            columns.unique_for.push(task.unique_for);
        }
        columns
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 9] {
        [
            &self.ids,
            &self.queues,
            &self.payloads,
            &self.run_at,
            &self.created_at,
            &self.priority,
            &self.expires_at,
            &self.unique_key,
            &self.unique_for,
        ]
    }
}

impl Driver for PgDriver {
    /// Other hosts claim from the same queue: hold a few claims' worth, no more.
    fn prefetch_max(&self) -> usize {
        250
    }

    fn task_insert_many(&self, tasks: Vec<NewTask>) -> BoxFuture<Result<Vec<TaskId>>> {
        self.writer.insert(tasks)
    }

    fn task_claim_within(
        &self,
        process: Option<ProcessId>,
        limit: usize,
        room: Vec<(&'static str, usize)>,
        lease: Duration,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Vec<ClaimedTask>>> {
        self.table_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let queues = self.queues.clone();
        // Each served queue's own limit, in the order of `queues`.
        let rooms: Vec<i64> = queues
            .iter()
            .map(|q| i64::try_from(queue_room(&room, q, limit)).unwrap_or(i64::MAX))
            .collect();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let lease = duration_millis(lease);
        self.with(move |conn, sql| {
            Box::pin(async move {
                let statement = conn.prepare_cached(&sql.claim).await?;
                let claimer = process.map(|p| p.0);
                let rows = conn
                    .query(
                        &statement,
                        &[&*queues, &limit, &now, &lease, &claimer, &rooms],
                    )
                    .await?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in rows {
                    let priority: i16 = row.try_get(7)?;
                    // Claim order: priority descending, then due time, then insertion.
                    let (run_at, seq): (i64, i64) = (row.try_get(5)?, row.try_get(6)?);
                    let key = (std::cmp::Reverse(priority), run_at, seq);
                    let attempts: i32 = row.try_get(3)?;
                    claimed.push((
                        key,
                        ClaimedTask {
                            id: task_id(row.try_get(0)?),
                            queue: row.try_get(1)?,
                            payload: row.try_get(2)?,
                            attempts: u32::try_from(attempts).unwrap_or(0),
                            token: ClaimToken::fenced(row.try_get(4)?),
                            run_at,
                        },
                    ));
                }
                claimed.sort_unstable_by_key(|(key, _)| *key);
                Ok(claimed.into_iter().map(|(_, task)| task).collect())
            })
        })
    }

    fn task_complete_many(&self, completions: Vec<Completion>) -> BoxFuture<Result<()>> {
        let (pool, statements, wake) = (
            self.pool.clone(),
            self.statements.clone(),
            self.wake.clone(),
        );
        Box::pin(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            let retried = complete(&mut conn, &statements, completions)
                .await
                .map_err(map_error)?;
            if retried {
                wake.notify_one();
            }
            Ok(())
        })
    }

    fn task_unclaim_many(&self, tasks: Vec<(TaskId, ClaimToken)>) -> BoxFuture<Result<()>> {
        let (pool, statements, wake) = (
            self.pool.clone(),
            self.statements.clone(),
            self.wake.clone(),
        );
        Box::pin(async move {
            let ids: Vec<uuid::Uuid> = tasks.iter().map(|(id, _)| uuid(id)).collect();
            let fences: Vec<i64> = tasks.iter().map(|(_, token)| token.fence).collect();
            let mut conn = pool.get().await.map_err(pool_error)?;
            let tx = conn.transaction().await.map_err(map_error)?;
            let unclaimed = tx
                .execute(&statements.unclaim, &[&ids, &fences])
                .await
                .map_err(map_error)?;
            if unclaimed > 0 {
                tx.execute(&statements.notify, &[&statements.channel])
                    .await
                    .map_err(map_error)?;
            }
            tx.commit().await.map_err(map_error)?;
            wake.notify_one();
            Ok(())
        })
    }

    fn task_release_stuck(&self, now: Option<Millis>) -> BoxFuture<Result<u64>> {
        let (pool, statements) = (self.pool.clone(), self.statements.clone());
        Box::pin(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            let tx = conn.transaction().await.map_err(map_error)?;
            let released = tx
                .execute(&statements.release, &[&now])
                .await
                .map_err(map_error)?;
            if released > 0 {
                tx.execute(&statements.notify, &[&statements.channel])
                    .await
                    .map_err(map_error)?;
            }
            tx.commit().await.map_err(map_error)?;
            Ok(released)
        })
    }

    fn task_renew_leases(
        &self,
        process: ProcessId,
        tasks: Vec<(TaskId, ClaimToken)>,
        lease: Duration,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Renewal>> {
        let sql = self.lease_statements.clone();
        self.with(move |conn, _| {
            Box::pin(async move { lease::renew(conn, &sql, process, tasks, lease, now).await })
        })
    }

    fn process_register(
        &self,
        process: ProcessRecord,
        now: Option<Millis>,
    ) -> BoxFuture<Result<()>> {
        let sql = self.lease_statements.clone();
        self.with(move |conn, _| {
            Box::pin(async move { lease::register(conn, &sql, process, now).await })
        })
    }

    fn process_remove(&self, process: ProcessId) -> BoxFuture<Result<()>> {
        let sql = self.lease_statements.clone();
        self.with(move |conn, _| Box::pin(async move { lease::remove(conn, &sql, process).await }))
    }

    fn process_list(
        &self,
        live_within: Duration,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Vec<ProcessRecord>>> {
        let sql = self.lease_statements.clone();
        self.with(move |conn, _| {
            Box::pin(async move { lease::list(conn, &sql, live_within, now).await })
        })
    }

    fn task_next_due_except(
        &self,
        full: Vec<&'static str>,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Option<Duration>>> {
        self.table_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let queues: Vec<String> = self
            .queues
            .iter()
            .filter(|q| !full.contains(&q.as_str()))
            .cloned()
            .collect();
        self.with(move |conn, sql| {
            Box::pin(async move {
                let statement = conn.prepare_cached(&sql.next_due).await?;
                let row = conn.query_one(&statement, &[&queues, &now]).await?;
                let wait: Option<i64> = row.try_get(0)?;
                Ok(wait.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
            })
        })
    }

    fn task_status(&self, id: TaskId) -> BoxFuture<Result<TaskStatus>> {
        self.with(move |conn, sql| {
            Box::pin(async move {
                let statement = conn.prepare_cached(&sql.status).await?;
                let row = conn.query_opt(&statement, &[&uuid(&id)]).await?;
                let state: Option<i32> = row.map(|r| r.try_get(0)).transpose()?;
                Ok(match state {
                    Some(0) => TaskStatus::Pending,
                    Some(1) => TaskStatus::Running,
                    Some(2) => TaskStatus::Succeeded,
                    Some(4) => TaskStatus::Cancelled,
                    Some(_) => TaskStatus::Failed,
                    None => TaskStatus::NotFound,
                })
            })
        })
    }

    fn task_expire_pending(
        &self,
        retention: CancelRetention,
        limit: usize,
        now: Option<Millis>,
    ) -> BoxFuture<Result<u64>> {
        self.expire_pending(retention, limit, now)
    }

    fn completed_delete_expired(&self, now: Millis) -> BoxFuture<Result<u64>> {
        self.with(move |conn, sql| {
            Box::pin(async move {
                let statement = conn.prepare_cached(&sql.delete_expired).await?;
                conn.execute(&statement, &[&now]).await
            })
        })
    }

    fn queue_stats(&self, now: Millis) -> BoxFuture<Result<Vec<QueueStats>>> {
        self.with(move |conn, sql| {
            Box::pin(async move {
                let statement = conn.prepare_cached(&sql.queue_stats).await?;
                queue_stats_of(conn.query(&statement, &[&now]).await?)
            })
        })
    }

    fn queue_pause(&self, queue: String, now: Option<Millis>) -> BoxFuture<Result<bool>> {
        self.control_pause(queue, now)
    }

    fn queue_resume(&self, queue: String) -> BoxFuture<Result<bool>> {
        self.control_resume(queue)
    }

    fn queue_list(&self, now: Millis) -> BoxFuture<Result<Vec<QueueRecord>>> {
        self.control_queue_list(now)
    }

    fn task_cancel(
        &self,
        id: TaskId,
        retention: CancelRetention,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Cancelled>> {
        self.control_cancel(id, retention, now)
    }

    fn completed_retry(&self, id: TaskId, now: Option<Millis>) -> BoxFuture<Result<bool>> {
        self.control_retry(id, now)
    }

    fn completed_retry_queue(&self, queue: String, now: Option<Millis>) -> BoxFuture<Result<u64>> {
        self.control_retry_queue(queue, now)
    }

    fn task_run_now(&self, id: TaskId, now: Option<Millis>) -> BoxFuture<Result<bool>> {
        self.control_run_now(id, now)
    }

    fn task_delete(&self, id: TaskId) -> BoxFuture<Result<bool>> {
        self.control_delete(id)
    }

    fn completed_purge(&self, filter: PurgeFilter) -> BoxFuture<Result<u64>> {
        self.control_purge(filter)
    }

    fn task_list(&self, state: TaskState, page: Page) -> BoxFuture<Result<Vec<TaskRecord>>> {
        self.with(move |conn, sql| Box::pin(browse::task_list(conn, sql, state, page)))
    }

    fn task_get(&self, id: TaskId) -> BoxFuture<Result<Option<TaskRecord>>> {
        self.with(move |conn, sql| Box::pin(browse::task_get(conn, sql, id)))
    }

    fn task_list_waiting(&self, queue: &'static str) -> BoxFuture<Result<Vec<TaskRecord>>> {
        self.with(move |conn, sql| Box::pin(browse::task_list_waiting(conn, sql, queue)))
    }

    fn completed_list(
        &self,
        succeeded: bool,
        page: Page,
    ) -> BoxFuture<Result<Vec<CompletedRecord>>> {
        self.with(move |conn, sql| Box::pin(browse::completed_list(conn, sql, succeeded, page)))
    }

    fn completed_get(&self, id: TaskId) -> BoxFuture<Result<Option<CompletedRecord>>> {
        self.with(move |conn, sql| Box::pin(browse::completed_get(conn, sql, id)))
    }

    fn task_info(&self, id: TaskId) -> BoxFuture<Result<Option<InfoRecord>>> {
        let sql = self.inspect.clone();
        self.with(move |conn, _| Box::pin(async move { inspect::task_info(conn, &sql, id).await }))
    }

    fn task_page(&self, query: ListQuery) -> BoxFuture<Result<Vec<SummaryRecord>>> {
        let sql = self.inspect.clone();
        self.with(move |conn, _| {
            Box::pin(async move { inspect::task_page(conn, &sql, &query).await })
        })
    }

    fn task_facts(
        &self,
        id: TaskId,
        now: Option<Millis>,
        live_within: Duration,
    ) -> BoxFuture<Result<Facts>> {
        let sql = self.inspect.clone();
        let live_within = duration_millis(live_within);
        self.with(move |conn, _| {
            Box::pin(async move { inspect::task_facts(conn, &sql, id, now, live_within).await })
        })
    }

    #[cfg(test)]
    fn inspect_fixture(&self, fixture: crate::storage::inspect::Fixture) -> BoxFuture<Result<()>> {
        let sql = self.inspect.clone();
        self.with(move |conn, _| {
            Box::pin(async move { inspect::inspect_fixture(conn, &sql, fixture).await })
        })
    }

    fn schedule_register(
        &self,
        schedules: Vec<ScheduleDef>,
    ) -> BoxFuture<Result<Vec<ScheduleRow>>> {
        let (pool, statements) = (self.pool.clone(), self.statements.clone());
        Box::pin(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            periodic::schedule_register(&mut conn, &statements, schedules)
                .await
                .map_err(map_error)
        })
    }

    fn schedule_list(
        &self,
        names: Vec<String>,
        now: Option<Millis>,
    ) -> BoxFuture<Result<Schedules>> {
        self.with(move |conn, sql| Box::pin(periodic::schedule_list(conn, sql, names, now)))
    }

    fn counters_sample(
        &self,
        minute: Millis,
        samples: Vec<(String, crate::storage::counters::Depth)>,
    ) -> BoxFuture<Result<()>> {
        self.sample_counters(minute, samples)
    }

    fn counters_read(
        &self,
        since: Millis,
    ) -> BoxFuture<Result<Vec<crate::storage::counters::MinuteCounts>>> {
        self.read_counters(since)
    }

    fn counters_delete_before(&self, before: Millis) -> BoxFuture<Result<u64>> {
        self.delete_counters(before)
    }

    fn schedule_tick(&self, claim: TickClaim) -> BoxFuture<Result<TickOutcome>> {
        let (pool, statements, wake) = (
            self.pool.clone(),
            self.statements.clone(),
            self.wake.clone(),
        );
        Box::pin(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            let outcome = periodic::schedule_tick(&mut conn, &statements, claim)
                .await
                .map_err(map_error)?;
            if matches!(outcome, TickOutcome::Claimed { inserted } if inserted > 0) {
                wake.notify_one();
            }
            Ok(outcome)
        })
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

    #[cfg(test)]
    fn table_reads(&self) -> u64 {
        self.table_reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The counts per queue from the rows of `Statements::queue_stats`, in name order.
fn queue_stats_of(
    rows: Vec<tokio_postgres::Row>,
) -> Result<Vec<QueueStats>, tokio_postgres::Error> {
    let mut stats: std::collections::BTreeMap<String, QueueStats> = Default::default();
    for row in rows {
        let queue: String = row.try_get(0)?;
        let count = |i| -> Result<u64, tokio_postgres::Error> {
            Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0))
        };
        let entry = stats.entry(queue.clone()).or_default();
        entry.queue = queue;
        match row.try_get::<_, i32>(1)? {
            0 => (entry.pending, entry.scheduled) = (count(2)?, count(3)?),
            1 => entry.running = count(2)?,
            _ => {
                (entry.succeeded, entry.failed, entry.cancelled) = (count(2)?, count(3)?, count(4)?)
            }
        }
    }
    Ok(stats.into_values().collect())
}

/// Records a batch of outcomes in one transaction: one statement for the retries, one for the
/// finished tasks, and a NOTIFY when a retry may be due. Returns whether any task was retried.
async fn complete(
    conn: &mut deadpool_postgres::Client,
    sql: &Statements,
    completions: Vec<Completion>,
) -> Result<bool, tokio_postgres::Error> {
    let mut retry = RetryColumns::default();
    let mut snooze = SnoozeColumns::default();
    let mut finish = FinishColumns::default();
    for c in &completions {
        let duration_us = i64::try_from(c.duration.as_micros()).unwrap_or(i64::MAX);
        match c.next {
            Next::Retry { run_at } => {
                retry.ids.push(uuid(&c.id));
                retry.fences.push(c.token.fence);
                retry.run_at.push(run_at);
                retry.executed_at.push(c.executed_at);
                retry.duration_us.push(duration_us);
                retry.errors.push(c.error.clone());
            }
            Next::Snooze { run_at } => {
                snooze.ids.push(uuid(&c.id));
                snooze.fences.push(c.token.fence);
                snooze.run_at.push(run_at);
                snooze.executed_at.push(c.executed_at);
                snooze.duration_us.push(duration_us);
            }
            Next::Done { retain, cancelled } => {
                finish.ids.push(uuid(&c.id));
                finish.cancelled.push(cancelled);
                finish.fences.push(c.token.fence);
                finish.retain.push(retain.is_some());
                finish.keep_payload.push(retain.is_some_and(|r| r.payload));
                finish.succeeded.push(c.error.is_none() && !cancelled);
                finish.duration_us.push(duration_us);
                finish.errors.push(c.error.clone());
                finish.executed_at.push(c.executed_at);
                finish.expires_at.push(retain.and_then(|r| r.expires_at));
            }
        }
    }
    let tx = conn.transaction().await?;
    let mut retried = false;
    if !retry.ids.is_empty() {
        let statement = tx.prepare_cached(&sql.retry).await?;
        let updated = tx
            .execute(
                &statement,
                &[
                    &retry.ids,
                    &retry.fences,
                    &retry.run_at,
                    &retry.executed_at,
                    &retry.duration_us,
                    &retry.errors,
                ],
            )
            .await?;
        retried = updated > 0;
    }
    if !snooze.ids.is_empty() {
        let statement = tx.prepare_cached(&sql.snooze).await?;
        let updated = tx
            .execute(
                &statement,
                &[
                    &snooze.ids,
                    &snooze.fences,
                    &snooze.run_at,
                    &snooze.executed_at,
                    &snooze.duration_us,
                ],
            )
            .await?;
        retried |= updated > 0;
    }
    let finishing = async {
        if !finish.ids.is_empty() {
            let statement = tx.prepare_cached(&sql.finish).await?;
            tx.execute(
                &statement,
                &[
                    &finish.ids,
                    &finish.fences,
                    &finish.retain,
                    &finish.keep_payload,
                    &finish.succeeded,
                    &finish.duration_us,
                    &finish.errors,
                    &finish.executed_at,
                    &finish.expires_at,
                    &finish.cancelled,
                ],
            )
            .await?;
        }
        Ok(())
    };
    // The per-minute counters' statement is sent right behind the finished tasks' one, without
    // waiting for its answer first (the connection pipelines them): the batch pays no round
    // trip for it. The server runs them in the order sent, so counter rows are still locked
    // after the batch's task rows.
    tokio::try_join!(finishing, counters::record(&tx, &sql.schema, &completions))?;
    if retried {
        tx.execute(&sql.notify, &[&sql.channel]).await?;
    }
    tx.commit().await?;
    Ok(retried)
}

#[derive(Default)]
struct RetryColumns {
    ids: Vec<uuid::Uuid>,
    fences: Vec<i64>,
    run_at: Vec<i64>,
    executed_at: Vec<i64>,
    duration_us: Vec<i64>,
    errors: Vec<Option<String>>,
}

#[derive(Default)]
struct SnoozeColumns {
    ids: Vec<uuid::Uuid>,
    fences: Vec<i64>,
    run_at: Vec<i64>,
    executed_at: Vec<i64>,
    duration_us: Vec<i64>,
}

#[derive(Default)]
struct FinishColumns {
    ids: Vec<uuid::Uuid>,
    fences: Vec<i64>,
    retain: Vec<bool>,
    keep_payload: Vec<bool>,
    succeeded: Vec<bool>,
    duration_us: Vec<i64>,
    errors: Vec<Option<String>>,
    executed_at: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    cancelled: Vec<bool>,
}

/// Maps a PostgreSQL error to the kinds the application can act on, keeping it as the source
/// (`source().downcast_ref::<tokio_postgres::Error>()` then gives the SQLSTATE).
pub(crate) fn map_error(error: tokio_postgres::Error) -> Error {
    let Some(code) = error.code() else {
        // No SQLSTATE: the connection failed or closed under the statement.
        return if error.is_closed() || std::error::Error::source(&error).is_some() {
            Error::Connection(Box::new(error))
        } else {
            Error::Storage(Box::new(error))
        };
    };
    if code == &SqlState::T_R_SERIALIZATION_FAILURE || code == &SqlState::T_R_DEADLOCK_DETECTED {
        return Error::Conflict(Box::new(error));
    }
    if code == &SqlState::DISK_FULL {
        return Error::Full;
    }
    if code == &SqlState::READ_ONLY_SQL_TRANSACTION {
        // A standby, or `default_transaction_read_only`: the server refuses every write.
        return Error::ReadOnly {
            path: "the PostgreSQL server".into(),
        };
    }
    let transient = code.code().starts_with("08") // connection exception
        || code == &SqlState::ADMIN_SHUTDOWN
        || code == &SqlState::CRASH_SHUTDOWN
        || code == &SqlState::CANNOT_CONNECT_NOW
        || code == &SqlState::TOO_MANY_CONNECTIONS;
    if transient {
        Error::Connection(Box::new(error))
    } else {
        Error::Storage(Box::new(error))
    }
}

/// A pool that cannot hand out a connection: the server is unreachable or every connection
/// stayed busy past the wait timeout. Both pass.
fn pool_error(error: deadpool_postgres::PoolError) -> Error {
    match error {
        deadpool_postgres::PoolError::Backend(error) => map_error(error),
        other => Error::Connection(Box::new(other)),
    }
}

/// Errors of the first connection, which know the URL: a server that cannot be reached at
/// all, or refuses the login, is reported with where it was looked for.
fn open_error(shown: &str, error: deadpool_postgres::PoolError) -> Error {
    match pool_error(error) {
        Error::Connection(source) | Error::Storage(source) => Error::Open {
            path: shown.to_owned(),
            source,
        },
        other => other,
    }
}

/// A driver on a fresh schema of the test server for the conformance suites, or `None` (with
/// a printed line) when no server is configured outside CI. In CI a missing server fails.
#[cfg(test)]
pub(crate) async fn open_for_test(queues: Vec<&'static str>) -> Option<PgDriver> {
    let url = test_url()?;
    drop_old_test_schemas(&url).await;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let schema = format!("backlite_test_{secs}_{}", uuid::Uuid::now_v7().simple());
    let options = Options {
        url,
        schema,
        pool_size: 4,
        poll_interval: None,
        queues,
        save_in_wakeup: SaveInWakeup::InTransaction,
    };
    Some(
        PgDriver::open(options, Arc::new(Notify::new()))
            .await
            .expect("open PostgreSQL")
            .0,
    )
}

/// Each test leaves its schema behind (a test cannot run code after it ends); the first test
/// of each process drops those of runs that ended over an hour ago.
#[cfg(test)]
async fn drop_old_test_schemas(url: &str) {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let Ok((client, connection)) = tokio_postgres::connect(url, NoTls).await else {
            return;
        };
        tokio::spawn(connection);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Ok(rows) = client
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'backlite_test_%'",
                &[],
            )
            .await
        else {
            return;
        };
        for row in rows {
            let name: String = row.get(0);
            let secs = name
                .trim_start_matches("backlite_test_")
                .split('_')
                .next()
                .and_then(|s| s.parse::<u64>().ok());
            if secs.is_none_or(|secs| secs + 3600 < now) {
                let _ = client
                    .batch_execute(&format!(
                        "DROP SCHEMA IF EXISTS {} CASCADE",
                        quote_ident(&name)
                    ))
                    .await;
            }
        }
    })
    .await;
}

/// `BACKLITE_TEST_POSTGRES_URL`; without it, `None` outside CI and a failure in CI.
#[cfg(test)]
pub(crate) fn test_url() -> Option<String> {
    match std::env::var("BACKLITE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but BACKLITE_TEST_POSTGRES_URL is not: PostgreSQL tests must run")
        }
        _ => {
            eprintln!("skipped: BACKLITE_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

#[cfg(test)]
crate::storage::conformance::driver_conformance!(conformance, |queues| async move {
    crate::storage::postgres::open_for_test(queues).await
});

#[cfg(test)]
crate::storage::dispatch_conformance::dispatch_conformance!(
    dispatch_conformance,
    |queues| async move { crate::storage::postgres::open_for_test(queues).await }
);

#[cfg(test)]
crate::storage::browse_conformance::browse_conformance!(browse_conformance, |queues| async move {
    crate::storage::postgres::open_for_test(queues).await
});

#[cfg(test)]
crate::storage::control_conformance::control_conformance!(
    control_conformance,
    |queues| async move { crate::storage::postgres::open_for_test(queues).await }
);

#[cfg(test)]
crate::storage::periodic_conformance::periodic_conformance!(
    periodic_conformance,
    |queues| async move { crate::storage::postgres::open_for_test(queues).await }
);

#[cfg(test)]
crate::storage::model::lifecycle_model!(lifecycle, |queues| async move {
    crate::storage::postgres::open_for_test(queues).await
});

#[cfg(test)]
mod plans {
    use std::time::Duration;

    use crate::storage::conformance::{LEASE, done, new_task};
    use crate::storage::{Driver, Retain};

    /// The plan of `sql` with its parameters, as one text.
    async fn plan(
        conn: &deadpool_postgres::Client,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> String {
        let statement = conn
            .prepare(&format!("EXPLAIN {sql}"))
            .await
            .expect("prepare");
        let rows = conn.query(&statement, params).await.expect("explain");
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The UI's lists and counts, and the dispatcher's claim and next-due query, read indexes:
    /// no page, count or claim costs a pass over a table, whatever its size.
    #[tokio::test]
    async fn lists_counts_and_claims_read_indexes_not_tables() {
        let Some(d) = super::open_for_test(vec!["a", "b"]).await else {
            return;
        };
        // Payloads of a realistic size: the tables' rows are then far wider than the indexes'.
        let payload = format!("{{\"body\":\"{}\"}}", "x".repeat(300));
        for queue in ["a", "b", "c"] {
            let tasks: Vec<_> = (0..4_000).map(|i| new_task(queue, i, &payload)).collect();
            d.task_insert_many(tasks).await.unwrap();
        }
        // A paused queue: claims and next-due queries look each served queue up by key.
        d.queue_pause("c".into(), None).await.unwrap();
        let claimed = d.task_claim(None, 500, LEASE, Some(10_000)).await.unwrap();
        let retain = Some(Retain {
            payload: true,
            expires_at: Some(1_000_000),
        });
        let finished = claimed
            .iter()
            .take(400)
            .map(|c| done(c.id, c.token, None, retain))
            .collect();
        d.task_complete_many(finished).await.unwrap();
        let conn = d.pool.get().await.unwrap();
        // What autovacuum does on a live database: statistics, and the visibility map that
        // lets a scan answer from an index alone.
        let schema = &d.statements.schema;
        conn.batch_execute(&format!("VACUUM ANALYZE {schema}.backlite_tasks"))
            .await
            .unwrap();
        // While other tests hold snapshots, VACUUM cannot mark pages all-visible, and a count
        // of nearly every row is then cheaper as a sequential scan (or a bitmap scan of the
        // rows). Disabling the sequential scan asks the question this test is about, whether
        // an index serves each statement: where none does, the plan still shows a Seq Scan.
        conn.batch_execute("SET enable_seqscan = off")
            .await
            .unwrap();
        let sql = &d.statements;
        let queues = vec!["a".to_owned(), "b".to_owned()];
        let (limit, offset, preview, now) = (25i64, 50i64, 256i32, Some(100i64));
        let lease = 1_000i64;
        let claimer = Some(uuid::Uuid::now_v7());
        // One queue at its concurrency limit, one with room.
        let rooms = vec![0i64, 10];
        let cases: Vec<(&str, String)> = vec![
            (
                "running",
                plan(&conn, &sql.running, &[&limit, &offset, &preview]).await,
            ),
            (
                "upcoming",
                plan(&conn, &sql.upcoming, &[&limit, &offset, &preview]).await,
            ),
            (
                "completed",
                plan(
                    &conn,
                    &sql.completed_list,
                    &[&limit, &offset, &preview, &true],
                )
                .await,
            ),
            ("counts", plan(&conn, &sql.queue_stats, &[&100i64]).await),
            (
                "claim",
                plan(
                    &conn,
                    &sql.claim,
                    &[&queues, &limit, &now, &lease, &claimer, &rooms],
                )
                .await,
            ),
            (
                "next due",
                plan(&conn, &sql.next_due, &[&queues, &now]).await,
            ),
            ("release", plan(&conn, &sql.release, &[&now]).await),
        ];
        // Every other statement on the tasks table: each reads the partial index of its
        // states, or the primary key.
        let control = &d.control;
        let id = uuid::Uuid::now_v7();
        let queue = "a".to_owned();
        let none: Option<String> = None;
        let yes = true;
        let (names, retain, until) = (vec!["a".to_owned()], vec![true], vec![None::<i64>]);
        let (batch, error) = (1_000i64, "expired".to_owned());
        let more: Vec<(&str, String, &str)> = vec![
            (
                "status",
                plan(&conn, &sql.status, &[&id]).await,
                "backlite_tasks_pkey",
            ),
            (
                "retention cleanup",
                plan(&conn, &sql.delete_expired, &[&100i64]).await,
                "backlite_tasks_retention",
            ),
            (
                "purge",
                plan(&conn, &control.purge, &[&none, &now, &yes, &yes, &yes]).await,
                "backlite_tasks_ended",
            ),
            (
                "retry of a queue",
                plan(&conn, &control.retry_queue, &[&queue, &now]).await,
                "backlite_tasks_ended_queue",
            ),
            (
                "retry",
                plan(&conn, &control.retry, &[&id, &now]).await,
                "backlite_tasks_pkey",
            ),
            (
                "run now",
                plan(&conn, &control.run_now, &[&id, &now]).await,
                "backlite_tasks_pkey",
            ),
            (
                "delete",
                plan(&conn, &control.delete, &[&id]).await,
                "backlite_tasks_pkey",
            ),
            (
                "expiry sweep",
                plan(
                    &conn,
                    &super::expiry::expire_sql(schema),
                    &[&names, &retain, &retain, &until, &batch, &now, &error],
                )
                .await,
                "backlite_tasks_expiring",
            ),
        ];
        for (name, plan, index) in &more {
            assert!(
                plan.contains(index),
                "{name} does not read {index}:\n{plan}"
            );
        }
        let cases = cases
            .into_iter()
            .chain(more.into_iter().map(|(name, plan, _)| (name, plan)));
        for (name, plan) in cases {
            assert!(!plan.contains("Seq Scan"), "{name} scans a table:\n{plan}");
        }
        let _ = Duration::ZERO;
    }

    /// The generic plans of the completion and retry statements, the ones a prepared statement
    /// runs after its fifth execution, look each outcome's task up by its id, one primary-key
    /// lookup per outcome: they neither walk the running rows nor compare every outcome of
    /// the batch with every task (a nested loop with a join filter, which made a batch of
    /// 1,000 take 346 ms against 2 ms), whatever the number of running rows. Shown by
    /// `EXPLAIN ANALYZE` of a batch of 1,000 outcomes among 2,000 running tasks, rolled back.
    #[tokio::test]
    async fn the_completions_generic_plan_looks_tasks_up_by_id() {
        let Some(d) = super::open_for_test(vec!["a"]).await else {
            return;
        };
        let tasks: Vec<_> = (0..6_000).map(|i| new_task("a", i, "{}")).collect();
        d.task_insert_many(tasks).await.unwrap();
        let claimed = d
            .task_claim(None, 2_000, LEASE, Some(10_000))
            .await
            .unwrap();
        let mut conn = d.pool.get().await.unwrap();
        let schema = &d.statements.schema;
        conn.batch_execute(&format!("VACUUM ANALYZE {schema}.backlite_tasks"))
            .await
            .unwrap();
        let batch = &claimed[..1_000];
        let list = |f: &dyn Fn(usize, &crate::storage::ClaimedTask) -> String| {
            batch
                .iter()
                .enumerate()
                .map(|(i, c)| f(i, c))
                .collect::<Vec<_>>()
                .join(",")
        };
        // Half retained (an update in place), half not (a delete).
        let args = format!(
            "ARRAY[{}]::uuid[], ARRAY[{}]::int8[], ARRAY[{}]::bool[], ARRAY[{}]::bool[], \
             ARRAY[{}]::bool[], ARRAY[{}]::int8[], ARRAY[{}]::text[], ARRAY[{}]::int8[], \
             ARRAY[{}]::int8[], ARRAY[{}]::bool[]",
            list(&|_, c| format!("'{}'", super::uuid(&c.id))),
            list(&|_, c| c.token.fence.to_string()),
            list(&|i, _| (i % 2 == 0).to_string()),
            list(&|_, _| "true".into()),
            list(&|_, _| "true".into()),
            list(&|_, _| "100".into()),
            list(&|_, _| "NULL".into()),
            list(&|_, _| "20000".into()),
            list(&|_, _| "NULL".into()),
            list(&|_, _| "false".into()),
        );
        // A retry of the same batch, for the same property.
        let retry_args = format!(
            "ARRAY[{}]::uuid[], ARRAY[{}]::int8[], ARRAY[{}]::int8[], ARRAY[{}]::int8[], \
             ARRAY[{}]::int8[], ARRAY[{}]::text[]",
            list(&|_, c| format!("'{}'", super::uuid(&c.id))),
            list(&|_, c| c.token.fence.to_string()),
            list(&|_, _| "30000".into()),
            list(&|_, _| "20000".into()),
            list(&|_, _| "100".into()),
            list(&|_, _| "'boom'".into()),
        );
        for (name, sql, args, lookups) in [
            ("finish", &d.statements.finish, &args, 2),
            ("retry", &d.statements.retry, &retry_args, 1),
        ] {
            let tx = conn.transaction().await.unwrap();
            tx.batch_execute(&format!(
                "SET LOCAL plan_cache_mode = force_generic_plan; \
                 PREPARE backlite_{name} AS {sql}"
            ))
            .await
            .unwrap();
            let plan: String = tx
                .query(
                    &format!("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE backlite_{name}({args})"),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n");
            let running: i64 = tx
                .query_one(
                    &format!("SELECT count(*) FROM {schema}.backlite_tasks WHERE state = 1"),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            tx.rollback().await.unwrap();
            conn.batch_execute(&format!("DEALLOCATE backlite_{name}"))
                .await
                .unwrap();
            assert_eq!(
                running,
                2_000 - 1_000,
                "{name}: every outcome applied:\n{plan}"
            );
            assert_eq!(
                plan.matches("Index Scan using backlite_tasks_pkey").count(),
                lookups,
                "{name} looks its tasks up by id:\n{plan}"
            );
            assert_eq!(
                plan.matches("Index Cond: (id = u").count(),
                lookups,
                "{name} looks each outcome's task up:\n{plan}"
            );
            assert!(
                !plan.contains("Join Filter"),
                "{name} compares outcomes with tasks:\n{plan}"
            );
            assert!(
                !plan.contains("backlite_tasks_running")
                    && !plan.contains("Seq Scan on backlite_tasks"),
                "{name} walks the running rows:\n{plan}"
            );
        }
    }
}

#[cfg(test)]
mod errors {
    use tokio_postgres::NoTls;

    use super::{map_error, test_url};
    use crate::error::Error;

    /// Each SQLSTATE class lands in the kind the application acts on, from a real server's
    /// error, and the tokio-postgres error stays the source with its SQLSTATE.
    #[tokio::test]
    async fn sqlstates_map_to_kinds_and_stay_readable() {
        let Some(url) = test_url() else { return };
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        let raise = |code: &str| {
            format!("DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END $$")
        };
        type IsKind = fn(&Error) -> bool;
        let cases: [(&str, IsKind, bool); 8] = [
            ("40001", |e| matches!(e, Error::Conflict(_)), true),
            ("40P01", |e| matches!(e, Error::Conflict(_)), true),
            ("57P01", |e| matches!(e, Error::Connection(_)), true),
            ("53300", |e| matches!(e, Error::Connection(_)), true),
            ("08006", |e| matches!(e, Error::Connection(_)), true),
            ("53100", |e| matches!(e, Error::Full), false),
            ("25006", |e| matches!(e, Error::ReadOnly { .. }), false),
            ("23505", |e| matches!(e, Error::Storage(_)), false),
        ];
        for (code, kind, transient) in cases {
            let error = map_error(client.batch_execute(&raise(code)).await.unwrap_err());
            assert!(kind(&error), "{code}: {error:?}");
            assert_eq!(error.is_transient(), transient, "{code}");
            if let Some(source) = std::error::Error::source(&error) {
                let pg = source.downcast_ref::<tokio_postgres::Error>().unwrap();
                assert_eq!(pg.code().unwrap().code(), code);
            }
        }

        // A connection the server ends: transient.
        let (doomed, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        let pid: i32 = doomed
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        client
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let error = map_error(doomed.batch_execute("SELECT 1").await.unwrap_err());
        assert!(matches!(error, Error::Connection(_)), "{error:?}");
        assert!(error.is_transient());
    }
}
