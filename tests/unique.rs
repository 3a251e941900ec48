//! Unique tasks at the client level, on every backend: `#[queue(unique(..))]` and
//! `AddTasks::unique_key`, what `save`, `save_detailed` and `save_in_detailed` answer for a
//! duplicate, the window after a task succeeds, failed tasks that hold nothing, retries, and
//! clients adding the same tasks at once.
//!
//! PostgreSQL runs when `BACKLITE_TEST_POSTGRES_URL` is set (see `common::pg_schema`).

mod common;

use std::time::Duration;

use backlite::testing::TestClock;
use backlite::{Client, Saved, Task, TaskId, TaskStatus, processor, processors};
use common::backend::{TestDb, open_postgres, open_sqlite};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};

macro_rules! unique_suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            use super::*;

            unique_suite!(@tests $open;
                equal_payloads_are_one_task_until_the_window_ends,
                by_fields_compares_only_the_named_fields,
                a_given_key_makes_one_add_unique_in_its_queue,
                failed_tasks_hold_nothing_and_a_retry_waits_for_the_key,
                save_in_detailed_reports_duplicates,
                clients_adding_at_once_agree_on_each_id,
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

unique_suite!(sqlite, open_sqlite);
unique_suite!(postgres, open_postgres);

/// One digest per user while one waits or runs, and for an hour after one succeeded; the
/// queue keeps nothing.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "digest", unique(for = "1h"))]
struct Digest {
    user: u64,
}

/// One invoice per order and kind, whatever the note says.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "invoice", unique(by = [order, kind]))]
struct Invoice {
    order: u64,
    kind: String,
    note: String,
}

/// Not unique by itself; failed tasks are kept with their payload, for retries.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "plain", retention(only_failed, data))]
struct Plain {
    n: u64,
    fail: bool,
}

#[processor]
async fn send_digest(_task: Digest) -> Result<(), std::io::Error> {
    Ok(())
}

#[processor]
async fn send_invoice(_task: Invoice) -> Result<(), std::io::Error> {
    Ok(())
}

#[processor]
async fn run_plain(task: Plain) -> Result<(), std::io::Error> {
    if task.fail {
        return Err(std::io::Error::other("failed on purpose"));
    }
    Ok(())
}

async fn client_on(db: &TestDb, clock: &TestClock) -> Client {
    db.builder()
        .test_clock(clock.clone())
        .processors(processors![send_digest, send_invoice, run_plain])
        .build()
        .await
        .expect("build")
}

fn added(saved: Saved) -> TaskId {
    match saved {
        Saved::Added(id) => id,
        Saved::Duplicate(id) => panic!("expected a new task, got a duplicate of {id}"),
    }
}

async fn equal_payloads_are_one_task_until_the_window_ends(db: TestDb) {
    let clock = TestClock::new();
    let client = client_on(&db, &clock).await;
    let first = added(
        client
            .add(Digest { user: 1 })
            .save_detailed()
            .await
            .unwrap()[0],
    );
    // `save` answers the holder's id; `save_detailed` says it was a duplicate, in a batch too.
    assert_eq!(
        client.add(Digest { user: 1 }).save().await.unwrap(),
        [first]
    );
    let batch = client
        .add(Digest { user: 2 })
        .add(Digest { user: 1 })
        .add(Digest { user: 2 })
        .save_detailed()
        .await
        .unwrap();
    let second = added(batch[0]);
    assert_eq!(
        batch[1..],
        [Saved::Duplicate(first), Saved::Duplicate(second)]
    );
    assert_eq!(client.enqueued::<Digest>().await.unwrap().len(), 2);

    // Succeeded: the queue keeps nothing, but the key holds for the hour.
    assert_eq!(client.drain().await.unwrap(), 2);
    clock.advance(Duration::from_secs(3599));
    assert_eq!(
        client
            .add(Digest { user: 1 })
            .save_detailed()
            .await
            .unwrap(),
        [Saved::Duplicate(first)]
    );
    assert_eq!(client.status(&first).await.unwrap(), TaskStatus::Succeeded);
    clock.advance(Duration::from_secs(1));
    let third = added(
        client
            .add(Digest { user: 1 })
            .save_detailed()
            .await
            .unwrap()[0],
    );
    assert_ne!(third, first);
    assert_eq!(client.enqueued::<Digest>().await.unwrap().len(), 1);
}

async fn by_fields_compares_only_the_named_fields(db: TestDb) {
    let clock = TestClock::new();
    let client = client_on(&db, &clock).await;
    let invoice = |order, kind: &str, note: &str| Invoice {
        order,
        kind: kind.into(),
        note: note.into(),
    };
    let saved = client
        .add(invoice(7, "final", "from the web"))
        .add(invoice(7, "final", "from the retry button"))
        .add(invoice(7, "proforma", "from the web"))
        .add(invoice(8, "final", "from the web"))
        .save_detailed()
        .await
        .unwrap();
    let first = added(saved[0]);
    assert_eq!(saved[1], Saved::Duplicate(first));
    assert!(!saved[2].is_duplicate() && !saved[3].is_duplicate());
    let stored = client.enqueued::<Invoice>().await.unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0].task.note, "from the web");
    // No window: once it succeeded, the next one is new.
    client.drain().await.unwrap();
    let again = client
        .add(invoice(7, "final", "next month"))
        .save_detailed()
        .await
        .unwrap();
    assert_ne!(added(again[0]), first);
}

async fn a_given_key_makes_one_add_unique_in_its_queue(db: TestDb) {
    let clock = TestClock::new();
    let client = client_on(&db, &clock).await;
    let plain = |n| Plain { n, fail: false };
    // The key applies to the task added just before it: the second task has none.
    let saved = client
        .add(plain(1))
        .unique_key("order-42")
        .add(plain(2))
        .save_detailed()
        .await
        .unwrap();
    let keyed = added(saved[0]);
    added(saved[1]);
    assert_eq!(
        client
            .add(plain(3))
            .unique_key("order-42")
            .save()
            .await
            .unwrap(),
        [keyed]
    );
    assert_eq!(
        client
            .add(plain(4))
            .unique_key("order-43")
            .save_detailed()
            .await
            .unwrap()
            .len(),
        1
    );
    // The same key in another queue is another key; and a given key replaces what a unique
    // queue compares.
    let digest = client
        .add(Digest { user: 9 })
        .unique_key("order-42")
        .save_detailed()
        .await
        .unwrap();
    let digest = added(digest[0]);
    assert_eq!(
        client
            .add(Digest { user: 10 })
            .unique_key("order-42")
            .save()
            .await
            .unwrap(),
        [digest]
    );
    added(
        client
            .add(Digest { user: 9 })
            .save_detailed()
            .await
            .unwrap()[0],
    );
}

async fn failed_tasks_hold_nothing_and_a_retry_waits_for_the_key(db: TestDb) {
    let clock = TestClock::new();
    let client = client_on(&db, &clock).await;
    let failing = client
        .add(Plain { n: 1, fail: true })
        .unique_key("k")
        .save()
        .await
        .unwrap()[0];
    client.drain().await.unwrap();
    assert_eq!(client.status(&failing).await.unwrap(), TaskStatus::Failed);
    // Failed: the key is free.
    let next = added(
        client
            .add(Plain { n: 2, fail: false })
            .unique_key("k")
            .save_detailed()
            .await
            .unwrap()[0],
    );
    // While the new one waits, the failed one cannot run again under the same key.
    assert!(!client.retry(&failing).await.unwrap());
    assert_eq!(client.status(&failing).await.unwrap(), TaskStatus::Failed);
    client.drain().await.unwrap();
    assert_eq!(client.status(&next).await.unwrap(), TaskStatus::NotFound);
    assert!(client.retry(&failing).await.unwrap());
    assert_eq!(
        client
            .add(Plain { n: 3, fail: false })
            .unique_key("k")
            .save()
            .await
            .unwrap(),
        [failing]
    );
}

async fn save_in_detailed_reports_duplicates(db: TestDb) {
    let clock = TestClock::new();
    let client = client_on(&db, &clock).await;
    let first = client.add(Digest { user: 1 }).save().await.unwrap()[0];
    let saved = match &db {
        TestDb::Sqlite(file) => {
            let mut conn = file.conn();
            let tx = conn
                .transaction_with_behavior(backlite::rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            let saved = client
                .add(Digest { user: 1 })
                .add(Digest { user: 2 })
                .save_in_detailed(&tx)
                .unwrap();
            // `save_in` answers ids, the holder's for a duplicate.
            let ids = client.add(Digest { user: 2 }).save_in(&tx).unwrap();
            assert_eq!(ids, [saved[1].id()]);
            tx.commit().unwrap();
            saved
        }
        TestDb::Postgres(pg) => {
            let mut conn = common::backend::pg_connect(&pg.url).await;
            let tx = conn.transaction().await.unwrap();
            let saved = client
                .add(Digest { user: 1 })
                .add(Digest { user: 2 })
                .save_in_detailed(&tx)
                .await
                .unwrap();
            let ids = client.add(Digest { user: 2 }).save_in(&tx).await.unwrap();
            assert_eq!(ids, [saved[1].id()]);
            tx.commit().await.unwrap();

            // The same through an sqlx transaction: the committed tasks hold their keys.
            use backlite::sqlx::{Connection, PgConnection};
            let mut app = PgConnection::connect(&pg.url).await.unwrap();
            let mut tx = app.begin().await.unwrap();
            let again = client
                .add(Digest { user: 2 })
                .add(Digest { user: 3 })
                .save_in_detailed(&mut *tx)
                .await
                .unwrap();
            assert_eq!(again[0], Saved::Duplicate(saved[1].id()));
            let third = added(again[1]);
            let ids = client
                .add(Digest { user: 3 })
                .save_in(&mut *tx)
                .await
                .unwrap();
            assert_eq!(ids, [third]);
            // Rolled back: user 3's task was never stored.
            tx.rollback().await.unwrap();
            saved
        }
    };
    assert_eq!(saved[0], Saved::Duplicate(first));
    let second = added(saved[1]);
    let stored: Vec<TaskId> = client
        .enqueued::<Digest>()
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(stored, [first, second]);
}

async fn clients_adding_at_once_agree_on_each_id(db: TestDb) {
    const KEYS: u64 = 30;
    let clock = TestClock::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(client_on(&db, &clock).await);
    }
    let mut adders = Vec::new();
    for (i, client) in clients.iter().cycle().take(6).enumerate() {
        let client = client.clone();
        adders.push(tokio::spawn(async move {
            let mut ids = vec![None; KEYS as usize];
            for step in 0..KEYS {
                let user = (step + i as u64 * 5) % KEYS;
                let id = client.add(Digest { user }).save().await.unwrap()[0];
                ids[user as usize] = Some(id);
            }
            ids
        }));
    }
    let mut answers = Vec::new();
    for adder in adders {
        answers.push(adder.await.unwrap());
    }
    for user in 0..KEYS as usize {
        for answer in &answers {
            assert_eq!(answer[user], answers[0][user], "user {user}");
        }
    }
    assert_eq!(
        clients[0].enqueued::<Digest>().await.unwrap().len(),
        KEYS as usize
    );
}

/// A duplicate stores nothing, and the `backlite_tasks_added_total` counter does not count
/// it. (Counting is the client's, the same on every backend.)
#[tokio::test]
async fn duplicates_are_not_counted_as_added() {
    let prometheus = PrometheusBuilder::new().install_recorder().unwrap();
    let client = Client::builder()
        .database(":memory:")
        .build()
        .await
        .unwrap();
    let saved = client
        .add(Digest { user: 1 })
        .add(Digest { user: 1 })
        .add(Digest { user: 2 })
        .save_detailed()
        .await
        .unwrap();
    assert_eq!(saved.iter().filter(|s| s.is_duplicate()).count(), 1);
    client.add(Digest { user: 2 }).save().await.unwrap();
    let added = prometheus.render().lines().find_map(|line| {
        let value = line.strip_prefix(r#"backlite_tasks_added_total{queue="digest"} "#)?;
        Some(value.parse::<f64>().unwrap())
    });
    assert_eq!(added, Some(2.0));
}
