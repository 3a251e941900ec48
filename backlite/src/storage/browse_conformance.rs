//! The conformance suite of the browsing reads (`task_list`, `task_get`, `completed_list`,
//! `completed_get`), which every driver must pass as it passes `driver_conformance!`.
//! Instantiated with `browse_conformance!(module_name, async fn open(queues) -> impl Driver)`.

macro_rules! browse_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use crate::storage::conformance::{LEASE, cancelled, done, new_task, tasks_in_turn};
            use crate::storage::{
                Completion, Driver, Next, PREVIEW_BYTES, Page, Retain, TaskState,
            };
            use crate::task::TaskId;
            use std::time::Duration;

            async fn open(queues: &[&'static str]) -> Option<impl Driver> {
                ($open)(queues.to_vec()).await
            }

            fn page(offset: u64, limit: u64) -> Page {
                Page { offset, limit }
            }

            #[tokio::test]
            async fn upcoming_is_in_claim_order_across_queues_and_pages() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                // Same run_at in two queues: insertion order breaks the tie, as in the claim.
                let tasks = vec![
                    new_task("b", 30, "b30"),
                    new_task("a", 10, "a10"),
                    new_task("c", 20, "c20"),
                    new_task("a", 30, "a30"),
                    new_task("b", 5, "b5"),
                ];
                d.task_insert_many(tasks.clone()).await.unwrap();
                let all = d.task_list(TaskState::Upcoming, page(0, 10)).await.unwrap();
                let payloads: Vec<_> = all.iter().map(|t| t.payload.clone()).collect();
                let expected: Vec<&[u8]> = vec![b"b5", b"a10", b"c20", b"b30", b"a30"];
                assert_eq!(payloads, expected);
                let second = d.task_list(TaskState::Upcoming, page(2, 2)).await.unwrap();
                let ids: Vec<_> = second.iter().map(|t| t.id).collect();
                assert_eq!(ids, [tasks[2].id, tasks[0].id]);
                assert!(
                    d.task_list(TaskState::Upcoming, page(5, 10))
                        .await
                        .unwrap()
                        .is_empty()
                );
                assert!(
                    d.task_list(TaskState::Running, page(0, 10))
                        .await
                        .unwrap()
                        .is_empty()
                );
            }

            #[tokio::test]
            async fn waiting_lists_one_queue_whole_in_claim_order() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                let long = "x".repeat(PREVIEW_BYTES * 2);
                let tasks = vec![
                    new_task("a", 30, "a30"),
                    new_task("b", 5, "b5"),
                    new_task("a", 10, &long),
                    new_task("a", 20, "a20"),
                ];
                d.task_insert_many(tasks.clone()).await.unwrap();
                let a = d.task_list_waiting("a").await.unwrap();
                let ids: Vec<_> = a.iter().map(|t| t.id).collect();
                assert_eq!(ids, [tasks[2].id, tasks[3].id, tasks[0].id]);
                assert_eq!(a[0].payload, long.as_bytes(), "payload cut");
                assert_eq!(
                    (a[2].payload.as_slice(), a[2].run_at, a[2].attempts),
                    (&b"a30"[..], 30, 0)
                );
                // The two earliest due, `b5` then `a10`, are claimed: running is not waiting.
                d.task_claim(None, 2, LEASE, Some(15)).await.unwrap();
                assert!(d.task_list_waiting("b").await.unwrap().is_empty());
                let a = d.task_list_waiting("a").await.unwrap();
                let ids: Vec<_> = a.iter().map(|t| t.id).collect();
                assert_eq!(ids, [tasks[3].id, tasks[0].id]);
                assert!(d.task_list_waiting("c").await.unwrap().is_empty());
            }

            #[tokio::test]
            async fn running_lists_claimed_tasks_longest_claimed_first() {
                let Some(d) = open(&["a"]).await else { return };
                let (t1, t2, t3) = (
                    new_task("a", 1, "1"),
                    new_task("a", 2, "2"),
                    new_task("a", 3, "3"),
                );
                d.task_insert_many(vec![t1.clone(), t2.clone(), t3.clone()])
                    .await
                    .unwrap();
                d.task_claim(None, 1, LEASE, Some(100)).await.unwrap();
                d.task_claim(None, 1, LEASE, Some(200)).await.unwrap();
                let running = d.task_list(TaskState::Running, page(0, 10)).await.unwrap();
                let claims: Vec<_> = running.iter().map(|t| (t.id, t.claimed_at)).collect();
                assert_eq!(claims, [(t1.id, Some(100)), (t2.id, Some(200))]);
                let upcoming = d.task_list(TaskState::Upcoming, page(0, 10)).await.unwrap();
                assert_eq!(upcoming.len(), 1);
                assert_eq!((upcoming[0].id, upcoming[0].claimed_at), (t3.id, None));
            }

            #[tokio::test]
            async fn lists_cut_payloads_and_get_returns_them_whole() {
                let Some(d) = open(&["a"]).await else { return };
                let long = format!("[{}]", "7,".repeat(400) + "7");
                let t = new_task("a", 1, &long);
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                let listed = d.task_list(TaskState::Upcoming, page(0, 1)).await.unwrap();
                assert_eq!(listed[0].payload, &long.as_bytes()[..PREVIEW_BYTES]);
                assert_eq!(listed[0].payload_len, long.len() as u64);
                let got = d.task_get(t.id).await.unwrap().unwrap();
                assert_eq!(got.payload, long.as_bytes());
                assert_eq!(got.payload_len, long.len() as u64);
                assert_eq!(
                    (got.queue.as_str(), got.run_at, got.created_at),
                    ("a", 1, 1_000)
                );
                assert_eq!(d.task_get(TaskId::new()).await.unwrap(), None);
            }

            #[tokio::test]
            async fn get_shows_the_last_attempt_of_a_retried_task() {
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 1, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                let token = d.task_claim(None, 1, LEASE, Some(100)).await.unwrap()[0].token;
                let retry = Completion {
                    next: Next::Retry { run_at: 300 },
                    executed_at: 100,
                    ..done(t.id, token, Some("<b>boom</b>"), None)
                };
                d.task_complete_many(vec![retry]).await.unwrap();
                let got = d.task_get(t.id).await.unwrap().unwrap();
                assert_eq!(got.attempts, 1);
                assert_eq!(got.run_at, 300);
                assert_eq!(got.claimed_at, None);
                assert_eq!(got.last_executed_at, Some(100));
                assert_eq!(got.last_duration, Some(Duration::from_micros(1500)));
                assert_eq!(got.last_error.as_deref(), Some("<b>boom</b>"));
            }

            #[tokio::test]
            async fn completed_lists_merge_queues_by_end_and_page_across_them() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                let tasks = tasks_in_turn(&["a", "b"], 6);
                d.task_insert_many(tasks.clone()).await.unwrap();
                let claimed = d.task_claim(None, 10, LEASE, Some(100)).await.unwrap();
                let token = |i: usize| claimed.iter().find(|c| c.id == tasks[i].id).unwrap().token;
                let keep = Some(Retain {
                    payload: true,
                    expires_at: None,
                });
                let finish = |i: usize, at: i64, error: Option<&str>| Completion {
                    executed_at: at,
                    ..done(tasks[i].id, token(i), error, keep)
                };
                let cancel = cancelled(finish(5, 650, Some("cancelled")));
                d.task_complete_many(vec![
                    finish(0, 500, None),
                    finish(1, 800, None),
                    finish(2, 700, None),
                    finish(3, 600, Some("no")),
                    finish(4, 900, Some("no")),
                    cancel,
                ])
                .await
                .unwrap();
                let ids = |list: Vec<crate::storage::CompletedRecord>| -> Vec<TaskId> {
                    list.iter().map(|c| c.id).collect()
                };
                let id = |i: usize| tasks[i].id;
                // Succeeded in both queues, by end: b's 800, a's 700, a's 500.
                let ok = d.completed_list(true, page(0, 10)).await.unwrap();
                assert_eq!(ids(ok), [id(1), id(2), id(0)]);
                for (offset, expected) in [(0, id(1)), (1, id(2)), (2, id(0))] {
                    let one = d.completed_list(true, page(offset, 1)).await.unwrap();
                    assert_eq!(ids(one), [expected], "offset {offset}");
                }
                // Failed and cancelled together: a's 900, b's cancel at 650, b's 600.
                let failed = d.completed_list(false, page(0, 10)).await.unwrap();
                assert_eq!(ids(failed), [id(4), id(5), id(3)]);
                let second = d.completed_list(false, page(1, 2)).await.unwrap();
                assert_eq!(ids(second), [id(5), id(3)]);
            }

            #[tokio::test]
            async fn completed_lists_by_outcome_most_recent_first() {
                let Some(d) = open(&["a"]).await else { return };
                let tasks: Vec<_> = (0..4).map(|i| new_task("a", i, "{\"n\":1}")).collect();
                d.task_insert_many(tasks.clone()).await.unwrap();
                let claimed = d.task_claim(None, 10, LEASE, Some(100)).await.unwrap();
                let token = |i: usize| claimed.iter().find(|c| c.id == tasks[i].id).unwrap().token;
                let keep = |payload| {
                    Some(Retain {
                        payload,
                        expires_at: Some(9_000),
                    })
                };
                let finish = |i: usize, at: i64, error: Option<&str>, payload: bool| Completion {
                    executed_at: at,
                    ..done(tasks[i].id, token(i), error, keep(payload))
                };
                d.task_complete_many(vec![
                    finish(0, 500, None, true),
                    finish(1, 700, None, false),
                    finish(2, 600, Some("no <luck>"), true),
                    finish(3, 400, None, true),
                ])
                .await
                .unwrap();
                let ok = d.completed_list(true, page(0, 10)).await.unwrap();
                let ids: Vec<_> = ok.iter().map(|c| c.id).collect();
                assert_eq!(ids, [tasks[1].id, tasks[0].id, tasks[3].id]);
                let paged = d.completed_list(true, page(1, 1)).await.unwrap();
                assert_eq!(paged[0].id, tasks[0].id);
                let failed = d.completed_list(false, page(0, 10)).await.unwrap();
                assert_eq!(failed.len(), 1);
                let f = &failed[0];
                assert_eq!((f.id, f.succeeded, f.attempts), (tasks[2].id, false, 1));
                assert_eq!(f.error.as_deref(), Some("no <luck>"));
                assert_eq!((f.created_at, f.last_executed_at), (1_000, 600));
                assert_eq!(f.expires_at, Some(9_000));
                assert_eq!(f.last_duration, Duration::from_micros(1500));

                let kept = d.completed_get(tasks[0].id).await.unwrap().unwrap();
                assert_eq!(kept.payload.as_deref(), Some(&b"{\"n\":1}"[..]));
                assert!(kept.succeeded);
                let outcome_only = d.completed_get(tasks[1].id).await.unwrap().unwrap();
                assert_eq!((outcome_only.payload, outcome_only.payload_len), (None, 0));
                assert_eq!(d.completed_get(TaskId::new()).await.unwrap(), None);
                assert_eq!(
                    d.task_get(tasks[0].id).await.unwrap(),
                    None,
                    "a completed task is no longer listed as waiting or running"
                );
            }
        }
    };
}

pub(crate) use browse_conformance;
