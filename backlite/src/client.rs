//! The client: builder, adding tasks, start and stop.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::database::Database;
use crate::dispatcher::{self, Running};
use crate::error::{Error, Result};
use crate::events::{Hooks, TaskEvent};
use crate::periodic::{PeriodicTask, Schedule, Ticker};
use crate::processor::Registry;
use crate::save_in::SaveIn;
use crate::state::StateMap;
use crate::storage::sqlite::{self, SqliteDriver, SqliteTarget, Synchronous};
use crate::storage::{Driver, Millis, NewTask, QueueStats, duration_millis, to_millis};
use crate::task::{Task, TaskId, TaskStatus};

/// A handle on a backlite database and its worker pool. Cheap to clone; every clone is the
/// same client.
///
/// Dropping the last handle the application holds stops a started client as a
/// [`stop`](Client::stop) that gives up at once: no task is claimed any more, and the running
/// ones see their [`Context`](crate::Context) cancelled, are dropped and are handed back to
/// the pending state, attempt not counted. The drop does not wait for this; call `stop` to
/// wait, or to give running tasks time to finish. The client a processor reaches through
/// [`Context::client`](crate::Context::client) (and its clones) is not one of the
/// application's handles: it does not keep the client running.
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
    /// Shared by the application's handles only; the dispatcher, the workers and every
    /// `Context` hold handles without it, so that they do not keep a dropped client running.
    #[allow(dead_code, reason = "held for its `Drop`")]
    handle: Option<Arc<UserHandle>>,
}

/// Stops the client when the application's last handle drops.
struct UserHandle(Arc<Inner>);

impl Drop for UserHandle {
    fn drop(&mut self) {
        self.0.last_handle_dropped();
    }
}

pub(crate) struct Inner {
    pub(crate) driver: Arc<dyn Driver>,
    /// Where the database is, for `save_in` to check a transaction against.
    pub(crate) target: Target,
    pub(crate) registry: Registry,
    pub(crate) states: StateMap,
    pub(crate) settings: Settings,
    /// Notified when new work may be due: local inserts, external commits, retries.
    pub(crate) wake: Arc<Notify>,
    /// Where task timing reads "now": the wall clock, or a test's clock.
    clock: Clock,
    pub(crate) hooks: Hooks,
    runtime: tokio::runtime::Handle,
    pub(crate) running: Mutex<Option<Running>>,
    /// The tasks enqueued by schedules, and their ticker while started.
    periodic: Arc<[PeriodicTask]>,
    ticker: Mutex<Option<Ticker>>,
    /// Whether `start` was ever called.
    started: AtomicBool,
    /// Whether a save for a served queue before `start` has been warned about.
    warned_unstarted: AtomicBool,
    /// Queues this client saved to without serving them, each warned about once.
    warned_unserved: Mutex<HashSet<&'static str>>,
}

impl Inner {
    fn last_handle_dropped(&self) {
        if let Some(ticker) = self.ticker.lock().ok().and_then(|mut t| t.take()) {
            ticker.stop_detached();
        }
        let running = self.running.lock().ok().and_then(|mut r| r.take());
        match running {
            Some(running) => {
                tracing::info!(
                    "the last backlite Client handle was dropped; stopping its dispatcher and \
                     handing running tasks back"
                );
                running.stop_detached(&self.runtime);
            }
            None if !self.started.load(Ordering::Relaxed) && !self.registry.is_empty() => {
                tracing::warn!(
                    queues = ?self.registry,
                    "a backlite client with processors was dropped without ever being \
                     started: it ran no task; call `client.start()` to run them"
                );
            }
            None => {}
        }
    }

    /// Warns about tasks that this client's processors will not run: its own queues' tasks
    /// while it is not started, and (once per queue) tasks of queues it does not serve. A
    /// client without processors only produces, for processes that serve the queues, so it
    /// says nothing.
    fn check_saved(&self, tasks: &[NewTask]) {
        if self.registry.is_empty() {
            return;
        }
        let mut previous = None;
        for task in tasks {
            if previous == Some(task.queue) {
                continue;
            }
            previous = Some(task.queue);
            let queue = task.queue;
            if self.registry.entry(queue).is_some() {
                if !self.started.load(Ordering::Relaxed)
                    && !self.warned_unstarted.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        queue,
                        "tasks were saved for a queue this client serves, but the client is \
                         not started: they wait until `client.start()` is called"
                    );
                }
            } else if self
                .warned_unserved
                .lock()
                .is_ok_and(|mut warned| warned.insert(queue))
            {
                tracing::warn!(
                    queue,
                    served = ?self.registry,
                    "tasks were saved for a queue this client does not serve: they wait for \
                     a client whose processors include one for this queue"
                );
            }
        }
    }
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
            priority: None,
            expires_at: None,
        }
        .add(task)
    }

    /// Where the task `id` is. Completed tasks are found only while retained.
    pub async fn status(&self, id: &TaskId) -> Result<TaskStatus> {
        self.inner.driver.task_status(*id).await
    }

    /// Task counts per queue, for every queue in the database.
    pub async fn stats(&self) -> Result<Vec<QueueStats>> {
        self.inner.driver.queue_stats(self.now()).await
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
        self.inner.started.store(true, Ordering::Relaxed);
        let _enter = self.inner.runtime.enter();
        *running = Some(dispatcher::start(self.internal()));
        let ticker = Ticker::start(self.internal(), self.inner.periodic.clone());
        if let Ok(mut slot) = self.inner.ticker.lock() {
            *slot = ticker;
        }
    }

    /// Stops gracefully: no new task starts, and running tasks get up to `timeout` to finish.
    /// Returns whether all of them did.
    ///
    /// Tasks that were still running at the timeout are dropped at their next `.await` and
    /// returned to the pending state, attempt not counted, so the next client to start runs
    /// them again. Tasks that had not started stay pending. Dropping the application's last
    /// handle on a started client stops it as `stop(Duration::ZERO)` would, without waiting
    /// (see [`Client`]). A crash, or a runtime shut down before that stop ends, leaves its
    /// running tasks claimed until `release_after` has passed; then another client runs them
    /// again.
    pub async fn stop(&self, timeout: Duration) -> bool {
        let ticker = self.inner.ticker.lock().ok().and_then(|mut t| t.take());
        if let Some(ticker) = ticker {
            ticker.stop().await;
        }
        let running = self.inner.running.lock().ok().and_then(|mut r| r.take());
        match running {
            Some(running) => running.stop(timeout).await,
            None => true,
        }
    }

    /// A handle for the client's own tasks (dispatcher, workers, contexts): the same client,
    /// but it does not keep it running once the application has dropped its handles.
    pub(crate) fn internal(&self) -> Client {
        Client {
            inner: self.inner.clone(),
            handle: None,
        }
    }

    /// "Now" for task timing, from the client's clock.
    pub(crate) fn now(&self) -> Millis {
        self.inner.clock.now()
    }

    /// The time to give the driver: `None`, the storage's own clock, unless a test controls
    /// this client's clock.
    pub(crate) fn test_now(&self) -> Option<Millis> {
        self.clock().is_controlled().then(|| self.now())
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.inner.clock
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
    #[cfg(feature = "postgres")]
    save_in_wakeup: crate::SaveInWakeup,
    workers: usize,
    release_after: Duration,
    cleanup_interval: Duration,
    busy_timeout: Duration,
    synchronous: Synchronous,
    registry: Registry,
    states: StateMap,
    /// The type of a second `state(..)` value of one type, reported by `build()`.
    duplicate_state: Option<&'static str>,
    clock: Clock,
    hooks: Hooks,
    periodic: Vec<PeriodicTask>,
    /// The first periodic task that could not be serialized, reported by `build()`.
    periodic_error: Option<Error>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            database: None,
            pool_size: 10,
            schema: None,
            poll_interval: None,
            #[cfg(feature = "postgres")]
            save_in_wakeup: crate::SaveInWakeup::default(),
            workers: 10,
            release_after: Duration::from_secs(30),
            cleanup_interval: Duration::from_secs(3600),
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Normal,
            registry: Registry::default(),
            states: StateMap::default(),
            duplicate_state: None,
            clock: Clock::default(),
            hooks: Hooks::default(),
            periodic: Vec::new(),
            periodic_error: None,
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

    /// PostgreSQL: how tasks added with `save_in` wake the workers once the application's
    /// transaction commits (default [`SaveInWakeup::InTransaction`](crate::SaveInWakeup)).
    #[cfg(feature = "postgres")]
    pub fn save_in_wakeup(mut self, wakeup: crate::SaveInWakeup) -> Self {
        self.save_in_wakeup = wakeup;
        self
    }

    /// How many tasks run at once (at least 1; default 10).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The lease of a claim (default 30 seconds, at least 100 ms): a started client renews
    /// the leases of the tasks it holds every third of this, so a task runs as long as it
    /// needs while its process lives. A process that dies or freezes stops renewing; once
    /// this has passed since its last renewal its tasks are run again elsewhere, and whatever
    /// it reports about them later is refused. Shorter: a dead process's tasks wait less,
    /// and each client writes its renewal more often. Processes on one database may use
    /// different values: each claim keeps the lease of the client that holds it.
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

    /// Application state for the processors: a database pool, an HTTP client, settings.
    /// Processors take it as a [`State<T>`](crate::State) argument, which clones it for each
    /// attempt, or read it with [`Context::state`](crate::Context::state). Call once per type,
    /// for any number of types; values are found by type, so a second value of one type is an
    /// error from [`build`](Self::build) (wrap each in a type of its own instead).
    ///
    /// ```no_run
    /// # use backlite::{Client, processors};
    /// # async fn run() -> backlite::Result<()> {
    /// #[derive(Clone)]
    /// struct Settings { sender: String }
    ///
    /// let client = Client::builder()
    ///     .database("data.db")
    ///     .state(Settings { sender: "shop@example.com".into() })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        if let Err(name) = self.states.insert(value) {
            self.duplicate_state.get_or_insert(name);
        }
        self
    }

    /// Calls `hook` with every [`TaskEvent`]: each attempt's start and outcome, and stuck
    /// tasks released. It runs on the worker, before the outcome is recorded, so keep it
    /// quick (hand slow work to a channel); a panic in it is logged and ignored. Hooks given
    /// by several calls all run, in that order.
    pub fn on_event(mut self, hook: impl Fn(&TaskEvent<'_>) + Send + Sync + 'static) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Reads the time for task timing from `clock` instead of the wall clock: tasks
    /// scheduled for later, and retries after a backoff, become due when the test advances
    /// it. See [`testing`](crate::testing).
    #[cfg(feature = "testing")]
    pub fn test_clock(mut self, clock: crate::testing::TestClock) -> Self {
        self.clock = Clock::controlled(clock);
        self
    }

    /// Checks the settings, opens (or creates) the database and applies its migrations.
    /// Fails with [`Error::Config`] when a processor takes a [`State<T>`](crate::State) that
    /// [`state`](Self::state) did not receive.
    pub async fn build(mut self) -> Result<Client> {
        let database = match self.database.clone() {
            None => {
                return Err(Error::Config(
                    "no database path: call `.database(..)`".into(),
                ));
            }
            // An unset environment variable, most often; SQLite would open a temporary
            // database that vanishes with the client, taking every saved task with it.
            Some(Database::Sqlite(path)) if path.is_empty() => {
                return Err(Error::Config(
                    "the database path is empty; use `\":memory:\"` for a database that lives \
                     only as long as the client"
                        .into(),
                ));
            }
            Some(database) => database,
        };
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
                    save_in_wakeup: self.save_in_wakeup,
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
        self.clock.attach(&wake);
        crate::metrics::describe();
        let inner = Arc::new(Inner {
            driver,
            target,
            registry: self.registry,
            states: self.states,
            settings: Settings {
                workers: self.workers,
                release_after: self.release_after,
                cleanup_interval: self.cleanup_interval,
            },
            wake,
            clock: self.clock,
            hooks: self.hooks,
            runtime,
            running: Mutex::new(None),
            periodic: self.periodic.into(),
            ticker: Mutex::new(None),
            started: AtomicBool::new(false),
            warned_unstarted: AtomicBool::new(false),
            warned_unserved: Mutex::new(HashSet::new()),
        });
        Ok(Client {
            handle: Some(Arc::new(UserHandle(inner.clone()))),
            inner,
        })
    }

    /// Enqueues `task` at every tick of `schedule`, from the moment the client is started:
    /// once per tick across every process on the database, whichever of them are running.
    /// The schedule is stored under the task's queue (and the schedule's
    /// [`name`](Schedule::name)), with its next tick, so ticks survive restarts; those missed
    /// while no process ran follow the schedule's [`CatchUp`](crate::CatchUp) policy. Each
    /// tick's task is a copy of `task`, with the tick in its id
    /// ([`TaskId::timestamp`](crate::TaskId::timestamp)).
    ///
    /// A task type can carry its own schedule instead, as `#[queue(name = "..",
    /// periodic(every = "5m"))]` or `periodic(cron = "0 */5 * * * *")` on a type that
    /// implements `Default` (the cron expression is checked at compile time): a client whose
    /// processors include that queue's enqueues `T::default()` on it, as this method would.
    ///
    /// A schedule whose definition changed since it was stored (another interval or cron
    /// expression) is stored anew when a client that defines it so starts: its next tick is
    /// recomputed from the new definition, and processes that still define the old one stop
    /// enqueueing it.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use backlite::{Client, Schedule, Task};
    /// #[derive(Task, serde::Serialize, serde::Deserialize, Clone)]
    /// #[queue(name = "reports")]
    /// struct Report;
    ///
    /// # async fn run() -> backlite::Result<()> {
    /// let client = Client::builder()
    ///     .database("app.db")
    ///     .periodic(Schedule::every(Duration::from_secs(300)), Report)
    ///     .periodic(Schedule::cron("0 0 6 * * *")?.name("daily"), Report)
    ///     .build()
    ///     .await?;
    /// client.start();
    /// # Ok(()) }
    /// ```
    pub fn periodic<T: Task + Clone>(mut self, schedule: Schedule, task: T) -> Self {
        let queue = T::CONFIG.name();
        match serde_json::to_vec(&task) {
            Ok(payload) => self.periodic.push(PeriodicTask::new(
                schedule,
                queue,
                T::CONFIG.priority(),
                payload,
            )),
            Err(source) => {
                self.periodic_error
                    .get_or_insert(Error::Serialize { queue, source });
            }
        }
        self
    }

    fn validate(&mut self) -> Result<()> {
        if let Some(error) = self.periodic_error.take() {
            return Err(error);
        }
        let declared: Vec<_> = self.registry.periodic().collect();
        for (queue, spec) in declared {
            let priority = self.registry.config(queue).map_or(0, |c| c.priority());
            self.periodic
                .push(PeriodicTask::from_attribute(queue, priority, spec)?);
        }
        let mut names = HashSet::new();
        for task in &self.periodic {
            task.schedule.check().map_err(Error::Config)?;
            if !names.insert(task.name.as_str()) {
                return Err(Error::Config(format!(
                    "two periodic schedules are named `{}`: give one a `.name(..)` of its own",
                    task.name
                )));
            }
        }
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
        if self.cleanup_interval.is_zero() {
            return Err(Error::Config(
                "cleanup_interval must be greater than zero".into(),
            ));
        }
        // Renewed every third of it: shorter, and one slow write would cost a live process
        // its tasks.
        if self.release_after < MIN_RELEASE_AFTER {
            return Err(Error::Config(format!(
                "release_after ({:?}) must be at least {MIN_RELEASE_AFTER:?}",
                self.release_after
            )));
        }
        self.registry.validate().map_err(Error::Config)?;
        if let Some(name) = self.duplicate_state {
            return Err(Error::Config(format!(
                "`state(..)` received two values of type `{name}`; state is found by type, so \
                 wrap each value in a type of its own"
            )));
        }
        let missing = self
            .registry
            .states()
            .find(|(_, _, ty)| !self.states.contains(ty));
        if let Some((processor, queue, ty)) = missing {
            return Err(Error::Config(format!(
                "processor `{processor}` (queue `{queue}`) takes `State<{}>`, but the builder \
                 received no `{0}`: call `.state(..)` with one",
                ty.name()
            )));
        }
        Ok(())
    }
}

/// The shortest `release_after` accepted.
const MIN_RELEASE_AFTER: Duration = Duration::from_millis(100);

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
    /// Overrides each queue's default priority for the whole batch.
    priority: Option<i16>,
    expires_at: Option<SystemTime>,
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
                priority: T::CONFIG.priority(),
                expires_at: None,
                unique_key: None,
                unique_for: None,
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
        self.run_at = Some(self.client.clock().system_now() + wait);
        self
    }

    /// Sets the priority of every task of the batch, in place of its queue's default
    /// (`#[queue(priority = ..)]`): among the due tasks of a queue, higher runs first, then
    /// the earlier due, then the earlier added. Like [`at`](AddTasks::at), it applies to the
    /// whole batch, whichever tasks were added before or after it.
    ///
    /// ```no_run
    /// # use backlite::{Client, Task};
    /// # #[derive(Task, serde::Serialize, serde::Deserialize)]
    /// # #[queue(name = "emails")]
    /// # struct Email { to: String }
    /// # async fn f(client: &Client) -> backlite::Result<()> {
    /// let email = Email { to: "ceo@example.com".into() };
    /// client.add(email).priority(9).save().await?;
    /// # Ok(()) }
    /// ```
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Gives up on the batch's tasks that have not started `ttl` after this call: a task
    /// still waiting then (for its first attempt or a retry) never runs, and ends as failed
    /// with the error `"expired"`, retained as its queue keeps failed tasks.
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.expires_at = Some(self.client.clock().system_now() + ttl);
        self
    }

    /// As [`expires_in`](AddTasks::expires_in), at a given time.
    pub fn expires_at(mut self, time: SystemTime) -> Self {
        self.expires_at = Some(time);
        self
    }

    fn prepare(mut self) -> Result<Vec<NewTask>> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let now = self.client.now();
        let run_at = self.run_at.map_or(now, to_millis);
        let expires_at = self.expires_at.map(to_millis);
        for task in &mut self.tasks {
            task.created_at = now;
            task.run_at = run_at;
            task.expires_at = expires_at;
            if let Some(priority) = self.priority {
                task.priority = priority;
            }
        }
        self.client.inner.check_saved(&self.tasks);
        Ok(self.tasks)
    }

    /// Stores the batch in one transaction and returns the new ids, in the order added.
    pub async fn save(self) -> Result<Vec<TaskId>> {
        let driver = self.client.inner.driver.clone();
        let tasks = self.prepare()?;
        let ids = tasks.iter().map(|t| t.id).collect();
        let added = crate::metrics::Added::count(&tasks);
        driver.task_insert_many(tasks).await?;
        added.record();
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
