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
