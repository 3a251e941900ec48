//! Versioned schema migrations of the PostgreSQL driver.
//!
//! They run in one transaction under a transaction-level advisory lock keyed by the schema, so
//! that ten hosts starting at once migrate once: the first takes the lock and migrates, the
//! others wait for it and then find nothing left to do. Every statement names backlite's
//! schema, which `{schema}` stands for, and is created there if missing.

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`. Append only; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: tasks waiting or running, tasks retained after completion, and the identity that
    // `save_in` checks a transaction against. Times are milliseconds since the Unix epoch, as
    // on SQLite, so that both drivers hand the same records up; `seq` orders ties, which
    // SQLite's rowid does there.
    r#"
    CREATE TABLE {schema}.backlite_tasks (
        id               uuid PRIMARY KEY,
        seq              bigint GENERATED ALWAYS AS IDENTITY,
        queue            text NOT NULL,
        task             bytea NOT NULL,
        attempts         integer NOT NULL DEFAULT 0,
        run_at           bigint NOT NULL,
        created_at       bigint NOT NULL,
        claimed_at       bigint,
        lease_until      bigint,
        fence            bigint NOT NULL DEFAULT 0,
        last_executed_at bigint,
        last_duration_us bigint,
        last_error       text
    );
    -- Claims read this index in order, per queue; claimed rows leave it.
    CREATE INDEX backlite_tasks_due
        ON {schema}.backlite_tasks (queue, run_at, seq) WHERE claimed_at IS NULL;
    -- Releases, the running list and the running counts read claimed rows only.
    CREATE INDEX backlite_tasks_claimed
        ON {schema}.backlite_tasks (claimed_at, seq) INCLUDE (queue, lease_until)
        WHERE claimed_at IS NOT NULL;

    CREATE TABLE {schema}.backlite_tasks_completed (
        id               uuid PRIMARY KEY,
        seq              bigint GENERATED ALWAYS AS IDENTITY,
        queue            text NOT NULL,
        task             bytea,
        attempts         integer NOT NULL,
        succeeded        boolean NOT NULL,
        last_duration_us bigint NOT NULL,
        error            text,
        created_at       bigint NOT NULL,
        last_executed_at bigint NOT NULL,
        expires_at       bigint
    );
    CREATE INDEX backlite_tasks_completed_expires
        ON {schema}.backlite_tasks_completed (expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX backlite_tasks_completed_outcome
        ON {schema}.backlite_tasks_completed (succeeded, last_executed_at, seq);
    CREATE INDEX backlite_tasks_completed_queue
        ON {schema}.backlite_tasks_completed (queue, succeeded);

    CREATE TABLE {schema}.backlite_instance (
        id uuid PRIMARY KEY,
        one boolean NOT NULL DEFAULT true UNIQUE CHECK (one)
    );
    INSERT INTO {schema}.backlite_instance (id) VALUES (gen_random_uuid());
    "#,
    // Control and inspection: who holds a claim and when it was last renewed, a cancel asked
    // of a running task, the errors of the last attempts, cancelled outcomes, paused queues
    // and the live processes.
    r#"
    ALTER TABLE {schema}.backlite_tasks
        ADD COLUMN claimed_by          uuid,
        ADD COLUMN lease_renewed_at    bigint,
        ADD COLUMN cancel_requested_at bigint,
        ADD COLUMN errors              jsonb;
    ALTER TABLE {schema}.backlite_tasks_completed
        ADD COLUMN cancelled boolean NOT NULL DEFAULT false,
        ADD COLUMN errors    jsonb;
    UPDATE {schema}.backlite_tasks SET lease_renewed_at = claimed_at
        WHERE claimed_at IS NOT NULL;

    -- A row exists for a queue once it has been paused; resuming clears paused_at.
    CREATE TABLE {schema}.backlite_queues (
        name      text PRIMARY KEY,
        paused_at bigint
    );

    CREATE TABLE {schema}.backlite_processes (
        id           uuid PRIMARY KEY,
        host         text NOT NULL,
        pid          bigint NOT NULL,
        queues       jsonb NOT NULL,
        workers      integer NOT NULL,
        started_at   bigint NOT NULL,
        last_seen_at bigint NOT NULL
    );
    CREATE INDEX backlite_processes_last_seen
        ON {schema}.backlite_processes (last_seen_at);

    -- Counts per queue and outcome, cancelled included, from the index alone.
    DROP INDEX {schema}.backlite_tasks_completed_queue;
    CREATE INDEX backlite_tasks_completed_queue
        ON {schema}.backlite_tasks_completed (queue, succeeded, cancelled);
    "#,
    // 3: periodic tasks. One row per schedule, named by its queue (and an optional name): the
    // next tick it enqueues. A host enqueues a tick only by moving `next_run_at` from that
    // tick to the following one, in the transaction that inserts the tick's task, so the
    // ticks of a schedule are enqueued once across hosts, and survive every restart.
    r#"
    CREATE TABLE {schema}.backlite_schedules (
        name        text PRIMARY KEY,
        definition  text NOT NULL,
        next_run_at bigint NOT NULL
    );
    "#,
    // 4: priority and expiry of waiting tasks. The claim order becomes (priority descending, due
    // time, insertion), and the due index follows it, under the same name, so that the claim
    // still reads it in order. The sweep finds expired tasks through their own small index
    // (rows without an expiry are not in it).
    r#"
    ALTER TABLE {schema}.backlite_tasks
        ADD COLUMN priority   smallint NOT NULL DEFAULT 0,
        ADD COLUMN expires_at bigint;
    DROP INDEX {schema}.backlite_tasks_due;
    CREATE INDEX backlite_tasks_due
        ON {schema}.backlite_tasks (queue, priority DESC, run_at, seq)
        WHERE claimed_at IS NULL;
    CREATE INDEX backlite_tasks_expiring
        ON {schema}.backlite_tasks (queue, expires_at)
        WHERE expires_at IS NOT NULL AND claimed_at IS NULL;
    "#,
    // 5: one table for every task, waiting, running or ended, with its `state`: 0 waiting,
    // 1 running, 2 succeeded, 3 failed, 4 cancelled (docs/design/storage-layout.md). A task
    // that ends and is retained stays in its row instead of being moved to
    // `backlite_tasks_completed`, which goes. `expires_at` is the expiry of the row's current
    // state: a waiting task is not run after it, an ended one is deleted from then on. Every
    // index is partial on the states its queries name, so that retained rows reach none of
    // the claim's. `unique_key` and `unique_for` hold a task's uniqueness, which the unique
    // index enforces over waiting, running and succeeded tasks.
    //
    // In place: the new columns have constant defaults (no rewrite), the retained tasks join
    // the table (a live task wins over a retained copy of its id), and the indexes are built
    // after the copy. Claims keep their claimer, lease and fencing number. Completing a
    // retained task changes an indexed column, so it is not a HOT update and leaves a dead
    // tuple: the table is vacuumed after fewer changes than the default.
    r#"
    ALTER TABLE {schema}.backlite_tasks
        ALTER COLUMN task DROP NOT NULL,
        ADD COLUMN state       smallint NOT NULL DEFAULT 0,
        ADD COLUMN finished_at bigint,
        ADD COLUMN unique_key  bytea,
        ADD COLUMN unique_for  bigint;
    DROP INDEX {schema}.backlite_tasks_due;
    DROP INDEX {schema}.backlite_tasks_claimed;
    DROP INDEX {schema}.backlite_tasks_expiring;
    UPDATE {schema}.backlite_tasks SET state = 1 WHERE claimed_at IS NOT NULL;
    INSERT INTO {schema}.backlite_tasks (id, queue, state, task, attempts, run_at, created_at,
        expires_at, last_executed_at, last_duration_us, last_error, errors, finished_at)
    SELECT id, queue, CASE WHEN cancelled THEN 4 WHEN succeeded THEN 2 ELSE 3 END, task,
        attempts, last_executed_at, created_at, expires_at, last_executed_at,
        last_duration_us, error, errors, last_executed_at
    FROM {schema}.backlite_tasks_completed ORDER BY seq
    ON CONFLICT (id) DO NOTHING;
    DROP TABLE {schema}.backlite_tasks_completed;

    -- The claim reads this index in claim order, per queue; only waiting rows are in it.
    CREATE INDEX backlite_tasks_due
        ON {schema}.backlite_tasks (queue, priority DESC, run_at, seq) WHERE state = 0;
    -- Releases, the running list and the running counts read running rows only.
    CREATE INDEX backlite_tasks_running
        ON {schema}.backlite_tasks (claimed_at, seq) INCLUDE (queue, lease_until)
        WHERE state = 1;
    -- The sweep of waiting tasks past their expiry.
    CREATE INDEX backlite_tasks_expiring
        ON {schema}.backlite_tasks (queue, expires_at)
        WHERE state = 0 AND expires_at IS NOT NULL;
    -- Lists of ended tasks per state, most recently ended first.
    CREATE INDEX backlite_tasks_ended
        ON {schema}.backlite_tasks (state, finished_at, seq) WHERE state >= 2;
    -- Counts of ended tasks per queue and state.
    CREATE INDEX backlite_tasks_ended_queue
        ON {schema}.backlite_tasks (queue, state) WHERE state >= 2;
    -- The cleanup of ended tasks whose retention has expired.
    CREATE INDEX backlite_tasks_retention
        ON {schema}.backlite_tasks (expires_at) WHERE state >= 2 AND expires_at IS NOT NULL;
    -- One task per key among waiting, running and succeeded tasks.
    CREATE UNIQUE INDEX backlite_tasks_unique
        ON {schema}.backlite_tasks (unique_key) WHERE unique_key IS NOT NULL AND state <= 2;
    ALTER TABLE {schema}.backlite_tasks SET (autovacuum_vacuum_scale_factor = 0.02);
    "#,
    // 6: per-minute counters of each queue, for the UI's charts: outcomes, added by the
    // completion batch in its transaction, and the depth the maintenance loop samples. Keyed
    // by the minute first, so that a chart's range and the cleanup of old minutes are ranges
    // of the key.
    r#"
    CREATE TABLE {schema}.backlite_counters (
        minute    bigint NOT NULL,            -- ms since epoch of the minute's start
        queue     text NOT NULL,
        succeeded bigint NOT NULL DEFAULT 0,  -- tasks that succeeded
        failed    bigint NOT NULL DEFAULT 0,  -- tasks that failed or were cancelled
        retried   bigint NOT NULL DEFAULT 0,  -- attempts that failed and were retried
        waiting   bigint,                     -- sampled depth; NULL: no sample that minute
        running   bigint,
        PRIMARY KEY (minute, queue)
    );
    "#,
];

/// The newest schema version this build knows.
pub(crate) const LATEST: i32 = MIGRATIONS.len() as i32;

/// Brings `schema` to [`LATEST`], or refuses a schema written by a newer version. Returns the
/// database's identity.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<uuid::Uuid> {
    let map = super::map_error;
    let tx = client.transaction().await.map_err(map)?;
    // Keyed by the schema: migrations of other schemas on the same server do not wait.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('backlite migrations ' || $1::text))",
        &[&schema],
    )
    .await
    .map_err(map)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.backlite_schema (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(map)?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {schema}.backlite_schema"),
            &[],
        )
        .await
        .map_err(map)?
        .try_get(0)
        .map_err(map)?;
    if current > LATEST {
        return Err(Error::SchemaTooNew {
            found: i64::from(current),
            supported: i64::from(LATEST),
        });
    }
    for (version, sql) in (current + 1..).zip(&MIGRATIONS[current as usize..]) {
        tx.batch_execute(&sql.replace("{schema}", schema))
            .await
            .map_err(map)?;
        tx.execute(
            &format!("INSERT INTO {schema}.backlite_schema (version) VALUES ($1)"),
            &[&version],
        )
        .await
        .map_err(map)?;
        tracing::info!(version, schema, "backlite schema migrated");
    }
    let instance: uuid::Uuid = tx
        .query_one(&format!("SELECT id FROM {schema}.backlite_instance"), &[])
        .await
        .map_err(map)?
        .try_get(0)
        .map_err(map)?;
    tx.commit().await.map_err(map)?;
    Ok(instance)
}

#[cfg(test)]
mod tests {
    use tokio_postgres::NoTls;

    use super::{LATEST, MIGRATIONS, migrate};
    use crate::error::Error;

    /// A connection to the test server and a fresh schema name, or `None` without a server
    /// (outside CI).
    async fn connect() -> Option<(tokio_postgres::Client, String)> {
        let url = crate::storage::postgres::test_url()?;
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(connection);
        let schema = format!(
            "backlite_test_{}_{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            uuid::Uuid::now_v7().simple()
        );
        Some((client, schema))
    }

    /// A schema as version `version` left it, holding a waiting and a claimed task.
    async fn schema_at(client: &tokio_postgres::Client, schema: &str, version: usize) {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.backlite_schema (
                     version    integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );"
            ))
            .await
            .unwrap();
        // The tasks are written in the two-table layout of versions 1 to 4: a schema of a
        // later version gets them through the later migrations, as an upgrade would have.
        let seeded_at = version.min(4);
        apply(client, schema, 0..seeded_at).await;
        client
            .batch_execute(&format!(
                "INSERT INTO {schema}.backlite_tasks (id, queue, task, run_at, created_at)
                     VALUES ('00000000-0000-0000-0000-000000000001', 'a', '\\x7b7d', 5, 1);
                 INSERT INTO {schema}.backlite_tasks
                     (id, queue, task, run_at, created_at, claimed_at, lease_until, fence)
                     VALUES ('00000000-0000-0000-0000-000000000002', 'a', '\\x7b7d', 5, 1,
                             1000, 31000, 1);"
            ))
            .await
            .unwrap();
        if version >= 2 {
            // A claim made by version 2 records its last renewal, and a cancel asked of it.
            client
                .batch_execute(&format!(
                    "UPDATE {schema}.backlite_tasks SET lease_renewed_at = 1000, \
                     cancel_requested_at = 1500 \
                     WHERE id = '00000000-0000-0000-0000-000000000002'"
                ))
                .await
                .unwrap();
        }
        if version >= 4 {
            // Priority and expiry of a waiting task, from version 4 on.
            client
                .batch_execute(&format!(
                    "UPDATE {schema}.backlite_tasks SET priority = 3, expires_at = 9000 \
                     WHERE id = '00000000-0000-0000-0000-000000000001'"
                ))
                .await
                .unwrap();
        }
        // Retained tasks: one that succeeded with its payload, one that failed without it, and
        // a stale retained copy of the waiting task 1 (a live task wins over it).
        client
            .batch_execute(&format!(
                "INSERT INTO {schema}.backlite_tasks_completed (id, queue, task, attempts, \
                     succeeded, last_duration_us, error, created_at, last_executed_at, \
                     expires_at) VALUES \
                 ('00000000-0000-0000-0000-000000000003', 'a', '\\x7b7d', 1, true, 40, NULL, \
                     1, 2000, 90000), \
                 ('00000000-0000-0000-0000-000000000004', 'b', NULL, 3, false, 50, 'boom', 1, \
                     3000, NULL), \
                 ('00000000-0000-0000-0000-000000000001', 'a', NULL, 2, false, 60, 'old', 1, \
                     500, NULL)"
            ))
            .await
            .unwrap();
        if version >= 2 {
            client
                .batch_execute(&format!(
                    "UPDATE {schema}.backlite_tasks_completed SET errors = '[{{\"attempt\": 3}}]' \
                         WHERE id = '00000000-0000-0000-0000-000000000004'; \
                     INSERT INTO {schema}.backlite_tasks_completed (id, queue, task, attempts, \
                         succeeded, last_duration_us, error, created_at, last_executed_at, \
                         expires_at, cancelled) VALUES \
                     ('00000000-0000-0000-0000-000000000005', 'a', '\\x7b7d', 0, false, 0, \
                         'cancelled', 1, 4000, NULL, true)"
                ))
                .await
                .unwrap();
        }
        apply(client, schema, seeded_at..version).await;
    }

    /// Applies migrations `range` (0-based) to `schema`, recording each.
    async fn apply(client: &tokio_postgres::Client, schema: &str, range: std::ops::Range<usize>) {
        for n in range {
            client
                .batch_execute(&MIGRATIONS[n].replace("{schema}", schema))
                .await
                .unwrap();
            client
                .execute(
                    &format!("INSERT INTO {schema}.backlite_schema (version) VALUES ($1)"),
                    &[&(n as i32 + 1)],
                )
                .await
                .unwrap();
        }
    }

    /// Every earlier version migrates to the latest, keeping its tasks and their claims; a
    /// task claimed before leases were renewed counts as renewed when it was claimed; waiting
    /// and running tasks keep their state, priority and expiry (the default priority and none
    /// before version 4). Retained tasks join the one table in their ended state with what
    /// they kept, and a live task wins over a retained copy of its id.
    #[tokio::test]
    async fn every_earlier_version_migrates_with_its_tasks() {
        let Some((mut client, base)) = connect().await else {
            return;
        };
        for version in 1..LATEST as usize {
            let schema = format!("{base}_{version}");
            schema_at(&client, &schema, version).await;
            migrate(&mut client, &schema).await.unwrap();
            let latest: i32 = client
                .query_one(
                    &format!("SELECT MAX(version) FROM {schema}.backlite_schema"),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(latest, LATEST, "from version {version}");
            // state, claimed_at, lease_until, fence, lease_renewed_at,
            // (priority, expires_at, cancel_requested_at)
            type Live = (
                i16,
                Option<i64>,
                Option<i64>,
                i64,
                Option<i64>,
                (i16, Option<i64>, Option<i64>),
            );
            let rows: Vec<Live> = client
                .query(
                    &format!(
                        "SELECT state, claimed_at, lease_until, fence, lease_renewed_at, \
                         priority, expires_at, cancel_requested_at FROM {schema}.backlite_tasks \
                         WHERE state <= 1 ORDER BY id"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        (r.get(5), r.get(6), r.get(7)),
                    )
                })
                .collect();
            let (priority, expires_at) = if version >= 4 {
                (3, Some(9000))
            } else {
                (0, None)
            };
            let cancel = (version >= 2).then_some(1500);
            assert_eq!(
                rows,
                [
                    (0, None, None, 0, None, (priority, expires_at, None)),
                    (1, Some(1000), Some(31000), 1, Some(1000), (0, None, cancel))
                ],
                "from version {version}"
            );
            // id's last digit, state, payload, attempts, last error, errors, (end, duration,
            // retention expiry)
            type Ended = (
                String,
                i16,
                Option<Vec<u8>>,
                i32,
                Option<String>,
                Option<String>,
                (i64, i64, Option<i64>),
            );
            let ended: Vec<Ended> = client
                .query(
                    &format!(
                        "SELECT right(id::text, 1), state, task, attempts, last_error, \
                         errors::text, finished_at, last_duration_us, expires_at \
                         FROM {schema}.backlite_tasks WHERE state >= 2 ORDER BY id"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                        (r.get(6), r.get(7), r.get(8)),
                    )
                })
                .collect();
            let payload = Some(b"{}".to_vec());
            let mut expected: Vec<Ended> = vec![
                (
                    "3".into(),
                    2,
                    payload.clone(),
                    1,
                    None,
                    None,
                    (2000, 40, Some(90_000)),
                ),
                (
                    "4".into(),
                    3,
                    None,
                    3,
                    Some("boom".into()),
                    (version >= 2).then(|| r#"[{"attempt": 3}]"#.to_owned()),
                    (3000, 50, None),
                ),
            ];
            if version >= 2 {
                expected.push((
                    "5".into(),
                    4,
                    payload,
                    0,
                    Some("cancelled".into()),
                    None,
                    (4000, 0, None),
                ));
            }
            assert_eq!(ended, expected, "from version {version}");
            let schedules: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {schema}.backlite_schedules"),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(schedules, 0, "from version {version}");
            let old: Option<String> = client
                .query_one(
                    &format!("SELECT to_regclass('{schema}.backlite_tasks_completed')::text"),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(old, None, "from version {version}");
            let counters: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {schema}.backlite_counters"),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(counters, 0, "from version {version}: no counts yet");
        }
    }

    /// A schema written by a newer backlite is refused, and left as it was.
    #[tokio::test]
    async fn a_newer_schema_is_refused_and_left_alone() {
        let Some((mut client, schema)) = connect().await else {
            return;
        };
        migrate(&mut client, &schema).await.unwrap();
        client
            .execute(
                &format!("INSERT INTO {schema}.backlite_schema (version) VALUES (99)"),
                &[],
            )
            .await
            .unwrap();
        let result = migrate(&mut client, &schema).await;
        assert!(
            matches!(result, Err(Error::SchemaTooNew { found: 99, supported }) if supported == i64::from(LATEST)),
            "{result:?}"
        );
        let versions: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {schema}.backlite_schema"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(versions, i64::from(LATEST) + 1);
    }
}
