//! The conformance suite of the claim order by priority (`task_claim`, `task_next_due`), which
//! every driver must pass as it passes `driver_conformance!`. Instantiated with
//! `priority_conformance!(module_name, async fn open(queues) -> impl Driver)`.

macro_rules! priority_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use crate::storage::conformance::{LEASE, new_task};
            use crate::storage::{Driver, NewTask};
            use std::time::Duration;

            async fn open(queues: &[&'static str]) -> Option<impl Driver> {
                ($open)(queues.to_vec()).await
            }

            fn at(queue: &'static str, run_at: i64, priority: i16, payload: &str) -> NewTask {
                NewTask {
                    priority,
                    ..new_task(queue, run_at, payload)
                }
            }

            async fn claim_payloads(d: &impl Driver, limit: usize, now: i64) -> Vec<String> {
                d.task_claim(None, limit, LEASE, Some(now))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|t| String::from_utf8(t.payload).unwrap())
                    .collect()
            }

            /// Priority first (higher first), then due time, then insertion; tasks not yet
            /// due of a higher priority do not hide the due ones of a lower one.
            #[tokio::test]
            async fn claims_by_priority_then_due_time_then_insertion() {
                let Some(d) = open(&["a"]).await else {
                    return;
                };
                d.task_insert_many(vec![
                    at("a", 10, 0, "p0-10"),
                    at("a", 5, 0, "p0-5"),
                    at("a", 30, 5, "p5-30"),
                    at("a", 20, 5, "p5-20"),
                    at("a", 20, 5, "p5-20b"),
                    at("a", 99, 9, "p9-later"),
                    at("a", 10, -3, "n3-10"),
                ])
                .await
                .unwrap();
                assert_eq!(
                    claim_payloads(&d, 10, 50).await,
                    ["p5-20", "p5-20b", "p5-30", "p0-5", "p0-10", "n3-10"]
                );
                assert_eq!(claim_payloads(&d, 10, 99).await, ["p9-later"]);
            }

            /// Across queues, the merged claim keeps the same order.
            #[tokio::test]
            async fn claims_across_queues_follow_priority() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                d.task_insert_many(vec![
                    at("a", 1, 0, "a0"),
                    at("b", 2, 3, "b3"),
                    at("a", 3, 3, "a3"),
                    at("b", 0, 0, "b0"),
                    at("z", 0, 9, "z9"),
                ])
                .await
                .unwrap();
                assert_eq!(claim_payloads(&d, 3, 10).await, ["b3", "a3", "b0"]);
                assert_eq!(claim_payloads(&d, 3, 10).await, ["a0"]);
            }

            /// A backlog of 10,000 due tasks of priority 0 does not delay a due task of
            /// priority 9: it is the next one claimed, and claims of one task stay quick.
            #[tokio::test]
            async fn a_due_priority_task_is_claimed_before_a_long_backlog() {
                let Some(d) = open(&["a"]).await else {
                    return;
                };
                let backlog: Vec<NewTask> =
                    (0..10_000).map(|n| at("a", n % 100, 0, "low")).collect();
                d.task_insert_many(backlog).await.unwrap();
                d.task_insert_many(vec![at("a", 500, 9, "high")])
                    .await
                    .unwrap();
                assert_eq!(claim_payloads(&d, 1, 1_000).await, ["high"]);
                assert_eq!(claim_payloads(&d, 1, 1_000).await, ["low"]);
            }

            /// What inspection reports follows the claim order: a task's priority, and the
            /// due tasks ahead of it are those of a higher priority and the earlier ones of
            /// its own; lower ones and tasks not yet due are not.
            #[tokio::test]
            async fn inspection_counts_the_tasks_ahead_in_claim_order() {
                let Some(d) = open(&["a"]).await else {
                    return;
                };
                let tasks = vec![
                    at("a", 10, 0, "p0-first"),
                    at("a", 20, 0, "p0-second"),
                    at("a", 30, 5, "p5"),
                    at("a", 5_000, 9, "p9-later"),
                    at("a", 1, -1, "n1"),
                    at("b", 1, 9, "other-queue"),
                ];
                d.task_insert_many(tasks.clone()).await.unwrap();
                let ahead = |i: usize| {
                    let (d, id) = (&d, tasks[i].id);
                    async move {
                        match d
                            .task_facts(id, Some(1_000), Duration::from_secs(1))
                            .await
                            .unwrap()
                        {
                            crate::storage::Facts::Waiting { ahead, .. } => ahead,
                            other => panic!("{other:?}"),
                        }
                    }
                };
                assert_eq!(ahead(2).await, 0);
                assert_eq!(ahead(0).await, 1);
                assert_eq!(ahead(1).await, 2);
                assert_eq!(ahead(4).await, 3);
                let info = d.task_info(tasks[2].id).await.unwrap().unwrap();
                assert_eq!(info.priority, Some(5));
            }

            /// The wait until the next due task looks at every priority, and ignores
            /// expired tasks, which no claim returns.
            #[tokio::test]
            async fn next_due_is_the_earliest_of_every_priority() {
                let Some(d) = open(&["a"]).await else {
                    return;
                };
                assert_eq!(d.task_next_due(Some(0)).await.unwrap(), None);
                d.task_insert_many(vec![
                    at("a", 300, 9, "p9"),
                    at("a", 200, 0, "p0"),
                    at("a", 250, -1, "n1"),
                    NewTask {
                        expires_at: Some(50),
                        ..at("a", 10, 4, "expired")
                    },
                ])
                .await
                .unwrap();
                assert_eq!(
                    d.task_next_due(Some(100)).await.unwrap(),
                    Some(Duration::from_millis(100))
                );
                assert_eq!(
                    d.task_next_due(Some(20)).await.unwrap(),
                    Some(Duration::ZERO),
                    "the expiring task is due until it expires"
                );
            }
        }
    };
}

pub(crate) use priority_conformance;
