//! Behaviour that belongs to SQLite itself: files, `:memory:`, schema versions on a file, and
//! enqueueing in a rusqlite transaction. Everything else the client does is in the suite that
//! runs on every backend (tests/backends.rs).

mod common;

use std::time::{Duration, Instant};

use backlite::rusqlite::{Connection, TransactionBehavior};
use backlite::{Client, Context, Error, Task, TaskStatus, processor, processors};
use common::{count, eventually, record, runs, temp_db};
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

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "plain", max_attempts = 3, retention(data))]
struct Plain {
    key: String,
}

#[processor]
async fn run_plain(ctx: Context, task: Plain) -> Result<(), std::io::Error> {
    record(&task.key, &ctx);
    Ok(())
}

fn all() -> backlite::Registry {
    processors![run_plain]
}

fn plain(key: &str) -> Plain {
    Plain { key: key.into() }
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

// ---------------------------------------------------------------- configuration

#[tokio::test]
async fn a_database_in_a_missing_directory_cannot_be_opened() {
    let db = temp_db();
    let missing_dir = Client::builder().database(db.dir.path().join("no/such/dir/x.db"));
    let result = missing_dir.build().await;
    assert!(matches!(result, Err(Error::Open { .. })), "{result:?}");
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
    assert_eq!(version, 9);
    // Opening again applies nothing twice.
    drop(Client::builder().database(&db.path).build().await.unwrap());
    assert_eq!(count(&db.conn(), "backlite_schema"), 9);

    db.conn()
        .execute("INSERT INTO backlite_schema VALUES (99, 0)", [])
        .unwrap();
    let result = Client::builder().database(&db.path).build().await;
    assert!(
        matches!(
            result,
            Err(Error::SchemaTooNew {
                found: 99,
                supported: 9
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
