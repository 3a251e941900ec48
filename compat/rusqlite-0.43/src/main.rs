//! backlite beside the application's own rusqlite 0.43, the newest: one SQLite library, one
//! database file, and backlite's rusqlite is the application's, so `save_in` takes its
//! transaction.

#[path = "../../common/backlite_part.rs"]
mod backlite_part;

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("compat.db");
    let client = backlite_part::client(&path).await?;

    let mut conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch("CREATE TABLE notes (body TEXT NOT NULL)")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("INSERT INTO notes (body) VALUES ('from rusqlite')", [])?;
    let saved = client
        .add(backlite_part::Note {
            body: "in the application's transaction".into(),
        })
        .save_in(&tx)?;
    tx.commit()?;

    backlite_part::run_one_task(&client, &saved).await?;

    let notes: i64 = conn.query_row("SELECT COUNT(*) FROM notes", [], |r| r.get(0))?;
    anyhow::ensure!(notes == 1, "{notes} notes");
    println!("rusqlite 0.43, SQLite {}", backlite_part::sqlite_version());
    Ok(())
}
