//! W9: the pickup latency of a task of high priority behind a backlog of 10,000 due tasks of
//! low priority, in the same queue, with a running client. The backlog's tasks each take 5 ms on
//! 4 workers, so it lasts for seconds; every 25 ms one task of priority 9 is saved, and its
//! latency runs from just before `save()` to its processor's first line. Without priorities
//! it would wait behind the whole backlog; with them, for a free worker and the next claim
//! (plus the tasks the dispatcher had claimed ahead).

use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backlite::{Task, processor, processors};
use serde::{Deserialize, Serialize};

use super::db::Db;
use super::{Figure, Sizes};

/// A task of the shared queue: `ms` of sleep; `urgent` ones note when they started.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "bench_priority")]
pub struct Job {
    pub urgent: Option<u64>,
    pub ms: u64,
}

static BACKLOG_RAN: AtomicU64 = AtomicU64::new(0);
static STARTED: Mutex<Vec<(u64, Instant)>> = Mutex::new(Vec::new());

#[processor]
async fn run_job(job: Job) -> Result<(), Infallible> {
    match job.urgent {
        Some(n) => STARTED.lock().unwrap().push((n, Instant::now())),
        None => {
            tokio::time::sleep(Duration::from_millis(job.ms)).await;
            BACKLOG_RAN.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

pub async fn pickup(db: &Db, sizes: Sizes) -> anyhow::Result<Figure> {
    // 10,000 (2,000 under `--smoke`), 100 samples: 2.5 s of samples against a backlog that
    // lasts about 12 s.
    let (workers, backlog, samples) = (4, sizes.drain.min(10_000), sizes.latency_samples.min(100));
    BACKLOG_RAN.store(0, Ordering::Relaxed);
    STARTED.lock().unwrap().clear();
    let client = db
        .builder()
        .workers(workers)
        .processors(processors![run_job])
        .build()
        .await?;
    for first in (0..backlog).step_by(1000) {
        let mut add = client.add(Job {
            urgent: None,
            ms: 5,
        });
        for _ in first + 1..(first + 1000).min(backlog) {
            add = add.add(Job {
                urgent: None,
                ms: 5,
            });
        }
        add.save().await?;
    }
    client.start();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut saved = Vec::with_capacity(samples);
    let mut every = tokio::time::interval(Duration::from_millis(25));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    for n in 0..samples as u64 {
        every.tick().await;
        let t = Instant::now();
        client
            .add(Job {
                urgent: Some(n),
                ms: 0,
            })
            .priority(9)
            .save()
            .await?;
        saved.push(t);
    }
    while STARTED.lock().unwrap().len() < samples {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    let left = backlog as u64 - BACKLOG_RAN.load(Ordering::Relaxed);
    client.stop(Duration::from_secs(30)).await;
    // Every sample must have met a backlog, or it measured an idle queue.
    anyhow::ensure!(
        left > (backlog / 2) as u64,
        "W9: the backlog drained ({left} of {backlog} left): the samples met no backlog"
    );
    let started = std::mem::take(&mut *STARTED.lock().unwrap());
    let mut latencies: Vec<Duration> = started
        .into_iter()
        .map(|(n, at)| at.saturating_duration_since(saved[n as usize]))
        .collect();
    let mut figure = Figure::new("W9", samples, elapsed, Some(&mut latencies)).workers(workers);
    figure.backlog = Some(backlog as u64);
    figure.backlog_left = Some(left);
    Ok(figure)
}
