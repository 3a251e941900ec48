//! The metrics, as a Prometheus scrape shows them: counters, histograms and gauges move as
//! tasks are added, run, retried, failed and released. One recorder serves the whole test
//! binary, so each test reads only its own queues.

use std::sync::OnceLock;
use std::time::Duration;

use backlite::testing::TestClock;
use backlite::{Client, Context, Task, TaskEvent, processor, processors};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

/// The value of the sample `series` (name and labels, as rendered), if scraped.
fn sample(series: &str) -> Option<f64> {
    prometheus().render().lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.parse().unwrap())
    })
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "metrics_charges", max_attempts = 2, backoff = "1m")]
struct Charge {
    ok: bool,
}

#[processor]
async fn charge(task: Charge) -> Result<(), std::io::Error> {
    match task.ok {
        true => Ok(()),
        false => Err(std::io::Error::other("declined")),
    }
}

#[tokio::test]
async fn counters_and_histograms_follow_each_attempt() {
    prometheus();
    let clock = TestClock::new();
    let client = Client::builder()
        .database(":memory:")
        .processors(processors![charge])
        .test_clock(clock.clone())
        .build()
        .await
        .unwrap();
    let q = r#"{queue="metrics_charges"}"#;
    let count = |name: &str| sample(&format!("{name}{q}")).unwrap_or(0.0);

    client
        .add(Charge { ok: true })
        .add(Charge { ok: false })
        .save()
        .await
        .unwrap();
    assert_eq!(count("backlite_tasks_added_total"), 2.0);
    assert_eq!(count("backlite_tasks_succeeded_total"), 0.0);

    assert_eq!(client.drain().await.unwrap(), 2);
    assert_eq!(count("backlite_tasks_succeeded_total"), 1.0);
    assert_eq!(count("backlite_tasks_retried_total"), 1.0);
    assert_eq!(count("backlite_tasks_failed_total"), 0.0);

    // The retry is due a minute later and starts half a minute after that.
    clock.advance(Duration::from_secs(90));
    assert_eq!(client.drain().await.unwrap(), 1);
    assert_eq!(count("backlite_tasks_failed_total"), 1.0);
    assert_eq!(count("backlite_attempt_duration_seconds_count"), 3.0);
    assert_eq!(count("backlite_pickup_latency_seconds_count"), 3.0);
    assert_eq!(count("backlite_pickup_latency_seconds_sum"), 30.0);
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "metrics_stuck")]
struct Stuck;

/// Runs until its attempt is cancelled, as a worker that hangs would.
#[processor]
async fn hang(ctx: Context, _task: Stuck) -> Result<(), std::io::Error> {
    ctx.cancelled().await;
    Ok(())
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "metrics_elsewhere")]
struct Elsewhere;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_tasks_are_counted_and_queue_depth_is_a_gauge() {
    prometheus();
    let clock = TestClock::new();
    let (events, mut received) = mpsc::unbounded_channel();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("released.db");
    let client = Client::builder()
        .database(&path)
        .processors(processors![hang])
        .release_after(Duration::from_secs(1))
        .test_clock(clock.clone())
        .on_event(move |event: &TaskEvent<'_>| {
            let _ = events.send(format!("{event:?}"));
        })
        .build()
        .await
        .unwrap();
    // Tasks of a queue this client does not serve: counted, never run.
    client.add(Elsewhere).add(Elsewhere).save().await.unwrap();
    client.add(Stuck).save().await.unwrap();
    // A worker of another process claimed it under a lease of a second, then died: no one
    // renews that lease.
    let now = clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let claimed = backlite::rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE backlite_tasks SET state = 1, claimed_at = ?1, lease_until = ?1 + 1000, \
             fence = fence + 1 WHERE queue = 'metrics_stuck'",
            [now],
        )
        .unwrap();
    assert_eq!(claimed, 1);
    client.start();
    // Deadlines below only guard against a hang; nothing waits for a set time.
    let next = async |received: &mut mpsc::UnboundedReceiver<String>| {
        tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .unwrap()
            .unwrap()
    };
    let released_before = sample("backlite_tasks_released_total").unwrap_or(0.0);
    // Once the dead worker's lease has ended, the task is released and runs here.
    clock.advance(Duration::from_secs(2));
    // The release wakes the dispatcher as it commits, so the run may be reported first.
    let mut two = [next(&mut received).await, next(&mut received).await];
    two.sort_by_key(|event| !event.starts_with("Released"));
    assert_eq!(two[0], "Released { count: 1 }", "{two:?}");
    assert!(two[1].starts_with("Started"), "{two:?}");
    assert_eq!(
        sample("backlite_tasks_released_total").unwrap() - released_before,
        1.0
    );

    // Read when the client started, and every 5 seconds after.
    let depth = r#"backlite_queue_depth{queue="metrics_elsewhere",state="pending"}"#;
    let gauge = async {
        while sample(depth) != Some(2.0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), gauge)
        .await
        .expect("no queue depth gauge");
    client.stop(Duration::from_millis(100)).await;
}
