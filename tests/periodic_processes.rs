//! The proof that a periodic task is enqueued once per tick with no leader: three
//! `test_worker` processes share one schedule on one database (an SQLite file, or a
//! PostgreSQL schema) while they are SIGKILLed and restarted at random. Every run logs the
//! tick it was enqueued for; at the end, the ticks run or still stored must be exactly every
//! tick from the first to the last, and a tick may have run twice only when the process that
//! ran it first was killed before its outcome was stored (the task then runs again after its
//! lease, as any task does).
//!
//! `BACKLITE_PERIODIC_SECS` (default 20) sets how long the processes are killed for.

mod common;
mod shared_db;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use backlite_suite::crash::{self, Rng};
use shared_db::SharedDb;

/// The schedule's interval.
const INTERVAL_MS: i64 = 250;

/// A killed process's claimed tick runs again this long after its claim.
const RELEASE_MS: u64 = 1_000;

const PROCESSES: usize = 3;

fn spawn(db: &SharedDb, log: &Path) -> Child {
    let mut child = db
        .worker()
        .arg("periodic")
        .arg(log)
        .args([INTERVAL_MS.to_string(), RELEASE_MS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn test_worker");
    let mut ready = String::new();
    let stdout = child.stdout.as_mut().expect("stdout");
    BufReader::new(stdout).read_line(&mut ready).expect("ready");
    assert_eq!(ready.trim(), "ready");
    child
}

#[test]
fn three_processes_killed_at_random_enqueue_every_tick_once_on_sqlite() {
    harness(SharedDb::sqlite());
}

#[test]
fn three_processes_killed_at_random_enqueue_every_tick_once_on_postgres() {
    if let Some(db) = SharedDb::postgres() {
        harness(db);
    }
}

fn harness(db: SharedDb) {
    let secs = std::env::var("BACKLITE_PERIODIC_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20u64);
    let seed = crash::now_millis() as u64;
    let backend = match db {
        SharedDb::Sqlite(_) => "sqlite",
        SharedDb::Postgres(_) => "postgres",
    };
    let log = db.dir().join("ticks.log");
    let mut processes: Vec<Child> = (0..PROCESSES).map(|_| spawn(&db, &log)).collect();
    // Each killed process, with the log's length when it died: a run of a tick it held that
    // is logged past that point began after it was dead.
    let mut killed: HashMap<u32, u64> = HashMap::new();
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200 + rng.below(1_000)));
        let slot = rng.below(PROCESSES as u64) as usize;
        let victim = &mut processes[slot];
        victim.kill().expect("SIGKILL"); // SIGKILL on Unix
        victim.wait().expect("reap");
        let length = std::fs::metadata(&log).map_or(0, |m| m.len());
        killed.insert(victim.id(), length);
        processes[slot] = spawn(&db, &log);
    }
    // The survivors run what they hold, then stop gracefully.
    std::thread::sleep(Duration::from_millis(2 * RELEASE_MS));
    for process in &mut processes {
        drop(process.stdin.take());
    }
    for process in &mut processes {
        assert!(process.wait().expect("wait").success(), "a worker failed");
    }

    let text = std::fs::read_to_string(&log).expect("log");
    let mut runs: BTreeMap<i64, Vec<(u32, u64)>> = BTreeMap::new();
    let mut offset = 0u64;
    for line in text.lines() {
        let at = offset;
        offset += line.len() as u64 + 1;
        let parts: Vec<&str> = line.split(' ').collect();
        let ["tick", tick, pid] = parts[..] else {
            panic!("bad log line {line:?}");
        };
        let (tick, pid) = (tick.parse().expect("tick"), pid.parse().expect("pid"));
        runs.entry(tick).or_default().push((pid, at));
    }
    // Ticks enqueued but not run to the end: waiting, or claimed by a process that died.
    let stored = db.unfinished_run_at("beat");
    let mut ticks: Vec<i64> = runs.keys().copied().chain(stored.iter().copied()).collect();
    ticks.sort_unstable();
    ticks.dedup();

    let (first, last) = (ticks[0], ticks[ticks.len() - 1]);
    let expected: Vec<i64> = (0..=(last - first) / INTERVAL_MS)
        .map(|i| first + i * INTERVAL_MS)
        .collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|t| ticks.binary_search(t).is_err())
        .collect();
    assert!(missing.is_empty(), "ticks missed: {missing:?}");
    assert_eq!(ticks, expected, "ticks off the schedule's grid");
    let mut reruns = 0;
    for (tick, runs) in &runs {
        for pair in runs.windows(2) {
            let ((pid, _), (_, rerun_at)) = (pair[0], pair[1]);
            let excused = killed.get(&pid).is_some_and(|&died_at| rerun_at >= died_at);
            assert!(
                excused,
                "tick {tick} ran twice, first by {pid}, which was not killed before the rerun: \
                 {runs:?}"
            );
            reruns += 1;
        }
    }
    let expected_ticks = secs as i64 * 1_000 / INTERVAL_MS;
    assert!(
        ticks.len() as i64 >= expected_ticks / 2,
        "{} ticks in {secs} s",
        ticks.len()
    );
    assert!(killed.len() >= 5, "only {} kills", killed.len());
    println!(
        "periodic processes ({backend}): {{\"seed\": {seed}, \"seconds\": {secs}, \"kills\": {}, \
         \"ticks\": {}, \"runs\": {}, \"reruns_after_kill\": {reruns}, \"left_stored\": {}}}",
        killed.len(),
        ticks.len(),
        runs.values().map(Vec::len).sum::<usize>(),
        stored.len()
    );
}
