//! Checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages:
//! that commit, and every request sharing it, waits while the WAL is synced and copied into
//! the database file (milliseconds, and far more on a busy disk), and it takes 7-9% of the
//! writer thread's time in a drain. Instead, the writer's connection reports its WAL size
//! through a WAL hook, and a thread of its own, with its own connection, runs the
//! checkpoints. A PASSIVE checkpoint neither blocks the writer nor waits for it, and syncs
//! the WAL before copying it, so commits are exactly as durable as before. Under a steady
//! stream of commits the writer still finishes one checkpoint in four itself (see
//! [`WAL_PAGES_WRITER`]).

use std::ffi::c_int;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

use super::wal_hook::{AfterCommit, HookedConnection};
use super::{Options, Target, open_connection};
use crate::error::{Error, Result};

/// WAL pages that make a checkpoint worth running: SQLite's own default.
const WAL_PAGES: c_int = 1000;

/// WAL pages past which the writer finishes the checkpoint itself, after its commit, as
/// SQLite's automatic checkpoint would. A checkpoint that runs while the writer appends can
/// never copy the last frames, and the WAL restarts from its beginning only once it has; by
/// then the checkpoint thread has copied most of the WAL, so the writer copies the rest.
const WAL_PAGES_WRITER: c_int = 4 * WAL_PAGES;

/// WAL pages past which the writer waits for a running checkpoint to end and then finishes
/// it, rather than skip it: when commits come faster than the checkpoint thread's syncs end,
/// this is what keeps the WAL bounded, by slowing the commits down.
const WAL_PAGES_WAIT: c_int = WAL_PAGES_WRITER + 2 * WAL_PAGES;

/// The writer's handle on the checkpoint thread.
pub(super) struct Checkpointer {
    wanted: SyncSender<()>,
    wal_pages: Arc<AtomicI32>,
}

impl Checkpointer {
    /// Asks for a checkpoint soon, unless one is already asked for.
    pub(super) fn request(&self) {
        let _ = self.wanted.try_send(());
    }

    /// The WAL's length in pages after the writer's last commit: how far it has grown since
    /// it last started over.
    pub(super) fn wal_pages(&self) -> i64 {
        i64::from(self.wal_pages.load(Ordering::Relaxed))
    }
}

/// Starts the checkpoint thread and replaces automatic checkpoints on `writer` with requests
/// to it; the thread ends with the writer's connection and the returned handle. `None` for an
/// in-memory database, which has no WAL.
pub(super) fn start(
    writer: &mut HookedConnection,
    target: &Target,
    options: &Options,
) -> Result<Option<Checkpointer>> {
    if target.in_memory {
        return Ok(None);
    }
    let conn = open_connection(target, options)?;
    // At most one request waits: more would only repeat a checkpoint with nothing to do.
    let (wanted, requests) = sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("backlite-checkpoint".into())
        .spawn(move || {
            // Ends when the writer's connection (its hook holds a sender) and handle are gone.
            for () in requests {
                if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                    tracing::debug!(error = %e, "checkpoint skipped");
                }
            }
        })
        .map_err(|e| Error::Storage(Box::new(e)))?;
    let wal_pages = Arc::new(AtomicI32::new(0));
    let (from_hook, pages_seen) = (wanted.clone(), wal_pages.clone());
    writer.set_wal_hook(move |pages| {
        pages_seen.store(pages, Ordering::Relaxed);
        if pages >= WAL_PAGES_WAIT {
            return AfterCommit::CheckpointWaiting;
        }
        if pages >= WAL_PAGES_WRITER {
            // The writer's connection checkpoints at once, after this commit.
            return AfterCommit::Checkpoint;
        }
        if pages >= WAL_PAGES {
            let _ = from_hook.try_send(());
        }
        AfterCommit::Nothing
    });
    Ok(Some(Checkpointer { wanted, wal_pages }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::sqlite::Synchronous;

    #[test]
    fn the_wal_stays_bounded_under_a_steady_stream_of_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.db").to_string_lossy().into_owned();
        let options = Options {
            path: path.clone(),
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
            queues: Vec::new(),
        };
        let target = Target::new(&path);
        let mut conn = HookedConnection::new(open_connection(&target, &options).expect("open"));
        let checkpointer = start(&mut conn, &target, &options).expect("start");
        assert!(checkpointer.is_some());
        conn.execute_batch("CREATE TABLE t (v BLOB)")
            .expect("table");
        // Each commit adds at least one WAL page: without restarts the WAL would pass
        // WAL_PAGES_WRITER four times over. Commits made while the checkpoint thread's
        // checkpoint runs (which refuses the writer's own) overshoot WAL_PAGES_WRITER, by
        // thousands on a loaded machine, until WAL_PAGES_WAIT makes the writer wait.
        let commits = 4 * WAL_PAGES_WRITER;
        let mut insert = conn
            .prepare("INSERT INTO t (v) VALUES (?1)")
            .expect("prepare");
        for _ in 0..commits {
            insert.execute([vec![0u8; 512]]).expect("insert");
        }
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page size");
        let wal = std::fs::metadata(format!("{path}-wal")).expect("wal").len() as i64;
        let frames = wal / (page_size + 24);
        assert!(
            frames <= i64::from(WAL_PAGES_WAIT + 1),
            "the WAL grew to {frames} frames after {commits} commits"
        );
    }
}
