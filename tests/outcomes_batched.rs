//! Outcomes are committed in batches by the dispatcher's completer: `stop` must still return
//! only once every outcome of a finished task is in the database, and a large backlog must
//! drain with every task run exactly once when nothing fails.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backlite::{Client, Task, processor, processors};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "count")]
struct Count(u32);

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[processor]
async fn count(_task: Count) -> Result<(), Infallible> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_waits_for_every_outcome() {
    const N: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .database(dir.path().join("q.db"))
        .workers(8)
        .processors(processors![count])
        .build()
        .await
        .unwrap();
    for first in (0..N as u32).step_by(500) {
        let mut add = client.add(Count(first));
        for i in first + 1..first + 500 {
            add = add.add(Count(i));
        }
        add.save().await.unwrap();
    }
    client.start();
    while RUNS.load(Ordering::SeqCst) < N {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Stop at once: the last outcomes may still be on their way to the database.
    assert!(client.stop(Duration::from_secs(5)).await);
    assert_eq!(RUNS.load(Ordering::SeqCst), N, "a task ran twice");
    let stats = client.stats().await.unwrap();
    let left: u64 = stats
        .iter()
        .map(|s| s.pending + s.scheduled + s.running)
        .sum();
    assert_eq!(left, 0, "outcomes missing after stop: {stats:?}");
}
