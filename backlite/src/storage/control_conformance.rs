//! The conformance suite of the control operations (pause and resume, queue list, cancel,
//! retry, run now, delete, purge), which every driver must pass as it passes
//! `driver_conformance!`: each transition and each of its guards, and the races with claims.
//! Instantiated with `control_conformance!(module_name, async fn open(queues) -> impl Driver)`.

macro_rules! control_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use std::collections::HashSet;
            use std::sync::Arc;
            use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
            use std::time::Instant;

            use crate::storage::conformance::{LEASE, done, new_task};
            use crate::storage::{
                CANCELLED_ERROR, CancelRetention, Cancelled, ClaimedTask, Driver, PurgeFilter,
                Retain,
            };
            use crate::task::{TaskId, TaskStatus};

            async fn open(queues: &[&'static str]) -> Option<impl Driver> {
                ($open)(queues.to_vec()).await
            }

            async fn claim(d: &impl Driver, limit: usize, now: i64) -> Vec<ClaimedTask> {
                d.task_claim(None, limit, LEASE, Some(now)).await.unwrap()
            }

            /// Unknown queues: cancelled tasks are kept whole, without expiry.
            fn keep_all() -> CancelRetention {
                CancelRetention::default()
            }

            const KEEP: Option<Retain> = Some(Retain {
                payload: true,
                expires_at: None,
            });

            /// Runs a task of `queue` once and ends it (failed, or `succeeded`), retained with
            /// its payload when `payload_kept`. Due and claimed at time 0, so that the claim
            /// takes no other test task.
            async fn failed(
                d: &impl Driver,
                queue: &'static str,
                payload_kept: bool,
                succeeded: bool,
            ) -> TaskId {
                let t = new_task(queue, 0, "{\"n\":1}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                let claimed = claim(d, 100, 0).await;
                let c = claimed.iter().find(|c| c.id == t.id).expect("claimed");
                let retain = Some(Retain {
                    payload: payload_kept,
                    expires_at: None,
                });
                let error = (!succeeded).then_some("boom");
                d.task_complete_many(vec![done(t.id, c.token, error, retain)])
                    .await
                    .unwrap();
                t.id
            }

            #[tokio::test]
            async fn a_paused_queue_is_skipped_by_claims_and_next_due_until_resumed() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                let (a, b) = (new_task("a", 10, "a"), new_task("b", 20, "b"));
                d.task_insert_many(vec![a.clone(), b.clone()])
                    .await
                    .unwrap();
                assert!(d.queue_pause("a".into(), Some(50)).await.unwrap());
                assert!(
                    !d.queue_pause("a".into(), Some(60)).await.unwrap(),
                    "paused twice"
                );
                let claimed = claim(&d, 10, 100).await;
                assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), [b.id]);
                assert_eq!(
                    d.task_next_due(Some(100)).await.unwrap(),
                    None,
                    "a paused queue's task is not due"
                );
                // Adding to a paused queue works; its tasks wait.
                d.task_insert_many(vec![new_task("a", 5, "a2")])
                    .await
                    .unwrap();
                assert!(claim(&d, 10, 100).await.is_empty());
                assert!(d.queue_resume("a".into()).await.unwrap());
                assert!(!d.queue_resume("a".into()).await.unwrap(), "resumed twice");
                assert_eq!(
                    d.task_next_due(Some(100)).await.unwrap(),
                    Some(std::time::Duration::ZERO)
                );
                let claimed = claim(&d, 10, 100).await;
                assert_eq!(claimed.len(), 2);
                assert_eq!(claimed[1].id, a.id);
            }

            #[tokio::test]
            async fn queues_lists_paused_and_busy_queues_with_every_count() {
                let Some(d) = open(&["a"]).await else { return };
                // Paused before it ever had a task.
                assert!(d.queue_pause("early".into(), Some(1_234)).await.unwrap());
                d.task_insert_many(vec![
                    new_task("a", 10, "due"),
                    new_task("a", 10, "due"),
                    new_task("a", 500, "later"),
                ])
                .await
                .unwrap();
                let running = claim(&d, 1, 100).await;
                assert_eq!(running.len(), 1);
                failed(&d, "a", true, false).await;
                failed(&d, "a", true, true).await;
                let cancel = new_task("a", 900, "c");
                d.task_insert_many(vec![cancel.clone()]).await.unwrap();
                assert_eq!(
                    d.task_cancel(cancel.id, keep_all(), Some(100))
                        .await
                        .unwrap(),
                    Cancelled::Waiting
                );
                let list = d.queue_list(100).await.unwrap();
                let names: Vec<_> = list.iter().map(|q| q.stats.queue.as_str()).collect();
                assert_eq!(names, ["a", "early"]);
                let a = &list[0];
                assert_eq!(a.paused_at, None);
                assert_eq!(
                    (
                        a.stats.pending,
                        a.stats.scheduled,
                        a.stats.running,
                        a.stats.succeeded,
                        a.stats.failed,
                        a.stats.cancelled
                    ),
                    (1, 1, 1, 1, 1, 1),
                    "{a:?}"
                );
                assert_eq!(list[1].paused_at, Some(1_234));
                assert_eq!(list[1].stats.pending + list[1].stats.cancelled, 0);
                // Failed no longer counts the cancelled task, in the stats either.
                let stats = d.queue_stats(100).await.unwrap();
                assert_eq!((stats[0].failed, stats[0].cancelled), (1, 1));
            }

            #[tokio::test]
            async fn cancel_of_a_waiting_task_retains_it_cancelled_and_it_never_runs() {
                let Some(d) = open(&["a"]).await else { return };
                let (due, later) = (new_task("a", 10, "due"), new_task("a", 50_000, "later"));
                d.task_insert_many(vec![due.clone(), later.clone()])
                    .await
                    .unwrap();
                for t in [&due, &later] {
                    let outcome = d.task_cancel(t.id, keep_all(), Some(300)).await.unwrap();
                    assert_eq!(outcome, Cancelled::Waiting);
                    assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Cancelled);
                }
                assert!(claim(&d, 10, 100_000).await.is_empty());
                let kept = d.completed_get(due.id).await.unwrap().expect("retained");
                assert_eq!(kept.payload.as_deref(), Some(&b"due"[..]));
                assert_eq!(kept.error.as_deref(), Some(CANCELLED_ERROR));
                assert_eq!((kept.succeeded, kept.expires_at), (false, None));
                assert_eq!((kept.attempts, kept.last_executed_at), (0, 300));
                assert_eq!(
                    d.task_cancel(due.id, keep_all(), None).await.unwrap(),
                    Cancelled::NotFound,
                    "a completed task is not cancelled again"
                );
                assert_eq!(
                    d.task_cancel(TaskId::new(), keep_all(), None)
                        .await
                        .unwrap(),
                    Cancelled::NotFound
                );
            }

            #[tokio::test]
            async fn cancel_follows_the_retention_of_a_known_queue() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                let (a, b) = (new_task("a", 10, "a"), new_task("b", 10, "b"));
                d.task_insert_many(vec![a.clone(), b.clone()])
                    .await
                    .unwrap();
                let retention = CancelRetention {
                    known: vec![
                        ("a", None),
                        (
                            "b",
                            Some(Retain {
                                payload: false,
                                expires_at: Some(9_000),
                            }),
                        ),
                    ],
                };
                for t in [&a, &b] {
                    let outcome = d.task_cancel(t.id, retention.clone(), Some(100)).await;
                    assert_eq!(outcome.unwrap(), Cancelled::Waiting);
                }
                assert_eq!(d.task_status(a.id).await.unwrap(), TaskStatus::NotFound);
                let kept = d.completed_get(b.id).await.unwrap().expect("retained");
                assert_eq!((kept.payload, kept.expires_at), (None, Some(9_000)));
                assert_eq!(d.task_status(b.id).await.unwrap(), TaskStatus::Cancelled);
            }

            #[tokio::test]
            async fn cancel_of_a_running_task_marks_it_and_moves_nothing() {
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 10, "run");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                let claimed = claim(&d, 1, 100).await;
                for _ in 0..2 {
                    let outcome = d.task_cancel(t.id, keep_all(), Some(150)).await.unwrap();
                    assert_eq!(outcome, Cancelled::Requested);
                    assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Running);
                }
                assert!(d.completed_get(t.id).await.unwrap().is_none());
                // Its claim still completes it as its worker decides.
                d.task_complete_many(vec![done(t.id, claimed[0].token, None, KEEP)])
                    .await
                    .unwrap();
                assert_eq!(d.task_status(t.id).await.unwrap(), TaskStatus::Succeeded);
            }

            #[tokio::test]
            async fn retry_runs_a_failed_or_cancelled_task_again_now_from_attempt_zero() {
                let Some(d) = open(&["a"]).await else { return };
                let failed_id = failed(&d, "a", true, false).await;
                let cancelled = new_task("a", 70_000, "{\"n\":2}");
                d.task_insert_many(vec![cancelled.clone()]).await.unwrap();
                d.task_cancel(cancelled.id, keep_all(), Some(200))
                    .await
                    .unwrap();
                for id in [failed_id, cancelled.id] {
                    assert!(d.completed_retry(id, Some(500)).await.unwrap());
                    assert_eq!(d.task_status(id).await.unwrap(), TaskStatus::Pending);
                    assert!(d.completed_get(id).await.unwrap().is_none());
                    assert!(!d.completed_retry(id, Some(500)).await.unwrap(), "twice");
                }
                let claimed = claim(&d, 10, 500).await;
                assert_eq!(claimed.len(), 2, "both due at the retry's time");
                assert!(claimed.iter().all(|c| c.attempts == 0 && c.run_at == 500));
                let again = claimed.iter().find(|c| c.id == cancelled.id).unwrap();
                assert_eq!(again.payload, b"{\"n\":2}");
            }

            #[tokio::test]
            async fn retry_refuses_successes_lost_payloads_and_unfinished_tasks() {
                let Some(d) = open(&["a"]).await else { return };
                let succeeded = failed(&d, "a", true, true).await;
                let no_payload = failed(&d, "a", false, false).await;
                let pending = new_task("a", 10, "p");
                d.task_insert_many(vec![pending.clone()]).await.unwrap();
                for id in [succeeded, no_payload, pending.id, TaskId::new()] {
                    assert!(!d.completed_retry(id, Some(500)).await.unwrap());
                }
                assert_eq!(
                    d.task_status(succeeded).await.unwrap(),
                    TaskStatus::Succeeded
                );
                assert_eq!(d.task_status(no_payload).await.unwrap(), TaskStatus::Failed);
                assert_eq!(
                    d.task_status(pending.id).await.unwrap(),
                    TaskStatus::Pending
                );
            }

            /// Waiting, running and retained tasks are rows of one table: an insert of an id
            /// that is retained is refused whole and changes nothing, and a retry brings the
            /// retained task back under its own id.
            #[tokio::test]
            async fn a_retained_id_is_not_inserted_again_and_retries_in_place() {
                let Some(d) = open(&["a"]).await else { return };
                let id = failed(&d, "a", true, false).await;
                let mut twin = new_task("a", 10, "twin");
                twin.id = id;
                let other = new_task("a", 10, "other");
                assert!(d.task_insert_many(vec![other.clone(), twin]).await.is_err());
                assert_eq!(d.task_status(other.id).await.unwrap(), TaskStatus::NotFound);
                let kept = d.completed_get(id).await.unwrap();
                assert!(kept.is_some_and(|k| !k.succeeded), "the retained row stays");
                assert_eq!(d.task_status(id).await.unwrap(), TaskStatus::Failed);
                assert!(d.completed_retry(id, Some(500)).await.unwrap());
                let claimed = claim(&d, 1, 500).await;
                assert_eq!(claimed.len(), 1);
                assert_eq!((claimed[0].id, claimed[0].attempts), (id, 0));
                assert_ne!(claimed[0].payload, b"twin");
                // Running, it is neither retried nor found among the retained.
                assert!(!d.completed_retry(id, Some(600)).await.unwrap());
                assert_eq!(
                    d.completed_retry_queue("a".into(), Some(600))
                        .await
                        .unwrap(),
                    0
                );
                assert!(d.completed_get(id).await.unwrap().is_none());
                assert_eq!(d.task_status(id).await.unwrap(), TaskStatus::Running);
            }

            #[tokio::test]
            async fn retry_of_a_queue_moves_every_retryable_task_of_it_only() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                let mut moved = vec![
                    failed(&d, "a", true, false).await,
                    failed(&d, "a", true, false).await,
                ];
                let c = new_task("a", 10, "c");
                d.task_insert_many(vec![c.clone()]).await.unwrap();
                d.task_cancel(c.id, keep_all(), Some(100)).await.unwrap();
                moved.push(c.id);
                let stay = [
                    failed(&d, "a", true, true).await,
                    failed(&d, "a", false, false).await,
                    failed(&d, "b", true, false).await,
                ];
                assert_eq!(
                    d.completed_retry_queue("a".into(), Some(700))
                        .await
                        .unwrap(),
                    3
                );
                for id in &moved {
                    assert_eq!(d.task_status(*id).await.unwrap(), TaskStatus::Pending);
                }
                for (id, status) in stay.iter().zip([
                    TaskStatus::Succeeded,
                    TaskStatus::Failed,
                    TaskStatus::Failed,
                ]) {
                    assert_eq!(d.task_status(*id).await.unwrap(), status);
                }
                assert_eq!(
                    d.completed_retry_queue("a".into(), Some(700))
                        .await
                        .unwrap(),
                    0
                );
                assert_eq!(
                    d.completed_retry_queue("none".into(), None).await.unwrap(),
                    0
                );
            }

            #[tokio::test]
            async fn run_now_makes_only_a_waiting_later_task_due() {
                let Some(d) = open(&["a"]).await else { return };
                let (later, due, running) = (
                    new_task("a", 90_000, "later"),
                    new_task("a", 10, "due"),
                    new_task("a", 5, "running"),
                );
                d.task_insert_many(vec![later.clone(), due.clone(), running.clone()])
                    .await
                    .unwrap();
                assert_eq!(claim(&d, 1, 100).await[0].id, running.id);
                assert!(d.task_run_now(later.id, Some(100)).await.unwrap());
                assert!(
                    !d.task_run_now(later.id, Some(100)).await.unwrap(),
                    "due already"
                );
                assert!(!d.task_run_now(due.id, Some(100)).await.unwrap());
                assert!(!d.task_run_now(running.id, Some(100)).await.unwrap());
                assert!(!d.task_run_now(TaskId::new(), Some(100)).await.unwrap());
                let claimed = claim(&d, 10, 100).await;
                let ids: HashSet<_> = claimed.iter().map(|c| c.id).collect();
                assert_eq!(ids, HashSet::from([later.id, due.id]));
            }

            #[tokio::test]
            async fn delete_removes_waiting_and_retained_tasks_but_not_running_ones() {
                let Some(d) = open(&["a"]).await else { return };
                let retained = failed(&d, "a", true, false).await;
                let (waiting, running) = (new_task("a", 90_000, "w"), new_task("a", 5, "r"));
                d.task_insert_many(vec![waiting.clone(), running.clone()])
                    .await
                    .unwrap();
                assert_eq!(claim(&d, 10, 100).await[0].id, running.id);
                assert!(d.task_delete(waiting.id).await.unwrap());
                assert!(d.task_delete(retained).await.unwrap());
                assert!(!d.task_delete(running.id).await.unwrap());
                assert!(!d.task_delete(waiting.id).await.unwrap(), "deleted twice");
                for id in [waiting.id, retained] {
                    assert_eq!(d.task_status(id).await.unwrap(), TaskStatus::NotFound);
                }
                assert_eq!(
                    d.task_status(running.id).await.unwrap(),
                    TaskStatus::Running
                );
            }

            #[tokio::test]
            async fn purge_deletes_by_queue_outcome_and_completion_time() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                // Completed at 1_000 (the suite's `done`), or cancelled at 100 and 5_000.
                let (a_ok, a_failed, b_failed) = (
                    failed(&d, "a", true, true).await,
                    failed(&d, "a", true, false).await,
                    failed(&d, "b", false, false).await,
                );
                let (early, late) = (new_task("a", 10, "e"), new_task("a", 10, "l"));
                d.task_insert_many(vec![early.clone(), late.clone()])
                    .await
                    .unwrap();
                d.task_cancel(early.id, keep_all(), Some(100))
                    .await
                    .unwrap();
                d.task_cancel(late.id, keep_all(), Some(5_000))
                    .await
                    .unwrap();
                let cancelled_before = PurgeFilter {
                    cancelled: true,
                    completed_before: Some(1_000),
                    ..Default::default()
                };
                assert_eq!(d.completed_purge(cancelled_before).await.unwrap(), 1);
                assert_eq!(d.task_status(early.id).await.unwrap(), TaskStatus::NotFound);
                assert_eq!(d.task_status(late.id).await.unwrap(), TaskStatus::Cancelled);
                let failed_of_a = PurgeFilter {
                    queue: Some("a".into()),
                    failed: true,
                    ..Default::default()
                };
                assert_eq!(d.completed_purge(failed_of_a).await.unwrap(), 1);
                assert_eq!(d.task_status(a_failed).await.unwrap(), TaskStatus::NotFound);
                assert_eq!(d.task_status(b_failed).await.unwrap(), TaskStatus::Failed);
                assert_eq!(d.task_status(a_ok).await.unwrap(), TaskStatus::Succeeded);
                // No outcome named: all of them.
                let all_of_a = PurgeFilter {
                    queue: Some("a".into()),
                    ..Default::default()
                };
                assert_eq!(d.completed_purge(all_of_a).await.unwrap(), 2);
                assert_eq!(d.completed_purge(PurgeFilter::default()).await.unwrap(), 1);
                assert_eq!(d.task_status(b_failed).await.unwrap(), TaskStatus::NotFound);
            }

            /// Cancels race claims: every task ends exactly one way. Claimed first, it runs
            /// and its cancel is only a request; cancelled first, no claim ever returns it.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cancels_racing_claims_leave_each_task_claimed_or_cancelled() {
                let Some(d) = open(&["a"]).await else { return };
                let d = Arc::new(d);
                let tasks: Vec<_> = (0..300).map(|i| new_task("a", i, "x")).collect();
                d.task_insert_many(tasks.clone()).await.unwrap();
                let claimer = {
                    let d = d.clone();
                    tokio::spawn(async move {
                        let mut claimed = Vec::new();
                        for _ in 0..200 {
                            let batch = d.task_claim(None, 3, LEASE, Some(1_000)).await.unwrap();
                            claimed.extend(batch.into_iter().map(|c| c.id));
                            tokio::task::yield_now().await;
                        }
                        claimed
                    })
                };
                let mut outcomes = Vec::new();
                // Newest first, so that cancels and claims meet in the middle.
                for t in tasks.iter().rev() {
                    let outcome = d.task_cancel(t.id, keep_all(), Some(1_000)).await.unwrap();
                    outcomes.push((t.id, outcome));
                }
                let claimed = claimer.await.unwrap();
                let claimed_set: HashSet<_> = claimed.iter().copied().collect();
                assert_eq!(claimed.len(), claimed_set.len(), "a task claimed twice");
                let (mut requested, mut cancelled) = (0, 0);
                for (id, outcome) in outcomes {
                    match outcome {
                        Cancelled::Requested => {
                            requested += 1;
                            assert!(claimed_set.contains(&id));
                            assert_eq!(d.task_status(id).await.unwrap(), TaskStatus::Running);
                            assert!(d.completed_get(id).await.unwrap().is_none());
                        }
                        Cancelled::Waiting => {
                            cancelled += 1;
                            assert!(!claimed_set.contains(&id), "cancelled and claimed");
                            assert_eq!(d.task_status(id).await.unwrap(), TaskStatus::Cancelled);
                        }
                        Cancelled::NotFound => panic!("task {id} vanished"),
                    }
                }
                assert_eq!(requested + cancelled, 300);
                assert_eq!(requested, claimed_set.len());
            }

            /// Retries of one task at once: one moves it, the others change nothing.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_retries_of_one_task_move_it_once() {
                let Some(d) = open(&["a"]).await else { return };
                let d = Arc::new(d);
                for _ in 0..5 {
                    let id = failed(&*d, "a", true, false).await;
                    let attempts = (0..4).map(|_| {
                        let d = d.clone();
                        tokio::spawn(async move { d.completed_retry(id, Some(2_000)).await })
                    });
                    let mut moved = 0;
                    for attempt in attempts.collect::<Vec<_>>() {
                        moved += u32::from(attempt.await.unwrap().unwrap());
                    }
                    assert_eq!(moved, 1);
                    assert_eq!(d.task_status(id).await.unwrap(), TaskStatus::Pending);
                    // Leave nothing due for the next round's `failed`.
                    d.task_delete(id).await.unwrap();
                }
            }

            /// Once `queue_pause` has returned, no claim that starts after it returns a task
            /// of the queue, while claims run all along.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn no_claim_started_after_a_pause_returns_its_queue() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                let d = Arc::new(d);
                let tasks: Vec<_> = (0..4_000)
                    .map(|i| new_task(if i % 2 == 0 { "a" } else { "b" }, i, "x"))
                    .collect();
                d.task_insert_many(tasks).await.unwrap();
                let (started, stop) = (
                    Arc::new(AtomicUsize::new(0)),
                    Arc::new(AtomicBool::new(false)),
                );
                let claimer = {
                    let (d, started, stop) = (d.clone(), started.clone(), stop.clone());
                    tokio::spawn(async move {
                        let mut claims = Vec::new();
                        while !stop.load(Ordering::SeqCst) {
                            let at = Instant::now();
                            started.fetch_add(1, Ordering::SeqCst);
                            let batch = d.task_claim(None, 2, LEASE, Some(10_000)).await.unwrap();
                            let queues: Vec<String> = batch.into_iter().map(|c| c.queue).collect();
                            claims.push((at, queues));
                        }
                        claims
                    })
                };
                let claims_after = |n: usize| {
                    let started = started.clone();
                    async move {
                        while started.load(Ordering::SeqCst) < n {
                            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        }
                    }
                };
                claims_after(10).await;
                assert!(d.queue_pause("a".into(), None).await.unwrap());
                let paused = Instant::now();
                let seen = started.load(Ordering::SeqCst);
                claims_after(seen + 20).await;
                stop.store(true, Ordering::SeqCst);
                let claims = claimer.await.unwrap();
                let after: Vec<_> = claims.iter().filter(|(s, _)| *s > paused).collect();
                assert!(!after.is_empty(), "no claim started after the pause");
                for (_, queues) in &after {
                    assert!(queues.iter().all(|q| q == "b"), "{queues:?}");
                }
            }
        }
    };
}

pub(crate) use control_conformance;
