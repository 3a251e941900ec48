//! The dispatcher: claims due tasks, runs them on the worker pool, records their outcomes.
//!
//! It never polls the tasks table. It claims while there is work and free workers; when a
//! claim comes back short, it sleeps until the earliest due task (one indexed `MIN` per
//! queue), a local insert, or a commit by another connection wakes it.

mod complete;
mod concurrency;
mod execute;
mod lease;

#[cfg_attr(
    not(feature = "testing"),
    allow(unused_imports, reason = "`drain` runs attempts too")
)]
pub(crate) use execute::attempt;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::Client;
use crate::maintenance;
use crate::storage::{ClaimToken, ClaimedTask, Completion};
use crate::task::TaskId;

use concurrency::QueueLimits;
use lease::{Fate, Leases};

/// The handles of a started client, kept until `stop`.
pub(crate) struct Running {
    /// Cancelled by `stop`: no more claims.
    stop: CancellationToken,
    dispatcher: JoinHandle<Arc<Shared>>,
    maintenance: JoinHandle<()>,
    completer: complete::Completer,
    leases: Arc<Leases>,
    /// Renews the leases until the last outcome is stored; then `keeper_stop` ends it.
    keeper: JoinHandle<()>,
    keeper_stop: CancellationToken,
    /// To remove the process's row at the end of the stop (not a `Client`, which would keep
    /// the client that holds this alive).
    driver: Arc<dyn crate::storage::Driver>,
}

/// State the dispatcher shares with its workers.
pub(crate) struct Shared {
    client: Client,
    slots: Arc<Semaphore>,
    /// Every worker task, so that `stop` can wait for them to end; their outcomes are then
    /// with the completer, which `stop` flushes.
    workers: TaskTracker,
    /// Tasks whose processor runs now, for a stop that times out.
    running: Mutex<HashMap<TaskId, (AbortHandle, ClaimToken)>>,
    /// Cancelled when the stop times out: each processor's `Context` reports cancellation.
    shutdown: CancellationToken,
    finished: AtomicU64,
    /// Where workers leave their outcomes, for the completer to commit in batches.
    completions: UnboundedSender<Completion>,
    /// The claims this client holds, renewed by the keeper.
    leases: Arc<Leases>,
    /// What each queue with a concurrency limit holds here.
    limits: QueueLimits,
}

pub(crate) fn start(client: Client) -> Running {
    let stop = CancellationToken::new();
    let workers = client.inner.settings.workers;
    let shutdown = CancellationToken::new();
    let leases = Arc::new(Leases::new());
    let (completions, completer) =
        complete::spawn(client.clone(), shutdown.clone(), leases.clone());
    let keeper_stop = CancellationToken::new();
    let keeper = tokio::spawn(lease::keep(
        client.clone(),
        leases.clone(),
        keeper_stop.clone(),
    ));
    let shared = Arc::new(Shared {
        client: client.clone(),
        slots: Arc::new(Semaphore::new(workers)),
        workers: TaskTracker::new(),
        running: Mutex::new(HashMap::new()),
        shutdown,
        finished: AtomicU64::new(0),
        completions,
        leases: leases.clone(),
        limits: QueueLimits::new(&client.inner.registry),
    });
    let maintenance = tokio::spawn(maintenance::run(client.clone(), stop.clone()));
    let dispatcher = tokio::spawn(dispatch(shared, stop.clone()));
    tracing::info!(
        workers,
        queues = ?client.inner.registry,
        process = %leases.process,
        "backlite dispatcher started"
    );
    Running {
        stop,
        dispatcher,
        maintenance,
        completer,
        leases,
        keeper,
        keeper_stop,
        driver: client.inner.driver.clone(),
    }
}

impl Running {
    /// The stop of a client whose last handle was dropped: claims end now, and a task of the
    /// client's runtime does the rest of `stop(Duration::ZERO)`, since a drop cannot wait.
    pub(crate) fn stop_detached(self, runtime: &tokio::runtime::Handle) {
        self.stop.cancel();
        runtime.spawn(async move {
            self.stop(Duration::ZERO).await;
        });
    }

    /// Asks a task this client holds (running, or claimed and waiting for a worker) to
    /// cancel; returns whether it holds it.
    pub(crate) fn cancel_here(&self, id: TaskId) -> bool {
        self.leases.request_cancel(id)
    }

    pub(crate) async fn stop(self, timeout: Duration) -> bool {
        let (keeper, keeper_stop, leases) = (self.keeper, self.keeper_stop, self.leases.clone());
        let (driver, process) = (self.driver, leases.process);
        let all_done = Running::stop_dispatching(
            self.stop,
            self.dispatcher,
            self.maintenance,
            self.completer,
            timeout,
        )
        .await;
        // Every outcome is stored: nothing is left to renew, and the process leaves.
        keeper_stop.cancel();
        let _ = keeper.await;
        if let Err(e) = driver.process_remove(process).await {
            tracing::warn!(error = %e, %process, "backlite could not remove its process row; others drop it after release_after");
        }
        all_done
    }

    async fn stop_dispatching(
        stop: CancellationToken,
        dispatcher: JoinHandle<Arc<Shared>>,
        maintenance: JoinHandle<()>,
        completer: complete::Completer,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        stop.cancel();
        let _ = maintenance.await;
        let shared = match dispatcher.await {
            Ok(shared) => shared,
            Err(e) => {
                tracing::error!(error = %e, "backlite dispatcher ended abnormally");
                completer.finish().await;
                return false;
            }
        };
        shared.workers.close();
        if tokio::time::timeout_at(deadline, shared.workers.wait())
            .await
            .is_ok()
        {
            completer.finish().await;
            tracing::info!("backlite stopped; every running task finished");
            return true;
        }
        // Hard stop of what is left: cancel, drop, and hand the tasks back.
        shared.shutdown.cancel();
        let abandoned: Vec<(TaskId, ClaimToken)> = match shared.running.lock() {
            Ok(mut running) => running
                .drain()
                .map(|(id, (abort, token))| {
                    abort.abort();
                    (id, token)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        shared.workers.wait().await;
        completer.finish().await;
        shared.leases.release(abandoned.iter().copied());
        let count = abandoned.len();
        if let Err(e) = shared.client.driver().task_unclaim_many(abandoned).await {
            tracing::error!(error = %e, count, "could not hand back abandoned tasks; they run again after release_after");
        }
        tracing::warn!(
            abandoned = count,
            "backlite stopped before every running task finished"
        );
        false
    }
}

/// Tasks claimed ahead of free workers are bounded by what the pool finished in this much
/// time: enough to keep short tasks flowing between claims, too little to hoard slow tasks
/// that another process could run. The buffer is topped up at half of it, so a busy pool
/// claims about half a horizon of tasks at once; below ~10 ms of work per claim, the claim's
/// fixed cost and its commit show in the writer's time per task.
const PREFETCH_HORIZON: Duration = Duration::from_millis(20);
/// Finished tasks enough to estimate the pool's pace before a whole horizon has passed.
const PACE_SAMPLE: u64 = 32;

/// When a claim came back short while a task is due already, other claimers hold the rest (a
/// shared database's `SKIP LOCKED`): wait for a wake-up, or this long and doubling, rather than
/// claim again at once.
const HELD_ELSEWHERE_PAUSE: Duration = Duration::from_millis(5);
const HELD_ELSEWHERE_PAUSE_MAX: Duration = Duration::from_millis(500);

/// After a failed claim, the dispatcher waits this long, doubling up to the maximum while
/// claims keep failing, or until a wake-up.
const CLAIM_ERROR_PAUSE: Duration = Duration::from_millis(50);
const CLAIM_ERROR_PAUSE_MAX: Duration = Duration::from_secs(5);

async fn dispatch(shared: Arc<Shared>, stop: CancellationToken) -> Arc<Shared> {
    let client = shared.client.clone();
    let wake = client.inner.wake.clone();
    let mut buffer: VecDeque<ClaimedTask> = VecDeque::new();
    // The last claim came back short: nothing more is due until a wake-up or `next_due`.
    let mut drained = false;
    // When the next task is due, once asked after a short claim.
    let mut next_due: Option<Option<tokio::time::Instant>> = None;
    let mut held_pause = Duration::ZERO;
    let lease = client.inner.settings.release_after;
    let prefetch_max = client.driver().prefetch_max();
    let mut error_pause = Duration::ZERO;
    let mut prefetch = 0usize;
    let mut window = (Instant::now(), 0u64);

    // Before the first claim, so that only other processes' claims are counted.
    maintenance::report_claimed(&client).await;
    if client.inner.registry.is_empty() {
        stop.cancelled().await;
    }
    while !stop.is_cancelled() {
        while !buffer.is_empty() {
            let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
                break;
            };
            if let Some(task) = buffer.pop_front() {
                match shared.leases.fate(task.id, task.token) {
                    Fate::Run(cancel) => execute::spawn(&shared, task, slot, cancel),
                    Fate::Cancel => end_unstarted(&shared, &task),
                    Fate::Lost => shared.limits.release(&task.queue),
                }
            }
        }

        // Re-estimate the pool's pace every horizon, or sooner once enough tasks finished
        // to measure it: a burst of short tasks then ramps up within a few claims instead of
        // a horizon of claims sized for an idle pool.
        let elapsed = window.0.elapsed();
        let finished = shared.finished.load(Ordering::Relaxed);
        if elapsed >= PREFETCH_HORIZON || finished - window.1 >= PACE_SAMPLE {
            let per_horizon = (finished - window.1) as f64 * PREFETCH_HORIZON.as_secs_f64()
                / elapsed.as_secs_f64();
            prefetch = (per_horizon as usize).min(prefetch_max);
            window = (Instant::now(), finished);
        }

        let free = shared.slots.available_permits();
        let want = (free + prefetch).saturating_sub(buffer.len());
        // Top the buffer up only once half of the prefetch is used: a claim costs about the
        // same for 5 tasks as for 500, so claiming again each time a worker frees would make
        // the claims, not the tasks, set the pool's pace.
        if want > 0 && buffer.len() <= prefetch / 2 && !drained {
            match client
                .driver()
                .task_claim_within(
                    Some(shared.leases.process),
                    want,
                    shared.limits.room(),
                    lease,
                    client.test_now(),
                )
                .await
            {
                Ok(tasks) => {
                    for task in &tasks {
                        shared.leases.hold(task, &shared.shutdown);
                        shared.limits.hold(&task.queue);
                    }
                    error_pause = Duration::ZERO;
                    if !tasks.is_empty() {
                        held_pause = Duration::ZERO;
                    }
                    drained = tasks.len() < want;
                    let got_some = !tasks.is_empty();
                    buffer.extend(tasks);
                    if got_some {
                        continue;
                    }
                }
                Err(e) => {
                    error_pause = (error_pause * 2).clamp(CLAIM_ERROR_PAUSE, CLAIM_ERROR_PAUSE_MAX);
                    tracing::warn!(error = %e, retry_in = ?error_pause, "backlite claim failed");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(error_pause) => continue,
                        // A commit elsewhere, or the listener back on a restarted server: the
                        // database answers again, so claim now rather than at the end of a
                        // pause that grew while it was away (not sooner than the first
                        // pause, so that a stream of wake-ups cannot turn a lasting failure
                        // into a busy loop).
                        _ = wake.notified() => {
                            drained = false;
                            next_due = None;
                            tokio::select! {
                                _ = stop.cancelled() => break,
                                _ = tokio::time::sleep(CLAIM_ERROR_PAUSE) => continue,
                            }
                        }
                    }
                }
            }
        }

        if drained && buffer.is_empty() && next_due.is_none() {
            let wait = match client
                .driver()
                .task_next_due_except(shared.limits.full(), client.test_now())
                .await
            {
                // A controlled clock makes tasks due only when a test advances it, and that
                // wakes the dispatcher: a timer would fire early, or spin under a paused
                // runtime.
                Ok(Some(wait)) if !wait.is_zero() && client.clock().is_controlled() => None,
                Ok(Some(wait)) if wait.is_zero() => {
                    // Due now, yet the claim came back short: held by other claimers.
                    held_pause =
                        (held_pause * 2).clamp(HELD_ELSEWHERE_PAUSE, HELD_ELSEWHERE_PAUSE_MAX);
                    Some(held_pause)
                }
                Ok(wait) => {
                    held_pause = Duration::ZERO;
                    wait
                }
                Err(e) => {
                    tracing::warn!(error = %e, "backlite could not read the next due time");
                    Some(Duration::from_secs(1))
                }
            };
            next_due = Some(wait.map(|wait| tokio::time::Instant::now() + wait));
        }
        let sleep_until = match next_due {
            Some(Some(due)) if drained && buffer.is_empty() => Some(due),
            _ => None,
        };
        // A freed worker matters when tasks wait in the buffer, or when the pool was full
        // and more may be claimable.
        let want_slot = !buffer.is_empty() || (shared.slots.available_permits() == 0 && !drained);

        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = wake.notified() => {
                drained = false;
                next_due = None;
            }
            slot = shared.slots.clone().acquire_owned(), if want_slot => drop(slot),
            // A renewal lost claims or found cancels: drop or end those waiting here.
            _ = shared.leases.changed.notified() => sweep(&shared, &mut buffer),
            // A queue at its concurrency limit has room again: its due tasks can be claimed.
            _ = shared.limits.freed.notified() => {
                drained = false;
                next_due = None;
            }
            _ = tokio::time::sleep_until(sleep_until.unwrap_or_else(tokio::time::Instant::now)), if sleep_until.is_some() => {
                drained = false;
                next_due = None;
            }
        }
    }

    // Tasks claimed but not started go back to pending, attempts untouched.
    if !buffer.is_empty() {
        let unclaim: Vec<_> = buffer.iter().map(|t| (t.id, t.token)).collect();
        shared.leases.release(unclaim.iter().copied());
        let count = unclaim.len();
        if let Err(e) = client.driver().task_unclaim_many(unclaim).await {
            tracing::error!(error = %e, count, "could not hand back unstarted tasks; they run again after release_after");
        }
    }
    shared
}

/// Ends a claimed task that someone asked to cancel before it started: it never runs.
fn end_unstarted(shared: &Shared, task: &ClaimedTask) {
    shared.leases.finish(task.id, task.token);
    shared.limits.release(&task.queue);
    let completion = execute::cancelled(
        &shared.client,
        task,
        shared.client.now(),
        Duration::ZERO,
        crate::storage::CANCELLED_ERROR,
    );
    tracing::info!(task_id = %task.id, queue = %task.queue, "task cancelled before it started");
    if shared.completions.send(completion).is_err() {
        tracing::error!(task_id = %task.id, "could not record the task's cancel: the client has stopped");
    }
}

/// Drops the claimed tasks waiting for a worker whose claim was lost, and ends those asked
/// to cancel.
fn sweep(shared: &Shared, buffer: &mut VecDeque<ClaimedTask>) {
    buffer.retain(|task| match shared.leases.fate(task.id, task.token) {
        Fate::Run(_) => true,
        Fate::Cancel => {
            end_unstarted(shared, task);
            false
        }
        Fate::Lost => {
            shared.limits.release(&task.queue);
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use crate::{BoxError, Client, Context, Processor, QueueConfig, Task};

    #[derive(Serialize, Deserialize)]
    struct Idle;
    impl Task for Idle {
        const CONFIG: QueueConfig = QueueConfig::builder("idle").build();
    }
    struct RunIdle;
    impl Processor for RunIdle {
        type Task = Idle;
        async fn process(_: Context, _: Idle) -> Result<(), BoxError> {
            Ok(())
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Patient;
    impl Task for Patient {
        const CONFIG: QueueConfig = QueueConfig::builder("patient")
            .retention(crate::Retention {
                duration: None,
                only_failed: false,
                data: crate::RetainData::None,
            })
            .build();
    }
    struct RunPatient;
    impl Processor for RunPatient {
        type Task = Patient;
        async fn process(ctx: Context, _: Patient) -> Result<(), BoxError> {
            // Returns success once cancelled: the cancel decides the outcome all the same.
            ctx.cancelled().await;
            Ok(())
        }
    }

    /// The local side of a cancel: the running task's context fires at once, and the task
    /// ends cancelled whatever its processor returns; a task this client does not hold is
    /// not its to cancel.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_here_fires_the_context_and_ends_the_task_cancelled() {
        let registry = crate::__private::registry([crate::__private::entry::<RunPatient>()]);
        let client = Client::builder()
            .database(":memory:")
            .processors(registry)
            .build()
            .await
            .expect("build");
        assert!(!client.cancel_running_here(crate::TaskId::new()));
        client.start();
        let id = client.add(Patient).save().await.expect("save")[0];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // Held from just after its claim commits: until then it is not this client's.
        while !client.cancel_running_here(id) {
            assert!(tokio::time::Instant::now() < deadline, "never held");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while client.status(&id).await.expect("status") != crate::TaskStatus::Cancelled {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never ended cancelled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!client.cancel_running_here(id), "no longer held");
        assert!(client.stop(Duration::from_secs(5)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_client_does_not_read_the_tasks_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = crate::__private::registry([crate::__private::entry::<RunIdle>()]);
        let client = Client::builder()
            .database(dir.path().join("idle.db"))
            .processors(registry)
            .build()
            .await
            .expect("build");
        stays_idle_and_wakes(client).await;
    }

    /// On PostgreSQL the listener, not a poll, wakes it.
    #[cfg(feature = "postgres")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_postgres_client_does_not_query_the_tasks_table() {
        let Some(url) = crate::storage::postgres::test_url() else {
            return;
        };
        let registry = crate::__private::registry([crate::__private::entry::<RunIdle>()]);
        let client = Client::builder()
            .database(url)
            .schema(format!(
                "backlite_test_{}_idle",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ))
            .processors(registry)
            .build()
            .await
            .expect("build");
        stays_idle_and_wakes(client).await;
    }

    async fn stays_idle_and_wakes(client: Client) {
        client.start();
        client.add(Idle).save().await.expect("save");
        // Let it run the task and settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reads = || client.driver().table_reads();
        let settled = reads();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let idle_reads = reads() - settled;
        assert_eq!(
            idle_reads, 0,
            "an idle client read the tasks table {idle_reads} times"
        );
        // And it still wakes for new work.
        client.add(Idle).save().await.expect("save");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(reads() > settled);
        assert!(client.stop(Duration::from_secs(5)).await);
    }
}
