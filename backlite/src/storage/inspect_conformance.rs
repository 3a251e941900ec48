//! The conformance suite of the inspecting operations (`task_info`, `task_page`,
//! `task_facts`) and of the error history `task_complete_many` keeps, which every driver must
//! pass as it passes `driver_conformance!`. Instantiated with
//! `inspect_conformance!(module_name, async fn open(queues) -> impl Driver)`.

macro_rules! inspect_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use crate::storage::conformance::{LEASE, cancelled, done, new_task, tasks_in_turn};
            use crate::storage::inspect::{ERRORS_KEPT, Fixture, Keyset, ListKind, Span};
            use crate::storage::{
                ClaimToken, Completion, Driver, Facts, ListQuery, Next, Retain, SummaryRecord,
            };
            use crate::task::{TaskId, TaskStatus};
            use std::time::Duration;

            async fn open(queues: &[&'static str]) -> Option<impl Driver> {
                ($open)(queues.to_vec()).await
            }

            /// The token of the one task a claim at `now` takes.
            async fn claim_one(d: &impl Driver, now: i64) -> (TaskId, ClaimToken) {
                let claimed = d.task_claim(None, 1, LEASE, Some(now)).await.unwrap();
                assert_eq!(claimed.len(), 1, "nothing to claim at {now}");
                (claimed[0].id, claimed[0].token)
            }

            fn failed(id: TaskId, token: ClaimToken, at: i64, error: &str) -> Completion {
                Completion {
                    executed_at: at,
                    duration: Duration::from_micros(2_000),
                    next: Next::Retry { run_at: at + 1 },
                    ..done(id, token, Some(error), None)
                }
            }

            const KEEP: Option<Retain> = Some(Retain {
                payload: true,
                expires_at: Some(90_000),
            });

            fn errors(json: Option<&str>) -> Vec<(u64, i64, i64, String)> {
                let Some(json) = json else { return Vec::new() };
                let list: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
                list.iter()
                    .map(|e| {
                        (
                            e["attempt"].as_u64().unwrap(),
                            e["at"].as_i64().unwrap(),
                            e["duration_us"].as_i64().unwrap(),
                            e["error"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            }

            #[tokio::test]
            async fn failed_attempts_are_kept_and_carried_into_the_retained_row() {
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 10, "{\"n\":1}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                let (id, token) = claim_one(&d, 100).await;
                d.task_complete_many(vec![failed(id, token, 100, "first <b>")])
                    .await
                    .unwrap();
                let waiting = d.task_info(id).await.unwrap().unwrap();
                assert_eq!(waiting.status, TaskStatus::Pending);
                assert_eq!(
                    errors(waiting.errors.as_deref()),
                    [(1, 100, 2_000, "first <b>".to_owned())]
                );
                let (_, token) = claim_one(&d, 200).await;
                d.task_complete_many(vec![failed(id, token, 200, "second \"quoted\"")])
                    .await
                    .unwrap();
                let (_, token) = claim_one(&d, 300).await;
                // The third attempt succeeds: it adds nothing and keeps the two failures.
                let success = Completion {
                    executed_at: 300,
                    ..done(id, token, None, KEEP)
                };
                d.task_complete_many(vec![success]).await.unwrap();
                let kept = d.task_info(id).await.unwrap().unwrap();
                assert_eq!(kept.status, TaskStatus::Succeeded);
                assert_eq!(kept.attempts, 3);
                assert_eq!(
                    errors(kept.errors.as_deref()),
                    [
                        (1, 100, 2_000, "first <b>".to_owned()),
                        (2, 200, 2_000, "second \"quoted\"".to_owned())
                    ]
                );
            }

            #[tokio::test]
            async fn the_last_ten_failures_are_kept_the_final_one_included() {
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 0, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                for attempt in 1..=12_i64 {
                    let (_, token) = claim_one(&d, attempt * 10).await;
                    let text = format!("e{attempt}");
                    d.task_complete_many(vec![failed(t.id, token, attempt * 10, &text)])
                        .await
                        .unwrap();
                }
                let (_, token) = claim_one(&d, 1_000).await;
                let last = Completion {
                    executed_at: 1_000,
                    ..done(t.id, token, Some("final"), KEEP)
                };
                d.task_complete_many(vec![last]).await.unwrap();
                let kept = d.task_info(t.id).await.unwrap().unwrap();
                assert_eq!(kept.status, TaskStatus::Failed);
                let history = errors(kept.errors.as_deref());
                assert_eq!(history.len(), ERRORS_KEPT);
                let attempts: Vec<u64> = history.iter().map(|e| e.0).collect();
                assert_eq!(attempts, (4..=13).collect::<Vec<u64>>());
                assert_eq!(history[0].3, "e4");
                assert_eq!(history[9].3, "final");
            }

            #[tokio::test]
            async fn a_first_attempt_that_succeeds_has_no_history() {
                let Some(d) = open(&["a"]).await else { return };
                let t = new_task("a", 0, "{}");
                d.task_insert_many(vec![t.clone()]).await.unwrap();
                let (_, token) = claim_one(&d, 10).await;
                d.task_complete_many(vec![done(t.id, token, None, KEEP)])
                    .await
                    .unwrap();
                let kept = d.task_info(t.id).await.unwrap().unwrap();
                assert_eq!(kept.errors, None);
            }

            #[tokio::test]
            async fn info_finds_a_task_waiting_running_or_retained() {
                let Some(d) = open(&["a"]).await else { return };
                let (t1, t2) = (new_task("a", 5, "{\"w\":1}"), new_task("a", 6, "[2]"));
                d.task_insert_many(vec![t1.clone(), t2.clone()])
                    .await
                    .unwrap();
                let waiting = d.task_info(t2.id).await.unwrap().unwrap();
                assert_eq!(
                    (waiting.status, waiting.run_at, waiting.created_at),
                    (TaskStatus::Pending, Some(6), 1_000)
                );
                assert_eq!(waiting.payload.as_deref(), Some(&b"[2]"[..]));
                assert_eq!((waiting.claimed_at, waiting.lease_until), (None, None));

                let (id, token) = claim_one(&d, 100).await;
                assert_eq!(id, t1.id);
                let process = uuid::Uuid::now_v7().to_string();
                d.inspect_fixture(Fixture::ClaimedBy {
                    task: id,
                    process: process.clone(),
                    renewed_at: 150,
                })
                .await
                .unwrap();
                let running = d.task_info(id).await.unwrap().unwrap();
                assert_eq!(running.status, TaskStatus::Running);
                assert_eq!(running.claimed_at, Some(100));
                assert_eq!(running.lease_until, Some(1_100));
                assert_eq!(running.lease_renewed_at, Some(150));
                assert_eq!(running.claimed_by.as_deref(), Some(process.as_str()));

                let outcome_only = Some(Retain {
                    payload: false,
                    expires_at: Some(9_000),
                });
                let finish = Completion {
                    executed_at: 200,
                    duration: Duration::from_millis(30),
                    ..done(id, token, None, outcome_only)
                };
                d.task_complete_many(vec![finish]).await.unwrap();
                let kept = d.task_info(id).await.unwrap().unwrap();
                assert_eq!(kept.status, TaskStatus::Succeeded);
                assert_eq!((kept.payload, kept.run_at), (None, None));
                assert_eq!(kept.last_executed_at, Some(200));
                assert_eq!(kept.last_duration, Some(Duration::from_millis(30)));
                assert_eq!(kept.expires_at, Some(9_000));
                assert_eq!(kept.claimed_by, None);
                assert_eq!(d.task_info(TaskId::new()).await.unwrap(), None);
            }

            fn query(kind: ListKind) -> ListQuery {
                ListQuery {
                    kind,
                    queue: None,
                    created: Span::ALL,
                    due: Span::ALL,
                    after: None,
                    limit: 100,
                }
            }

            fn ids(page: &[SummaryRecord]) -> Vec<TaskId> {
                page.iter().map(|r| r.id).collect()
            }

            /// Every page of `query`, `limit` rows each, each read after the last row of the
            /// page before.
            async fn all_pages(d: &impl Driver, mut query: ListQuery) -> Vec<Vec<TaskId>> {
                let mut pages = Vec::new();
                loop {
                    let page = d.task_page(query.clone()).await.unwrap();
                    let Some(last) = page.last() else { break };
                    query.after = Some(last.keyset);
                    pages.push(ids(&page));
                }
                pages
            }

            #[tokio::test]
            async fn waiting_pages_follow_claim_order_by_keyset() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                // Ties on run_at across and within queues: insertion order breaks them.
                let mut tasks = vec![
                    new_task("b", 30, "b30"),
                    new_task("a", 10, "a10"),
                    new_task("a", 30, "a30"),
                    new_task("c", 10, "c10"),
                    new_task("a", 30, "a30'"),
                    new_task("b", 5, "b5"),
                ];
                tasks[3].created_at = 5_000;
                d.task_insert_many(tasks.clone()).await.unwrap();
                let id = |i: usize| tasks[i].id;
                let all = d.task_page(query(ListKind::Waiting)).await.unwrap();
                assert_eq!(ids(&all), [id(5), id(1), id(3), id(0), id(2), id(4)]);
                assert_eq!(all[0].status, TaskStatus::Pending);
                assert_eq!(all[0].run_at, Some(5));

                let paged = all_pages(
                    &d,
                    ListQuery {
                        limit: 2,
                        ..query(ListKind::Waiting)
                    },
                )
                .await;
                assert_eq!(
                    paged,
                    [vec![id(5), id(1)], vec![id(3), id(0)], vec![id(2), id(4)]]
                );
                let a_pages = all_pages(
                    &d,
                    ListQuery {
                        limit: 2,
                        queue: Some("a".into()),
                        ..query(ListKind::Waiting)
                    },
                )
                .await;
                assert_eq!(a_pages, [vec![id(1), id(2)], vec![id(4)]]);

                // Due before 30 (what "pending at 29" reads), and due from 30 on.
                let due_early = ListQuery {
                    due: Span {
                        from: i64::MIN,
                        to: 30,
                    },
                    ..query(ListKind::Waiting)
                };
                let early = d.task_page(due_early).await.unwrap();
                assert_eq!(ids(&early), [id(5), id(1), id(3)]);
                let due_late = ListQuery {
                    due: Span {
                        from: 30,
                        to: i64::MAX,
                    },
                    queue: Some("a".into()),
                    ..query(ListKind::Waiting)
                };
                assert_eq!(ids(&d.task_page(due_late).await.unwrap()), [id(2), id(4)]);
                let created_late = ListQuery {
                    created: Span {
                        from: 2_000,
                        to: i64::MAX,
                    },
                    ..query(ListKind::Waiting)
                };
                assert_eq!(ids(&d.task_page(created_late).await.unwrap()), [id(3)]);
                let none = ListQuery {
                    queue: Some("zzz".into()),
                    ..query(ListKind::Waiting)
                };
                assert!(d.task_page(none).await.unwrap().is_empty());
                assert!(
                    d.task_page(query(ListKind::Running))
                        .await
                        .unwrap()
                        .is_empty()
                );
            }

            #[tokio::test]
            async fn running_and_retained_pages_by_state_and_keyset() {
                let Some(d) = open(&["a", "b"]).await else {
                    return;
                };
                let tasks = tasks_in_turn(&["a", "b"], 6);
                d.task_insert_many(tasks.clone()).await.unwrap();
                let id = |i: usize| tasks[i].id;
                let mut tokens = Vec::new();
                for now in [100, 100, 200, 300, 300, 400] {
                    tokens.push(claim_one(&d, now).await.1);
                }
                let running = all_pages(
                    &d,
                    ListQuery {
                        limit: 2,
                        ..query(ListKind::Running)
                    },
                )
                .await;
                assert_eq!(
                    running,
                    [vec![id(0), id(1)], vec![id(2), id(3)], vec![id(4), id(5)]]
                );
                let running_b = ListQuery {
                    queue: Some("b".into()),
                    ..query(ListKind::Running)
                };
                let page = d.task_page(running_b).await.unwrap();
                assert_eq!(ids(&page), [id(1), id(3), id(5)]);
                assert_eq!(page[0].status, TaskStatus::Running);
                assert_eq!(page[0].claimed_at, Some(100));

                let end = |i: usize, at: i64, error: Option<&str>| Completion {
                    executed_at: at,
                    ..done(id(i), tokens[i], error, KEEP)
                };
                let cancel = cancelled(end(5, 900, Some("cancelled")));
                d.task_complete_many(vec![
                    end(0, 500, None),
                    end(1, 700, None),
                    end(2, 700, Some("no")),
                    end(3, 600, None),
                    end(4, 800, Some("no again")),
                    cancel,
                ])
                .await
                .unwrap();
                let ok = all_pages(
                    &d,
                    ListQuery {
                        limit: 2,
                        ..query(ListKind::Succeeded)
                    },
                )
                .await;
                assert_eq!(ok, [vec![id(1), id(3)], vec![id(0)]]);
                let failed = d.task_page(query(ListKind::Failed)).await.unwrap();
                assert_eq!(ids(&failed), [id(4), id(2)]);
                assert_eq!(failed[0].status, TaskStatus::Failed);
                assert_eq!(failed[0].last_error.as_deref(), Some("no again"));
                assert_eq!(failed[0].run_at, None);
                let cancelled = d.task_page(query(ListKind::Cancelled)).await.unwrap();
                assert_eq!(ids(&cancelled), [id(5)]);
                assert_eq!(cancelled[0].status, TaskStatus::Cancelled);
                let failed_a = ListQuery {
                    queue: Some("a".into()),
                    ..query(ListKind::Failed)
                };
                assert_eq!(ids(&d.task_page(failed_a).await.unwrap()), [id(4), id(2)]);
                let failed_b = ListQuery {
                    queue: Some("b".into()),
                    ..query(ListKind::Failed)
                };
                assert!(d.task_page(failed_b).await.unwrap().is_empty());
                // A cursor past the end reads nothing.
                let past = ListQuery {
                    after: Some(Keyset {
                        priority: 0,
                        key: 0,
                        seq: 0,
                    }),
                    ..query(ListKind::Succeeded)
                };
                assert!(d.task_page(past).await.unwrap().is_empty());
            }

            fn process(queues: Vec<&'static str>, last_seen_at: i64) -> Fixture {
                Fixture::Process {
                    id: uuid::Uuid::now_v7().to_string(),
                    host: "web-1",
                    pid: 4242,
                    queues,
                    last_seen_at,
                }
            }

            #[tokio::test]
            async fn facts_of_a_waiting_task_name_its_pause_processes_and_line() {
                let Some(d) = open(&["a"]).await else { return };
                let tasks = vec![
                    new_task("a", 10, "{}"),
                    new_task("a", 20, "{}"),
                    new_task("a", 20, "{}"),
                    new_task("b", 5, "{}"),
                    new_task("a", 5_000, "{}"),
                ];
                d.task_insert_many(tasks.clone()).await.unwrap();
                let live = Duration::from_millis(1_000);
                let facts = |i: usize| {
                    let id = tasks[i].id;
                    let d = &d;
                    async move { d.task_facts(id, Some(1_000), live).await.unwrap() }
                };
                let expect =
                    |queue: &str, run_at, paused_at, live_processes, ahead| Facts::Waiting {
                        queue: queue.into(),
                        run_at,
                        attempts: 0,
                        paused_at,
                        live_processes,
                        ahead,
                        expires_at: None,
                        now: 1_000,
                    };
                assert_eq!(facts(2).await, expect("a", 20, None, 0, 2));
                assert_eq!(facts(0).await, expect("a", 10, None, 0, 0));
                // Not due: nothing is ahead of it yet.
                assert_eq!(facts(4).await, expect("a", 5_000, None, 0, 0));

                // Seen 1,000 ms ago or earlier: not live; other queues: not counted.
                for fixture in [
                    process(vec!["a", "c"], 900),
                    process(vec!["a"], 950),
                    process(vec!["a"], 0),
                    process(vec!["b"], 990),
                    process(vec!["ab"], 990),
                ] {
                    d.inspect_fixture(fixture).await.unwrap();
                }
                assert!(d.queue_pause("a".into(), Some(700)).await.unwrap());
                assert_eq!(facts(1).await, expect("a", 20, Some(700), 2, 1));
                assert_eq!(facts(3).await, expect("b", 5, None, 1, 0));

                // Claimed tasks leave the line of those after them.
                assert!(d.queue_resume("a".into()).await.unwrap());
                claim_one(&d, 1_000).await;
                claim_one(&d, 1_000).await;
                assert_eq!(facts(2).await, expect("a", 20, None, 2, 0));
            }

            #[tokio::test]
            async fn facts_of_running_retained_and_unknown_tasks() {
                let Some(d) = open(&["a"]).await else { return };
                let (t1, t2) = (new_task("a", 10, "{}"), new_task("a", 20, "{}"));
                d.task_insert_many(vec![t1.clone(), t2.clone()])
                    .await
                    .unwrap();
                let live = Duration::from_millis(1_000);
                let (_, token) = claim_one(&d, 100).await;
                let Facts::Running {
                    claimed_at,
                    lease_until,
                    ..
                } = d.task_facts(t1.id, Some(150), live).await.unwrap()
                else {
                    panic!("not running")
                };
                assert_eq!((claimed_at, lease_until), (100, Some(1_100)));
                let process = uuid::Uuid::now_v7().to_string();
                d.inspect_fixture(Fixture::Process {
                    id: process.clone(),
                    host: "web-1",
                    pid: 4242,
                    queues: vec!["a"],
                    last_seen_at: 120,
                })
                .await
                .unwrap();
                d.inspect_fixture(Fixture::ClaimedBy {
                    task: t1.id,
                    process: process.clone(),
                    renewed_at: 130,
                })
                .await
                .unwrap();
                let Facts::Running {
                    claimed_by,
                    process: row,
                    lease_renewed_at,
                    ..
                } = d.task_facts(t1.id, Some(150), live).await.unwrap()
                else {
                    panic!("not running")
                };
                assert_eq!(claimed_by.as_deref(), Some(process.as_str()));
                let row = row.expect("the claimer's row");
                assert_eq!((row.host.as_str(), row.pid), ("web-1", 4242));
                assert_eq!(lease_renewed_at, Some(130));

                let cancelled = Completion {
                    executed_at: 200,
                    duration: Duration::from_millis(40),
                    next: Next::Done {
                        retain: KEEP,
                        cancelled: true,
                    },
                    ..done(t1.id, token, Some("cancelled"), None)
                };
                d.task_complete_many(vec![cancelled]).await.unwrap();
                assert_eq!(
                    d.task_facts(t1.id, Some(300), live).await.unwrap(),
                    Facts::Completed {
                        status: TaskStatus::Cancelled,
                        finished_at: 240,
                    }
                );
                assert_eq!(
                    d.task_facts(TaskId::new(), None, live).await.unwrap(),
                    Facts::NotFound
                );
                // With no time given, the storage's own clock decides.
                let Facts::Waiting { now, .. } = d.task_facts(t2.id, None, live).await.unwrap()
                else {
                    panic!("not waiting")
                };
                let wall = crate::storage::now_millis();
                assert!((now - wall).abs() < 60_000, "{now} vs {wall}");
            }
        }
    };
}

pub(crate) use inspect_conformance;
