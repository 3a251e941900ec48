//! Behaviour of the runtime on real SQLite files: each test builds its own client on its own
//! file and observes what processors see and what the database holds.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use backlite::rusqlite::{Connection, TransactionBehavior};
use backlite::{Client, Context, Error, Task, TaskStatus, processor, processors};
use common::{count, eventually, eventually_async, record, runs, temp_db};
use serde::{Deserialize, Serialize};

const SHORT: Duration = Duration::from_secs(10);

async fn client_on(path: &std::path::Path, registry: backlite::Registry) -> Client {
    Client::builder()
        .database(path)
        .workers(4)
        .processors(registry)
        .build()
        .await
        .expect("build")
}

// ---------------------------------------------------------------- tasks and processors

/// Succeeds, unless `fail_until` says which attempts fail first.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "plain", max_attempts = 3, retention(data))]
struct Plain {
    key: String,
    #[serde(default)]
    fail_until: u32,
}

#[processor]
async fn run_plain(ctx: Context, task: Plain) -> Result<(), std::io::Error> {
    record(&task.key, &ctx);
    if ctx.attempt() <= task.fail_until {
        return Err(std::io::Error::other(format!(
            "attempt {} fails",
            ctx.attempt()
        )));
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "always_fails", max_attempts = 3, retention)]
struct AlwaysFails {
    key: String,
}

#[processor]
async fn run_always_fails(ctx: Context, task: AlwaysFails) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    anyhow::bail!("<b>refused</b> on attempt {}", ctx.attempt())
}

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "fixed_backoff", max_attempts = 3, backoff = "200ms", retention)]
struct FixedBackoff {
    key: String,
}

#[processor]
async fn run_fixed_backoff(ctx: Context, task: FixedBackoff) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    anyhow::bail!("fails")
}

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "exp_backoff", max_attempts = 5,
        backoff = exponential(base = "100ms", cap = "300ms"), retention)]
struct ExpBackoff {
    key: String,
}

#[processor]
async fn run_exp_backoff(ctx: Context, task: ExpBackoff) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    anyhow::bail!("fails")
}

/// Sleeps without ever looking at its cancellation.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "slow", max_attempts = 2, timeout = "150ms", retention)]
struct Slow {
    key: String,
    millis: u64,
}

#[processor]
async fn run_slow(ctx: Context, task: Slow) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    tokio::time::sleep(Duration::from_millis(task.millis)).await;
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "panics", max_attempts = 2, retention)]
struct Panics {
    key: String,
}

#[processor]
async fn run_panics(ctx: Context, task: Panics) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    if ctx.attempt() == 1 {
        panic!("processor exploded on {}", task.key);
    }
    Ok(())
}

/// Adds a `Plain` task from inside its processor.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "parent")]
struct Parent {
    key: String,
}

#[processor]
async fn run_parent(ctx: Context, task: Parent) -> backlite::Result<()> {
    record(&task.key, &ctx);
    let child = Plain {
        key: format!("{}-child", task.key),
        fail_until: 0,
    };
    ctx.client().add(child).save().await?;
    Ok(())
}

/// Runs for as long as it is told, but returns early when cancelled.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "long", max_attempts = 1)]
struct Long {
    key: String,
    millis: u64,
    #[serde(default)]
    ignore_cancel: bool,
}

static LONG_FINISHED: AtomicU32 = AtomicU32::new(0);

#[processor]
async fn run_long(ctx: Context, task: Long) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    let sleep = tokio::time::sleep(Duration::from_millis(task.millis));
    if task.ignore_cancel {
        sleep.await;
    } else {
        tokio::select! {
            _ = sleep => {}
            _ = ctx.cancelled() => anyhow::bail!("cancelled"),
        }
    }
    LONG_FINISHED.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// A queue that no processor in these tests serves.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "elsewhere")]
struct Elsewhere {
    key: String,
}

fn all() -> backlite::Registry {
    processors![
        run_plain,
        run_always_fails,
        run_fixed_backoff,
        run_exp_backoff,
        run_slow,
        run_panics,
        run_parent,
        run_long,
    ]
}

fn plain(key: &str) -> Plain {
    Plain {
        key: key.into(),
        fail_until: 0,
    }
}

// ---------------------------------------------------------------- 1. persistence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_the_client_and_a_new_client_runs_them() {
    let db = temp_db();
    let ids = {
        let adder = Client::builder().database(&db.path).build().await.unwrap();
        adder
            .add(plain("persist"))
            .add(plain("persist"))
            .save()
            .await
            .unwrap()
    };
    let client = client_on(&db.path, all()).await;
    assert_eq!(client.status(&ids[0]).await.unwrap(), TaskStatus::Pending);
    client.start();
    assert!(eventually(SHORT, || runs("persist").len() == 2).await);
    assert!(client.stop(SHORT).await);
    assert_eq!(client.status(&ids[1]).await.unwrap(), TaskStatus::Succeeded);
}

// ---------------------------------------------------------------- 2. retries

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_runs_exactly_max_attempts_times_then_fails() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    let ids = client
        .add(AlwaysFails {
            key: "retries".into(),
        })
        .save()
        .await
        .unwrap();
    assert!(
        eventually_async(SHORT, || async {
            client.status(&ids[0]).await.unwrap() == TaskStatus::Failed
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let attempts: Vec<u32> = runs("retries").iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let row = common::completed_row(&db.conn(), &ids[0]).unwrap();
    assert_eq!(row.attempts, 3);
    assert!(!row.succeeded);
    assert_eq!(row.error.as_deref(), Some("<b>refused</b> on attempt 3"));
    assert!(client.stop(SHORT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_fails_then_succeeds_counts_its_attempts() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    let task = Plain {
        key: "flaky".into(),
        fail_until: 2,
    };
    let ids = client.add(task).save().await.unwrap();
    assert!(eventually(SHORT, || runs("flaky").len() == 3).await);
    assert!(client.stop(SHORT).await);
    let row = common::completed_row(&db.conn(), &ids[0]).unwrap();
    assert_eq!((row.attempts, row.succeeded, row.error), (3, true, None));
}

// ---------------------------------------------------------------- 3. backoff

fn gaps(key: &str) -> Vec<Duration> {
    let runs = runs(key);
    runs.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_starts_before_its_fixed_backoff() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    client
        .add(FixedBackoff {
            key: "fixed".into(),
        })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs("fixed").len() == 3).await);
    for gap in gaps("fixed") {
        assert!(gap >= Duration::from_millis(200), "retried after {gap:?}");
        assert!(
            gap < Duration::from_millis(1200),
            "retried late, after {gap:?}"
        );
    }
    assert!(client.stop(SHORT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_backoff_doubles_up_to_its_cap() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    client
        .add(ExpBackoff { key: "exp".into() })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs("exp").len() == 5).await);
    let gaps = gaps("exp");
    for (gap, floor) in gaps.iter().zip([100, 200, 300, 300]) {
        assert!(*gap >= Duration::from_millis(floor), "gaps {gaps:?}");
        assert!(*gap < Duration::from_millis(floor + 1000), "gaps {gaps:?}");
    }
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- 4. scheduling

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_tasks_start_when_due_not_before() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    let saved = Instant::now();
    client
        .add(plain("wait"))
        .wait(Duration::from_millis(300))
        .save()
        .await
        .unwrap();
    let at = SystemTime::now() + Duration::from_millis(500);
    client.add(plain("at")).at(at).save().await.unwrap();
    assert!(eventually(SHORT, || runs("wait").len() == 1 && runs("at").len() == 1).await);
    let waited = runs("wait")[0].at - saved;
    assert!(
        waited >= Duration::from_millis(300),
        "started early: {waited:?}"
    );
    // Lateness is measured precisely by the benchmark (W8); this asserts only that the
    // timer, not some later wake-up, started it, with room for a loaded 2-core machine.
    assert!(
        waited < Duration::from_millis(1300),
        "started late: {waited:?}"
    );
    let late = SystemTime::now()
        .duration_since(at)
        .expect("ran before due")
        .saturating_sub(runs("at")[0].at.elapsed());
    assert!(late < Duration::from_secs(1), "started {late:?} past due");
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- 5. timeout

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_timeout_is_dropped_and_fails() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    let ids = client
        .add(Slow {
            key: "timeout".into(),
            millis: 5_000,
        })
        .save()
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        eventually_async(SHORT, || async {
            client.status(&ids[0]).await.unwrap() == TaskStatus::Failed
        })
        .await
    );
    // Two attempts of 150 ms each, far from the 5 s the processor wanted.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let row = common::completed_row(&db.conn(), &ids[0]).unwrap();
    assert_eq!(row.attempts, 2);
    assert_eq!(row.error.as_deref(), Some("timed out after 150ms"));
    assert!(row.last_duration_us >= 150_000 && row.last_duration_us < 1_000_000);
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- 6. panics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_the_attempt_and_the_worker_goes_on() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    let ids = client
        .add(Panics {
            key: "panic".into(),
        })
        .save()
        .await
        .unwrap();
    assert!(
        eventually_async(SHORT, || async {
            client.status(&ids[0]).await.unwrap() == TaskStatus::Succeeded
        })
        .await
    );
    assert_eq!(runs("panic").len(), 2);
    // The pool still runs other work.
    client.add(plain("after-panic")).save().await.unwrap();
    assert!(eventually(SHORT, || runs("after-panic").len() == 1).await);
    assert!(client.stop(SHORT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panic_message_is_the_error_of_the_attempt() {
    #[derive(Debug, Serialize, Deserialize, Task)]
    #[queue(name = "panics_always", retention)]
    struct PanicsAlways;
    #[processor]
    async fn run_panics_always(_task: PanicsAlways) -> anyhow::Result<()> {
        panic!("out of cheese")
    }
    let db = temp_db();
    let client = client_on(&db.path, processors![run_panics_always]).await;
    client.start();
    let ids = client.add(PanicsAlways).save().await.unwrap();
    assert!(
        eventually_async(SHORT, || async {
            client.status(&ids[0]).await.unwrap() == TaskStatus::Failed
        })
        .await
    );
    let row = common::completed_row(&db.conn(), &ids[0]).unwrap();
    assert_eq!(row.error.as_deref(), Some("panicked: out of cheese"));
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- 10. queues and payloads

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_an_unserved_queue_is_left_alone() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    let ids = client
        .add(Elsewhere {
            key: "elsewhere".into(),
        })
        .add(plain("served"))
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs("served").len() == 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client.status(&ids[0]).await.unwrap(), TaskStatus::Pending);
    assert!(client.stop(SHORT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_payload_fails_its_task_and_is_kept() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    let ids = client
        .add(plain("corrupt"))
        .add(plain("healthy"))
        .save()
        .await
        .unwrap();
    let bytes = common::uuid_bytes(&ids[0]);
    db.conn()
        .execute(
            "UPDATE backlite_tasks SET task = CAST('{\"key\": 7' AS BLOB) WHERE id = ?1",
            [&bytes[..]],
        )
        .unwrap();
    client.start();
    assert!(eventually(SHORT, || runs("healthy").len() == 1).await);
    assert!(
        eventually_async(SHORT, || async {
            client.status(&ids[0]).await.unwrap() == TaskStatus::Failed
        })
        .await
    );
    assert!(runs("corrupt").is_empty());
    let row = common::completed_row(&db.conn(), &ids[0]).unwrap();
    assert_eq!(row.attempts, 1, "a payload nobody can read is not retried");
    assert_eq!(
        row.payload.as_deref(),
        Some(&b"{\"key\": 7"[..]),
        "payload lost"
    );
    let error = row.error.unwrap();
    assert!(
        error.starts_with("payload is not a valid task of queue `plain`"),
        "{error}"
    );
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- 11. bulk

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_save_across_queues_is_all_or_nothing() {
    let db = temp_db();
    let client = Client::builder().database(&db.path).build().await.unwrap();
    // Make the database refuse one row of the batch, as a full disk or a constraint would.
    db.conn()
        .execute_batch(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON backlite_tasks \
             WHEN CAST(NEW.task AS TEXT) LIKE '%poison%' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        )
        .unwrap();
    let result = client
        .add(plain("bulk"))
        .add(Elsewhere { key: "bulk".into() })
        .add(plain("poison"))
        .save()
        .await;
    assert!(matches!(result, Err(Error::Storage(_))), "{result:?}");
    assert_eq!(count(&db.conn(), "backlite_tasks"), 0);

    let ids = client
        .add(plain("bulk"))
        .add(Elsewhere { key: "bulk".into() })
        .add(AlwaysFails { key: "bulk".into() })
        .save()
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(count(&db.conn(), "backlite_tasks"), 3);
}

#[tokio::test]
async fn a_task_that_cannot_serialize_stores_nothing() {
    #[derive(Debug, Deserialize, Task)]
    #[queue(name = "unserializable")]
    struct Unserializable;
    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    let db = temp_db();
    let client = Client::builder().database(&db.path).build().await.unwrap();
    let result = client.add(plain("ser")).add(Unserializable).save().await;
    assert!(
        matches!(
            result,
            Err(Error::Serialize {
                queue: "unserializable",
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(count(&db.conn(), "backlite_tasks"), 0);
}

// ---------------------------------------------------------------- 12. stop

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_waits_for_running_tasks_and_leaves_the_rest_pending() {
    let db = temp_db();
    let client = Client::builder()
        .database(&db.path)
        .workers(1)
        .processors(all())
        .build()
        .await
        .unwrap();
    client.start();
    let ids = client
        .add(Long {
            key: "graceful".into(),
            millis: 300,
            ignore_cancel: false,
        })
        .add(Long {
            key: "graceful".into(),
            millis: 300,
            ignore_cancel: false,
        })
        .add(Long {
            key: "graceful".into(),
            millis: 300,
            ignore_cancel: false,
        })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs("graceful").len() == 1).await);
    assert!(
        client.stop(Duration::from_secs(5)).await,
        "the running task should finish"
    );
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(client.status(id).await.unwrap());
    }
    assert_eq!(runs("graceful").len(), 1);
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == TaskStatus::NotFound)
            .count(),
        1
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == TaskStatus::Pending)
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_times_out_hands_running_tasks_back() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    let ids = client
        .add(Long {
            key: "hard".into(),
            millis: 30_000,
            ignore_cancel: true,
        })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs("hard").len() == 1).await);
    let stopping = Instant::now();
    assert!(!client.stop(Duration::from_millis(100)).await);
    assert!(stopping.elapsed() < Duration::from_secs(2));
    assert_eq!(client.status(&ids[0]).await.unwrap(), TaskStatus::Pending);
    drop(client);

    // The next client runs it again, as its first counted attempt.
    let client = client_on(&db.path, all()).await;
    let bytes = common::uuid_bytes(&ids[0]);
    db.conn()
        .execute(
            "UPDATE backlite_tasks SET task = CAST(?2 AS BLOB) WHERE id = ?1",
            (&bytes[..], r#"{"key":"hard-again","millis":1}"#),
        )
        .unwrap();
    client.start();
    assert!(eventually(SHORT, || runs("hard-again").len() == 1).await);
    assert_eq!(runs("hard-again")[0].attempt, 1);
    assert!(client.stop(SHORT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_times_out_cancels_the_context() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    client
        .add(Long {
            key: "cancel".into(),
            millis: 30_000,
            ignore_cancel: false,
        })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs("cancel").len() == 1).await);
    let started = Instant::now();
    client.stop(Duration::from_millis(50)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---------------------------------------------------------------- 13. nested tasks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_adds_tasks_through_its_context() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    client
        .add(Parent {
            key: "nested".into(),
        })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs("nested-child").len() == 1).await);
    assert_eq!(runs("nested")[0].queue, "parent");
    assert_eq!(runs("nested-child")[0].queue, "plain");
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- context

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_names_the_task_its_queue_and_attempt() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    let ids = client
        .add(Plain {
            key: "ctx".into(),
            fail_until: 1,
        })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs("ctx").len() == 2).await);
    let runs = runs("ctx");
    assert!(
        runs.iter()
            .all(|r| r.task_id == ids[0] && r.queue == "plain")
    );
    assert_eq!(runs.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2]);
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- transactions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_saved_in_the_applications_transaction_run_once_it_commits() {
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    let mut conn = db.conn();
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        .unwrap();

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute("INSERT INTO orders (id) VALUES (1)", [])
        .unwrap();
    let rolled_back = client.add(plain("tx-rollback")).save_in(&tx).unwrap();
    tx.rollback().unwrap();

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute("INSERT INTO orders (id) VALUES (2)", [])
        .unwrap();
    let committed = client.add(plain("tx-commit")).save_in(&tx).unwrap();
    // Not visible, so not run, before the commit.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(runs("tx-commit").is_empty());
    let committed_at = Instant::now();
    tx.commit().unwrap();

    assert!(eventually(SHORT, || runs("tx-commit").len() == 1).await);
    let picked_up = runs("tx-commit")[0].at - committed_at;
    println!("picked up {picked_up:?} after the application's commit");
    assert!(
        picked_up < Duration::from_millis(250),
        "picked up after {picked_up:?}"
    );
    // The run is recorded as it starts; stop waits for its outcome to be committed.
    assert!(client.stop(SHORT).await);
    assert_eq!(
        client.status(&rolled_back[0]).await.unwrap(),
        TaskStatus::NotFound
    );
    assert_eq!(
        client.status(&committed[0]).await.unwrap(),
        TaskStatus::Succeeded
    );
    assert!(runs("tx-rollback").is_empty());
}

#[tokio::test]
async fn a_transaction_on_another_database_is_refused_and_gets_nothing() {
    let (db, other) = (temp_db(), temp_db());
    let client = client_on(&db.path, all()).await;
    // The other file has backlite's tables too, so only the check can tell.
    drop(client_on(&other.path, all()).await);
    let mut conn = other.conn();
    let tx = conn.transaction().unwrap();
    let refused = client.add(plain("tx-wrong")).save_in(&tx);
    assert!(
        matches!(&refused, Err(Error::WrongDatabase { .. })),
        "{refused:?}"
    );
    tx.commit().unwrap();
    assert_eq!(count(&other.conn(), "backlite_tasks"), 0);

    // The same file under another path is the same database.
    let mut same = Connection::open(db.dir.path().join(".").join("backlite.db")).unwrap();
    let tx = same.transaction().unwrap();
    client.add(plain("tx-same")).save_in(&tx).unwrap();
    tx.commit().unwrap();
    assert_eq!(count(&db.conn(), "backlite_tasks"), 1);
}

// ---------------------------------------------------------------- 15. configuration

#[tokio::test]
async fn bad_configuration_is_a_typed_error() {
    let db = temp_db();
    let build = |b: backlite::ClientBuilder| async move { b.build().await.map(|_| ()) };
    let base = || Client::builder().database(&db.path);
    assert!(matches!(
        build(base().workers(0)).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        build(base().release_after(Duration::ZERO)).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        build(base().cleanup_interval(Duration::ZERO)).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        build(Client::builder()).await,
        Err(Error::Config(_))
    ));
    // The queue `slow` has a 150 ms timeout: a shorter release would rerun live tasks.
    let short_release = base()
        .release_after(Duration::from_millis(100))
        .processors(all());
    assert!(matches!(build(short_release).await, Err(Error::Config(m)) if m.contains("`slow`")));
    let missing_dir = Client::builder().database(db.dir.path().join("no/such/dir/x.db"));
    assert!(matches!(build(missing_dir).await, Err(Error::Open { .. })));
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let db = temp_db();
    std::fs::write(&db.path, vec![b'x'; 8192]).unwrap();
    let result = Client::builder().database(&db.path).build().await;
    assert!(
        matches!(result, Err(Error::NotADatabase { .. })),
        "{result:?}"
    );
    assert_eq!(
        std::fs::read(&db.path).unwrap(),
        vec![b'x'; 8192],
        "the file was changed"
    );
}

#[tokio::test]
async fn a_schema_newer_than_this_version_is_refused_and_older_ones_migrate() {
    let db = temp_db();
    drop(Client::builder().database(&db.path).build().await.unwrap());
    let version: i64 = db
        .conn()
        .query_row("SELECT MAX(version) FROM backlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
    // Opening again applies nothing twice.
    drop(Client::builder().database(&db.path).build().await.unwrap());
    assert_eq!(count(&db.conn(), "backlite_schema"), 3);

    db.conn()
        .execute("INSERT INTO backlite_schema VALUES (99, 0)", [])
        .unwrap();
    let result = Client::builder().database(&db.path).build().await;
    assert!(
        matches!(
            result,
            Err(Error::SchemaTooNew {
                found: 99,
                supported: 3
            })
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_database_runs_tasks() {
    let client = Client::builder()
        .database(":memory:")
        .processors(all())
        .build()
        .await
        .unwrap();
    client.start();
    let ids = client.add(plain("memory")).save().await.unwrap();
    assert!(eventually(SHORT, || runs("memory").len() == 1).await);
    assert!(client.stop(SHORT).await);
    assert_eq!(client.status(&ids[0]).await.unwrap(), TaskStatus::Succeeded);
}

// ---------------------------------------------------------------- 7. retention

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "keep_none")]
struct KeepNone {
    ok: bool,
}
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "keep_all", retention)]
struct KeepAll {
    ok: bool,
}
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "keep_failed", retention(only_failed))]
struct KeepFailed {
    ok: bool,
}
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "keep_all_data", retention(data))]
struct KeepAllData {
    ok: bool,
}
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "keep_failed_data", retention(data(only_failed)))]
struct KeepFailedData {
    ok: bool,
}
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "keep_for", retention(duration = "1h", data))]
struct KeepFor {
    ok: bool,
}
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "keep_briefly", retention(duration = "300ms"))]
struct KeepBriefly {
    ok: bool,
}

macro_rules! outcome_processor {
    ($name:ident, $task:ty) => {
        #[processor]
        async fn $name(task: $task) -> anyhow::Result<()> {
            tokio::time::sleep(Duration::from_millis(2)).await;
            anyhow::ensure!(task.ok, "told to fail");
            Ok(())
        }
    };
}
outcome_processor!(run_keep_none, KeepNone);
outcome_processor!(run_keep_all, KeepAll);
outcome_processor!(run_keep_failed, KeepFailed);
outcome_processor!(run_keep_all_data, KeepAllData);
outcome_processor!(run_keep_failed_data, KeepFailedData);
outcome_processor!(run_keep_for, KeepFor);
outcome_processor!(run_keep_briefly, KeepBriefly);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_exactly_what_each_setting_promises() {
    let db = temp_db();
    let client = Client::builder()
        .database(&db.path)
        .cleanup_interval(Duration::from_millis(100))
        .processors(processors![
            run_keep_none,
            run_keep_all,
            run_keep_failed,
            run_keep_all_data,
            run_keep_failed_data,
            run_keep_for,
            run_keep_briefly,
        ])
        .build()
        .await
        .unwrap();
    let before = backlite_now_ms();
    let ids = client
        .add(KeepNone { ok: true })
        .add(KeepNone { ok: false })
        .add(KeepAll { ok: true })
        .add(KeepAll { ok: false })
        .add(KeepFailed { ok: true })
        .add(KeepFailed { ok: false })
        .add(KeepAllData { ok: true })
        .add(KeepAllData { ok: false })
        .add(KeepFailedData { ok: true })
        .add(KeepFailedData { ok: false })
        .add(KeepFor { ok: true })
        .add(KeepFor { ok: false })
        .save()
        .await
        .unwrap();
    client.start();
    assert!(eventually(SHORT, || count(&db.conn(), "backlite_tasks") == 0).await);
    let after = backlite_now_ms();
    let conn = db.conn();
    // (retained, payload kept) for each task, in the order added: succeeded, failed.
    let expected = [
        (false, false),
        (false, false), // no retention
        (true, false),
        (true, false), // retention
        (false, false),
        (true, false), // retention(only_failed)
        (true, true),
        (true, true), // retention(data)
        (true, false),
        (true, true), // retention(data(only_failed))
        (true, true),
        (true, true), // retention(duration = "1h", data)
    ];
    for (i, (id, (retained, with_payload))) in ids.iter().zip(expected).enumerate() {
        let row = common::completed_row(&conn, id);
        assert_eq!(row.is_some(), retained, "task {i}: retained");
        let Some(row) = row else { continue };
        let succeeded = i % 2 == 0;
        assert_eq!(row.succeeded, succeeded, "task {i}");
        assert_eq!(row.payload.is_some(), with_payload, "task {i}: payload");
        if let Some(payload) = row.payload {
            assert_eq!(payload, format!("{{\"ok\":{succeeded}}}").into_bytes());
        }
        assert_eq!(row.attempts, 1, "task {i}");
        assert_eq!(row.error.is_some(), !succeeded, "task {i}");
        if !succeeded {
            assert_eq!(row.error.as_deref(), Some("told to fail"));
        }
        assert!(
            row.last_duration_us >= 2_000,
            "task {i}: {}",
            row.last_duration_us
        );
        assert!(row.created_at >= before && row.created_at <= row.last_executed_at);
        assert!(row.last_executed_at <= after);
        let expected_queue = [
            "keep_none",
            "keep_all",
            "keep_failed",
            "keep_all_data",
            "keep_failed_data",
            "keep_for",
        ][i / 2];
        assert_eq!(row.queue, expected_queue);
        match row.expires_at {
            None => assert!(i < 10, "task {i}: kept forever"),
            Some(expires) => {
                assert!(i >= 10, "task {i}: has no duration");
                assert!(expires >= row.last_executed_at + 3_600_000 - 5);
                assert!(expires <= after + 3_600_000);
            }
        }
    }

    // Expired rows go at the next cleanup.
    let brief = client.add(KeepBriefly { ok: true }).save().await.unwrap();
    assert!(eventually(SHORT, || common::completed_row(&conn, &brief[0]).is_some()).await);
    let kept_at = Instant::now();
    assert!(eventually(SHORT, || common::completed_row(&conn, &brief[0]).is_none()).await);
    let lived = kept_at.elapsed();
    assert!(
        lived >= Duration::from_millis(150),
        "deleted before it expired: {lived:?}"
    );
    assert!(
        common::completed_row(&conn, &ids[10]).is_some(),
        "deleted an unexpired row"
    );
    assert!(client.stop(SHORT).await);
}

fn backlite_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------- 8. release

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_claimed_by_a_dead_worker_runs_again_after_release_after_and_only_then() {
    let db = temp_db();
    let adder = Client::builder().database(&db.path).build().await.unwrap();
    let ids = adder.add(plain("released")).save().await.unwrap();
    // A worker of some process claimed it just now under a lease of 600 ms, then died.
    let claimed_at = backlite_now_ms();
    let bytes = common::uuid_bytes(&ids[0]);
    db.conn()
        .execute(
            "UPDATE backlite_tasks SET claimed_at = ?2, lease_until = ?2 + 600, fence = 1 \
             WHERE id = ?1",
            (&bytes[..], claimed_at),
        )
        .unwrap();
    let claimed = Instant::now();

    let client = Client::builder()
        .database(&db.path)
        .release_after(Duration::from_millis(600))
        .processors(processors![run_plain])
        .build()
        .await
        .unwrap();
    client.start();
    assert_eq!(client.status(&ids[0]).await.unwrap(), TaskStatus::Running);
    assert!(eventually(SHORT, || runs("released").len() == 1).await);
    let after = runs("released")[0].at - claimed;
    assert!(
        after >= Duration::from_millis(600),
        "released early, after {after:?}"
    );
    assert!(
        after < Duration::from_millis(1200),
        "released late, after {after:?}"
    );
    assert_eq!(
        runs("released")[0].attempt,
        1,
        "the dead worker's attempt counted"
    );
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- 14. tracing

mod events {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    /// An event's message and the names of its fields.
    pub type Seen = (String, Vec<String>);

    /// Every event seen.
    #[derive(Clone, Default)]
    pub struct Captured(pub Arc<Mutex<Vec<Seen>>>);

    struct Fields(String, Vec<String>);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            } else {
                self.1.push(field.name().to_owned());
            }
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = Fields(String::new(), Vec::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push((fields.0, fields.1));
        }
    }

    pub fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(captured.clone());
        (captured, tracing::subscriber::set_default(subscriber))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn processed_failed_and_retried_tasks_are_traced_with_their_fields() {
    let (captured, _guard) = events::install();
    let db = temp_db();
    let client = client_on(&db.path, all()).await;
    client.start();
    client
        .add(Plain {
            key: "traced".into(),
            fail_until: 1,
        })
        .save()
        .await
        .unwrap();
    client
        .add(AlwaysFails {
            key: "traced-fail".into(),
        })
        .save()
        .await
        .unwrap();
    assert!(
        eventually(SHORT, || runs("traced").len() == 2
            && runs("traced-fail").len() == 3)
        .await
    );
    assert!(client.stop(SHORT).await);
    let events = captured.0.lock().unwrap().clone();
    for message in ["task succeeded", "task failed; will retry", "task failed"] {
        let event = events.iter().find(|(m, _)| m == message);
        let Some((_, fields)) = event else {
            panic!("no `{message}` event in {events:?}")
        };
        for field in ["task_id", "queue", "attempt", "duration"] {
            assert!(
                fields.iter().any(|f| f == field),
                "`{message}` lacks `{field}`: {fields:?}"
            );
        }
    }
}
