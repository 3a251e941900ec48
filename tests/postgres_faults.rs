//! Server faults on PostgreSQL. Each test starts a PostgreSQL 15 server of its own (initdb and
//! pg_ctl, as the `postgres` user, on a free port, in a temporary directory), so that it can
//! stop the server, end its connections or fill its connection slots without disturbing other
//! tests. Through every fault, while tasks are added and run:
//!
//! - `save()` succeeds or returns an error with `is_transient()`, and never hangs;
//! - the dispatcher resumes by itself within seconds of the server coming back;
//! - no task is lost (every task saved runs, and the tasks table ends empty) and none runs
//!   twice (runs are counted per task id).
//!
//! Without the server binaries the tests skip with one printed line, or fail when `CI` is set.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use backlite::{Client, Context, Task, TaskId, processor, processors, tokio_postgres};
use serde::{Deserialize, Serialize};

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// Longer than any outage here, so that a live claim is never taken for dead: a task that runs
/// twice is then a fault of the driver, not of the lease.
const RELEASE_AFTER: Duration = Duration::from_secs(20);
/// What "resumes by itself within seconds" is held to: the first task runs this soon after the
/// server is back. Far above what it takes (printed), and above the longest pause between
/// failed claims (5 s).
const RESUME_LIMIT: Duration = Duration::from_secs(10);
/// How long the backlog of a test may take to drain on a loaded machine.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// A save that takes this long is taken for hung.
const SAVE_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- the server

/// A PostgreSQL server of the test's own, stopped and deleted when dropped.
struct Server {
    dir: tempfile::TempDir,
    port: u16,
    /// The server's command-line options: `pg_ctl start` needs them each time.
    options: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Immediate: nothing of it is kept, and a failing test should not wait for a checkpoint.
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
    }
}

/// Runs a server binary as the `postgres` user when running as root (the server refuses to run
/// as root), as the current user otherwise.
fn as_postgres(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Server {
    /// Creates and starts a server with `settings` (`-c name=value` pairs); `None` (after one
    /// printed line) when PostgreSQL 15's binaries are missing and `CI` is not set.
    fn start(settings: &[&str]) -> Option<Server> {
        let missing = ["initdb", "pg_ctl"]
            .iter()
            .any(|b| !Path::new(BIN).join(b).exists());
        if missing {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {BIN}/initdb or pg_ctl is missing: the server-fault tests must run"
            );
            println!("skipped: PostgreSQL 15 server binaries not found in {BIN}");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let owner = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok());
        if let Some(uid) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), None).expect("chown to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        for setting in settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let server = Server { dir, port, options };
        let mut initdb = as_postgres(&format!("{BIN}/initdb"));
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "--no-instructions",
            ])
            .arg("-D")
            .arg(server.data());
        run(initdb).expect("initdb");
        server.start_again().expect("pg_ctl start");
        Some(server)
    }

    /// Starts the stopped server, with its options.
    fn start_again(&self) -> Result<(), String> {
        self.pg_ctl(&["start", "-o", &self.options])
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl <args>` on this server, waiting for it to finish.
    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let mut command = as_postgres(&format!("{BIN}/pg_ctl"));
        command
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .arg("-w")
            .args(args);
        run(command)
    }

    /// A connection of the test's own (not backlite's).
    async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

// ---------------------------------------------------------------- tasks and load

/// Starts per task id, across the tests of this file (ids are unique).
static RUNS: LazyLock<Mutex<HashMap<TaskId, u32>>> = LazyLock::new(Default::default);
/// When each task's last run started, to tell how soon the dispatcher resumed.
static STARTED: LazyLock<Mutex<HashMap<TaskId, Instant>>> = LazyLock::new(Default::default);

fn ran(id: &TaskId) -> u32 {
    RUNS.lock().unwrap().get(id).copied().unwrap_or(0)
}

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "fault", max_attempts = 3)]
struct Job {
    millis: u64,
}

#[processor]
async fn run_job(ctx: Context, job: Job) -> anyhow::Result<()> {
    *RUNS.lock().unwrap().entry(ctx.task_id()).or_default() += 1;
    STARTED
        .lock()
        .unwrap()
        .insert(ctx.task_id(), Instant::now());
    tokio::time::sleep(Duration::from_millis(job.millis)).await;
    Ok(())
}

async fn client(server: &Server, pool_size: usize) -> Client {
    Client::builder()
        .database(server.url())
        .schema("backlite")
        .pool_size(pool_size)
        .workers(8)
        .release_after(RELEASE_AFTER)
        .processors(processors![run_job])
        .build()
        .await
        .expect("build")
}

/// What the savers saw.
#[derive(Debug, Default)]
struct Saved {
    /// Tasks whose save returned `Ok`.
    ids: Vec<TaskId>,
    /// Saves that returned a transient error (such a task may or may not be stored).
    transient: u64,
}

/// `savers` tasks that each save one task after another, `pause` apart, until `stop` is set. A
/// permanent error or a save that hangs fails the test.
fn spawn_savers(
    client: &Client,
    savers: usize,
    pause: Duration,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Saved>> {
    (0..savers)
        .map(|_| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut saved = Saved::default();
                while !stop.load(Ordering::Relaxed) {
                    let save = client.add(Job { millis: 2 }).save();
                    match tokio::time::timeout(SAVE_LIMIT, save).await {
                        Ok(Ok(ids)) => saved.ids.extend(ids),
                        Ok(Err(e)) if e.is_transient() => {
                            saved.transient += 1;
                            // As a caller would: wait a little before trying again.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok(Err(e)) => panic!("save returned a permanent error: {e:?}"),
                        Err(_) => panic!("save hung for {SAVE_LIMIT:?}"),
                    }
                    tokio::time::sleep(pause).await;
                }
                saved
            })
        })
        .collect()
}

async fn join_savers(savers: Vec<tokio::task::JoinHandle<Saved>>) -> Saved {
    let mut all = Saved::default();
    for saver in savers {
        let saved = saver.await.expect("saver");
        all.ids.extend(saved.ids);
        all.transient += saved.transient;
    }
    all
}

/// Tasks stored and not done, read through a connection of the test's own.
async fn unfinished(server: &Server) -> Option<i64> {
    let conn = server.connect().await.ok()?;
    let row = conn
        .query_one(
            "SELECT COUNT(*) FROM backlite.backlite_tasks WHERE state <= 1",
            &[],
        )
        .await
        .ok()?;
    Some(row.get(0))
}

/// After the faults: every task saved with `Ok` runs, the table empties, and no task ran twice.
/// Returns how long after `back` (the server available again) the first task started, and
/// how long it took to run them all.
async fn assert_nothing_lost_or_doubled(
    server: &Server,
    saved: &Saved,
    back: Instant,
) -> (Duration, Duration) {
    let all_ran = common::eventually(DRAIN_LIMIT, || saved.ids.iter().all(|id| ran(id) >= 1)).await;
    let done = back.elapsed();
    let missing = saved.ids.iter().filter(|id| ran(id) == 0).count();
    assert!(
        all_ran,
        "{missing} of {} saved tasks did not run within {DRAIN_LIMIT:?}",
        saved.ids.len()
    );
    // Tasks whose save failed but whose commit went through run too.
    let emptied = common::eventually_async(DRAIN_LIMIT, || async {
        unfinished(server).await == Some(0)
    })
    .await;
    assert!(emptied, "tasks left: {:?}", unfinished(server).await);
    let twice: Vec<(TaskId, u32)> = RUNS
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    assert!(twice.is_empty(), "tasks run more than once: {twice:?}");
    let started = STARTED.lock().unwrap();
    let first = saved
        .ids
        .iter()
        .filter_map(|id| started.get(id).filter(|at| **at >= back))
        .min()
        .map_or(Duration::ZERO, |at| at.duration_since(back));
    assert!(
        first < RESUME_LIMIT,
        "the first task ran {first:?} after the server was back"
    );
    (first, done)
}

// ---------------------------------------------------------------- the faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_restarts_while_tasks_are_added_and_run() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let client = client(&server, 10).await;
    client.start();
    let stop = Arc::new(AtomicBool::new(false));
    let savers = spawn_savers(&client, 8, Duration::from_millis(2), &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Down for a second, so that saves, claims and outcomes meet a server that is gone; then
    // a restart in one step.
    let server = tokio::task::spawn_blocking(move || {
        server.pg_ctl(&["stop", "-m", "fast"]).expect("stop");
        std::thread::sleep(Duration::from_secs(1));
        server.start_again().expect("start");
        std::thread::sleep(Duration::from_millis(500));
        server.pg_ctl(&["restart", "-m", "fast"]).expect("restart");
        server
    })
    .await
    .unwrap();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let saved = join_savers(savers).await;

    let took = assert_nothing_lost_or_doubled(&server, &saved, back).await;
    println!(
        "server restart: {} tasks saved, {} transient save errors, first run {:?} and all \
         run {:?} after the server came back",
        saved.ids.len(),
        saved.transient,
        took.0,
        took.1
    );
    assert!(saved.transient > 0, "no save met the stopped server");
    assert!(client.stop(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_including_the_listener_are_replaced() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let client = client(&server, 10).await;
    client.start();
    let admin = server.connect().await.expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let savers = spawn_savers(&client, 8, Duration::from_millis(2), &stop);

    // Every backend but the test's own, five times, while tasks are added and run.
    let others = "SELECT pid, query FROM pg_stat_activity \
                  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()";
    let mut listeners = 0;
    let mut terminated = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut pids: Vec<i32> = Vec::new();
        for row in admin.query(others, &[]).await.expect("list") {
            pids.push(row.get(0));
            listeners += usize::from(row.get::<_, String>(1).starts_with("LISTEN"));
        }
        terminated += admin
            .execute(
                "SELECT pg_terminate_backend(p) FROM unnest($1::int4[]) p",
                &[&pids],
            )
            .await
            .expect("terminate");
    }
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let saved = join_savers(savers).await;
    assert!(listeners > 0, "no listener connection was terminated");

    let took = assert_nothing_lost_or_doubled(&server, &saved, back).await;

    // The listener is back: a task added by another client (a commit this client only hears
    // of through NOTIFY) is picked up with the dispatcher idle.
    let other = Client::builder()
        .database(server.url())
        .schema("backlite")
        .build()
        .await
        .expect("build");
    let ids = other.add(Job { millis: 0 }).save().await.expect("save");
    let added = Instant::now();
    assert!(common::eventually(RESUME_LIMIT, || ran(&ids[0]) == 1).await);
    println!(
        "terminated connections: {terminated} backends ended ({listeners} listening), {} tasks \
         saved, {} transient save errors, first run {:?} and all run {:?} after the last \
         termination; a task from another client picked up after {:?}",
        saved.ids.len(),
        saved.transient,
        took.0,
        took.1,
        added.elapsed()
    );
    assert!(client.stop(Duration::from_secs(10)).await);
}

/// The backend of the client's listener, once there is one (its last statement is LISTEN).
async fn listener_pid(admin: &tokio_postgres::Client, not: Option<i32>) -> Option<i32> {
    let deadline = Instant::now() + RESUME_LIMIT;
    while Instant::now() < deadline {
        let rows = admin
            .query(
                "SELECT pid FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND query LIKE 'LISTEN%'",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(pid) = rows.iter().map(|r| r.get(0)).find(|pid| Some(*pid) != not) {
            return Some(pid);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_comes_back_at_once_however_often_it_was_cut() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let client = client(&server, 4).await;
    client.start();
    let admin = server.connect().await.expect("connect");
    // Cut again and again, each time once it is back. Notifications are missed while it is
    // away, so its pause before reconnecting must not grow from one fault to the next (from
    // 50 ms, doubling, it would pass 1.5 s at the sixth).
    let mut pid = listener_pid(&admin, None).await.expect("a listener");
    let mut gaps = Vec::new();
    for _ in 0..7 {
        let cut = Instant::now();
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .expect("terminate");
        pid = listener_pid(&admin, Some(pid))
            .await
            .expect("the listener did not come back");
        gaps.push(cut.elapsed());
    }
    println!("listener cut 7 times: back after {gaps:?}");
    assert!(
        gaps.iter().all(|gap| *gap < Duration::from_millis(1500)),
        "the listener came back after {gaps:?}"
    );
    // And it listens: a task added by another client is picked up.
    let other = Client::builder()
        .database(server.url())
        .schema("backlite")
        .build()
        .await
        .expect("build");
    let ids = other.add(Job { millis: 0 }).save().await.expect("save");
    assert!(common::eventually(RESUME_LIMIT, || ran(&ids[0]) == 1).await);
    assert!(client.stop(Duration::from_secs(10)).await);
}

/// Claims that keep failing (here: the tasks table is renamed away) make the dispatcher wait
/// longer and longer between claims, up to 5 s. A wake-up (a commit by another client, or the
/// listener back on a restarted server) means the database answers again: it ends the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_ends_the_pause_after_failed_claims() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let client = client(&server, 4).await;
    let other = Client::builder()
        .database(server.url())
        .schema("backlite")
        .build()
        .await
        .expect("build");
    let admin = server.connect().await.expect("connect");
    admin
        .batch_execute("ALTER TABLE backlite.backlite_tasks RENAME TO hidden")
        .await
        .expect("rename");
    client.start();
    // The server logs each failed statement; the claim is the one that skips locked rows.
    let log = server.dir.path().join("log");
    let failed_claims = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("STATEMENT") && line.contains("SKIP LOCKED"))
            .count()
    };
    // Seven failures take the pause to 3.2 s; the next one starts a pause of 5 s.
    assert!(common::eventually(DRAIN_LIMIT, || failed_claims() >= 7).await);
    let seen = failed_claims();
    assert!(common::eventually(DRAIN_LIMIT, || failed_claims() > seen).await);
    admin
        .batch_execute("ALTER TABLE backlite.hidden RENAME TO backlite_tasks")
        .await
        .expect("rename back");
    let ids = other.add(Job { millis: 0 }).save().await.expect("save");
    let saved = Instant::now();
    assert!(common::eventually(RESUME_LIMIT, || ran(&ids[0]) == 1).await);
    let took = saved.elapsed();
    println!(
        "after {} failed claims, a task added by another client ran after {took:?}",
        seen + 1
    );
    assert!(
        took < Duration::from_millis(1500),
        "the dispatcher waited out its pause: {took:?}"
    );
    assert!(client.stop(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_and_a_full_server_give_transient_errors_and_pass() {
    // Few slots, so that the test can take every one of them.
    let Some(server) = Server::start(&["max_connections=12"]) else {
        return;
    };
    // Two connections for 64 concurrent savers, the claims and the outcomes.
    let client = client(&server, 2).await;
    client.start();
    let stop = Arc::new(AtomicBool::new(false));
    let savers = spawn_savers(&client, 64, Duration::from_millis(25), &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Then the server's slots: the test takes every free one and ends backlite's connections
    // to take theirs too, until backlite cannot connect at all; it holds them for two seconds.
    let admin = server.connect().await.expect("connect");
    let pid = |conn: tokio_postgres::Client| async move {
        let row = conn.query_one("SELECT pg_backend_pid()", &[]).await.ok()?;
        Some((row.get::<_, i32>(0), conn))
    };
    let mut held: Vec<tokio_postgres::Client> = Vec::new();
    let mut ours: Vec<i32> = Vec::new();
    let admin_pid: i32 = admin
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    ours.push(admin_pid);
    let mut refused = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        loop {
            match server.connect().await {
                Ok(conn) => {
                    if let Some((pid, conn)) = pid(conn).await {
                        ours.push(pid);
                        held.push(conn);
                    }
                }
                Err(e) => {
                    refused = e.code().cloned();
                    break;
                }
            }
        }
        let ended = admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND NOT pid = ANY($1)",
                &[&ours],
            )
            .await
            .expect("terminate");
        if ended == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(held);
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let saved = join_savers(savers).await;
    assert_eq!(
        refused,
        Some(tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS),
        "the server's slots were not all taken"
    );

    let took = assert_nothing_lost_or_doubled(&server, &saved, back).await;
    println!(
        "exhausted pool and server: {} tasks saved by 64 savers on 2 connections, {} transient \
         save errors, first run {:?} and all run {:?} after the \
         slots were freed",
        saved.ids.len(),
        saved.transient,
        took.0,
        took.1
    );
    assert!(saved.transient > 0, "no save met the full server");
    assert!(client.stop(Duration::from_secs(10)).await);
}
