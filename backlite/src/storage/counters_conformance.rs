//! The conformance suite of the per-minute counters (`counters_sample`, `counters_read`,
//! `counters_delete_before`, and the counts `task_complete_many` adds), which every driver
//! passes. Instantiated with
//! `counters_conformance!(module_name, async fn open(queues) -> impl Driver)`.

macro_rules! counters_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use crate::storage::conformance::{LEASE, done, new_task};
            use crate::storage::counters::{Depth, MINUTE, MinuteCounts};
            use crate::storage::{ClaimedTask, Completion, Driver, Next, Retain};

            async fn open(queues: &[&'static str]) -> Option<impl Driver> {
                ($open)(queues.to_vec()).await
            }

            /// The outcome of `task`'s attempt, started at `at` and run for 1.5 ms.
            fn outcome(task: &ClaimedTask, at: i64, error: Option<&str>, next: Next) -> Completion {
                // The queues the suite names, as the static names a processor's configuration
                // gives.
                let queue = ["a", "b"].into_iter().find(|q| *q == task.queue);
                Completion {
                    queue,
                    executed_at: at,
                    next,
                    ..done(task.id, task.token, error, None)
                }
            }

            fn ended(cancelled: bool) -> Next {
                Next::Done {
                    retain: Some(Retain {
                        payload: false,
                        expires_at: None,
                    }),
                    cancelled,
                }
            }

            fn counts(
                minute: i64,
                queue: &str,
                [succeeded, failed, retried]: [u64; 3],
                depth: Option<(u64, u64)>,
            ) -> MinuteCounts {
                MinuteCounts {
                    minute,
                    queue: queue.to_owned(),
                    succeeded,
                    failed,
                    retried,
                    depth: depth.map(|(waiting, running)| Depth { waiting, running }),
                }
            }

            /// Inserts and claims `n` tasks of each queue.
            async fn claimed(
                d: &impl Driver,
                queues: &[&'static str],
                n: usize,
            ) -> Vec<ClaimedTask> {
                let tasks = queues
                    .iter()
                    .flat_map(|q| (0..n).map(move |i| new_task(q, 10, &i.to_string())))
                    .collect();
                d.task_insert_many(tasks).await.unwrap();
                d.task_claim(None, queues.len() * n, LEASE, Some(100))
                    .await
                    .unwrap()
            }

            #[tokio::test]
            async fn a_completion_batch_adds_its_outcomes_per_minute_and_queue() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                let t = claimed(&d, &["a", "b"], 4).await;
                let (a, b): (Vec<_>, Vec<_>) = t.iter().partition(|t| t.queue == "a");
                let m1 = 5 * MINUTE;
                d.task_complete_many(vec![
                    outcome(a[0], m1 + 10, None, ended(false)),
                    outcome(a[1], m1 + 20, Some("boom"), ended(false)),
                    outcome(a[2], m1 + 30, Some("boom"), Next::Retry { run_at: m1 }),
                    outcome(a[3], m1 + 40, None, Next::Snooze { run_at: m1 }),
                    outcome(b[0], m1 + 50, Some("cancelled"), ended(true)),
                    // Ends in the next minute (1.5 ms after it started).
                    outcome(b[1], m1 + MINUTE - 1, None, ended(false)),
                ])
                .await
                .unwrap();
                // A later batch of the same minute adds to it; an outcome without a queue
                // (sent only to be refused) counts nothing.
                d.task_complete_many(vec![
                    outcome(b[2], m1 + 100, None, ended(false)),
                    Completion {
                        queue: None,
                        ..outcome(b[3], m1 + 110, None, ended(false))
                    },
                ])
                .await
                .unwrap();
                assert_eq!(
                    d.counters_read(0).await.unwrap(),
                    [
                        counts(m1, "a", [1, 1, 1], None),
                        counts(m1, "b", [1, 1, 0], None),
                        counts(m1 + MINUTE, "b", [1, 0, 0], None),
                    ]
                );
                // The read starts at its minute.
                assert_eq!(
                    d.counters_read(m1 + 1).await.unwrap(),
                    [counts(m1 + MINUTE, "b", [1, 0, 0], None)]
                );
            }

            #[tokio::test]
            async fn a_sample_sets_the_minutes_depth_and_keeps_its_outcomes() {
                let Some(d) = open(&["a"]).await else { return };
                let t = claimed(&d, &["a"], 1).await;
                let m = 7 * MINUTE;
                let depth = |waiting, running| Depth { waiting, running };
                d.counters_sample(
                    m,
                    vec![("a".into(), depth(5, 1)), ("idle".into(), depth(0, 0))],
                )
                .await
                .unwrap();
                d.task_complete_many(vec![outcome(&t[0], m + 10, None, ended(false))])
                    .await
                    .unwrap();
                // A later sample of the minute (this process's or another's) replaces it.
                d.counters_sample(m, vec![("a".into(), depth(3, 2))])
                    .await
                    .unwrap();
                d.counters_sample(m + MINUTE, vec![("a".into(), depth(9, 0))])
                    .await
                    .unwrap();
                assert_eq!(
                    d.counters_read(0).await.unwrap(),
                    [
                        counts(m, "a", [1, 0, 0], Some((3, 2))),
                        counts(m, "idle", [0, 0, 0], Some((0, 0))),
                        counts(m + MINUTE, "a", [0, 0, 0], Some((9, 0))),
                    ]
                );
            }

            #[tokio::test]
            async fn old_minutes_are_deleted() {
                let Some(d) = open(&["a"]).await else { return };
                for minute in 1..=4 {
                    d.counters_sample(minute * MINUTE, vec![("a".into(), Depth::default())])
                        .await
                        .unwrap();
                }
                assert_eq!(d.counters_delete_before(3 * MINUTE).await.unwrap(), 2);
                let left: Vec<i64> = d
                    .counters_read(0)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|c| c.minute)
                    .collect();
                assert_eq!(left, [3 * MINUTE, 4 * MINUTE]);
                assert_eq!(d.counters_delete_before(3 * MINUTE).await.unwrap(), 0);
            }

            /// Batches stored at once, on every connection the driver has, lose no count.
            #[tokio::test]
            async fn concurrent_batches_add_up() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                let t = claimed(&d, &["a", "b"], 20).await;
                assert_eq!(t.len(), 40);
                let m = 9 * MINUTE;
                let batches = t.chunks(5).map(|chunk| {
                    let batch = chunk
                        .iter()
                        .map(|t| outcome(t, m, None, ended(false)))
                        .collect();
                    d.task_complete_many(batch)
                });
                for stored in futures_join(batches.collect()).await {
                    stored.unwrap();
                }
                assert_eq!(
                    d.counters_read(m).await.unwrap(),
                    [
                        counts(m, "a", [20, 0, 0], None),
                        counts(m, "b", [20, 0, 0], None)
                    ]
                );
            }

            /// Awaits every future at once.
            async fn futures_join<T: Send + 'static>(futures: Vec<crate::BoxFuture<T>>) -> Vec<T> {
                let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
                let mut out = Vec::new();
                for h in handles {
                    out.push(h.await.unwrap());
                }
                out
            }
        }
    };
}

pub(crate) use counters_conformance;
