//! Soak run, outside the default suite: minutes of sustained adds and completions on a file,
//! with long reads on another connection, while the size of the WAL file is sampled. The WAL
//! must stay bounded: checkpoints keep up with the writes, and a long read only delays them.
//!
//! ```sh
//! cargo test --release --test soak -- --ignored --nocapture     # 3 minutes
//! BACKLITE_SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture
//! ```

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backlite::{Client, Task, processor, processors};
use common::temp_db;
use serde::{Deserialize, Serialize};

static DONE: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "soak", max_attempts = 2, retention(duration = "10s"))]
struct Soak {
    n: u64,
    /// Some text, so that pages fill as they would with real payloads.
    body: String,
}

#[processor]
async fn run_soak(task: Soak) -> anyhow::Result<()> {
    if task.n.is_multiple_of(4) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    DONE.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak run of minutes: cargo test --release --test soak -- --ignored --nocapture"]
async fn the_wal_stays_bounded_under_sustained_load_and_long_reads() {
    let seconds: u64 = std::env::var("BACKLITE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let db = temp_db();
    let wal = db.path.with_extension("db-wal");
    let client = Client::builder()
        .database(&db.path)
        .workers(8)
        .cleanup_interval(Duration::from_secs(1))
        .processors(processors![run_soak])
        .build()
        .await
        .unwrap();
    client.start();
    let stop = Arc::new(AtomicBool::new(false));
    let added = Arc::new(AtomicU64::new(0));

    // Adds as fast as the workers keep up, with at most a few thousand tasks waiting.
    let producer = {
        let (client, stop, added) = (client.clone(), stop.clone(), added.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if n - DONE.load(Ordering::Relaxed) > 4_000 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let body = "x".repeat(200);
                let mut batch = client.add(Soak {
                    n,
                    body: body.clone(),
                });
                for i in 1..50 {
                    batch = batch.add(Soak {
                        n: n + i,
                        body: body.clone(),
                    });
                }
                batch.save().await.expect("save");
                n += 50;
                added.store(n, Ordering::Relaxed);
            }
        })
    };

    // Readers, in three phases of equal length: stats every 100 ms as a UI polls them; then
    // two readers querying back to back, so that one is nearly always inside the WAL; then
    // stats again plus, every 10 s, a read transaction held for 3 s.
    let phase = Arc::new(AtomicU8::new(0));
    let in_long_read = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for reader in 0..2 {
        let (client, stop, path) = (client.clone(), stop.clone(), db.path.clone());
        let (phase, in_long_read) = (phase.clone(), in_long_read.clone());
        readers.push(tokio::spawn(async move {
            let mut tick = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let phase = phase.load(Ordering::Relaxed);
                if reader == 1 && phase != 1 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                client.stats().await.expect("stats");
                if phase == 1 {
                    continue;
                }
                if phase == 2 && tick.is_multiple_of(100) {
                    let (in_long_read, path) = (in_long_read.clone(), path.clone());
                    tokio::task::spawn_blocking(move || long_read(&path, &in_long_read))
                        .await
                        .unwrap();
                }
                tick += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    // WAL size every 100 ms: (seconds, bytes, phase, inside a long read).
    let started = Instant::now();
    let mut samples: Vec<(f64, u64, u8, bool)> = Vec::new();
    let mut last_report = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let at = started.elapsed().as_secs_f64();
        let current = ((at * 3.0 / seconds as f64) as u8).min(2);
        phase.store(current, Ordering::Relaxed);
        let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
        samples.push((at, size, current, in_long_read.load(Ordering::Relaxed)));
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let recent = samples.iter().rev().take(50);
            eprintln!(
                "soak: {at:>4.0} s, phase {current}, {} done, WAL max of the last 5 s {:.1} MiB{}",
                DONE.load(Ordering::Relaxed),
                recent.clone().map(|s| s.1).max().unwrap_or(0) as f64 / MIB,
                if recent.clone().any(|s| s.3) {
                    " (long read)"
                } else {
                    ""
                },
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    let loaded = started.elapsed();
    // Idle: the writer checkpoints, and the next write restarts the WAL from its start.
    assert!(
        common::eventually(Duration::from_secs(120), || DONE.load(Ordering::Relaxed)
            >= added.load(Ordering::Relaxed))
        .await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .add(Soak {
            n: u64::MAX,
            body: String::new(),
        })
        .save()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_idle = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert!(client.stop(Duration::from_secs(10)).await);

    let max_in = |phase: u8| {
        let sizes = samples.iter().filter(|s| s.2 == phase).map(|s| s.1);
        sizes.max().unwrap_or(0)
    };
    // A long read pins the WAL while it lasts; a second after it ended, the WAL must have
    // started over (and been cut back to journal_size_limit).
    let mut long_read_ended = None;
    let mut after_long_reads = 0;
    for &(at, size, _, in_long_read) in &samples {
        if in_long_read {
            long_read_ended = Some(at);
        } else if long_read_ended.is_some_and(|end| at - end >= 1.0) {
            after_long_reads = after_long_reads.max(size);
        }
    }
    let done = DONE.load(Ordering::Relaxed);
    println!(
        "soak: {{\"seconds\": {:.0}, \"tasks\": {done}, \"per_second\": {:.0}, \
         \"wal_max_mib\": {{\"polled_stats\": {:.1}, \"back_to_back_readers\": {:.1}, \
         \"during_long_reads\": {:.1}, \"a_second_after_long_reads\": {:.1}}}, \
         \"wal_after_idle_mib\": {:.1}}}",
        loaded.as_secs_f64(),
        done as f64 / loaded.as_secs_f64(),
        max_in(0) as f64 / MIB,
        max_in(1) as f64 / MIB,
        max_in(2) as f64 / MIB,
        after_long_reads as f64 / MIB,
        after_idle as f64 / MIB,
    );
    // journal_size_limit: past it, the WAL file is cut back each time it starts over. Between
    // two restarts it may outgrow it by what is written meanwhile, not more.
    let limit = 64 * 1024 * 1024;
    for phase in [0, 1] {
        assert!(
            max_in(phase) < 2 * limit,
            "phase {phase}: the WAL outgrew twice {limit} bytes"
        );
    }
    assert!(
        after_long_reads <= limit,
        "the WAL stayed long after a long read"
    );
}

/// A read transaction held for 3 s, as a report or an export might.
fn long_read(path: &std::path::Path, in_long_read: &AtomicBool) {
    let mut conn = backlite::rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    let _: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM backlite_tasks WHERE state >= 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    in_long_read.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    in_long_read.store(false, Ordering::Relaxed);
    tx.commit().unwrap();
}
