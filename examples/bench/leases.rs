//! W3l and W3lx: what renewing leases costs. Tasks that each run 2 s (a sleep) on many workers
//! under a short `release_after` (W3l: 300 ms, so every 100 ms a client renews the lease of
//! every task it holds), next to the same drain under the default 30 s (W3lx: one renewal at
//! the start, none while tasks run). The ideal is `workers / 2 s`; renewal writes and renewed
//! leases per second come from the client's own metrics.

use std::convert::Infallible;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backlite::{Task, processor, processors};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};

use super::db::Db;
use super::{Figure, round};

/// A task that sleeps `millis`.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "bench_sleep")]
pub struct Sleep {
    pub millis: u64,
}

static SLEPT: AtomicU64 = AtomicU64::new(0);

#[processor]
async fn sleep_for(task: Sleep) -> Result<(), Infallible> {
    tokio::time::sleep(Duration::from_millis(task.millis)).await;
    SLEPT.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The client's metrics, recorded from the first lease workload on: installed then, not at
/// the start, so that the workloads before it run without a recorder, as they always have.
fn recorder() -> anyhow::Result<&'static PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let handle = PrometheusBuilder::new().install_recorder()?;
    Ok(HANDLE.get_or_init(|| handle))
}

/// A counter's value in the recorder's rendering (0 before its first increment).
fn counter(handle: &PrometheusHandle, name: &str) -> f64 {
    handle
        .render()
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
        .sum()
}

/// Drains `tasks` tasks of `task_ms` each on `workers` workers under `release_after`.
pub async fn drain(
    db: &Db,
    name: &str,
    (tasks, workers, task_ms): (usize, usize, u64),
    release_after: Duration,
) -> anyhow::Result<Figure> {
    let metrics = recorder()?;
    SLEPT.store(0, Ordering::Relaxed);
    let client = db
        .builder()
        .workers(workers)
        .release_after(release_after)
        .processors(processors![sleep_for])
        .build()
        .await?;
    for first in (0..tasks).step_by(1000) {
        let mut add = client.add(Sleep { millis: task_ms });
        for _ in first + 1..(first + 1000).min(tasks) {
            add = add.add(Sleep { millis: task_ms });
        }
        add.save().await?;
    }
    let (renewals, renewed) = (
        counter(metrics, backlite::metrics::LEASE_RENEWALS),
        counter(metrics, backlite::metrics::LEASES_RENEWED),
    );
    let start = Instant::now();
    client.start();
    while SLEPT.load(Ordering::Relaxed) < tasks as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    db.table_empty().await?;
    let elapsed = start.elapsed();
    let (renewals, renewed) = (
        counter(metrics, backlite::metrics::LEASE_RENEWALS) - renewals,
        counter(metrics, backlite::metrics::LEASES_RENEWED) - renewed,
    );
    anyhow::ensure!(
        client.stop(Duration::from_secs(10)).await,
        "{name}: stop timed out"
    );
    let ran = SLEPT.load(Ordering::Relaxed);
    anyhow::ensure!(ran == tasks as u64, "{name}: {ran} runs for {tasks} tasks");
    let mut figure = Figure::new(name, tasks, elapsed, None).workers(workers);
    let ideal = workers as f64 * 1000.0 / task_ms as f64;
    let secs = elapsed.as_secs_f64();
    figure.ideal_per_sec = Some(round(ideal, 1));
    figure.vs_ideal = Some(round(figure.per_sec / ideal, 3));
    figure.release_after_ms = Some(release_after.as_millis() as u64);
    figure.renewals_per_sec = Some(round(renewals / secs, 1));
    figure.renewed_per_sec = Some(round(renewed / secs, 0));
    Ok(figure)
}
