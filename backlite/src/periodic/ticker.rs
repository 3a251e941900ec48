//! The ticker of a started client: it sleeps until the earliest next tick of its schedules,
//! then claims the due ticks, on the storage's time. Every process runs one; the claims'
//! compare-and-set makes one of them enqueue each tick.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Schedule, tick_id};
use crate::client::Client;
use crate::error::Result;
use crate::storage::periodic::{ScheduleDef, ScheduleRow, TickClaim, TickOutcome};
use crate::storage::{Millis, NewTask, wait_until};

/// A task to enqueue at every tick of its schedule.
#[derive(Debug, Clone)]
pub(crate) struct PeriodicTask {
    pub(crate) schedule: Schedule,
    pub(crate) queue: &'static str,
    /// The queue's default priority, which its ticks' tasks carry.
    pub(crate) priority: i16,
    /// The task, serialized once when it was given to the builder.
    pub(crate) payload: Vec<u8>,
    /// The stored schedule's name: its queue, and its own name when given.
    pub(crate) name: String,
    pub(crate) definition: String,
}

impl PeriodicTask {
    pub(crate) fn new(
        schedule: Schedule,
        queue: &'static str,
        priority: i16,
        payload: Vec<u8>,
    ) -> PeriodicTask {
        PeriodicTask {
            name: schedule.stored_name(queue),
            definition: schedule.definition(),
            schedule,
            queue,
            priority,
            payload,
        }
    }

    /// The task of a `#[queue(.., periodic(..))]`: its `Default` value, on its schedule.
    pub(crate) fn from_attribute(
        queue: &'static str,
        priority: i16,
        spec: crate::__private::PeriodicSpec,
    ) -> Result<PeriodicTask> {
        let schedule = match spec.timing {
            crate::__private::PeriodicTiming::EveryMillis(ms) => {
                Schedule::every(Duration::from_millis(ms))
            }
            crate::__private::PeriodicTiming::Cron(expression) => Schedule::cron(expression)?,
        };
        let payload =
            (spec.payload)().map_err(|source| crate::Error::Serialize { queue, source })?;
        Ok(PeriodicTask::new(schedule, queue, priority, payload))
    }
}

/// The longest sleep between two looks at the stored schedules: a schedule changed by
/// another process's deploy, or deleted, is seen within this long.
const RECHECK: Duration = Duration::from_secs(60);

/// The pause after a failed look at the schedules, before the next.
const RETRY: Duration = Duration::from_secs(1);

/// A running ticker.
pub(crate) struct Ticker {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Ticker {
    /// Starts the ticker of a client with schedules; `None` without any.
    pub(crate) fn start(client: Client, tasks: Arc<[PeriodicTask]>) -> Option<Ticker> {
        if tasks.is_empty() {
            return None;
        }
        let stop = CancellationToken::new();
        let handle = tokio::spawn(run(client, tasks, stop.clone()));
        Some(Ticker { stop, handle })
    }

    /// Stops the ticker and waits for a claim it has begun to end.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "backlite periodic ticker ended abnormally");
        }
    }

    /// Stops the ticker without waiting.
    pub(crate) fn stop_detached(self) {
        self.stop.cancel();
    }
}

async fn run(client: Client, tasks: Arc<[PeriodicTask]>, stop: CancellationToken) {
    // A test's clock wakes the ticker when it moves; the wall clock needs no wake-up.
    let wake = Arc::new(Notify::new());
    client.clock().attach(&wake);
    let mut seen = Seen::default();
    tracing::info!(
        schedules = ?tasks.iter().map(|t| &t.name).collect::<Vec<_>>(),
        "backlite periodic ticker started"
    );
    loop {
        let wait = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            round = round(&client, &tasks, &mut seen) => match round {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "periodic schedules could not be checked; will retry");
                    RETRY
                }
            },
        };
        let wait = if client.clock().is_controlled() {
            RECHECK
        } else {
            wait.min(RECHECK)
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// What the ticker remembers between rounds.
#[derive(Default)]
struct Seen {
    /// The first round stored this process's definitions.
    registered: bool,
    /// Schedules found defined differently by another process, warned about once.
    redefined: HashSet<String>,
}

/// Reads the schedules, stores those that are missing (and, at the first round, those this
/// process defines differently), claims the due ticks, and returns the wait until the next.
async fn round(client: &Client, tasks: &[PeriodicTask], seen: &mut Seen) -> Result<Duration> {
    let driver = client.driver();
    let names = tasks.iter().map(|t| t.name.clone()).collect();
    let listed = driver.schedule_list(names, client.test_now()).await?;
    let now = listed.now;
    let mut rows: HashMap<String, ScheduleRow> = listed
        .rows
        .into_iter()
        .map(|row| (row.name.clone(), row))
        .collect();
    let mut defs = Vec::new();
    for task in tasks {
        let stored = rows.get(&task.name);
        let changed = stored.is_some_and(|row| row.definition != task.definition);
        if stored.is_none() || (changed && !seen.registered) {
            if let Some(row) = stored.filter(|_| changed) {
                tracing::info!(
                    queue = task.queue,
                    schedule = %task.name,
                    stored = %row.definition,
                    defined = %task.definition,
                    "periodic schedule changed: its next tick is recomputed from the new one"
                );
            }
            let Some(next_run_at) = task.schedule.next_after(now) else {
                tracing::warn!(
                    queue = task.queue,
                    schedule = %task.name,
                    "periodic schedule names no time to come; nothing is enqueued"
                );
                continue;
            };
            defs.push(ScheduleDef {
                name: task.name.clone(),
                definition: task.definition.clone(),
                next_run_at,
            });
        }
    }
    if !defs.is_empty() {
        for row in driver.schedule_register(defs).await? {
            rows.insert(row.name.clone(), row);
        }
    }
    seen.registered = true;
    let mut earliest: Option<Millis> = None;
    for task in tasks {
        let Some(row) = rows.get(&task.name) else {
            continue;
        };
        if row.definition != task.definition {
            // A process started later stored another definition (a deploy under way): the
            // processes that define it so tick it.
            if !seen.redefined.insert(task.name.clone()) {
                continue;
            }
            tracing::warn!(
                queue = task.queue,
                schedule = %task.name,
                stored = %row.definition,
                defined = %task.definition,
                "periodic schedule is defined differently by another process; leaving its \
                 ticks to the processes that define it as stored"
            );
            continue;
        }
        let plan = match task.schedule.plan(row.next_run_at, now) {
            _ if row.next_run_at > now => None,
            Some(plan) => Some(plan),
            None => {
                // Due, with no tick to move on to: looking again would find the same.
                tracing::warn!(
                    queue = task.queue,
                    schedule = %task.name,
                    "periodic schedule names no time to come; nothing is enqueued"
                );
                continue;
            }
        };
        let next = match plan {
            None => row.next_run_at,
            Some(plan) => {
                let ticks = plan.ticks.clone();
                let tasks = ticks
                    .iter()
                    .map(|&tick| NewTask {
                        id: tick_id(&task.name, tick),
                        queue: task.queue,
                        payload: task.payload.clone(),
                        created_at: now,
                        run_at: tick,
                        priority: task.priority,
                        expires_at: None,
                        unique_key: None,
                        unique_for: None,
                    })
                    .collect();
                let claim = TickClaim {
                    name: task.name.clone(),
                    expected: row.next_run_at,
                    next_run_at: plan.next_run_at,
                    tasks,
                };
                match driver.schedule_tick(claim).await? {
                    TickOutcome::Claimed { inserted } => {
                        tracing::debug!(
                            queue = task.queue,
                            schedule = %task.name,
                            ?ticks,
                            inserted,
                            next_run_at = plan.next_run_at,
                            "periodic ticks enqueued"
                        );
                        if plan.dropped > 0 {
                            tracing::info!(
                                queue = task.queue,
                                schedule = %task.name,
                                at_least = plan.dropped,
                                policy = ?task.schedule.catch_up,
                                "missed periodic ticks dropped by the catch-up policy"
                            );
                        }
                        plan.next_run_at
                    }
                    // Another process claimed them: look again at once for where it left
                    // the schedule.
                    TickOutcome::Lost => return Ok(Duration::ZERO),
                }
            }
        };
        earliest = Some(earliest.map_or(next, |e| e.min(next)));
    }
    // A millisecond more: a wake-up that comes before the tick on the storage's clock finds
    // nothing due and costs a second look.
    Ok(earliest.map_or(RECHECK, |due| {
        wait_until(due, now) + Duration::from_millis(1)
    }))
}
