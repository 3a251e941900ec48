//! One suite of tests that every storage driver must pass. A driver instantiates it with
//! `driver_conformance!(module_name, async fn open(queues) -> impl Driver)`; the suite speaks
//! only through the `Driver` trait, so a second backend is held to the same behaviour.

use std::time::Duration;

use crate::storage::{ClaimToken, Completion, Millis, NewTask, Next, Retain};
use crate::task::TaskId;

/// The lease of every claim in the suites: a task claimed at `t` is released at `t + 1000`.
pub(crate) const LEASE: Duration = Duration::from_millis(1000);

pub(crate) fn new_task(queue: &'static str, run_at: Millis, payload: &str) -> NewTask {
    NewTask {
        id: TaskId::new(),
        queue,
        payload: payload.as_bytes().to_vec(),
        created_at: 1_000,
        run_at,
        priority: 0,
        expires_at: None,
        unique_key: None,
        unique_for: None,
    }
}

/// `n` tasks with payload `{}`, of the queues in turn, task `i` due at `i`.
pub(crate) fn tasks_in_turn(queues: &[&'static str], n: usize) -> Vec<NewTask> {
    (0..n)
        .map(|i| new_task(queues[i % queues.len()], i as Millis, "{}"))
        .collect()
}

/// The same ended outcome, a cancel by its processor (the task ends cancelled).
pub(crate) fn cancelled(mut completion: Completion) -> Completion {
    if let Next::Done { cancelled, .. } = &mut completion.next {
        *cancelled = true;
    }
    completion
}

pub(crate) fn done(
    id: TaskId,
    token: ClaimToken,
    error: Option<&str>,
    retain: Option<Retain>,
) -> Completion {
    Completion {
        id,
        // The counters' own suite names queues; the other suites count nothing.
        queue: None,
        token,
        executed_at: 1_000,
        duration: Duration::from_micros(1500),
        error: error.map(str::to_owned),
        next: Next::Done {
            retain,
            cancelled: false,
        },
    }
}

macro_rules! driver_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use crate::storage::conformance::{LEASE, done, new_task};
            use crate::storage::{ClaimToken, Completion, Driver, Next, Retain};
            use crate::task::TaskStatus;
            use std::time::Duration;

            /// A driver on a fresh database, or `None` when this backend is not available here
            /// (the opener has said why).
            async fn open(queues: &[&'static str]) -> Option<impl Driver> {
                ($open)(queues.to_vec()).await
            }

            /// Claims at `now` under [`LEASE`].
            async fn claim(
                d: &impl Driver,
                limit: usize,
                now: i64,
            ) -> Vec<crate::storage::ClaimedTask> {
                d.task_claim(None, limit, LEASE, Some(now)).await.unwrap()
            }

            #[tokio::test]
            async fn claims_due_tasks_oldest_due_first_up_to_the_limit() {
                let Some(d) = open(&["a"]).await else { return };
                let (t1, t2, t3) = (
                    new_task("a", 30, "1"),
                    new_task("a", 10, "2"),
                    new_task("a", 20, "3"),
                );
                d.task_insert_many(vec![t1.clone(), t2.clone(), t3.clone()])
                    .await
                    .unwrap();
                let claimed = claim(&d, 2, 100).await;
                let mut ids: Vec<_> = claimed.iter().map(|c| c.id).collect();
                ids.sort();
                let mut expected = vec![t2.id, t3.id];
                expected.sort();
                assert_eq!(ids, expected);
                assert!(claimed.iter().all(|c| c.attempts == 0));
                assert_eq!(
                    claimed.iter().find(|c| c.id == t2.id).unwrap().payload,
                    b"2"
                );
                let due: Vec<_> = [t2.id, t3.id]
                    .iter()
                    .map(|id| claimed.iter().find(|c| c.id == *id).unwrap().run_at)
                    .collect();
                assert_eq!(due, [10, 20], "a claim carries each task's due time");
                let rest = claim(&d, 10, 100).await;
                assert_eq!(rest.len(), 1);
                assert_eq!(rest[0].id, t1.id);
                assert!(claim(&d, 10, 100).await.is_empty(), "claimed twice");
            }

            #[tokio::test]
            async fn claims_follow_due_time_then_insertion_order_across_queues() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                // Equal due times in two queues and two batches: insertion breaks the tie.
                let first = vec![
                    new_task("b", 20, "b20"),
                    new_task("a", 20, "a20"),
                    new_task("a", 10, "a10"),
                ];
                let second = vec![new_task("b", 10, "b10"), new_task("a", 20, "a20-2")];
                d.task_insert_many(first).await.unwrap();
                d.task_insert_many(second).await.unwrap();
                let mut order = Vec::new();
                for _ in 0..5 {
                    let one = claim(&d, 1, 100).await;
                    order.push(String::from_utf8(one[0].payload.clone()).unwrap());
                }
                assert_eq!(order, ["a10", "b10", "b20", "a20", "a20-2"]);
            }

            #[tokio::test]
            async fn claims_only_served_queues_and_due_tasks() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                let (a, b, c, later) = (
                    new_task("a", 1, "{}"),
                    new_task("b", 2, "{}"),
                    new_task("c", 1, "{}"),
                    new_task("a", 500, "{}"),
                );
                d.task_insert_many(vec![a.clone(), b.clone(), c.clone(), later.clone()])
                    .await
                    .unwrap();
                let claimed = claim(&d, 10, 100).await;
                let mut queues: Vec<_> = claimed.iter().map(|t| t.queue.clone()).collect();
                queues.sort();
                assert_eq!(queues, ["a", "b"]);
                let mut due: Vec<_> = claimed.iter().map(|t| t.run_at).collect();
                due.sort();
                assert_eq!(due, [1, 2]);
                assert_eq!(d.task_status(c.id).await.unwrap(), TaskStatus::Pending);
                assert_eq!(d.task_status(later.id).await.unwrap(), TaskStatus::Pending);
                assert_eq!(d.task_status(a.id).await.unwrap(), TaskStatus::Running);
                assert_eq!(
                    d.task_next_due(Some(100)).await.unwrap(),
                    Some(Duration::from_millis(400))
                );
                assert_eq!(
                    d.task_next_due(Some(600)).await.unwrap(),
                    Some(Duration::ZERO),
                    "a task past due waits for nothing"
                );
                assert_eq!(claim(&d, 10, 500).await[0].id, later.id);
                assert_eq!(
                    d.task_next_due(Some(500)).await.unwrap(),
                    None,
                    "queue c is not served"
                );
            }

            #[tokio::test]
            async fn a_batch_is_stored_whole_or_not_at_all() {
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 1, "{}");
                let duplicate = t.clone();
                let err = d
                    .task_insert_many(vec![new_task("a", 1, "{}"), t, duplicate])
                    .await;
                assert!(err.is_err());
                assert!(claim(&d, 10, 100).await.is_empty());
            }

            #[tokio::test]
            async fn success_deletes_and_retains_as_told() {
                let Some(d) = open(&["a"]).await else { return };
                let (kept, gone) = (new_task("a", 1, "{\"k\":1}"), new_task("a", 1, "{}"));
                d.task_insert_many(vec![kept.clone(), gone.clone()])
                    .await
                    .unwrap();
                let claimed = claim(&d, 10, 100).await;
                let token = |id| claimed.iter().find(|c| c.id == id).unwrap().token;
                let retain = Retain {
                    payload: true,
                    expires_at: Some(5_000),
                };
                d.task_complete_many(vec![
                    done(kept.id, token(kept.id), None, Some(retain)),
                    done(gone.id, token(gone.id), None, None),
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
            async fn a_cancelled_end_is_retained_as_cancelled() {
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 1, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                let claimed = claim(&d, 1, 100).await;
                let cancel = Completion {
                    next: Next::Done {
                        retain: Some(Retain {
                            payload: true,
                            expires_at: None,
                        }),
                        cancelled: true,
                    },
                    ..done(
                        t.id,
                        claimed[0].token,
                        Some("cancelled: no longer wanted"),
                        None,
                    )
                };
                d.task_complete_many(vec![cancel]).await.unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Cancelled);
            }

            #[tokio::test]
            async fn retry_reschedules_and_counts_the_attempt() {
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 1, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                let first = claim(&d, 1, 100).await;
                let retry = Completion {
                    next: Next::Retry { run_at: 300 },
                    ..done(t.id, first[0].token, Some("boom"), None)
                };
                d.task_complete_many(vec![retry]).await.unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Pending);
                assert!(
                    claim(&d, 1, 299).await.is_empty(),
                    "retried before its backoff"
                );
                let again = claim(&d, 1, 300).await;
                assert_eq!(again[0].attempts, 1);
                d.task_complete_many(vec![done(
                    t.id,
                    again[0].token,
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
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 1, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                let first = claim(&d, 1, 100).await[0].token;
                assert_eq!(
                    d.task_release_stuck(Some(1_099)).await.unwrap(),
                    0,
                    "released before its lease ended"
                );
                assert_eq!(d.task_release_stuck(Some(1_100)).await.unwrap(), 1);
                let second = claim(&d, 1, 1_200).await[0].token;
                assert_ne!(first, second, "a new claim has a new token");
                // The first worker, taken for dead, reports late: its outcome is ignored,
                // whether it succeeded, asks for a retry or hands the task back.
                d.task_complete_many(vec![done(t.id, first, None, None)])
                    .await
                    .unwrap();
                let late_retry = Completion {
                    next: Next::Retry { run_at: 1 },
                    ..done(t.id, first, Some("late"), None)
                };
                d.task_complete_many(vec![late_retry]).await.unwrap();
                d.task_unclaim_many(vec![(t.id, first)]).await.unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Running);
                d.task_complete_many(vec![done(t.id, second, None, None)])
                    .await
                    .unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::NotFound);
            }

            #[tokio::test]
            async fn each_claim_keeps_the_lease_it_was_given() {
                let Some(d) = open(&["a"]).await else { return };
                let (short, long) = (new_task("a", 1, "short"), new_task("a", 2, "long"));
                d.task_insert_many(vec![short.clone(), long.clone()])
                    .await
                    .unwrap();
                // Two processes with different `release_after` claim one task each.
                d.task_claim(None, 1, Duration::from_millis(100), Some(10))
                    .await
                    .unwrap();
                d.task_claim(None, 1, Duration::from_millis(10_000), Some(10))
                    .await
                    .unwrap();
                assert_eq!(d.task_release_stuck(Some(109)).await.unwrap(), 0);
                assert_eq!(d.task_release_stuck(Some(110)).await.unwrap(), 1);
                assert_eq!(d.task_status(short.id).await.unwrap(), TaskStatus::Pending);
                assert_eq!(d.task_status(long.id).await.unwrap(), TaskStatus::Running);
                assert_eq!(d.task_release_stuck(Some(10_009)).await.unwrap(), 0);
                assert_eq!(d.task_release_stuck(Some(10_010)).await.unwrap(), 1);
            }

            #[tokio::test]
            async fn unclaimed_tasks_are_pending_again_with_attempts_untouched() {
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 1, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                let token = claim(&d, 1, 100).await[0].token;
                d.task_unclaim_many(vec![(t.id, token)]).await.unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Pending);
                let again = claim(&d, 1, 100).await;
                assert_eq!(again[0].attempts, 0);
                // A token from before the unclaim completes nothing.
                d.task_complete_many(vec![done(t.id, token, None, None)])
                    .await
                    .unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Running);
                let _ = ClaimToken::fenced(0);
            }

            #[tokio::test]
            async fn stats_count_each_state_per_queue() {
                let Some(d) = open(&["a"]).await else { return };
                d.task_insert_many(vec![
                    new_task("a", 1, "{}"),
                    new_task("a", 1, "{}"),
                    new_task("a", 900, "{}"),
                    new_task("z", 1, "{}"),
                ])
                .await
                .unwrap();
                claim(&d, 1, 100).await;
                let stats = d.queue_stats(100).await.unwrap();
                let a = stats.iter().find(|s| s.queue == "a").unwrap();
                assert_eq!((a.pending, a.scheduled, a.running), (1, 1, 1));
                let z = stats.iter().find(|s| s.queue == "z").unwrap();
                assert_eq!(z.pending, 1);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_claimers_never_share_a_task() {
                let Some(d) = open(&["a"]).await else { return };
                let d = std::sync::Arc::new(d);
                let tasks: Vec<_> = (0..400).map(|i| new_task("a", 1, &i.to_string())).collect();
                d.task_insert_many(tasks).await.unwrap();
                let claimers: Vec<_> = (0..8)
                    .map(|_| {
                        let d = d.clone();
                        tokio::spawn(async move {
                            let mut mine = Vec::new();
                            loop {
                                let got = d.task_claim(None, 7, LEASE, Some(100)).await.unwrap();
                                if got.is_empty() {
                                    // Empty may mean "held by the others": make sure.
                                    let left = d.queue_stats(100).await.unwrap();
                                    if left.iter().all(|s| s.pending == 0) {
                                        return mine;
                                    }
                                    tokio::task::yield_now().await;
                                }
                                mine.extend(got.into_iter().map(|t| t.id));
                            }
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for claimer in claimers {
                    all.extend(claimer.await.unwrap());
                }
                let count = all.len();
                all.sort();
                all.dedup();
                assert_eq!(all.len(), count, "a task was claimed twice");
                assert_eq!(count, 400);
            }
        }
    };
}

pub(crate) use driver_conformance;
