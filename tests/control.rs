//! Control of queues and tasks through the client, on every backend: pause and resume (one
//! client, and two clients on one database), the queue list, cancel, retry, retry_failed,
//! run_now, delete and purge. `control_suite!(backend, open)` instantiates every test for one
//! backend, as `client_suite!` does in tests/backends.rs.
//!
//! PostgreSQL runs when `BACKLITE_TEST_POSTGRES_URL` is set (see `common::pg_schema`).

mod common;

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use backlite::{Client, Context, Error, Purge, Task, TaskId, TaskStatus, processor, processors};
use common::backend::{TestDb, open_postgres, open_sqlite};
use common::{eventually, eventually_async, record, runs};
use serde::{Deserialize, Serialize};

/// Long enough for anything to happen on a loaded machine; a passing test never waits it out.
const SHORT: Duration = Duration::from_secs(10);

/// The promise of pause and resume: a process stops and starts claiming a queue within this.
const PROMPT: Duration = Duration::from_secs(1);

macro_rules! control_suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            use super::*;

            control_suite!(@tests $open;
                pause_and_resume_stop_and_restart_one_queue_of_a_running_client,
                pause_and_resume_by_another_client_reach_the_running_one,
                queues_lists_every_known_queue_with_its_counts_and_pause,
                queue_names_are_checked_and_unknown_queues_can_be_paused,
                a_cancelled_waiting_task_never_runs_and_is_kept_as_its_queue_says,
                cancelling_a_running_task_marks_it_and_it_stays_running,
                retry_runs_a_failed_task_again_and_refuses_a_running_duplicate,
                retry_failed_reruns_a_queue_s_failed_and_cancelled_tasks,
                run_now_starts_a_scheduled_task_at_once,
                delete_removes_waiting_and_retained_tasks_but_not_running_ones,
                purge_deletes_retained_tasks_by_queue_outcome_and_age,
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

control_suite!(sqlite, open_sqlite);
control_suite!(postgres, open_postgres);

// ---------------------------------------------------------------- tasks and processors

/// Records its run; fails when told to. Retains every outcome with its payload.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "ctl_gate", max_attempts = 1, retention(data))]
struct Gate {
    key: String,
    #[serde(default)]
    fail: bool,
}

#[processor]
async fn run_gate(ctx: Context, task: Gate) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    anyhow::ensure!(!task.fail, "told to fail");
    Ok(())
}

/// Records its run; a queue that keeps flowing while another is paused.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "ctl_flow", max_attempts = 1)]
struct Flow {
    key: String,
}

#[processor]
async fn run_flow(ctx: Context, task: Flow) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    Ok(())
}

/// Runs until the test lets it go.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "ctl_hold", max_attempts = 1, retention(data))]
struct Hold {
    key: String,
}

/// The keys of the `Hold` tasks let go (tests run at once, each with its own keys).
static RELEASED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

fn release(key: &str) {
    RELEASED.lock().unwrap().insert(key.to_owned());
}

#[processor]
async fn run_hold(ctx: Context, task: Hold) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    while !RELEASED.lock().unwrap().contains(&task.key) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// No retention: a cancelled task of this queue is deleted.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "ctl_forget")]
struct Forget {
    key: String,
}

#[processor]
async fn run_forget(ctx: Context, task: Forget) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    Ok(())
}

/// A queue no client of these tests serves.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "ctl_unserved")]
struct Unserved {
    key: String,
}

async fn client_on(db: &TestDb, registry: backlite::Registry) -> Client {
    db.builder()
        .workers(4)
        .processors(registry)
        .build()
        .await
        .expect("build")
}

fn gate(key: &str) -> Gate {
    Gate {
        key: key.into(),
        fail: false,
    }
}

/// An id no task has.
fn unknown_id() -> TaskId {
    "01234567-89ab-7def-8123-456789abcdef"
        .parse()
        .expect("a task id")
}

async fn status(client: &Client, id: &TaskId) -> TaskStatus {
    client.status(id).await.expect("status")
}

/// Whether task `id` reaches `wanted` within `SHORT`.
async fn reaches(client: &Client, id: &TaskId, wanted: TaskStatus) -> bool {
    eventually_async(SHORT, || async { status(client, id).await == wanted }).await
}

/// Adds a `Flow` task and waits for it to run: the dispatcher has claimed since anything
/// before this call.
async fn flows(client: &Client, key: &str) {
    client.add(Flow { key: key.into() }).save().await.unwrap();
    assert!(
        eventually(SHORT, || runs(key).len() == 1).await,
        "the other queue stopped flowing"
    );
}

/// How long after `since` the first run recorded under `key` started, waiting for it.
async fn started_after(key: &str, since: Instant) -> Duration {
    assert!(
        eventually(SHORT, || !runs(key).is_empty()).await,
        "{key} never ran"
    );
    runs(key)[0].at.saturating_duration_since(since)
}

// ---------------------------------------------------------------- pause and resume

/// `worker` runs `ctl_gate` and `ctl_flow`; `controller` pauses and resumes `ctl_gate`.
async fn pause_and_resume_reach(db: &TestDb, worker: &Client, controller: &Client, name: &str) {
    worker.start();
    let key = |what: &str| db.key(&format!("{name}-{what}"));
    // Running at first.
    worker.add(gate(&key("before"))).save().await.unwrap();
    assert!(eventually(SHORT, || runs(&key("before")).len() == 1).await);

    assert!(controller.pause_queue("ctl_gate").await.unwrap());
    assert!(
        !controller.pause_queue("ctl_gate").await.unwrap(),
        "paused twice"
    );
    // Adding to a paused queue works; the task waits while the other queue flows.
    let held = controller.add(gate(&key("held"))).save().await.unwrap();
    for round in 0..3 {
        flows(worker, &key(&format!("flow-{round}"))).await;
        tokio::time::sleep(PROMPT / 3).await;
    }
    assert!(runs(&key("held")).is_empty(), "a paused queue's task ran");
    assert_eq!(status(worker, &held[0]).await, TaskStatus::Pending);

    assert!(controller.resume_queue("ctl_gate").await.unwrap());
    let resumed = Instant::now();
    let delay = started_after(&key("held"), resumed).await;
    assert!(delay < PROMPT, "the resumed queue started after {delay:?}");
    assert!(
        !controller.resume_queue("ctl_gate").await.unwrap(),
        "resumed twice"
    );
    assert!(worker.stop(SHORT).await);
}

async fn pause_and_resume_stop_and_restart_one_queue_of_a_running_client(db: TestDb) {
    let client = client_on(&db, processors![run_gate, run_flow]).await;
    pause_and_resume_reach(&db, &client, &client, "one").await;
}

/// Another client on the database (another process, in effect: its own connections) pauses
/// and resumes; on SQLite the running client sees the commit by its change check, on
/// PostgreSQL by the NOTIFY.
async fn pause_and_resume_by_another_client_reach_the_running_one(db: TestDb) {
    let worker = client_on(&db, processors![run_gate, run_flow]).await;
    let controller = db.builder().build().await.expect("build");
    pause_and_resume_reach(&db, &worker, &controller, "two").await;
}

async fn queues_lists_every_known_queue_with_its_counts_and_pause(db: TestDb) {
    let client = client_on(&db, processors![run_gate, run_flow]).await;
    assert!(client.queues().await.unwrap().is_empty());
    let before = SystemTime::now() - Duration::from_secs(60);
    client.pause_queue("ctl_paused_early").await.unwrap();
    client
        .add(gate(&db.key("q-due")))
        .add(Unserved {
            key: db.key("q-unserved"),
        })
        .save()
        .await
        .unwrap();
    client
        .add(gate(&db.key("q-later")))
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap();
    let cancelled = client
        .add(gate(&db.key("q-cancelled")))
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap();
    assert!(client.cancel(&cancelled[0]).await.unwrap());
    client.start();
    let failing = client
        .add(Gate {
            key: db.key("q-fails"),
            fail: true,
        })
        .save()
        .await
        .unwrap();
    assert!(reaches(&client, &failing[0], TaskStatus::Failed).await);
    assert!(eventually(SHORT, || runs(&db.key("q-due")).len() == 1).await);
    assert!(client.stop(SHORT).await);

    let queues = client.queues().await.unwrap();
    let names: Vec<_> = queues.iter().map(|q| q.name()).collect();
    assert_eq!(names, ["ctl_gate", "ctl_paused_early", "ctl_unserved"]);
    let counts = |q: &backlite::QueueInfo| {
        let s = &q.stats;
        (
            s.pending,
            s.scheduled,
            s.running,
            s.succeeded,
            s.failed,
            s.cancelled,
        )
    };
    assert_eq!(counts(&queues[0]), (0, 1, 0, 1, 1, 1), "{queues:?}");
    assert!(!queues[0].is_paused());
    assert_eq!(counts(&queues[1]), (0, 0, 0, 0, 0, 0));
    let since = queues[1].paused_since.expect("paused");
    assert!(since > before && since < SystemTime::now() + Duration::from_secs(60));
    assert_eq!(counts(&queues[2]), (1, 0, 0, 0, 0, 0));
    // `stats` agrees, and no longer counts the cancelled task as failed.
    let stats = client.stats().await.unwrap();
    let gate_stats = stats.iter().find(|s| s.queue == "ctl_gate").unwrap();
    assert_eq!((gate_stats.failed, gate_stats.cancelled), (1, 1));
}

async fn queue_names_are_checked_and_unknown_queues_can_be_paused(db: TestDb) {
    let client = db.builder().build().await.expect("build");
    for bad in ["", "has space", &"x".repeat(101)] {
        let error = client.pause_queue(bad).await.unwrap_err();
        assert!(
            matches!(&error, Error::InvalidQueueName { name, .. } if name == bad),
            "{error:?}"
        );
        assert!(matches!(
            client.retry_failed(bad).await,
            Err(Error::InvalidQueueName { .. })
        ));
        assert!(matches!(
            client.purge(Purge::new().queue(bad)).await,
            Err(Error::InvalidQueueName { .. })
        ));
    }
    assert!(client.pause_queue("nobody.serves:this").await.unwrap());
    assert!(client.resume_queue("nobody.serves:this").await.unwrap());
    assert!(!client.resume_queue("never-paused").await.unwrap());
}

// ---------------------------------------------------------------- cancel

async fn a_cancelled_waiting_task_never_runs_and_is_kept_as_its_queue_says(db: TestDb) {
    let client = client_on(&db, processors![run_gate, run_forget, run_flow]).await;
    let kept = client.add(gate(&db.key("c-kept"))).save().await.unwrap()[0];
    let forgotten = client
        .add(Forget {
            key: db.key("c-forgotten"),
        })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap()[0];
    let unserved = client
        .add(Unserved {
            key: db.key("c-unserved"),
        })
        .save()
        .await
        .unwrap()[0];
    for id in [kept, forgotten, unserved] {
        assert!(client.cancel(&id).await.unwrap());
        assert!(!client.cancel(&id).await.unwrap(), "cancelled twice");
    }
    // `ctl_gate` retains failures with their payload; `ctl_forget` retains nothing; this
    // client does not know `ctl_unserved`'s retention, so keeps it whole, without expiry.
    assert_eq!(status(&client, &kept).await, TaskStatus::Cancelled);
    assert_eq!(status(&client, &forgotten).await, TaskStatus::NotFound);
    assert_eq!(status(&client, &unserved).await, TaskStatus::Cancelled);
    for id in [kept, unserved] {
        let row = db.completed_row(&id).await.expect("retained");
        assert!(row.payload.is_some() && row.expires_at.is_none(), "{row:?}");
        assert_eq!(
            (row.error.as_deref(), row.succeeded),
            (Some("cancelled"), false)
        );
    }
    client.start();
    flows(&client, &db.key("c-flow")).await;
    assert!(runs(&db.key("c-kept")).is_empty(), "a cancelled task ran");
    assert!(runs(&db.key("c-forgotten")).is_empty());
    assert!(!client.cancel(&unknown_id()).await.unwrap());
    assert!(client.stop(SHORT).await);
}

async fn cancelling_a_running_task_marks_it_and_it_stays_running(db: TestDb) {
    let client = client_on(&db, processors![run_hold]).await;
    client.start();
    let key = db.key("c-running");
    let id = client.add(Hold { key: key.clone() }).save().await.unwrap()[0];
    assert!(eventually(SHORT, || runs(&key).len() == 1).await);
    assert!(client.cancel(&id).await.unwrap());
    assert!(
        client.cancel(&id).await.unwrap(),
        "asked again: still running"
    );
    assert_eq!(status(&client, &id).await, TaskStatus::Running);
    assert!(
        cancel_requested(&db, &id).await,
        "the request is stored for its worker"
    );
    assert!(db.completed_row(&id).await.is_none());
    release(&key);
    assert!(client.stop(SHORT).await);
}

/// Whether task `id`'s row carries a cancel request, read behind backlite's back.
async fn cancel_requested(db: &TestDb, id: &TaskId) -> bool {
    let at: Option<i64> = match db {
        TestDb::Sqlite(file) => file
            .conn()
            .query_row(
                "SELECT cancel_requested_at FROM backlite_tasks WHERE id = ?1",
                [&common::uuid_bytes(id)[..]],
                |r| r.get(0),
            )
            .expect("read the task"),
        TestDb::Postgres(pg) => pg
            .conn
            .query_one(
                format!(
                    "SELECT cancel_requested_at FROM \"{}\".backlite_tasks \
                     WHERE id = $1::text::uuid",
                    pg.schema
                )
                .as_str(),
                &[&id.to_string()],
            )
            .await
            .expect("read the task")
            .get(0),
    };
    at.is_some()
}

// ---------------------------------------------------------------- retry

async fn retry_runs_a_failed_task_again_and_refuses_a_running_duplicate(db: TestDb) {
    let client = client_on(&db, processors![run_gate, run_hold]).await;
    client.start();
    let key = db.key("r-fails");
    let failing = Gate {
        key: key.clone(),
        fail: true,
    };
    let id = client.add(failing).save().await.unwrap()[0];
    assert!(reaches(&client, &id, TaskStatus::Failed).await);
    assert!(client.retry(&id).await.unwrap());
    assert!(eventually(SHORT, || runs(&key).len() == 2).await);
    let rerun = &runs(&key)[1];
    assert_eq!(
        (rerun.task_id, rerun.attempt),
        (id, 1),
        "same id, attempts from zero"
    );
    assert!(reaches(&client, &id, TaskStatus::Failed).await);

    let ok = client.add(gate(&db.key("r-ok"))).save().await.unwrap()[0];
    assert!(reaches(&client, &ok, TaskStatus::Succeeded).await);
    assert!(
        !client.retry(&ok).await.unwrap(),
        "a success is not retried"
    );
    assert!(!client.retry(&unknown_id()).await.unwrap());

    // A cancelled task whose id is running again (a retry already under way): refused, and
    // the retained copy stays as it is.
    let hold_key = db.key("r-hold");
    let held = client
        .add(Hold {
            key: hold_key.clone(),
        })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap()[0];
    assert!(client.cancel(&held).await.unwrap());
    assert!(client.retry(&held).await.unwrap());
    assert!(eventually(SHORT, || runs(&hold_key).len() == 1).await);
    assert!(!client.retry(&held).await.unwrap(), "retried while it runs");
    assert_eq!(status(&client, &held).await, TaskStatus::Running);
    release(&hold_key);
    assert!(reaches(&client, &held, TaskStatus::Succeeded).await);
    assert!(client.stop(SHORT).await);
}

async fn retry_failed_reruns_a_queue_s_failed_and_cancelled_tasks(db: TestDb) {
    let client = client_on(&db, processors![run_gate, run_flow]).await;
    let key = db.key("rf");
    let failing = |n: u32| Gate {
        key: format!("{key}-{n}"),
        fail: true,
    };
    let ids = client
        .add(failing(1))
        .add(failing(2))
        .add(gate(&format!("{key}-ok")))
        .save()
        .await
        .unwrap();
    let cancelled = client
        .add(gate(&format!("{key}-cancelled")))
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap()[0];
    client.cancel(&cancelled).await.unwrap();
    client.start();
    for id in &ids[..2] {
        assert!(reaches(&client, id, TaskStatus::Failed).await);
    }
    assert!(reaches(&client, &ids[2], TaskStatus::Succeeded).await);
    assert_eq!(client.retry_failed("ctl_gate").await.unwrap(), 3);
    assert!(eventually(SHORT, || runs(&format!("{key}-cancelled")).len() == 1).await);
    for n in [1, 2] {
        assert!(eventually(SHORT, || runs(&format!("{key}-{n}")).len() == 2).await);
    }
    assert_eq!(runs(&format!("{key}-ok")).len(), 1);
    assert!(client.stop(SHORT).await);
    assert_eq!(client.retry_failed("ctl_flow").await.unwrap(), 0);
}

// ---------------------------------------------------------------- run now, delete, purge

async fn run_now_starts_a_scheduled_task_at_once(db: TestDb) {
    let client = client_on(&db, processors![run_gate]).await;
    client.start();
    let key = db.key("now");
    let id = client
        .add(gate(&key))
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap()[0];
    assert!(client.run_now(&id).await.unwrap());
    let asked = Instant::now();
    let delay = started_after(&key, asked).await;
    assert!(delay < PROMPT, "started {delay:?} after run_now");
    assert!(reaches(&client, &id, TaskStatus::Succeeded).await);
    assert!(!client.run_now(&id).await.unwrap(), "a completed task");
    assert!(client.stop(SHORT).await);
}

async fn delete_removes_waiting_and_retained_tasks_but_not_running_ones(db: TestDb) {
    let client = client_on(&db, processors![run_gate, run_hold, run_flow]).await;
    let waiting = client.add(gate(&db.key("d-waiting"))).save().await.unwrap()[0];
    assert!(client.delete(&waiting).await.unwrap());
    assert!(!client.delete(&waiting).await.unwrap(), "deleted twice");
    client.start();
    let hold_key = db.key("d-hold");
    let running = client
        .add(Hold {
            key: hold_key.clone(),
        })
        .save()
        .await
        .unwrap()[0];
    let retained = client
        .add(gate(&db.key("d-retained")))
        .save()
        .await
        .unwrap()[0];
    assert!(reaches(&client, &retained, TaskStatus::Succeeded).await);
    assert!(eventually(SHORT, || runs(&hold_key).len() == 1).await);
    assert!(!client.delete(&running).await.unwrap(), "a running task");
    assert_eq!(status(&client, &running).await, TaskStatus::Running);
    assert!(client.delete(&retained).await.unwrap());
    assert_eq!(status(&client, &retained).await, TaskStatus::NotFound);
    flows(&client, &db.key("d-flow")).await;
    assert!(runs(&db.key("d-waiting")).is_empty(), "a deleted task ran");
    release(&hold_key);
    assert!(client.stop(SHORT).await);
}

async fn purge_deletes_retained_tasks_by_queue_outcome_and_age(db: TestDb) {
    let client = client_on(&db, processors![run_gate, run_hold]).await;
    client.start();
    let ok = client.add(gate(&db.key("p-ok"))).save().await.unwrap()[0];
    let failed = client
        .add(Gate {
            key: db.key("p-failed"),
            fail: true,
        })
        .save()
        .await
        .unwrap()[0];
    for (id, wanted) in [(ok, TaskStatus::Succeeded), (failed, TaskStatus::Failed)] {
        assert!(reaches(&client, &id, wanted).await);
    }
    assert!(client.stop(SHORT).await);
    let cancelled = client.add(gate(&db.key("p-c"))).save().await.unwrap()[0];
    let other = client
        .add(Hold {
            key: db.key("p-other"),
        })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap()[0];
    for id in [cancelled, other] {
        assert!(client.cancel(&id).await.unwrap());
    }
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let old = Purge::new().completed_before(an_hour_ago);
    assert_eq!(client.purge(old).await.unwrap(), 0, "nothing is that old");
    let cancelled_gates = Purge::new().queue("ctl_gate").cancelled();
    assert_eq!(client.purge(cancelled_gates).await.unwrap(), 1);
    assert_eq!(status(&client, &cancelled).await, TaskStatus::NotFound);
    assert_eq!(status(&client, &other).await, TaskStatus::Cancelled);
    let soon = SystemTime::now() + Duration::from_secs(3600);
    let finished = Purge::new().succeeded().failed().completed_before(soon);
    assert_eq!(client.purge(finished).await.unwrap(), 2);
    assert_eq!(client.purge(Purge::new()).await.unwrap(), 1);
    assert_eq!(status(&client, &other).await, TaskStatus::NotFound);
}
