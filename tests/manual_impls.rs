use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backlite::{BoxError, Client, Context, Processor, QueueConfig, Task, TaskStatus};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Ping(u32);
impl Task for Ping {
    const CONFIG: QueueConfig = QueueConfig::builder("ping").max_attempts(2).build();
}
static RUNS: AtomicUsize = AtomicUsize::new(0);
struct PingProc;
impl Processor for PingProc {
    type Task = Ping;
    async fn process(_ctx: Context, task: Ping) -> Result<(), BoxError> {
        RUNS.fetch_add(1, Ordering::SeqCst);
        if task.0 == 13 {
            return Err("unlucky".into());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .database(dir.path().join("q.db"))
        .workers(4)
        .processors(backlite::__private::registry([
            backlite::__private::entry::<PingProc>(),
        ]))
        .build()
        .await
        .unwrap();
    client.start();
    let ids = client.add(Ping(1)).add(Ping(13)).save().await.unwrap();
    for _ in 0..100 {
        if RUNS.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(RUNS.load(Ordering::SeqCst), 3);
    assert_eq!(client.status(&ids[0]).await.unwrap(), TaskStatus::NotFound);
    println!("{:?}", client.stats().await.unwrap());
    assert!(client.stop(Duration::from_secs(1)).await);
}
