//! One suite of tests that every storage driver must pass. A driver instantiates it with
//! `driver_conformance!(module_name, async fn open(queues) -> impl Driver)`; the suite speaks
//! only through the `Driver` trait, so a second backend is held to the same behaviour.

use std::time::Duration;

use crate::storage::{Completion, Millis, NewTask, Next, Retain};
use crate::task::TaskId;

pub(crate) fn new_task(queue: &'static str, run_at: Millis, payload: &str) -> NewTask {
    NewTask {
        id: TaskId::new(),
        queue,
        payload: payload.as_bytes().to_vec(),
        created_at: 1_000,
        run_at,
    }
}

pub(crate) fn done(
    id: TaskId,
    claimed_at: Millis,
    error: Option<&str>,
    retain: Option<Retain>,
) -> Completion {
    Completion {
        id,
        claimed_at,
        executed_at: claimed_at,
        duration: Duration::from_micros(1500),
        error: error.map(str::to_owned),
        next: Next::Done { retain },
    }
}

macro_rules! driver_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use crate::storage::conformance::{done, new_task};
            use crate::storage::{Completion, Driver, Next, Retain};
            use crate::task::TaskStatus;
            use std::time::Duration;

            async fn open(queues: &[&'static str]) -> impl Driver {
                ($open)(queues.to_vec()).await
            }

            #[tokio::test]
            async fn claims_due_tasks_oldest_due_first_up_to_the_limit() {
                let d = open(&["a"]).await;
                let (t1, t2, t3) = (
                    new_task("a", 30, "1"),
                    new_task("a", 10, "2"),
                    new_task("a", 20, "3"),
                );
                d.task_insert_many(vec![t1.clone(), t2.clone(), t3.clone()])
                    .await
                    .unwrap();
                let claimed = d.task_claim(2, 100).await.unwrap();
                let mut ids: Vec<_> = claimed.iter().map(|c| c.id).collect();
                ids.sort();
                let mut expected = vec![t2.id, t3.id];
                expected.sort();
                assert_eq!(ids, expected);
                assert!(
                    claimed
                        .iter()
                        .all(|c| c.claimed_at == 100 && c.attempts == 0)
                );
                assert_eq!(
                    claimed.iter().find(|c| c.id == t2.id).unwrap().payload,
                    b"2"
                );
                let due: Vec<_> = [t2.id, t3.id]
                    .iter()
                    .map(|id| claimed.iter().find(|c| c.id == *id).unwrap().run_at)
                    .collect();
                assert_eq!(due, [10, 20], "a claim carries each task's due time");
                let rest = d.task_claim(10, 100).await.unwrap();
                assert_eq!(rest.len(), 1);
                assert_eq!(rest[0].id, t1.id);
                assert!(
                    d.task_claim(10, 100).await.unwrap().is_empty(),
                    "claimed twice"
                );
            }

            #[tokio::test]
            async fn claims_only_served_queues_and_due_tasks() {
                let d = open(&["a", "b"]).await;
                let (a, b, c, later) = (
                    new_task("a", 1, "{}"),
                    new_task("b", 2, "{}"),
                    new_task("c", 1, "{}"),
                    new_task("a", 500, "{}"),
                );
                d.task_insert_many(vec![a.clone(), b.clone(), c.clone(), later.clone()])
                    .await
                    .unwrap();
                let claimed = d.task_claim(10, 100).await.unwrap();
                let mut queues: Vec<_> = claimed.iter().map(|t| t.queue.clone()).collect();
                queues.sort();
                assert_eq!(queues, ["a", "b"]);
                let mut due: Vec<_> = claimed.iter().map(|t| t.run_at).collect();
                due.sort();
                assert_eq!(due, [1, 2]);
                assert_eq!(d.task_status(c.id).await.unwrap(), TaskStatus::Pending);
                assert_eq!(d.task_status(later.id).await.unwrap(), TaskStatus::Pending);
                assert_eq!(d.task_status(a.id).await.unwrap(), TaskStatus::Running);
                assert_eq!(d.task_next_due().await.unwrap(), Some(500));
                assert_eq!(d.task_claim(10, 500).await.unwrap()[0].id, later.id);
                assert_eq!(
                    d.task_next_due().await.unwrap(),
                    None,
                    "queue c is not served"
                );
            }

            #[tokio::test]
            async fn a_batch_is_stored_whole_or_not_at_all() {
                let d = open(&["a"]).await;
                let t = new_task("a", 1, "{}");
                let duplicate = t.clone();
                let err = d
                    .task_insert_many(vec![new_task("a", 1, "{}"), t, duplicate])
                    .await;
                assert!(err.is_err());
                assert!(d.task_claim(10, 100).await.unwrap().is_empty());
            }

            #[tokio::test]
            async fn success_deletes_and_retains_as_told() {
                let d = open(&["a"]).await;
                let (kept, gone) = (new_task("a", 1, "{\"k\":1}"), new_task("a", 1, "{}"));
                d.task_insert_many(vec![kept.clone(), gone.clone()])
                    .await
                    .unwrap();
                d.task_claim(10, 100).await.unwrap();
                let retain = Retain {
                    payload: true,
                    expires_at: Some(5_000),
                };
                d.task_complete_many(vec![
                    done(kept.id, 100, None, Some(retain)),
                    done(gone.id, 100, None, None),
                ])
                .await
                .unwrap();
                assert_eq!(d.task_status(kept.id).await.unwrap(), TaskStatus::Succeeded);
                assert_eq!(d.task_status(gone.id).await.unwrap(), TaskStatus::NotFound);
                let stats = d.queue_stats(100).await.unwrap();
                assert_eq!(
                    (stats[0].succeeded, stats[0].pending, stats[0].running),
                    (1, 0, 0)
                );
                assert_eq!(d.completed_delete_expired(4_999).await.unwrap(), 0);
                assert_eq!(d.completed_delete_expired(5_000).await.unwrap(), 1);
                assert_eq!(d.task_status(kept.id).await.unwrap(), TaskStatus::NotFound);
            }

            #[tokio::test]
            async fn retry_reschedules_and_counts_the_attempt() {
                let d = open(&["a"]).await;
                let t = new_task("a", 1, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                d.task_claim(1, 100).await.unwrap();
                let retry = Completion {
                    next: Next::Retry { run_at: 300 },
                    ..done(t.id, 100, Some("boom"), None)
                };
                d.task_complete_many(vec![retry]).await.unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Pending);
                assert!(
                    d.task_claim(1, 299).await.unwrap().is_empty(),
                    "retried before its backoff"
                );
                let again = d.task_claim(1, 300).await.unwrap();
                assert_eq!(again[0].attempts, 1);
                d.task_complete_many(vec![done(
                    t.id,
                    300,
                    Some("boom"),
                    Some(Retain {
                        payload: false,
                        expires_at: None,
                    }),
                )])
                .await
                .unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Failed);
                assert_eq!(d.queue_stats(400).await.unwrap()[0].failed, 1);
            }

            #[tokio::test]
            async fn a_stale_claim_cannot_complete_the_task() {
                let d = open(&["a"]).await;
                let t = new_task("a", 1, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                d.task_claim(1, 100).await.unwrap();
                assert_eq!(
                    d.task_release_stuck(99).await.unwrap(),
                    0,
                    "released too early"
                );
                assert_eq!(d.task_release_stuck(100).await.unwrap(), 1);
                assert_eq!(d.task_claim(1, 200).await.unwrap().len(), 1);
                // The first worker, taken for dead, reports late: its outcome is ignored.
                d.task_complete_many(vec![done(t.id, 100, None, None)])
                    .await
                    .unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Running);
                d.task_complete_many(vec![done(t.id, 200, None, None)])
                    .await
                    .unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::NotFound);
            }

            #[tokio::test]
            async fn unclaimed_tasks_are_pending_again_with_attempts_untouched() {
                let d = open(&["a"]).await;
                let t = new_task("a", 1, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                d.task_claim(1, 100).await.unwrap();
                d.task_unclaim_many(vec![(t.id, 100)]).await.unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Pending);
                assert_eq!(d.task_claim(1, 100).await.unwrap()[0].attempts, 0);
            }

            #[tokio::test]
            async fn stats_count_each_state_per_queue() {
                let d = open(&["a"]).await;
                d.task_insert_many(vec![
                    new_task("a", 1, "{}"),
                    new_task("a", 1, "{}"),
                    new_task("a", 900, "{}"),
                    new_task("z", 1, "{}"),
                ])
                .await
                .unwrap();
                d.task_claim(1, 100).await.unwrap();
                let stats = d.queue_stats(100).await.unwrap();
                let a = stats.iter().find(|s| s.queue == "a").unwrap();
                assert_eq!((a.pending, a.scheduled, a.running), (1, 1, 1));
                let z = stats.iter().find(|s| s.queue == "z").unwrap();
                assert_eq!(z.pending, 1);
                let _ = Duration::ZERO;
            }
        }
    };
}

pub(crate) use driver_conformance;
