//! Snooze and cancel from a processor, and per-queue concurrency limits, on every backend:
//! each test builds its client on a fresh database (a new SQLite file, or a new PostgreSQL
//! schema) and observes what the processors see and what the database holds.
//!
//! PostgreSQL runs when `BACKLITE_TEST_POSTGRES_URL` is set (see `common::pg_schema`).

mod common;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use backlite::{
    BoxError, Cancel, Client, Context, Snooze, Task, TaskStatus, processor, processors,
};
use common::backend::{TestDb, open_postgres, open_sqlite};
use common::{eventually, eventually_async, record, runs};
use serde::{Deserialize, Serialize};

/// Long enough for anything to happen on a loaded machine; a passing test never waits it out.
const LONG: Duration = Duration::from_secs(20);

macro_rules! dispatch_suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            use super::*;

            dispatch_suite!(@tests $open;
                a_snoozing_processor_runs_again_without_spending_attempts,
                a_cancelling_processor_runs_once_and_ends_cancelled_with_its_reason,
                a_limited_queue_never_runs_more_than_its_limit_while_others_flow,
                drain_runs_no_more_of_a_limited_queue_at_once_than_its_limit,
            );
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

dispatch_suite!(sqlite, open_sqlite);
dispatch_suite!(postgres, open_postgres);

async fn client_on(db: &TestDb, workers: usize, registry: backlite::Registry) -> Client {
    db.builder()
        .workers(workers)
        .processors(registry)
        .build()
        .await
        .expect("build")
}

async fn reaches(client: &Client, id: &backlite::TaskId, wanted: TaskStatus) -> bool {
    eventually_async(LONG, || async {
        client.status(id).await.expect("status") == wanted
    })
    .await
}

// ---------------------------------------------------------------- snooze

/// Snoozes `snoozes` times, then succeeds. One attempt only: a snooze that counted would
/// fail it.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "snoozer", max_attempts = 1, retention)]
struct Snoozer {
    key: String,
    snoozes: usize,
    snooze_ms: u64,
}

#[processor]
async fn run_snoozer(ctx: Context, task: Snoozer) -> Result<(), BoxError> {
    record(&task.key, &ctx);
    if runs(&task.key).len() <= task.snoozes {
        return Err(Snooze(Duration::from_millis(task.snooze_ms)).into());
    }
    Ok(())
}

async fn a_snoozing_processor_runs_again_without_spending_attempts(db: TestDb) {
    let key = db.key("snooze");
    let client = client_on(&db, 4, processors![run_snoozer]).await;
    client.start();
    let (snoozes, snooze) = (3, Duration::from_millis(150));
    let id = client
        .add(Snoozer {
            key: key.clone(),
            snoozes,
            snooze_ms: snooze.as_millis() as u64,
        })
        .save()
        .await
        .expect("save")[0];
    assert!(reaches(&client, &id, TaskStatus::Succeeded).await);
    let runs = runs(&key);
    assert_eq!(runs.len(), snoozes + 1, "runs: {runs:?}");
    assert!(
        runs.iter().all(|r| r.attempt == 1),
        "a snooze counted as an attempt: {runs:?}"
    );
    for pair in runs.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= snooze,
            "ran again {gap:?} after a snooze of {snooze:?}"
        );
    }
    let info = client.task(&id).await.expect("task").expect("retained");
    assert_eq!(info.attempts, 1, "only the attempt that succeeded counts");
    assert!(
        info.errors.is_empty(),
        "a snooze wrote errors: {:?}",
        info.errors
    );
    assert!(client.stop(Duration::from_secs(5)).await);
}

// ---------------------------------------------------------------- cancel

/// Cancels itself on its first run; it would have had four more attempts.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(
    name = "canceller",
    max_attempts = 5,
    backoff = "10ms",
    retention(data)
)]
struct Canceller {
    key: String,
}

/// Declares `backlite::Result`: the cancel goes through `From<Cancel> for backlite::Error`.
#[processor]
async fn run_canceller(ctx: Context, task: Canceller) -> backlite::Result<()> {
    record(&task.key, &ctx);
    Err(Cancel("the order was withdrawn".into()).into())
}

async fn a_cancelling_processor_runs_once_and_ends_cancelled_with_its_reason(db: TestDb) {
    let key = db.key("cancel");
    let client = client_on(&db, 4, processors![run_canceller]).await;
    client.start();
    let id = client
        .add(Canceller { key: key.clone() })
        .save()
        .await
        .expect("save")[0];
    assert!(reaches(&client, &id, TaskStatus::Cancelled).await);
    let info = client.task(&id).await.expect("task").expect("retained");
    assert_eq!(info.state, TaskStatus::Cancelled);
    let messages: Vec<_> = info.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["the order was withdrawn"]);
    // Give a wrongly scheduled retry (10 ms backoff) ample time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs(&key).len(), 1, "a cancelled task ran again");
    assert!(client.stop(Duration::from_secs(5)).await);
}

// ---------------------------------------------------------------- concurrency

/// How many tasks of a limited queue run now and at most, per test key, and whether they may
/// finish yet.
#[derive(Default)]
struct Gauge {
    running: usize,
    most: usize,
    open: bool,
}

static GAUGES: LazyLock<Mutex<HashMap<String, Gauge>>> = LazyLock::new(Default::default);

fn gauge<T>(key: &str, f: impl FnOnce(&mut Gauge) -> T) -> T {
    f(GAUGES.lock().unwrap().entry(key.to_owned()).or_default())
}

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "limited", concurrency = 2)]
struct Limited {
    key: String,
}

/// Counts itself running, then waits until the test opens the gate.
#[processor]
async fn run_limited(task: Limited) -> Result<(), BoxError> {
    gauge(&task.key, |g| {
        g.running += 1;
        g.most = g.most.max(g.running);
    });
    while !gauge(&task.key, |g| g.open) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gauge(&task.key, |g| g.running -= 1);
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "flowing")]
struct Flowing {
    key: String,
}

#[processor]
async fn run_flowing(ctx: Context, task: Flowing) -> Result<(), BoxError> {
    record(&task.key, &ctx);
    Ok(())
}

async fn a_limited_queue_never_runs_more_than_its_limit_while_others_flow(db: TestDb) {
    let key = db.key("limited");
    let client = client_on(&db, 8, processors![run_limited, run_flowing]).await;
    let mut limited = client.add(Limited { key: key.clone() });
    for _ in 1..6 {
        limited = limited.add(Limited { key: key.clone() });
    }
    limited.save().await.expect("save");
    client.start();
    // The limited queue takes its two workers and holds them until the gate opens.
    assert!(eventually(LONG, || gauge(&key, |g| g.running) == 2).await);
    let mut flowing = client.add(Flowing { key: key.clone() });
    for _ in 1..40 {
        flowing = flowing.add(Flowing { key: key.clone() });
    }
    flowing.save().await.expect("save");
    assert!(
        eventually(LONG, || runs(&key).len() == 40).await,
        "the other queue stalled behind the limited one: {} of 40 ran",
        runs(&key).len()
    );
    // No more than its limit claimed, not only running: the rest wait unclaimed for any
    // process to take.
    let stats = client.stats().await.expect("stats");
    let limited_stats = stats.iter().find(|s| s.queue == "limited").expect("stats");
    assert_eq!((limited_stats.running, limited_stats.pending), (2, 4));
    assert_eq!(gauge(&key, |g| g.most), 2);
    gauge(&key, |g| g.open = true);
    assert!(
        eventually_async(LONG, || async {
            client
                .stats()
                .await
                .expect("stats")
                .iter()
                .all(|s| s.queue != "limited" || s.pending + s.running == 0)
        })
        .await
    );
    assert_eq!(
        gauge(&key, |g| g.most),
        2,
        "more than the limit ran at once"
    );
    assert!(client.stop(Duration::from_secs(5)).await);
}

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "drained_limited", concurrency = 2)]
struct DrainedLimited {
    key: String,
}

/// Counts itself running for a moment, long enough for others started with it to overlap.
#[processor]
async fn run_drained_limited(task: DrainedLimited) -> Result<(), BoxError> {
    gauge(&task.key, |g| {
        g.running += 1;
        g.most = g.most.max(g.running);
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    gauge(&task.key, |g| g.running -= 1);
    Ok(())
}

async fn drain_runs_no_more_of_a_limited_queue_at_once_than_its_limit(db: TestDb) {
    let key = db.key("drained_limited");
    let client = client_on(&db, 8, processors![run_drained_limited]).await;
    let mut tasks = client.add(DrainedLimited { key: key.clone() });
    for _ in 1..6 {
        tasks = tasks.add(DrainedLimited { key: key.clone() });
    }
    tasks.save().await.expect("save");
    assert_eq!(client.drain().await.expect("drain"), 6);
    assert_eq!(gauge(&key, |g| g.most), 2);
}
