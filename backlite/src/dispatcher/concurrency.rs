//! Per-queue concurrency limits (`#[queue(concurrency = N)]`): how many tasks of each limited
//! queue this client holds (claimed and waiting for a worker, or running), and the room
//! each claim may take.
//!
//! Held tasks are counted from their claim, not from their start: a claim that took more of
//! a queue than its limit would have to keep the surplus waiting here, claimed, while another
//! process could run it. So the claim itself takes at most the room left (the driver bounds
//! each queue's arm of the claim statement), and a queue at its limit reads nothing.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::processor::Registry;

/// The limited queues of one client and what each holds.
pub(super) struct QueueLimits {
    queues: Vec<Limited>,
    /// Fired when a task of a queue at its limit lets go: that queue has room again.
    pub(super) freed: Notify,
}

struct Limited {
    name: &'static str,
    limit: usize,
    held: AtomicUsize,
}

impl QueueLimits {
    pub(super) fn new(registry: &Registry) -> QueueLimits {
        let queues = registry
            .queues()
            .filter_map(|name| {
                let limit = registry.config(name)?.concurrency()?;
                Some(Limited {
                    name,
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                    held: AtomicUsize::new(0),
                })
            })
            .collect();
        QueueLimits {
            queues,
            freed: Notify::new(),
        }
    }

    /// What each limited queue may still take, for the claim.
    pub(super) fn room(&self) -> Vec<(&'static str, usize)> {
        self.queues
            .iter()
            .map(|q| {
                (
                    q.name,
                    q.limit.saturating_sub(q.held.load(Ordering::Acquire)),
                )
            })
            .collect()
    }

    /// The limited queues that hold as many tasks as their limit allows: a claim takes
    /// none of them, so their due tasks say nothing about when to claim next.
    pub(super) fn full(&self) -> Vec<&'static str> {
        self.queues
            .iter()
            .filter(|q| q.held.load(Ordering::Acquire) >= q.limit)
            .map(|q| q.name)
            .collect()
    }

    /// A task of `queue` was claimed.
    pub(super) fn hold(&self, queue: &str) {
        if let Some(q) = self.find(queue) {
            q.held.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A task of `queue` that was held ended (or was dropped, or handed back).
    pub(super) fn release(&self, queue: &str) {
        if let Some(q) = self.find(queue) {
            let before = q
                .held
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .unwrap_or(0);
            if before >= q.limit {
                // One stored permit: the dispatcher, waiting or not, claims once more.
                self.freed.notify_one();
            }
        }
    }

    fn find(&self, queue: &str) -> Option<&Limited> {
        self.queues.iter().find(|q| q.name == queue)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use crate::{BoxError, Client, Context, Processor, QueueConfig, Task, TaskStatus};

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static OPEN: AtomicBool = AtomicBool::new(false);

    #[derive(Serialize, Deserialize)]
    struct OneAtATime;
    impl Task for OneAtATime {
        const CONFIG: QueueConfig = QueueConfig::builder("one_at_a_time").concurrency(1).build();
    }
    struct RunOneAtATime;
    impl Processor for RunOneAtATime {
        type Task = OneAtATime;
        async fn process(_: Context, _: OneAtATime) -> Result<(), BoxError> {
            RUNNING.fetch_add(1, Ordering::SeqCst);
            while !OPEN.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// A queue at its limit with due tasks waiting costs no reads: the dispatcher neither
    /// claims nor asks for the next due time until the running task lets go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queue_at_its_limit_is_not_polled_and_resumes_when_a_task_ends() {
        let registry = crate::__private::registry([crate::__private::entry::<RunOneAtATime>()]);
        let client = Client::builder()
            .database(":memory:")
            .workers(4)
            .processors(registry)
            .build()
            .await
            .expect("build");
        let saved = client
            .add(OneAtATime)
            .add(OneAtATime)
            .add(OneAtATime)
            .save()
            .await
            .expect("save");
        client.start();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while RUNNING.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never ran");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reads = || client.driver().table_reads();
        let settled = reads();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(reads() - settled, 0, "a full queue was polled");
        assert_eq!(RUNNING.load(Ordering::SeqCst), 1);
        OPEN.store(true, Ordering::SeqCst);
        for id in &saved {
            while client.status(id).await.expect("status") != TaskStatus::NotFound {
                assert!(tokio::time::Instant::now() < deadline, "never finished");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert!(client.stop(Duration::from_secs(5)).await);
    }
}
