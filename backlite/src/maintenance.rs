//! Background upkeep of a started client: releasing tasks whose worker died, and deleting
//! retained tasks whose retention expired.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::storage::now_millis;

pub(crate) async fn run(client: Client, stop: CancellationToken) {
    let settings = &client.inner.settings;
    // A dead worker's task is released between the end of its lease and a tenth of
    // `release_after` later: the check is an indexed scan of claimed rows only. Each claim
    // carries its own lease, so processes with different settings release each other's tasks
    // when their claimer's lease ends, and running this on every process is harmless.
    let release_every =
        (settings.release_after / 10).clamp(Duration::from_millis(10), Duration::from_secs(60));
    let mut release = tokio::time::interval(release_every);
    let mut cleanup = tokio::time::interval(settings.cleanup_interval);
    release.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    cleanup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = release.tick() => {
                match client.driver().task_release_stuck(None).await {
                    Ok(0) => {}
                    Ok(released) => tracing::warn!(released, "released tasks whose worker stopped responding"),
                    Err(e) => tracing::warn!(error = %e, "release of stuck tasks failed; will retry"),
                }
            }
            _ = cleanup.tick() => {
                match client.driver().completed_delete_expired(now_millis()).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::debug!(deleted, "deleted expired retained tasks"),
                    Err(e) => tracing::warn!(error = %e, "cleanup of retained tasks failed; will retry"),
                }
            }
        }
    }
}
