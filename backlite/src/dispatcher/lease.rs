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

/// The claims a started client holds, by task. Every change names the claim's token too: a
/// task this client lost and claimed again is two claims, and what ends the old one (its
/// attempt's outcome, its loss) must leave the new one alone.
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

/// How an attempt that returned ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// As its processor's result says.
    AsItReturned,
    /// Cancelled: someone asked, whatever the processor returned.
    Cancelled,
    /// Its claim was lost meanwhile: the database refuses its outcome, so it has none.
    Lost,
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
        let earlier = self.held().insert(
            task.id,
            Held {
                token: task.token,
                queue: task.queue.clone(),
                cancel: shutdown.child_token(),
                cancel_requested: false,
                finished: false,
            },
        );
        // An older claim of the same task, lost while this process was frozen, whose attempt
        // may still run: the new claim proves it lost.
        if let Some(earlier) = earlier.filter(|e| e.token != task.token) {
            earlier.cancel.cancel();
        }
    }

    /// What to do with a held task about to start.
    pub(super) fn fate(&self, id: TaskId, token: ClaimToken) -> Fate {
        match self.held().get(&id) {
            Some(held) if held.token != token => Fate::Lost,
            None => Fate::Lost,
            Some(held) if held.cancel_requested => Fate::Cancel,
            Some(held) => Fate::Run(held.cancel.clone()),
        }
    }

    /// Marks an attempt ended; says how.
    pub(super) fn finish(&self, id: TaskId, token: ClaimToken) -> Ending {
        match self.held().get_mut(&id) {
            Some(held) if held.token == token => {
                held.finished = true;
                match held.cancel_requested {
                    true => Ending::Cancelled,
                    false => Ending::AsItReturned,
                }
            }
            _ => Ending::Lost,
        }
    }

    /// Stops holding claims: their outcome is stored, or they were handed back.
    pub(super) fn release(&self, claims: impl IntoIterator<Item = (TaskId, ClaimToken)>) {
        let mut held = self.held();
        for (id, token) in claims {
            if held.get(&id).is_some_and(|h| h.token == token) {
                held.remove(&id);
            }
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
    fn lose(&self, id: TaskId, token: ClaimToken) -> Option<String> {
        let mut held = self.held();
        if held.get(&id).is_none_or(|h| h.token != token) {
            return None;
        }
        let lost = held.remove(&id)?;
        lost.cancel.cancel();
        (!lost.finished).then_some(lost.queue)
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
        let tokens: HashMap<TaskId, ClaimToken> = held.iter().copied().collect();
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
        crate::metrics::leases_renewed(renewal.renewed, renewal.lost.len() as u64);
        tracing::debug!(
            held = count,
            renewed = renewal.renewed,
            lost = renewal.lost.len(),
            cancel_requested = renewal.cancel_requested.len(),
            "backlite renewed its leases"
        );
        if !renewal.registered && registered {
            // Taken for dead while it was frozen, and its row deleted: it is back.
            registered = register(&client, &leases, started_at).await;
        }
        for id in &renewal.lost {
            let lost = tokens.get(id).and_then(|token| leases.lose(*id, *token));
            if let Some(queue) = lost {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(id: TaskId, token: i64) -> ClaimedTask {
        ClaimedTask {
            id,
            queue: "q".into(),
            payload: Vec::new(),
            attempts: 0,
            token: ClaimToken::fenced(token),
            run_at: 0,
        }
    }

    /// A task claimed ahead and asked to cancel before it starts is ended, not run.
    #[test]
    fn a_cancel_before_the_start_makes_the_task_end_unrun() {
        let (leases, shutdown) = (Leases::new(), CancellationToken::new());
        let id = TaskId::new();
        leases.hold(&claimed(id, 1), &shutdown);
        assert!(matches!(
            leases.fate(id, ClaimToken::fenced(1)),
            Fate::Run(_)
        ));
        assert!(leases.request_cancel(id));
        assert!(matches!(
            leases.fate(id, ClaimToken::fenced(1)),
            Fate::Cancel
        ));
        assert_eq!(leases.finish(id, ClaimToken::fenced(1)), Ending::Cancelled);
        assert!(!leases.request_cancel(TaskId::new()), "not held here");
    }

    /// A task lost and claimed again by the same client is two claims: the new one cancels
    /// the old attempt, and what ends the old one leaves the new one held.
    #[test]
    fn an_old_claim_of_a_task_claimed_again_leaves_the_new_one_alone() {
        let (leases, shutdown) = (Leases::new(), CancellationToken::new());
        let id = TaskId::new();
        leases.hold(&claimed(id, 1), &shutdown);
        let Fate::Run(old) = leases.fate(id, ClaimToken::fenced(1)) else {
            panic!("not runnable");
        };
        leases.hold(&claimed(id, 2), &shutdown);
        assert!(old.is_cancelled(), "the older attempt is told");
        assert!(matches!(leases.fate(id, ClaimToken::fenced(1)), Fate::Lost));
        assert_eq!(leases.finish(id, ClaimToken::fenced(1)), Ending::Lost);
        leases.release([(id, ClaimToken::fenced(1))]);
        assert_eq!(leases.lose(id, ClaimToken::fenced(1)), None);
        assert_eq!(leases.snapshot(), [(id, ClaimToken::fenced(2))]);
        // The new claim's loss is news, once.
        assert_eq!(leases.lose(id, ClaimToken::fenced(2)).as_deref(), Some("q"));
        assert!(leases.snapshot().is_empty());
    }

    /// A loss found after the attempt ended (its outcome's commit racing the renewal) is no
    /// news: it is dropped without a warning.
    #[test]
    fn a_loss_after_the_attempt_ended_is_quiet() {
        let (leases, shutdown) = (Leases::new(), CancellationToken::new());
        let id = TaskId::new();
        leases.hold(&claimed(id, 3), &shutdown);
        assert_eq!(
            leases.finish(id, ClaimToken::fenced(3)),
            Ending::AsItReturned
        );
        assert_eq!(leases.lose(id, ClaimToken::fenced(3)), None);
        assert!(leases.snapshot().is_empty());
    }
}
