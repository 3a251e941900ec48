//! Adding a task inside the application's own transaction: the order row and the task that
//! emails its receipt are committed together, or not at all.
//!
//! Run it with `cargo run --example transaction`.

use std::time::Duration;

use backlite::rusqlite::{Connection, TransactionBehavior};
use backlite::{Client, Task, TaskStatus, processor, processors};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "order_receipt", max_attempts = 3, backoff = "1s", retention)]
struct OrderReceipt {
    order_id: i64,
}

#[processor]
async fn send_receipt(task: OrderReceipt) -> anyhow::Result<()> {
    println!("  receipt for order {} sent", task.order_id);
    Ok(())
}

fn place_order(
    client: &Client,
    conn: &mut Connection,
    order_id: i64,
    commit: bool,
) -> anyhow::Result<backlite::TaskId> {
    // IMMEDIATE: take the write lock up front, so the transaction cannot fail half-way
    // with SQLITE_BUSY because backlite committed in between.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO orders (id, total_cents) VALUES (?1, 4200)",
        [order_id],
    )?;
    let ids = client.add(OrderReceipt { order_id }).save_in(&tx)?;
    if commit {
        tx.commit()?;
    } else {
        tx.rollback()?;
    }
    Ok(ids[0])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.db");

    let client = Client::builder()
        .database(&path)
        .workers(2)
        .processors(processors![send_receipt])
        .build()
        .await?;
    client.start();

    let mut conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total_cents INTEGER)")?;

    let kept = place_order(&client, &mut conn, 1, true)?;
    let dropped = place_order(&client, &mut conn, 2, false)?;
    println!("order 1 committed, order 2 rolled back");

    // No notify call: the client notices the commit by itself.
    for _ in 0..50 {
        if client.status(&kept).await? == TaskStatus::Succeeded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("order 1 receipt: {:?}", client.status(&kept).await?);
    println!("order 2 receipt: {:?}", client.status(&dropped).await?);
    let orders: i64 = conn.query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))?;
    println!("orders stored: {orders}");

    client.stop(Duration::from_secs(5)).await;
    Ok(())
}
