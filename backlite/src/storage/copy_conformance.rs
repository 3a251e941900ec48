//! The conformance suite of the copy operations, which every driver must pass: a database in
//! every state read in keyset pages and inserted into a fresh one comes out row for row the
//! same, census included; inserting again inserts nothing. Instantiated with
//! `copy_conformance!(module_name, async fn open(queues) -> impl Driver)`, and
//! [`copy_between`] checks one backend into another.

use crate::storage::conformance::{LEASE, done, new_task};
use crate::storage::copy::CopyTask;
use crate::storage::periodic::ScheduleDef;
use crate::storage::{CancelRetention, Driver, ProcessId, Retain};
use crate::task::TaskId;

/// The queue whose tasks the fixture runs; the drivers under test serve it only.
pub(crate) const RUN: &str = "cp_run";

/// Fills `d` (served queues: [`RUN`]) with a task in every state: waiting with a priority,
/// an expiry and a unique key; scheduled; running under a process's claim; succeeded with
/// its payload; failed without it, with an error history; cancelled. A paused queue, a queue
/// paused and resumed, and a schedule. Returns the running task's id.
pub(crate) async fn fill(d: &impl Driver) -> TaskId {
    let mut waiting = new_task("cp_a", 0, "{\"w\":1}");
    waiting.priority = 2;
    waiting.expires_at = Some(9_000_000);
    waiting.unique_key = Some(b"key-1".to_vec());
    waiting.unique_for = Some(60_000);
    let scheduled = new_task("cp_a", 5_000_000, "{\"s\":1}");
    let cancelled = new_task("cp_b", 0, "{\"c\":1}");
    let runs: Vec<_> = (0..3)
        .map(|n| new_task(RUN, 0, &format!("{{\"r\":{n}}}")))
        .collect();
    let mut all = vec![waiting, scheduled, cancelled.clone()];
    all.extend(runs.iter().cloned());
    d.task_insert_many(all).await.unwrap();

    let process = ProcessId::new();
    let claimed = d
        .task_claim(Some(process), 10, LEASE, Some(100))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let token = |id: TaskId| claimed.iter().find(|c| c.id == id).unwrap().token;
    let keep = |payload| {
        Some(Retain {
            payload,
            expires_at: Some(7_000_000),
        })
    };
    d.task_complete_many(vec![
        done(runs[1].id, token(runs[1].id), None, keep(true)),
        done(runs[2].id, token(runs[2].id), Some("boom"), keep(false)),
    ])
    .await
    .unwrap();
    d.task_cancel(cancelled.id, CancelRetention::default(), Some(200))
        .await
        .unwrap();
    d.queue_pause("cp_a".into(), Some(300)).await.unwrap();
    d.queue_pause("cp_b".into(), Some(300)).await.unwrap();
    d.queue_resume("cp_b".into()).await.unwrap();
    d.schedule_register(vec![ScheduleDef {
        name: "cp_a".into(),
        definition: "every 60000ms".into(),
        next_run_at: 4_000_000,
    }])
    .await
    .unwrap();
    runs[0].id
}

/// Every row of `d`, read in pages of `page` rows.
pub(crate) async fn export(d: &impl Driver, page: usize) -> Vec<CopyTask> {
    let mut rows: Vec<CopyTask> = Vec::new();
    loop {
        let after = rows.last().map(|r| r.id);
        let next = d.copy_tasks(after, page).await.unwrap();
        assert!(next.len() <= page);
        let last = next.len() < page;
        rows.extend(next);
        if last {
            return rows;
        }
    }
}

/// Rows with their error histories as JSON values: PostgreSQL's `jsonb` prints them its own
/// way, and the copy keeps the value, not the spelling.
fn comparable(rows: Vec<CopyTask>) -> Vec<(CopyTask, Option<serde_json::Value>)> {
    rows.into_iter()
        .map(|mut r| {
            let errors = r.errors.take().map(|e| serde_json::from_str(&e).unwrap());
            (r, errors)
        })
        .collect()
}

/// Copies `from` into the empty `to` and checks that nothing was lost or changed, and that a
/// second copy inserts nothing.
pub(crate) async fn copy_between(from: &impl Driver, to: &impl Driver) {
    let running = fill(from).await;
    let rows = export(from, 2).await;
    assert_eq!(rows.len(), 6);
    let mut ids: Vec<TaskId> = rows.iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "pages overlap");
    let states: Vec<i16> = {
        let mut s: Vec<i16> = rows.iter().map(|r| r.state).collect();
        s.sort();
        s
    };
    assert_eq!(states, [0, 0, 1, 2, 3, 4]);
    let run = rows.iter().find(|r| r.id == running).unwrap();
    assert!(run.claimed_by.is_some() && run.lease_until.is_some() && run.fence > 0);

    for chunk in rows.chunks(4) {
        let inserted = to.copy_insert_tasks(chunk.to_vec()).await.unwrap();
        assert_eq!(inserted, chunk.len() as u64);
    }
    let census = from.copy_census().await.unwrap();
    let meta = to
        .copy_insert_meta(census.schedules.clone(), census.queues.clone())
        .await
        .unwrap();
    assert_eq!((meta.schedules, meta.queues), (1, 2));
    assert_eq!(census.total(), 6);
    assert_eq!(to.copy_census().await.unwrap(), census);
    assert_eq!(comparable(export(to, 100).await), comparable(rows.clone()));

    // Again: nothing inserted, nothing changed.
    assert_eq!(to.copy_insert_tasks(rows.clone()).await.unwrap(), 0);
    let again = to
        .copy_insert_meta(census.schedules.clone(), census.queues.clone())
        .await
        .unwrap();
    assert_eq!((again.schedules, again.queues), (0, 0));
    assert_eq!(to.copy_census().await.unwrap(), census);
    assert_eq!(comparable(export(to, 3).await), comparable(rows));
}

macro_rules! copy_conformance {
    ($name:ident, $open:expr) => {
        #[cfg(test)]
        mod $name {
            use crate::storage::Driver;
            use crate::storage::copy_conformance::{RUN, copy_between, export};
            use crate::task::TaskStatus;

            async fn open() -> Option<impl Driver> {
                ($open)(vec![RUN]).await
            }

            #[tokio::test]
            async fn a_copy_keeps_every_row_whole_and_inserts_nothing_twice() {
                let (Some(from), Some(to)) = (open().await, open().await) else {
                    return;
                };
                copy_between(&from, &to).await;
            }

            /// The copy is the database's: a copied running task is released and claimed
            /// there as any other, and a copied paused queue stays paused.
            #[tokio::test]
            async fn copied_rows_work_as_the_original_ones() {
                let (Some(from), Some(to)) = (open().await, open().await) else {
                    return;
                };
                let running = crate::storage::copy_conformance::fill(&from).await;
                to.copy_insert_tasks(export(&from, 100).await)
                    .await
                    .unwrap();
                let census = from.copy_census().await.unwrap();
                to.copy_insert_meta(census.schedules, census.queues)
                    .await
                    .unwrap();
                assert_eq!(to.task_status(running).await.unwrap(), TaskStatus::Running);
                assert_eq!(to.task_release_stuck(Some(10_000)).await.unwrap(), 1);
                let claimed = to
                    .task_claim(None, 10, crate::storage::conformance::LEASE, Some(10_000))
                    .await
                    .unwrap();
                assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), [running]);
                assert_eq!(claimed[0].attempts, 0);
                let queues = to.queue_list(10_000).await.unwrap();
                let paused: Vec<&str> = queues
                    .iter()
                    .filter(|q| q.paused_at.is_some())
                    .map(|q| q.stats.queue.as_str())
                    .collect();
                assert_eq!(paused, ["cp_a"]);
            }
        }
    };
}

pub(crate) use copy_conformance;
