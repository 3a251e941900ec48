//! Inserting tasks that carry a unique key, in a transaction of the writer's or of the
//! application's (`save_in`): tokio-postgres here, sqlx in `sqlx_tx.rs`, the same statements.
//!
//! The partial unique index `backlite_tasks_unique (unique_key) WHERE unique_key IS NOT NULL
//! AND state <= 2` holds at most one waiting, running or succeeded task per key, in every
//! process. A batch goes in rounds of up to three statements:
//!
//! 1. **insert** every task, `ON CONFLICT (unique_key) .. DO NOTHING RETURNING id`: a task
//!    whose key is held, by a committed task or by one earlier in the batch, is not stored.
//!    An insert that meets a key another transaction has just inserted waits for that
//!    transaction, and skips the task if it commits. The rows go in key order (then batch
//!    order), so that two batches that share keys wait for each other in one order and never
//!    deadlock on them. A batch of new keys ends here;
//! 2. **holders**: for each key not inserted, the task holding it, and whether it lets go:
//!    it succeeded and its window (`finished_at + unique_for`) ended by the new task's
//!    `created_at`. Each statement sees what committed before it began (read committed), so
//!    the holder is there, unless it ended in between (failed, cancelled, deleted);
//! 3. **release**: the holders that let go lose their key (`unique_key = NULL`), locked in key
//!    order. Their tasks, and those whose holder ended in between, go to another round.

use std::collections::{HashMap, HashSet};

use super::{InsertColumns, map_error, task_id};
use crate::error::{Error, Result};
use crate::storage::NewTask;
use crate::task::TaskId;

/// How often a batch is tried again when holders let go or end between its insert and their
/// lookup: a second round is common (a window ended), more need other transactions to end
/// holders in that very instant.
pub(super) const ROUNDS: usize = 16;

/// The statements, for the schema (already quoted) they are written for.
pub(super) struct UniqueSql {
    pub(super) insert: String,
    pub(super) holders: String,
    pub(super) release: String,
}

impl UniqueSql {
    pub(super) fn new(schema: &str) -> UniqueSql {
        let tasks = format!("{schema}.backlite_tasks");
        UniqueSql {
            insert: format!(
                "INSERT INTO {tasks} \
                     (id, queue, task, run_at, created_at, priority, expires_at, unique_key, \
                      unique_for) \
                 SELECT id, queue, task, run_at, created_at, priority, expires_at, unique_key, \
                     unique_for \
                 FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::int8[], $5::int8[], \
                     $6::int2[], $7::int8[], $8::bytea[], $9::int8[]) WITH ORDINALITY \
                     AS u(id, queue, task, run_at, created_at, priority, expires_at, \
                          unique_key, unique_for, ord) \
                 ORDER BY unique_key, ord \
                 ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state <= 2 \
                 DO NOTHING RETURNING id"
            ),
            holders: format!(
                "SELECT t.unique_key, t.id, \
                     t.state = 2 AND t.finished_at + COALESCE(t.unique_for, 0) <= u.at \
                 FROM unnest($1::bytea[], $2::int8[]) AS u(key, at) \
                 JOIN {tasks} AS t ON t.unique_key = u.key \
                 WHERE t.unique_key IS NOT NULL AND t.state <= 2"
            ),
            // Locked in key order, as the insert takes keys, so that two batches releasing
            // the same holders never wait for each other in a cycle.
            release: format!(
                "UPDATE {tasks} AS t SET unique_key = NULL \
                 FROM (SELECT s.id FROM {tasks} AS s \
                       WHERE s.id = ANY($1::uuid[]) AND s.state = 2 \
                         AND s.unique_key IS NOT NULL \
                       ORDER BY s.unique_key FOR UPDATE OF s) AS old \
                 WHERE t.id = old.id"
            ),
        }
    }
}

/// One row when the schema's identity is `$1`: `save_in` inserts only where it is.
pub(super) fn instance_check(schema: &str) -> String {
    format!("SELECT 1 FROM {schema}.backlite_instance WHERE id = $1")
}

/// One round's outcome: the ids known so far, and the tasks to insert again.
pub(super) struct Round {
    pending: Vec<(usize, NewTask)>,
    ids: Vec<Option<TaskId>>,
}

/// What the holders' lookup found for a key: the holder, and whether it lets go.
pub(super) type Holders = HashMap<Vec<u8>, (TaskId, bool)>;

impl Round {
    pub(super) fn new(tasks: Vec<NewTask>) -> Round {
        Round {
            ids: vec![None; tasks.len()],
            pending: tasks.into_iter().enumerate().collect(),
        }
    }

    /// The tasks still to insert, as the insert takes them; `None` when none is left.
    pub(super) fn columns(&self) -> Option<InsertColumns> {
        if self.pending.is_empty() {
            return None;
        }
        Some(InsertColumns::new(
            self.pending.iter().map(|(_, t)| t.clone()).collect(),
        ))
    }

    /// The keys of the tasks that the insert did not store, each with its task's
    /// `created_at`, as the holders' lookup takes them.
    pub(super) fn missing(&self, inserted: &HashSet<TaskId>) -> (Vec<Vec<u8>>, Vec<i64>) {
        self.pending
            .iter()
            .filter(|(_, t)| !inserted.contains(&t.id))
            .filter_map(|(_, t)| t.unique_key.clone().map(|key| (key, t.created_at)))
            .unzip()
    }

    /// Records the inserted tasks and the live holders found; keeps the rest for another
    /// round. Returns the holders that let go, for the release.
    pub(super) fn settle(
        &mut self,
        inserted: &HashSet<TaskId>,
        holders: &Holders,
    ) -> Result<Vec<uuid::Uuid>> {
        let mut left = Vec::new();
        let mut release = Vec::new();
        for (i, task) in std::mem::take(&mut self.pending) {
            if inserted.contains(&task.id) {
                self.ids[i] = Some(task.id);
                continue;
            }
            let Some(key) = &task.unique_key else {
                // A task without a key conflicts with nothing this statement skips.
                return Err(Error::Storage(
                    format!("task {} was neither inserted nor refused", task.id).into(),
                ));
            };
            match holders.get(key) {
                Some((holder, false)) => self.ids[i] = Some(*holder),
                Some((holder, true)) => {
                    let holder = uuid::Uuid::from_bytes(*holder.as_bytes());
                    if !release.contains(&holder) {
                        release.push(holder);
                    }
                    left.push((i, task));
                }
                None => left.push((i, task)),
            }
        }
        self.pending = left;
        Ok(release)
    }

    pub(super) fn finish(self) -> Result<Vec<TaskId>> {
        if !self.pending.is_empty() {
            return Err(Error::Storage(
                format!(
                    "the holders of {} unique keys kept ending while equal tasks were added",
                    self.pending.len()
                )
                .into(),
            ));
        }
        Ok(self.ids.into_iter().flatten().collect())
    }
}

/// Inserts `tasks`, some of them with a unique key, in `tx`; the id stored for each.
pub(super) async fn insert_in_tx(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    tasks: Vec<NewTask>,
) -> Result<Vec<TaskId>> {
    let sql = UniqueSql::new(schema);
    let mut round = Round::new(tasks);
    for _ in 0..ROUNDS {
        let Some(columns) = round.columns() else {
            break;
        };
        let inserted: HashSet<TaskId> = tx
            .query(&sql.insert, &columns.params())
            .await
            .map_err(map_error)?
            .iter()
            .map(|row| row.try_get(0).map(task_id))
            .collect::<std::result::Result<_, _>>()
            .map_err(map_error)?;
        let (keys, at) = round.missing(&inserted);
        let mut holders = Holders::new();
        if !keys.is_empty() {
            for row in tx
                .query(&sql.holders, &[&keys, &at])
                .await
                .map_err(map_error)?
            {
                let key: Vec<u8> = row.try_get(0).map_err(map_error)?;
                let id: uuid::Uuid = row.try_get(1).map_err(map_error)?;
                let lets_go: bool = row.try_get(2).map_err(map_error)?;
                holders.insert(key, (task_id(id), lets_go));
            }
        }
        let release = round.settle(&inserted, &holders)?;
        if !release.is_empty() {
            tx.execute(&sql.release, &[&release])
                .await
                .map_err(map_error)?;
        }
    }
    round.finish()
}

/// `n` drivers, each with its own pool, on one fresh schema, for the conformance suite's
/// concurrent adders; `None` without a test database (see `open_for_test`).
#[cfg(test)]
pub(crate) async fn open_shared_for_test(
    queues: Vec<&'static str>,
    n: usize,
) -> Option<Vec<super::PgDriver>> {
    let url = super::test_url()?;
    let first = super::open_for_test(queues.clone()).await?;
    let schema = first.statements.schema.trim_matches('"').to_owned();
    let mut drivers = vec![first];
    for _ in 1..n {
        let options = super::Options {
            url: url.clone(),
            schema: schema.clone(),
            pool_size: 4,
            poll_interval: None,
            queues: queues.clone(),
            save_in_wakeup: super::SaveInWakeup::InTransaction,
        };
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let driver = super::PgDriver::open(options, notify)
            .await
            .expect("open PostgreSQL")
            .0;
        drivers.push(driver);
    }
    Some(drivers)
}

#[cfg(test)]
mod plans {
    use crate::storage::conformance::{LEASE, done};
    use crate::storage::unique_conformance::keyed;
    use crate::storage::{Driver, Retain};

    /// The holders' lookup reads the unique index, the release the primary key, never a
    /// pass over the table: a held key costs a lookup, however many tasks wait or are
    /// retained.
    #[tokio::test]
    async fn unique_statements_read_the_unique_index() {
        let Some(d) = super::super::open_for_test(vec!["a"]).await else {
            return;
        };
        let payload = format!("{{\"body\":\"{}\"}}", "x".repeat(300));
        for round in 0..4 {
            let tasks: Vec<_> = (0..2_000)
                .map(|i| {
                    let mut task = keyed("a", &format!("k{round}-{i}"), 1_000, 1_000);
                    task.payload = payload.clone().into_bytes();
                    task
                })
                .collect();
            d.task_insert_many(tasks).await.unwrap();
        }
        // Half of them succeeded and retained: the ended rows a take-over must not walk.
        let claimed = d.task_claim(None, 4_000, LEASE, Some(1_000)).await.unwrap();
        let ends = claimed
            .iter()
            .map(|t| {
                done(
                    t.id,
                    t.token,
                    None,
                    Some(Retain {
                        payload: false,
                        expires_at: None,
                    }),
                )
            })
            .collect();
        d.task_complete_many(ends).await.unwrap();
        let conn = d.pool.get().await.unwrap();
        conn.batch_execute(&format!("ANALYZE {}.backlite_tasks", d.statements.schema))
            .await
            .unwrap();
        let sql = super::UniqueSql::new(&d.statements.schema);
        let keys: Vec<Vec<u8>> = vec![b"k0-1".to_vec(), b"k3-7".to_vec()];
        let at: Vec<i64> = vec![2_000, 2_000];
        let ids: Vec<uuid::Uuid> = vec![uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
        for (text, params, index) in [
            (
                &sql.holders,
                vec![&keys as &(dyn tokio_postgres::types::ToSql + Sync), &at],
                "backlite_tasks_unique",
            ),
            (
                &sql.release,
                vec![&ids as &(dyn tokio_postgres::types::ToSql + Sync)],
                "backlite_tasks_pkey",
            ),
        ] {
            let statement = conn.prepare(&format!("EXPLAIN {text}")).await.unwrap();
            let plan: Vec<String> = conn
                .query(&statement, &params)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains(index), "{text}\n{plan}");
            assert!(
                !plan.contains("Seq Scan on backlite_tasks"),
                "{text}\n{plan}"
            );
        }
    }
}
