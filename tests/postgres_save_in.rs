//! `save_in` with a tokio-postgres transaction: the tasks exist if and only if the
//! application's transaction commits, every client wakes once it has (with the NOTIFY in the
//! transaction, or sent after its commit), and a transaction elsewhere is refused.

mod common;

use std::time::{Duration, Instant};

use backlite::tokio_postgres::{self, NoTls};
use backlite::{Client, Context, Error, SaveInWakeup, Task, TaskStatus, processor, processors};
use common::{eventually, record, runs};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "pg_receipt", retention)]
struct Receipt {
    key: String,
}

#[processor]
async fn run_receipt(ctx: Context, task: Receipt) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    Ok(())
}

/// The test server's URL and a fresh schema name; `None` (with one printed line) without a
/// server outside CI. In CI a missing URL fails.
fn server() -> Option<(String, String)> {
    let url = match std::env::var("BACKLITE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but BACKLITE_TEST_POSTGRES_URL is not: PostgreSQL tests must run")
        }
        _ => {
            eprintln!("skipped: BACKLITE_TEST_POSTGRES_URL is not set");
            return None;
        }
    };
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let schema = format!("backlite_test_{secs}_{}", uuid_suffix());
    Some((url, schema))
}

fn uuid_suffix() -> String {
    format!("{:x}", std::process::id() as u64 * 1_000_003 + rand_nanos())
}

fn rand_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
}

async fn open_client(url: &str, schema: &str, wakeup: SaveInWakeup) -> Client {
    Client::builder()
        .database(url)
        .schema(schema)
        .save_in_wakeup(wakeup)
        .processors(processors![run_receipt])
        .build()
        .await
        .expect("build")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (conn, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    conn
}

async fn commit_wakes_and_rollback_stores_nothing(wakeup: SaveInWakeup, tag: &str) {
    let Some((url, schema)) = server() else {
        return;
    };
    let client = open_client(&url, &schema, wakeup).await;
    client.start();
    let mut app = connect(&url).await;

    let (gone, kept) = (format!("{tag}-rollback"), format!("{tag}-commit"));
    let tx = app.transaction().await.unwrap();
    let rolled_back = client
        .add(Receipt { key: gone.clone() })
        .save_in(&tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let tx = app.transaction().await.unwrap();
    let committed = client
        .add(Receipt { key: kept.clone() })
        .save_in(&tx)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(runs(&kept).is_empty(), "ran before the commit");
    let committed_at = Instant::now();
    tx.commit().await.unwrap();
    assert!(eventually(Duration::from_secs(5), || runs(&kept).len() == 1).await);
    let picked_up = runs(&kept)[0].at - committed_at;
    println!("{tag}: picked up {picked_up:?} after the application's commit");
    assert!(
        picked_up < Duration::from_secs(1),
        "picked up after {picked_up:?}"
    );

    assert!(client.stop(Duration::from_secs(5)).await);
    assert_eq!(
        client.status(&rolled_back[0]).await.unwrap(),
        TaskStatus::NotFound
    );
    assert_eq!(
        client.status(&committed[0]).await.unwrap(),
        TaskStatus::Succeeded
    );
    assert!(runs(&gone).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_notify_in_the_transaction() {
    commit_wakes_and_rollback_stores_nothing(SaveInWakeup::InTransaction, "in-tx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_notify_after_the_commit() {
    commit_wakes_and_rollback_stores_nothing(SaveInWakeup::AfterCommit, "after-commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_on_another_schema_is_refused_and_gets_nothing() {
    let Some((url, schema)) = server() else {
        return;
    };
    let client = open_client(&url, &schema, SaveInWakeup::InTransaction).await;
    let app = connect(&url).await;
    // A database with backlite's tables in a schema of the same name, but another identity.
    let another_db = format!("backlite_test_db_{}", uuid_suffix());
    app.batch_execute(&format!("CREATE DATABASE {another_db}"))
        .await
        .unwrap();
    let another_url = format!("{}/{another_db}", url.rsplit_once('/').unwrap().0);
    let twin = open_client(&another_url, &schema, SaveInWakeup::InTransaction).await;
    drop(twin);
    let mut elsewhere = connect(&another_url).await;
    let tx = elsewhere.transaction().await.unwrap();
    let refused = client
        .add(Receipt { key: "twin".into() })
        .save_in(&tx)
        .await;
    assert!(
        matches!(&refused, Err(Error::WrongDatabase { .. })),
        "{refused:?}"
    );
    tx.commit().await.unwrap();
    let stored: i64 = elsewhere
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".backlite_tasks"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "a refused save_in stored tasks");
    drop(elsewhere);
    // A database without backlite's tables in that schema at all.
    let bare = format!("backlite_test_db_{}", uuid_suffix());
    app.batch_execute(&format!("CREATE DATABASE {bare}"))
        .await
        .unwrap();
    let bare_url = format!("{}/{bare}", url.rsplit_once('/').unwrap().0);
    let mut bare_conn = connect(&bare_url).await;
    let tx = bare_conn.transaction().await.unwrap();
    let refused = client
        .add(Receipt { key: "bare".into() })
        .save_in(&tx)
        .await;
    assert!(
        matches!(&refused, Err(Error::WrongDatabase { .. })),
        "{refused:?}"
    );
    drop(tx);
    drop(bare_conn);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for db in [another_db, bare] {
        let _ = app
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await;
    }
}
