//! The client: builder, adding tasks, start and stop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::database::Database;
use crate::dispatcher::{self, Running};
use crate::error::{Error, Result};
use crate::processor::Registry;
use crate::save_in::SaveIn;
use crate::storage::sqlite::{self, SqliteDriver, SqliteTarget, Synchronous};
use crate::storage::{Driver, NewTask, QueueStats, duration_millis, now_millis, to_millis};
use crate::task::{Task, TaskId, TaskStatus};

/// A handle on a backlite database and its worker pool. Cheap to clone; every clone is the
/// same client.
///
/// ```no_run
/// # use backlite::{Client, Context, Task, processor, processors};
/// # use serde::{Deserialize, Serialize};
/// # use std::time::Duration;
/// # #[derive(Serialize, Deserialize, Task)]
/// # #[queue(name = "emails", max_attempts = 3)]
/// # struct Email { to: String }
/// # #[processor]
/// # async fn send_email(task: Email) -> Result<(), std::io::Error> { Ok(()) }
/// # async fn run() -> backlite::Result<()> {
/// let client = Client::builder()
///     .database("data.db")
///     .workers(10)
///     .processors(processors![send_email])
///     .build()
///     .await?;
/// client.start();
/// let ids = client.add(Email { to: "a@example.com".into() }).save().await?;
/// let all_done = client.stop(Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) driver: Arc<dyn Driver>,
    /// Where the database is, for `save_in` to check a transaction against.
    pub(crate) target: Target,
    pub(crate) registry: Registry,
    pub(crate) settings: Settings,
    /// Notified when new work may be due: local inserts, external commits, retries.
    pub(crate) wake: Arc<Notify>,
    runtime: tokio::runtime::Handle,
    running: Mutex<Option<Running>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) workers: usize,
    pub(crate) release_after: Duration,
    pub(crate) cleanup_interval: Duration,
}

impl Client {
    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Starts a batch of tasks to add with `task` in it; finish it with
    /// [`save`](AddTasks::save) or [`save_in`](AddTasks::save_in).
    pub fn add<T: Task>(&self, task: T) -> AddTasks<'_> {
        AddTasks {
            client: self,
            tasks: Vec::new(),
            error: None,
            run_at: None,
        }
        .add(task)
    }

    /// Where the task `id` is. Completed tasks are found only while retained.
    pub async fn status(&self, id: &TaskId) -> Result<TaskStatus> {
        self.inner.driver.task_status(*id).await
    }

    /// Task counts per queue, for every queue in the database.
    pub async fn stats(&self) -> Result<Vec<QueueStats>> {
        self.inner.driver.queue_stats(now_millis()).await
    }

    /// Starts the dispatcher and the worker pool on the tokio runtime that built the client.
    /// Calling it on a started client does nothing.
    pub fn start(&self) {
        let Ok(mut running) = self.inner.running.lock() else {
            return;
        };
        if running.is_some() {
            tracing::debug!("backlite client already started");
            return;
        }
        let _enter = self.inner.runtime.enter();
        *running = Some(dispatcher::start(self.clone()));
    }

    /// Stops gracefully: no new task starts, and running tasks get up to `timeout` to finish.
    /// Returns whether all of them did.
    ///
    /// Tasks that were still running at the timeout are dropped at their next `.await` and
    /// returned to the pending state, attempt not counted, so the next client to start runs
    /// them again. Tasks that had not started stay pending. Dropping a started client without
    /// calling `stop` (or a crash) leaves its running tasks claimed until `release_after`
    /// has passed; then another client runs them again.
    pub async fn stop(&self, timeout: Duration) -> bool {
        let running = self.inner.running.lock().ok().and_then(|mut r| r.take());
        match running {
            Some(running) => running.stop(timeout).await,
            None => true,
        }
    }

    pub(crate) fn driver(&self) -> &dyn Driver {
        &*self.inner.driver
    }

    /// The SQLite database of this client, or the error `save_in` gives for a transaction
    /// on SQLite when the client is on another backend.
    pub(crate) fn sqlite_target(&self) -> Result<&SqliteTarget> {
        match &self.inner.target {
            Target::Sqlite(target) => Ok(target),
            #[cfg(feature = "postgres")]
            Target::Postgres(target) => Err(Error::WrongDatabase {
                expected: target.to_string(),
                found: "an SQLite database".into(),
            }),
        }
    }

    /// The PostgreSQL database of this client, or the error `save_in` gives for a transaction
    /// on PostgreSQL when the client is on SQLite.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres_target(&self) -> Result<&crate::storage::postgres::PgTarget> {
        match &self.inner.target {
            Target::Postgres(target) => Ok(target),
            Target::Sqlite(target) => Err(Error::WrongDatabase {
                expected: target.to_string(),
                found: "a PostgreSQL database".into(),
            }),
        }
    }

    #[cfg_attr(
        not(feature = "ui"),
        allow(dead_code, reason = "the UI reads queue settings")
    )]
    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("database", &self.inner.target)
            .field("queues", &self.inner.registry)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// Where a client's database is.
#[derive(Debug)]
pub(crate) enum Target {
    Sqlite(SqliteTarget),
    #[cfg(feature = "postgres")]
    Postgres(crate::storage::postgres::PgTarget),
}

/// Configures and opens a [`Client`]. Every setting but the database has a default.
#[derive(Debug)]
#[must_use = "call `.build().await` to open the client"]
pub struct ClientBuilder {
    database: Option<Database>,
    pool_size: usize,
    schema: Option<String>,
    poll_interval: Option<Duration>,
    workers: usize,
    release_after: Duration,
    cleanup_interval: Duration,
    busy_timeout: Duration,
    synchronous: Synchronous,
    registry: Registry,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            database: None,
            pool_size: 10,
            schema: None,
            poll_interval: None,
            workers: 10,
            release_after: Duration::from_secs(600),
            cleanup_interval: Duration::from_secs(3600),
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Normal,
            registry: Registry::default(),
        }
    }
}

impl ClientBuilder {
    /// The database to use. Required.
    ///
    /// - A path opens that SQLite file, created if missing; `":memory:"` gives a database that
    ///   lives as long as the client.
    /// - A `postgres://` or `postgresql://` URL opens that PostgreSQL database (with the
    ///   `postgres` feature; without it, `build()` returns [`Error::Config`]). Tasks and
    ///   processors are the same on both.
    ///
    /// A URL's password is never shown: errors, logs and `Debug` print the URL without it.
    pub fn database(mut self, path_or_url: impl AsRef<std::path::Path>) -> Self {
        let given = path_or_url.as_ref().to_string_lossy();
        self.database = Some(Database::parse(&given));
        self
    }

    /// PostgreSQL: how many connections the client keeps open at most for its saves, claims
    /// and outcomes (default 10; at least 2). The listener for wake-ups takes one more. On
    /// SQLite, which writes through one connection, this setting is refused.
    pub fn pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// PostgreSQL: the schema that holds backlite's tables (default `public`), created if
    /// missing, so that an application can keep them apart from its own. Clients on one
    /// database share tasks only when they use the same schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// PostgreSQL: look for new work every `interval` instead of waiting for notifications.
    ///
    /// By default a client LISTENs on one connection of its own, and every insert, retry or
    /// release by any host NOTIFYs it. A connection pooler in transaction mode (PgBouncer's
    /// `pool_mode = transaction`) does not deliver notifications; behind one, set this to a
    /// short interval (such as 100 ms): each idle client then runs one indexed query per
    /// interval, and a new task waits up to `interval` before it starts.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = Some(interval);
        self
    }

    /// How many tasks run at once (at least 1; default 10).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// How long a task may stay claimed before its worker is taken for dead and the task is
    /// run again (default 10 minutes). Must exceed every queue's timeout; a task without a
    /// timeout that runs longer than this may run twice.
    pub fn release_after(mut self, release_after: Duration) -> Self {
        self.release_after = release_after;
        self
    }

    /// How often retained tasks whose retention has expired are deleted (default 1 hour).
    pub fn cleanup_interval(mut self, cleanup_interval: Duration) -> Self {
        self.cleanup_interval = cleanup_interval;
        self
    }

    /// How long a write waits for a lock held by another connection before it fails with
    /// [`Error::Busy`] (default 5 seconds).
    pub fn busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// How durable each commit is (default [`Synchronous::Normal`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The processors this client runs, built by `processors![..]`. A client without
    /// processors can still add tasks, for other processes to run.
    pub fn processors(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Checks the settings, opens (or creates) the database and applies its migrations.
    pub async fn build(self) -> Result<Client> {
        let database = self
            .database
            .clone()
            .ok_or_else(|| Error::Config("no database path: call `.database(..)`".into()))?;
        self.validate()?;
        let runtime = tokio::runtime::Handle::current();
        let wake = Arc::new(Notify::new());
        let (driver, target): (Arc<dyn Driver>, Target) = match database {
            Database::Sqlite(path) => {
                if self.schema.is_some() || self.poll_interval.is_some() {
                    return Err(Error::Config(
                        "`schema` and `poll_interval` apply to PostgreSQL databases only".into(),
                    ));
                }
                let options = sqlite::Options {
                    path,
                    synchronous: self.synchronous,
                    busy_timeout: self.busy_timeout,
                    queues: self.registry.queues().collect(),
                };
                let driver_wake = wake.clone();
                let (driver, target) =
                    tokio::task::spawn_blocking(move || SqliteDriver::open(options, driver_wake))
                        .await
                        .map_err(|e| Error::Storage(e.to_string().into()))??;
                (Arc::new(driver), Target::Sqlite(target))
            }
            #[cfg(feature = "postgres")]
            Database::Postgres(url) => {
                let options = crate::storage::postgres::Options {
                    url,
                    schema: self.schema.clone().unwrap_or_else(|| "public".into()),
                    pool_size: self.pool_size,
                    poll_interval: self.poll_interval,
                    queues: self.registry.queues().collect(),
                };
                let (driver, target) =
                    crate::storage::postgres::PgDriver::open(options, wake.clone()).await?;
                (Arc::new(driver), Target::Postgres(target))
            }
            #[cfg(not(feature = "postgres"))]
            Database::Postgres(url) => {
                return Err(Error::Config(format!(
                    "`{}` is a PostgreSQL URL: enable backlite's `postgres` feature to use it",
                    crate::database::redact(&url)
                )));
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                driver,
                target,
                registry: self.registry,
                settings: Settings {
                    workers: self.workers,
                    release_after: self.release_after,
                    cleanup_interval: self.cleanup_interval,
                },
                wake,
                runtime,
                running: Mutex::new(None),
            }),
        })
    }

    fn validate(&self) -> Result<()> {
        if self.workers == 0 {
            return Err(Error::Config("workers must be at least 1".into()));
        }
        if self.pool_size < 2 {
            return Err(Error::Config("pool_size must be at least 2".into()));
        }
        if self.poll_interval.is_some_and(|i| i.is_zero()) {
            return Err(Error::Config(
                "poll_interval must be greater than zero".into(),
            ));
        }
        for (name, value) in [
            ("release_after", self.release_after),
            ("cleanup_interval", self.cleanup_interval),
        ] {
            if value.is_zero() {
                return Err(Error::Config(format!("{name} must be greater than zero")));
            }
        }
        self.registry.validate().map_err(Error::Config)?;
        for queue in self.registry.queues() {
            let timeout = self.registry.config(queue).and_then(|c| c.timeout());
            if let Some(timeout) = timeout.filter(|t| *t >= self.release_after) {
                return Err(Error::Config(format!(
                    "release_after ({:?}) must be longer than the timeout of queue `{queue}` \
                     ({timeout:?}), or running tasks would be run a second time",
                    self.release_after
                )));
            }
        }
        Ok(())
    }
}

/// A batch of tasks to add in one transaction: all are stored, or none.
///
/// ```no_run
/// # use backlite::{Client, Task};
/// # use serde::{Deserialize, Serialize};
/// # use std::time::Duration;
/// # #[derive(Serialize, Deserialize, Task)] #[queue(name = "a")] struct A;
/// # #[derive(Serialize, Deserialize, Task)] #[queue(name = "b")] struct B;
/// # async fn run(client: Client) -> backlite::Result<()> {
/// // Two queues, one transaction, both due in a minute.
/// let ids = client.add(A).add(B).wait(Duration::from_secs(60)).save().await?;
/// # Ok(()) }
/// ```
#[must_use = "call `.save().await` or `.save_in(&tx)` to store the tasks"]
pub struct AddTasks<'a> {
    client: &'a Client,
    tasks: Vec<NewTask>,
    /// The first serialization error, reported by `save`.
    error: Option<Error>,
    run_at: Option<SystemTime>,
}

impl AddTasks<'_> {
    /// Adds another task, of any queue, to the batch.
    #[allow(
        clippy::should_implement_trait,
        reason = "the chain reads `client.add(a).add(b)`"
    )]
    pub fn add<T: Task>(mut self, task: T) -> Self {
        let queue = T::CONFIG.name();
        match serde_json::to_vec(&task) {
            Ok(payload) => self.tasks.push(NewTask {
                id: TaskId::new(),
                queue,
                payload,
                created_at: 0,
                run_at: 0,
            }),
            Err(source) => {
                self.error.get_or_insert(Error::Serialize { queue, source });
            }
        }
        self
    }

    /// Runs the batch's tasks no earlier than `time`.
    pub fn at(mut self, time: SystemTime) -> Self {
        self.run_at = Some(time);
        self
    }

    /// Runs the batch's tasks no earlier than `wait` after saving.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.run_at = Some(SystemTime::now() + wait);
        self
    }

    fn prepare(mut self) -> Result<Vec<NewTask>> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let now = now_millis();
        let run_at = self.run_at.map_or(now, to_millis);
        for task in &mut self.tasks {
            task.created_at = now;
            task.run_at = run_at;
        }
        Ok(self.tasks)
    }

    /// Stores the batch in one transaction and returns the new ids, in the order added.
    pub async fn save(self) -> Result<Vec<TaskId>> {
        let driver = self.client.inner.driver.clone();
        let tasks = self.prepare()?;
        let ids = tasks.iter().map(|t| t.id).collect();
        driver.task_insert_many(tasks).await?;
        Ok(ids)
    }

    /// Stores the batch as part of the application's own transaction on the client's
    /// database: the tasks exist if and only if that transaction commits. Once it has, they
    /// run without any further call (on SQLite the client notices the commit within a few
    /// tens of milliseconds; on PostgreSQL the commit notifies every client at once). A
    /// transaction on another database is refused with [`Error::WrongDatabase`].
    ///
    /// It takes every transaction type that implements [`SaveIn`], and returns what that
    /// library's calls return: for rusqlite a `Result`, as below.
    ///
    /// On SQLite, start such transactions with `BEGIN IMMEDIATE`
    /// (`conn.transaction_with_behavior(TransactionBehavior::Immediate)`): a deferred
    /// transaction that reads first and writes later can fail with `SQLITE_BUSY` at its first
    /// write when the client committed in between, which waiting cannot fix.
    ///
    /// ```no_run
    /// # use backlite::{Client, Task};
    /// # use backlite::rusqlite::{Connection, TransactionBehavior};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, Task)] #[queue(name = "receipts")]
    /// # struct Receipt { order: i64 }
    /// # fn run(client: &Client, conn: &mut Connection) -> Result<(), Box<dyn std::error::Error>> {
    /// let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    /// tx.execute("INSERT INTO orders (id) VALUES (?1)", [42])?;
    /// client.add(Receipt { order: 42 }).save_in(&tx)?;
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn save_in<T: SaveIn>(self, tx: T) -> T::Output {
        let client = self.client;
        tx.save_into(client, self.prepare())
    }
}

pub(crate) fn retention_expiry(duration: Option<Duration>, now: i64) -> Option<i64> {
    duration.map(|d| now.saturating_add(duration_millis(d)))
}
