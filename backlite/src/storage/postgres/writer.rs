//! Saves, grouped: a few writer tasks each take every save waiting in a shared queue and
//! commit them in one transaction, with one multi-row INSERT and one NOTIFY.
//!
//! A NOTIFY makes concurrent committing transactions wait for each other (PostgreSQL takes a
//! global lock at commit to order notifications), so one NOTIFY per save caps concurrent saves
//! at the rate of that lock. Grouping makes the lock's cost per commit, not per save: under
//! load many saves share a commit, and when idle a save costs one transaction, as it would
//! without grouping.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use super::{InsertColumns, Statements, map_error, pool_error, unique};
use crate::BoxFuture;
use crate::error::{Error, Result};
use crate::storage::NewTask;
use crate::task::TaskId;

/// Saves committed together at most, so that one commit's latency stays bounded.
const MAX_GROUP_TASKS: usize = 10_000;

type Request = (Vec<NewTask>, oneshot::Sender<Result<Vec<TaskId>>>);

pub(super) struct Writer {
    sender: mpsc::UnboundedSender<Request>,
}

impl Writer {
    /// Starts the writer tasks: half the pool, so that claims and outcomes keep connections.
    pub(super) fn start(pool: Pool, statements: Arc<Statements>, wake: Arc<Notify>) -> Writer {
        let (sender, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let writers = (pool.status().max_size / 2).max(1);
        for _ in 0..writers {
            tokio::spawn(run(
                pool.clone(),
                statements.clone(),
                receiver.clone(),
                wake.clone(),
            ));
        }
        Writer { sender }
    }

    pub(super) fn insert(&self, tasks: Vec<NewTask>) -> BoxFuture<Result<Vec<TaskId>>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.sender.send((tasks, reply));
        Box::pin(async move {
            sent.map_err(|_| Error::Closed)?;
            answer.await.map_err(|_| Error::Closed)?
        })
    }
}

/// One writer: takes a group, commits it, answers it; ends when every sender is gone.
async fn run(
    pool: Pool,
    statements: Arc<Statements>,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<Request>>>,
    wake: Arc<Notify>,
) {
    loop {
        let group = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut size = first.0.len();
            let mut group = vec![first];
            while size < MAX_GROUP_TASKS {
                match receiver.try_recv() {
                    Ok(request) => {
                        size += request.0.len();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            group
        };
        commit(&pool, &statements, group, &wake).await;
    }
}

async fn commit(pool: &Pool, statements: &Statements, group: Vec<Request>, wake: &Notify) {
    if group.len() == 1 {
        let Some((tasks, reply)) = group.into_iter().next() else {
            return;
        };
        let outcome = insert(pool, statements, tasks).await;
        if outcome.is_ok() {
            wake.notify_one();
        }
        let _ = reply.send(outcome);
        return;
    }
    let (batches, replies): (Vec<Vec<NewTask>>, Vec<_>) = group.into_iter().unzip();
    let all: Vec<NewTask> = batches.iter().flatten().cloned().collect();
    match insert(pool, statements, all).await {
        Ok(ids) => {
            wake.notify_one();
            // Each save's ids, in the order of the group.
            let mut ids = ids.into_iter();
            for (tasks, reply) in batches.iter().zip(replies) {
                let _ = reply.send(Ok(ids.by_ref().take(tasks.len()).collect()));
            }
        }
        // A lost connection or a restarting server: the commit may even have happened with
        // its reply lost, so inserting again could report a duplicate for stored tasks. Every
        // save gets the transient error, for its caller to retry or not.
        Err(error) if error.is_transient() => {
            let text = error.to_string();
            let mut replies = replies.into_iter();
            if let Some(first) = replies.next() {
                let _ = first.send(Err(error));
            }
            for reply in replies {
                let _ = reply.send(Err(Error::Connection(text.clone().into())));
            }
        }
        // One batch may be at fault (a duplicate id): each gets its own transaction and its
        // own answer, so that no save fails for another's mistake.
        Err(_) => {
            for (tasks, reply) in batches.into_iter().zip(replies) {
                let outcome = insert(pool, statements, tasks).await;
                if outcome.is_ok() {
                    wake.notify_one();
                }
                let _ = reply.send(outcome);
            }
        }
    }
}

/// Inserts `tasks` and notifies every listener, in one transaction; the id stored for each
/// task (another's, for a unique task that was already there).
async fn insert(pool: &Pool, statements: &Statements, tasks: Vec<NewTask>) -> Result<Vec<TaskId>> {
    if !tasks.iter().any(|t| t.unique_key.is_some()) {
        return insert_once(pool, statements, tasks).await;
    }
    // Batches with keys wait for each other's keys (in key order, so no cycle among them);
    // should the server still break a deadlock with one of them, that one is tried again
    // rather than failing a save that did nothing wrong.
    let mut tries = 0;
    loop {
        match insert_once(pool, statements, tasks.clone()).await {
            Err(Error::Conflict(error)) if tries < 3 => {
                tries += 1;
                tracing::debug!(%error, tries, "unique insert conflicted; trying again");
            }
            outcome => return outcome,
        }
    }
}

async fn insert_once(
    pool: &Pool,
    statements: &Statements,
    tasks: Vec<NewTask>,
) -> Result<Vec<TaskId>> {
    let mut conn = pool.get().await.map_err(pool_error)?;
    let tx = conn.transaction().await.map_err(map_error)?;
    let ids = if tasks.iter().any(|t| t.unique_key.is_some()) {
        unique::insert_in_tx(&tx, &statements.schema, tasks).await?
    } else {
        let ids = tasks.iter().map(|t| t.id).collect();
        let columns = InsertColumns::new(tasks);
        let statement = tx
            .prepare_cached(&statements.insert)
            .await
            .map_err(map_error)?;
        tx.execute(&statement, &columns.params())
            .await
            .map_err(map_error)?;
        ids
    };
    tx.execute(&statements.notify, &[&statements.channel])
        .await
        .map_err(map_error)?;
    tx.commit().await.map_err(map_error)?;
    Ok(ids)
}
