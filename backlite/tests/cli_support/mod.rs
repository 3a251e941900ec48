//! What the `backlite` command's tests share: a fresh database per test on either backend,
//! and the real binary run against it.
//!
//! PostgreSQL runs when `BACKLITE_TEST_POSTGRES_URL` is set; without it the PostgreSQL tests
//! skip with one line, except when `CI` is set, where they fail.

#![allow(dead_code, reason = "each test file uses a part")]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use backlite::{Client, ClientBuilder};

/// The database of one test.
pub enum Db {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

pub fn sqlite() -> Option<Db> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cli.db");
    Some(Db::Sqlite { _dir: dir, path })
}

/// A new schema name on the test server (created by the first client built on it).
pub fn postgres() -> Option<Db> {
    let url = pg_url()?;
    Some(Db::Postgres {
        url,
        schema: pg_schema_name(),
    })
}

pub fn pg_url() -> Option<String> {
    match std::env::var("BACKLITE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but BACKLITE_TEST_POSTGRES_URL is not: PostgreSQL tests must run")
        }
        _ => {
            eprintln!("skipped: BACKLITE_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// Unique across the processes that test at once; old ones are dropped by the other suites'
/// cleanup, which looks for this prefix and time.
pub fn pg_schema_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    format!(
        "backlite_test_{}_cli{:08x}{:04x}",
        now.as_secs(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What one run of the command gave.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The binary, with no database from the environment of whoever runs the tests.
pub fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backlite"));
    command
        .env_remove("BACKLITE_DATABASE")
        .env_remove("BACKLITE_SCHEMA")
        .env_remove("RUST_LOG");
    command
}

impl Db {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres { .. })
    }

    /// A builder on this database, as the application's would be.
    pub fn builder(&self) -> ClientBuilder {
        match self {
            Db::Sqlite { path, .. } => Client::builder().database(path),
            Db::Postgres { url, schema } => {
                Client::builder().database(url).schema(schema).pool_size(3)
            }
        }
    }

    /// The command on this database, the way an operator gives it: the database from
    /// `BACKLITE_DATABASE` (and `BACKLITE_SCHEMA`) on one backend, as options on the other.
    pub fn command(&self) -> Command {
        let mut command = bin();
        match self {
            Db::Sqlite { path, .. } => {
                command.arg("--database").arg(path);
            }
            Db::Postgres { url, schema } => {
                command
                    .env("BACKLITE_DATABASE", url)
                    .env("BACKLITE_SCHEMA", schema);
            }
        }
        command
    }

    /// Runs the command with `args` and waits for it.
    pub fn run(&self, args: &[&str]) -> Run {
        self.command()
            .args(args)
            .output()
            .expect("run the backlite binary")
            .into()
    }

    /// `run` off the async runtime's threads, for tests that hold a started client.
    pub async fn run_async(&self, args: &[&str]) -> Run {
        let mut command = self.command();
        command.args(args);
        tokio::task::spawn_blocking(move || Run::from(command.output().expect("run backlite")))
            .await
            .expect("join")
    }

    /// Writes `version` into the schema table, as a newer backlite would have.
    pub async fn record_schema_version(&self, version: i64) {
        match self {
            Db::Sqlite { path, .. } => {
                let conn = backlite::rusqlite::Connection::open(path).expect("open");
                conn.execute(
                    "INSERT INTO backlite_schema (version, applied_at) VALUES (?1, 0)",
                    [version],
                )
                .expect("insert version");
            }
            Db::Postgres { url, schema } => {
                let conn = pg_connect(url).await;
                conn.execute(
                    &format!("INSERT INTO \"{schema}\".backlite_schema (version) VALUES ($1)"),
                    &[&(version as i32)],
                )
                .await
                .expect("insert version");
            }
        }
    }
}

/// A plain connection on `url`.
pub async fn pg_connect(url: &str) -> backlite::tokio_postgres::Client {
    let (client, connection) =
        backlite::tokio_postgres::connect(url, backlite::tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at BACKLITE_TEST_POSTGRES_URL: {e}"));
    tokio::spawn(connection);
    client
}

/// Polls `check` until it holds, for at most ten seconds.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
