//! A connection that calls a function after each commit with the WAL's length: SQLite's
//! WAL hook, reached through its C interface.
//!
//! backlite accepts rusqlite from 0.32 (the version sqlx 0.8 links with) to the newest.
//! rusqlite offers no WAL hook before 0.33, only a plain `fn` from 0.33 to 0.40, and a closure
//! from 0.41; `sqlite3_wal_hook` has not changed since SQLite 3.7.0. This file is the only
//! one in the crate allowed `unsafe`.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};
use std::ops::{Deref, DerefMut};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use rusqlite::{Connection, ffi};

/// What the committing connection does after a commit, as the hook decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterCommit {
    Nothing,
    /// Run a PASSIVE checkpoint at once, as SQLite's automatic checkpoint does; skip it when
    /// another connection's checkpoint is running.
    Checkpoint,
    /// The same, but wait (up to [`CHECKPOINT_WAIT`]) for another connection's checkpoint to
    /// end rather than skip it: the WAL has grown too long, and commits must slow down to
    /// what checkpoints keep up with.
    CheckpointWaiting,
}

/// How long a commit waits for another connection's checkpoint at the most.
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Called after each commit with the WAL's length in pages.
type Hook = Box<dyn FnMut(c_int) -> AfterCommit + Send>;

/// A connection that may carry a WAL hook, and frees it only once SQLite can no longer call
/// it. Dereferences to the connection.
pub(super) struct HookedConnection {
    conn: Connection,
    /// From `Box::into_raw`, or null: SQLite holds this pointer while the hook is set.
    hook: *mut Hook,
}

// SAFETY: `Connection` is `Send` and the hook is `Send`. SQLite calls the hook only inside a
// commit on this connection, so on the thread that owns the `HookedConnection` at the time.
unsafe impl Send for HookedConnection {}

impl HookedConnection {
    pub(super) fn new(conn: Connection) -> HookedConnection {
        HookedConnection {
            conn,
            hook: ptr::null_mut(),
        }
    }

    /// Calls `hook` after each commit on this connection; replaces SQLite's automatic
    /// checkpoints, which use the same slot.
    pub(super) fn set_wal_hook(&mut self, hook: impl FnMut(c_int) -> AfterCommit + Send + 'static) {
        let hook: Hook = Box::new(hook);
        let context = Box::into_raw(Box::new(hook));
        // SAFETY: the handle is this connection's and open. `context` stays valid until
        // `Drop` (or the next call) has removed it from SQLite.
        unsafe {
            ffi::sqlite3_wal_hook(self.conn.handle(), Some(on_commit), context.cast());
        }
        let previous = std::mem::replace(&mut self.hook, context);
        if !previous.is_null() {
            // SAFETY: from `Box::into_raw` above, and no longer registered.
            drop(unsafe { Box::from_raw(previous) });
        }
    }
}

/// SQLite's side of the hook.
unsafe extern "C" fn on_commit(
    context: *mut c_void,
    db: *mut ffi::sqlite3,
    name: *const c_char,
    pages: c_int,
) -> c_int {
    // SAFETY: `context` is the live `Hook` of `set_wal_hook`; SQLite calls it within one
    // commit at a time on its connection, so this is the only reference.
    let hook = unsafe { &mut *context.cast::<Hook>() };
    // A panic must not unwind into SQLite; the commit stands whatever the hook does.
    let after = catch_unwind(AssertUnwindSafe(|| hook(pages))).unwrap_or(AfterCommit::Nothing);
    if after == AfterCommit::Nothing {
        return ffi::SQLITE_OK;
    }
    let started = std::time::Instant::now();
    loop {
        // SAFETY: `db` and `name` are the ones SQLite passed for this commit, valid during it.
        // SQLite's own automatic checkpoint makes this same call from its hook.
        let code = unsafe {
            ffi::sqlite3_wal_checkpoint_v2(
                db,
                name,
                ffi::SQLITE_CHECKPOINT_PASSIVE,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        // SQLITE_BUSY while another connection's checkpoint runs (SQLite calls no busy handler
        // for that lock): skipped, to be tried after a later commit, unless told to wait.
        // An error returned from here would be reported as the commit's, which stands.
        let waiting = after == AfterCommit::CheckpointWaiting
            && code == ffi::SQLITE_BUSY
            && started.elapsed() < CHECKPOINT_WAIT;
        if !waiting {
            if code != ffi::SQLITE_OK {
                tracing::debug!(code, pages, "checkpoint after commit skipped");
            }
            return ffi::SQLITE_OK;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

impl Drop for HookedConnection {
    fn drop(&mut self) {
        if self.hook.is_null() {
            return;
        }
        // SAFETY: removed from SQLite first, so it is never called again, then freed; the
        // connection closes after this, when its field is dropped.
        unsafe {
            ffi::sqlite3_wal_hook(self.conn.handle(), None, ptr::null_mut());
            drop(Box::from_raw(self.hook));
        }
    }
}

impl Deref for HookedConnection {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for HookedConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// The WAL's length after each of 8 commits, with a hook that asks for a checkpoint once
    /// it reaches `checkpoint_at` pages.
    fn wal_lengths(checkpoint_at: c_int) -> Vec<c_int> {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = Connection::open(dir.path().join("h.db")).expect("open");
        let mut conn = HookedConnection::new(conn);
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .expect("wal");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let lengths = seen.clone();
        conn.set_wal_hook(move |pages| {
            lengths.lock().expect("lengths").push(pages);
            if pages >= checkpoint_at {
                AfterCommit::Checkpoint
            } else {
                AfterCommit::Nothing
            }
        });
        conn.execute_batch("CREATE TABLE t (v INTEGER)")
            .expect("table");
        for v in 0..7 {
            conn.execute("INSERT INTO t (v) VALUES (?1)", [v])
                .expect("insert");
        }
        drop(conn);
        Arc::try_unwrap(seen)
            .expect("hook freed")
            .into_inner()
            .expect("lengths")
    }

    #[test]
    fn the_hook_sees_every_commit_and_the_wal_grow() {
        let lengths = wal_lengths(c_int::MAX);
        assert_eq!(lengths.len(), 8);
        assert!(lengths.windows(2).all(|w| w[0] < w[1]), "{lengths:?}");
    }

    #[test]
    fn a_checkpoint_asked_by_the_hook_lets_the_wal_start_over() {
        let lengths = wal_lengths(4);
        assert_eq!(lengths.len(), 8);
        // Once the WAL reached 4 pages it was copied, so the next commit wrote from its start.
        let first = lengths
            .iter()
            .position(|&n| n >= 4)
            .expect("reached 4 pages");
        assert!(lengths[first + 1] < lengths[first], "{lengths:?}");
    }
}
