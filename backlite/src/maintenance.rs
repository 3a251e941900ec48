//! Background upkeep of a started client: releasing tasks whose worker died, ending waiting
//! tasks that expired before they started, deleting retained tasks whose retention expired,
//! and sampling each queue's depth once a minute for the UI's charts (and deleting counts
//! older than a day).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::QueueStats;
use crate::client::Client;
use crate::events::TaskEvent;
use crate::metrics;
use crate::storage::counters::{COUNTERS_KEPT, Depth, minute_of};
use crate::storage::{EXPIRE_BATCH, Page, TaskState, duration_millis};

/// How often the loop looks whether a new minute began, to sample the queues' depth in it.
const SAMPLE_CHECK: Duration = Duration::from_secs(5);

/// Counts younger than this are read again from memory: the depth sample and the gauges both
/// fire at a start and every minute together, and each read counts every task of every queue.
const COUNTS_FRESH: Duration = Duration::from_secs(1);

/// The last counts per queue the loop read, and when.
#[derive(Default)]
struct RecentCounts {
    read: Option<(tokio::time::Instant, Vec<QueueStats>)>,
}

impl RecentCounts {
    async fn read(&mut self, client: &Client) -> crate::Result<&[QueueStats]> {
        let now = tokio::time::Instant::now();
        let fresh = matches!(&self.read, Some((at, _)) if now.duration_since(*at) < COUNTS_FRESH);
        if !fresh {
            self.read = Some((now, client.stats().await?));
        }
        Ok(self
            .read
            .as_ref()
            .map_or(&[], |(_, stats)| stats.as_slice()))
    }
}

/// Says, at start, how many tasks other processes hold claimed. Those of a process that was
/// killed look like running tasks until `release_after` has passed since its last renewal,
/// and nothing else would explain why they do not run.
pub(crate) async fn report_claimed(client: &Client) {
    let now = client.now();
    let driver = client.driver();
    let oldest = Page {
        offset: 0,
        limit: 1,
    };
    // The oldest claim first: one read of the running index, and usually none, so that a
    // start does not count every task of every queue while its first claims run.
    let oldest = match driver.task_list(TaskState::Running, oldest).await {
        Ok(rows) if rows.is_empty() => return,
        oldest => oldest,
    };
    let claimed: u64 = match driver.queue_stats(now).await {
        Ok(stats) => stats.iter().map(|q| q.running).sum(),
        Err(e) => {
            tracing::debug!(error = %e, "could not count the tasks claimed before this start");
            return;
        }
    };
    if claimed == 0 {
        return;
    }
    let release_after = client.inner.settings.release_after;
    let first_release_in = oldest
        .ok()
        .and_then(|rows| {
            rows.first()
                .and_then(|t| t.lease_renewed_at.or(t.claimed_at))
        })
        .map(|at| {
            let left = at.saturating_add(duration_millis(release_after)) - now;
            Duration::from_millis(u64::try_from(left).unwrap_or(0))
        });
    tracing::warn!(
        claimed,
        ?release_after,
        ?first_release_in,
        "tasks are claimed by other processes; those of a process that died show as running, \
         and run again once `release_after` has passed since its last renewal (the oldest \
         claim's in `first_release_in`, unless its process renews it)"
    );
}

pub(crate) async fn run(client: Client, stop: CancellationToken) {
    let settings = &client.inner.settings;
    // A dead worker's task is released between the end of its lease and a tenth of
    // `release_after` later: the check is an indexed scan of claimed rows only. Each claim
    // carries its own lease, so processes with different settings release each other's tasks
    // when their claimer's lease ends, and running this on every process is harmless.
    let release_every =
        (settings.release_after / 10).clamp(Duration::from_millis(10), Duration::from_secs(60));
    let mut release = tokio::time::interval(release_every);
    let mut expire = tokio::time::interval(release_every);
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cleanup = tokio::time::interval(settings.cleanup_interval);
    // Only with the `metrics` feature: the counts behind the queue depth gauges.
    let mut depth = tokio::time::interval(metrics::DEPTH_INTERVAL);
    let mut gauges = metrics::DepthGauges::default();
    depth.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample = tokio::time::interval(SAMPLE_CHECK);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampled = None;
    let mut counts = RecentCounts::default();
    release.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    cleanup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = release.tick() => {
                match client.driver().task_release_stuck(client.test_now()).await {
                    Ok(0) => {}
                    Ok(released) => {
                        tracing::warn!(released, "released tasks whose worker stopped responding");
                        metrics::tasks_released(released);
                        client.inner.hooks.emit(&TaskEvent::Released { count: released });
                    }
                    Err(e) => tracing::warn!(error = %e, "release of stuck tasks failed; will retry"),
                }
            }
            // Claims skip an expired task from its expiry on; this only moves it to its
            // failed end, so it shares the release's cadence.
            _ = expire.tick() => expire_pending(&client).await,
            _ = cleanup.tick() => {
                match client.driver().completed_delete_expired(client.now()).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::debug!(deleted, "deleted expired retained tasks"),
                    Err(e) => tracing::warn!(error = %e, "cleanup of retained tasks failed; will retry"),
                }
                let before = minute_of(client.now()) - COUNTERS_KEPT;
                if let Err(e) = client.driver().counters_delete_before(before).await {
                    tracing::warn!(error = %e, "cleanup of old per-minute counts failed; will retry");
                }
            }
            _ = sample.tick() => sample_depth(&client, &mut sampled, &mut counts).await,
            _ = depth.tick(), if metrics::ENABLED => {
                match counts.read(&client).await {
                    Ok(stats) => gauges.update(stats),
                    Err(e) => tracing::debug!(error = %e, "could not read the queue counts for the depth gauges"),
                }
            }
        }
    }
}

/// Stores every queue's waiting and running tasks as the depth of the current minute, once a
/// minute: the first check in a minute that has no sample from this process yet. Other
/// processes sample too; the last sample of a minute wins, which is as good as any.
async fn sample_depth(
    client: &Client,
    sampled: &mut Option<crate::storage::Millis>,
    counts: &mut RecentCounts,
) {
    let now = client.now();
    let minute = minute_of(now);
    if *sampled == Some(minute) {
        return;
    }
    let stats = match counts.read(client).await {
        Ok(stats) => stats,
        Err(e) => {
            tracing::debug!(error = %e, "could not count the queues for the depth sample");
            return;
        }
    };
    let samples: Vec<(String, Depth)> = stats
        .iter()
        .map(|q| {
            let depth = Depth {
                waiting: q.pending + q.scheduled,
                running: q.running,
            };
            (q.queue.clone(), depth)
        })
        .collect();
    if !samples.is_empty() {
        if let Err(e) = client.driver().counters_sample(minute, samples).await {
            tracing::debug!(error = %e, "could not store the depth sample");
            return;
        }
    }
    *sampled = Some(minute);
}

/// Ends the expired waiting tasks of the queues this client serves, a batch per write until
/// a batch comes back short.
async fn expire_pending(client: &Client) {
    loop {
        let retention = client.cancel_retention();
        let ended = client
            .driver()
            .task_expire_pending(retention, EXPIRE_BATCH, client.test_now())
            .await;
        match ended {
            Ok(0) => return,
            Ok(ended) => {
                tracing::info!(
                    ended,
                    "ended waiting tasks that expired before they started"
                );
                if ended < EXPIRE_BATCH as u64 {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "sweep of expired tasks failed; will retry");
                return;
            }
        }
    }
}
