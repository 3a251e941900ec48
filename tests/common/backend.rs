//! A fresh database per test on either backend, and the few reads and writes that tests make
//! behind backlite's back (a corrupt payload, a dead worker's claim, a retained row), each
//! written once per backend so that the tests themselves are backend-neutral.

use std::time::{Duration, Instant};

use backlite::{Client, ClientBuilder, TaskId};
use tokio_postgres::NoTls;

use super::{CompletedRow, TempDb, count, pg_schema, temp_db, uuid_bytes};

/// The database of one test.
pub enum TestDb {
    Sqlite(TempDb),
    Postgres(PgDb),
}

/// A schema of its own on the test server, and a plain connection there.
pub struct PgDb {
    pub url: String,
    pub schema: String,
    pub conn: tokio_postgres::Client,
}

/// A new SQLite file.
pub async fn open_sqlite() -> Option<TestDb> {
    Some(TestDb::Sqlite(temp_db()))
}

/// A new schema on the PostgreSQL test server, or `None` when there is none (see
/// [`pg_schema`]). The schema itself is created by the first client built on it.
pub async fn open_postgres() -> Option<TestDb> {
    let (url, schema) = pg_schema()?;
    drop_old_test_schemas(&url).await;
    let conn = pg_connect(&url).await;
    Some(TestDb::Postgres(PgDb { url, schema, conn }))
}

/// A plain connection, no backlite, on `url`; the URL was given, so an unreachable server
/// fails the test.
pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at BACKLITE_TEST_POSTGRES_URL: {e}"));
    tokio::spawn(connection);
    client
}

/// A test cannot clean up after itself once it has failed, so the first test of a process
/// drops the schemas of tests that started over an hour ago.
async fn drop_old_test_schemas(url: &str) {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let conn = pg_connect(url).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let rows = conn
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'backlite\\_test\\_%'",
                &[],
            )
            .await
            .unwrap_or_default();
        for row in rows {
            let name: String = row.get(0);
            let started = name
                .trim_start_matches("backlite_test_")
                .split('_')
                .next()
                .and_then(|s| s.parse::<u64>().ok());
            if started.is_some_and(|secs| secs + 3600 < now) {
                // Another process may be dropping it too.
                let _ = conn
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await;
            }
        }
    })
    .await;
}

impl TestDb {
    /// A builder on this database; on PostgreSQL with a small pool, since many tests run at
    /// once against one server.
    pub fn builder(&self) -> ClientBuilder {
        match self {
            TestDb::Sqlite(db) => Client::builder().database(&db.path),
            TestDb::Postgres(pg) => Client::builder()
                .database(&pg.url)
                .schema(&pg.schema)
                .pool_size(4),
        }
    }

    /// `name` made unique to this backend: the run recorder is shared by every test of the
    /// binary, and each test runs once per backend.
    pub fn key(&self, name: &str) -> String {
        let backend = match self {
            TestDb::Sqlite(_) => "sqlite",
            TestDb::Postgres(_) => "postgres",
        };
        format!("{backend}/{name}")
    }

    /// The PostgreSQL side, for the tests that only PostgreSQL runs.
    pub fn pg(&self) -> &PgDb {
        match self {
            TestDb::Postgres(pg) => pg,
            TestDb::Sqlite(_) => panic!("a PostgreSQL test on SQLite"),
        }
    }

    /// Rows in `table`, which may carry a condition (`backlite_tasks WHERE state <= 1`).
    pub async fn count(&self, table: &str) -> i64 {
        match self {
            TestDb::Sqlite(db) => count(&db.conn(), table),
            TestDb::Postgres(pg) => pg.count(&pg.schema, table).await,
        }
    }

    /// The retained row of task `id`: its row once it ended.
    pub async fn completed_row(&self, id: &TaskId) -> Option<CompletedRow> {
        match self {
            TestDb::Sqlite(db) => super::completed_row(&db.conn(), id),
            TestDb::Postgres(pg) => {
                let row = pg
                    .conn
                    .query_opt(
                        format!(
                            "SELECT queue, task, attempts, state = 2, \
                             COALESCE(last_duration_us, 0), last_error, created_at, finished_at, \
                             expires_at FROM \"{}\".backlite_tasks \
                             WHERE id = $1::text::uuid AND state >= 2",
                            pg.schema
                        )
                        .as_str(),
                        &[&id.to_string()],
                    )
                    .await
                    .expect("read a completed row")?;
                Some(CompletedRow {
                    queue: row.get(0),
                    payload: row.get(1),
                    attempts: i64::from(row.get::<_, i32>(2)),
                    succeeded: row.get(3),
                    last_duration_us: row.get(4),
                    error: row.get(5),
                    created_at: row.get(6),
                    last_executed_at: row.get(7),
                    expires_at: row.get(8),
                })
            }
        }
    }

    /// Overwrites the stored payload of waiting task `id`.
    pub async fn set_payload(&self, id: &TaskId, payload: &[u8]) {
        let changed = match self {
            TestDb::Sqlite(db) => db
                .conn()
                .execute(
                    "UPDATE backlite_tasks SET task = ?2 WHERE id = ?1",
                    (&uuid_bytes(id)[..], payload),
                )
                .expect("set payload") as u64,
            TestDb::Postgres(pg) => pg
                .conn
                .execute(
                    format!(
                        "UPDATE \"{}\".backlite_tasks SET task = $2 WHERE id = $1::text::uuid",
                        pg.schema
                    )
                    .as_str(),
                    &[&id.to_string(), &payload],
                )
                .await
                .expect("set payload"),
        };
        assert_eq!(changed, 1, "no waiting task {id}");
    }

    /// Claims waiting task `id` now, with a lease of `lease`, as a worker of some other
    /// process would just before it died. Returns a time just before the claim's.
    pub async fn claim_as_dead_worker(&self, id: &TaskId, lease: Duration) -> Instant {
        let lease = lease.as_millis() as i64;
        let before = Instant::now();
        let changed = match self {
            TestDb::Sqlite(db) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock after 1970")
                    .as_millis() as i64;
                db.conn()
                    .execute(
                        "UPDATE backlite_tasks SET state = 1, claimed_at = ?2, \
                         lease_until = ?2 + ?3, fence = fence + 1 WHERE id = ?1 AND state = 0",
                        (&uuid_bytes(id)[..], now, lease),
                    )
                    .expect("claim") as u64
            }
            // The server's clock, which the driver's leases are measured on.
            TestDb::Postgres(pg) => pg
                .conn
                .execute(
                    format!(
                        "UPDATE \"{}\".backlite_tasks SET state = 1, \
                         claimed_at = (extract(epoch from now()) * 1000)::int8, \
                         lease_until = (extract(epoch from now()) * 1000)::int8 + $2, \
                         fence = fence + 1 WHERE id = $1::text::uuid AND state = 0",
                        pg.schema
                    )
                    .as_str(),
                    &[&id.to_string(), &lease],
                )
                .await
                .expect("claim"),
        };
        assert_eq!(changed, 1, "no waiting task {id}");
        before
    }

    /// From now on the database refuses to store a task whose payload contains `word`, as a
    /// full disk or a violated constraint would.
    pub async fn refuse_payloads_containing(&self, word: &str) {
        match self {
            TestDb::Sqlite(db) => db
                .conn()
                .execute_batch(&format!(
                    "CREATE TRIGGER refuse_{word} BEFORE INSERT ON backlite_tasks \
                     WHEN CAST(NEW.task AS TEXT) LIKE '%{word}%' \
                     BEGIN SELECT RAISE(ABORT, 'refused'); END"
                ))
                .expect("create trigger"),
            TestDb::Postgres(pg) => {
                let s = &pg.schema;
                pg.conn
                    .batch_execute(&format!(
                        "CREATE FUNCTION \"{s}\".refuse_{word}() RETURNS trigger \
                         LANGUAGE plpgsql AS $$ BEGIN \
                           IF convert_from(NEW.task, 'UTF8') LIKE '%{word}%' THEN \
                             RAISE EXCEPTION 'refused'; \
                           END IF; \
                           RETURN NEW; \
                         END $$; \
                         CREATE TRIGGER refuse_{word} BEFORE INSERT ON \"{s}\".backlite_tasks \
                         FOR EACH ROW EXECUTE FUNCTION \"{s}\".refuse_{word}();"
                    ))
                    .await
                    .expect("create trigger")
            }
        }
    }
}

impl PgDb {
    /// Rows in `table` of `schema` (which may be another test's).
    pub async fn count(&self, schema: &str, table: &str) -> i64 {
        self.conn
            .query_one(
                format!("SELECT COUNT(*) FROM \"{schema}\".{table}").as_str(),
                &[],
            )
            .await
            .expect("count")
            .get(0)
    }
}
