//! Periodic tasks end to end, on every backend: ticks run once each on time, cron with
//! seconds, the catch-up policies after every process was down, a changed schedule, and two
//! clients sharing one schedule. The many-process proof with SIGKILLs is
//! `tests/periodic_processes.rs`.
//!
//! PostgreSQL runs when `BACKLITE_TEST_POSTGRES_URL` is set (see `common::pg_schema`).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backlite::{CatchUp, Client, Context, Error, Schedule, Task, processor, processors};
use common::backend::{TestDb, open_postgres, open_sqlite};
use common::{eventually, eventually_async, record, runs};
use serde::{Deserialize, Serialize};

/// Long enough for anything to happen on a loaded machine; a passing test never waits it out.
const LONG: Duration = Duration::from_secs(20);

const HOUR: i64 = 3_600_000;

/// One module per backend, one test per suite test, each on a fresh database.
macro_rules! periodic_suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            use super::*;
            periodic_suite!(@tests $open;
                an_interval_schedule_runs_once_per_tick,
                a_cron_schedule_with_seconds_runs_at_its_seconds,
                after_a_downtime_skip_drops_the_missed_ticks,
                after_a_downtime_once_runs_the_latest_tick_once,
                after_a_downtime_all_runs_each_tick_up_to_its_limit,
                a_changed_schedule_gets_its_next_tick_from_the_new_definition,
                two_clients_on_one_database_enqueue_each_tick_once,
                schedules_are_checked_when_the_client_is_built,
                a_periodic_attribute_schedules_the_default_task,
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

periodic_suite!(sqlite, open_sqlite);
periodic_suite!(postgres, open_postgres);

/// A periodic task; `key` names the test's recorder.
#[derive(Debug, Clone, Serialize, Deserialize, Task)]
#[queue(name = "ticks")]
struct Tick {
    key: String,
}

#[processor]
async fn run_tick(ctx: Context, task: Tick) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    Ok(())
}

/// A task with its own schedule: every second, kept once run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Task)]
#[queue(name = "heartbeat", retention, periodic(cron = "* * * * * *"))]
struct Heartbeat;

#[processor]
async fn run_heartbeat(_task: Heartbeat) -> anyhow::Result<()> {
    Ok(())
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn now_millis() -> i64 {
    millis(SystemTime::now())
}

/// The ticks the runs of `key` were enqueued for, in order: the time in each task's id.
fn ticks(key: &str) -> Vec<i64> {
    let mut ticks: Vec<i64> = runs(key)
        .iter()
        .map(|run| millis(run.task_id.timestamp().expect("a v7 id")))
        .collect();
    ticks.sort_unstable();
    ticks
}

/// Every tick from the first to the last, each once: `step` apart.
fn assert_consecutive(ticks: &[i64], step: i64) {
    assert!(!ticks.is_empty());
    let expected: Vec<i64> = (0..ticks.len() as i64)
        .map(|i| ticks[0] + i * step)
        .collect();
    assert_eq!(ticks, expected, "every tick once, in order");
    assert_eq!(ticks[0] % step, 0, "ticks fall on multiples of the step");
}

async fn client(db: &TestDb, schedule: Schedule, key: &str) -> Client {
    db.builder()
        .processors(processors![run_tick])
        .periodic(schedule, Tick { key: key.into() })
        .build()
        .await
        .expect("build")
}

/// The stored schedule `name`: its definition and next tick.
async fn stored(db: &TestDb, name: &str) -> Option<(String, i64)> {
    match db {
        TestDb::Sqlite(file) => file
            .conn()
            .query_row(
                "SELECT definition, next_run_at FROM backlite_schedules WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok(),
        TestDb::Postgres(pg) => pg
            .conn
            .query_opt(
                format!(
                    "SELECT definition, next_run_at FROM \"{}\".backlite_schedules \
                     WHERE name = $1",
                    pg.schema
                )
                .as_str(),
                &[&name],
            )
            .await
            .expect("read schedule")
            .map(|r| (r.get(0), r.get(1))),
    }
}

/// Sets the stored next tick, as if every process had been down since `next_run_at`.
async fn set_next_run_at(db: &TestDb, name: &str, next_run_at: i64) {
    match db {
        TestDb::Sqlite(file) => {
            file.conn()
                .execute(
                    "UPDATE backlite_schedules SET next_run_at = ?2 WHERE name = ?1",
                    (name, next_run_at),
                )
                .expect("set next_run_at");
        }
        TestDb::Postgres(pg) => {
            pg.conn
                .execute(
                    format!(
                        "UPDATE \"{}\".backlite_schedules SET next_run_at = $2 WHERE name = $1",
                        pg.schema
                    )
                    .as_str(),
                    &[&name, &next_run_at],
                )
                .await
                .expect("set next_run_at");
        }
    }
}

/// Runs a client with `schedule` until its schedule is stored, then stops it: a deploy that
/// ran once, before every process went down.
async fn register(db: &TestDb, schedule: Schedule, key: &str) {
    let first = client(db, schedule, key).await;
    first.start();
    assert!(eventually_async(LONG, || async { stored(db, "ticks").await.is_some() }).await);
    first.stop(LONG).await;
}

async fn an_interval_schedule_runs_once_per_tick(db: TestDb) {
    let key = db.key("interval");
    let c = client(&db, Schedule::every(Duration::from_secs(1)), &key).await;
    c.start();
    assert!(
        eventually(LONG, || runs(&key).len() >= 3).await,
        "three ticks ran"
    );
    c.stop(LONG).await;
    let ticks = ticks(&key);
    assert_consecutive(&ticks, 1_000);
    let (definition, next) = stored(&db, "ticks").await.unwrap();
    assert_eq!(definition, "every 1000ms");
    assert!(
        next > *ticks.last().unwrap(),
        "the stored next tick is past the last run"
    );
}

async fn a_cron_schedule_with_seconds_runs_at_its_seconds(db: TestDb) {
    let key = db.key("cron");
    let schedule = Schedule::cron("*/2 * * * * *").unwrap();
    let c = client(&db, schedule, &key).await;
    c.start();
    assert!(
        eventually(LONG, || runs(&key).len() >= 2).await,
        "two ticks ran"
    );
    c.stop(LONG).await;
    assert_consecutive(&ticks(&key), 2_000);
    let (definition, _) = stored(&db, "ticks").await.unwrap();
    assert_eq!(definition, "cron */2 * * * * * in UTC");
}

/// An hourly schedule whose stored next tick is five hours back: five ticks are due, the
/// first four missed. Nothing else becomes due while the test runs (short of an hour
/// turning, which the expected ticks account for).
async fn after_a_downtime(db: &TestDb, policy: CatchUp, key: &str) -> (Vec<i64>, i64) {
    let hourly = || Schedule::every(Duration::from_secs(3600)).catch_up(policy);
    register(db, hourly(), key).await;
    let hour = now_millis().div_euclid(HOUR) * HOUR;
    set_next_run_at(db, "ticks", hour - 4 * HOUR).await;
    let c = client(db, hourly(), key).await;
    c.start();
    assert!(
        eventually_async(LONG, || async {
            stored(db, "ticks")
                .await
                .is_some_and(|(_, next)| next > hour)
        })
        .await,
        "the schedule moved past now"
    );
    // Whatever was enqueued runs within this; then nothing more may come.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    c.stop(LONG).await;
    (ticks(key), hour)
}

async fn after_a_downtime_skip_drops_the_missed_ticks(db: TestDb) {
    let key = db.key("skip");
    let (ticks, hour) = after_a_downtime(&db, CatchUp::Skip, &key).await;
    assert!(ticks.is_empty() || ticks == [hour + HOUR], "{ticks:?}");
    assert_eq!(db.count("backlite_tasks WHERE state <= 1").await, 0);
}

async fn after_a_downtime_once_runs_the_latest_tick_once(db: TestDb) {
    let key = db.key("once");
    let (ticks, hour) = after_a_downtime(&db, CatchUp::Once, &key).await;
    assert!(ticks == [hour] || ticks == [hour, hour + HOUR], "{ticks:?}");
}

async fn after_a_downtime_all_runs_each_tick_up_to_its_limit(db: TestDb) {
    let key = db.key("all");
    let (ticks, hour) = after_a_downtime(&db, CatchUp::All { limit: 3 }, &key).await;
    let expected = [hour - 2 * HOUR, hour - HOUR, hour];
    assert!(
        ticks == expected || ticks[..] == [hour - HOUR, hour, hour + HOUR],
        "{ticks:?}"
    );
}

async fn a_changed_schedule_gets_its_next_tick_from_the_new_definition(db: TestDb) {
    let key = db.key("changed");
    register(&db, Schedule::every(Duration::from_secs(3600)), &key).await;
    let (definition, next) = stored(&db, "ticks").await.unwrap();
    assert_eq!(definition, "every 3600000ms");
    assert!(next > now_millis());
    // The next deploy ticks every second: it does not wait for the hourly tick.
    let c = client(&db, Schedule::every(Duration::from_secs(1)), &key).await;
    c.start();
    assert!(
        eventually(LONG, || runs(&key).len() >= 2).await,
        "the new schedule ran"
    );
    c.stop(LONG).await;
    assert_consecutive(&ticks(&key), 1_000);
    let (definition, _) = stored(&db, "ticks").await.unwrap();
    assert_eq!(definition, "every 1000ms");
}

async fn two_clients_on_one_database_enqueue_each_tick_once(db: TestDb) {
    let key = db.key("two");
    let every =
        || Schedule::every(Duration::from_millis(250)).catch_up(CatchUp::All { limit: 100 });
    let (a, b) = (
        client(&db, every(), &key).await,
        client(&db, every(), &key).await,
    );
    a.start();
    b.start();
    assert!(
        eventually(LONG, || runs(&key).len() >= 10).await,
        "ten ticks ran"
    );
    a.stop(LONG).await;
    b.stop(LONG).await;
    assert_consecutive(&ticks(&key), 250);
}

async fn a_periodic_attribute_schedules_the_default_task(db: TestDb) {
    let c = db
        .builder()
        .processors(processors![run_heartbeat])
        .build()
        .await
        .expect("build");
    c.start();
    assert!(
        eventually_async(LONG, || async {
            db.count("backlite_tasks WHERE state >= 2").await >= 2
        })
        .await,
        "two heartbeats ran"
    );
    c.stop(LONG).await;
    let (definition, _) = stored(&db, "heartbeat").await.unwrap();
    assert_eq!(definition, "cron * * * * * * in UTC");
    // The queue's schedule is the attribute's: another for it needs a name of its own.
    let twice = db
        .builder()
        .processors(processors![run_heartbeat])
        .periodic(Schedule::every(Duration::from_secs(1)), Heartbeat)
        .build()
        .await;
    assert!(
        matches!(&twice, Err(Error::Config(m)) if m.contains("`heartbeat`")),
        "{twice:?}"
    );
}

async fn schedules_are_checked_when_the_client_is_built(db: TestDb) {
    let tick = || Tick {
        key: "unused".into(),
    };
    let twice = db
        .builder()
        .periodic(Schedule::every(Duration::from_secs(1)), tick())
        .periodic(Schedule::every(Duration::from_secs(2)), tick())
        .build()
        .await;
    assert!(
        matches!(&twice, Err(Error::Config(m)) if m.contains("`ticks`")),
        "{twice:?}"
    );
    let named = db
        .builder()
        .periodic(Schedule::every(Duration::from_secs(1)), tick())
        .periodic(Schedule::every(Duration::from_secs(2)).name("slow"), tick())
        .build()
        .await;
    assert!(named.is_ok(), "{named:?}");
    let zero = db
        .builder()
        .periodic(Schedule::every(Duration::ZERO), tick())
        .build()
        .await;
    assert!(matches!(zero, Err(Error::Config(_))), "{zero:?}");
}
