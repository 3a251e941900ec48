//! `save_in` with a tokio-postgres transaction under each `SaveInWakeup`: the tasks exist if
//! and only if the application's transaction commits, and the workers wake once it has, with
//! the NOTIFY in the transaction or sent after its commit. (tests/backends.rs checks that a
//! transaction on another database is refused.)

mod common;

use std::time::{Duration, Instant};

use backlite::tokio_postgres::{self, NoTls};
use backlite::{Client, Context, SaveInWakeup, Task, TaskStatus, processor, processors};
use common::{eventually, pg_schema, record, runs};
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
    let Some((url, schema)) = pg_schema() else {
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

/// The same with an sqlx transaction (`&mut *tx`), as SeaORM and most async applications
/// hold one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_sqlx_transaction() {
    use backlite::sqlx::{Connection, PgConnection};

    let Some((url, schema)) = pg_schema() else {
        return;
    };
    let client = open_client(&url, &schema, SaveInWakeup::InTransaction).await;
    client.start();
    let mut app = PgConnection::connect(&url).await.unwrap();

    let mut tx = app.begin().await.unwrap();
    let rolled_back = client
        .add(Receipt {
            key: "sqlx-rollback".into(),
        })
        .save_in(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let mut tx = app.begin().await.unwrap();
    let committed = client
        .add(Receipt {
            key: "sqlx-commit".into(),
        })
        .save_in(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(eventually(Duration::from_secs(5), || runs("sqlx-commit").len() == 1).await);
    assert!(client.stop(Duration::from_secs(5)).await);
    assert_eq!(
        client.status(&committed[0]).await.unwrap(),
        TaskStatus::Succeeded
    );
    assert_eq!(
        client.status(&rolled_back[0]).await.unwrap(),
        TaskStatus::NotFound
    );
    assert!(runs("sqlx-rollback").is_empty());

    // A transaction in another database (no backlite tables there) is refused.
    let other = format!("{}/postgres", url.rsplit_once('/').unwrap().0);
    let mut elsewhere = PgConnection::connect(&other).await.unwrap();
    let mut tx = elsewhere.begin().await.unwrap();
    let refused = client
        .add(Receipt {
            key: "sqlx-elsewhere".into(),
        })
        .save_in(&mut *tx)
        .await;
    assert!(
        matches!(refused, Err(backlite::Error::WrongDatabase { .. })),
        "{refused:?}"
    );
}
