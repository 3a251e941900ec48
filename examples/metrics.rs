//! backlite's metrics in a Prometheus exporter: a few tasks succeed, one is retried, one
//! fails for good, and the scrape text before and after shows the counters moving.
//!
//! Run it with `cargo run --example metrics`. The application picks the exporter: here
//! `metrics-exporter-prometheus`, rendered in-process; a server would serve `render()`
//! on `/metrics` (or let the exporter's own listener do it).

use std::sync::Arc;
use std::time::Duration;

use backlite::{Client, Context, Task, TaskEvent, processor, processors};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "thumbnails", max_attempts = 2, backoff = "50ms")]
struct Thumbnail {
    image: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot decode {0}")]
struct DecodeError(String);

/// `corrupt.png` always fails; `flaky.png` fails its first attempt only.
#[processor]
async fn make_thumbnail(ctx: Context, task: Thumbnail) -> Result<(), DecodeError> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    match task.image.as_str() {
        "corrupt.png" => Err(DecodeError(task.image)),
        "flaky.png" if ctx.attempt() == 1 => Err(DecodeError(task.image)),
        _ => Ok(()),
    }
}

/// The `backlite_tasks_*` counter lines of a scrape.
fn counters(scrape: &str) -> String {
    scrape
        .lines()
        .filter(|line| line.starts_with("backlite_tasks_"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    // Counts the tasks that are done, succeeded or failed for good, to know when to scrape.
    let done = Arc::new(Notify::new());
    let on_done = done.clone();
    let client = Client::builder()
        .database(":memory:")
        .workers(4)
        .processors(processors![make_thumbnail])
        .on_event(move |event: &TaskEvent<'_>| {
            if matches!(
                event,
                TaskEvent::Succeeded { .. } | TaskEvent::Failed { .. }
            ) {
                on_done.notify_one();
            }
        })
        .build()
        .await?;

    let images = ["a.png", "b.png", "flaky.png", "corrupt.png"];
    let mut batch = client.add(Thumbnail {
        image: images[0].into(),
    });
    for image in &images[1..] {
        batch = batch.add(Thumbnail {
            image: (*image).into(),
        });
    }
    batch.save().await?;
    println!(
        "# after adding {} tasks\n{}\n",
        images.len(),
        counters(&prometheus.render())
    );

    client.start();
    for _ in &images {
        tokio::time::timeout(Duration::from_secs(10), done.notified()).await?;
    }
    client.stop(Duration::from_secs(5)).await;

    println!("# after running them\n{}\n", counters(&prometheus.render()));
    println!("# the whole scrape\n{}", prometheus.render());
    Ok(())
}
