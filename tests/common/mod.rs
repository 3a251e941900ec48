//! Helpers shared by the integration tests: a fresh database file per test, a recorder of
//! processor runs keyed by test, and polling with a deadline.
#![allow(dead_code)]

pub mod backend;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use backlite::rusqlite::Connection;
use backlite::{Context, TaskId};

/// A database file in its own temporary directory, deleted when dropped.
pub struct TempDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn temp_db() -> TempDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("backlite.db");
    TempDb { dir, path }
}

impl TempDb {
    /// A plain connection on the file, to check what backlite stored.
    pub fn conn(&self) -> Connection {
        let conn = Connection::open(&self.path).expect("open");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn
    }
}

/// One start of a processor.
#[derive(Debug, Clone)]
pub struct Run {
    pub task_id: TaskId,
    pub attempt: u32,
    pub queue: &'static str,
    pub at: Instant,
}

static RUNS: LazyLock<Mutex<HashMap<String, Vec<Run>>>> = LazyLock::new(Default::default);

/// Records a start of a processor under `key` (each test uses its own key, so tests in one
/// binary can run in parallel).
pub fn record(key: &str, ctx: &Context) {
    let run = Run {
        task_id: ctx.task_id(),
        attempt: ctx.attempt(),
        queue: ctx.queue(),
        at: Instant::now(),
    };
    RUNS.lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .push(run);
}

pub fn runs(key: &str) -> Vec<Run> {
    RUNS.lock().unwrap().get(key).cloned().unwrap_or_default()
}

/// Polls `check` every 5 ms until it holds; false if `limit` passes first.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Like [`eventually`] for an async check.
pub async fn eventually_async<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The row of a retained task, read straight from the completed table.
#[derive(Debug)]
pub struct CompletedRow {
    pub queue: String,
    pub payload: Option<Vec<u8>>,
    pub attempts: i64,
    pub succeeded: bool,
    pub last_duration_us: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub last_executed_at: i64,
    pub expires_at: Option<i64>,
}

pub fn completed_row(conn: &Connection, id: &TaskId) -> Option<CompletedRow> {
    let uuid: [u8; 16] = uuid_bytes(id);
    conn.query_row(
        "SELECT queue, task, attempts, state = 2, COALESCE(last_duration_us, 0), last_error, \
         created_at, finished_at, expires_at FROM backlite_tasks WHERE id = ?1 AND state >= 2",
        [&uuid[..]],
        |r| {
            Ok(CompletedRow {
                queue: r.get(0)?,
                payload: r.get(1)?,
                attempts: r.get(2)?,
                succeeded: r.get(3)?,
                last_duration_us: r.get(4)?,
                error: r.get(5)?,
                created_at: r.get(6)?,
                last_executed_at: r.get(7)?,
                expires_at: r.get(8)?,
            })
        },
    )
    .ok()
}

pub fn uuid_bytes(id: &TaskId) -> [u8; 16] {
    let hex: String = id.to_string().chars().filter(|c| *c != '-').collect();
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    bytes
}

pub fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

/// The PostgreSQL server to test on (env `BACKLITE_TEST_POSTGRES_URL`) and a fresh schema
/// name for one test, `backlite_test_<unix secs>_<32 hex digits>`. Without the URL, `None`
/// after printing why; but when `CI` is set, PostgreSQL tests must run, so it panics.
pub fn pg_schema() -> Option<(String, String)> {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    let url = match std::env::var("BACKLITE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but BACKLITE_TEST_POSTGRES_URL is not: PostgreSQL tests must run")
        }
        _ => {
            eprintln!("skipped: BACKLITE_TEST_POSTGRES_URL is not set");
            return None;
        }
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    // Unique across the processes that test at once: time, process and a counter.
    let schema = format!(
        "backlite_test_{}_{:016x}{:08x}{:08x}",
        since_epoch.as_secs(),
        since_epoch.as_nanos() as u64,
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    Some((url, schema))
}
