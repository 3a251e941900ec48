//! A worker process for the multi-process and crash tests.
//!
//! `<db>` is a SQLite file or a PostgreSQL URL; `--schema <schema>` before it picks the
//! PostgreSQL schema, so that each test has tables of its own.
//!
//! - `test_worker <db> add <n> <millis>` adds tasks `0..n` of queue `work` and exits.
//! - `test_worker <db> produce <first> <n> <millis> <batch>` adds tasks `first..first + n` of
//!   queue `work` in batches of up to `batch`, a few milliseconds apart, as an application
//!   would while workers run; every tenth asks its processor to add a child task. Any error
//!   is printed and the exit status is 1.
//! - `test_worker <db> work <log> <workers> <release_ms>` serves queue `work` until its stdin
//!   closes (or it is killed), appending `start <id> <pid> <n>` and `end <id> <pid> <n>` lines
//!   to `<log>` around every run, each task taking its `millis`.
//! - `test_worker <db> crash <log> <workers> <release_ms>` serves the crash harness's queue
//!   (see `backlite_suite::crash`) the same way.
//! - `test_worker <db> lease <log> <workers> <release_ms>` serves the lease tests' queue (see
//!   `backlite_suite::leased`) the same way.
//! - `test_worker <db> unique <keys> <batch> <offset>` prints `ready`, waits for a line on
//!   stdin, then adds one task of the unique queue `unique_work` per key `0..keys`, starting
//!   at key `offset` and wrapping around, in batches of `batch`, and prints
//!   `key <k> <id> added|duplicate` for each; it adds nothing else and exits.
//! - `test_worker <db> periodic <log> <interval_ms> <release_ms>` enqueues a task of queue
//!   `beat` every `interval_ms` (missed ticks all caught up) and serves that queue until its
//!   stdin closes (or it is killed), appending `tick <tick_ms> <pid>` to `<log>` for every run.

use std::io::Write;
use std::time::Duration;

use backlite::{CatchUp, Client, ClientBuilder, Context, Schedule, Task, processor, processors};
use backlite_suite::crash::{self, CrashTask, Line};
use backlite_suite::leased::Leased;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "work", max_attempts = 3)]
struct Work {
    n: u64,
    millis: u64,
    /// Set: the processor adds task `child` through its context, as application code would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    child: Option<u64>,
}

/// One task per key while it waits, runs, or succeeded within the hour.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "unique_work", unique(by = [key], for = "1h"))]
struct UniqueWork {
    key: u64,
    /// Differs between processes: not compared.
    pid: u32,
}

static LOG: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

fn log(line: &str) {
    if let Some(Ok(mut file)) = LOG.get().map(|f| f.lock()) {
        // One write per line with O_APPEND: lines of several processes do not interleave, and
        // a killed process leaves whole lines only.
        let _ = file.write_all(line.as_bytes());
    }
}

#[processor]
async fn work(ctx: Context, task: Work) -> backlite::Result<()> {
    let pid = std::process::id();
    log(&format!("start {} {pid} {}\n", ctx.task_id(), task.n));
    tokio::time::sleep(Duration::from_millis(task.millis)).await;
    if let Some(child) = task.child {
        let child = Work {
            n: child,
            millis: task.millis,
            child: None,
        };
        if let Err(e) = ctx.client().add(child).save().await {
            log(&format!("error {} {pid} {e}\n", ctx.task_id()));
            return Err(e);
        }
    }
    log(&format!("end {} {pid} {}\n", ctx.task_id(), task.n));
    Ok(())
}

/// The periodic task of the `periodic` mode.
#[derive(Clone, Serialize, Deserialize, Task)]
#[queue(name = "beat", retention)]
struct Beat;

#[processor]
async fn beat(ctx: Context, _task: Beat) -> backlite::Result<()> {
    let tick = ctx
        .task_id()
        .timestamp()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis());
    log(&format!("tick {tick} {}\n", std::process::id()));
    Ok(())
}

#[derive(Debug)]
struct Told(u32);

impl std::fmt::Display for Told {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attempt {} fails as told", self.0)
    }
}

impl std::error::Error for Told {}

#[processor]
async fn crash_work(ctx: Context, task: CrashTask) -> Result<(), Told> {
    let (n, attempt, pid) = (task.n, ctx.attempt(), std::process::id());
    log(&Line::Start {
        n,
        attempt,
        pid,
        at: crash::now_millis(),
    }
    .render());
    tokio::time::sleep(Duration::from_millis(task.millis)).await;
    let ok = attempt > task.fail_first;
    log(&Line::End {
        n,
        attempt,
        pid,
        ok,
    }
    .render());
    if ok { Ok(()) } else { Err(Told(attempt)) }
}

#[processor]
async fn leased(ctx: Context, task: Leased) -> backlite::Result<()> {
    let (id, pid, fence) = (ctx.task_id(), std::process::id(), ctx.fence());
    log(&format!(
        "start {id} {pid} {fence} {}\n",
        crash::now_millis()
    ));
    let cancelled = tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(task.millis)) => false,
        _ = ctx.cancelled() => true,
    };
    log(&format!("end {id} {pid} {fence} {cancelled}\n"));
    Ok(())
}

type Fallible<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A builder on the database the process was given, in its schema if one was given.
fn open(db: &str, schema: Option<&str>) -> ClientBuilder {
    let builder = Client::builder().database(db);
    match schema {
        Some(schema) => builder.schema(schema),
        None => builder,
    }
}

#[tokio::main]
async fn main() -> Fallible {
    let mut args: Vec<String> = std::env::args().collect();
    let usage = "usage: test_worker [--schema <schema>] <db> add <n> <millis> \
                 | produce <first> <n> <millis> <batch> \
                 | unique <keys> <batch> <offset> \
                 | work|crash|lease <log> <workers> <release_ms> \
                 | periodic <log> <interval_ms> <release_ms>";
    let schema = if args.get(1).map(String::as_str) == Some("--schema") {
        let schema = args.get(2).ok_or(usage)?.clone();
        args.drain(1..3);
        Some(schema)
    } else {
        None
    };
    let schema = schema.as_deref();
    let (db, mode) = match (args.get(1), args.get(2)) {
        (Some(db), Some(mode)) => (db.as_str(), mode.as_str()),
        _ => return Err(usage.into()),
    };
    let arg = |i: usize| -> Fallible<u64> { Ok(args.get(i).ok_or(usage)?.parse()?) };
    match mode {
        "add" => {
            let client = open(db, schema).build().await?;
            let (n, millis) = (arg(3)?, arg(4)?);
            for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
                let mut batch = client.add(Work {
                    n: chunk[0],
                    millis,
                    child: None,
                });
                for &n in &chunk[1..] {
                    batch = batch.add(Work {
                        n,
                        millis,
                        child: None,
                    });
                }
                batch.save().await?;
            }
        }
        "unique" => {
            let client = open(db, schema).build().await?;
            let (keys, batch, offset) = (arg(3)?, arg(4)?.max(1) as usize, arg(5)?);
            println!("ready");
            let mut go = String::new();
            std::io::stdin().read_line(&mut go)?;
            let order: Vec<u64> = (0..keys).map(|i| (i + offset) % keys).collect();
            let pid = std::process::id();
            for chunk in order.chunks(batch) {
                let mut add = client.add(UniqueWork { key: chunk[0], pid });
                for &key in &chunk[1..] {
                    add = add.add(UniqueWork { key, pid });
                }
                for (key, saved) in chunk.iter().zip(add.save_detailed().await?) {
                    let what = if saved.is_duplicate() {
                        "duplicate"
                    } else {
                        "added"
                    };
                    println!("key {key} {} {what}", saved.id());
                }
            }
        }
        "produce" => {
            let (first, n, millis, batch) = (arg(3)?, arg(4)?, arg(5)?, arg(6)?.max(1));
            if let Err(e) = produce(open(db, schema), first..first + n, millis, batch).await {
                eprintln!("producer error: {e}");
                std::process::exit(1);
            }
        }
        "work" | "crash" | "lease" | "periodic" => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(args.get(3).ok_or(usage)?)?;
            let _ = LOG.set(std::sync::Mutex::new(file));
            let builder = match mode {
                "work" => open(db, schema)
                    .workers(arg(4)? as usize)
                    .processors(processors![work]),
                "crash" => open(db, schema)
                    .workers(arg(4)? as usize)
                    .processors(processors![crash_work]),
                "lease" => open(db, schema)
                    .workers(arg(4)? as usize)
                    .processors(processors![leased]),
                _ => {
                    let every = Schedule::every(Duration::from_millis(arg(4)?))
                        .catch_up(CatchUp::All { limit: 100_000 });
                    open(db, schema)
                        .workers(2)
                        .processors(processors![beat])
                        .periodic(every, Beat)
                }
            };
            let client = builder
                .release_after(Duration::from_millis(arg(5)?))
                .build()
                .await?;
            client.start();
            println!("ready");
            // Serve until stdin closes: the parent ends us by closing it, or kills us.
            tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                while std::io::stdin()
                    .read_line(&mut sink)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {}
            })
            .await?;
            if !client.stop(Duration::from_secs(10)).await {
                return Err("stop timed out".into());
            }
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}

/// Adds tasks in small batches while other processes claim and complete: every `save` must
/// succeed, however busy the file is.
async fn produce(
    builder: ClientBuilder,
    range: std::ops::Range<u64>,
    millis: u64,
    batch: u64,
) -> Fallible {
    let client = builder.build().await?;
    let mut rng = crash::Rng::new(range.start);
    let mut next = range.start;
    while next < range.end {
        let size = (1 + rng.below(batch)).min(range.end - next);
        let work = |n: u64| Work {
            n,
            millis,
            // Children are numbered past the producer's range, so every `n` stays unique.
            child: n.is_multiple_of(10).then_some(n + 1_000_000),
        };
        let mut add = client.add(work(next));
        for n in next + 1..next + size {
            add = add.add(work(n));
        }
        add.save().await?;
        next += size;
        tokio::time::sleep(Duration::from_millis(rng.below(4))).await;
    }
    Ok(())
}
