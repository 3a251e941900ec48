//! The database that the multi-process tests share between processes: a SQLite file, or a
//! fresh schema of the PostgreSQL test database. It points `test_worker` processes and clients
//! at it, and reads back what backlite stored there.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use backlite::{Client, ClientBuilder, tokio_postgres};

use crate::common::{TempDb, count, pg_schema, temp_db};

pub const WORKER: &str = env!("CARGO_BIN_EXE_test_worker");

pub enum SharedDb {
    Sqlite(TempDb),
    Postgres(Box<Pg>),
}

/// A schema on the PostgreSQL test server, with a connection of the test's own to read it.
pub struct Pg {
    pub url: String,
    pub schema: String,
    /// For the run log, which the processes append to.
    dir: tempfile::TempDir,
    /// Its own runtime, so that the reads work from sync and async tests alike.
    runtime: Option<tokio::runtime::Runtime>,
    client: tokio_postgres::Client,
}

impl Drop for Pg {
    fn drop(&mut self) {
        let drop_schema = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        let _ = self.block_on(self.client.batch_execute(&drop_schema));
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks, which an async test's thread must not do.
            runtime.shutdown_background();
        }
    }
}

impl Pg {
    /// Runs `future` to the end on a thread of its own: a thread of an async test may not
    /// block on a runtime.
    fn block_on<F: std::future::Future + Send>(&self, future: F) -> F::Output
    where
        F::Output: Send,
    {
        let runtime = self.runtime.as_ref().expect("runtime");
        std::thread::scope(|s| s.spawn(|| runtime.block_on(future)).join()).expect("query thread")
    }

    fn table(&self, table: &str) -> String {
        format!("\"{}\".{table}", self.schema)
    }
}

impl SharedDb {
    pub fn sqlite() -> SharedDb {
        SharedDb::Sqlite(temp_db())
    }

    /// A fresh schema on the test server; `None` when PostgreSQL tests are skipped.
    pub fn postgres() -> Option<SharedDb> {
        let (url, schema) = pg_schema()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let connect = async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
            tokio::spawn(connection);
            client
        };
        let client = std::thread::scope(|s| s.spawn(|| runtime.block_on(connect)).join())
            .expect("connect thread");
        Some(SharedDb::Postgres(Box::new(Pg {
            url,
            schema,
            dir: tempfile::tempdir().expect("temp dir"),
            runtime: Some(runtime),
            client,
        })))
    }

    /// Where the test keeps its run log.
    pub fn dir(&self) -> &Path {
        match self {
            SharedDb::Sqlite(db) => db.dir.path(),
            SharedDb::Postgres(pg) => pg.dir.path(),
        }
    }

    /// `test_worker` with the database arguments; the mode and its arguments follow.
    pub fn worker(&self) -> Command {
        let mut command = Command::new(WORKER);
        match self {
            SharedDb::Sqlite(db) => command.arg(&db.path),
            SharedDb::Postgres(pg) => command.args(["--schema", &pg.schema, &pg.url]),
        };
        command
    }

    /// A client builder on the database.
    pub fn builder(&self) -> ClientBuilder {
        match self {
            SharedDb::Sqlite(db) => Client::builder().database(&db.path),
            SharedDb::Postgres(pg) => Client::builder().database(&pg.url).schema(&pg.schema),
        }
    }

    /// Tasks not done: pending, scheduled or claimed.
    pub fn unfinished(&self) -> i64 {
        match self {
            SharedDb::Sqlite(db) => count(&db.conn(), "backlite_tasks WHERE state <= 1"),
            SharedDb::Postgres(pg) => {
                let sql = format!(
                    "SELECT COUNT(*) FROM {} WHERE state <= 1",
                    pg.table("backlite_tasks")
                );
                let row = pg.block_on(pg.client.query_one(&sql, &[])).expect("count");
                row.get(0)
            }
        }
    }

    /// The completed table's outcomes: whether each succeeded, and when its recorded attempt
    /// started (ms since the epoch).
    pub fn completed_runs(&self) -> Vec<(bool, i64)> {
        match self {
            SharedDb::Sqlite(db) => {
                let conn = db.conn();
                let mut rows = conn
                    .prepare("SELECT state = 2, finished_at FROM backlite_tasks WHERE state >= 2")
                    .unwrap();
                rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            SharedDb::Postgres(pg) => {
                let sql = format!(
                    "SELECT state = 2, finished_at FROM {} WHERE state >= 2",
                    pg.table("backlite_tasks")
                );
                let rows = pg.block_on(pg.client.query(&sql, &[])).expect("completed");
                rows.iter().map(|r| (r.get(0), r.get(1))).collect()
            }
        }
    }

    /// The completed table: each task's payload, whether it succeeded, and its attempts.
    pub fn completed(&self) -> Vec<(Vec<u8>, bool, u32)> {
        match self {
            SharedDb::Sqlite(db) => {
                let conn = db.conn();
                let mut rows = conn
                    .prepare(
                        "SELECT task, state = 2, attempts FROM backlite_tasks WHERE state >= 2",
                    )
                    .unwrap();
                rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            SharedDb::Postgres(pg) => {
                let sql = format!(
                    "SELECT task, state = 2, attempts FROM {} WHERE state >= 2",
                    pg.table("backlite_tasks")
                );
                let rows = pg.block_on(pg.client.query(&sql, &[])).expect("completed");
                rows.iter()
                    .map(|r| (r.get(0), r.get(1), r.get::<_, i32>(2) as u32))
                    .collect()
            }
        }
    }

    /// The due times of the unfinished tasks of `queue`.
    pub fn unfinished_run_at(&self, queue: &str) -> Vec<i64> {
        match self {
            SharedDb::Sqlite(db) => {
                let conn = db.conn();
                let mut rows = conn
                    .prepare("SELECT run_at FROM backlite_tasks WHERE queue = ?1 AND state <= 1")
                    .unwrap();
                rows.query_map([queue], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            SharedDb::Postgres(pg) => {
                let sql = format!(
                    "SELECT run_at FROM {} WHERE queue = $1 AND state <= 1",
                    pg.table("backlite_tasks")
                );
                let rows = pg
                    .block_on(pg.client.query(&sql, &[&queue]))
                    .expect("run_at");
                rows.iter().map(|r| r.get(0)).collect()
            }
        }
    }
}
