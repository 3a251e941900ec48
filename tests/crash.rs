//! Crash safety: a worker process on a file database, or on a PostgreSQL schema, is killed
//! with SIGKILL at random moments, again and again, and restarted; in the end every task added
//! has completed, none is lost, and a task ran more than once only when a kill interrupted its
//! run.
//!
//! Defaults suit the test suite (50 kills, 10,000 tasks on each backend). A soak run takes
//! more:
//!
//! ```sh
//! BACKLITE_CRASH_KILLS=1000 BACKLITE_CRASH_TASKS=100000 \
//!     cargo test --release --test crash -- --nocapture
//! ```
//!
//! `BACKLITE_CRASH_SEED` replays a run's timing and task mix (the seed is printed).

mod common;
mod shared_db;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use backlite::ClientBuilder;
use backlite_suite::crash::{self, CrashTask, Line, Rng};
use shared_db::SharedDb;

/// A killed worker's tasks run again this long after their claim. It must also exceed how
/// long a live worker holds a claim (prefetch wait plus run) on a loaded machine: a live
/// claim older than this is released too, and its task runs twice in a process that was never
/// killed, which the harness rightly reports.
const RELEASE_MS: u64 = 1_000;
/// On PostgreSQL every claim and outcome is a round trip to a server that shares the machine's
/// cores with the workers, so a live claim is given more room.
const RELEASE_MS_POSTGRES: u64 = 2_000;
const WORKERS: u32 = 8;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

fn spawn_worker(db: &SharedDb, log: &Path) -> Child {
    let release_ms = match db {
        SharedDb::Sqlite(_) => RELEASE_MS,
        SharedDb::Postgres(_) => RELEASE_MS_POSTGRES,
    };
    db.worker()
        .arg("crash")
        .arg(log)
        .args([WORKERS.to_string(), release_ms.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn test_worker")
}

/// Adds the `tasks` tasks of the mix, scheduled ones in batches that share a due time.
async fn add_tasks(db: ClientBuilder, tasks: u64, seed: u64) -> HashMap<u64, CrashTask> {
    let client = db.build().await.expect("build");
    let now = crash::now_millis();
    let mut batches: BTreeMap<i64, Vec<CrashTask>> = BTreeMap::new();
    for n in 0..tasks {
        let (mut task, wait) = crash::task(n, seed);
        if let Some(wait) = wait {
            // Due times rounded to 100 ms, so that a batch shares one.
            task.not_before = now + (wait.as_millis() as i64 / 100 + 1) * 100;
        }
        batches.entry(task.not_before).or_default().push(task);
    }
    let mut all = HashMap::new();
    for (not_before, batch) in batches {
        for chunk in batch.chunks(500) {
            let mut add = client.add(chunk[0].clone());
            for task in &chunk[1..] {
                add = add.add(task.clone());
            }
            if not_before > 0 {
                add = add.at(SystemTime::UNIX_EPOCH + Duration::from_millis(not_before as u64));
            }
            add.save().await.expect("save");
            all.extend(chunk.iter().map(|t| (t.n, t.clone())));
        }
    }
    all
}

/// One run of a task as the log tells it.
#[derive(Debug)]
struct RunLog {
    n: u64,
    attempt: u32,
    pid: u32,
    at: i64,
    /// Byte offset of the start line in the log.
    offset: u64,
    /// `Some(ok)` once its end line was seen.
    ended: Option<bool>,
}

fn read_log(path: &Path) -> Vec<RunLog> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut runs: Vec<RunLog> = Vec::new();
    // The run a process is in for each (n, attempt): a process runs a task once at a time.
    let mut open: HashMap<(u64, u32, u32), usize> = HashMap::new();
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        let parsed = Line::parse(line.trim_end()).unwrap_or_else(|| panic!("bad line {line:?}"));
        match parsed {
            Line::Start {
                n,
                attempt,
                pid,
                at,
            } => {
                let first = open.insert((n, attempt, pid), runs.len());
                assert!(
                    first.is_none(),
                    "task {n} attempt {attempt} started twice at once in process {pid}"
                );
                runs.push(RunLog {
                    n,
                    attempt,
                    pid,
                    at,
                    offset,
                    ended: None,
                });
            }
            Line::End {
                n,
                attempt,
                pid,
                ok,
            } => {
                let run = open
                    .remove(&(n, attempt, pid))
                    .unwrap_or_else(|| panic!("end without start: {line:?}"));
                runs[run].ended = Some(ok);
            }
        }
        offset += line.len() as u64;
    }
    runs
}

#[derive(Debug, Default)]
struct Figures {
    seed: u64,
    kills: u64,
    /// Kills that landed while at least one task was running in the killed process.
    kills_mid_run: u64,
    tasks: u64,
    /// Tasks not yet done when the kill loop ended.
    left_for_last: u64,
    runs: u64,
    lost: u64,
    /// Runs of an attempt that had run before: the earlier run's outcome was never recorded.
    reruns: u64,
    /// Runs cut by a kill before their processor returned.
    interrupted: u64,
    seconds: f64,
}

#[test]
fn a_worker_killed_at_random_moments_loses_no_task() {
    harness(SharedDb::sqlite());
}

#[test]
fn a_worker_on_postgres_killed_at_random_moments_loses_no_task() {
    if let Some(db) = SharedDb::postgres() {
        harness(db);
    }
}

fn harness(db: SharedDb) {
    let kills = env_u64("BACKLITE_CRASH_KILLS", 50);
    let tasks = env_u64("BACKLITE_CRASH_TASKS", 10_000);
    let seed = env_u64("BACKLITE_CRASH_SEED", crash::now_millis() as u64);
    let backend = match db {
        SharedDb::Sqlite(_) => "sqlite",
        SharedDb::Postgres(_) => "postgres",
    };
    eprintln!("crash harness ({backend}): seed {seed} (BACKLITE_CRASH_SEED={seed} replays it)");
    let started = Instant::now();
    let log = db.dir().join("runs.log");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let expected = runtime.block_on(add_tasks(db.builder(), tasks, seed));
    drop(runtime);

    // Kill loop. After each kill, the log's length marks what the dead process wrote: any run
    // of its tasks that starts later begins after it was dead.
    let mut rng = Rng::new(seed);
    let mut killed_at: HashMap<u32, u64> = HashMap::new();
    for _ in 0..kills {
        let mut child = spawn_worker(&db, &log);
        if let SharedDb::Postgres(_) = db {
            // A PostgreSQL worker takes a while to connect: without this wait most kills
            // would land before it claims anything.
            let mut ready = String::new();
            let stdout = child.stdout.as_mut().expect("stdout");
            BufReader::new(stdout).read_line(&mut ready).expect("ready");
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(281)));
        child.kill().expect("SIGKILL"); // SIGKILL on Unix
        child.wait().expect("reap");
        let length = std::fs::metadata(&log).map_or(0, |m| m.len());
        killed_at.insert(child.id(), length);
    }

    // A last worker runs what is left to the end, then stops gracefully.
    let left = db.unfinished() as u64;
    let mut last = spawn_worker(&db, &log);
    let mut ready = String::new();
    BufReader::new(last.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("ready");
    let deadline = Instant::now() + Duration::from_secs(300);
    while db.unfinished() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(last.stdin.take());
    assert!(last.wait().expect("wait").success(), "last worker failed");

    let mut figures = check(&db, &log, &expected, &killed_at, started);
    (figures.seed, figures.kills, figures.left_for_last) = (seed, kills, left);
    println!(
        "crash harness ({backend}): {{\"seed\": {}, \"kills\": {}, \"kills_mid_run\": {}, \"tasks\": {}, \
         \"left_for_last\": {}, \"runs\": {}, \"lost\": {}, \"reruns\": {}, \"interrupted\": {}, \
         \"seconds\": {:.1}}}",
        figures.seed,
        figures.kills,
        figures.kills_mid_run,
        figures.tasks,
        figures.left_for_last,
        figures.runs,
        figures.lost,
        figures.reruns,
        figures.interrupted,
        figures.seconds
    );
}

/// Checks the log and the database against the tasks added; returns the figures.
fn check(
    db: &SharedDb,
    log: &Path,
    expected: &HashMap<u64, CrashTask>,
    killed_at: &HashMap<u32, u64>,
    started: Instant,
) -> Figures {
    let runs = read_log(log);
    assert_eq!(db.unfinished(), 0, "tasks left undone");

    // The database: every task is in the completed table with the outcome and the attempts
    // its mix asked for; interrupted runs counted no attempt.
    let mut stored: HashMap<u64, (bool, u32)> = HashMap::new();
    for (payload, succeeded, attempts) in db.completed() {
        let task: CrashTask = serde_json::from_slice(&payload).expect("payload");
        let previous = stored.insert(task.n, (succeeded, attempts));
        assert!(previous.is_none(), "task {} completed twice", task.n);
    }
    let lost: Vec<u64> = expected
        .keys()
        .filter(|n| !stored.contains_key(n))
        .copied()
        .collect();
    assert!(lost.is_empty(), "lost {} tasks: {lost:?}", lost.len());
    for (n, task) in expected {
        let (succeeded, attempts) = stored[n];
        assert_eq!(succeeded, task.succeeds(), "task {n}: outcome");
        assert_eq!(attempts, task.attempts(), "task {n}: attempts");
    }

    // The log: each attempt ran; a second run of one attempt began only after the process of
    // the first one was killed (so never two at once), and scheduled tasks never early.
    let mut by_attempt: BTreeMap<(u64, u32), Vec<&RunLog>> = BTreeMap::new();
    for run in &runs {
        by_attempt
            .entry((run.n, run.attempt))
            .or_default()
            .push(run);
    }
    let mut reruns = 0;
    for ((n, attempt), runs) in &by_attempt {
        let task = &expected[n];
        for run in runs {
            assert!(
                run.at >= task.not_before,
                "task {n} started {} ms before it was due",
                task.not_before - run.at
            );
        }
        for pair in runs.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            let killed = killed_at.get(&before.pid).unwrap_or_else(|| {
                panic!("task {n} attempt {attempt} ran again though process {} was not killed: {runs:?}", before.pid)
            });
            assert!(
                after.offset >= *killed,
                "task {n} attempt {attempt} ran again before process {} was killed: {runs:?}",
                before.pid
            );
        }
        reruns += runs.len() as u64 - 1;
        let last = runs.last().expect("a run");
        let expect_ok = *attempt > task.fail_first;
        assert_eq!(last.ended, Some(expect_ok), "task {n} attempt {attempt}");
    }
    for (n, task) in expected {
        for attempt in 1..=task.attempts() {
            assert!(
                by_attempt.contains_key(&(*n, attempt)),
                "task {n} attempt {attempt} never ran"
            );
        }
    }
    let interrupted = runs.iter().filter(|r| r.ended.is_none()).count() as u64;
    let pids_mid_run: HashSet<u32> = runs
        .iter()
        .filter(|r| r.ended.is_none())
        .map(|r| r.pid)
        .collect();
    Figures {
        kills_mid_run: pids_mid_run.len() as u64,
        tasks: expected.len() as u64,
        runs: runs.len() as u64,
        lost: lost.len() as u64,
        reruns,
        interrupted,
        seconds: started.elapsed().as_secs_f64(),
        ..Figures::default()
    }
}
