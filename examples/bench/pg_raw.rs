//! The raw PostgreSQL baseline: tokio-postgres doing the minimum SQL a durable queue needs, in
//! the workload's fresh schema, on a table of the same shape as backlite's `backlite_tasks`
//! with only the index a claim needs. Every statement is prepared once per connection and
//! commits on its own (one round trip, no `BEGIN`/`COMMIT`).
//!
//! - raw-W1: one `INSERT .. VALUES (..)` per task, one after the other;
//! - raw-W6, raw-W6n: `savers` connections inserting concurrently, one task per statement;
//!   raw-W6n also notifies in each (`WITH t AS (INSERT .. RETURNING 1) SELECT pg_notify(..)
//!   FROM t`), as a queue whose workers LISTEN must;
//! - raw-W2: one `INSERT .. SELECT * FROM unnest($1::uuid[], ..)` per batch;
//! - raw-W3: 4 connections, each until nothing is left: `UPDATE raw_tasks SET claimed_at = $now
//!   WHERE id IN (SELECT id .. WHERE claimed_at IS NULL AND queue = $q AND run_at <= $now ORDER
//!   BY run_at LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id, task`, each payload decoded, then
//!   `DELETE FROM raw_tasks WHERE id = ANY($1)` for the batch;
//! - raw-W4: one connection LISTENs; another inserts a task and notifies in one statement,
//!   samples 5 ms apart; on each notification the listening connection claims one task
//!   (`UPDATE .. WHERE id = (SELECT id .. LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING task`) and
//!   decodes it. The time from before the insert to the decoded task.

use std::time::{Duration, Instant};

use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use super::db::connect;
use super::raw::{now_millis, payload, task_id};
use super::workloads::Noop;
use super::{Figure, Sizes};

/// Tasks per claim of raw-W3, and per claim that backlite's drain is compared to.
const CLAIM: i64 = 100;

/// The table, in schema `{s}`: backlite's columns, the claim's index only.
const TABLE: &str = "
    CREATE TABLE IF NOT EXISTS {s}.raw_tasks (
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
    CREATE INDEX IF NOT EXISTS raw_tasks_due ON {s}.raw_tasks (queue, run_at)
        WHERE claimed_at IS NULL;
";

/// A connection on the workload's schema, with the statements of the baseline prepared.
struct Raw {
    client: Client,
    insert: Statement,
    insert_notify: Statement,
    insert_many: Statement,
    claim: Statement,
    claim_one: Statement,
    delete: Statement,
    channel: String,
}

impl Raw {
    async fn open(url: &str, schema: &str) -> anyhow::Result<Raw> {
        Raw::on(connect(url).await?, schema).await
    }

    async fn on(client: Client, schema: &str) -> anyhow::Result<Raw> {
        let s = format!("\"{schema}\"");
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s}; {}",
                TABLE.replace("{s}", &s)
            ))
            .await?;
        let t = format!("{s}.raw_tasks");
        let insert = format!("INSERT INTO {t} (id, queue, task, run_at, created_at)");
        let due = "claimed_at IS NULL AND queue = $2 AND run_at <= $1 ORDER BY run_at";
        Ok(Raw {
            insert: client
                .prepare(&format!("{insert} VALUES ($1, $2, $3, $4, $5)"))
                .await?,
            insert_notify: client
                .prepare(&format!(
                    "WITH t AS ({insert} VALUES ($1, $2, $3, $4, $5) RETURNING 1) \
                     SELECT pg_notify($6, '') FROM t"
                ))
                .await?,
            insert_many: client
                .prepare(&format!(
                    "{insert} SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], \
                     $4::int8[], $5::int8[])"
                ))
                .await?,
            claim: client
                .prepare(&format!(
                    "UPDATE {t} SET claimed_at = $1 WHERE id IN ( \
                         SELECT id FROM {t} WHERE {due} LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     RETURNING id, task"
                ))
                .await?,
            claim_one: client
                .prepare(&format!(
                    "UPDATE {t} SET claimed_at = $1 WHERE id = ( \
                         SELECT id FROM {t} WHERE {due} LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     RETURNING task"
                ))
                .await?,
            delete: client
                .prepare(&format!("DELETE FROM {t} WHERE id = ANY($1)"))
                .await?,
            channel: format!("raw {schema}"),
            client,
        })
    }

    async fn insert_one(&self, n: usize, notify: bool) -> anyhow::Result<()> {
        let id = uuid::Uuid::from_bytes(task_id());
        let now = now_millis();
        let task = payload(n);
        if notify {
            self.client
                .execute(
                    &self.insert_notify,
                    &[&id, &"bench", &task, &now, &now, &self.channel],
                )
                .await?;
        } else {
            self.client
                .execute(&self.insert, &[&id, &"bench", &task, &now, &now])
                .await?;
        }
        Ok(())
    }

    async fn insert_batch(&self, first: usize, count: usize) -> anyhow::Result<()> {
        let now = now_millis();
        let ids: Vec<uuid::Uuid> = (0..count)
            .map(|_| uuid::Uuid::from_bytes(task_id()))
            .collect();
        let queues = vec!["bench"; count];
        let tasks: Vec<Vec<u8>> = (first..first + count).map(payload).collect();
        let times = vec![now; count];
        self.client
            .execute(&self.insert_many, &[&ids, &queues, &tasks, &times, &times])
            .await?;
        Ok(())
    }
}

/// raw-W1: one task per statement, one after the other.
pub async fn single_inserts(url: &str, schema: &str, sizes: Sizes) -> anyhow::Result<Figure> {
    let raw = Raw::open(url, schema).await?;
    let n = sizes.single_saves;
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        raw.insert_one(i, false).await?;
        latencies.push(t.elapsed());
    }
    Ok(Figure::new(
        "raw-W1",
        n,
        start.elapsed(),
        Some(&mut latencies),
    ))
}

/// raw-W6 (`notify` false) and raw-W6n: `savers` connections, each inserting `saves_each` tasks
/// one per statement.
pub async fn concurrent_inserts(
    url: &str,
    schema: &str,
    sizes: Sizes,
    notify: bool,
) -> anyhow::Result<Figure> {
    let mut connections = Vec::with_capacity(sizes.savers);
    for _ in 0..sizes.savers {
        connections.push(Raw::open(url, schema).await?);
    }
    let start = Instant::now();
    let savers: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(s, raw)| {
            let each = sizes.saves_each;
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(each);
                for i in 0..each {
                    let t = Instant::now();
                    raw.insert_one(s * each + i, notify).await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for saver in savers {
        latencies.extend(saver.await??);
    }
    let n = sizes.savers * sizes.saves_each;
    let name = if notify { "raw-W6n" } else { "raw-W6" };
    Ok(Figure::new(name, n, start.elapsed(), Some(&mut latencies)))
}

/// raw-W2: `batches` statements of `batch` tasks.
pub async fn batched_inserts(url: &str, schema: &str, sizes: Sizes) -> anyhow::Result<Figure> {
    let raw = Raw::open(url, schema).await?;
    let mut latencies = Vec::with_capacity(sizes.batches);
    let start = Instant::now();
    for b in 0..sizes.batches {
        let t = Instant::now();
        raw.insert_batch(b * sizes.batch, sizes.batch).await?;
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

/// raw-W3: `drain` tasks inserted beforehand (not timed), then claimed 100 at a time, decoded
/// and deleted by 4 connections until none is left.
pub async fn drain(url: &str, schema: &str, sizes: Sizes) -> anyhow::Result<Figure> {
    let workers = 4;
    let n = sizes.drain;
    let mut connections = Vec::with_capacity(workers);
    for _ in 0..workers {
        connections.push(Raw::open(url, schema).await?);
    }
    for first in (0..n).step_by(1000) {
        connections[0]
            .insert_batch(first, 1000.min(n - first))
            .await?;
    }
    connections[0]
        .client
        .batch_execute(&format!("ANALYZE \"{schema}\".raw_tasks"))
        .await?;
    let start = Instant::now();
    let drainers: Vec<_> = connections
        .into_iter()
        .map(|raw| {
            tokio::spawn(async move {
                let mut ran = 0usize;
                loop {
                    let rows = raw
                        .client
                        .query(&raw.claim, &[&now_millis(), &"bench", &CLAIM])
                        .await?;
                    if rows.is_empty() {
                        return anyhow::Ok(ran);
                    }
                    let mut ids = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let task: Noop = serde_json::from_slice(row.try_get::<_, &[u8]>(1)?)?;
                        std::hint::black_box(task);
                        ids.push(row.try_get::<_, uuid::Uuid>(0)?);
                        ran += 1;
                    }
                    raw.client.execute(&raw.delete, &[&ids]).await?;
                }
            })
        })
        .collect();
    let mut ran = 0;
    for drainer in drainers {
        ran += drainer.await??;
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(ran == n, "raw drain ran {ran} of {n}");
    Ok(Figure::new("raw-W3", n, elapsed, None).workers(workers))
}

/// raw-W4: `latency_samples` times, 5 ms apart: insert a task with a NOTIFY; the listening
/// connection claims and decodes it. The time from before the insert to the decoded task.
pub async fn latency(url: &str, schema: &str, sizes: Sizes) -> anyhow::Result<Figure> {
    let inserter = Raw::open(url, schema).await?;
    // The listening connection: its messages are read here, so that notifications reach the
    // claimer as they arrive.
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let (notified, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if notified.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("raw-W4: the listening connection ended: {e}");
                    return;
                }
            }
        }
    });
    let listener = Raw::on(client, schema).await?;
    listener
        .client
        .batch_execute(&format!("LISTEN \"{}\"", listener.channel))
        .await?;
    let (decoded, mut done) = tokio::sync::mpsc::unbounded_channel();
    let claimer = tokio::spawn(async move {
        while notifications.recv().await.is_some() {
            let row = listener
                .client
                .query_opt(&listener.claim_one, &[&now_millis(), &"bench"])
                .await?;
            if let Some(row) = row {
                let task: Noop = serde_json::from_slice(row.try_get::<_, &[u8]>(0)?)?;
                std::hint::black_box(task);
                if decoded.send(Instant::now()).is_err() {
                    break;
                }
            }
        }
        anyhow::Ok(())
    });
    let samples = sizes.latency_samples;
    let mut latencies = Vec::with_capacity(samples);
    let start = Instant::now();
    for i in 0..samples {
        let next = start + Duration::from_millis(5 * i as u64);
        tokio::time::sleep_until(next.into()).await;
        let t = Instant::now();
        inserter.insert_one(i, true).await?;
        let Some(at) = tokio::time::timeout(Duration::from_secs(10), done.recv()).await? else {
            // The claimer ended: its error says why.
            claimer.await??;
            anyhow::bail!("raw-W4: the claimer ended");
        };
        latencies.push(at.saturating_duration_since(t));
    }
    let elapsed = start.elapsed();
    drop(done);
    claimer.abort();
    anyhow::ensure!(latencies.len() == samples, "raw-W4: lost samples");
    Ok(Figure::new(
        "raw-W4",
        samples,
        elapsed,
        Some(&mut latencies),
    ))
}
