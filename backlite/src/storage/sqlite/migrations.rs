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
    // 7: one table for every task, waiting, running or ended, with its `state`: 0 waiting,
    // 1 running, 2 succeeded, 3 failed, 4 cancelled (docs/design/storage-layout.md). A task
    // that ends and is retained stays in its row (its state, `finished_at`, retention expiry
    // change; its payload is dropped unless retained), instead of being copied to
    // `backlite_tasks_completed`, which goes. `expires_at` is the expiry of the row's current
    // state: a waiting task is not run after it, an ended one is deleted from then on. Every
    // index is partial on the states its queries name, so that retained rows reach none of
    // the claim's. `unique_key` and `unique_for` hold a task's uniqueness, which the unique
    // index enforces over waiting, running and succeeded tasks.
    //
    // `ALTER TABLE` cannot make `task` nullable, so the table is rebuilt: the retained tasks
    // first (the oldest first), then the live ones, a live task winning over a retained one of
    // the same id. Claims keep their claimer, lease and fencing number, so the outcomes of
    // attempts running across the upgrade still apply.
    r#"
    CREATE TABLE backlite_tasks_v7 (
        id                  BLOB PRIMARY KEY NOT NULL,  -- UUID v7
        queue               TEXT NOT NULL,
        state               INTEGER NOT NULL DEFAULT 0, -- 0 waiting, 1 running, 2 succeeded,
                                                        -- 3 failed, 4 cancelled
        task                BLOB,                       -- payload, JSON; NULL once ended unless
                                                        -- retained with it
        attempts            INTEGER NOT NULL DEFAULT 0, -- completed attempts
        run_at              INTEGER NOT NULL,           -- ms since epoch; due from then on
        created_at          INTEGER NOT NULL,
        priority            INTEGER NOT NULL DEFAULT 0,
        expires_at          INTEGER,                    -- waiting: never run after; ended: deleted
                                                        -- from then on; NULL: never
        claimed_at          INTEGER,                    -- set while running
        lease_until         INTEGER,
        fence               INTEGER NOT NULL DEFAULT 0,
        claimed_by          TEXT,                       -- backlite_processes.id
        lease_renewed_at    INTEGER,
        cancel_requested_at INTEGER,
        last_executed_at    INTEGER,
        last_duration_us    INTEGER,
        last_error          TEXT,
        errors              TEXT,                       -- JSON array, last 10 attempts
        finished_at         INTEGER,                    -- when it ended (state >= 2)
        unique_key          BLOB,                       -- NULL: not unique
        unique_for          INTEGER                     -- ms a succeeded task keeps its key
    );
    INSERT INTO backlite_tasks_v7 (id, queue, state, task, attempts, run_at, created_at,
        expires_at, last_executed_at, last_duration_us, last_error, errors, finished_at)
    SELECT id, queue, CASE WHEN cancelled <> 0 THEN 4 WHEN succeeded <> 0 THEN 2 ELSE 3 END,
        task, attempts, last_executed_at, created_at, expires_at, last_executed_at,
        last_duration_us, error, errors, last_executed_at
    FROM backlite_tasks_completed ORDER BY rowid;
    INSERT OR REPLACE INTO backlite_tasks_v7 (id, queue, state, task, attempts, run_at,
        created_at, priority, expires_at, claimed_at, lease_until, fence, claimed_by,
        lease_renewed_at, cancel_requested_at, last_executed_at, last_duration_us, last_error,
        errors)
    SELECT id, queue, CASE WHEN claimed_at IS NULL THEN 0 ELSE 1 END, task, attempts, run_at,
        created_at, priority, expires_at, claimed_at, lease_until, fence, claimed_by,
        lease_renewed_at, cancel_requested_at, last_executed_at, last_duration_us, last_error,
        errors
    FROM backlite_tasks ORDER BY rowid;
    DROP TABLE backlite_tasks;
    DROP TABLE backlite_tasks_completed;
    ALTER TABLE backlite_tasks_v7 RENAME TO backlite_tasks;

    -- The claim reads this index in claim order, per queue; only waiting rows are in it.
    CREATE INDEX backlite_tasks_due
        ON backlite_tasks (queue, priority DESC, run_at) WHERE state = 0;
    -- Releases, renewals' reads, the running lists and counts: running rows only.
    CREATE INDEX backlite_tasks_running
        ON backlite_tasks (claimed_at) WHERE state = 1;
    -- The sweep of waiting tasks past their expiry.
    CREATE INDEX backlite_tasks_expiring
        ON backlite_tasks (queue, expires_at) WHERE state = 0 AND expires_at IS NOT NULL;
    -- Lists of ended tasks per state, most recently ended first.
    CREATE INDEX backlite_tasks_ended
        ON backlite_tasks (state, finished_at) WHERE state >= 2;
    -- Counts of ended tasks per queue and state, from the index alone.
    CREATE INDEX backlite_tasks_ended_queue
        ON backlite_tasks (queue, state) WHERE state >= 2;
    -- The cleanup of ended tasks whose retention has expired. Its predicate names the columns
    -- only an end sets, not `state`, so that claims and retries, which change `state`, leave
    -- it alone.
    CREATE INDEX backlite_tasks_retention
        ON backlite_tasks (expires_at) WHERE finished_at IS NOT NULL AND expires_at IS NOT NULL;
    -- One task per key among waiting, running and succeeded tasks.
    CREATE UNIQUE INDEX backlite_tasks_unique
        ON backlite_tasks (unique_key) WHERE unique_key IS NOT NULL AND state <= 2;
    "#,
    // 8: per-minute counters of each queue, for the UI's charts: outcomes, added by the
    // completion batch in its transaction, and the depth the maintenance loop samples. Keyed
    // by the minute first, so that a chart's range and the cleanup of old minutes are ranges
    // of the key.
    r#"
    CREATE TABLE backlite_counters (
        minute    INTEGER NOT NULL,            -- ms since epoch of the minute's start
        queue     TEXT NOT NULL,
        succeeded INTEGER NOT NULL DEFAULT 0,  -- tasks that succeeded
        failed    INTEGER NOT NULL DEFAULT 0,  -- tasks that failed or were cancelled
        retried   INTEGER NOT NULL DEFAULT 0,  -- attempts that failed and were retried
        waiting   INTEGER,                     -- sampled depth; NULL: no sample that minute
        running   INTEGER,
        PRIMARY KEY (minute, queue)
    ) WITHOUT ROWID;
    "#,
    // 9: five secondary indexes on the tasks table where 7 had seven. Every write of a task
    // opens and tests each index whose predicate names a column it changes, and each one
    // removed made the drains (W3, W3r) about 7% faster. The lists and counts of ended tasks
    // share one index, keyed by queue first (lists across queues walk it queue by queue, as
    // those of waiting tasks walk the due index); the two expiry sweeps share one, on the
    // column alone, whose predicate no claim changes.
    r#"
    DROP INDEX backlite_tasks_ended;
    DROP INDEX backlite_tasks_ended_queue;
    DROP INDEX backlite_tasks_expiring;
    DROP INDEX backlite_tasks_retention;
    -- Ended tasks per queue and state, most recently ended last: the lists, counts, retries
    -- and purges of ended tasks.
    CREATE INDEX backlite_tasks_ended
        ON backlite_tasks (queue, state, finished_at) WHERE state >= 2;
    -- Both expiries: of a waiting task (not run after it) and of an ended one (deleted then).
    CREATE INDEX backlite_tasks_expires
        ON backlite_tasks (expires_at) WHERE expires_at IS NOT NULL;
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
        // The tasks are written in the two-table layout of versions 1 to 6: a database of a
        // later version gets them through the later migrations, as an upgrade would have.
        let seeded_at = version.min(6);
        let apply = |range: std::ops::Range<usize>| {
            for n in range {
                conn.execute_batch(MIGRATIONS[n]).unwrap();
                conn.execute("INSERT INTO backlite_schema VALUES (?1, 0)", [n as i64 + 1])
                    .unwrap();
            }
        };
        apply(0..seeded_at);
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
            // A claim made by version 4 records its last renewal, and a cancel asked of it.
            conn.execute_batch(
                "UPDATE backlite_tasks SET lease_renewed_at = 1000, cancel_requested_at = 1500 \
                 WHERE id = x'02'",
            )
            .unwrap();
        }
        if seeded_at >= 6 {
            // Priority and expiry of a waiting task, from version 6 on.
            conn.execute_batch(
                "UPDATE backlite_tasks SET priority = 3, expires_at = 9000 WHERE id = x'01'",
            )
            .unwrap();
        }
        // Retained tasks: one that succeeded with its payload, one that failed without it, and
        // a stale retained copy of the waiting task x'01' (a live task wins over it).
        conn.execute_batch(
            "INSERT INTO backlite_tasks_completed (id, queue, task, attempts, succeeded, \
                 last_duration_us, error, created_at, last_executed_at, expires_at) VALUES \
                 (x'03', 'a', x'7b7d', 1, 1, 40, NULL, 1, 2000, 90000), \
                 (x'04', 'b', NULL, 3, 0, 50, 'boom', 1, 3000, NULL), \
                 (x'01', 'a', NULL, 2, 0, 60, 'old', 1, 500, NULL);",
        )
        .unwrap();
        if version >= 4 {
            conn.execute_batch(
                "UPDATE backlite_tasks_completed SET errors = '[{\"attempt\":3}]' \
                     WHERE id = x'04'; \
                 INSERT INTO backlite_tasks_completed (id, queue, task, attempts, succeeded, \
                     last_duration_us, error, created_at, last_executed_at, expires_at, \
                     cancelled) VALUES (x'05', 'a', x'7b7d', 0, 0, 0, 'cancelled', 1, 4000, \
                     NULL, 1);",
            )
            .unwrap();
        }
        apply(seeded_at..version);
        conn
    }

    /// Every earlier version migrates to the latest, keeping its tasks: a task claimed under
    /// an earlier version gets that version's lease (10 minutes) and a first fencing number,
    /// and counts as renewed when it was claimed; waiting and running tasks keep their state,
    /// priority and expiry (the default priority and none before version 6). Retained tasks
    /// join the one table in their ended state with what they kept (payload, error, errors,
    /// retention expiry, end time), and a live task wins over a retained copy of its id.
    #[test]
    fn every_earlier_version_migrates_with_its_tasks() {
        for version in 1..LATEST as usize {
            let mut conn = database_at(version);
            migrate(&mut conn, 0).unwrap().unwrap();
            let latest: i64 = conn
                .query_row("SELECT MAX(version) FROM backlite_schema", [], |r| r.get(0))
                .unwrap();
            assert_eq!(latest, LATEST, "from version {version}");
            type Live = (
                Vec<u8>,
                i64,
                Option<i64>,
                Option<i64>,
                i64,
                Option<i64>,
                (i64, Option<i64>, Option<i64>),
            );
            let rows: Vec<Live> = conn
                .prepare(
                    "SELECT id, state, claimed_at, lease_until, fence, lease_renewed_at, \
                     priority, expires_at, cancel_requested_at FROM backlite_tasks \
                     WHERE state <= 1 ORDER BY id",
                )
                .unwrap()
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        (r.get(6)?, r.get(7)?, r.get(8)?),
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let (priority, expires_at) = if version >= 6 {
                (3, Some(9000))
            } else {
                (0, None)
            };
            let cancel = (version >= 4).then_some(1500);
            assert_eq!(
                rows,
                [
                    (
                        vec![1],
                        0,
                        None,
                        None,
                        0,
                        None,
                        (priority, expires_at, None)
                    ),
                    (
                        vec![2],
                        1,
                        Some(1000),
                        Some(601_000),
                        1,
                        Some(1000),
                        (0, None, cancel)
                    ),
                ],
                "from version {version}"
            );
            // id, state, payload, attempts, last error, errors, end, duration, retention expiry
            type Ended = (
                Vec<u8>,
                i64,
                Option<Vec<u8>>,
                i64,
                Option<String>,
                Option<String>,
                (i64, i64, Option<i64>),
            );
            let ended: Vec<Ended> = conn
                .prepare(
                    "SELECT id, state, task, attempts, last_error, errors, finished_at, \
                     last_duration_us, expires_at FROM backlite_tasks WHERE state >= 2 \
                     ORDER BY id",
                )
                .unwrap()
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        (r.get(6)?, r.get(7)?, r.get(8)?),
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let payload = Some(b"{}".to_vec());
            let mut expected: Vec<Ended> = vec![
                (
                    vec![3],
                    2,
                    payload.clone(),
                    1,
                    None,
                    None,
                    (2000, 40, Some(90_000)),
                ),
                (
                    vec![4],
                    3,
                    None,
                    3,
                    Some("boom".into()),
                    (version >= 4).then(|| r#"[{"attempt":3}]"#.to_owned()),
                    (3000, 50, None),
                ),
            ];
            if version >= 4 {
                expected.push((
                    vec![5],
                    4,
                    payload,
                    0,
                    Some("cancelled".into()),
                    None,
                    (4000, 0, None),
                ));
            }
            assert_eq!(ended, expected, "from version {version}");
            let schedules: i64 = conn
                .query_row("SELECT count(*) FROM backlite_schedules", [], |r| r.get(0))
                .unwrap();
            assert_eq!(schedules, 0, "from version {version}");
            let old: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE name = 'backlite_tasks_completed'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(old, 0, "from version {version}");
            let counters: i64 = conn
                .query_row("SELECT count(*) FROM backlite_counters", [], |r| r.get(0))
                .unwrap();
            assert_eq!(counters, 0, "from version {version}: no counts yet");
        }
    }
}
