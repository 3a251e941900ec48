//! Several processes on one database file: separate `test_worker` processes claim from the
//! same tables, and tasks added by one process are picked up by another. On PostgreSQL, three
//! worker processes and a producer share one schema while one worker is killed again and again.

mod common;
mod shared_db;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use backlite::{Client, Context, Task, processor, processors};
use common::{count, eventually, record, runs, temp_db};
use serde::{Deserialize, Serialize};

const WORKER: &str = env!("CARGO_BIN_EXE_test_worker");

fn add_in_child(db: &std::path::Path, n: u64, millis: u64) {
    let status = Command::new(WORKER)
        .arg(db)
        .args(["add", &n.to_string(), &millis.to_string()])
        .status()
        .expect("run test_worker");
    assert!(status.success());
}

fn spawn_worker(db: &std::path::Path, log: &std::path::Path, workers: u32) -> Child {
    let mut child = Command::new(WORKER)
        .arg(db)
        .arg("work")
        .arg(log)
        .args([&workers.to_string(), "60000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn test_worker");
    // Wait for "ready" so both workers compete from the start.
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("ready");
    assert_eq!(line.trim(), "ready");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_run_every_task_exactly_once() {
    let db = temp_db();
    let log = db.dir.path().join("runs.log");
    // Created by a process that has exited: the tasks live in the file only.
    add_in_child(&db.path, 3_000, 1);
    let mut workers = [
        spawn_worker(&db.path, &log, 4),
        spawn_worker(&db.path, &log, 4),
    ];
    let conn = db.conn();
    let drained = eventually(Duration::from_secs(120), || {
        count(&conn, "backlite_tasks WHERE state <= 1") == 0
    })
    .await;
    for worker in &mut workers {
        drop(worker.stdin.take()); // ends the worker gracefully
    }
    for worker in &mut workers {
        assert!(worker.wait().expect("wait").success());
    }
    assert!(
        drained,
        "tasks left: {}",
        count(&conn, "backlite_tasks WHERE state <= 1")
    );

    let text = std::fs::read_to_string(&log).expect("log");
    let mut starts: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut ends: HashMap<&str, u32> = HashMap::new();
    let mut pids = std::collections::HashSet::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[..] {
            ["start", id, pid, _] => {
                starts.entry(id).or_default().push(pid);
                pids.insert(pid);
            }
            ["end", id, _, _] => *ends.entry(id).or_default() += 1,
            _ => panic!("bad log line {line:?}"),
        }
    }
    assert_eq!(starts.len(), 3_000, "tasks run");
    let doubled: Vec<_> = starts.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(doubled.is_empty(), "run more than once: {doubled:?}");
    assert!(ends.values().all(|n| *n == 1));
    assert_eq!(pids.len(), 2, "both processes should have claimed work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_and_a_producer_process_run_every_task_once_and_never_see_busy() {
    let db = temp_db();
    let log = db.dir.path().join("runs.log");
    // The three processes open the new file at once: the schema is created once.
    let producer = Command::new(WORKER)
        .arg(&db.path)
        .args(["produce", "0", "2000", "1", "20"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn producer");
    let mut workers = [
        spawn_worker(&db.path, &log, 4),
        spawn_worker(&db.path, &log, 4),
    ];
    // Every save of the producer must succeed, however busy the file: it exits 1 otherwise.
    let produced = tokio::task::spawn_blocking(move || producer.wait_with_output())
        .await
        .unwrap()
        .expect("producer");
    assert!(
        produced.status.success(),
        "the producer failed: {}",
        String::from_utf8_lossy(&produced.stderr)
    );
    // A task that adds a child is deleted only once the child is stored, so an empty table
    // means the children are done too.
    let conn = db.conn();
    let drained = eventually(Duration::from_secs(120), || {
        count(&conn, "backlite_tasks WHERE state <= 1") == 0
    })
    .await;
    for worker in &mut workers {
        drop(worker.stdin.take());
    }
    for worker in &mut workers {
        assert!(worker.wait().expect("wait").success());
    }
    assert!(
        drained,
        "tasks left: {}",
        count(&conn, "backlite_tasks WHERE state <= 1")
    );

    let text = std::fs::read_to_string(&log).expect("log");
    let mut starts: HashMap<u64, u32> = HashMap::new();
    let mut ends: HashMap<u64, u32> = HashMap::new();
    let mut pids = std::collections::HashSet::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        match parts[..] {
            ["start", _, pid, n] => {
                *starts.entry(n.parse().unwrap()).or_default() += 1;
                pids.insert(pid.to_owned());
            }
            ["end", _, _, n] => *ends.entry(n.parse().unwrap()).or_default() += 1,
            _ => panic!("a processor's save failed: {line:?}"),
        }
    }
    let expected: Vec<u64> = (0..2000)
        .chain((0..2000).step_by(10).map(|n| n + 1_000_000))
        .collect();
    assert_eq!(starts.len(), expected.len(), "tasks run");
    for n in &expected {
        assert_eq!(
            (starts.get(n), ends.get(n)),
            (Some(&1), Some(&1)),
            "task {n}"
        );
    }
    assert_eq!(pids.len(), 2, "both processes should have claimed work");
}

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "work", max_attempts = 3)]
struct Work {
    n: u64,
    millis: u64,
}

#[processor]
async fn run_work(ctx: Context, _task: Work) -> anyhow::Result<()> {
    record("cross-process", &ctx);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_added_by_another_process_is_picked_up_within_250_ms() {
    let db = temp_db();
    let client = Client::builder()
        .database(&db.path)
        .processors(processors![run_work])
        .build()
        .await
        .unwrap();
    client.start();
    // Let the client settle into its idle sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The child commits before it exits, so this undercounts by its exit time only.
    add_in_child(&db.path, 1, 0);
    let exited = std::time::Instant::now();
    assert!(eventually(Duration::from_secs(5), || runs("cross-process").len() == 1).await);
    let picked_up = runs("cross-process")[0]
        .at
        .saturating_duration_since(exited);
    println!("picked up {picked_up:?} after the adding process exited");
    assert!(
        picked_up < Duration::from_millis(250),
        "picked up after {picked_up:?}"
    );
    assert!(client.stop(Duration::from_secs(5)).await);
}

/// One run of a `work` task in the log of a PostgreSQL run.
#[derive(Debug)]
struct WorkRun {
    n: u64,
    pid: u32,
    /// Byte offset of its start line in the log.
    offset: u64,
    ended: bool,
}

/// Three worker processes and a producer process on one PostgreSQL schema; one worker is
/// SIGKILLed every 1 to 2 s, mid-run, and started again. Every task ends, and a task runs a
/// second time only when the process of its earlier run was killed before the run's outcome
/// was stored, and only after that kill.
#[test]
fn three_workers_and_a_producer_on_postgres_lose_nothing_while_one_is_killed_again_and_again() {
    const TASKS: u64 = 20_000;
    // Above what a live claim needs on a loaded machine (a claim older than this is taken for
    // dead and its task runs twice, which the test reports); short, since a killed worker's
    // tasks wait this long.
    const RELEASE_MS: &str = "2000";
    let Some(db) = shared_db::SharedDb::postgres() else {
        return;
    };
    let started = std::time::Instant::now();
    let log = db.dir().join("runs.log");
    let spawn = || {
        let mut child = db
            .worker()
            .arg("work")
            .arg(&log)
            .args(["4", RELEASE_MS])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn test_worker");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("ready");
        assert_eq!(line.trim(), "ready");
        child
    };
    // Four processes open the new schema at once: it is created and migrated once.
    let mut producer = db
        .worker()
        .args(["produce", "0", &TASKS.to_string(), "1", "20"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn producer");
    let mut workers = [spawn(), spawn(), spawn()];

    // Kill worker 0 every 1 to 2 s until the producer is done and no task is left.
    let mut rng = backlite_suite::crash::Rng::new(backlite_suite::crash::now_millis() as u64);
    let mut killed_at: HashMap<u32, u64> = HashMap::new();
    let mut produced = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1000 + rng.below(1001)));
        if produced.is_none() {
            produced = producer.try_wait().expect("producer");
        }
        if produced.is_some() && db.unfinished() == 0 {
            break;
        }
        workers[0].kill().expect("SIGKILL");
        workers[0].wait().expect("reap");
        let length = std::fs::metadata(&log).map_or(0, |m| m.len());
        killed_at.insert(workers[0].id(), length);
        workers[0] = spawn();
    }
    let unfinished = db.unfinished();
    for worker in &mut workers {
        drop(worker.stdin.take());
    }
    for worker in &mut workers {
        assert!(worker.wait().expect("wait").success());
    }
    let produced = producer.wait_with_output().expect("producer");
    assert!(
        produced.status.success(),
        "the producer failed: {}",
        String::from_utf8_lossy(&produced.stderr)
    );
    assert_eq!(unfinished, 0, "tasks left undone after 300 s");

    // The log, by task id.
    let text = std::fs::read_to_string(&log).expect("log");
    let mut runs: HashMap<&str, Vec<WorkRun>> = HashMap::new();
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        let parts: Vec<&str> = line.trim_end().split(' ').collect();
        match parts[..] {
            ["start", id, pid, n] => runs.entry(id).or_default().push(WorkRun {
                n: n.parse().unwrap(),
                pid: pid.parse().unwrap(),
                offset,
                ended: false,
            }),
            ["end", id, pid, _] => {
                let run = runs
                    .get_mut(id)
                    .and_then(|runs| runs.iter_mut().rev().find(|r| r.pid.to_string() == pid))
                    .unwrap_or_else(|| panic!("end without start: {line:?}"));
                run.ended = true;
            }
            _ => panic!("a processor's save failed: {line:?}"),
        }
        offset += line.len() as u64;
    }
    let mut reruns = 0;
    let mut ids_of: HashMap<u64, u32> = HashMap::new();
    let mut runs_of: HashMap<u64, u32> = HashMap::new();
    for (id, runs) in &runs {
        for pair in runs.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            let killed = killed_at.get(&before.pid).unwrap_or_else(|| {
                panic!(
                    "task {id} ran again though process {} was not killed: {runs:?}",
                    before.pid
                )
            });
            assert!(
                after.offset >= *killed,
                "task {id} ran again before process {} was killed: {runs:?}",
                before.pid
            );
        }
        reruns += runs.len() - 1;
        assert!(runs.last().is_some_and(|r| r.ended), "task {id}: {runs:?}");
        *ids_of.entry(runs[0].n).or_default() += 1;
        *runs_of.entry(runs[0].n).or_default() += runs.len() as u32;
    }
    // Every tenth task adds a child as it runs: a parent that ran again may have added its
    // child again, as a task of its own; no other task is stored twice.
    let expected: Vec<u64> = (0..TASKS)
        .chain((0..TASKS).step_by(10).map(|n| n + 1_000_000))
        .collect();
    assert_eq!(ids_of.len(), expected.len(), "distinct tasks run");
    for n in &expected {
        let ids = ids_of.get(n).copied().unwrap_or(0);
        let allowed = match n.checked_sub(1_000_000) {
            Some(parent) => runs_of.get(&parent).copied().unwrap_or(0),
            None => 1,
        };
        assert!((1..=allowed).contains(&ids), "task {n} stored {ids} times");
    }
    let interrupted: Vec<&WorkRun> = runs.values().flatten().filter(|r| !r.ended).collect();
    let kills_mid_run: std::collections::HashSet<u32> = interrupted.iter().map(|r| r.pid).collect();
    let pids: std::collections::HashSet<u32> = runs.values().flatten().map(|r| r.pid).collect();
    println!(
        "multi-process (postgres): {{\"tasks\": {}, \"kills\": {}, \"kills_mid_run\": {}, \
         \"processes\": {}, \"interrupted\": {}, \"reruns\": {reruns}, \"seconds\": {:.1}}}",
        runs.len(),
        killed_at.len(),
        kills_mid_run.len(),
        pids.len(),
        interrupted.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(!kills_mid_run.is_empty(), "no kill landed mid-run");
}
