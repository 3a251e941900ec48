//! Recording outcomes. Workers hand their completions to one completer task without waiting;
//! it sends whatever has gathered as one writer request, and while that commits the next
//! batch gathers. A thousand tasks finishing together cost one request, not a thousand
//! requests, savepoints and wake-ups.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lease::Leases;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::storage::Completion;

/// Completions sent in one request at most, so that one request's time in the writer (and
/// the wait of whatever shares its commit) stays bounded.
const BATCH_MAX: usize = 1024;

/// The completer of a started client.
pub(super) struct Completer {
    /// Cancelled once no worker can send any more: the completer then commits what is left
    /// and ends.
    flush: CancellationToken,
    task: JoinHandle<()>,
}

/// `shutdown` is the hard stop: once cancelled, a batch the database refuses because it is
/// locked is given up instead of retried.
/// `leases` holds each task until its outcome is stored: its lease is renewed until then.
pub(super) fn spawn(
    client: Client,
    shutdown: CancellationToken,
    leases: Arc<Leases>,
) -> (UnboundedSender<Completion>, Completer) {
    let (sender, receiver) = unbounded_channel();
    let flush = CancellationToken::new();
    let task = tokio::spawn(run(client, receiver, flush.clone(), shutdown, leases));
    (sender, Completer { flush, task })
}

impl Completer {
    /// Commits the completions already sent and ends the completer. Call it once every
    /// worker has ended.
    pub(super) async fn finish(self) {
        self.flush.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "backlite completer ended abnormally");
        }
    }
}

async fn run(
    client: Client,
    mut receiver: UnboundedReceiver<Completion>,
    flush: CancellationToken,
    shutdown: CancellationToken,
    leases: Arc<Leases>,
) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let mut closed = false;
    loop {
        tokio::select! {
            biased;
            received = receiver.recv_many(&mut batch, BATCH_MAX) => {
                if received == 0 {
                    break;
                }
                let completions = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_MAX));
                let claims: Vec<_> = completions.iter().map(|c| (c.id, c.token)).collect();
                store(&client, &shutdown, completions).await;
                leases.release(claims);
            }
            // Closing keeps what was sent: `recv_many` returns it, then 0.
            _ = flush.cancelled(), if !closed => {
                closed = true;
                receiver.close();
            }
        }
    }
}

/// Stores a batch of outcomes. A dropped outcome makes its task run a second time after
/// `release_after`, so a locked database is waited for, and a batch that fails otherwise is
/// stored one outcome at a time, so that one bad outcome does not cost the others theirs.
async fn store(client: &Client, shutdown: &CancellationToken, completions: Vec<Completion>) {
    let Err(error) = store_retrying(client, shutdown, completions.clone()).await else {
        return;
    };
    if completions.len() == 1 || passes(&error) {
        for completion in &completions {
            tracing::error!(task_id = %completion.id, error = %error, "could not record the task's outcome; it runs again after release_after");
        }
        return;
    }
    for completion in completions {
        let id = completion.id;
        if let Err(error) = store_retrying(client, shutdown, vec![completion]).await {
            tracing::error!(task_id = %id, error = %error, "could not record the task's outcome; it runs again after release_after");
        }
    }
}

/// Conditions that pass, or that an operator fixes, while the outcome waits in memory: a lock
/// held by another connection, a lost connection or a server restarting, a conflict with a
/// concurrent transaction, a full disk, a file made read-only.
fn passes(error: &Error) -> bool {
    error.is_transient() || matches!(error, Error::Full | Error::ReadOnly { .. })
}

/// Stores `completions` in one request, retrying while [`passes`] says the error will pass;
/// gives up on that only when a stop stops waiting.
async fn store_retrying(
    client: &Client,
    shutdown: &CancellationToken,
    completions: Vec<Completion>,
) -> Result<()> {
    let mut pause = Duration::from_millis(10);
    loop {
        let error = match client
            .driver()
            .task_complete_many(completions.clone())
            .await
        {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if !passes(&error) || shutdown.is_cancelled() {
            return Err(error);
        }
        tracing::warn!(count = completions.len(), error = %error, retry_in = ?pause, "could not record the outcomes yet; will retry");
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
