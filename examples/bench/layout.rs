//! The storage layout benchmark: what keeping completed tasks costs under two layouts, on raw
//! rusqlite and raw tokio-postgres doing what the drivers do, so that the layout of retained
//! tasks is chosen by measurement (`docs/design/storage-layout.md`).
//!
//! ```text
//! cargo run --release --example bench -- --layout                       # SQLite, 5 rounds
//! cargo run --release --example bench -- --layout --rounds 7 --postgres URL
//! cargo run --example bench -- --layout --smoke                        # tiny sizes
//! ```
//!
//! The layouts, each with the indexes it needs:
//!
//! - two tables (today's schema, migration v4 / v2): `backlite_tasks` holds waiting and running
//!   tasks, `backlite_tasks_completed` the retained ones;
//!   - `a`: completion without retention, a `DELETE` (W3's path);
//!   - `b`: completion with retention, the driver's copy of the row with its payload, then the
//!     `DELETE` (W3r's path);
//!   - `d`: as `b`, without the payload (`retention(no data)`);
//!   - `e` (SQLite only): as `b`, but one lookup: `DELETE .. RETURNING` the row, then an
//!     `INSERT` of its values (PostgreSQL's driver already does so in one statement);
//! - one table with a `state` column (`0` waiting, `1` running, `2` succeeded, `3` failed,
//!   `4` cancelled): the claim's index is partial on `state = 0`, the running index on
//!   `state = 1`, the retained lists' and counts' indexes on `state >= 2`, and a unique index
//!   on `unique_key` partial on states `0..=2`;
//!   - `c-delete`: completion without retention, a `DELETE`;
//!   - `c`: completion with retention, an `UPDATE` of the state (the payload stays).
//!
//! Drains (`drain-*`): `n` tasks added first (not timed), then claimed and completed until
//! none is left. SQLite: one thread, claims of 1,000 as the driver claims (a `SELECT` in due
//! order, then an `UPDATE` by rowid each, setting the lease and the fencing number), then one
//! transaction of 1,000 completions, each guarded by id, fence and claim as the driver's.
//! Each round also runs raw-W3 (`raw.rs`) for `vs_raw`. PostgreSQL: 4 connections, each
//! claiming 250 with the driver's `FOR UPDATE SKIP LOCKED` claim and completing them with one
//! `unnest` statement, as the driver's completer does.
//!
//! Claims and unique keys (`claim-*`, `insert-*`, `unique-*`): per layout, one database holding
//! `retained` completed tasks, each with a unique key. Each round adds `n` tasks (`insert`),
//! claims them 100 per transaction (`claim`), then adds `n` tasks with fresh unique keys
//! (`unique-new`) and the same `n` again (`unique-dup`, every one a conflict). One table: the
//! partial unique index, `ON CONFLICT DO NOTHING`. Two tables: a side table of keys, inserted
//! into first; a task is added only when its key was. PostgreSQL runs these with
//! `synchronous_commit = off` on the measuring connection, so that the server's work, not
//! the disk's flush, is measured.
//!
//! On SQLite both layouts' databases are filled afresh every round and measured on
//! connections opened after filling (see `sqlite::claims`). PostgreSQL's are filled once and
//! vacuumed after each measurement, as autovacuum would. PostgreSQL's drains plan every
//! statement afresh (`plan_cache_mode = force_custom_plan`; see `postgres::drain`).
//!
//! Migration (`migrate-v5` on SQLite, `migrate-v3` on PostgreSQL): today's layout holding
//! `retained` completed tasks and `claims` live ones (1,000 of them claimed), moved to the one
//! table in one transaction, as the next schema version would; timed, then checked.
//!
//! Cases alternate within a round and their order rotates between rounds. Every measurement
//! prints a JSON line; the summary lines give, per case, the median and the range over rounds,
//! and the ratios that decide (`retain_vs_delete`: time per task with retention over without,
//! each round's pair from the same round).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use backlite::rusqlite::{Connection, TransactionBehavior, params};
use serde_json::json;

use super::db::{connect, drop_schema, fresh_schema};
use super::raw::{now_millis, payload, task_id};
use super::workloads::Noop;
use super::{Sizes, round};

#[derive(Debug)]
struct Opts {
    smoke: bool,
    rounds: usize,
    dir: PathBuf,
    postgres: Option<String>,
    backend: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct LayoutSizes {
    /// Tasks per drain.
    drain: usize,
    /// Tasks per claim of a drain.
    drain_claim: usize,
    /// Completed tasks held while claims and unique inserts are measured.
    retained: usize,
    /// Tasks added, claimed and unique-inserted per round of that measurement.
    claims: usize,
}

impl LayoutSizes {
    fn new(smoke: bool, postgres: bool) -> LayoutSizes {
        match (smoke, postgres) {
            (true, _) => LayoutSizes {
                drain: 2_000,
                drain_claim: if postgres { 250 } else { 1_000 },
                retained: 5_000,
                claims: 1_000,
            },
            (false, false) => LayoutSizes {
                drain: 100_000,
                drain_claim: 1_000,
                retained: 1_000_000,
                claims: 100_000,
            },
            (false, true) => LayoutSizes {
                drain: 20_000,
                drain_claim: 250,
                retained: 1_000_000,
                claims: 20_000,
            },
        }
    }
}

/// Tasks per claim transaction when claims are measured over the retained rows.
const CLAIM_BATCH: usize = 100;
/// Tasks per insert transaction (per statement on PostgreSQL).
const INSERT_BATCH: usize = 1_000;

/// The drain cases: how a finished task leaves the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    A,
    B,
    D,
    E,
    CDelete,
    C,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::A => "a",
            Case::B => "b",
            Case::D => "d",
            Case::E => "e",
            Case::CDelete => "c-delete",
            Case::C => "c",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Case::A | Case::B | Case::D | Case::E => Kind::Two,
            Case::CDelete | Case::C => Kind::One,
        }
    }

    fn retains(self) -> bool {
        matches!(self, Case::B | Case::D | Case::E | Case::C)
    }
}

/// Two tables (today) or one table with a state column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Two,
    One,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Two => "two-tables",
            Kind::One => "one-table",
        }
    }
}

fn parse(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut opts = Opts {
        smoke: false,
        rounds: 5,
        dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-db")),
        postgres: std::env::var("BACKLITE_BENCH_POSTGRES_URL")
            .ok()
            .filter(|url| !url.is_empty()),
        backend: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => opts.smoke = true,
            "--rounds" => {
                opts.rounds = args
                    .next()
                    .context("--rounds needs a number")?
                    .parse()
                    .context("--rounds needs a number")?;
                ensure!(opts.rounds > 0, "--rounds must be at least 1");
            }
            "--dir" => opts.dir = args.next().context("--dir needs a path")?.into(),
            "--postgres" => opts.postgres = Some(args.next().context("--postgres needs a URL")?),
            "--backend" => {
                let value = args.next().context("--backend needs sqlite or postgres")?;
                if value != "sqlite" && value != "postgres" {
                    bail!("unknown backend `{value}`: sqlite or postgres");
                }
                opts.backend = Some(value);
            }
            other => bail!("unknown argument `{other}` of --layout"),
        }
    }
    if opts.backend.as_deref() == Some("postgres") && opts.postgres.is_none() {
        bail!("--backend postgres needs --postgres URL or BACKLITE_BENCH_POSTGRES_URL");
    }
    Ok(opts)
}

/// Runs the layout benchmark with the arguments that followed `--layout`.
pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let opts = parse(args)?;
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create {}", opts.dir.display()))?;
    let wanted = |backend: &str| opts.backend.as_deref().is_none_or(|b| b == backend);
    let mut results = Results::default();
    if wanted("sqlite") {
        let sizes = LayoutSizes::new(opts.smoke, false);
        sqlite::drains(&opts, sizes, &mut results)?;
        sqlite::claims(&opts, sizes, &mut results)?;
        sqlite::migration(&opts, sizes, &mut results)?;
        results.summarize("sqlite")?;
    }
    if let Some(url) = opts.postgres.as_deref().filter(|_| wanted("postgres")) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let sizes = LayoutSizes::new(opts.smoke, true);
        runtime.block_on(async {
            postgres::drains(&opts, url, sizes, &mut results).await?;
            postgres::claims(&opts, url, sizes, &mut results).await?;
            postgres::migration(&opts, url, sizes, &mut results).await
        })?;
        results.summarize("postgres")?;
    }
    Ok(())
}

/// The figures of every round, by backend and workload, in rounds' order.
#[derive(Default)]
struct Results(BTreeMap<(String, String), Vec<f64>>);

impl Results {
    /// Prints one measurement and keeps its time per task (µs) for the summary.
    fn record(
        &mut self,
        backend: &str,
        workload: &str,
        round_no: usize,
        n: usize,
        elapsed: Duration,
        extra: serde_json::Value,
    ) -> anyhow::Result<()> {
        let secs = elapsed.as_secs_f64();
        let mut line = json!({
            "workload": workload,
            "backend": backend,
            "round": round_no,
            "n": n,
            "secs": round(secs, 4),
            "per_sec": round(n as f64 / secs, 0),
            "us_per_task": round(secs * 1e6 / n as f64, 3),
        });
        if let (Some(line), serde_json::Value::Object(extra)) = (line.as_object_mut(), extra) {
            line.extend(extra);
        }
        println!("{line}");
        self.0
            .entry((backend.to_owned(), workload.to_owned()))
            .or_default()
            .push(secs * 1e6 / n as f64);
        Ok(())
    }

    fn get(&self, backend: &str, workload: &str) -> Option<&Vec<f64>> {
        self.0.get(&(backend.to_owned(), workload.to_owned()))
    }

    /// Per workload, the median time per task and its range; then, per round, the ratios
    /// that decide, and their medians and ranges.
    fn summarize(&self, backend: &str) -> anyhow::Result<()> {
        for ((b, workload), us) in &self.0 {
            if b != backend {
                continue;
            }
            let (median, min, max) = spread(us);
            println!(
                "{}",
                json!({
                    "workload": workload, "backend": backend, "summary": true,
                    "rounds": us.len(),
                    "median_us_per_task": round(median, 3),
                    "min_us_per_task": round(min, 3), "max_us_per_task": round(max, 3),
                    "median_per_sec": round(1e6 / median, 0),
                })
            );
        }
        // Time per task of `slow` over `fast`, round by round: 1.3 means 30% dearer.
        let ratios = [
            ("retain_vs_delete", "drain-b", "drain-a"),
            ("retain_vs_delete", "drain-d", "drain-a"),
            ("retain_vs_delete", "drain-e", "drain-a"),
            ("retain_vs_delete", "drain-c", "drain-c-delete"),
            ("retain_vs_delete", "drain-c", "drain-a"),
            ("delete_vs_delete", "drain-c-delete", "drain-a"),
            ("complete_retain_vs_delete", "complete-b", "complete-a"),
            (
                "complete_retain_vs_delete",
                "complete-c",
                "complete-c-delete",
            ),
            ("layout_cost", "claim-one-table", "claim-two-tables"),
            ("layout_cost", "insert-one-table", "insert-two-tables"),
            (
                "layout_cost",
                "unique-new-one-table",
                "unique-new-two-tables",
            ),
            (
                "layout_cost",
                "unique-dup-one-table",
                "unique-dup-two-tables",
            ),
            (
                "unique_vs_plain",
                "unique-new-one-table",
                "insert-one-table",
            ),
            (
                "unique_vs_plain",
                "unique-new-two-tables",
                "insert-two-tables",
            ),
        ];
        let raw = self.get(backend, "drain-raw-W3");
        for (what, slow, fast) in ratios {
            let (Some(s), Some(f)) = (self.get(backend, slow), self.get(backend, fast)) else {
                continue;
            };
            let per_round: Vec<f64> = s.iter().zip(f).map(|(s, f)| s / f).collect();
            let (median, min, max) = spread(&per_round);
            println!(
                "{}",
                json!({
                    "ratio": what, "backend": backend, "of": slow, "over": fast,
                    "median": round(median, 2), "min": round(min, 2), "max": round(max, 2),
                    "rounds": per_round.iter().map(|r| round(*r, 2)).collect::<Vec<_>>(),
                })
            );
        }
        // Each drain's rate over raw-W3's, round by round (W3r's target on SQLite: >= 0.5).
        for case in [Case::A, Case::B, Case::D, Case::E, Case::CDelete, Case::C] {
            let workload = format!("drain-{}", case.name());
            let (Some(d), Some(raw)) = (self.get(backend, &workload), raw) else {
                continue;
            };
            let per_round: Vec<f64> = d.iter().zip(raw).map(|(d, raw)| raw / d).collect();
            let (median, min, max) = spread(&per_round);
            println!(
                "{}",
                json!({
                    "ratio": "vs_raw", "backend": backend, "of": workload, "over": "drain-raw-W3",
                    "median": round(median, 2), "min": round(min, 2), "max": round(max, 2),
                    "rounds": per_round.iter().map(|r| round(*r, 2)).collect::<Vec<_>>(),
                })
            );
        }
        Ok(())
    }
}

/// Median, minimum and maximum.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

/// `items` rotated by `by`, so that no case always runs first.
fn rotated<T: Copy>(items: &[T], by: usize) -> Vec<T> {
    let mut out = items.to_vec();
    out.rotate_left(by % items.len());
    out
}

/// The unique key of a retained task (`r`) or of a round's new task.
fn unique_key(prefix: &str, n: usize) -> Vec<u8> {
    format!("{prefix}{n}").into_bytes()
}

/// An id ordered before every new task's: the retained tasks are older.
fn old_id(n: usize) -> [u8; 16] {
    (n as u128 + 1).to_be_bytes()
}

mod sqlite {
    use super::*;

    /// Today's schema (SQLite migration v4), with a side table of unique keys.
    const TWO_TABLES: &str = "
        CREATE TABLE backlite_tasks (
            id BLOB PRIMARY KEY NOT NULL, queue TEXT NOT NULL, task BLOB NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, run_at INTEGER NOT NULL,
            created_at INTEGER NOT NULL, claimed_at INTEGER, last_executed_at INTEGER,
            last_duration_us INTEGER, last_error TEXT, lease_until INTEGER,
            fence INTEGER NOT NULL DEFAULT 0, claimed_by TEXT, lease_renewed_at INTEGER,
            cancel_requested_at INTEGER, errors TEXT);
        CREATE INDEX backlite_tasks_due ON backlite_tasks (queue, run_at)
            WHERE claimed_at IS NULL;
        CREATE INDEX backlite_tasks_claimed ON backlite_tasks (claimed_at)
            WHERE claimed_at IS NOT NULL;
        CREATE TABLE backlite_tasks_completed (
            id BLOB PRIMARY KEY NOT NULL, queue TEXT NOT NULL, task BLOB,
            attempts INTEGER NOT NULL, succeeded INTEGER NOT NULL,
            last_duration_us INTEGER NOT NULL, error TEXT, created_at INTEGER NOT NULL,
            last_executed_at INTEGER NOT NULL, expires_at INTEGER,
            cancelled INTEGER NOT NULL DEFAULT 0, errors TEXT);
        CREATE INDEX backlite_tasks_completed_expires ON backlite_tasks_completed (expires_at)
            WHERE expires_at IS NOT NULL;
        CREATE INDEX backlite_tasks_completed_outcome
            ON backlite_tasks_completed (succeeded, last_executed_at);
        CREATE INDEX backlite_tasks_completed_queue
            ON backlite_tasks_completed (queue, succeeded);
        CREATE TABLE backlite_unique_keys (
            key BLOB PRIMARY KEY NOT NULL, task_id BLOB NOT NULL) WITHOUT ROWID;
    ";

    /// One table with a state column; every index partial on the states it serves.
    const ONE_TABLE: &str = "
        CREATE TABLE backlite_tasks (
            id BLOB PRIMARY KEY NOT NULL, queue TEXT NOT NULL,
            state INTEGER NOT NULL DEFAULT 0, task BLOB,
            attempts INTEGER NOT NULL DEFAULT 0, run_at INTEGER NOT NULL,
            created_at INTEGER NOT NULL, claimed_at INTEGER, last_executed_at INTEGER,
            last_duration_us INTEGER, last_error TEXT, lease_until INTEGER,
            fence INTEGER NOT NULL DEFAULT 0, claimed_by TEXT, lease_renewed_at INTEGER,
            cancel_requested_at INTEGER, errors TEXT, finished_at INTEGER, expires_at INTEGER,
            unique_key BLOB);
    ";

    /// The one table's indexes, apart so that a migration builds them after the copy.
    const ONE_TABLE_INDEXES: &str = "
        CREATE INDEX backlite_tasks_due ON backlite_tasks (queue, run_at) WHERE state = 0;
        CREATE INDEX backlite_tasks_running ON backlite_tasks (claimed_at) WHERE state = 1;
        CREATE INDEX backlite_tasks_ended ON backlite_tasks (state, finished_at)
            WHERE state >= 2;
        CREATE INDEX backlite_tasks_ended_queue ON backlite_tasks (queue, state)
            WHERE state >= 2;
        CREATE INDEX backlite_tasks_expires ON backlite_tasks (expires_at)
            WHERE expires_at IS NOT NULL;
        CREATE UNIQUE INDEX backlite_tasks_unique ON backlite_tasks (unique_key)
            WHERE unique_key IS NOT NULL AND state <= 2;
    ";

    const INSERT: &str = "INSERT INTO backlite_tasks (id, queue, task, run_at, created_at) \
                          VALUES (?1, ?2, ?3, ?4, ?5)";

    /// The driver's claim: due rows in order, then each marked by rowid.
    fn pick(kind: Kind) -> &'static str {
        match kind {
            Kind::Two => {
                "SELECT rowid, id, queue, task, attempts, fence FROM backlite_tasks \
                 WHERE claimed_at IS NULL AND queue = ?2 AND run_at <= ?1 \
                 ORDER BY run_at, rowid LIMIT ?3"
            }
            Kind::One => {
                "SELECT rowid, id, queue, task, attempts, fence FROM backlite_tasks \
                 WHERE state = 0 AND queue = ?2 AND run_at <= ?1 \
                 ORDER BY run_at, rowid LIMIT ?3"
            }
        }
    }

    fn mark(kind: Kind) -> &'static str {
        match kind {
            Kind::Two => {
                "UPDATE backlite_tasks SET claimed_at = ?1, lease_until = ?2, fence = ?3 \
                 WHERE rowid = ?4 AND claimed_at IS NULL"
            }
            Kind::One => {
                "UPDATE backlite_tasks SET state = 1, claimed_at = ?1, lease_until = ?2, \
                 fence = ?3 WHERE rowid = ?4 AND state = 0"
            }
        }
    }

    /// The errors of the attempt appended when it failed, as the driver's statements do;
    /// `?6` is the error (NULL here, as in W3 and W3r).
    macro_rules! errors_appended {
        () => {
            "CASE WHEN ?6 IS NULL THEN errors ELSE json_insert(\
             CASE WHEN json_array_length(errors) >= 10 THEN json_remove(errors, '$[0]') \
             ELSE COALESCE(errors, '[]') END, '$[#]', json_object('attempt', attempts + 1, \
             'at', ?5, 'duration_us', ?4, 'error', ?6)) END"
        };
    }

    /// The driver's retention copy (`?3`: keep the payload).
    const RETAIN: &str = concat!(
        "INSERT OR REPLACE INTO backlite_tasks_completed (id, queue, task, attempts, \
         succeeded, last_duration_us, error, created_at, last_executed_at, expires_at, \
         cancelled, errors) \
         SELECT id, queue, CASE WHEN ?3 THEN task END, attempts + 1, ?6 IS NULL, ?4, ?6, \
         created_at, ?5, NULL, 0, ",
        errors_appended!(),
        " FROM backlite_tasks WHERE id = ?1 AND fence = ?2 AND claimed_at IS NOT NULL"
    );

    const DELETE: &str =
        "DELETE FROM backlite_tasks WHERE id = ?1 AND fence = ?2 AND claimed_at IS NOT NULL";

    /// Layout `e`: the row taken out in one lookup, its values written to the second table.
    const DELETE_RETURNING: &str = concat!(
        "DELETE FROM backlite_tasks WHERE id = ?1 AND fence = ?2 AND claimed_at IS NOT NULL \
         RETURNING queue, task, attempts + 1, created_at, ",
        errors_appended!()
    );

    const INSERT_COMPLETED: &str = "INSERT OR REPLACE INTO backlite_tasks_completed (id, \
         queue, task, attempts, succeeded, last_duration_us, error, created_at, \
         last_executed_at, expires_at, cancelled, errors) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, 0, ?10)";

    const ONE_DELETE: &str =
        "DELETE FROM backlite_tasks WHERE id = ?1 AND fence = ?2 AND state = 1";

    /// Layout `c`: the state moves, the payload stays; `?3` is the final state.
    const ONE_RETAIN: &str = concat!(
        "UPDATE backlite_tasks SET state = ?3, attempts = attempts + 1, \
         last_duration_us = ?4, last_executed_at = ?5, finished_at = ?5, last_error = ?6, \
         expires_at = NULL, errors = ",
        errors_appended!(),
        " WHERE id = ?1 AND fence = ?2 AND state = 1"
    );

    fn open(dir: &Path, kind: Kind) -> anyhow::Result<Connection> {
        let conn = Connection::open(dir.join("layout.db"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        ensure!(mode.eq_ignore_ascii_case("wal"), "no WAL: {mode}");
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        match kind {
            Kind::Two => conn.execute_batch(TWO_TABLES)?,
            Kind::One => conn.execute_batch(&format!("{ONE_TABLE}{ONE_TABLE_INDEXES}"))?,
        }
        Ok(conn)
    }

    /// A new connection to the database `open` created in `dir`.
    fn reopen(dir: &Path) -> anyhow::Result<Connection> {
        let conn = Connection::open(dir.join("layout.db"))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        Ok(conn)
    }

    /// Adds `count` waiting tasks, `INSERT_BATCH` per transaction.
    fn insert(conn: &mut Connection, count: usize) -> anyhow::Result<()> {
        for first in (0..count).step_by(INSERT_BATCH) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(INSERT)?;
                let now = now_millis();
                for n in first..(first + INSERT_BATCH).min(count) {
                    insert.execute(params![&task_id()[..], "bench", payload(n), now, now])?;
                }
            }
            tx.commit()?;
        }
        Ok(())
    }

    /// A claimed task: id, payload, fencing number.
    type Claimed = (Vec<u8>, Vec<u8>, i64);

    /// Claims up to `limit` due tasks as the driver does.
    fn claim(conn: &mut Connection, kind: Kind, limit: usize) -> anyhow::Result<Vec<Claimed>> {
        let now = now_millis();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut claimed = Vec::with_capacity(limit);
        {
            let mut picked = Vec::with_capacity(limit);
            let mut pick = tx.prepare_cached(pick(kind))?;
            let mut rows = pick.query(params![now, "bench", limit as i64])?;
            while let Some(row) = rows.next()? {
                let (_queue, _attempts): (String, i64) = (row.get(2)?, row.get(4)?);
                let fence: i64 = row.get(5)?;
                picked.push((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Vec<u8>>(3)?,
                    fence + 1,
                ));
            }
            let mut mark = tx.prepare_cached(mark(kind))?;
            for (rowid, id, task, fence) in picked {
                if mark.execute(params![now, now + 600_000, fence, rowid])? == 1 {
                    claimed.push((id, task, fence));
                }
            }
        }
        tx.commit()?;
        Ok(claimed)
    }

    /// Stores the outcomes of `claimed` (every one a success) in one transaction.
    fn complete(conn: &mut Connection, case: Case, claimed: &[Claimed]) -> anyhow::Result<()> {
        let now = now_millis();
        let duration_us = 5i64;
        let error: Option<&str> = None;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut done = 0usize;
            match case {
                Case::A => {
                    let mut delete = tx.prepare_cached(DELETE)?;
                    for (id, _, fence) in claimed {
                        done += delete.execute(params![id, fence])?;
                    }
                }
                Case::B | Case::D => {
                    let (mut retain, mut delete) =
                        (tx.prepare_cached(RETAIN)?, tx.prepare_cached(DELETE)?);
                    let keep_payload = case == Case::B;
                    for (id, _, fence) in claimed {
                        retain.execute(params![
                            id,
                            fence,
                            keep_payload,
                            duration_us,
                            now,
                            error
                        ])?;
                        done += delete.execute(params![id, fence])?;
                    }
                }
                Case::E => {
                    let mut take = tx.prepare_cached(DELETE_RETURNING)?;
                    let mut put = tx.prepare_cached(INSERT_COMPLETED)?;
                    for (id, _, fence) in claimed {
                        let row = {
                            let mut rows =
                                take.query(params![id, fence, 1, duration_us, now, error])?;
                            match rows.next()? {
                                Some(row) => Some((
                                    row.get::<_, String>(0)?,
                                    row.get::<_, Vec<u8>>(1)?,
                                    row.get::<_, i64>(2)?,
                                    row.get::<_, i64>(3)?,
                                    row.get::<_, Option<String>>(4)?,
                                )),
                                None => None,
                            }
                        };
                        if let Some((queue, task, attempts, created_at, errors)) = row {
                            put.execute(params![
                                id,
                                queue,
                                task,
                                attempts,
                                error.is_none(),
                                duration_us,
                                error,
                                created_at,
                                now,
                                errors
                            ])?;
                            done += 1;
                        }
                    }
                }
                Case::CDelete => {
                    let mut delete = tx.prepare_cached(ONE_DELETE)?;
                    for (id, _, fence) in claimed {
                        done += delete.execute(params![id, fence])?;
                    }
                }
                Case::C => {
                    let mut retain = tx.prepare_cached(ONE_RETAIN)?;
                    for (id, _, fence) in claimed {
                        done += retain.execute(params![id, fence, 2, duration_us, now, error])?;
                    }
                }
            }
            ensure!(
                done == claimed.len(),
                "{} of {} completed",
                done,
                claimed.len()
            );
        }
        tx.commit()?;
        Ok(())
    }

    /// One drain of `case`: (whole drain, completions only).
    fn drain(dir: &Path, case: Case, sizes: LayoutSizes) -> anyhow::Result<(Duration, Duration)> {
        let kind = case.kind();
        let mut conn = open(dir, kind)?;
        insert(&mut conn, sizes.drain)?;
        let mut completing = Duration::ZERO;
        let mut ran = 0;
        let start = Instant::now();
        loop {
            let claimed = claim(&mut conn, kind, sizes.drain_claim)?;
            if claimed.is_empty() {
                break;
            }
            for (_, task, _) in &claimed {
                let task: Noop = serde_json::from_slice(task)?;
                std::hint::black_box(task);
                ran += 1;
            }
            let t = Instant::now();
            complete(&mut conn, case, &claimed)?;
            completing += t.elapsed();
        }
        let elapsed = start.elapsed();
        ensure!(ran == sizes.drain, "drain {} ran {ran}", case.name());
        let (left, kept): (i64, i64) = match kind {
            Kind::Two => conn.query_row(
                "SELECT (SELECT COUNT(*) FROM backlite_tasks), \
                        (SELECT COUNT(*) FROM backlite_tasks_completed WHERE task IS NOT NULL \
                         OR ?1 = 0)",
                [i64::from(case != Case::D)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?,
            Kind::One => conn.query_row(
                "SELECT (SELECT COUNT(*) FROM backlite_tasks WHERE state < 2), \
                        (SELECT COUNT(*) FROM backlite_tasks WHERE state = 2 \
                         AND task IS NOT NULL)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?,
        };
        let expected = if case.retains() { sizes.drain } else { 0 };
        ensure!(
            left == 0 && kept as usize == expected,
            "drain {}: {left} left, {kept} kept",
            case.name()
        );
        Ok((elapsed, completing))
    }

    /// Every drain case, then raw-W3, alternating over the rounds.
    pub(super) fn drains(
        opts: &Opts,
        sizes: LayoutSizes,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let cases = [Case::A, Case::B, Case::C, Case::CDelete, Case::D, Case::E];
        let raw_sizes = Sizes {
            drain: sizes.drain,
            ..Sizes::new(opts.smoke)
        };
        for r in 0..opts.rounds {
            for case in rotated(&cases, r).into_iter().map(Some).chain([None]) {
                let dir = tempfile::Builder::new()
                    .prefix("layout-")
                    .tempdir_in(&opts.dir)?;
                match case {
                    Some(case) => {
                        let (elapsed, completing) = drain(dir.path(), case, sizes)?;
                        results.record(
                            "sqlite",
                            &format!("drain-{}", case.name()),
                            r,
                            sizes.drain,
                            elapsed,
                            json!({"layout": case.kind().name(), "retain": case.retains()}),
                        )?;
                        results.record(
                            "sqlite",
                            &format!("complete-{}", case.name()),
                            r,
                            sizes.drain,
                            completing,
                            json!({"layout": case.kind().name(), "retain": case.retains()}),
                        )?;
                    }
                    None => {
                        let raw = super::super::raw::drain(dir.path(), raw_sizes)?;
                        results.record(
                            "sqlite",
                            "drain-raw-W3",
                            r,
                            sizes.drain,
                            Duration::from_secs_f64(raw.secs),
                            json!({}),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A database of `kind` holding `retained` completed tasks, each with a unique key.
    fn retained_database(dir: &Path, kind: Kind, retained: usize) -> anyhow::Result<Connection> {
        let mut conn = open(dir, kind)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let now = now_millis();
            match kind {
                Kind::Two => {
                    let mut task = tx.prepare(
                        "INSERT INTO backlite_tasks_completed (id, queue, task, attempts, \
                         succeeded, last_duration_us, created_at, last_executed_at) \
                         VALUES (?1, 'bench', ?2, 1, 1, 5, ?3, ?3)",
                    )?;
                    let mut key = tx.prepare(
                        "INSERT INTO backlite_unique_keys (key, task_id) VALUES (?1, ?2)",
                    )?;
                    for n in 0..retained {
                        let id = old_id(n);
                        task.execute(params![&id[..], payload(n), now])?;
                        key.execute(params![unique_key("r", n), &id[..]])?;
                    }
                }
                Kind::One => {
                    let mut task = tx.prepare(
                        "INSERT INTO backlite_tasks (id, queue, state, task, attempts, run_at, \
                         created_at, claimed_at, last_executed_at, last_duration_us, fence, \
                         finished_at, unique_key) \
                         VALUES (?1, 'bench', 2, ?2, 1, ?3, ?3, ?3, ?3, 5, 1, ?3, ?4)",
                    )?;
                    for n in 0..retained {
                        task.execute(params![&old_id(n)[..], payload(n), now, unique_key("r", n)])?;
                    }
                }
            }
        }
        tx.commit()?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE")?;
        Ok(conn)
    }

    /// Adds `count` tasks with unique keys `k<round>-<n>`, `INSERT_BATCH` per transaction;
    /// returns how many were added.
    fn insert_unique(
        conn: &mut Connection,
        kind: Kind,
        round_no: usize,
        count: usize,
    ) -> anyhow::Result<usize> {
        let prefix = format!("k{round_no}-");
        let mut added = 0;
        for first in (0..count).step_by(INSERT_BATCH) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let now = now_millis();
                match kind {
                    Kind::Two => {
                        let mut key = tx.prepare_cached(
                            "INSERT INTO backlite_unique_keys (key, task_id) VALUES (?1, ?2) \
                             ON CONFLICT DO NOTHING",
                        )?;
                        let mut insert = tx.prepare_cached(INSERT)?;
                        for n in first..(first + INSERT_BATCH).min(count) {
                            let id = task_id();
                            if key.execute(params![unique_key(&prefix, n), &id[..]])? == 1 {
                                added += insert.execute(params![
                                    &id[..],
                                    "bench",
                                    payload(n),
                                    now,
                                    now
                                ])?;
                            }
                        }
                    }
                    Kind::One => {
                        let mut insert = tx.prepare_cached(
                            "INSERT INTO backlite_tasks (id, queue, task, run_at, created_at, \
                             unique_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                             ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL \
                             AND state <= 2 DO NOTHING",
                        )?;
                        for n in first..(first + INSERT_BATCH).min(count) {
                            added += insert.execute(params![
                                &task_id()[..],
                                "bench",
                                payload(n),
                                now,
                                now,
                                unique_key(&prefix, n)
                            ])?;
                        }
                    }
                }
            }
            tx.commit()?;
        }
        Ok(added)
    }

    /// Removes the round's tasks and keys (not timed), so that every round starts alike.
    fn clear(conn: &Connection, kind: Kind) -> anyhow::Result<()> {
        match kind {
            // A `WHERE`, so that SQLite deletes row by row as in the one table, rather than
            // dropping the table's pages at once.
            Kind::Two => conn.execute_batch(
                "DELETE FROM backlite_tasks WHERE rowid > 0; \
                 DELETE FROM backlite_unique_keys WHERE key >= CAST('k' AS BLOB)",
            )?,
            Kind::One => conn.execute_batch("DELETE FROM backlite_tasks WHERE state < 2")?,
        }
        // Every measurement starts on an empty WAL.
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        Ok(())
    }

    /// Claims, inserts and unique inserts over `retained` completed tasks, per layout.
    pub(super) fn claims(
        opts: &Opts,
        sizes: LayoutSizes,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let n = sizes.claims;
        for r in 0..opts.rounds {
            // Fresh databases every round, filled in turn; each measured connection is opened
            // once both are filled: a connection that had filled its database, or a database
            // that earlier rounds had churned, measured up to twice as slow as the other,
            // whichever layout it held.
            let mut dbs = Vec::new();
            for kind in rotated(&[Kind::Two, Kind::One], r) {
                let dir = tempfile::Builder::new()
                    .prefix("layout-retained-")
                    .tempdir_in(&opts.dir)?;
                let t = Instant::now();
                drop(retained_database(dir.path(), kind, sizes.retained)?);
                eprintln!(
                    "layout: {} retained tasks in the {} layout in {:.1} s",
                    sizes.retained,
                    kind.name(),
                    t.elapsed().as_secs_f64()
                );
                dbs.push((kind, dir));
            }
            let mut dbs = dbs
                .into_iter()
                .map(|(kind, dir)| {
                    let conn = reopen(dir.path())?;
                    anyhow::Ok((kind, dir, conn))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            for i in [0, 1] {
                let (kind, _, conn) = &mut dbs[i];
                let kind = *kind;
                let extra = json!({"layout": kind.name(), "retained": sizes.retained});
                let t = Instant::now();
                insert(conn, n)?;
                let elapsed = t.elapsed();
                results.record(
                    "sqlite",
                    &format!("insert-{}", kind.name()),
                    r,
                    n,
                    elapsed,
                    extra.clone(),
                )?;

                let mut claimed = 0;
                let t = Instant::now();
                loop {
                    let batch = claim(conn, kind, CLAIM_BATCH)?;
                    if batch.is_empty() {
                        break;
                    }
                    claimed += batch.len();
                }
                let elapsed = t.elapsed();
                ensure!(claimed == n, "claimed {claimed} of {n}");
                let mut line = extra.clone();
                line["claims_per_sec"] =
                    json!(round((n / CLAIM_BATCH) as f64 / elapsed.as_secs_f64(), 0));
                line["claim_batch"] = json!(CLAIM_BATCH);
                results.record(
                    "sqlite",
                    &format!("claim-{}", kind.name()),
                    r,
                    n,
                    elapsed,
                    line,
                )?;
                clear(conn, kind)?;

                let t = Instant::now();
                let added = insert_unique(conn, kind, r, n)?;
                let elapsed = t.elapsed();
                ensure!(added == n, "{added} of {n} new unique tasks added");
                results.record(
                    "sqlite",
                    &format!("unique-new-{}", kind.name()),
                    r,
                    n,
                    elapsed,
                    extra.clone(),
                )?;
                let t = Instant::now();
                let added = insert_unique(conn, kind, r, n)?;
                let elapsed = t.elapsed();
                ensure!(added == 0, "{added} duplicates added");
                results.record(
                    "sqlite",
                    &format!("unique-dup-{}", kind.name()),
                    r,
                    n,
                    elapsed,
                    extra,
                )?;
                clear(conn, kind)?;
            }
        }
        Ok(())
    }

    /// Migration v5 as it would run on today's schema (v4): the table rebuilt, since SQLite's
    /// `ALTER TABLE` cannot make the payload column nullable; retained tasks first (they are
    /// the older), live ones after, replacing a retained copy of the same id; then the
    /// indexes, built once over the copied rows.
    const MIGRATE: &str = "
        INSERT INTO backlite_tasks_v5 (id, queue, state, task, attempts, run_at, created_at,
            last_executed_at, last_duration_us, last_error, errors, finished_at, expires_at)
        SELECT id, queue, CASE WHEN cancelled <> 0 THEN 4 WHEN succeeded <> 0 THEN 2 ELSE 3 END,
            task, attempts, last_executed_at, created_at, last_executed_at, last_duration_us,
            error, errors, last_executed_at, expires_at
        FROM backlite_tasks_completed ORDER BY rowid;
        INSERT OR REPLACE INTO backlite_tasks_v5 (id, queue, state, task, attempts, run_at,
            created_at, claimed_at, last_executed_at, last_duration_us, last_error, lease_until,
            fence, claimed_by, lease_renewed_at, cancel_requested_at, errors)
        SELECT id, queue, CASE WHEN claimed_at IS NULL THEN 0 ELSE 1 END, task, attempts,
            run_at, created_at, claimed_at, last_executed_at, last_duration_us, last_error,
            lease_until, fence, claimed_by, lease_renewed_at, cancel_requested_at, errors
        FROM backlite_tasks ORDER BY rowid;
        DROP TABLE backlite_tasks;
        DROP TABLE backlite_tasks_completed;
        ALTER TABLE backlite_tasks_v5 RENAME TO backlite_tasks;
    ";

    /// What migration v5 costs a database of today's layout holding `retained` completed
    /// tasks and `claims` live ones (1,000 of them claimed).
    pub(super) fn migration(
        opts: &Opts,
        sizes: LayoutSizes,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let claimed = 1_000.min(sizes.claims);
        for r in 0..opts.rounds.min(3) {
            let dir = tempfile::Builder::new()
                .prefix("layout-migrate-")
                .tempdir_in(&opts.dir)?;
            let mut conn = retained_database(dir.path(), Kind::Two, sizes.retained)?;
            insert(&mut conn, sizes.claims)?;
            ensure!(claim(&mut conn, Kind::Two, claimed)?.len() == claimed);
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
            let sql = format!(
                "{}{MIGRATE}{ONE_TABLE_INDEXES}",
                ONE_TABLE.replace(
                    "CREATE TABLE backlite_tasks (",
                    "CREATE TABLE backlite_tasks_v5 ("
                )
            );
            let t = Instant::now();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(&sql)?;
            tx.commit()?;
            let elapsed = t.elapsed();
            let counts: (i64, i64, i64) = conn.query_row(
                "SELECT COUNT(*) FILTER (WHERE state = 0), COUNT(*) FILTER (WHERE state = 1), \
                 COUNT(*) FILTER (WHERE state = 2) FROM backlite_tasks",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            ensure!(
                counts
                    == (
                        (sizes.claims - claimed) as i64,
                        claimed as i64,
                        sizes.retained as i64
                    ),
                "migrated: {counts:?}"
            );
            let rows = sizes.retained + sizes.claims;
            results.record(
                "sqlite",
                "migrate-v5",
                r,
                rows,
                elapsed,
                json!({"retained": sizes.retained, "live": sizes.claims}),
            )?;
        }
        Ok(())
    }
}

mod postgres {
    use tokio_postgres::Client;

    use super::*;

    /// Today's schema (PostgreSQL migration v2), with a side table of unique keys.
    const TWO_TABLES: &str = "
        CREATE TABLE {s}.backlite_tasks (
            id uuid PRIMARY KEY, seq bigint GENERATED ALWAYS AS IDENTITY,
            queue text NOT NULL, task bytea NOT NULL, attempts integer NOT NULL DEFAULT 0,
            run_at bigint NOT NULL, created_at bigint NOT NULL, claimed_at bigint,
            lease_until bigint, fence bigint NOT NULL DEFAULT 0, last_executed_at bigint,
            last_duration_us bigint, last_error text, claimed_by uuid,
            lease_renewed_at bigint, cancel_requested_at bigint, errors jsonb);
        CREATE INDEX backlite_tasks_due ON {s}.backlite_tasks (queue, run_at, seq)
            WHERE claimed_at IS NULL;
        CREATE INDEX backlite_tasks_claimed ON {s}.backlite_tasks (claimed_at, seq)
            INCLUDE (queue, lease_until) WHERE claimed_at IS NOT NULL;
        CREATE TABLE {s}.backlite_tasks_completed (
            id uuid PRIMARY KEY, seq bigint GENERATED ALWAYS AS IDENTITY,
            queue text NOT NULL, task bytea, attempts integer NOT NULL,
            succeeded boolean NOT NULL, last_duration_us bigint NOT NULL, error text,
            created_at bigint NOT NULL, last_executed_at bigint NOT NULL, expires_at bigint,
            cancelled boolean NOT NULL DEFAULT false, errors jsonb);
        CREATE INDEX backlite_tasks_completed_expires ON {s}.backlite_tasks_completed
            (expires_at) WHERE expires_at IS NOT NULL;
        CREATE INDEX backlite_tasks_completed_outcome ON {s}.backlite_tasks_completed
            (succeeded, last_executed_at, seq);
        CREATE INDEX backlite_tasks_completed_queue ON {s}.backlite_tasks_completed
            (queue, succeeded);
        CREATE TABLE {s}.backlite_unique_keys (key bytea PRIMARY KEY, task_id uuid NOT NULL);
    ";

    /// One table with a state column; every index partial on the states it serves.
    const ONE_TABLE: &str = "
        CREATE TABLE {s}.backlite_tasks (
            id uuid PRIMARY KEY, seq bigint GENERATED ALWAYS AS IDENTITY,
            queue text NOT NULL, state smallint NOT NULL DEFAULT 0, task bytea,
            attempts integer NOT NULL DEFAULT 0, run_at bigint NOT NULL,
            created_at bigint NOT NULL, claimed_at bigint, lease_until bigint,
            fence bigint NOT NULL DEFAULT 0, last_executed_at bigint, last_duration_us bigint,
            last_error text, claimed_by uuid, lease_renewed_at bigint,
            cancel_requested_at bigint, errors jsonb, finished_at bigint, expires_at bigint,
            unique_key bytea);
    ";

    /// The one table's indexes, apart so that a migration builds them after the copy.
    const ONE_TABLE_INDEXES: &str = "
        CREATE INDEX backlite_tasks_due ON {s}.backlite_tasks (queue, run_at, seq)
            WHERE state = 0;
        CREATE INDEX backlite_tasks_running ON {s}.backlite_tasks (claimed_at, seq)
            INCLUDE (queue, lease_until) WHERE state = 1;
        CREATE INDEX backlite_tasks_ended ON {s}.backlite_tasks (state, finished_at, seq)
            WHERE state >= 2;
        CREATE INDEX backlite_tasks_ended_queue ON {s}.backlite_tasks (queue, state)
            WHERE state >= 2;
        CREATE INDEX backlite_tasks_expires ON {s}.backlite_tasks (expires_at)
            WHERE expires_at IS NOT NULL;
        CREATE UNIQUE INDEX backlite_tasks_unique ON {s}.backlite_tasks (unique_key)
            WHERE unique_key IS NOT NULL AND state <= 2;
    ";

    const ERRORS_APPENDED: &str = "CASE WHEN u.error IS NULL THEN {t}.errors ELSE \
         (CASE WHEN jsonb_array_length({t}.errors) >= 10 THEN {t}.errors - 0 \
          ELSE COALESCE({t}.errors, '[]'::jsonb) END) \
         || jsonb_build_array(jsonb_build_object('attempt', {t}.attempts + 1, \
             'at', u.executed_at, 'duration_us', u.duration_us, 'error', u.error)) END";

    /// The statements of one layout in schema `s` (quoted).
    struct Sql {
        insert: String,
        insert_unique: String,
        claim: String,
        finish: String,
    }

    impl Sql {
        fn new(kind: Kind, s: &str) -> Sql {
            let t = format!("{s}.backlite_tasks");
            let insert_rows = "SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], \
                               $4::int8[], $5::int8[])";
            let insert =
                format!("INSERT INTO {t} (id, queue, task, run_at, created_at) {insert_rows}");
            match kind {
                Kind::Two => Sql {
                    insert,
                    insert_unique: format!(
                        "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], \
                             $4::int8[], $5::int8[], $6::bytea[]) \
                             AS u(id, queue, task, run_at, created_at, key)), \
                         k AS (INSERT INTO {s}.backlite_unique_keys (key, task_id) \
                             SELECT key, id FROM u ON CONFLICT DO NOTHING RETURNING task_id) \
                         INSERT INTO {t} (id, queue, task, run_at, created_at) \
                         SELECT u.id, u.queue, u.task, u.run_at, u.created_at \
                         FROM u JOIN k ON k.task_id = u.id"
                    ),
                    claim: format!(
                        "WITH picked AS (SELECT id FROM {t} \
                             WHERE claimed_at IS NULL AND queue = $1 AND run_at <= $2 \
                             ORDER BY run_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
                         UPDATE {t} AS t SET claimed_at = $2, lease_until = $2 + 600000, \
                             fence = t.fence + 1 \
                         FROM picked WHERE t.id = picked.id \
                         RETURNING t.id, t.queue, t.task, t.attempts, t.fence, t.run_at, t.seq"
                    ),
                    // The driver's statement, as it is.
                    finish: format!(
                        "WITH u AS ( \
                             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::bool[], \
                                 $4::bool[], $5::bool[], $6::int8[], $7::text[], $8::int8[], \
                                 $9::int8[], $10::bool[]) \
                             AS u(id, fence, retain, keep_payload, succeeded, duration_us, \
                                 error, executed_at, expires_at, cancelled)), \
                         gone AS ( \
                             DELETE FROM {t} AS t USING u \
                             WHERE t.id = u.id AND t.fence = u.fence \
                                 AND t.claimed_at IS NOT NULL \
                             RETURNING t.id, t.queue, t.task, t.attempts, t.created_at, \
                                 t.errors) \
                         INSERT INTO {s}.backlite_tasks_completed (id, queue, task, attempts, \
                             succeeded, last_duration_us, error, created_at, last_executed_at, \
                             expires_at, cancelled, errors) \
                         SELECT g.id, g.queue, CASE WHEN u.keep_payload THEN g.task END, \
                             g.attempts + 1, u.succeeded, u.duration_us, u.error, \
                             g.created_at, u.executed_at, u.expires_at, u.cancelled, {errors} \
                         FROM gone AS g JOIN u ON u.id = g.id WHERE u.retain \
                         ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, \
                             task = excluded.task, attempts = excluded.attempts, \
                             succeeded = excluded.succeeded, \
                             last_duration_us = excluded.last_duration_us, \
                             error = excluded.error, created_at = excluded.created_at, \
                             last_executed_at = excluded.last_executed_at, \
                             expires_at = excluded.expires_at, cancelled = excluded.cancelled, \
                             errors = excluded.errors",
                        errors = ERRORS_APPENDED.replace("{t}", "g")
                    ),
                },
                Kind::One => Sql {
                    insert,
                    insert_unique: format!(
                        "INSERT INTO {t} (id, queue, task, run_at, created_at, unique_key) \
                         SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], \
                             $4::int8[], $5::int8[], $6::bytea[]) \
                         ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state <= 2 \
                         DO NOTHING"
                    ),
                    claim: format!(
                        "WITH picked AS (SELECT id FROM {t} \
                             WHERE state = 0 AND queue = $1 AND run_at <= $2 \
                             ORDER BY run_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
                         UPDATE {t} AS t SET state = 1, claimed_at = $2, \
                             lease_until = $2 + 600000, fence = t.fence + 1 \
                         FROM picked WHERE t.id = picked.id \
                         RETURNING t.id, t.queue, t.task, t.attempts, t.fence, t.run_at, t.seq"
                    ),
                    // Tasks not retained are deleted; retained ones change state in place.
                    finish: format!(
                        "WITH u AS ( \
                             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::bool[], \
                                 $4::bool[], $5::int2[], $6::int8[], $7::text[], $8::int8[], \
                                 $9::int8[]) \
                             AS u(id, fence, retain, keep_payload, state, duration_us, error, \
                                 executed_at, expires_at)), \
                         gone AS ( \
                             DELETE FROM {t} AS t USING u \
                             WHERE t.id = u.id AND t.fence = u.fence AND t.state = 1 \
                                 AND NOT u.retain) \
                         UPDATE {t} AS t SET state = u.state, \
                             task = CASE WHEN u.keep_payload THEN t.task END, \
                             attempts = t.attempts + 1, last_duration_us = u.duration_us, \
                             last_error = u.error, last_executed_at = u.executed_at, \
                             finished_at = u.executed_at, expires_at = u.expires_at, \
                             errors = {errors} \
                         FROM u WHERE t.id = u.id AND t.fence = u.fence AND t.state = 1 \
                             AND u.retain",
                        errors = ERRORS_APPENDED.replace("{t}", "t")
                    ),
                },
            }
        }
    }

    async fn create(url: &str, kind: Kind, workload: &str) -> anyhow::Result<(Client, String)> {
        let client = connect(url).await?;
        let schema = fresh_schema(workload);
        let s = format!("\"{schema}\"");
        let ddl = match kind {
            Kind::Two => TWO_TABLES.to_owned(),
            Kind::One => format!("{ONE_TABLE}{ONE_TABLE_INDEXES}"),
        };
        client
            .batch_execute(&format!("CREATE SCHEMA {s}; {}", ddl.replace("{s}", &s)))
            .await?;
        Ok((client, schema))
    }

    async fn insert(client: &Client, sql: &Sql, count: usize) -> anyhow::Result<()> {
        let statement = client.prepare(&sql.insert).await?;
        for first in (0..count).step_by(INSERT_BATCH) {
            let batch = (first + INSERT_BATCH).min(count) - first;
            let now = now_millis();
            let ids: Vec<uuid::Uuid> = (0..batch)
                .map(|_| uuid::Uuid::from_bytes(task_id()))
                .collect();
            let tasks: Vec<Vec<u8>> = (first..first + batch).map(payload).collect();
            let (queues, times) = (vec!["bench"; batch], vec![now; batch]);
            client
                .execute(&statement, &[&ids, &queues, &tasks, &times, &times])
                .await?;
        }
        Ok(())
    }

    /// Claims up to `limit` due tasks with the driver's statement: (id, payload, fence).
    async fn claim(
        client: &Client,
        statement: &tokio_postgres::Statement,
        limit: usize,
    ) -> anyhow::Result<Vec<(uuid::Uuid, Vec<u8>, i64)>> {
        let rows = client
            .query(statement, &[&"bench", &now_millis(), &(limit as i64)])
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(2)?, row.try_get(4)?)))
            .collect()
    }

    async fn complete(
        client: &Client,
        statement: &tokio_postgres::Statement,
        case: Case,
        claimed: &[(uuid::Uuid, Vec<u8>, i64)],
    ) -> anyhow::Result<()> {
        let count = claimed.len();
        let ids: Vec<uuid::Uuid> = claimed.iter().map(|c| c.0).collect();
        let fences: Vec<i64> = claimed.iter().map(|c| c.2).collect();
        let retain = vec![case.retains(); count];
        let keep_payload = vec![matches!(case, Case::B | Case::C); count];
        let durations = vec![5i64; count];
        let errors: Vec<Option<String>> = vec![None; count];
        let executed_at = vec![now_millis(); count];
        let expires_at: Vec<Option<i64>> = vec![None; count];
        match case.kind() {
            Kind::Two => {
                let succeeded = vec![true; count];
                let cancelled = vec![false; count];
                client
                    .execute(
                        statement,
                        &[
                            &ids,
                            &fences,
                            &retain,
                            &keep_payload,
                            &succeeded,
                            &durations,
                            &errors,
                            &executed_at,
                            &expires_at,
                            &cancelled,
                        ],
                    )
                    .await?;
            }
            Kind::One => {
                let states = vec![2i16; count];
                client
                    .execute(
                        statement,
                        &[
                            &ids,
                            &fences,
                            &retain,
                            &keep_payload,
                            &states,
                            &durations,
                            &errors,
                            &executed_at,
                            &expires_at,
                        ],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// One drain of `case` by 4 connections: (whole drain, the sum of completion times).
    async fn drain(
        url: &str,
        case: Case,
        sizes: LayoutSizes,
    ) -> anyhow::Result<(Duration, Duration)> {
        let kind = case.kind();
        let (admin, schema) = create(url, kind, &format!("layout-{}", case.name())).await?;
        let outcome = async {
            let s = format!("\"{schema}\"");
            let sql = Sql::new(kind, &s);
            insert(&admin, &sql, sizes.drain).await?;
            admin
                .batch_execute(&format!("ANALYZE {s}.backlite_tasks"))
                .await?;
            let mut drainers = Vec::new();
            for _ in 0..4 {
                let client = connect(url).await?;
                // After five runs a prepared statement may switch to a generic plan, and the
                // generic plan of both finish statements joins the claimed rows to the unnest
                // by a nested loop (claimed x batch comparisons): it measured 6 times raw-W3
                // per task. Custom plans hash-join them; the layouts are compared on those.
                client
                    .batch_execute("SET plan_cache_mode = force_custom_plan")
                    .await?;
                let claim_statement = client.prepare(&sql.claim).await?;
                let finish = client.prepare(&sql.finish).await?;
                drainers.push((client, claim_statement, finish));
            }
            let start = Instant::now();
            let tasks: Vec<_> = drainers
                .into_iter()
                .map(|(client, claim_statement, finish)| {
                    let limit = sizes.drain_claim;
                    tokio::spawn(async move {
                        let (mut ran, mut completing) = (0usize, Duration::ZERO);
                        loop {
                            let claimed = claim(&client, &claim_statement, limit).await?;
                            if claimed.is_empty() {
                                return anyhow::Ok((ran, completing));
                            }
                            for (_, task, _) in &claimed {
                                let task: Noop = serde_json::from_slice(task)?;
                                std::hint::black_box(task);
                                ran += 1;
                            }
                            let t = Instant::now();
                            complete(&client, &finish, case, &claimed).await?;
                            completing += t.elapsed();
                        }
                    })
                })
                .collect();
            let (mut ran, mut completing) = (0, Duration::ZERO);
            for task in tasks {
                let (r, c) = task.await??;
                ran += r;
                completing += c;
            }
            let elapsed = start.elapsed();
            ensure!(ran == sizes.drain, "drain {} ran {ran}", case.name());
            let kept_sql = match kind {
                Kind::Two => format!(
                    "SELECT (SELECT count(*) FROM {s}.backlite_tasks), \
                            (SELECT count(*) FROM {s}.backlite_tasks_completed)"
                ),
                Kind::One => format!(
                    "SELECT (SELECT count(*) FROM {s}.backlite_tasks WHERE state < 2), \
                            (SELECT count(*) FROM {s}.backlite_tasks WHERE state = 2)"
                ),
            };
            let row = admin.query_one(&kept_sql, &[]).await?;
            let (left, kept): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            let expected = if case.retains() { sizes.drain } else { 0 };
            ensure!(
                left == 0 && kept as usize == expected,
                "drain {}: {left} left, {kept} kept",
                case.name()
            );
            anyhow::Ok((elapsed, completing))
        }
        .await;
        drop_schema(url, &schema).await?;
        outcome
    }

    pub(super) async fn drains(
        opts: &Opts,
        url: &str,
        sizes: LayoutSizes,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let cases = [Case::A, Case::B, Case::C, Case::CDelete, Case::D];
        let raw_sizes = Sizes {
            drain: sizes.drain,
            ..Sizes::new(opts.smoke)
        };
        for r in 0..opts.rounds {
            for case in rotated(&cases, r).into_iter().map(Some).chain([None]) {
                match case {
                    Some(case) => {
                        let (elapsed, completing) = drain(url, case, sizes).await?;
                        let extra = json!({"layout": case.kind().name(), "retain": case.retains()});
                        results.record(
                            "postgres",
                            &format!("drain-{}", case.name()),
                            r,
                            sizes.drain,
                            elapsed,
                            extra.clone(),
                        )?;
                        results.record(
                            "postgres",
                            &format!("complete-{}", case.name()),
                            r,
                            sizes.drain,
                            completing,
                            extra,
                        )?;
                    }
                    None => {
                        let schema = fresh_schema("layout-raw-w3");
                        let raw = super::super::pg_raw::drain(url, &schema, raw_sizes).await;
                        drop_schema(url, &schema).await?;
                        results.record(
                            "postgres",
                            "drain-raw-W3",
                            r,
                            sizes.drain,
                            Duration::from_secs_f64(raw?.secs),
                            json!({}),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Fills schema `s` of `kind` with `retained` completed tasks, each with a unique key.
    async fn retain(client: &Client, kind: Kind, s: &str, retained: usize) -> anyhow::Result<()> {
        // Ids below every new task's (time-ordered UUIDs), in order: the retained are older.
        let id = "lpad(to_hex(g), 32, '0')::uuid";
        let key = "convert_to('r' || g, 'UTF8')";
        let task = "convert_to('{\"n\":' || g || '}', 'UTF8')";
        let sql = match kind {
            Kind::Two => format!(
                "INSERT INTO {s}.backlite_tasks_completed (id, queue, task, attempts, \
                     succeeded, last_duration_us, created_at, last_executed_at) \
                 SELECT {id}, 'bench', {task}, 1, true, 5, $2, $2 \
                 FROM generate_series(1, $1) AS g; \
                 INSERT INTO {s}.backlite_unique_keys (key, task_id) \
                 SELECT {key}, {id} FROM generate_series(1, $1) AS g"
            ),
            Kind::One => format!(
                "INSERT INTO {s}.backlite_tasks (id, queue, state, task, attempts, run_at, \
                     created_at, claimed_at, last_executed_at, last_duration_us, fence, \
                     finished_at, unique_key) \
                 SELECT {id}, 'bench', 2, {task}, 1, $2, $2, $2, $2, 5, 1, $2, {key} \
                 FROM generate_series(1, $1) AS g"
            ),
        };
        // Bound by hand: a batch of statements takes no parameters.
        let sql = sql
            .replace("$1", &(retained as i64).to_string())
            .replace("$2", &now_millis().to_string());
        client.batch_execute(&sql).await?;
        client
            .batch_execute(&format!("VACUUM ANALYZE {s}.backlite_tasks"))
            .await?;
        if kind == Kind::Two {
            client
                .batch_execute(&format!("VACUUM ANALYZE {s}.backlite_tasks_completed"))
                .await?;
            client
                .batch_execute(&format!("VACUUM ANALYZE {s}.backlite_unique_keys"))
                .await?;
        }
        Ok(())
    }

    /// Adds `count` tasks with unique keys `k<round>-<n>`; returns how many were added.
    async fn insert_unique(
        client: &Client,
        statement: &tokio_postgres::Statement,
        round_no: usize,
        count: usize,
    ) -> anyhow::Result<u64> {
        let prefix = format!("k{round_no}-");
        let mut added = 0;
        for first in (0..count).step_by(INSERT_BATCH) {
            let batch = (first + INSERT_BATCH).min(count) - first;
            let now = now_millis();
            let ids: Vec<uuid::Uuid> = (0..batch)
                .map(|_| uuid::Uuid::from_bytes(task_id()))
                .collect();
            let tasks: Vec<Vec<u8>> = (first..first + batch).map(payload).collect();
            let keys: Vec<Vec<u8>> = (first..first + batch)
                .map(|n| unique_key(&prefix, n))
                .collect();
            let (queues, times) = (vec!["bench"; batch], vec![now; batch]);
            added += client
                .execute(statement, &[&ids, &queues, &tasks, &times, &times, &keys])
                .await?;
        }
        Ok(added)
    }

    /// Removes the round's tasks and keys (not timed) and vacuums, as autovacuum would.
    async fn clear(client: &Client, kind: Kind, s: &str) -> anyhow::Result<()> {
        let sql = match kind {
            Kind::Two => format!(
                "DELETE FROM {s}.backlite_tasks; \
                 DELETE FROM {s}.backlite_unique_keys WHERE key >= 'k'::bytea"
            ),
            Kind::One => format!("DELETE FROM {s}.backlite_tasks WHERE state < 2"),
        };
        client.batch_execute(&sql).await?;
        client
            .batch_execute(&format!("VACUUM ANALYZE {s}.backlite_tasks"))
            .await?;
        if kind == Kind::Two {
            client
                .batch_execute(&format!("VACUUM ANALYZE {s}.backlite_unique_keys"))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn claims(
        opts: &Opts,
        url: &str,
        sizes: LayoutSizes,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let mut schemas = Vec::new();
        for kind in [Kind::Two, Kind::One] {
            let (client, schema) = create(url, kind, &format!("layout-{}", kind.name())).await?;
            schemas.push((kind, client, schema));
        }
        let outcome = async {
            for (kind, client, schema) in &schemas {
                let t = Instant::now();
                retain(client, *kind, &format!("\"{schema}\""), sizes.retained).await?;
                eprintln!(
                    "layout: {} retained tasks in the {} layout in {:.1} s",
                    sizes.retained,
                    kind.name(),
                    t.elapsed().as_secs_f64()
                );
                client.batch_execute("SET synchronous_commit = off").await?;
            }
            let n = sizes.claims;
            for r in 0..opts.rounds {
                for i in rotated(&[0, 1], r) {
                    let (kind, client, schema) = &schemas[i];
                    let (kind, s) = (*kind, format!("\"{schema}\""));
                    let sql = Sql::new(kind, &s);
                    let extra = json!({"layout": kind.name(), "retained": sizes.retained});
                    let t = Instant::now();
                    insert(client, &sql, n).await?;
                    let elapsed = t.elapsed();
                    results.record(
                        "postgres",
                        &format!("insert-{}", kind.name()),
                        r,
                        n,
                        elapsed,
                        extra.clone(),
                    )?;
                    client
                        .batch_execute(&format!("ANALYZE {s}.backlite_tasks"))
                        .await?;

                    let claim_statement = client.prepare(&sql.claim).await?;
                    let mut claimed = 0;
                    let t = Instant::now();
                    loop {
                        let batch = claim(client, &claim_statement, CLAIM_BATCH).await?;
                        if batch.is_empty() {
                            break;
                        }
                        claimed += batch.len();
                    }
                    let elapsed = t.elapsed();
                    ensure!(claimed == n, "claimed {claimed} of {n}");
                    let mut line = extra.clone();
                    line["claims_per_sec"] =
                        json!(round((n / CLAIM_BATCH) as f64 / elapsed.as_secs_f64(), 0));
                    line["claim_batch"] = json!(CLAIM_BATCH);
                    results.record(
                        "postgres",
                        &format!("claim-{}", kind.name()),
                        r,
                        n,
                        elapsed,
                        line,
                    )?;
                    clear(client, kind, &s).await?;

                    let statement = client.prepare(&sql.insert_unique).await?;
                    let t = Instant::now();
                    let added = insert_unique(client, &statement, r, n).await?;
                    let elapsed = t.elapsed();
                    ensure!(added as usize == n, "{added} of {n} new unique tasks added");
                    results.record(
                        "postgres",
                        &format!("unique-new-{}", kind.name()),
                        r,
                        n,
                        elapsed,
                        extra.clone(),
                    )?;
                    let t = Instant::now();
                    let added = insert_unique(client, &statement, r, n).await?;
                    let elapsed = t.elapsed();
                    ensure!(added == 0, "{added} duplicates added");
                    results.record(
                        "postgres",
                        &format!("unique-dup-{}", kind.name()),
                        r,
                        n,
                        elapsed,
                        extra,
                    )?;
                    clear(client, kind, &s).await?;
                }
            }
            anyhow::Ok(())
        }
        .await;
        for (_, _, schema) in &schemas {
            drop_schema(url, schema).await?;
        }
        outcome
    }

    /// Migration v3 as it would run on today's schema (v2), in place: the new columns have
    /// constant defaults (no rewrite), the payload column becomes nullable (no rewrite), the
    /// claimed rows get their state, the retained rows move in, then the indexes.
    const MIGRATE: &str = "
        BEGIN;
        ALTER TABLE {s}.backlite_tasks ALTER COLUMN task DROP NOT NULL,
            ADD COLUMN state smallint NOT NULL DEFAULT 0, ADD COLUMN finished_at bigint,
            ADD COLUMN expires_at bigint, ADD COLUMN unique_key bytea;
        DROP INDEX {s}.backlite_tasks_due;
        DROP INDEX {s}.backlite_tasks_claimed;
        UPDATE {s}.backlite_tasks SET state = 1 WHERE claimed_at IS NOT NULL;
        INSERT INTO {s}.backlite_tasks (id, queue, state, task, attempts, run_at, created_at,
            last_executed_at, last_duration_us, last_error, errors, finished_at, expires_at)
        SELECT id, queue, CASE WHEN cancelled THEN 4 WHEN succeeded THEN 2 ELSE 3 END, task,
            attempts, last_executed_at, created_at, last_executed_at, last_duration_us, error,
            errors, last_executed_at, expires_at
        FROM {s}.backlite_tasks_completed ORDER BY seq
        ON CONFLICT (id) DO NOTHING;
        DROP TABLE {s}.backlite_tasks_completed;
    ";

    /// What migration v3 costs a schema of today's layout holding `retained` completed tasks
    /// and `claims` live ones (1,000 of them claimed).
    pub(super) async fn migration(
        opts: &Opts,
        url: &str,
        sizes: LayoutSizes,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let claimed = 1_000.min(sizes.claims);
        for r in 0..opts.rounds.min(3) {
            let (client, schema) = create(url, Kind::Two, "layout-migrate").await?;
            let outcome = async {
                let s = format!("\"{schema}\"");
                let sql = Sql::new(Kind::Two, &s);
                retain(&client, Kind::Two, &s, sizes.retained).await?;
                insert(&client, &sql, sizes.claims).await?;
                client
                    .batch_execute(&format!("VACUUM ANALYZE {s}.backlite_tasks"))
                    .await?;
                let statement = client.prepare(&sql.claim).await?;
                ensure!(claim(&client, &statement, claimed).await?.len() == claimed);
                let migrate = format!("{MIGRATE}{ONE_TABLE_INDEXES} COMMIT;").replace("{s}", &s);
                let t = Instant::now();
                client.batch_execute(&migrate).await?;
                let elapsed = t.elapsed();
                let row = client
                    .query_one(
                        &format!(
                            "SELECT count(*) FILTER (WHERE state = 0), \
                             count(*) FILTER (WHERE state = 1), \
                             count(*) FILTER (WHERE state = 2) FROM {s}.backlite_tasks"
                        ),
                        &[],
                    )
                    .await?;
                let counts: (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                ensure!(
                    counts
                        == (
                            (sizes.claims - claimed) as i64,
                            claimed as i64,
                            sizes.retained as i64
                        ),
                    "migrated: {counts:?}"
                );
                anyhow::Ok(elapsed)
            }
            .await;
            drop_schema(url, &schema).await?;
            results.record(
                "postgres",
                "migrate-v3",
                r,
                sizes.retained + sizes.claims,
                outcome?,
                json!({"retained": sizes.retained, "live": sizes.claims}),
            )?;
        }
        Ok(())
    }
}
