//! The client-level suite, run on every backend: each test builds its clients on a fresh
//! database (a new SQLite file, or a new PostgreSQL schema) and observes what processors see
//! and what the database holds. `client_suite!(backend, open)` instantiates every test for
//! one backend; what only one backend has (PostgreSQL's own transactions and its wake-ups by
//! other hosts' commits here, SQLite files in tests/runtime.rs) is tested apart.
//!
//! PostgreSQL runs when `BACKLITE_TEST_POSTGRES_URL` is set (see `common::pg_schema`).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use backlite::{Client, Context, Error, Task, TaskStatus, processor, processors};
use common::backend::{TestDb, open_postgres, open_sqlite, pg_connect};
use common::{eventually, eventually_async, record, runs};
use serde::{Deserialize, Serialize};

/// Long enough for anything to happen on a loaded machine; a passing test never waits it out.
const SHORT: Duration = Duration::from_secs(10);

/// One module per backend, one `#[tokio::test]` per suite test, each on a fresh database
/// from `$open` (or skipped, when `$open` finds no such backend here). `extra` names tests
/// that only this backend runs.
macro_rules! client_suite {
    ($backend:ident, $open:path $(, extra: [$($extra:ident),* $(,)?])?) => {
        mod $backend {
            // The opener; each test's own name here shadows the suite's function it runs.
            use super::*;

            client_suite!(@multi_thread $open;
                tasks_survive_the_client_and_a_new_client_runs_them,
                a_failing_task_runs_exactly_max_attempts_times_then_fails,
                a_task_that_fails_then_succeeds_counts_its_attempts,
                no_retry_starts_before_its_fixed_backoff,
                exponential_backoff_doubles_up_to_its_cap,
                scheduled_tasks_start_when_due_not_before,
                an_attempt_past_its_timeout_is_dropped_and_fails,
                a_panic_fails_the_attempt_and_the_worker_goes_on,
                the_panic_message_is_the_error_of_the_attempt,
                a_task_of_an_unserved_queue_is_left_alone,
                a_corrupt_payload_fails_its_task_and_is_kept,
                one_save_across_queues_is_all_or_nothing,
                a_task_that_cannot_serialize_stores_nothing,
                a_graceful_stop_waits_for_running_tasks_and_leaves_the_rest_pending,
                a_stop_that_times_out_hands_running_tasks_back,
                a_stop_that_times_out_cancels_the_context,
                a_processor_adds_tasks_through_its_context,
                the_context_names_the_task_its_queue_and_attempt,
                bad_configuration_is_a_typed_error,
                retention_keeps_exactly_what_each_setting_promises,
                a_task_claimed_by_a_dead_worker_runs_again_after_its_lease_and_only_then,
                stats_count_tasks_per_queue_and_state,
                processed_failed_and_retried_tasks_are_traced_with_their_fields,
                $($($extra,)*)?
            );
        }
    };
    (@multi_thread $open:path; $($test:ident,)*) => {
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

client_suite!(sqlite, open_sqlite);
client_suite!(
    postgres,
    open_postgres,
    extra: [
        tasks_saved_in_a_tokio_postgres_transaction_run_once_it_commits,
        a_tokio_postgres_transaction_elsewhere_is_refused_and_gets_nothing,
        a_commit_by_another_connection_wakes_a_started_client,
    ]
);

async fn client_on(db: &TestDb, registry: backlite::Registry) -> Client {
    db.builder()
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

async fn status(client: &Client, id: &backlite::TaskId) -> TaskStatus {
    client.status(id).await.expect("status")
}

/// Whether task `id` reaches `wanted` within `SHORT`.
async fn reaches(client: &Client, id: &backlite::TaskId, wanted: TaskStatus) -> bool {
    eventually_async(SHORT, || async { status(client, id).await == wanted }).await
}

// ---------------------------------------------------------------- persistence

async fn tasks_survive_the_client_and_a_new_client_runs_them(db: TestDb) {
    let key = db.key("persist");
    let ids = {
        let adder = db.builder().build().await.unwrap();
        adder
            .add(plain(&key))
            .add(plain(&key))
            .save()
            .await
            .unwrap()
    };
    let client = client_on(&db, all()).await;
    assert_eq!(status(&client, &ids[0]).await, TaskStatus::Pending);
    client.start();
    assert!(eventually(SHORT, || runs(&key).len() == 2).await);
    assert!(client.stop(SHORT).await);
    assert_eq!(status(&client, &ids[1]).await, TaskStatus::Succeeded);
}

// ---------------------------------------------------------------- retries

async fn a_failing_task_runs_exactly_max_attempts_times_then_fails(db: TestDb) {
    let key = db.key("retries");
    let client = client_on(&db, all()).await;
    client.start();
    let ids = client
        .add(AlwaysFails { key: key.clone() })
        .save()
        .await
        .unwrap();
    assert!(reaches(&client, &ids[0], TaskStatus::Failed).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let attempts: Vec<u32> = runs(&key).iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let row = db.completed_row(&ids[0]).await.unwrap();
    assert_eq!(row.attempts, 3);
    assert!(!row.succeeded);
    assert_eq!(row.error.as_deref(), Some("<b>refused</b> on attempt 3"));
    assert!(client.stop(SHORT).await);
}

async fn a_task_that_fails_then_succeeds_counts_its_attempts(db: TestDb) {
    let key = db.key("flaky");
    let client = client_on(&db, all()).await;
    client.start();
    let task = Plain {
        key: key.clone(),
        fail_until: 2,
    };
    let ids = client.add(task).save().await.unwrap();
    assert!(eventually(SHORT, || runs(&key).len() == 3).await);
    assert!(client.stop(SHORT).await);
    let row = db.completed_row(&ids[0]).await.unwrap();
    assert_eq!((row.attempts, row.succeeded, row.error), (3, true, None));
}

// ---------------------------------------------------------------- backoff

fn gaps(key: &str) -> Vec<Duration> {
    let runs = runs(key);
    runs.windows(2).map(|w| w[1].at - w[0].at).collect()
}

async fn no_retry_starts_before_its_fixed_backoff(db: TestDb) {
    let key = db.key("fixed");
    let client = client_on(&db, all()).await;
    client.start();
    client
        .add(FixedBackoff { key: key.clone() })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs(&key).len() == 3).await);
    for gap in gaps(&key) {
        assert!(gap >= Duration::from_millis(200), "retried after {gap:?}");
        assert!(
            gap < Duration::from_millis(1200),
            "retried late, after {gap:?}"
        );
    }
    assert!(client.stop(SHORT).await);
}

async fn exponential_backoff_doubles_up_to_its_cap(db: TestDb) {
    let key = db.key("exp");
    let client = client_on(&db, all()).await;
    client.start();
    client
        .add(ExpBackoff { key: key.clone() })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs(&key).len() == 5).await);
    let gaps = gaps(&key);
    for (gap, floor) in gaps.iter().zip([100, 200, 300, 300]) {
        assert!(*gap >= Duration::from_millis(floor), "gaps {gaps:?}");
        assert!(*gap < Duration::from_millis(floor + 1000), "gaps {gaps:?}");
    }
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- scheduling

async fn scheduled_tasks_start_when_due_not_before(db: TestDb) {
    let (wait_key, at_key) = (db.key("wait"), db.key("at"));
    let client = client_on(&db, all()).await;
    client.start();
    let saved = Instant::now();
    client
        .add(plain(&wait_key))
        .wait(Duration::from_millis(300))
        .save()
        .await
        .unwrap();
    let at = SystemTime::now() + Duration::from_millis(500);
    client.add(plain(&at_key)).at(at).save().await.unwrap();
    assert!(
        eventually(SHORT, || runs(&wait_key).len() == 1
            && runs(&at_key).len() == 1)
        .await
    );
    let waited = runs(&wait_key)[0].at - saved;
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
        .saturating_sub(runs(&at_key)[0].at.elapsed());
    assert!(late < Duration::from_secs(1), "started {late:?} past due");
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- timeout

async fn an_attempt_past_its_timeout_is_dropped_and_fails(db: TestDb) {
    let client = client_on(&db, all()).await;
    client.start();
    let ids = client
        .add(Slow {
            key: db.key("timeout"),
            millis: 5_000,
        })
        .save()
        .await
        .unwrap();
    let started = Instant::now();
    assert!(reaches(&client, &ids[0], TaskStatus::Failed).await);
    // Two attempts of 150 ms each, far from the 10 s the processor wanted.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let row = db.completed_row(&ids[0]).await.unwrap();
    assert_eq!(row.attempts, 2);
    assert_eq!(row.error.as_deref(), Some("timed out after 150ms"));
    assert!(row.last_duration_us >= 150_000 && row.last_duration_us < 1_000_000);
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- panics

async fn a_panic_fails_the_attempt_and_the_worker_goes_on(db: TestDb) {
    let (key, after_key) = (db.key("panic"), db.key("after-panic"));
    let client = client_on(&db, all()).await;
    client.start();
    let ids = client
        .add(Panics { key: key.clone() })
        .save()
        .await
        .unwrap();
    assert!(reaches(&client, &ids[0], TaskStatus::Succeeded).await);
    assert_eq!(runs(&key).len(), 2);
    // The pool still runs other work.
    client.add(plain(&after_key)).save().await.unwrap();
    assert!(eventually(SHORT, || runs(&after_key).len() == 1).await);
    assert!(client.stop(SHORT).await);
}

async fn the_panic_message_is_the_error_of_the_attempt(db: TestDb) {
    #[derive(Debug, Serialize, Deserialize, Task)]
    #[queue(name = "panics_always", retention)]
    struct PanicsAlways;
    #[processor]
    async fn run_panics_always(_task: PanicsAlways) -> anyhow::Result<()> {
        panic!("out of cheese")
    }
    let client = client_on(&db, processors![run_panics_always]).await;
    client.start();
    let ids = client.add(PanicsAlways).save().await.unwrap();
    assert!(reaches(&client, &ids[0], TaskStatus::Failed).await);
    let row = db.completed_row(&ids[0]).await.unwrap();
    assert_eq!(row.error.as_deref(), Some("panicked: out of cheese"));
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- queues and payloads

async fn a_task_of_an_unserved_queue_is_left_alone(db: TestDb) {
    let key = db.key("served");
    let client = client_on(&db, all()).await;
    client.start();
    let ids = client
        .add(Elsewhere {
            key: db.key("elsewhere"),
        })
        .add(plain(&key))
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs(&key).len() == 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status(&client, &ids[0]).await, TaskStatus::Pending);
    assert!(client.stop(SHORT).await);
}

async fn a_corrupt_payload_fails_its_task_and_is_kept(db: TestDb) {
    let (corrupt, healthy) = (db.key("corrupt"), db.key("healthy"));
    let client = client_on(&db, all()).await;
    let ids = client
        .add(plain(&corrupt))
        .add(plain(&healthy))
        .save()
        .await
        .unwrap();
    db.set_payload(&ids[0], b"{\"key\": 7").await;
    client.start();
    assert!(eventually(SHORT, || runs(&healthy).len() == 1).await);
    assert!(reaches(&client, &ids[0], TaskStatus::Failed).await);
    assert!(runs(&corrupt).is_empty());
    let row = db.completed_row(&ids[0]).await.unwrap();
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

// ---------------------------------------------------------------- bulk

async fn one_save_across_queues_is_all_or_nothing(db: TestDb) {
    let key = db.key("bulk");
    let client = db.builder().build().await.unwrap();
    db.refuse_payloads_containing("poison").await;
    let result = client
        .add(plain(&key))
        .add(Elsewhere { key: key.clone() })
        .add(plain("poison"))
        .save()
        .await;
    assert!(matches!(result, Err(Error::Storage(_))), "{result:?}");
    assert_eq!(db.count("backlite_tasks WHERE state <= 1").await, 0);

    let ids = client
        .add(plain(&key))
        .add(Elsewhere { key: key.clone() })
        .add(AlwaysFails { key: key.clone() })
        .save()
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(db.count("backlite_tasks WHERE state <= 1").await, 3);
}

async fn a_task_that_cannot_serialize_stores_nothing(db: TestDb) {
    #[derive(Debug, Deserialize, Task)]
    #[queue(name = "unserializable")]
    struct Unserializable;
    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    let client = db.builder().build().await.unwrap();
    let result = client
        .add(plain(&db.key("ser")))
        .add(Unserializable)
        .save()
        .await;
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
    assert_eq!(db.count("backlite_tasks WHERE state <= 1").await, 0);
}

// ---------------------------------------------------------------- stop

async fn a_graceful_stop_waits_for_running_tasks_and_leaves_the_rest_pending(db: TestDb) {
    let key = db.key("graceful");
    let client = db
        .builder()
        .workers(1)
        .processors(all())
        .build()
        .await
        .unwrap();
    client.start();
    let long = || Long {
        key: key.clone(),
        millis: 300,
        ignore_cancel: false,
    };
    let ids = client
        .add(long())
        .add(long())
        .add(long())
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs(&key).len() == 1).await);
    assert!(client.stop(SHORT).await, "the running task should finish");
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(status(&client, id).await);
    }
    assert_eq!(runs(&key).len(), 1);
    let count = |wanted| statuses.iter().filter(|s| **s == wanted).count();
    assert_eq!(count(TaskStatus::NotFound), 1, "{statuses:?}");
    assert_eq!(count(TaskStatus::Pending), 2, "{statuses:?}");
}

async fn a_stop_that_times_out_hands_running_tasks_back(db: TestDb) {
    let (key, again) = (db.key("hard"), db.key("hard-again"));
    let client = client_on(&db, all()).await;
    client.start();
    let ids = client
        .add(Long {
            key: key.clone(),
            millis: 30_000,
            ignore_cancel: true,
        })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs(&key).len() == 1).await);
    let stopping = Instant::now();
    assert!(!client.stop(Duration::from_millis(100)).await);
    assert!(stopping.elapsed() < Duration::from_secs(2));
    assert_eq!(status(&client, &ids[0]).await, TaskStatus::Pending);
    drop(client);

    // The next client runs it again, as its first counted attempt.
    let client = client_on(&db, all()).await;
    let payload = serde_json::json!({ "key": again, "millis": 1 }).to_string();
    db.set_payload(&ids[0], payload.as_bytes()).await;
    client.start();
    assert!(eventually(SHORT, || runs(&again).len() == 1).await);
    assert_eq!(runs(&again)[0].attempt, 1);
    assert!(client.stop(SHORT).await);
}

async fn a_stop_that_times_out_cancels_the_context(db: TestDb) {
    let key = db.key("cancel");
    let client = client_on(&db, all()).await;
    client.start();
    client
        .add(Long {
            key: key.clone(),
            millis: 30_000,
            ignore_cancel: false,
        })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs(&key).len() == 1).await);
    let started = Instant::now();
    client.stop(Duration::from_millis(50)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---------------------------------------------------------------- nested tasks

async fn a_processor_adds_tasks_through_its_context(db: TestDb) {
    let (key, child) = (db.key("nested"), db.key("nested-child"));
    let client = client_on(&db, all()).await;
    client.start();
    client
        .add(Parent { key: key.clone() })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs(&child).len() == 1).await);
    assert_eq!(runs(&key)[0].queue, "parent");
    assert_eq!(runs(&child)[0].queue, "plain");
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- context

async fn the_context_names_the_task_its_queue_and_attempt(db: TestDb) {
    let key = db.key("ctx");
    let client = client_on(&db, all()).await;
    client.start();
    let ids = client
        .add(Plain {
            key: key.clone(),
            fail_until: 1,
        })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs(&key).len() == 2).await);
    let runs = runs(&key);
    assert!(
        runs.iter()
            .all(|r| r.task_id == ids[0] && r.queue == "plain")
    );
    assert_eq!(runs.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2]);
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- configuration

async fn bad_configuration_is_a_typed_error(db: TestDb) {
    let build = |b: backlite::ClientBuilder| async move { b.build().await.map(|_| ()) };
    assert!(matches!(
        build(db.builder().workers(0)).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        build(db.builder().release_after(Duration::ZERO)).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        build(db.builder().cleanup_interval(Duration::ZERO)).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        build(Client::builder()).await,
        Err(Error::Config(_))
    ));
    // A lease renewed every third of itself needs some length to survive one slow write.
    assert!(matches!(
        build(db.builder().release_after(Duration::from_millis(99))).await,
        Err(Error::Config(m)) if m.contains("release_after")
    ));
    // The queue `slow` has a 150 ms timeout: leases are renewed while tasks run, so a
    // shorter `release_after` is fine.
    let short_release = db
        .builder()
        .release_after(Duration::from_millis(100))
        .processors(all());
    assert!(build(short_release).await.is_ok());
}

// ---------------------------------------------------------------- retention

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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn retention_keeps_exactly_what_each_setting_promises(db: TestDb) {
    let client = db
        .builder()
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
    let before = now_ms();
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
    assert!(
        eventually_async(SHORT, || async {
            db.count("backlite_tasks WHERE state <= 1").await == 0
        })
        .await
    );
    let after = now_ms();
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
        let row = db.completed_row(id).await;
        assert_eq!(row.is_some(), retained, "task {i}: retained");
        let succeeded = i % 2 == 0;
        let expected_status = match (retained, succeeded) {
            (false, _) => TaskStatus::NotFound,
            (true, true) => TaskStatus::Succeeded,
            (true, false) => TaskStatus::Failed,
        };
        assert_eq!(status(&client, id).await, expected_status, "task {i}");
        let Some(row) = row else { continue };
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
    assert!(
        eventually_async(SHORT, || async {
            db.completed_row(&brief[0]).await.is_some()
        })
        .await
    );
    let kept_at = Instant::now();
    assert!(
        eventually_async(SHORT, || async {
            db.completed_row(&brief[0]).await.is_none()
        })
        .await
    );
    let lived = kept_at.elapsed();
    assert!(
        lived >= Duration::from_millis(150),
        "deleted before it expired: {lived:?}"
    );
    assert!(
        db.completed_row(&ids[10]).await.is_some(),
        "deleted an unexpired row"
    );
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- release

async fn a_task_claimed_by_a_dead_worker_runs_again_after_its_lease_and_only_then(db: TestDb) {
    let key = db.key("released");
    let adder = db.builder().build().await.unwrap();
    let ids = adder.add(plain(&key)).save().await.unwrap();
    // A worker of some process claimed it just now with a lease of 600 ms, then died.
    let claimed = db
        .claim_as_dead_worker(&ids[0], Duration::from_millis(600))
        .await;

    let client = db
        .builder()
        .release_after(Duration::from_millis(600))
        .processors(processors![run_plain])
        .build()
        .await
        .unwrap();
    client.start();
    assert_eq!(status(&client, &ids[0]).await, TaskStatus::Running);
    assert!(eventually(SHORT, || runs(&key).len() == 1).await);
    let after = runs(&key)[0].at - claimed;
    // `claimed` was read before the claim's time, which is in whole milliseconds.
    assert!(
        after >= Duration::from_millis(598),
        "released early, after {after:?}"
    );
    assert!(
        after < Duration::from_millis(1600),
        "released late, after {after:?}"
    );
    assert_eq!(
        runs(&key)[0].attempt,
        1,
        "the dead worker's attempt counted"
    );
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- stats

async fn stats_count_tasks_per_queue_and_state(db: TestDb) {
    let client = client_on(&db, processors![run_always_fails, run_plain]).await;
    client
        .add(plain(&db.key("stats-due")))
        .add(Elsewhere {
            key: db.key("stats-elsewhere"),
        })
        .save()
        .await
        .unwrap();
    client
        .add(plain(&db.key("stats-later")))
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap();
    let of = |stats: &[backlite::QueueStats], queue: &str| {
        let stats = stats.iter().find(|s| s.queue == queue);
        stats.map(|s| (s.pending, s.scheduled, s.running, s.succeeded, s.failed))
    };
    let stats = client.stats().await.unwrap();
    assert_eq!(of(&stats, "plain"), Some((1, 1, 0, 0, 0)), "{stats:?}");
    assert_eq!(of(&stats, "elsewhere"), Some((1, 0, 0, 0, 0)), "{stats:?}");

    client.start();
    let failing = client
        .add(AlwaysFails {
            key: db.key("stats-fails"),
        })
        .save()
        .await
        .unwrap();
    assert!(reaches(&client, &failing[0], TaskStatus::Failed).await);
    assert!(eventually(SHORT, || runs(&db.key("stats-due")).len() == 1).await);
    assert!(client.stop(SHORT).await);
    let stats = client.stats().await.unwrap();
    // `plain` retains its tasks; the one due an hour from now still waits.
    assert_eq!(of(&stats, "plain"), Some((0, 1, 0, 1, 0)), "{stats:?}");
    assert_eq!(
        of(&stats, "always_fails"),
        Some((0, 0, 0, 0, 1)),
        "{stats:?}"
    );
    assert_eq!(of(&stats, "elsewhere"), Some((1, 0, 0, 0, 0)), "{stats:?}");
}

// ---------------------------------------------------------------- tracing

mod events {
    use std::sync::{Arc, Mutex, OnceLock};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    /// An event's message and its other fields, by name, with their values.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub message: String,
        pub fields: Vec<(String, String)>,
    }

    /// Every event seen.
    #[derive(Clone, Default)]
    pub struct Captured(Arc<Mutex<Vec<Seen>>>);

    impl Captured {
        /// The events about task `id`.
        pub fn of_task(&self, id: &str) -> Vec<Seen> {
            let events = self.0.lock().unwrap();
            let about = |e: &&Seen| e.fields.iter().any(|(n, v)| n == "task_id" && v == id);
            events.iter().filter(about).cloned().collect()
        }
    }

    struct Fields(Seen);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0.message = format!("{value:?}");
            } else {
                let value = format!("{value:?}");
                self.0.fields.push((field.name().to_owned(), value));
            }
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = Fields(Seen {
                message: String::new(),
                fields: Vec::new(),
            });
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }

    /// The capture of every event of this test binary. Global, and so shared by the tests
    /// that run at once (each reads the events of its own tasks): a subscriber set for one
    /// thread misses events whenever another thread without it registers a callsite first.
    pub fn install() -> Captured {
        static CAPTURED: OnceLock<Captured> = OnceLock::new();
        CAPTURED
            .get_or_init(|| {
                let captured = Captured::default();
                let subscriber = tracing_subscriber::registry().with(captured.clone());
                tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
                captured
            })
            .clone()
    }
}

async fn processed_failed_and_retried_tasks_are_traced_with_their_fields(db: TestDb) {
    let captured = events::install();
    let (key, fail_key) = (db.key("traced"), db.key("traced-fail"));
    let client = client_on(&db, all()).await;
    client.start();
    let flaky = client
        .add(Plain {
            key: key.clone(),
            fail_until: 1,
        })
        .save()
        .await
        .unwrap();
    let failing = client
        .add(AlwaysFails {
            key: fail_key.clone(),
        })
        .save()
        .await
        .unwrap();
    assert!(
        eventually(SHORT, || runs(&key).len() == 2
            && runs(&fail_key).len() == 3)
        .await
    );
    assert!(client.stop(SHORT).await);
    let expected = [
        (flaky[0], "task failed; will retry"),
        (flaky[0], "task succeeded"),
        (failing[0], "task failed; will retry"),
        (failing[0], "task failed"),
    ];
    for (id, message) in expected {
        let events = captured.of_task(&id.to_string());
        let event = events.iter().find(|e| e.message == message);
        let Some(event) = event else {
            panic!("no `{message}` event about {id} in {events:?}")
        };
        for field in ["task_id", "queue", "attempt", "duration"] {
            assert!(
                event.fields.iter().any(|(f, _)| f == field),
                "`{message}` lacks `{field}`: {event:?}"
            );
        }
    }
}

// ---------------------------------------------------------------- PostgreSQL transactions

async fn tasks_saved_in_a_tokio_postgres_transaction_run_once_it_commits(db: TestDb) {
    let (rollback_key, commit_key) = (db.key("tx-rollback"), db.key("tx-commit"));
    let pg = db.pg();
    let client = client_on(&db, all()).await;
    client.start();
    let mut conn = pg_connect(&pg.url).await;
    let orders = format!("\"{}\".orders", pg.schema);
    conn.batch_execute(&format!("CREATE TABLE {orders} (id int PRIMARY KEY)"))
        .await
        .unwrap();

    let tx = conn.transaction().await.unwrap();
    tx.execute(
        format!("INSERT INTO {orders} (id) VALUES (1)").as_str(),
        &[],
    )
    .await
    .unwrap();
    let rolled_back = client.add(plain(&rollback_key)).save_in(&tx).await.unwrap();
    tx.rollback().await.unwrap();

    let tx = conn.transaction().await.unwrap();
    tx.execute(
        format!("INSERT INTO {orders} (id) VALUES (2)").as_str(),
        &[],
    )
    .await
    .unwrap();
    let committed = client.add(plain(&commit_key)).save_in(&tx).await.unwrap();
    // Not visible, so not run, before the commit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(runs(&commit_key).is_empty());
    tx.commit().await.unwrap();

    assert!(eventually(SHORT, || runs(&commit_key).len() == 1).await);
    // The run is recorded as it starts; stop waits for its outcome to be committed.
    assert!(client.stop(SHORT).await);
    assert_eq!(status(&client, &rolled_back[0]).await, TaskStatus::NotFound);
    assert_eq!(status(&client, &committed[0]).await, TaskStatus::Succeeded);
    assert_eq!(runs(&commit_key).len(), 1, "ran more than once");
    assert!(runs(&rollback_key).is_empty());
    let orders: i64 = conn
        .query_one(format!("SELECT COUNT(*) FROM {orders}").as_str(), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 1);
}

async fn a_tokio_postgres_transaction_elsewhere_is_refused_and_gets_nothing(db: TestDb) {
    let key = db.key("tx-wrong");
    let pg = db.pg();
    let client = client_on(&db, all()).await;
    let refused = |result: &backlite::Result<Vec<backlite::TaskId>>| {
        matches!(result, Err(Error::WrongDatabase { .. }))
    };
    // Another database on the same server (the statements name the client's schema, so a
    // transaction on the client's own database always writes where the client reads).
    let elsewhere_url = with_database(&pg.url, "postgres");
    let mut elsewhere = pg_connect(&elsewhere_url).await;

    // There, the client's schema does not exist.
    let tx = elsewhere.transaction().await.unwrap();
    let result = client.add(plain(&key)).save_in(&tx).await;
    assert!(
        refused(&result),
        "a database without the schema: {result:?}"
    );
    drop(tx);

    // There, a schema of the same name holds another backlite database: only the check can
    // tell them apart.
    let other = Client::builder()
        .database(&elsewhere_url)
        .schema(&pg.schema)
        .pool_size(2)
        .build()
        .await;
    drop(other.unwrap());
    let tx = elsewhere.transaction().await.unwrap();
    let result = client.add(plain(&key)).save_in(&tx).await;
    assert!(refused(&result), "another backlite database: {result:?}");
    tx.commit().await.unwrap();
    let stored_there = elsewhere
        .query_one(
            format!("SELECT COUNT(*) FROM \"{}\".backlite_tasks", pg.schema).as_str(),
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    elsewhere
        .batch_execute(format!("DROP SCHEMA \"{}\" CASCADE", pg.schema).as_str())
        .await
        .unwrap();
    assert_eq!(stored_there, 0);
    assert_eq!(db.count("backlite_tasks WHERE state <= 1").await, 0);

    // The client's own database through a connection of the application's is the same one.
    let mut conn = pg_connect(&pg.url).await;
    let tx = conn.transaction().await.unwrap();
    client.add(plain(&key)).save_in(&tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(db.count("backlite_tasks WHERE state <= 1").await, 1);
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..]
        .find('/')
        .map_or(url.len(), |i| authority + i);
    let query = url[path..].find('?').map_or(url.len(), |i| path + i);
    format!("{}/{database}{}", &url[..path], &url[query..])
}

async fn a_commit_by_another_connection_wakes_a_started_client(db: TestDb) {
    let key = db.key("external");
    let pg = db.pg();
    let client = client_on(&db, all()).await;
    client.start();
    // Once its first task is done, the dispatcher waits for a wake-up with no timer, since
    // nothing else is due: only the NOTIFY of the commit below can start the next task.
    let first = db.key("external-first");
    client.add(plain(&first)).save().await.unwrap();
    assert!(eventually(SHORT, || runs(&first).len() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The application's own connection, on another host for all backlite knows.
    let mut conn = pg_connect(&pg.url).await;
    let tx = conn.transaction().await.unwrap();
    client.add(plain(&key)).save_in(&tx).await.unwrap();
    let committing = Instant::now();
    tx.commit().await.unwrap();
    assert!(
        eventually(SHORT, || runs(&key).len() == 1).await,
        "the commit woke no one"
    );
    let picked_up = runs(&key)[0].at - committing;
    eprintln!("picked up {picked_up:?} after another connection's commit");
    assert!(
        picked_up < Duration::from_millis(250),
        "picked up after {picked_up:?}"
    );
    assert!(client.stop(SHORT).await);
}
