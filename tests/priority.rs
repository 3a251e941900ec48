//! Priority and expiry of waiting tasks at the client level, on every backend: the order a
//! started client runs tasks in, and what becomes of a task not started by its expiry.
//!
//! PostgreSQL runs when `BACKLITE_TEST_POSTGRES_URL` is set (see `common::pg_schema`).

mod common;

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use backlite::{Client, Explanation, Task, TaskStatus, processor, processors};
use common::backend::{TestDb, open_postgres, open_sqlite};
use common::{eventually, eventually_async};
use serde::{Deserialize, Serialize};

/// Long enough for anything to happen on a loaded machine; a passing test never waits it out.
const SHORT: Duration = Duration::from_secs(10);

macro_rules! priority_suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            use super::*;

            priority_suite!(@tests $open;
                a_started_client_runs_higher_priorities_first,
                a_task_not_started_by_its_expiry_never_runs_and_ends_failed,
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

priority_suite!(sqlite, open_sqlite);
priority_suite!(postgres, open_postgres);

/// A queue whose tasks have priority 2 unless an add says otherwise; failed tasks are kept.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "ranked", priority = 2, retention(only_failed, data))]
struct Ranked {
    key: String,
    label: String,
}

/// The labels each test's tasks ran with, in the order they started.
static STARTED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

#[processor]
async fn run_ranked(task: Ranked) -> Result<(), std::io::Error> {
    STARTED.lock().unwrap().push((task.key, task.label));
    Ok(())
}

fn started(key: &str) -> Vec<String> {
    let started = STARTED.lock().unwrap();
    started
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, label)| label.clone())
        .collect()
}

async fn client_on(db: &TestDb, workers: usize) -> Client {
    db.builder()
        .workers(workers)
        // The sweep of expired tasks shares the release's cadence: a tenth of this.
        .release_after(Duration::from_secs(1))
        .processors(processors![run_ranked])
        .build()
        .await
        .expect("build")
}

fn ranked(key: &str, label: &str) -> Ranked {
    Ranked {
        key: key.into(),
        label: label.into(),
    }
}

/// A backlog at priority 0 added first, then one task at the queue's default (2) and one at
/// 9: one worker runs the 9, then the 2, then the backlog in the order it was added.
async fn a_started_client_runs_higher_priorities_first(db: TestDb) {
    let key = db.key("ranked");
    let client = client_on(&db, 1).await;
    let mut backlog = client.add(ranked(&key, "low-0"));
    for n in 1..50 {
        backlog = backlog.add(ranked(&key, &format!("low-{n}")));
    }
    backlog.priority(0).save().await.unwrap();
    client.add(ranked(&key, "default")).save().await.unwrap();
    let urgent = client
        .add(ranked(&key, "urgent"))
        .priority(9)
        .save()
        .await
        .unwrap();
    let info = client.task(&urgent[0]).await.unwrap().unwrap();
    assert_eq!(info.priority, Some(9));
    client.start();
    assert!(eventually(SHORT, || started(&key).len() == 52).await);
    assert!(client.stop(SHORT).await);
    let order = started(&key);
    let expected: Vec<String> = ["urgent", "default"]
        .into_iter()
        .map(String::from)
        .chain((0..50).map(|n| format!("low-{n}")))
        .collect();
    assert_eq!(order, expected);
}

/// A task whose expiry has passed before any worker could take it never runs: explain says
/// so, and the sweep ends it as failed with the "expired" error in its history, kept as the
/// queue keeps failed tasks. A task added alongside without an expiry runs.
async fn a_task_not_started_by_its_expiry_never_runs_and_ends_failed(db: TestDb) {
    let key = db.key("expiring");
    let client = client_on(&db, 2).await;
    let expired = client
        .add(ranked(&key, "expired"))
        .expires_at(SystemTime::now() - Duration::from_secs(1))
        .save()
        .await
        .unwrap()[0];
    let later = client
        .add(ranked(&key, "later"))
        .expires_in(Duration::from_secs(3600))
        .save()
        .await
        .unwrap()[0];
    let info = client.task(&expired).await.unwrap().unwrap();
    assert!(info.pending_expires_at.is_some() && info.expires_at.is_none());
    assert!(matches!(
        client.explain(&expired).await.unwrap(),
        Explanation::Expired { .. }
    ));

    client.start();
    let ended = eventually_async(SHORT, || async {
        client.status(&expired).await.ok() == Some(TaskStatus::Failed)
    })
    .await;
    assert!(ended, "the expired task was not swept");
    assert!(eventually(SHORT, || started(&key) == ["later"]).await);
    assert!(client.stop(SHORT).await);
    assert_eq!(started(&key), ["later"], "the expired task ran");
    let info = client.task(&expired).await.unwrap().unwrap();
    assert_eq!(info.state, TaskStatus::Failed);
    assert_eq!(info.attempts, 0);
    let messages: Vec<&str> = info.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["expired"]);
    assert!(info.payload().unwrap().is_some(), "kept with its payload");
    assert!(matches!(
        client.explain(&expired).await.unwrap(),
        Explanation::Failed { .. }
    ));
    assert_eq!(client.status(&later).await.unwrap(), TaskStatus::NotFound);
}
