//! Recording outcomes. Workers hand their completions to one completer task without waiting;
//! it sends whatever has gathered as one writer request, and while that commits the next
//! batch gathers. A thousand tasks finishing together cost one request, not a thousand
//! requests, savepoints and wake-ups.

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
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

pub(super) fn spawn(client: Client) -> (UnboundedSender<Completion>, Completer) {
    let (sender, receiver) = unbounded_channel();
    let flush = CancellationToken::new();
    let task = tokio::spawn(run(client, receiver, flush.clone()));
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
                let count = completions.len();
                if let Err(e) = client.driver().task_complete_many(completions).await {
                    tracing::error!(error = %e, count, "could not record the outcome of tasks; they run again after release_after");
                }
            }
            // Closing keeps what was sent: `recv_many` returns it, then 0.
            _ = flush.cancelled(), if !closed => {
                closed = true;
                receiver.close();
            }
        }
    }
}
