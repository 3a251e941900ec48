//! The raw baseline: plain rusqlite doing the minimum a durable queue needs, on a table of the
//! same shape as backlite's, with the same pragmas. What backlite is measured against.
//!
//! - insert: `INSERT INTO raw_tasks (id, queue, task, run_at, created_at) VALUES (..)`, one
//!   prepared statement, in `BEGIN IMMEDIATE` transactions of 1 row (raw-W1) or of a batch
//!   (raw-W2);
//! - drain (raw-W3), one thread: a transaction that claims `raw_claim` rows with
//!   `UPDATE raw_tasks SET claimed_at = ?now WHERE rowid IN (SELECT rowid .. WHERE claimed_at
//!   IS NULL AND queue = ? AND run_at <= ?now ORDER BY run_at LIMIT ?) RETURNING id, task`;
//!   each payload decoded and counted; a transaction that deletes those rows by id.
//!
//! - latency (raw-W4), one thread, samples 5 ms apart: one row inserted in a transaction, then
//!   claimed in a second one with `SELECT rowid, id, task .. ORDER BY run_at LIMIT 1` and
//!   `UPDATE raw_tasks SET claimed_at = ? WHERE rowid = ?` (the cheaper claim for one row;
//!   backlite claims the same way), and decoded. No thread hand-off at all.
//!
//! Only the index a claim needs exists (due rows by queue and time); no claim token check on
//! delete, no outcome bookkeeping, no second thread.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use backlite::rusqlite::{Connection, TransactionBehavior, params};

use super::workloads::{Noop, ThreadCpu};
use super::{Figure, Sizes};

const SCHEMA: &str = "
    CREATE TABLE raw_tasks (
        id               BLOB PRIMARY KEY NOT NULL,
        queue            TEXT NOT NULL,
        task             BLOB NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        run_at           INTEGER NOT NULL,
        created_at       INTEGER NOT NULL,
        claimed_at       INTEGER,
        last_executed_at INTEGER,
        last_duration_us INTEGER,
        last_error       TEXT
    );
    CREATE INDEX raw_tasks_due ON raw_tasks (queue, run_at) WHERE claimed_at IS NULL;
";

const INSERT: &str =
    "INSERT INTO raw_tasks (id, queue, task, run_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5)";

fn open(dir: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(dir.join("raw.db"))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "no WAL: {mode}");
    conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A 16-byte id ordered by creation, like backlite's UUID v7: milliseconds, then a sequence.
pub fn task_id() -> [u8; 16] {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&now_millis().to_be_bytes()[2..]);
    id[6..14].copy_from_slice(&SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    id
}

pub fn payload(n: usize) -> Vec<u8> {
    serde_json::to_vec(&Noop { n: n as u64 }).expect("a struct of one integer serializes")
}

/// Inserts `count` rows in one transaction.
fn insert(conn: &mut Connection, first: usize, count: usize) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        let now = now_millis();
        for n in first..first + count {
            insert.execute(params![&task_id()[..], "bench", payload(n), now, now])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// raw-W1: one row per transaction.
pub fn single_inserts(dir: &Path, sizes: Sizes) -> anyhow::Result<Figure> {
    let mut conn = open(dir)?;
    let n = sizes.single_saves;
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        insert(&mut conn, i, 1)?;
        latencies.push(t.elapsed());
    }
    Ok(Figure::new(
        "raw-W1",
        n,
        start.elapsed(),
        Some(&mut latencies),
    ))
}

/// raw-W2: `batches` transactions of `batch` rows.
pub fn batched_inserts(dir: &Path, sizes: Sizes) -> anyhow::Result<Figure> {
    let mut conn = open(dir)?;
    let mut latencies = Vec::with_capacity(sizes.batches);
    let start = Instant::now();
    for b in 0..sizes.batches {
        let t = Instant::now();
        insert(&mut conn, b * sizes.batch, sizes.batch)?;
        latencies.push(t.elapsed());
    }
    let n = sizes.batches * sizes.batch;
    Ok(Figure::new(
        "raw-W2",
        n,
        start.elapsed(),
        Some(&mut latencies),
    ))
}

/// raw-W3: `drain` rows inserted beforehand (not timed), then claimed, decoded and deleted in
/// batches until none is left.
pub fn drain(dir: &Path, sizes: Sizes) -> anyhow::Result<Figure> {
    let mut conn = open(dir)?;
    let n = sizes.drain;
    for first in (0..n).step_by(1000) {
        insert(&mut conn, first, 1000.min(n - first))?;
    }
    let mut ran = 0usize;
    let mut claimed: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(sizes.raw_claim);
    let cpu = ThreadCpu::now();
    let start = Instant::now();
    loop {
        let now = now_millis();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut claim = tx.prepare_cached(
                "UPDATE raw_tasks SET claimed_at = ?1 WHERE rowid IN (\
                     SELECT rowid FROM raw_tasks \
                     WHERE claimed_at IS NULL AND queue = ?2 AND run_at <= ?1 \
                     ORDER BY run_at LIMIT ?3) \
                 RETURNING id, task",
            )?;
            let mut rows = claim.query(params![now, "bench", sizes.raw_claim as i64])?;
            while let Some(row) = rows.next()? {
                claimed.push((row.get(0)?, row.get(1)?));
            }
        }
        tx.commit()?;
        if claimed.is_empty() {
            break;
        }
        for (_, task) in &claimed {
            let task: Noop = serde_json::from_slice(task)?;
            std::hint::black_box(task);
            ran += 1;
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM raw_tasks WHERE id = ?1")?;
            for (id, _) in claimed.drain(..) {
                delete.execute([id])?;
            }
        }
        tx.commit()?;
    }
    let elapsed = start.elapsed();
    cpu.report("raw-W3", n, elapsed);
    anyhow::ensure!(ran == n, "raw drain ran {ran} of {n}");
    Ok(Figure::new("raw-W3", n, elapsed, None))
}

/// raw-W4: `latency_samples` times, 5 ms apart: insert a task, claim it and decode it; the
/// time from before the insert to the decoded task.
pub fn latency(dir: &Path, sizes: Sizes) -> anyhow::Result<Figure> {
    let mut conn = open(dir)?;
    let samples = sizes.latency_samples;
    let mut latencies = Vec::with_capacity(samples);
    let start = Instant::now();
    for i in 0..samples {
        let next = start + std::time::Duration::from_millis(5 * i as u64);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let t = Instant::now();
        insert(&mut conn, i, 1)?;
        let now = now_millis();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (rowid, task): (i64, Vec<u8>) = tx
            .prepare_cached(
                "SELECT rowid, task FROM raw_tasks \
                 WHERE claimed_at IS NULL AND queue = ?1 AND run_at <= ?2 \
                 ORDER BY run_at LIMIT 1",
            )?
            .query_row(params!["bench", now], |r| Ok((r.get(0)?, r.get(1)?)))?;
        tx.prepare_cached("UPDATE raw_tasks SET claimed_at = ?1 WHERE rowid = ?2")?
            .execute(params![now, rowid])?;
        tx.commit()?;
        let task: Noop = serde_json::from_slice(&task)?;
        std::hint::black_box(task);
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    Ok(Figure::new(
        "raw-W4",
        samples,
        elapsed,
        Some(&mut latencies),
    ))
}
