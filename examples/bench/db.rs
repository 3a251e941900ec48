//! Where a workload runs: a fresh SQLite file in a directory of its own, or a fresh schema of
//! a PostgreSQL database, dropped once the workload is done.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use backlite::ClientBuilder;

pub enum Db {
    /// The directory that holds the workload's `bench.db`.
    Sqlite(PathBuf),
    Postgres {
        url: String,
        schema: String,
    },
}

impl Db {
    /// A client builder on this database.
    pub fn builder(&self) -> ClientBuilder {
        match self {
            Db::Sqlite(dir) => backlite::Client::builder().database(dir.join("bench.db")),
            Db::Postgres { url, schema } => backlite::Client::builder()
                .database(url)
                .schema(schema.clone()),
        }
    }

    /// The arguments that name this database to a child process.
    pub fn args(&self) -> Vec<String> {
        match self {
            Db::Sqlite(dir) => vec!["--dir".into(), dir.display().to_string()],
            Db::Postgres { url, schema } => vec![
                "--postgres".into(),
                url.clone(),
                "--schema".into(),
                schema.clone(),
            ],
        }
    }

    /// Waits until backlite's tasks table is empty: every outcome is committed.
    pub async fn table_empty(&self) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(dir) => {
                let conn = backlite::rusqlite::Connection::open_with_flags(
                    dir.join("bench.db"),
                    backlite::rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | backlite::rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                // Waiting and running tasks, each from its partial index: retained rows are
                // never read.
                let mut any = conn.prepare(
                    "SELECT EXISTS (SELECT 1 FROM backlite_tasks WHERE state = 0) \
                     OR EXISTS (SELECT 1 FROM backlite_tasks WHERE state = 1)",
                )?;
                while any.query_row([], |r| r.get::<_, bool>(0))? {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Db::Postgres { url, schema } => {
                let client = connect(url).await?;
                let any = client
                    .prepare(&format!(
                        "SELECT EXISTS (SELECT 1 FROM \"{schema}\".backlite_tasks \
                         WHERE state = 0) OR EXISTS (SELECT 1 FROM \"{schema}\".backlite_tasks \
                         WHERE state = 1)"
                    ))
                    .await?;
                while client.query_one(&any, &[]).await?.get::<_, bool>(0) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        Ok(())
    }
}

/// A connection of its own, driven by a task of its own.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| "cannot connect to the PostgreSQL server of --postgres")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("bench: a PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

/// A schema name no other run uses: `backlite_bench_<unix secs>_<pid>_<n>_<workload>`.
pub fn fresh_schema(workload: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let workload: String = workload
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    format!(
        "backlite_bench_{secs}_{}_{}_{workload}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn drop_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    let client = connect(url).await?;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}

/// Drops the schemas of earlier runs that were stopped before they could drop their own:
/// those named by [`fresh_schema`] more than an hour ago.
pub async fn drop_stale_schemas(url: &str) -> anyhow::Result<()> {
    let client = connect(url).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'backlite\\_bench\\_%'",
            &[],
        )
        .await?;
    for row in rows {
        let name: String = row.try_get(0)?;
        let secs = name
            .strip_prefix("backlite_bench_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if secs.is_some_and(|secs| secs + 3600 < now) {
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .await?;
        }
    }
    Ok(())
}
