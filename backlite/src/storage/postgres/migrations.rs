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
        for (n, sql) in MIGRATIONS[..version].iter().enumerate() {
            client
                .batch_execute(&sql.replace("{schema}", schema))
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
            // A claim made by version 2 records its last renewal.
            client
                .batch_execute(&format!(
                    "UPDATE {schema}.backlite_tasks SET lease_renewed_at = 1000 \
                     WHERE id = '00000000-0000-0000-0000-000000000002'"
                ))
                .await
                .unwrap();
        }
    }

    /// Every earlier version migrates to the latest, keeping its tasks and their claims; a
    /// task claimed before leases were renewed counts as renewed when it was claimed. Every
    /// task gets the default priority and no expiry.
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
            // claimed_at, lease_until, fence, lease_renewed_at, (priority, expires_at)
            type Row = (
                Option<i64>,
                Option<i64>,
                i64,
                Option<i64>,
                (i16, Option<i64>),
            );
            let rows: Vec<Row> = client
                .query(
                    &format!(
                        "SELECT claimed_at, lease_until, fence, lease_renewed_at, priority, \
                         expires_at FROM {schema}.backlite_tasks ORDER BY id"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), (r.get(4), r.get(5))))
                .collect();
            assert_eq!(
                rows,
                [
                    (None, None, 0, None, (0, None)),
                    (Some(1000), Some(31000), 1, Some(1000), (0, None))
                ],
                "from version {version}"
            );
            let schedules: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {schema}.backlite_schedules"),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(schedules, 0, "from version {version}");
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
