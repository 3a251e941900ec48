//! The whole flow on a SQLite file: tasks on three queues, a retry with backoff, a timeout, a
//! scheduled task, a task added from inside a processor, retention, and a graceful stop.
//!
//! Run it with `cargo run --example quickstart`; it finishes by itself in a few seconds.

use std::time::{Duration, Instant};

use backlite::{Client, Context, Task, TaskStatus, processor, processors};
use serde::{Deserialize, Serialize};

/// Fails its first two attempts for one address, to show retries with backoff.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(
    name = "welcome_email",
    max_attempts = 3,
    backoff = "300ms",
    retention(duration = "1h", data(only_failed))
)]
struct WelcomeEmail {
    to: String,
}

/// One of these takes longer than its timeout.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(
    name = "resize_image",
    max_attempts = 1,
    timeout = "500ms",
    retention(data)
)]
struct ResizeImage {
    path: String,
    millis: u64,
}

/// Added by the email processor once a welcome email is out.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "audit", retention)]
struct Audit {
    event: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the mail server for {0} is not answering")]
struct MailError(String);

#[processor]
async fn send_welcome_email(ctx: Context, task: WelcomeEmail) -> Result<(), MailError> {
    if task.to.ends_with("@flaky.example") && ctx.attempt() < 3 {
        println!("  email to {}: attempt {} fails", task.to, ctx.attempt());
        return Err(MailError(task.to));
    }
    println!("  email to {}: sent on attempt {}", task.to, ctx.attempt());
    let event = format!("welcomed {}", task.to);
    if let Err(e) = ctx.client().add(Audit { event }).save().await {
        eprintln!("  could not add the audit task: {e}");
    }
    Ok(())
}

#[processor]
async fn resize_image(task: ResizeImage) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(task.millis)).await;
    println!("  resized {} in {} ms", task.path, task.millis);
    Ok(())
}

#[processor]
async fn record_audit(task: Audit) -> anyhow::Result<()> {
    println!("  audit: {}", task.event);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "backlite=warn".into()),
        )
        .init();

    let path = std::env::temp_dir().join("backlite-quickstart.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    println!("database: {}", path.display());

    let client = Client::builder()
        .database(&path)
        .workers(4)
        .processors(processors![send_welcome_email, resize_image, record_audit])
        .build()
        .await?;
    client.start();
    let started = Instant::now();

    let now = client
        .add(WelcomeEmail {
            to: "ada@example.com".into(),
        })
        .add(WelcomeEmail {
            to: "bob@flaky.example".into(),
        })
        .add(ResizeImage {
            path: "cat.png".into(),
            millis: 100,
        })
        .add(ResizeImage {
            path: "huge.tiff".into(),
            millis: 2_000,
        })
        .save()
        .await?;
    let later = client
        .add(ResizeImage {
            path: "scheduled.png".into(),
            millis: 10,
        })
        .wait(Duration::from_secs(1))
        .save()
        .await?;
    println!(
        "added {} tasks now and {} due in 1 s",
        now.len(),
        later.len()
    );

    // Wait until nothing is pending or running.
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = client.stats().await?;
        if stats
            .iter()
            .all(|s| s.pending + s.scheduled + s.running == 0)
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("tasks did not finish within 30 s: {stats:?}");
        }
    }
    println!("all done in {:.1} s", started.elapsed().as_secs_f64());

    for (id, what) in now.iter().chain(&later).zip([
        "email ada",
        "email bob",
        "resize cat",
        "resize huge",
        "resize scheduled",
    ]) {
        let status = client.status(id).await?;
        println!("  {what:<17} {status:?}");
        if what == "resize huge" {
            assert_eq!(
                status,
                TaskStatus::Failed,
                "the slow resize should have timed out"
            );
        }
    }
    for s in client.stats().await? {
        println!(
            "  queue {:<14} succeeded {}  failed {}",
            s.queue, s.succeeded, s.failed
        );
    }

    let all_finished = client.stop(Duration::from_secs(5)).await;
    println!("stopped; every running task finished: {all_finished}");
    Ok(())
}
