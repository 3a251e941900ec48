//! The conformance suite of the expiry of waiting tasks (`task_claim` skips them,
//! `task_expire_pending` ends them), which every driver must pass as it passes
//! `driver_conformance!`. Instantiated with
//! `expiry_conformance!(module_name, async fn open(queues) -> impl Driver)`.

macro_rules! expiry_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use crate::storage::conformance::{LEASE, new_task};
            use crate::storage::{CancelRetention, Driver, EXPIRED_ERROR, NewTask, Retain};
            use crate::task::TaskStatus;

            async fn open(queues: &[&'static str]) -> Option<impl Driver> {
                ($open)(queues.to_vec()).await
            }

            fn expiring(queue: &'static str, run_at: i64, expires_at: i64) -> NewTask {
                NewTask {
                    expires_at: Some(expires_at),
                    ..new_task(queue, run_at, "{}")
                }
            }

            fn keep_failed(queue: &'static str) -> CancelRetention {
                CancelRetention {
                    known: vec![(
                        queue,
                        Some(Retain {
                            payload: true,
                            expires_at: Some(90_000),
                        }),
                    )],
                }
            }

            /// A claim at or after a task's expiry never returns it; before, it does.
            #[tokio::test]
            async fn claims_skip_expired_tasks() {
                let Some(d) = open(&["a"]).await else {
                    return;
                };
                let (gone, kept) = (expiring("a", 10, 100), expiring("a", 10, 200));
                d.task_insert_many(vec![gone.clone(), kept.clone()])
                    .await
                    .unwrap();
                let claimed = d.task_claim(None, 10, LEASE, Some(100)).await.unwrap();
                let ids: Vec<_> = claimed.iter().map(|t| t.id).collect();
                assert_eq!(ids, [kept.id]);
                assert_eq!(d.task_status(gone.id).await.unwrap(), TaskStatus::Pending);
                // Inspection tells an expired waiting task apart from its retention's expiry.
                let info = d.task_info(gone.id).await.unwrap().unwrap();
                assert_eq!(
                    (info.pending_expires_at, info.expires_at),
                    (Some(100), None)
                );
                let facts = d
                    .task_facts(gone.id, Some(100), std::time::Duration::from_secs(1))
                    .await
                    .unwrap();
                assert!(
                    matches!(
                        facts,
                        crate::storage::Facts::Waiting {
                            expires_at: Some(100),
                            ..
                        }
                    ),
                    "{facts:?}"
                );
            }

            /// The sweep ends expired waiting tasks as failed with the "expired" error, in
            /// their error history too, retained as told; it leaves unexpired tasks, running
            /// tasks (even past their expiry) and queues it does not know alone.
            #[tokio::test]
            async fn the_sweep_ends_expired_waiting_tasks_failed() {
                let Some(d) = open(&["a"]).await else {
                    return;
                };
                let running = expiring("a", 10, 100);
                d.task_insert_many(vec![running.clone()]).await.unwrap();
                assert_eq!(
                    d.task_claim(None, 1, LEASE, Some(50)).await.unwrap().len(),
                    1
                );
                let (expired, later, unknown) = (
                    expiring("a", 10, 100),
                    expiring("a", 10, 500),
                    expiring("z", 10, 100),
                );
                let plain = new_task("a", 10, "{}");
                d.task_insert_many(vec![
                    expired.clone(),
                    later.clone(),
                    unknown.clone(),
                    plain.clone(),
                ])
                .await
                .unwrap();

                let ended = d
                    .task_expire_pending(keep_failed("a"), 100, Some(100))
                    .await
                    .unwrap();
                assert_eq!(ended, 1);
                assert_eq!(d.task_status(expired.id).await.unwrap(), TaskStatus::Failed);
                let info = d.task_info(expired.id).await.unwrap().unwrap();
                assert_eq!(info.status, TaskStatus::Failed);
                assert_eq!(info.payload.as_deref(), Some(&b"{}"[..]));
                assert_eq!(info.attempts, 0);
                assert_eq!(info.expires_at, Some(90_000));
                let errors: serde_json::Value =
                    serde_json::from_str(info.errors.as_deref().unwrap()).unwrap();
                assert_eq!(errors[0]["error"], EXPIRED_ERROR);
                assert_eq!(errors[0]["attempt"], 1);
                assert_eq!(errors[0]["at"], 100);
                for id in [later.id, unknown.id, plain.id] {
                    assert_eq!(d.task_status(id).await.unwrap(), TaskStatus::Pending);
                }
                assert_eq!(
                    d.task_status(running.id).await.unwrap(),
                    TaskStatus::Running
                );
                let stats = d.queue_stats(100).await.unwrap();
                let a = stats.iter().find(|s| s.queue == "a").unwrap();
                assert_eq!((a.failed, a.pending, a.running), (1, 2, 1));
            }

            /// Without retention an expired task is deleted; the sweep takes at most its
            /// batch per call, earliest expiry first.
            #[tokio::test]
            async fn the_sweep_deletes_unretained_tasks_in_batches() {
                let Some(d) = open(&["a"]).await else {
                    return;
                };
                let tasks: Vec<NewTask> = (0..5).map(|n| expiring("a", 0, 10 + n)).collect();
                d.task_insert_many(tasks.clone()).await.unwrap();
                let none = CancelRetention {
                    known: vec![("a", None)],
                };
                assert_eq!(
                    d.task_expire_pending(none.clone(), 3, Some(100))
                        .await
                        .unwrap(),
                    3
                );
                for (n, task) in tasks.iter().enumerate() {
                    let expected = if n < 3 {
                        TaskStatus::NotFound
                    } else {
                        TaskStatus::Pending
                    };
                    assert_eq!(d.task_status(task.id).await.unwrap(), expected, "task {n}");
                }
                assert_eq!(d.task_expire_pending(none, 3, Some(100)).await.unwrap(), 2);
                assert_eq!(
                    d.task_expire_pending(keep_failed("a"), 3, Some(100))
                        .await
                        .unwrap(),
                    0
                );
            }
        }
    };
}

pub(crate) use expiry_conformance;
