//! The conformance suite of leases and processes (`task_renew_leases`, `process_register`,
//! `process_list`, `process_remove`), which every driver must pass as it passes
//! `driver_conformance!`. Instantiated with
//! `lease_conformance!(module_name, async fn open(queues) -> impl Driver)`.

macro_rules! lease_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use crate::storage::conformance::{LEASE, done, new_task};
            use crate::storage::{CancelRetention, Cancelled, Driver, ProcessId, ProcessRecord};
            use std::time::Duration;

            async fn open(queues: &[&'static str]) -> Option<impl Driver> {
                ($open)(queues.to_vec()).await
            }

            fn process(id: ProcessId, host: &str, started_at: i64) -> ProcessRecord {
                ProcessRecord {
                    id,
                    host: host.to_owned(),
                    pid: 4242,
                    queues: vec!["a".to_owned(), "b".to_owned()],
                    workers: 8,
                    started_at,
                    last_seen_at: 0,
                }
            }

            #[tokio::test]
            async fn a_renewal_extends_the_lease_from_its_time() {
                let Some(d) = open(&["a"]).await else { return };
                let p = ProcessId::new();
                let task = new_task("a", 10, "1");
                d.task_insert_many(vec![task.clone()]).await.unwrap();
                let claimed = d.task_claim(Some(p), 1, LEASE, Some(100)).await.unwrap();
                let token = claimed[0].token;
                // Claimed at 100: the lease would end at 1100.
                let renewal = d
                    .task_renew_leases(p, vec![(task.id, token)], LEASE, Some(600))
                    .await
                    .unwrap();
                assert!(renewal.lost.is_empty(), "{renewal:?}");
                assert!(renewal.cancel_requested.is_empty(), "{renewal:?}");
                assert_eq!(renewal.renewed, 1);
                assert_eq!(d.task_release_stuck(Some(1100)).await.unwrap(), 0);
                assert_eq!(d.task_release_stuck(Some(1599)).await.unwrap(), 0);
                assert_eq!(d.task_release_stuck(Some(1600)).await.unwrap(), 1);
            }

            #[tokio::test]
            async fn a_renewal_with_a_stale_token_is_lost_and_changes_nothing() {
                let Some(d) = open(&["a"]).await else { return };
                let (p, q) = (ProcessId::new(), ProcessId::new());
                let (moved, finished, handed_back) = (
                    new_task("a", 10, "moved"),
                    new_task("a", 11, "finished"),
                    new_task("a", 12, "handed back"),
                );
                d.task_insert_many(vec![moved.clone(), finished.clone(), handed_back.clone()])
                    .await
                    .unwrap();
                let first = d.task_claim(Some(p), 3, LEASE, Some(100)).await.unwrap();
                let token = |id| first.iter().find(|c| c.id == id).unwrap().token;
                let (old, fin, back) = (token(moved.id), token(finished.id), token(handed_back.id));
                d.task_complete_many(vec![done(finished.id, fin, None, None)])
                    .await
                    .unwrap();
                d.task_unclaim_many(vec![(handed_back.id, back)])
                    .await
                    .unwrap();
                // `p` froze: its lease ended, and `q` claimed the task again.
                assert_eq!(d.task_release_stuck(Some(1100)).await.unwrap(), 1);
                let again = d.task_claim(Some(q), 1, LEASE, Some(1200)).await.unwrap();
                assert_eq!(again[0].id, moved.id);
                assert_ne!(again[0].token, old);
                let renewal = d
                    .task_renew_leases(
                        p,
                        vec![(moved.id, old), (finished.id, fin), (handed_back.id, back)],
                        Duration::from_millis(10_000),
                        Some(1500),
                    )
                    .await
                    .unwrap();
                assert_eq!(renewal.renewed, 0);
                let mut lost = renewal.lost.clone();
                lost.sort();
                let mut expected = vec![moved.id, finished.id, handed_back.id];
                expected.sort();
                assert_eq!(lost, expected);
                // `q`'s lease is as it claimed it, and the handed-back task still waits.
                assert_eq!(d.task_release_stuck(Some(2199)).await.unwrap(), 0);
                assert_eq!(d.task_release_stuck(Some(2200)).await.unwrap(), 1);
                let waiting = d.task_claim(Some(q), 5, LEASE, Some(2300)).await.unwrap();
                assert_eq!(waiting.len(), 2, "the handed-back task stayed claimable");
            }

            #[tokio::test]
            async fn a_renewal_reports_the_claims_asked_to_cancel() {
                let Some(d) = open(&["a"]).await else { return };
                let p = ProcessId::new();
                let (keep, stop) = (new_task("a", 10, "keep"), new_task("a", 11, "stop"));
                d.task_insert_many(vec![keep.clone(), stop.clone()])
                    .await
                    .unwrap();
                let claimed = d.task_claim(Some(p), 2, LEASE, Some(100)).await.unwrap();
                let held: Vec<_> = claimed.iter().map(|c| (c.id, c.token)).collect();
                let asked = d
                    .task_cancel(stop.id, CancelRetention { known: Vec::new() }, Some(700))
                    .await
                    .unwrap();
                assert_eq!(asked, Cancelled::Requested);
                let renewal = d
                    .task_renew_leases(p, held, LEASE, Some(800))
                    .await
                    .unwrap();
                assert!(renewal.lost.is_empty(), "{renewal:?}");
                assert_eq!(renewal.cancel_requested, [stop.id]);
                // Renewed all the same: the processor gets to end its attempt.
                assert_eq!(d.task_release_stuck(Some(1100)).await.unwrap(), 0);
                assert_eq!(d.task_release_stuck(Some(1800)).await.unwrap(), 2);
            }

            #[tokio::test]
            async fn a_renewal_heartbeats_its_process_and_deletes_dead_ones() {
                let Some(d) = open(&["a"]).await else { return };
                let (p, dead, unknown) = (ProcessId::new(), ProcessId::new(), ProcessId::new());
                d.process_register(process(p, "p", 900), Some(1000))
                    .await
                    .unwrap();
                d.process_register(process(dead, "dead", 900), Some(1000))
                    .await
                    .unwrap();
                let renewal = d
                    .task_renew_leases(p, Vec::new(), LEASE, Some(1500))
                    .await
                    .unwrap();
                assert!(renewal.registered);
                // Seen at 1000, within a lease of 1500: kept.
                let listed = d.process_list(LEASE, Some(1500)).await.unwrap();
                assert_eq!(listed.len(), 2);
                let renewal = d
                    .task_renew_leases(p, Vec::new(), LEASE, Some(2100))
                    .await
                    .unwrap();
                assert!(renewal.registered);
                let listed = d
                    .process_list(Duration::from_secs(3600), Some(2100))
                    .await
                    .unwrap();
                let ids: Vec<_> = listed.iter().map(|r| r.id).collect();
                assert_eq!(ids, [p], "the process not seen for a lease is deleted");
                assert_eq!(listed[0].last_seen_at, 2100);
                // A process whose row was deleted learns it from its heartbeat.
                let renewal = d
                    .task_renew_leases(unknown, Vec::new(), LEASE, Some(2200))
                    .await
                    .unwrap();
                assert!(!renewal.registered);
            }

            #[tokio::test]
            async fn processes_are_registered_listed_while_live_and_removed() {
                let Some(d) = open(&["a"]).await else { return };
                let (p, q) = (ProcessId::new(), ProcessId::new());
                d.process_register(process(q, "host-q", 2000), Some(2000))
                    .await
                    .unwrap();
                d.process_register(process(p, "host-p", 1000), Some(1000))
                    .await
                    .unwrap();
                let listed = d.process_list(LEASE, Some(1900)).await.unwrap();
                let expected = ProcessRecord {
                    last_seen_at: 1000,
                    ..process(p, "host-p", 1000)
                };
                assert_eq!(
                    listed,
                    [
                        expected.clone(),
                        ProcessRecord {
                            last_seen_at: 2000,
                            ..process(q, "host-q", 2000)
                        }
                    ]
                );
                // `p` was last seen more than a lease before 2500.
                let live = d.process_list(LEASE, Some(2500)).await.unwrap();
                assert_eq!(live.iter().map(|r| r.id).collect::<Vec<_>>(), [q]);
                // Registering again (after its row was taken for dead) keeps one row.
                d.process_register(process(p, "host-p", 1000), Some(2400))
                    .await
                    .unwrap();
                let live = d.process_list(LEASE, Some(2500)).await.unwrap();
                assert_eq!(live.len(), 2);
                d.process_remove(p).await.unwrap();
                let live = d.process_list(LEASE, Some(2500)).await.unwrap();
                assert_eq!(live.iter().map(|r| r.id).collect::<Vec<_>>(), [q]);
            }
        }
    };
}

pub(crate) use lease_conformance;
