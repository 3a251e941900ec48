//! `backlite copy`, the real binary, from an SQLite file into a PostgreSQL schema: 100,000
//! tasks in every state (waiting, scheduled, running under a claim, succeeded, failed,
//! cancelled; priorities, expiries, unique keys, error histories, retained payloads or not),
//! schedules and a paused queue. Nothing is lost or changed, and a second run inserts
//! nothing. Also: the refusal of a target with live workers, and a verification that fails.

mod cli_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backlite::rusqlite::{self, params};
use backlite::{Task, processor, processors};
use cli_support::{Db, Run, pg_connect, pg_schema_name, pg_url};
use serde::{Deserialize, Serialize};

const TASKS: usize = 100_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// A 16-byte UUID v7-shaped id: `n` in the time part, so that ids sort as `n` does.
fn id(n: usize) -> Vec<u8> {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&((n as u64) << 16 | 0x7000).to_be_bytes());
    bytes[8] = 0x80;
    bytes[12..].copy_from_slice(&(n as u32).to_be_bytes());
    bytes.to_vec()
}

/// A row's columns that depend on its state: state, payload, attempts, run_at, expires_at,
/// claimed_at, lease_until, fence, claimed_by, lease_renewed_at, cancel_requested_at,
/// last_executed_at, last_duration_us, last_error, errors, finished_at.
type Shape = (
    i64,
    Option<Vec<u8>>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// Writes the source's rows behind backlite's back, as a database that ran for a while
/// would hold them (a migrated file, schema from `backlite migrate`).
fn fill_sqlite(path: &std::path::Path) {
    let mut conn = rusqlite::Connection::open(path).expect("open");
    let tx = conn.transaction().expect("tx");
    let now = now_ms();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO backlite_tasks (id, queue, state, task, attempts, run_at, \
                 created_at, priority, expires_at, claimed_at, lease_until, fence, claimed_by, \
                 lease_renewed_at, cancel_requested_at, last_executed_at, last_duration_us, \
                 last_error, errors, finished_at, unique_key, unique_for) VALUES (?1, ?2, ?3, \
                 ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
                 ?20, ?21, ?22)",
            )
            .expect("prepare");
        for n in 0..TASKS {
            let queue = format!("cp_q{}", n % 5);
            let payload = Some(format!("{{\"n\":{n},\"text\":\"payload {n}\"}}").into_bytes());
            let created = now - 3_600_000 + (n as i64);
            let errors = |attempts: usize| {
                let list: Vec<String> = (1..=attempts)
                    .map(|a| {
                        format!(
                            "{{\"attempt\":{a},\"at\":{},\"duration_us\":{},\"error\":\"boom {n}/{a}\"}}",
                            created + a as i64,
                            1000 + n
                        )
                    })
                    .collect();
                Some(format!("[{}]", list.join(",")))
            };
            let unique = (n % 7 == 0).then(|| format!("key-{n}").into_bytes());
            let unique_for = unique.as_ref().map(|_| 86_400_000_i64);
            let priority = (n % 5) as i64 - 2;
            #[rustfmt::skip]
            let row: Shape = match n % 10 {
                // Waiting and due, some with an expiry; priorities -2..2.
                0..=2 => (0, payload, 0, created, (n % 3 == 0).then_some(now + 86_400_000),
                          None, None, 0, None, None, None, None, None, None, None, None),
                // Scheduled; a retry backing off with its error history.
                3 => (0, payload, (n % 2) as i64, now + 3_600_000 + n as i64, None, None, None,
                      (n % 2) as i64, None, None, None, (n % 2 == 1).then_some(created),
                      (n % 2 == 1).then_some(900), (n % 2 == 1).then(|| "boom".into()),
                      if n % 2 == 1 { errors(1) } else { None }, None),
                // Running under a claim of a process that is gone; one asked to cancel.
                4 => (1, payload, (n % 3) as i64, created, None, Some(now - 5_000),
                      Some(now + 25_000), 1 + (n % 3) as i64,
                      Some("0190b6ba-3c00-7000-8000-00000000beef".into()), Some(now - 4_000),
                      None, None, None, None, None, None),
                // Succeeded, with or without its payload, some kept for a while.
                5 | 6 => (2, if n % 2 == 0 { payload } else { None }, 1, created,
                          (n % 4 == 1).then_some(now + 86_400_000), None, None, 1, None, None,
                          None, Some(created + 10), Some(1500), None, None, Some(created + 12)),
                // Failed after three attempts, with their errors.
                7 | 8 => (3, payload, 3, created, None, None, None, 3, None, None, None,
                          Some(created + 30), Some(2500), Some(format!("boom {n}/3")), errors(3),
                          Some(created + 33)),
                // Cancelled before it ran.
                _ => (4, payload, 0, created, None, None, None, 0, None, None, None, None, None,
                      Some("cancelled".into()), Some(format!(
                          "[{{\"attempt\":0,\"at\":{created},\"duration_us\":0,\"error\":\"cancelled\"}}]"
                      )), Some(created + 1)),
            };
            let (
                state,
                payload,
                attempts,
                run_at,
                expires_at,
                claimed_at,
                lease_until,
                fence,
                claimed_by,
                lease_renewed_at,
                cancel_requested_at,
                last_executed_at,
                last_duration_us,
                last_error,
                errors,
                finished_at,
            ) = row;
            let cancel_requested_at =
                cancel_requested_at.or((state == 1 && n % 20 == 4).then_some(now - 1_000));
            let unique = if state <= 2 { unique } else { None };
            let unique_for = if state <= 2 { unique_for } else { None };
            insert
                .execute(params![
                    id(n),
                    queue,
                    state,
                    payload,
                    attempts,
                    run_at,
                    created,
                    priority,
                    expires_at,
                    claimed_at,
                    lease_until,
                    fence,
                    claimed_by,
                    lease_renewed_at,
                    cancel_requested_at,
                    last_executed_at,
                    last_duration_us,
                    last_error,
                    errors,
                    finished_at,
                    unique,
                    unique_for
                ])
                .expect("insert");
        }
    }
    tx.execute_batch(&format!(
        "INSERT INTO backlite_schedules (name, definition, next_run_at) VALUES \
             ('cp_q0', 'every 300000ms', {a}), ('cp_q2:daily', 'cron 0 0 6 * * * UTC', {b}); \
         INSERT INTO backlite_queues (name, paused_at) VALUES ('cp_q1', {p}), ('cp_q3', NULL);",
        a = now + 300_000,
        b = now + 7_200_000,
        p = now - 60_000,
    ))
    .expect("meta");
    tx.commit().expect("commit");
}

/// Every task row, whole, in id order: (id, every other column as text, errors as JSON).
type Rows = Vec<(Vec<u8>, Vec<Option<String>>, Option<serde_json::Value>)>;

const TEXT_COLUMNS: [&str; 20] = [
    "queue",
    "state",
    "attempts",
    "run_at",
    "created_at",
    "priority",
    "expires_at",
    "claimed_at",
    "lease_until",
    "fence",
    "claimed_by",
    "lease_renewed_at",
    "cancel_requested_at",
    "last_executed_at",
    "last_duration_us",
    "last_error",
    "finished_at",
    "unique_for",
    "task",
    "unique_key",
];

fn sqlite_rows(path: &std::path::Path) -> Rows {
    let conn = rusqlite::Connection::open(path).expect("open");
    let columns: Vec<String> = TEXT_COLUMNS
        .iter()
        .map(|c| match *c {
            "task" | "unique_key" => format!("hex({c})"),
            c => format!("CAST({c} AS TEXT)"),
        })
        .collect();
    let sql = format!(
        "SELECT id, errors, {} FROM backlite_tasks ORDER BY id",
        columns.join(", ")
    );
    let mut select = conn.prepare(&sql).expect("prepare");
    select
        .query_map([], |r| {
            let errors: Option<String> = r.get(1)?;
            let mut text = Vec::new();
            for i in 0..TEXT_COLUMNS.len() {
                let value: Option<String> = r.get(i + 2)?;
                // SQLite's hex() of NULL is the empty text.
                text.push(value.filter(|v| !(v.is_empty() && i >= 18)));
            }
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                text,
                errors.map(|e| serde_json::from_str(&e).expect("errors JSON")),
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

async fn pg_rows(url: &str, schema: &str) -> Rows {
    let conn = pg_connect(url).await;
    let columns: Vec<String> = TEXT_COLUMNS
        .iter()
        .map(|c| match *c {
            "task" | "unique_key" => format!("upper(encode({c}, 'hex'))"),
            c => format!("{c}::text"),
        })
        .collect();
    let sql = format!(
        "SELECT id, errors::text, {} FROM \"{schema}\".backlite_tasks ORDER BY id",
        columns.join(", ")
    );
    conn.query(&sql, &[])
        .await
        .expect("select")
        .iter()
        .map(|r| {
            let id_bytes = uuid_text::bytes(&r.get::<_, uuid_text::Uuid>(0).0);
            let errors: Option<String> = r.get(1);
            let text = (0..TEXT_COLUMNS.len())
                .map(|i| r.get::<_, Option<String>>(i + 2))
                .collect();
            (
                id_bytes,
                text,
                errors.map(|e| serde_json::from_str(&e).expect("errors JSON")),
            )
        })
        .collect()
}

/// A `uuid` column read as text, without a UUID crate in this test's dependencies.
mod uuid_text {
    use backlite::tokio_postgres::types::{FromSql, Type};

    pub struct Uuid(pub String);

    impl<'a> FromSql<'a> for Uuid {
        fn from_sql(
            _: &Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Uuid(text(raw)))
        }

        fn accepts(ty: &Type) -> bool {
            *ty == Type::UUID
        }
    }

    /// The hyphenated text of 16 bytes.
    pub fn text(bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    pub fn bytes(text: &str) -> Vec<u8> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        (0..16)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
            .collect()
    }
}

fn copy(source: &Db, url: &str, schema: &str, extra: &[&str]) -> Run {
    let mut command = source.command();
    command.args(["copy", "--to", url, "--to-schema", schema, "--json"]);
    command.args(extra);
    command.output().expect("run backlite copy").into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_moves_100_000_tasks_in_every_state_whole_and_twice_safely() {
    let Some(url) = pg_url() else { return };
    let source = cli_support::sqlite().expect("sqlite");
    let Db::Sqlite { path, .. } = &source else {
        unreachable!()
    };
    source.run(&["migrate"]).code(0);
    fill_sqlite(path);
    let schema = pg_schema_name();

    let started = std::time::Instant::now();
    let first = tokio::task::block_in_place(|| copy(&source, &url, &schema, &[])).code(0);
    let elapsed = started.elapsed();
    let report = first.json();
    assert_eq!(report["tasks"], TASKS);
    assert_eq!(report["inserted"], TASKS);
    assert_eq!(report["schedules_inserted"], 2);
    assert_eq!(report["queues_inserted"], 2);
    assert_eq!(report["verified"], true, "{report}");
    eprintln!("copied {TASKS} tasks in {elapsed:?}");

    let second = tokio::task::block_in_place(|| copy(&source, &url, &schema, &[])).code(0);
    let again = second.json();
    assert_eq!(again["inserted"], 0);
    assert_eq!(again["already_there"], TASKS);
    assert_eq!(
        (&again["schedules_inserted"], &again["queues_inserted"]),
        (&0.into(), &0.into())
    );
    assert_eq!(again["verified"], true);

    // Row for row, column for column.
    let from = sqlite_rows(path);
    let to = pg_rows(&url, &schema).await;
    assert_eq!(from.len(), TASKS);
    assert_eq!(to.len(), TASKS);
    for (a, b) in from.iter().zip(&to) {
        assert_eq!(a, b);
    }

    // What the command shows of each is the same: counts, queues and pauses, one task whole.
    let target = Db::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    };
    for args in [&["stats", "--json"][..], &["queues", "--json"][..]] {
        assert_eq!(
            source.run(args).code(0).json(),
            target.run(args).code(0).json(),
            "{args:?}"
        );
    }
    let failed = uuid_text::text(&id(17));
    assert_eq!(
        source.run(&["show", &failed, "--json"]).code(0).json(),
        target.run(&["show", &failed, "--json"]).code(0).json()
    );

    // The schedules and the paused queue, as PostgreSQL stores them.
    let conn = pg_connect(&url).await;
    let schedules: Vec<(String, String)> = conn
        .query(
            &format!("SELECT name, definition FROM \"{schema}\".backlite_schedules ORDER BY name"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        schedules,
        [
            ("cp_q0".to_owned(), "every 300000ms".to_owned()),
            ("cp_q2:daily".to_owned(), "cron 0 0 6 * * * UTC".to_owned())
        ]
    );
}

/// A client started on the target registers itself: the copy refuses to run under it, and
/// runs with `--force`.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "cp_live")]
struct Live;

#[processor]
async fn run_live(_task: Live) -> anyhow::Result<()> {
    Ok(())
}

/// Tasks that wait in the source of the small copies.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "cp_small")]
struct Small(u32);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_refuses_live_workers_and_a_target_that_differs() {
    let Some(url) = pg_url() else { return };
    let source = cli_support::sqlite().expect("sqlite");
    source.run(&["migrate"]).code(0);
    let client = source.builder().build().await.unwrap();
    for n in 0..10 {
        client.add(Small(n)).save().await.unwrap();
    }
    let schema = pg_schema_name();
    let target = Db::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    };
    let worker = target
        .builder()
        .processors(processors![run_live])
        .build()
        .await
        .unwrap();
    worker.start();
    cli_support::eventually("the worker registers", async || {
        !worker.processes().await.unwrap().is_empty()
    })
    .await;
    let refused = tokio::task::block_in_place(|| copy(&source, &url, &schema, &[])).code(1);
    assert!(refused.stderr.contains("live"), "{}", refused.stderr);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&std::process::id().to_string()),
        "{}",
        refused.stderr
    );
    let forced = tokio::task::block_in_place(|| copy(&source, &url, &schema, &["--force"])).code(0);
    assert_eq!(forced.json()["inserted"], 10);
    worker.stop(Duration::from_secs(5)).await;

    // A target that holds a task the source does not: the verification names it, exit 5.
    target
        .builder()
        .build()
        .await
        .unwrap()
        .add(Small(99))
        .save()
        .await
        .unwrap();
    let differs = tokio::task::block_in_place(|| copy(&source, &url, &schema, &[])).code(5);
    let report = differs.json();
    assert_eq!(report["verified"], false);
    assert_eq!(
        report["differences"][0],
        "queue `cp_small`, waiting: 10 in the source, 11 in the copy"
    );
}
