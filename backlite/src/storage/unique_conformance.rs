//! The conformance suite of unique keys, which every driver passes as it passes
//! `driver_conformance!`: an insert whose key is held by a waiting, running or succeeded task
//! stores nothing and answers the holder's id; a succeeded holder lets go when its window
//! ends, and stays (as a tombstone) when its queue retains nothing; failed and cancelled
//! tasks hold nothing; a retry never makes two holders; and all of it under concurrent
//! inserts on several connections. Instantiated here for SQLite (a file, `:memory:`) and
//! PostgreSQL, with `unique_conformance!(module, open, open_shared)`: `open(queues)` is a
//! driver on a fresh database, `open_shared(queues, n)` up to `n` drivers on one fresh
//! database (one only for `:memory:`, which no second connection can reach).

use crate::storage::conformance::new_task;
use crate::storage::{Millis, NewTask};

/// A task of `queue` with the key `key`, blocking for `window` ms after it succeeds, added
/// at `at`.
pub(crate) fn keyed(queue: &'static str, key: &str, window: i64, at: Millis) -> NewTask {
    NewTask {
        created_at: at,
        unique_key: Some(key.as_bytes().to_vec()),
        unique_for: Some(window),
        ..new_task(queue, at, "{}")
    }
}

macro_rules! unique_conformance {
    ($name:ident, $open:expr, $open_shared:expr) => {
        #[cfg(test)]
        mod $name {
            use std::collections::HashSet;
            use std::sync::Arc;

            use crate::storage::conformance::{LEASE, done, new_task};
            use crate::storage::unique_conformance::keyed;
            use crate::storage::{CancelRetention, Cancelled, Driver, Retain};
            use crate::task::{TaskId, TaskStatus};

            async fn open(queues: &[&'static str]) -> Option<impl Driver> {
                ($open)(queues.to_vec()).await
            }

            fn keep(payload: bool, expires_at: Option<i64>) -> Option<Retain> {
                Some(Retain {
                    payload,
                    expires_at,
                })
            }

            /// Claims the due tasks at `at` and ends task `id` with `error` (`None`: success),
            /// retained as `retain` says, at `at`; the others claimed go back to waiting.
            async fn run(
                d: &impl Driver,
                id: TaskId,
                at: i64,
                error: Option<&str>,
                retain: Option<Retain>,
            ) {
                let claimed = d.task_claim(None, 100, LEASE, Some(at)).await.unwrap();
                let (mine, others): (Vec<_>, Vec<_>) =
                    claimed.into_iter().partition(|t| t.id == id);
                assert_eq!(mine.len(), 1, "task {id} is due at {at}");
                d.task_unclaim_many(others.iter().map(|t| (t.id, t.token)).collect())
                    .await
                    .unwrap();
                let mut end = done(id, mine[0].token, error, retain);
                end.executed_at = at;
                d.task_complete_many(vec![end]).await.unwrap();
            }

            /// While the holder waits, and while it runs, an equal task is not stored and
            /// the insert answers the holder's id; so does a task equal to one earlier in the
            /// same batch. Tasks without a key, and keys of other values, go in as usual.
            #[tokio::test]
            async fn a_held_key_answers_the_holder() {
                let Some(d) = open(&["a"]).await else {
                    return;
                };
                let first = keyed("a", "k", 0, 1_000);
                assert_eq!(
                    d.task_insert_many(vec![first.clone()]).await.unwrap(),
                    [first.id]
                );
                let again = keyed("a", "k", 0, 1_000);
                assert_eq!(
                    d.task_insert_many(vec![again.clone()]).await.unwrap(),
                    [first.id]
                );
                assert_eq!(d.task_status(again.id).await.unwrap(), TaskStatus::NotFound);

                let (other, plain) = (keyed("a", "other", 0, 1_000), new_task("a", 5_000, "{}"));
                let (twin, other_twin) = (keyed("a", "k2", 0, 1_000), keyed("a", "k2", 0, 1_000));
                let batch = vec![
                    twin.clone(),
                    other.clone(),
                    other_twin.clone(),
                    plain.clone(),
                    keyed("a", "k", 0, 1_000),
                ];
                assert_eq!(
                    d.task_insert_many(batch).await.unwrap(),
                    [twin.id, other.id, twin.id, plain.id, first.id]
                );

                // Running: still held.
                let claimed = d.task_claim(None, 10, LEASE, Some(1_000)).await.unwrap();
                assert!(claimed.iter().any(|t| t.id == first.id));
                assert_eq!(
                    d.task_insert_many(vec![keyed("a", "k", 0, 1_000)])
                        .await
                        .unwrap(),
                    [first.id]
                );
                // Only the task due later waits: every keyed one was claimed.
                let waiting = d.task_list_waiting("a").await.unwrap();
                let waiting: Vec<TaskId> = waiting.iter().map(|t| t.id).collect();
                assert_eq!(waiting, [plain.id]);
            }

            /// A holder that failed, was cancelled, or expired lets an equal task in; so does
            /// one that succeeded when it has no window and its queue keeps nothing.
            #[tokio::test]
            async fn ended_holders_without_a_window_let_go() {
                let Some(d) = open(&["a"]).await else {
                    return;
                };
                let failed = keyed("a", "failed", 0, 1_000);
                d.task_insert_many(vec![failed.clone()]).await.unwrap();
                run(&d, failed.id, 1_000, Some("boom"), keep(true, None)).await;
                let after = keyed("a", "failed", 0, 1_000);
                assert_eq!(
                    d.task_insert_many(vec![after.clone()]).await.unwrap(),
                    [after.id]
                );
                assert_eq!(d.task_status(failed.id).await.unwrap(), TaskStatus::Failed);

                let cancelled = keyed("a", "cancelled", 0, 1_000);
                d.task_insert_many(vec![cancelled.clone()]).await.unwrap();
                let retention = CancelRetention { known: vec![] };
                assert!(matches!(
                    d.task_cancel(cancelled.id, retention, Some(1_000))
                        .await
                        .unwrap(),
                    Cancelled::Waiting
                ));
                let after = keyed("a", "cancelled", 0, 1_000);
                assert_eq!(
                    d.task_insert_many(vec![after.clone()]).await.unwrap(),
                    [after.id]
                );

                // Succeeded with no window, in a queue that keeps nothing: deleted.
                let ok = keyed("a", "ok", 0, 2_000);
                d.task_insert_many(vec![ok.clone()]).await.unwrap();
                run(&d, ok.id, 3_000, None, None).await;
                assert_eq!(d.task_status(ok.id).await.unwrap(), TaskStatus::NotFound);
                let after = keyed("a", "ok", 0, 3_000);
                assert_eq!(
                    d.task_insert_many(vec![after.clone()]).await.unwrap(),
                    [after.id]
                );
            }

            /// A succeeded holder with a window blocks equal tasks added before
            /// `finished_at + window`; one added at that time or later is stored, and the
            /// holder keeps its row without its key. A queue that retains nothing keeps a
            /// tombstone (succeeded, no payload) that the retention sweep deletes at the
            /// window's end; a queue that retains for less keeps the task until then.
            #[tokio::test]
            async fn a_succeeded_holder_blocks_for_its_window() {
                let Some(d) = open(&["a"]).await else {
                    return;
                };
                let holder = keyed("a", "k", 500, 1_000);
                d.task_insert_many(vec![holder.clone()]).await.unwrap();
                run(&d, holder.id, 2_000, None, None).await;
                assert_eq!(
                    d.task_status(holder.id).await.unwrap(),
                    TaskStatus::Succeeded
                );
                let info = d.task_info(holder.id).await.unwrap().unwrap();
                assert_eq!((info.payload, info.expires_at), (None, Some(2_500)));

                let early = keyed("a", "k", 500, 2_499);
                assert_eq!(d.task_insert_many(vec![early]).await.unwrap(), [holder.id]);
                // At the window's end the key is free: the first of two equal tasks in a
                // batch takes it, the second meets the first.
                let (late, twin) = (keyed("a", "k", 500, 2_500), keyed("a", "k", 500, 2_500));
                assert_eq!(
                    d.task_insert_many(vec![late.clone(), twin]).await.unwrap(),
                    [late.id, late.id]
                );
                // The next equal task meets the new holder, not the old one.
                assert_eq!(
                    d.task_insert_many(vec![keyed("a", "k", 500, 2_600)])
                        .await
                        .unwrap(),
                    [late.id]
                );
                assert_eq!(d.completed_delete_expired(2_500).await.unwrap(), 1);
                assert_eq!(
                    d.task_status(holder.id).await.unwrap(),
                    TaskStatus::NotFound
                );

                // Retained for 100 ms after, blocking for 500: kept 500.
                let retained = keyed("a", "r", 500, 1_000);
                d.task_insert_many(vec![retained.clone()]).await.unwrap();
                run(&d, retained.id, 3_000, None, keep(true, Some(3_100))).await;
                let info = d.task_info(retained.id).await.unwrap().unwrap();
                assert_eq!(info.expires_at, Some(3_500));
                assert!(info.payload.is_some());
                // A failed task with a window holds nothing, and keeps its retention.
                let failed = keyed("a", "f", 500, 1_000);
                d.task_insert_many(vec![failed.clone()]).await.unwrap();
                run(&d, failed.id, 3_000, Some("boom"), keep(true, Some(3_100))).await;
                let info = d.task_info(failed.id).await.unwrap().unwrap();
                assert_eq!(info.expires_at, Some(3_100));
                let after = keyed("a", "f", 500, 3_000);
                assert_eq!(
                    d.task_insert_many(vec![after.clone()]).await.unwrap(),
                    [after.id]
                );
            }

            /// Retrying a retained task whose key another task holds does nothing; once the
            /// key is free it retries. Retrying a queue retries one task per free key.
            #[tokio::test]
            async fn a_retry_never_makes_two_holders() {
                let Some(d) = open(&["a"]).await else {
                    return;
                };
                let failed = keyed("a", "k", 0, 1_000);
                d.task_insert_many(vec![failed.clone()]).await.unwrap();
                run(&d, failed.id, 1_000, Some("boom"), keep(true, None)).await;
                let holder = keyed("a", "k", 0, 1_000);
                d.task_insert_many(vec![holder.clone()]).await.unwrap();
                assert!(!d.completed_retry(failed.id, Some(2_000)).await.unwrap());
                assert_eq!(d.task_status(failed.id).await.unwrap(), TaskStatus::Failed);
                assert_eq!(
                    d.completed_retry_queue("a".into(), Some(2_000))
                        .await
                        .unwrap(),
                    0
                );

                // The holder fails too: now two retained failed tasks share the key.
                run(&d, holder.id, 2_000, Some("boom"), keep(true, None)).await;
                assert_eq!(
                    d.completed_retry_queue("a".into(), Some(3_000))
                        .await
                        .unwrap(),
                    1
                );
                let waiting = d.task_list_waiting("a").await.unwrap();
                assert_eq!(waiting.len(), 1);
                let retried = waiting[0].id;
                assert!(retried == failed.id || retried == holder.id);
                let other = if retried == failed.id {
                    holder.id
                } else {
                    failed.id
                };
                assert!(!d.completed_retry(other, Some(3_000)).await.unwrap());
                // A new add meets the retried one.
                assert_eq!(
                    d.task_insert_many(vec![keyed("a", "k", 0, 3_000)])
                        .await
                        .unwrap(),
                    [retried]
                );

                // A succeeded holder past its window lets a retry take the key.
                let (ended, ok) = (keyed("a", "w", 100, 1_000), keyed("a", "w", 100, 1_000));
                d.task_insert_many(vec![ended.clone()]).await.unwrap();
                run(&d, ended.id, 4_000, Some("boom"), keep(true, None)).await;
                assert_eq!(d.task_insert_many(vec![ok.clone()]).await.unwrap(), [ok.id]);
                run(&d, ok.id, 5_000, None, keep(false, None)).await;
                assert!(!d.completed_retry(ended.id, Some(5_099)).await.unwrap());
                assert!(d.completed_retry(ended.id, Some(5_100)).await.unwrap());
                assert_eq!(d.task_status(ended.id).await.unwrap(), TaskStatus::Pending);
                assert_eq!(d.task_status(ok.id).await.unwrap(), TaskStatus::Succeeded);
            }

            /// Adders on several connections insert the same keys at once, in different
            /// orders and batches: each key is stored once, and every adder is answered the
            /// id of the one stored.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_adders_store_each_key_once() {
                const KEYS: usize = 40;
                const ADDERS: usize = 8;
                let drivers: Option<Vec<_>> = ($open_shared)(vec!["a"], 4).await;
                let Some(drivers) = drivers else {
                    return;
                };
                let drivers: Vec<Arc<_>> = drivers.into_iter().map(Arc::new).collect();
                let mut adders = Vec::new();
                for adder in 0..ADDERS {
                    let d = drivers[adder % drivers.len()].clone();
                    adders.push(tokio::spawn(async move {
                        // Each adder its own order, in batches of 1 to 5.
                        let mut keys: Vec<usize> = (0..KEYS).collect();
                        keys.rotate_left(adder * 7 % KEYS);
                        if adder % 2 == 1 {
                            keys.reverse();
                        }
                        let mut answered = vec![None; KEYS];
                        for chunk in keys.chunks(adder % 5 + 1) {
                            let tasks: Vec<_> = chunk
                                .iter()
                                .map(|k| keyed("a", &format!("key-{k}"), 0, 1_000))
                                .collect();
                            let ids = d.task_insert_many(tasks).await.unwrap();
                            for (k, id) in chunk.iter().zip(ids) {
                                answered[*k] = Some(id);
                            }
                        }
                        answered
                    }));
                }
                let mut answers = Vec::new();
                for adder in adders {
                    answers.push(adder.await.unwrap());
                }
                let stored = drivers[0].task_list_waiting("a").await.unwrap();
                assert_eq!(stored.len(), KEYS, "one task per key");
                let stored: HashSet<TaskId> = stored.iter().map(|t| t.id).collect();
                for k in 0..KEYS {
                    let first = answers[0][k].unwrap();
                    assert!(stored.contains(&first));
                    for answer in &answers {
                        assert_eq!(answer[k], Some(first), "key {k}");
                    }
                }
            }
        }
    };
}

unique_conformance!(
    sqlite_file,
    |queues| async move { Some(crate::storage::sqlite::open_for_test(false, queues)) },
    |queues: Vec<&'static str>, n: usize| async move {
        // Several drivers, each with its own writer thread and connection, on one file.
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let path = dir.join("unique.db").to_string_lossy().into_owned();
        let drivers = (0..n)
            .map(|_| {
                let options = crate::storage::sqlite::Options {
                    path: path.clone(),
                    synchronous: crate::storage::sqlite::Synchronous::Normal,
                    busy_timeout: std::time::Duration::from_secs(10),
                    queues: queues.clone(),
                };
                crate::storage::sqlite::SqliteDriver::open(
                    options,
                    std::sync::Arc::new(tokio::sync::Notify::new()),
                )
                .expect("open")
                .0
            })
            .collect::<Vec<_>>();
        Some(drivers)
    }
);

unique_conformance!(
    sqlite_memory,
    |queues| async move { Some(crate::storage::sqlite::open_for_test(true, queues)) },
    |queues: Vec<&'static str>, _n: usize| async move {
        // No second connection reaches an in-memory database: the adders share one driver.
        Some(vec![crate::storage::sqlite::open_for_test(true, queues)])
    }
);

#[cfg(feature = "postgres")]
unique_conformance!(
    postgres,
    |queues| async move { crate::storage::postgres::open_for_test(queues).await },
    |queues: Vec<&'static str>, n: usize| async move {
        crate::storage::postgres::unique::open_shared_for_test(queues, n).await
    }
);
