//! Versioned schema migrations of the SQLite driver.
//!
//! Each entry runs once, in order, inside the transaction that records it in
//! `backlite_schema`. The application may keep its own tables (and its own `user_version`) in
//! the same file, so backlite's tables are prefixed and its version lives in its own table.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`. Append only; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: tasks waiting or running, and tasks retained after completion.
    r#"
    CREATE TABLE backlite_tasks (
        id               BLOB PRIMARY KEY NOT NULL,  -- UUID v7
        queue            TEXT NOT NULL,
        task             BLOB NOT NULL,              -- payload, JSON
        attempts         INTEGER NOT NULL DEFAULT 0, -- completed attempts
        run_at           INTEGER NOT NULL,           -- ms since epoch; due from then on
        created_at       INTEGER NOT NULL,
        claimed_at       INTEGER,                    -- set while a worker holds the task
        last_executed_at INTEGER,
        last_duration_us INTEGER,
        last_error       TEXT
    );
    -- The claim reads this index in order, per queue; claimed rows leave it.
    CREATE INDEX backlite_tasks_due
        ON backlite_tasks (queue, run_at) WHERE claimed_at IS NULL;
    -- Release of tasks whose worker died scans only claimed rows.
    CREATE INDEX backlite_tasks_claimed
        ON backlite_tasks (claimed_at) WHERE claimed_at IS NOT NULL;

    CREATE TABLE backlite_tasks_completed (
        id               BLOB PRIMARY KEY NOT NULL,
        queue            TEXT NOT NULL,
        task             BLOB,                       -- NULL unless the payload is retained
        attempts         INTEGER NOT NULL,
        succeeded        INTEGER NOT NULL,
        last_duration_us INTEGER NOT NULL,
        error            TEXT,
        created_at       INTEGER NOT NULL,
        last_executed_at INTEGER NOT NULL,
        expires_at       INTEGER                     -- NULL: kept until deleted
    );
    CREATE INDEX backlite_tasks_completed_expires
        ON backlite_tasks_completed (expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX backlite_tasks_completed_outcome
        ON backlite_tasks_completed (succeeded, last_executed_at);
    "#,
    // 2: counts of retained tasks per queue and outcome (`Client::stats`, the UI's header on
    // every page) read this small index instead of every retained row and payload.
    r#"
    CREATE INDEX backlite_tasks_completed_queue
        ON backlite_tasks_completed (queue, succeeded);
    "#,
    // 3: leases and fencing. A claim records when its lease ends (processes with different
    // `release_after` share a file, and each claim keeps its own), and numbers the claim: every
    // write about a claimed task names the number, so a worker whose claim was released cannot
    // overwrite the next one's. Tasks claimed under version 2 keep that version's default lease.
    r#"
    ALTER TABLE backlite_tasks ADD COLUMN lease_until INTEGER;
    ALTER TABLE backlite_tasks ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
    UPDATE backlite_tasks SET lease_until = claimed_at + 600000, fence = 1
        WHERE claimed_at IS NOT NULL;
    "#,
    // Control and inspection: who holds a claim and when it was last renewed, a cancel asked
    // of a running task, the errors of the last attempts, cancelled outcomes, paused queues
    // and the live processes.
    r#"
    ALTER TABLE backlite_tasks ADD COLUMN claimed_by TEXT;          -- backlite_processes.id
    ALTER TABLE backlite_tasks ADD COLUMN lease_renewed_at INTEGER;
    ALTER TABLE backlite_tasks ADD COLUMN cancel_requested_at INTEGER;
    ALTER TABLE backlite_tasks ADD COLUMN errors TEXT;              -- JSON array, last 10 attempts
    ALTER TABLE backlite_tasks_completed ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE backlite_tasks_completed ADD COLUMN errors TEXT;
    UPDATE backlite_tasks SET lease_renewed_at = claimed_at WHERE claimed_at IS NOT NULL;

    -- A row exists for a queue once it has been paused; resuming clears paused_at.
    CREATE TABLE backlite_queues (
        name      TEXT PRIMARY KEY NOT NULL,
        paused_at INTEGER
    );

    CREATE TABLE backlite_processes (
        id           TEXT PRIMARY KEY NOT NULL,  -- UUID, new for each started client
        host         TEXT NOT NULL,
        pid          INTEGER NOT NULL,
        queues       TEXT NOT NULL,              -- JSON array of the served queues
        workers      INTEGER NOT NULL,
        started_at   INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL
    );
    CREATE INDEX backlite_processes_last_seen ON backlite_processes (last_seen_at);

    -- Counts per queue and outcome, cancelled included, from the index alone.
    DROP INDEX backlite_tasks_completed_queue;
    CREATE INDEX backlite_tasks_completed_queue
        ON backlite_tasks_completed (queue, succeeded, cancelled);
    "#,
    // 5: periodic tasks. One row per schedule, named by its queue (and an optional name): the
    // next tick it enqueues. A process enqueues a tick only by moving `next_run_at` from that
    // tick to the following one, in the transaction that inserts the tick's task, so the
    // ticks of a schedule are enqueued once across processes, and survive every restart.
    r#"
    CREATE TABLE backlite_schedules (
        name        TEXT PRIMARY KEY NOT NULL,
        definition  TEXT NOT NULL,     -- the schedule as written; a new one recomputes the next tick
        next_run_at INTEGER NOT NULL   -- ms since epoch
    );
    "#,
    // 6: priority and expiry of waiting tasks. The claim order becomes (priority descending, due
    // time, insertion), and the due index follows it, under the same name, so that the claim
    // still reads it in order. A task not claimed by `expires_at` never runs; the sweep finds
    // such tasks through their own small index (rows without an expiry are not in it).
    r#"
    ALTER TABLE backlite_tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE backlite_tasks ADD COLUMN expires_at INTEGER;   -- ms; NULL: never expires
    DROP INDEX backlite_tasks_due;
    CREATE INDEX backlite_tasks_due
        ON backlite_tasks (queue, priority DESC, run_at) WHERE claimed_at IS NULL;
    CREATE INDEX backlite_tasks_expiring
        ON backlite_tasks (queue, expires_at) WHERE expires_at IS NOT NULL AND claimed_at IS NULL;
    "#,
];

/// The newest schema version this build knows.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the schema to [`LATEST`], or refuses a database written by a newer version.
pub(crate) fn migrate(conn: &mut Connection, now: i64) -> rusqlite::Result<Result<()>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS backlite_schema (
             version    INTEGER PRIMARY KEY NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )?;
    let current: i64 = tx
        .query_row("SELECT MAX(version) FROM backlite_schema", [], |row| {
            row.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .unwrap_or(0);
    if current > LATEST {
        return Ok(Err(Error::SchemaTooNew {
            found: current,
            supported: LATEST,
        }));
    }
    for (version, sql) in (current + 1..).zip(&MIGRATIONS[current as usize..]) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO backlite_schema (version, applied_at) VALUES (?1, ?2)",
            (version, now),
        )?;
        tracing::info!(version, "backlite schema migrated");
    }
    tx.commit()?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{LATEST, MIGRATIONS, migrate};

    /// A database as version `version` of backlite left it: its migrations applied, one task
    /// waiting and one claimed at 1,000.
    fn database_at(version: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE backlite_schema (
                 version    INTEGER PRIMARY KEY NOT NULL,
                 applied_at INTEGER NOT NULL
             )",
        )
        .unwrap();
        for (n, sql) in MIGRATIONS[..version].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO backlite_schema VALUES (?1, 0)", [n as i64 + 1])
                .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO backlite_tasks (id, queue, task, run_at, created_at)
                 VALUES (x'01', 'a', x'7b7d', 5, 1);
             INSERT INTO backlite_tasks (id, queue, task, run_at, created_at, claimed_at)
                 VALUES (x'02', 'a', x'7b7d', 5, 1, 1000);",
        )
        .unwrap();
        if version >= 3 {
            // A claim made by version 3: a lease of its own and a fencing number.
            conn.execute_batch(
                "UPDATE backlite_tasks SET lease_until = 601000, fence = 1 WHERE id = x'02'",
            )
            .unwrap();
        }
        if version >= 4 {
            // A claim made by version 4 records its last renewal.
            conn.execute_batch(
                "UPDATE backlite_tasks SET lease_renewed_at = 1000 WHERE id = x'02'",
            )
            .unwrap();
        }
        conn
    }

    /// Every earlier version migrates to the latest, keeping its tasks: a task claimed under
    /// an earlier version gets that version's lease (10 minutes) and a first fencing number,
    /// and counts as renewed when it was claimed. Every task gets the default priority and no
    /// expiry.
    #[test]
    fn every_earlier_version_migrates_with_its_tasks() {
        for version in 1..LATEST as usize {
            let mut conn = database_at(version);
            migrate(&mut conn, 0).unwrap().unwrap();
            let latest: i64 = conn
                .query_row("SELECT MAX(version) FROM backlite_schema", [], |r| r.get(0))
                .unwrap();
            assert_eq!(latest, LATEST, "from version {version}");
            type Row = (
                Vec<u8>,
                Option<i64>,
                Option<i64>,
                i64,
                Option<i64>,
                (i64, Option<i64>),
            );
            let rows: Vec<Row> = conn
                .prepare(
                    "SELECT id, claimed_at, lease_until, fence, lease_renewed_at, priority, \
                     expires_at FROM backlite_tasks ORDER BY id",
                )
                .unwrap()
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        (r.get(5)?, r.get(6)?),
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(
                rows,
                [
                    (vec![1], None, None, 0, None, (0, None)),
                    (vec![2], Some(1000), Some(601_000), 1, Some(1000), (0, None)),
                ],
                "from version {version}"
            );
            let schedules: i64 = conn
                .query_row("SELECT count(*) FROM backlite_schedules", [], |r| r.get(0))
                .unwrap();
            assert_eq!(schedules, 0, "from version {version}");
        }
    }
}
