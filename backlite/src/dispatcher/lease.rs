//! Keeping what a started client claimed. Every third of `release_after`, one write renews the
//! lease of every task the client holds (running, or claimed ahead and waiting for a worker)
//! and heartbeats its row in the processes table. A live process thus keeps its tasks however
//! long they run; a frozen or dead one stops renewing, and its tasks are released once their
//! lease ends.
//!
//! What the renewal reports comes back here: a claim that moved on (the process was frozen
//! past its lease, and the task was taken by another) is lost, and its attempt's context
//! cancelled; a task someone asked to cancel has its context cancelled, and ends as cancelled
//! once its processor returns.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::storage::{ClaimToken, ClaimedTask, Millis, ProcessId, ProcessRecord, to_millis};
use crate::task::TaskId;

/// The claims a started client holds, by task.
pub(crate) struct Leases {
    pub(crate) process: ProcessId,
    held: Mutex<HashMap<TaskId, Held>>,
    /// Notified when tasks were lost or asked to cancel, so that the dispatcher looks at the
    /// ones it holds ahead of a free worker.
    pub(super) changed: Notify,
}

struct Held {
    token: ClaimToken,
    queue: String,
    /// The attempt's cancellation, what its `Context` reports.
    cancel: CancellationToken,
    cancel_requested: bool,
    /// The attempt ended and its outcome is on its way to the database: a loss now is the
    /// outcome's own commit racing the renewal, not worth a warning.
    finished: bool,
}

/// What to do with a claimed task that has not started.
pub(super) enum Fate {
    /// Run it, under this cancellation.
    Run(CancellationToken),
    /// Someone asked to cancel it: end it as cancelled without running it.
    Cancel,
    /// The claim is no longer this client's: drop it.
    Lost,
}

impl Leases {
    pub(super) fn new() -> Leases {
        Leases {
            process: ProcessId::new(),
            held: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Held>> {
        // A panic while holding the lock leaves the map as it was between two statements.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds a task just claimed; its attempt's cancellation is a child of `shutdown`.
    pub(super) fn hold(&self, task: &ClaimedTask, shutdown: &CancellationToken) {
        self.held().insert(
            task.id,
            Held {
                token: task.token,
                queue: task.queue.clone(),
                cancel: shutdown.child_token(),
                cancel_requested: false,
                finished: false,
            },
        );
    }

    /// What to do with a held task about to start.
    pub(super) fn fate(&self, id: TaskId) -> Fate {
        match self.held().get(&id) {
            None => Fate::Lost,
            Some(held) if held.cancel_requested => Fate::Cancel,
            Some(held) => Fate::Run(held.cancel.clone()),
        }
    }

    /// Marks an attempt ended; returns whether it was asked to cancel.
    pub(super) fn finish(&self, id: TaskId) -> bool {
        match self.held().get_mut(&id) {
            Some(held) => {
                held.finished = true;
                held.cancel_requested
            }
            None => false,
        }
    }

    /// Stops holding tasks: their outcome is stored, or they were handed back.
    pub(super) fn release(&self, ids: impl IntoIterator<Item = TaskId>) {
        let mut held = self.held();
        for id in ids {
            held.remove(&id);
        }
    }

    /// Asks a held task to cancel: its context reports it now, and it ends as cancelled.
    /// Returns whether this client holds the task.
    pub(crate) fn request_cancel(&self, id: TaskId) -> bool {
        let found = match self.held().get_mut(&id) {
            Some(held) => {
                held.cancel_requested = true;
                held.cancel.cancel();
                true
            }
            None => false,
        };
        if found {
            self.changed.notify_one();
        }
        found
    }

    /// A claim that moved on: forget it and cancel its attempt, whose outcome the database
    /// would refuse anyway. Returns the task's queue when this is news.
    fn lose(&self, id: TaskId) -> Option<String> {
        let held = self.held().remove(&id)?;
        held.cancel.cancel();
        (!held.finished).then_some(held.queue)
    }

    fn snapshot(&self) -> Vec<(TaskId, ClaimToken)> {
        self.held()
            .iter()
            .map(|(id, held)| (*id, held.token))
            .collect()
    }
}

/// How often the keeper renews: a third of the lease, so that a renewal that fails (a
/// database that does not answer for a moment) leaves time for the next one.
pub(super) fn renew_every(release_after: Duration) -> Duration {
    release_after / 3
}

/// Registers the process, then renews its leases until `stop`.
pub(super) async fn keep(client: Client, leases: std::sync::Arc<Leases>, stop: CancellationToken) {
    let lease = client.inner.settings.release_after;
    let mut tick = tokio::time::interval(renew_every(lease));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started_at = to_millis(client.clock().system_now());
    let mut registered = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !registered {
            registered = register(&client, &leases, started_at).await;
        }
        let held = leases.snapshot();
        let count = held.len();
        let renewal = match client
            .driver()
            .task_renew_leases(leases.process, held, lease, client.test_now())
            .await
        {
            Ok(renewal) => renewal,
            Err(e) => {
                tracing::warn!(error = %e, held = count, retry_in = ?renew_every(lease), "backlite could not renew its leases; will retry");
                continue;
            }
        };
        if !renewal.registered && registered {
            // Taken for dead while it was frozen, and its row deleted: it is back.
            registered = register(&client, &leases, started_at).await;
        }
        for id in &renewal.lost {
            if let Some(queue) = leases.lose(*id) {
                tracing::warn!(
                    task_id = %id,
                    queue,
                    "backlite lost a task's lease (this process did not renew it in time, and \
                     the task was released); its attempt is cancelled and its outcome will \
                     not be recorded"
                );
            }
        }
        for id in &renewal.cancel_requested {
            if leases.request_cancel(*id) {
                tracing::info!(task_id = %id, "a cancel was requested for a task running here");
            }
        }
        if !renewal.lost.is_empty() {
            leases.changed.notify_one();
        }
    }
}

/// Adds the process's row; returns whether it is there.
async fn register(client: &Client, leases: &Leases, started_at: Millis) -> bool {
    let record = ProcessRecord {
        id: leases.process,
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        pid: std::process::id(),
        queues: client.registry().queues().map(str::to_owned).collect(),
        workers: u32::try_from(client.inner.settings.workers).unwrap_or(u32::MAX),
        started_at,
        last_seen_at: 0,
    };
    match client
        .driver()
        .process_register(record, client.test_now())
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, process = %leases.process, "backlite could not register its process; will retry");
            false
        }
    }
}
