//! backlite beside sqlx 0.8 (`sqlite`): one SQLite library, one database file, and tasks
//! saved in sqlx transactions (`save_in(&mut *tx)`, feature `sqlx-sqlite`).

#[path = "../../common/backlite_part.rs"]
mod backlite_part;

use std::time::Duration;

use backlite::{Client, Error, TaskStatus};
use backlite_part::Note;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

async fn open_pool(path: &std::path::Path) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(5));
    Ok(SqlitePool::connect_with(options).await?)
}

/// Saves a note and its task in one sqlx transaction, committed or rolled back.
async fn save_note(
    client: &Client,
    pool: &SqlitePool,
    body: &str,
    commit: bool,
) -> anyhow::Result<backlite::TaskId> {
    // IMMEDIATE, as with rusqlite: a deferred transaction could meet SQLITE_BUSY at its
    // first write if backlite committed in between.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("INSERT INTO notes (body) VALUES (?1)")
        .bind(body)
        .execute(&mut *tx)
        .await?;
    let ids = client
        .add(Note { body: body.into() })
        .save_in(&mut *tx)
        .await?;
    if commit {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(ids[0])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("compat.db");
    let client = backlite_part::client(&path).await?;

    let pool = open_pool(&path).await?;
    sqlx::query("CREATE TABLE notes (body TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    sqlx::query("INSERT INTO notes (body) VALUES (?1)")
        .bind("from sqlx")
        .execute(&pool)
        .await?;

    let committed = save_note(&client, &pool, "committed", true).await?;
    let rolled_back = save_note(&client, &pool, "rolled back", false).await?;

    // A transaction on another file: refused, nothing written there.
    let other = open_pool(&dir.path().join("other.db")).await?;
    let mut tx = other.begin().await?;
    let refused = client
        .add(Note {
            body: "elsewhere".into(),
        })
        .save_in(&mut *tx)
        .await;
    anyhow::ensure!(
        matches!(refused, Err(Error::WrongDatabase { .. })),
        "a transaction on another file gave {refused:?}"
    );
    tx.rollback().await?;

    // Runs the committed task with its own, and checks that nothing else ran.
    backlite_part::run_one_task(&client, &[committed]).await?;
    let status = client.status(&rolled_back).await?;
    anyhow::ensure!(
        status == TaskStatus::NotFound,
        "rolled-back task: {status:?}"
    );

    let notes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notes")
        .fetch_one(&pool)
        .await?;
    anyhow::ensure!(notes == 2, "{notes} notes");
    pool.close().await;
    println!(
        "sqlx 0.8 with save_in, SQLite {}",
        backlite_part::sqlite_version()
    );
    Ok(())
}
