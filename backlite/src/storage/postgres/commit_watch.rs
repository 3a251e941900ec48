//! Waking the workers after the application's commit instead of inside it.
//!
//! A NOTIFY in the application's transaction makes that transaction commit one at a time with
//! every other notifying transaction on the server. With `SaveInWakeup::AfterCommit`,
//! `save_in` instead records the id of the application's transaction (`txid_current()`), and
//! this watcher asks the server, on a connection of its own, whether those transactions have
//! ended (`txid_status`). When some committed, it sends one NOTIFY for all of them, outside
//! every application transaction; rolled-back ones wake nobody. It queries only while such
//! transactions are open, every few milliseconds.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Statements, map_error, pool_error};
use crate::error::Result;

/// The first look after a transaction is handed over, and the longest gap between looks
/// while one stays open: a short transaction is seen within a few milliseconds of its commit,
/// and a long one costs one query per `LOOK_MAX`.
const LOOK_FIRST: Duration = Duration::from_millis(2);
const LOOK_MAX: Duration = Duration::from_millis(50);

pub(super) fn start(
    pool: Pool,
    statements: std::sync::Arc<Statements>,
    stop: CancellationToken,
) -> mpsc::UnboundedSender<i64> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(run(pool, statements, receiver, stop));
    sender
}

async fn run(
    pool: Pool,
    statements: std::sync::Arc<Statements>,
    mut receiver: mpsc::UnboundedReceiver<i64>,
    stop: CancellationToken,
) {
    let mut open: Vec<i64> = Vec::new();
    let mut pause = LOOK_FIRST;
    loop {
        if open.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                received = receiver.recv() => match received {
                    Some(xid) => open.push(xid),
                    None => return,
                },
            }
            pause = LOOK_FIRST;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        while let Ok(xid) = receiver.try_recv() {
            open.push(xid);
        }
        match look(&pool, &statements, &open).await {
            Ok(still_open) => {
                pause = if still_open.len() < open.len() {
                    LOOK_FIRST
                } else {
                    (pause * 2).min(LOOK_MAX)
                };
                open = still_open;
            }
            Err(error) => {
                tracing::warn!(%error, open = open.len(), "backlite could not learn whether transactions with saved tasks committed; will retry");
                pause = LOOK_MAX;
            }
        }
    }
}

/// Returns the transactions still in progress, after notifying for those that committed.
async fn look(pool: &Pool, statements: &Statements, open: &[i64]) -> Result<Vec<i64>> {
    let conn = pool.get().await.map_err(pool_error)?;
    let rows = conn
        .query(
            "SELECT x, txid_status(x) FROM unnest($1::int8[]) AS x",
            &[&open],
        )
        .await
        .map_err(map_error)?;
    let mut still_open = Vec::new();
    let mut committed = false;
    for row in rows {
        let xid: i64 = row.try_get(0).map_err(map_error)?;
        let status: Option<String> = row.try_get(1).map_err(map_error)?;
        match status.as_deref() {
            Some("in progress") => still_open.push(xid),
            Some("committed") => committed = true,
            // Aborted, or too old for the server to remember: nothing to wake for.
            _ => {}
        }
    }
    if committed {
        conn.execute(&statements.notify, &[&statements.channel])
            .await
            .map_err(map_error)?;
    }
    Ok(still_open)
}
