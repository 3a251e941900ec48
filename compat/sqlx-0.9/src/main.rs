//! backlite beside sqlx 0.9 (`sqlite`): one SQLite library, one database file.

#[path = "../../common/backlite_part.rs"]
mod backlite_part;

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("compat.db");
    let client = backlite_part::client(&path).await?;

    let options = SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePool::connect_with(options).await?;
    sqlx::query("CREATE TABLE notes (body TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    sqlx::query("INSERT INTO notes (body) VALUES (?1)")
        .bind("from sqlx")
        .execute(&pool)
        .await?;

    backlite_part::run_one_task(&client, &[]).await?;

    let notes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notes")
        .fetch_one(&pool)
        .await?;
    anyhow::ensure!(notes == 1, "{notes} notes");
    pool.close().await;
    println!("sqlx 0.9, SQLite {}", backlite_part::sqlite_version());
    Ok(())
}
