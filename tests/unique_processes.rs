//! Unique tasks across processes: several `test_worker` processes add a task for each of the
//! same keys at once, each from another key and in batches, on one database (an SQLite file,
//! or a PostgreSQL schema). The database's unique index decides: each key is stored once,
//! every process is answered the id of the one stored, and exactly one process was told it
//! added it.

mod common;
mod shared_db;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};

use shared_db::SharedDb;

const PROCESSES: u64 = 4;
const KEYS: u64 = 200;
const BATCH: u64 = 7;

#[test]
fn processes_adding_the_same_keys_store_each_once_on_sqlite() {
    harness(SharedDb::sqlite());
}

#[test]
fn processes_adding_the_same_keys_store_each_once_on_postgres() {
    if let Some(db) = SharedDb::postgres() {
        harness(db);
    }
}

/// Starts a process that adds every key from `offset` on, once told to go.
fn spawn(db: &SharedDb, offset: u64) -> Child {
    let mut child = db
        .worker()
        .arg("unique")
        .args([KEYS.to_string(), BATCH.to_string(), offset.to_string()])
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

fn harness(db: SharedDb) {
    // The schema exists before the processes race to add.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async { drop(db.builder().build().await.expect("build")) });

    // Each starts a quarter of the keys further on: every key is raced by some process
    // early in its run and by the others later, and two neighbours overlap throughout.
    let mut processes: Vec<Child> = (0..PROCESSES)
        .map(|p| spawn(&db, p * KEYS / PROCESSES))
        .collect();
    for process in &mut processes {
        let stdin = process.stdin.as_mut().expect("stdin");
        writeln!(stdin, "go").expect("go");
    }
    // key -> (id, added?) per process.
    let mut answers: Vec<BTreeMap<u64, (String, bool)>> = Vec::new();
    for process in processes {
        let output = process.wait_with_output().expect("wait");
        assert!(output.status.success(), "a process failed: {output:?}");
        let mut answer = BTreeMap::new();
        for line in String::from_utf8(output.stdout).expect("utf-8").lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let ["key", key, id, what] = parts[..] else {
                panic!("bad line {line:?}");
            };
            let added = match what {
                "added" => true,
                "duplicate" => false,
                _ => panic!("bad line {line:?}"),
            };
            answer.insert(key.parse::<u64>().expect("key"), (id.to_owned(), added));
        }
        assert_eq!(answer.len() as u64, KEYS, "every key answered");
        answers.push(answer);
    }

    let mut ids = HashSet::new();
    let mut added_by_other_than_first = 0;
    for key in 0..KEYS {
        let (id, _) = &answers[0][&key];
        let adders: Vec<usize> = (0..answers.len()).filter(|&p| answers[p][&key].1).collect();
        for answer in &answers {
            assert_eq!(&answer[&key].0, id, "key {key}: processes disagree");
        }
        assert_eq!(adders.len(), 1, "key {key}: added by {adders:?}");
        added_by_other_than_first += usize::from(adders[0] != 0);
        ids.insert(id.clone());
    }
    assert_eq!(ids.len() as u64, KEYS);
    assert_eq!(db.unfinished(), KEYS as i64, "one stored task per key");
    let backend = match db {
        SharedDb::Sqlite(_) => "sqlite",
        SharedDb::Postgres(_) => "postgres",
    };
    println!(
        "unique processes ({backend}): {{\"processes\": {PROCESSES}, \"keys\": {KEYS}, \
         \"added_by_other_processes_than_the_first\": {added_by_other_than_first}}}"
    );
}
