//! The backlite half of every compatibility application, included by each with `#[path]`: a
//! client on the application's database file runs one task from save to success.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backlite::{Client, Task, TaskId, TaskStatus, processor, processors};
use serde::{Deserialize, Serialize};

/// Long enough for a loaded CI machine; a task that runs at all runs in milliseconds.
const DEADLINE: Duration = Duration::from_secs(60);

static RAN: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "compat", retention)]
pub struct Note {
    pub body: String,
}

#[processor]
async fn note(task: Note) -> Result<(), std::convert::Infallible> {
    assert!(!task.body.is_empty());
    RAN.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// A client on `path`, not started.
pub async fn client(path: &Path) -> anyhow::Result<Client> {
    let client = Client::builder()
        .database(path)
        .processors(processors![note])
        .build()
        .await?;
    Ok(client)
}

/// Saves one task, starts the client, waits until that task and the `saved` ones succeeded,
/// and stops the client.
pub async fn run_one_task(client: &Client, saved: &[TaskId]) -> anyhow::Result<()> {
    let mut ids = client
        .add(Note {
            body: "from backlite".into(),
        })
        .save()
        .await?;
    ids.extend_from_slice(saved);
    client.start();
    let start = Instant::now();
    for id in &ids {
        loop {
            match client.status(id).await? {
                TaskStatus::Succeeded => break,
                TaskStatus::Pending | TaskStatus::Running if start.elapsed() < DEADLINE => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                status => anyhow::bail!("task {id}: {status:?} after {:?}", start.elapsed()),
            }
        }
    }
    anyhow::ensure!(client.stop(Duration::from_secs(10)).await, "stop timed out");
    let ran = RAN.load(Ordering::SeqCst);
    anyhow::ensure!(ran == ids.len(), "{ran} runs for {} tasks", ids.len());
    Ok(())
}

/// The SQLite library linked into the application, shared by backlite and the other crate.
pub fn sqlite_version() -> &'static str {
    backlite::rusqlite::version()
}
