//! Leases and fencing, end to end on both backends: a live process keeps its tasks however long
//! they run, a frozen one loses them and can change nothing, a cancel request reaches the
//! running processor, and the processes table lists the started clients.
//!
//! PostgreSQL runs when `BACKLITE_TEST_POSTGRES_URL` is set (see `common::pg_schema`).

mod common;
mod shared_db;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backlite::{Client, Context, Task, TaskStatus, processor, processors};
use backlite_suite::leased::{LeaseLine, Leased};
use common::backend::{TestDb, open_postgres, open_sqlite};
use common::{eventually, eventually_async, record, runs};
use serde::{Deserialize, Serialize};
use shared_db::SharedDb;

/// Long enough for anything to happen on a loaded machine; a passing test never waits it out.
const LONG: Duration = Duration::from_secs(30);

/// One module per backend, one test per suite test, each on a fresh database from `$open`
/// (or `$shared` for the multi-process test), or skipped when that backend is not here.
macro_rules! lease_suite {
    ($backend:ident, $open:path, $shared:path) => {
        mod $backend {
            use super::*;

            lease_suite!(@tests $open;
                a_task_running_ten_times_its_lease_runs_once_while_its_process_lives,
                a_cancel_request_reaches_the_running_processor_and_ends_the_task_cancelled,
                a_cancel_made_where_the_task_runs_fires_at_once,
                processes_lists_a_started_client_and_not_a_stopped_one,
            );

            #[test]
            fn a_frozen_worker_loses_its_task_to_another_and_its_late_outcome_is_refused() {
                if let Some(db) = $shared() {
                    super::a_frozen_worker_loses_its_task_to_another_and_its_late_outcome_is_refused(db)
                }
            }
        }
    };
    (@tests $open:path; $($test:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                if let Some(db) = $open().await {
                    super::$test(db).await
                }
            }
        )*
    };
}

fn shared_sqlite() -> Option<SharedDb> {
    Some(SharedDb::sqlite())
}

lease_suite!(sqlite, open_sqlite, shared_sqlite);
lease_suite!(postgres, open_postgres, SharedDb::postgres);

// ---------------------------------------------------------------- a long task

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "long", retention)]
struct Long {
    key: String,
    millis: u64,
}

#[processor]
async fn run_long(ctx: Context, task: Long) -> Result<(), std::io::Error> {
    record(&task.key, &ctx);
    tokio::time::sleep(Duration::from_millis(task.millis)).await;
    Ok(())
}

/// 5 s of work under a 500 ms lease, with a second client serving the queue: the lease is
/// renewed all along, so neither client's release takes the task back and it runs once.
async fn a_task_running_ten_times_its_lease_runs_once_while_its_process_lives(db: TestDb) {
    let key = db.key("long");
    let lease = Duration::from_millis(500);
    let start = || async {
        let client = db
            .builder()
            .release_after(lease)
            .processors(processors![run_long])
            .build()
            .await
            .unwrap();
        client.start();
        client
    };
    let (first, second) = (start().await, start().await);
    let id = first
        .add(Long {
            key: key.clone(),
            millis: 5_000,
        })
        .save()
        .await
        .unwrap()[0];
    let done = eventually_async(LONG, || async {
        first.status(&id).await.unwrap() == TaskStatus::Succeeded
    })
    .await;
    assert!(done, "the task did not finish");
    let runs = runs(&key);
    assert_eq!(runs.len(), 1, "ran {} times: {runs:?}", runs.len());
    let row = db.completed_row(&id).await.expect("retained");
    assert_eq!(row.attempts, 1);
    assert!(
        row.last_duration_us >= 5_000_000,
        "{}",
        row.last_duration_us
    );
    assert!(first.stop(LONG).await);
    assert!(second.stop(LONG).await);
}

/// A renewal that fails (here, SQLite locked by another connection past the busy timeout for
/// most of a lease) is made again at the next tick: the running task keeps its lease and runs
/// once, and the dispatcher goes on to run what is saved after. SQLite only: a PostgreSQL
/// renewal waits for a lock instead of failing, and its lost connections are the faults suite's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_is_retried_and_the_dispatcher_goes_on() {
    let db = common::temp_db();
    let key = "renewal-locked".to_owned();
    let client = Client::builder()
        .database(&db.path)
        .release_after(Duration::from_millis(1_500))
        .busy_timeout(Duration::from_millis(100))
        .processors(processors![run_long])
        .build()
        .await
        .unwrap();
    client.start();
    let id = client
        .add(Long {
            key: key.clone(),
            millis: 4_000,
        })
        .save()
        .await
        .unwrap()[0];
    assert!(
        eventually(LONG, || runs(&key).len() == 1).await,
        "never ran"
    );
    // Renewals come every 500 ms: one or two of them find the file locked.
    let path = db.path.clone();
    std::thread::spawn(move || {
        let conn = backlite::rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::sleep(Duration::from_millis(900));
        conn.execute_batch("COMMIT").unwrap();
    })
    .join()
    .unwrap();
    let after = client
        .add(Long {
            key: key.clone(),
            millis: 10,
        })
        .save()
        .await
        .unwrap()[0];
    for id in [id, after] {
        let done = eventually_async(LONG, || async {
            client.status(&id).await.unwrap() == TaskStatus::Succeeded
        })
        .await;
        assert!(done, "{id} did not finish");
    }
    assert_eq!(runs(&key).len(), 2, "{:?}", runs(&key));
    assert!(client.stop(LONG).await);
}

// ---------------------------------------------------------------- cancel

/// The keys of the runs whose `ctx.cancelled()` fired.
static SAW_CANCEL: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "until_cancelled", max_attempts = 5, retention)]
struct UntilCancelled {
    key: String,
}

#[processor]
async fn run_until_cancelled(ctx: Context, task: UntilCancelled) -> Result<(), std::io::Error> {
    record(&task.key, &ctx);
    tokio::select! {
        _ = ctx.cancelled() => SAW_CANCEL.lock().unwrap().push(task.key.clone()),
        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
    }
    // Whatever it returns, the task ends cancelled: no retry, however many attempts are left.
    Err(std::io::Error::other("stopped"))
}

/// A cancel request made by another client (another process, as far as the worker knows)
/// while the task runs reaches `ctx.cancelled()` with the next lease renewal, and the task
/// ends cancelled, with no retry.
async fn a_cancel_request_reaches_the_running_processor_and_ends_the_task_cancelled(db: TestDb) {
    let key = db.key("cancel");
    let client = db
        .builder()
        .release_after(Duration::from_millis(300))
        .processors(processors![run_until_cancelled])
        .build()
        .await
        .unwrap();
    client.start();
    let id = client
        .add(UntilCancelled { key: key.clone() })
        .save()
        .await
        .unwrap()[0];
    assert!(
        eventually(LONG, || runs(&key).len() == 1).await,
        "never ran"
    );
    let elsewhere = db.builder().build().await.unwrap();
    assert!(elsewhere.cancel(&id).await.unwrap());
    let cancelled = eventually_async(LONG, || async {
        client.status(&id).await.unwrap() == TaskStatus::Cancelled
    })
    .await;
    assert!(cancelled, "status: {:?}", client.status(&id).await);
    assert!(
        SAW_CANCEL.lock().unwrap().contains(&key),
        "ctx.cancelled() never fired"
    );
    let row = db.completed_row(&id).await.expect("retained");
    assert_eq!(row.error.as_deref(), Some("cancelled"));
    assert!(!row.succeeded);
    assert_eq!(runs(&key).len(), 1, "a cancelled task is not retried");
    assert!(client.stop(LONG).await);
}

/// A cancel made in the process that runs the task fires its context at once, without waiting
/// for a renewal: here the lease is the default 30 s, renewed every 10 s.
async fn a_cancel_made_where_the_task_runs_fires_at_once(db: TestDb) {
    let key = db.key("cancel-here");
    let client = db
        .builder()
        .processors(processors![run_until_cancelled])
        .build()
        .await
        .unwrap();
    client.start();
    let id = client
        .add(UntilCancelled { key: key.clone() })
        .save()
        .await
        .unwrap()[0];
    assert!(
        eventually(LONG, || runs(&key).len() == 1).await,
        "never ran"
    );
    let asked = Instant::now();
    assert!(client.cancel(&id).await.unwrap());
    let cancelled = eventually_async(LONG, || async {
        client.status(&id).await.unwrap() == TaskStatus::Cancelled
    })
    .await;
    assert!(cancelled, "status: {:?}", client.status(&id).await);
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "ended {:?} after the cancel: it waited for a renewal",
        asked.elapsed()
    );
    assert!(SAW_CANCEL.lock().unwrap().contains(&key));
    assert!(client.stop(LONG).await);
}

// ---------------------------------------------------------------- processes

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "listed")]
struct Listed;

#[processor]
async fn run_listed(_task: Listed) -> Result<(), std::io::Error> {
    Ok(())
}

async fn processes_lists_a_started_client_and_not_a_stopped_one(db: TestDb) {
    let viewer = db.builder().build().await.unwrap();
    let worker = db
        .builder()
        .workers(3)
        .processors(processors![run_listed])
        .build()
        .await
        .unwrap();
    assert!(viewer.processes().await.unwrap().is_empty());
    worker.start();
    let listed = eventually_async(LONG, || async {
        viewer.processes().await.unwrap().len() == 1
    })
    .await;
    assert!(listed, "the started client is not listed");
    let process = viewer.processes().await.unwrap().remove(0);
    assert_eq!(process.pid, std::process::id());
    assert_eq!(process.queues, ["listed"]);
    assert_eq!(process.workers, 3);
    assert!(!process.host.is_empty());
    assert!(process.started_at <= process.last_seen_at);
    assert!(worker.stop(LONG).await);
    assert!(
        viewer.processes().await.unwrap().is_empty(),
        "a stopped client is still listed"
    );
}

// ---------------------------------------------------------------- a frozen process

/// A `test_worker lease` process, ready to work.
fn spawn_worker(db: &SharedDb, log: &std::path::Path, release_ms: u64) -> Child {
    let mut child = db
        .worker()
        .arg("lease")
        .arg(log)
        .args(["2", &release_ms.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn test_worker");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut line).expect("ready");
    assert_eq!(line.trim(), "ready");
    child
}

fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} failed");
}

/// Ends a worker as its parent would: closing its stdin makes it stop gracefully.
fn finish(mut child: Child) {
    drop(child.stdin.take());
    let status = child.wait().expect("wait for test_worker");
    assert!(status.success(), "test_worker ended with {status}");
}

fn read_log(log: &std::path::Path) -> Vec<LeaseLine> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(LeaseLine::parse)
        .collect()
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Worker A runs a task and is frozen (SIGSTOP) past `release_after`; worker B, another
/// process, takes the task over with a later fence and completes it. Then A resumes and
/// finishes its run: its outcome is refused, and the stored record is B's run.
fn a_frozen_worker_loses_its_task_to_another_and_its_late_outcome_is_refused(db: SharedDb) {
    const RELEASE_MS: u64 = 1_500;
    const TASK_MS: u64 = 3_000;
    let log = db.dir().join("lease.log");
    let a = spawn_worker(&db, &log, RELEASE_MS);
    let a_pid = a.id();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let adder = db.builder().build().await.expect("adder");
        adder
            .add(Leased { millis: TASK_MS })
            .save()
            .await
            .expect("save");
    });
    wait_for("A to start the task", || !read_log(&log).is_empty());
    signal(&a, "-STOP");
    let frozen_at = Instant::now();
    let b = spawn_worker(&db, &log, RELEASE_MS);
    wait_for("B to finish the task", || {
        read_log(&log)
            .iter()
            .any(|l| matches!(l, LeaseLine::End { pid, .. } if *pid == b.id()))
            && db.completed_runs().len() == 1
    });
    assert!(
        frozen_at.elapsed() > Duration::from_millis(RELEASE_MS),
        "B ran the task before A's lease could end"
    );
    signal(&a, "-CONT");
    wait_for("A to end its late run", || {
        read_log(&log)
            .iter()
            .any(|l| matches!(l, LeaseLine::End { pid, .. } if *pid == a_pid))
    });
    // A's stop waits until its completer has tried to store every outcome.
    finish(a);
    let b_pid = b.id();
    finish(b);

    let lines = read_log(&log);
    let starts: Vec<_> = lines
        .iter()
        .filter_map(|l| match l {
            LeaseLine::Start { pid, fence, at } => Some((*pid, *fence, *at)),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2, "{lines:?}");
    let ((first_pid, first_fence, first_at), (second_pid, second_fence, second_at)) =
        (starts[0], starts[1]);
    assert_eq!((first_pid, second_pid), (a_pid, b_pid), "{lines:?}");
    assert!(second_fence > first_fence, "{lines:?}");
    let completed = db.completed_runs();
    assert_eq!(completed.len(), 1, "{completed:?}");
    let (succeeded, executed_at) = completed[0];
    assert!(succeeded);
    // The stored attempt is B's: it started with B's run, not with A's, which began at least
    // `release_after` earlier.
    assert!(
        (executed_at - second_at).abs() < (executed_at - first_at).abs(),
        "stored {executed_at}, A started {first_at}, B started {second_at}"
    );
    assert_eq!(db.unfinished(), 0, "A's late outcome brought the task back");
}
