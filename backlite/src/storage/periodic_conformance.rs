//! The conformance suite of the periodic-task operations (`schedule_register`,
//! `schedule_list`, `schedule_tick`), which every driver must pass as it passes
//! `driver_conformance!`. Instantiated with
//! `periodic_conformance!(module_name, async fn open(queues) -> impl Driver)`.

macro_rules! periodic_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use crate::periodic::tick_id;
            use crate::storage::conformance::{LEASE, done};
            use crate::storage::periodic::{ScheduleDef, ScheduleRow, TickClaim, TickOutcome};
            use crate::storage::{Driver, Millis, NewTask, Retain};

            async fn open(queues: &[&'static str]) -> Option<impl Driver> {
                ($open)(queues.to_vec()).await
            }

            fn def(name: &str, definition: &str, next_run_at: Millis) -> ScheduleDef {
                ScheduleDef {
                    name: name.into(),
                    definition: definition.into(),
                    next_run_at,
                }
            }

            fn row(name: &str, definition: &str, next_run_at: Millis) -> ScheduleRow {
                ScheduleRow {
                    name: name.into(),
                    definition: definition.into(),
                    next_run_at,
                }
            }

            fn tick_task(schedule: &str, tick: Millis) -> NewTask {
                NewTask {
                    id: tick_id(schedule, tick),
                    queue: "a",
                    payload: format!("{{\"tick\":{tick}}}").into_bytes(),
                    created_at: tick,
                    run_at: tick,
                    priority: 0,
                    expires_at: None,
                    unique_key: None,
                    unique_for: None,
                }
            }

            fn claim(expected: Millis, next_run_at: Millis, ticks: &[Millis]) -> TickClaim {
                TickClaim {
                    name: "a".into(),
                    expected,
                    next_run_at,
                    tasks: ticks.iter().map(|&t| tick_task("a", t)).collect(),
                }
            }

            async fn next_run_at(d: &impl Driver, name: &str) -> Option<Millis> {
                let listed = d.schedule_list(vec![name.into()], Some(0)).await.unwrap();
                listed.rows.first().map(|r| r.next_run_at)
            }

            async fn waiting_ticks(d: &impl Driver) -> Vec<Millis> {
                let waiting = d.task_list_waiting("a").await.unwrap();
                waiting.iter().map(|t| t.run_at).collect()
            }

            #[tokio::test]
            async fn register_keeps_an_unchanged_schedule_and_restarts_a_changed_one() {
                let Some(d) = open(&["a"]).await else { return };
                let stored = d
                    .schedule_register(vec![def("a", "every 100ms", 1_100), def("b", "x", 7)])
                    .await
                    .unwrap();
                assert_eq!(stored, [row("a", "every 100ms", 1_100), row("b", "x", 7)]);
                d.schedule_tick(claim(1_100, 1_200, &[1_100]))
                    .await
                    .unwrap();
                // Same definition (another process, or a restart): the stored tick stays.
                let again = d
                    .schedule_register(vec![def("a", "every 100ms", 5_000)])
                    .await
                    .unwrap();
                assert_eq!(again, [row("a", "every 100ms", 1_200)]);
                // Another definition: stored with its own next tick.
                let changed = d
                    .schedule_register(vec![def("a", "every 300ms", 1_500)])
                    .await
                    .unwrap();
                assert_eq!(changed, [row("a", "every 300ms", 1_500)]);
                assert_eq!(next_run_at(&d, "b").await, Some(7));
            }

            #[tokio::test]
            async fn list_names_only_the_schedules_asked_for_with_the_storage_time() {
                let Some(d) = open(&["a"]).await else { return };
                d.schedule_register(vec![
                    def("a", "x", 10),
                    def("b", "y", 20),
                    def("c", "z", 30),
                ])
                .await
                .unwrap();
                let listed = d
                    .schedule_list(vec!["c".into(), "a".into(), "missing".into()], Some(1_234))
                    .await
                    .unwrap();
                let mut rows = listed.rows;
                rows.sort_by(|x, y| x.name.cmp(&y.name));
                assert_eq!(rows, [row("a", "x", 10), row("c", "z", 30)]);
                assert_eq!(listed.now, 1_234);
                // Without a given time, the storage's clock: close to this machine's here.
                let none = d.schedule_list(vec!["missing".into()], None).await.unwrap();
                assert!(none.rows.is_empty());
                let here = crate::storage::now_millis();
                assert!((none.now - here).abs() < 60_000, "{} vs {here}", none.now);
            }

            /// The first guard: a claim applies only from the tick it read. Of two claims of
            /// one tick, the second changes nothing, whichever tasks it carries.
            #[tokio::test]
            async fn a_tick_claim_moves_the_schedule_only_from_the_tick_it_read() {
                let Some(d) = open(&["a"]).await else { return };
                d.schedule_register(vec![def("a", "every 100ms", 1_000)])
                    .await
                    .unwrap();
                let first = d
                    .schedule_tick(claim(1_000, 1_100, &[1_000]))
                    .await
                    .unwrap();
                assert_eq!(first, TickOutcome::Claimed { inserted: 1 });
                assert_eq!(next_run_at(&d, "a").await, Some(1_100));
                // A second claimer read 1_000 too; its task has another id (built as another
                // process would if the ids did not guard), so only the CAS refuses it.
                let mut late = claim(1_000, 1_100, &[1_000]);
                late.tasks[0].id = crate::task::TaskId::new();
                assert_eq!(d.schedule_tick(late).await.unwrap(), TickOutcome::Lost);
                // A claim from a tick that was never stored is refused too.
                let stale = claim(900, 1_100, &[900]);
                assert_eq!(d.schedule_tick(stale).await.unwrap(), TickOutcome::Lost);
                // An unknown schedule has nothing to move.
                let mut unknown = claim(1_100, 1_200, &[1_100]);
                unknown.name = "nope".into();
                assert_eq!(d.schedule_tick(unknown).await.unwrap(), TickOutcome::Lost);
                assert_eq!(waiting_ticks(&d).await, [1_000]);
                assert_eq!(next_run_at(&d, "a").await, Some(1_100));
            }

            /// The second guard: a tick's task is stored once even when the schedule is
            /// moved back to that tick (a changed definition stored it again), whether the
            /// first copy waits or was retained after it ran.
            #[tokio::test]
            async fn a_tick_already_stored_is_not_inserted_again() {
                let Some(d) = open(&["a"]).await else { return };
                d.schedule_register(vec![def("a", "every 100ms", 1_000)])
                    .await
                    .unwrap();
                let outcome = d.schedule_tick(claim(1_000, 1_200, &[1_000, 1_100])).await;
                assert_eq!(outcome.unwrap(), TickOutcome::Claimed { inserted: 2 });
                // Run the first tick and retain it; the second waits.
                let claimed = d.task_claim(None, 1, LEASE, Some(1_150)).await.unwrap();
                assert_eq!(claimed[0].id, tick_id("a", 1_000));
                let retain = Some(Retain {
                    payload: false,
                    expires_at: None,
                });
                d.task_complete_many(vec![done(claimed[0].id, claimed[0].token, None, retain)])
                    .await
                    .unwrap();
                // Back to 1_000 under another definition; its ticks are claimed again.
                d.schedule_register(vec![def("a", "every 100ms, again", 1_000)])
                    .await
                    .unwrap();
                let again = d
                    .schedule_tick(claim(1_000, 1_300, &[1_000, 1_100, 1_200]))
                    .await
                    .unwrap();
                assert_eq!(again, TickOutcome::Claimed { inserted: 1 });
                assert_eq!(waiting_ticks(&d).await, [1_100, 1_200]);
                assert_eq!(next_run_at(&d, "a").await, Some(1_300));
            }

            /// Catch-up: a claim of several due ticks stores each as its own task, due at its
            /// tick, in tick order; one of none (ticks dropped) still moves the schedule on.
            #[tokio::test]
            async fn catch_up_claims_store_every_tick_or_none() {
                let Some(d) = open(&["a"]).await else { return };
                d.schedule_register(vec![def("a", "every 100ms", 1_000)])
                    .await
                    .unwrap();
                let all = d
                    .schedule_tick(claim(1_000, 1_500, &[1_200, 1_300, 1_400]))
                    .await
                    .unwrap();
                assert_eq!(all, TickOutcome::Claimed { inserted: 3 });
                assert_eq!(waiting_ticks(&d).await, [1_200, 1_300, 1_400]);
                let ids: Vec<_> = d
                    .task_list_waiting("a")
                    .await
                    .unwrap()
                    .iter()
                    .map(|t| t.id)
                    .collect();
                assert_eq!(
                    ids,
                    [
                        tick_id("a", 1_200),
                        tick_id("a", 1_300),
                        tick_id("a", 1_400)
                    ]
                );
                let skipped = d.schedule_tick(claim(1_500, 2_000, &[])).await.unwrap();
                assert_eq!(skipped, TickOutcome::Claimed { inserted: 0 });
                assert_eq!(next_run_at(&d, "a").await, Some(2_000));
                assert_eq!(waiting_ticks(&d).await.len(), 3);
            }

            /// Many claimers of one tick at once, as many processes would be: one wins.
            #[tokio::test]
            async fn concurrent_claims_of_one_tick_enqueue_it_once() {
                let Some(d) = open(&["a"]).await else { return };
                let d = std::sync::Arc::new(d);
                d.schedule_register(vec![def("a", "every 100ms", 1_000)])
                    .await
                    .unwrap();
                let claims = (0..8).map(|_| {
                    let d = d.clone();
                    tokio::spawn(async move {
                        // Each with an id of its own: only the CAS may keep the tick single.
                        let mut c = claim(1_000, 1_100, &[1_000]);
                        c.tasks[0].id = crate::task::TaskId::new();
                        d.schedule_tick(c).await.unwrap()
                    })
                });
                let mut won = 0;
                for outcome in futures_join(claims.collect()).await {
                    if outcome == (TickOutcome::Claimed { inserted: 1 }) {
                        won += 1;
                    } else {
                        assert_eq!(outcome, TickOutcome::Lost);
                    }
                }
                assert_eq!(won, 1);
                assert_eq!(waiting_ticks(&*d).await, [1_000]);
            }

            /// Processes started at once all store a new schedule: each gets the one row
            /// that was stored first, with its first tick.
            #[tokio::test]
            async fn concurrent_registrations_of_a_new_schedule_agree() {
                let Some(d) = open(&["a"]).await else { return };
                let d = std::sync::Arc::new(d);
                let registrations: Vec<_> = (0..8)
                    .map(|i| {
                        let d = d.clone();
                        tokio::spawn(async move {
                            d.schedule_register(vec![def("a", "every 100ms", 1_000 + i)])
                                .await
                                .unwrap()
                        })
                    })
                    .collect();
                let mut stored = Vec::new();
                for registration in registrations {
                    stored.extend(registration.await.unwrap());
                }
                let first = next_run_at(&*d, "a").await.unwrap();
                assert!((1_000..1_008).contains(&first));
                assert_eq!(stored, vec![row("a", "every 100ms", first); 8]);
            }

            async fn futures_join(
                handles: Vec<tokio::task::JoinHandle<TickOutcome>>,
            ) -> Vec<TickOutcome> {
                let mut outcomes = Vec::with_capacity(handles.len());
                for handle in handles {
                    outcomes.push(handle.await.unwrap());
                }
                outcomes
            }
        }
    };
}

pub(crate) use periodic_conformance;
