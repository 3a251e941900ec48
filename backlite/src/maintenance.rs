//! Background upkeep of a started client: releasing tasks whose worker died, and deleting
//! retained tasks whose retention expired.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::events::TaskEvent;
use crate::metrics;
use crate::storage::duration_millis;

pub(crate) async fn run(client: Client, stop: CancellationToken) {
    let settings = &client.inner.settings;
    // A dead worker's task is released between `release_after` and 1.1 x `release_after`
    // after its claim: the check is an indexed scan of claimed rows only.
    let release_every =
        (settings.release_after / 10).clamp(Duration::from_millis(10), Duration::from_secs(60));
    let mut release = tokio::time::interval(release_every);
    let mut cleanup = tokio::time::interval(settings.cleanup_interval);
    // Only with the `metrics` feature: the counts behind the queue depth gauges.
    let mut depth = tokio::time::interval(metrics::DEPTH_INTERVAL);
    let mut gauges = metrics::DepthGauges::default();
    depth.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    release.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    cleanup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = release.tick() => {
                let before = client.now() - duration_millis(settings.release_after);
                match client.driver().task_release_stuck(before).await {
                    Ok(0) => {}
                    Ok(released) => {
                        tracing::warn!(released, "released tasks whose worker stopped responding");
                        metrics::tasks_released(released);
                        client.inner.hooks.emit(&TaskEvent::Released { count: released });
                    }
                    Err(e) => tracing::warn!(error = %e, "release of stuck tasks failed; will retry"),
                }
            }
            _ = cleanup.tick() => {
                match client.driver().completed_delete_expired(client.now()).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::debug!(deleted, "deleted expired retained tasks"),
                    Err(e) => tracing::warn!(error = %e, "cleanup of retained tasks failed; will retry"),
                }
            }
            _ = depth.tick(), if metrics::ENABLED => {
                match client.stats().await {
                    Ok(stats) => gauges.update(&stats),
                    Err(e) => tracing::debug!(error = %e, "could not read the queue counts for the depth gauges"),
                }
            }
        }
    }
}
