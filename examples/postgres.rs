//! The same tasks and processors on PostgreSQL: several processes (here, two clients) share
//! one database, and an order is stored with its receipt task in one transaction of the
//! application's own.
//!
//! Run it with `cargo run --example postgres`, against the server in
//! `BACKLITE_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`). It uses a
//! schema of its own, `backlite_example`, and drops it at the end.

use std::time::Duration;

use backlite::tokio_postgres::{self, NoTls};
use backlite::{Client, Context, Task, TaskStatus, processor, processors};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "order_receipt", max_attempts = 3, backoff = "1s", retention)]
struct OrderReceipt {
    order_id: i64,
}

#[processor]
async fn send_receipt(ctx: Context, task: OrderReceipt) -> anyhow::Result<()> {
    println!(
        "  receipt for order {} sent (task {})",
        task.order_id,
        ctx.task_id()
    );
    Ok(())
}

const SCHEMA: &str = "backlite_example";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("BACKLITE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());

    // The one line that differs from SQLite: the database is a URL.
    let open = || {
        Client::builder()
            .database(&url)
            .schema(SCHEMA)
            .workers(4)
            .processors(processors![send_receipt])
            .build()
    };
    // Two clients, as two hosts would run them: each claims with SKIP LOCKED, and a commit on
    // either wakes both through LISTEN/NOTIFY.
    let (first, second) = (open().await?, open().await?);
    first.start();
    second.start();

    // The application's own connection and transaction: the order and its receipt task are
    // committed together, or neither is.
    let (mut app, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    app.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {SCHEMA}.orders (id bigint PRIMARY KEY)"
    ))
    .await?;
    let mut receipts = Vec::new();
    for order_id in 1..=3_i64 {
        let tx = app.transaction().await?;
        tx.execute(
            &format!("INSERT INTO {SCHEMA}.orders (id) VALUES ($1) ON CONFLICT DO NOTHING"),
            &[&order_id],
        )
        .await?;
        let ids = first.add(OrderReceipt { order_id }).save_in(&tx).await?;
        tx.commit().await?;
        receipts.extend(ids);
    }
    // Plain saves, spread over both clients' workers.
    let more = second
        .add(OrderReceipt { order_id: 4 })
        .add(OrderReceipt { order_id: 5 })
        .save()
        .await?;
    receipts.extend(more);

    for _ in 0..200 {
        let mut done = 0;
        for id in &receipts {
            if first.status(id).await? == TaskStatus::Succeeded {
                done += 1;
            }
        }
        if done == receipts.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for stats in first.stats().await? {
        println!("{stats:?}");
    }
    first.stop(Duration::from_secs(5)).await;
    second.stop(Duration::from_secs(5)).await;
    drop((first, second));
    app.batch_execute(&format!("DROP SCHEMA {SCHEMA} CASCADE"))
        .await?;
    println!("all done");
    Ok(())
}
