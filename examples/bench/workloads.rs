//! The backlite workloads. Each builds a client on a fresh database (a SQLite file or a
//! PostgreSQL schema), with a processor that only counts (and, for the latency workloads, notes
//! when it was entered).

use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backlite::{Client, Registry, Task, processor, processors};
use serde::{Deserialize, Serialize};

use super::db::Db;
use super::{Figure, Sizes, round};

/// The task of every workload: a payload of a few bytes, `{"n":123}`. One attempt.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "bench")]
pub struct Noop {
    pub n: u64,
}

/// The same, on a queue that keeps every completed task with its payload (W3r).
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "bench_kept", retention(data))]
pub struct Kept {
    pub n: u64,
}

/// Processor runs so far.
static RAN: AtomicU64 = AtomicU64::new(0);
/// When on, each run also notes `(n, entry time)` in `ENTRIES`.
static RECORD: AtomicBool = AtomicBool::new(false);
static ENTRIES: Mutex<Vec<(u64, Instant)>> = Mutex::new(Vec::new());

fn entered(n: u64) {
    if RECORD.load(Ordering::Relaxed) {
        let now = Instant::now();
        ENTRIES.lock().unwrap().push((n, now));
    }
    RAN.fetch_add(1, Ordering::Relaxed);
}

#[processor]
async fn count_noop(task: Noop) -> Result<(), Infallible> {
    entered(task.n);
    Ok(())
}

#[processor]
async fn count_kept(task: Kept) -> Result<(), Infallible> {
    entered(task.n);
    Ok(())
}

fn registry(kept: bool) -> Registry {
    if kept {
        processors![count_kept]
    } else {
        processors![count_noop]
    }
}

/// A client on the fresh database `db`, serving only the queue the workload uses (so that the
/// claim reads one queue, as the raw drain does).
pub async fn client(db: &Db, workers: usize, kept: bool) -> anyhow::Result<Client> {
    RAN.store(0, Ordering::Relaxed);
    RECORD.store(false, Ordering::Relaxed);
    ENTRIES.lock().unwrap().clear();
    Ok(db
        .builder()
        .workers(workers)
        .processors(registry(kept))
        .build()
        .await?)
}

/// Adds `n` tasks in transactions of 1,000, all due at `at` (now when `None`).
pub async fn preload(
    client: &Client,
    n: usize,
    kept: bool,
    at: Option<SystemTime>,
) -> anyhow::Result<()> {
    for first in (0..n).step_by(1000) {
        let last = (first + 1000).min(n) as u64;
        let first = first as u64;
        let mut add = if kept {
            client.add(Kept { n: first })
        } else {
            client.add(Noop { n: first })
        };
        for i in first + 1..last {
            add = if kept {
                add.add(Kept { n: i })
            } else {
                add.add(Noop { n: i })
            };
        }
        if let Some(at) = at {
            add = add.at(at);
        }
        add.save().await?;
    }
    Ok(())
}

/// Processor runs since the last client was built.
pub fn runs() -> u64 {
    RAN.load(Ordering::Relaxed)
}

/// Waits until the processor ran `n` times.
async fn ran(n: usize) {
    while RAN.load(Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// W1: one task per `save()`, one after the other; the dispatcher is not started.
pub async fn single_saves(db: &Db, sizes: Sizes) -> anyhow::Result<Figure> {
    let client = client(db, 4, false).await?;
    let n = sizes.single_saves;
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n as u64 {
        let t = Instant::now();
        client.add(Noop { n: i }).save().await?;
        latencies.push(t.elapsed());
    }
    Ok(Figure::new("W1", n, start.elapsed(), Some(&mut latencies)))
}

/// W2: `batches` saves of `batch` tasks each.
pub async fn batched_saves(db: &Db, sizes: Sizes) -> anyhow::Result<Figure> {
    let client = client(db, 4, false).await?;
    let mut latencies = Vec::with_capacity(sizes.batches);
    let start = Instant::now();
    for b in 0..sizes.batches {
        let first = (b * sizes.batch) as u64;
        let mut add = client.add(Noop { n: first });
        for i in first + 1..first + sizes.batch as u64 {
            add = add.add(Noop { n: i });
        }
        let t = Instant::now();
        add.save().await?;
        latencies.push(t.elapsed());
    }
    let n = sizes.batches * sizes.batch;
    Ok(Figure::new("W2", n, start.elapsed(), Some(&mut latencies)))
}

/// W3, W3b, W3r: `drain` tasks added first, then `start()`: the time until every task ran and
/// the table is empty.
pub async fn drain(
    db: &Db,
    sizes: Sizes,
    name: &str,
    workers: usize,
    kept: bool,
) -> anyhow::Result<Figure> {
    drain_n(db, sizes.drain, name, workers, kept).await
}

async fn drain_n(
    db: &Db,
    n: usize,
    name: &str,
    workers: usize,
    kept: bool,
) -> anyhow::Result<Figure> {
    let client = client(db, workers, kept).await?;
    preload(&client, n, kept, None).await?;
    let cpu = ThreadCpu::now();
    let start = Instant::now();
    client.start();
    ran(n).await;
    db.table_empty().await?;
    let elapsed = start.elapsed();
    cpu.report(name, n, elapsed);
    anyhow::ensure!(
        client.stop(Duration::from_secs(10)).await,
        "{name}: stop timed out"
    );
    let ran = RAN.load(Ordering::Relaxed);
    anyhow::ensure!(ran == n as u64, "{name}: {ran} runs for {n} tasks");
    Ok(Figure::new(name, n, elapsed, None).workers(workers))
}

/// W7 (in its own process): W3 with a backlog of `backlog` tasks; reports the process's peak
/// resident memory.
pub async fn backlog(db: &Db, sizes: Sizes) -> anyhow::Result<Figure> {
    let mut figure = drain_n(db, sizes.backlog, "W7", 4, false).await?;
    figure.peak_rss_mib = peak_rss_mib();
    Ok(figure)
}

/// `VmHWM` of this process: the most resident memory it ever had. Linux only.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(round(kib / 1024.0, 1))
}

/// W4: an idle started client; samples 5 ms apart of the time from just before `save()` to
/// the processor's first line.
pub async fn latency(db: &Db, sizes: Sizes) -> anyhow::Result<Figure> {
    let workers = 4;
    let client = client(db, workers, false).await?;
    client.start();
    tokio::time::sleep(Duration::from_millis(100)).await;
    RECORD.store(true, Ordering::Relaxed);
    let samples = sizes.latency_samples;
    let mut saved = Vec::with_capacity(samples);
    let mut every = tokio::time::interval(Duration::from_millis(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    for i in 0..samples as u64 {
        every.tick().await;
        let t = Instant::now();
        client.add(Noop { n: i }).save().await?;
        saved.push(t);
    }
    ran(samples).await;
    let elapsed = start.elapsed();
    client.stop(Duration::from_secs(5)).await;
    let mut latencies = entry_delays(|n| saved[n as usize]);
    anyhow::ensure!(latencies.len() == samples, "W4: lost samples");
    Ok(Figure::new("W4", samples, elapsed, Some(&mut latencies)).workers(workers))
}

/// Each recorded run's entry time minus `since(n)`.
fn entry_delays(since: impl Fn(u64) -> Instant) -> Vec<Duration> {
    RECORD.store(false, Ordering::Relaxed);
    let entries = std::mem::take(&mut *ENTRIES.lock().unwrap());
    entries
        .into_iter()
        .map(|(n, at)| at.saturating_duration_since(since(n)))
        .collect()
}

/// W6: `savers` concurrent tokio tasks, each doing `saves_each` single-task saves.
pub async fn concurrent_saves(db: &Db, sizes: Sizes) -> anyhow::Result<Figure> {
    let client = client(db, 4, false).await?;
    let start = Instant::now();
    let savers: Vec<_> = (0..sizes.savers)
        .map(|s| {
            let client = client.clone();
            let each = sizes.saves_each;
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(each);
                for i in 0..each {
                    let t = Instant::now();
                    client
                        .add(Noop {
                            n: (s * each + i) as u64,
                        })
                        .save()
                        .await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for saver in savers {
        latencies.extend(saver.await??);
    }
    let elapsed = start.elapsed();
    let n = sizes.savers * sizes.saves_each;
    Ok(Figure::new("W6", n, elapsed, Some(&mut latencies)))
}

/// W8: `scheduled` tasks due at one moment `scheduled_ahead` from now, on a started client.
/// `secs` is how long after the due time the last one started; the percentiles are of every
/// task's start past due.
pub async fn scheduled(db: &Db, sizes: Sizes) -> anyhow::Result<Figure> {
    let workers = 4;
    let client = client(db, workers, false).await?;
    client.start();
    // Due on a whole millisecond, as stored, so that "late" is measured from the stored time.
    let wall = SystemTime::now();
    let mono = Instant::now();
    let since_epoch = (wall + sizes.scheduled_ahead).duration_since(UNIX_EPOCH)?;
    let due_wall = UNIX_EPOCH + Duration::from_millis(since_epoch.as_millis() as u64 + 1);
    let due = mono + due_wall.duration_since(wall)?;
    RECORD.store(true, Ordering::Relaxed);
    let n = sizes.scheduled;
    preload(&client, n, false, Some(due_wall)).await?;
    anyhow::ensure!(Instant::now() < due, "W8: saving took longer than the wait");
    ran(n).await;
    client.stop(Duration::from_secs(5)).await;
    let mut late = entry_delays(|_| due);
    anyhow::ensure!(late.len() == n, "W8: lost samples");
    let last = late.iter().copied().max().unwrap_or_default();
    let mut figure = Figure::new("W8", n, last, Some(&mut late)).workers(workers);
    figure.last_late_ms = Some(round(last.as_secs_f64() * 1e3, 2));
    Ok(figure)
}

/// CPU time per thread name, from `/proc/self/task/*/schedstat` (Linux): with `--threads`,
/// drains print on stderr how busy each thread was, which tells whether the writer thread is
/// the bound.
pub struct ThreadCpu(Option<std::collections::HashMap<u64, (String, u64)>>);

static THREADS: AtomicBool = AtomicBool::new(false);

pub fn report_threads() {
    THREADS.store(true, Ordering::Relaxed);
}

pub fn reporting_threads() -> bool {
    THREADS.load(Ordering::Relaxed)
}

impl ThreadCpu {
    pub fn now() -> ThreadCpu {
        ThreadCpu(THREADS.load(Ordering::Relaxed).then(Self::read).flatten())
    }

    fn read() -> Option<std::collections::HashMap<u64, (String, u64)>> {
        let mut threads = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc/self/task").ok()? {
            let path = entry.ok()?.path();
            let tid = path.file_name()?.to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            let schedstat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let ns = schedstat.split_whitespace().next()?.parse().ok()?;
            threads.insert(tid, (name.trim().to_owned(), ns));
        }
        Some(threads)
    }

    pub fn report(&self, name: &str, tasks: usize, elapsed: Duration) {
        let (Some(before), Some(after)) = (&self.0, Self::read()) else {
            return;
        };
        let mut by_name = std::collections::BTreeMap::<String, u64>::new();
        for (tid, (thread, ns)) in &after {
            let start = before.get(tid).map_or(0, |(_, ns)| *ns);
            *by_name.entry(thread.clone()).or_default() += ns - start;
        }
        let busy: Vec<String> = by_name
            .iter()
            .filter(|(_, ns)| **ns > 0)
            .map(|(thread, ns)| {
                let busy = *ns as f64 / 1e7 / elapsed.as_secs_f64();
                format!(
                    "{thread} {busy:.0}% ({:.2} us/task)",
                    *ns as f64 / 1e3 / tasks as f64
                )
            })
            .collect();
        eprintln!("{name}: thread CPU over {elapsed:.2?}: {}", busy.join(", "));
    }
}
