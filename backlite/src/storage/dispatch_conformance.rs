//! The conformance suite of the dispatcher's own storage operations: a snooze (a retry that
//! does not count the attempt) and claims bounded per queue. Every driver instantiates it with
//! `dispatch_conformance!(module_name, async fn open(queues) -> Option<impl Driver>)`.

macro_rules! dispatch_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use crate::storage::conformance::{LEASE, done, new_task};
            use crate::storage::{Completion, Driver, Next};
            use crate::task::TaskStatus;

            async fn open(queues: &[&'static str]) -> Option<impl Driver> {
                ($open)(queues.to_vec()).await
            }

            #[tokio::test]
            async fn a_snooze_reschedules_without_counting_the_attempt() {
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 1, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                // One failed attempt first, so that there is an error history to keep.
                let first = d.task_claim(None, 1, LEASE, Some(100)).await.unwrap();
                let retry = Completion {
                    next: Next::Retry { run_at: 200 },
                    ..done(t.id, first[0].token, Some("boom"), None)
                };
                d.task_complete_many(vec![retry]).await.unwrap();
                let before = d.task_info(t.id).await.unwrap().unwrap();
                let second = d.task_claim(None, 1, LEASE, Some(200)).await.unwrap();
                assert_eq!(second[0].attempts, 1);
                let snooze = Completion {
                    executed_at: 250,
                    next: Next::Snooze { run_at: 900 },
                    ..done(t.id, second[0].token, None, None)
                };
                d.task_complete_many(vec![snooze]).await.unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Pending);
                let after = d.task_info(t.id).await.unwrap().unwrap();
                assert_eq!(after.attempts, 1, "the snoozed attempt counted");
                assert_eq!(after.errors, before.errors, "the error history changed");
                assert_eq!(after.run_at, Some(900));
                assert_eq!(after.claimed_at, None);
                assert_eq!(after.last_executed_at, Some(250));
                assert!(
                    d.task_claim(None, 1, LEASE, Some(899))
                        .await
                        .unwrap()
                        .is_empty(),
                    "claimed before its snooze ended"
                );
                let third = d.task_claim(None, 1, LEASE, Some(900)).await.unwrap();
                assert_eq!(third[0].attempts, 1, "the next attempt has the same number");
                assert!(third[0].token.fence > second[0].token.fence);
            }

            #[tokio::test]
            async fn a_stale_claim_cannot_snooze_the_task() {
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 1, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                let first = d.task_claim(None, 1, LEASE, Some(100)).await.unwrap()[0].token;
                assert_eq!(d.task_release_stuck(Some(1_100)).await.unwrap(), 1);
                let second = d.task_claim(None, 1, LEASE, Some(1_200)).await.unwrap()[0].token;
                let late = Completion {
                    next: Next::Snooze { run_at: 5_000 },
                    ..done(t.id, first, None, None)
                };
                d.task_complete_many(vec![late]).await.unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Running);
                let info = d.task_info(t.id).await.unwrap().unwrap();
                assert_eq!(info.run_at, Some(1), "a stale snooze moved the task");
                d.task_complete_many(vec![done(t.id, second, None, None)])
                    .await
                    .unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::NotFound);
            }

            #[tokio::test]
            async fn a_claim_takes_no_more_of_a_queue_than_its_room() {
                let Some(d) = open(&["a", "b", "c"]).await else {
                    return;
                };
                let mut tasks = Vec::new();
                for i in 0..5 {
                    tasks.push(new_task("a", 10 + i, "a"));
                    tasks.push(new_task("b", 20 + i, "b"));
                    tasks.push(new_task("c", 30 + i, "c"));
                }
                d.task_insert_many(tasks).await.unwrap();
                let count = |claimed: &[crate::storage::ClaimedTask], queue: &str| {
                    claimed.iter().filter(|t| t.queue == queue).count()
                };
                // `a` may take 2, `b` none (at its limit), `c` is not limited.
                let room = vec![("a", 2), ("b", 0)];
                let claimed = d
                    .task_claim_within(None, 100, room, LEASE, Some(100))
                    .await
                    .unwrap();
                assert_eq!(count(&claimed, "a"), 2);
                assert_eq!(count(&claimed, "b"), 0, "a queue at its limit was claimed");
                assert_eq!(count(&claimed, "c"), 5);
                // The overall limit still holds, in claim order: `a`'s room first.
                let claimed = d
                    .task_claim_within(None, 2, vec![("a", 5), ("b", 5)], LEASE, Some(100))
                    .await
                    .unwrap();
                assert_eq!(count(&claimed, "a"), 2);
                // Room larger than the backlog takes the backlog.
                let claimed = d
                    .task_claim_within(None, 100, vec![("b", 50)], LEASE, Some(100))
                    .await
                    .unwrap();
                assert_eq!((count(&claimed, "a"), count(&claimed, "b")), (1, 5));
            }

            #[tokio::test]
            async fn the_next_due_time_leaves_out_the_full_queues() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                d.task_insert_many(vec![new_task("a", 100, "a"), new_task("b", 400, "b")])
                    .await
                    .unwrap();
                let wait = |full: Vec<&'static str>| d.task_next_due_except(full, Some(50));
                let ms = |n: u64| Some(std::time::Duration::from_millis(n));
                assert_eq!(wait(vec![]).await.unwrap(), ms(50));
                assert_eq!(wait(vec!["a"]).await.unwrap(), ms(350));
                assert_eq!(wait(vec!["a", "b"]).await.unwrap(), None);
                assert_eq!(d.task_next_due(Some(50)).await.unwrap(), ms(50));
            }
        }
    };
}

pub(crate) use dispatch_conformance;
