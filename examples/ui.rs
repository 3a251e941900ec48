//! Serves the task UI on 127.0.0.1 while tasks are added and run, so you can watch them
//! move: emails that mostly succeed, slow reports, webhooks that fail, digests scheduled for
//! later.
//!
//! ```text
//! cargo run --example ui                     # http://127.0.0.1:3000/admin/tasks, until Ctrl-C
//! cargo run --example ui -- --for 60         # stops by itself after a minute
//! PORT=8080 cargo run --example ui -- --database demo.db
//! ```
//!
//! The UI is nested under `/admin/tasks` of the application's own router, as an application
//! would mount it. Without `--database`, the tasks live in a temporary file.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use backlite::{Client, Context, Task, processor, processors};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(
    name = "emails",
    max_attempts = 3,
    backoff = "5s",
    retention(duration = "1h", data)
)]
pub struct SendEmail {
    pub to: String,
    pub subject: String,
}

#[processor]
async fn send_email(ctx: Context, email: SendEmail) -> Result<(), String> {
    let luck = chance(&ctx);
    tokio::time::sleep(Duration::from_millis(200 + luck % 1000)).await;
    // One first attempt in six meets a busy mail server; the retry gets through.
    if ctx.attempt() == 1 && luck.is_multiple_of(6) {
        return Err(format!(
            "SMTP 451 4.7.1 <{}>: greylisted, try again later",
            email.to
        ));
    }
    Ok(())
}

/// Only the outcome is kept: the report's page says its payload was not retained.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "reports", timeout = "30s", retention(duration = "1h"))]
pub struct RenderReport {
    pub report_id: u64,
    pub format: String,
    pub pages: u32,
}

#[processor]
async fn render_report(ctx: Context, report: RenderReport) -> Result<(), String> {
    // Slow enough to be seen on the Running page.
    let ms = 3000 + u64::from(report.pages) * 40 + chance(&ctx) % 3000;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(()),
        _ = ctx.cancelled() => Err("cancelled: the client is stopping".to_owned()),
    }
}

#[derive(Serialize, Deserialize, Task)]
#[queue(
    name = "webhooks",
    max_attempts = 2,
    backoff = "4s",
    retention(duration = "1h", data(only_failed))
)]
pub struct DeliverWebhook {
    pub url: String,
    pub event: String,
    pub body: serde_json::Value,
}

#[processor]
async fn deliver_webhook(ctx: Context, hook: DeliverWebhook) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The receiving end is down half the time, and answers with its HTML error page.
    if chance(&ctx).is_multiple_of(2) {
        return Err(format!(
            "POST {} ({}): 502 Bad Gateway: <html><body><h1>502 Bad Gateway</h1>\
             <script>location='/oops'</script></body></html>",
            hook.url, hook.event
        ));
    }
    Ok(())
}

/// A number that differs per task and attempt, for the demo's varied timings and failures.
fn chance(ctx: &Context) -> u64 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write(ctx.task_id().to_string().as_bytes());
    hasher.write_u32(ctx.attempt());
    hasher.finish()
}

/// Opens the demo's client on `database` and starts it.
pub async fn demo_client(database: &Path) -> backlite::Result<Client> {
    let client = Client::builder()
        .database(database)
        .workers(4)
        .processors(processors![send_email, render_report, deliver_webhook])
        .build()
        .await?;
    client.start();
    Ok(client)
}

/// The application: its own routes, and the task UI with its buttons under `/admin/tasks`
/// (`nest_service` also answers `/admin/tasks/`). An application mounts it behind its own
/// authentication: whoever reaches it can retry, cancel and delete tasks.
pub fn app(client: &Client) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/admin/tasks") }))
        .nest_service("/admin/tasks", backlite::ui::router_with_actions(client))
}

fn email(n: u64) -> SendEmail {
    const PEOPLE: [&str; 5] = ["ada", "grace", "linus", "barbara", "ken"];
    SendEmail {
        to: format!("{}@example.com", PEOPLE[(n % 5) as usize]),
        subject: format!("Your order #{} has shipped", 1000 + n),
    }
}

fn webhook(n: u64) -> DeliverWebhook {
    DeliverWebhook {
        url: format!("https://hooks.example.com/shop/{}", n % 3),
        event: "order.paid".into(),
        body: serde_json::json!({ "order": 1000 + n, "amount": { "value": 4200 + n, "currency": "EUR" }, "lines": [ { "sku": "TEA-01", "qty": 2 } ] }),
    }
}

/// Some of everything at once, so that every page has something to show.
pub async fn seed(client: &Client) -> backlite::Result<()> {
    let mut now = client.add(SendEmail {
        to: "mallory@example.com".into(),
        subject: "Payloads are shown as text: <script>alert('xss')</script>".into(),
    });
    for n in 0..6 {
        now = now.add(email(n));
    }
    for n in 0..3 {
        now = now.add(webhook(n));
    }
    for n in 0..2 {
        now = now.add(RenderReport {
            report_id: 70 + n,
            format: "pdf".into(),
            pages: 12,
        });
    }
    now.save().await?;
    for (n, minutes) in [1, 2, 5, 10, 30, 90].into_iter().enumerate() {
        client
            .add(SendEmail {
                to: "team@example.com".into(),
                subject: format!("Daily digest #{}", n + 1),
            })
            .wait(Duration::from_secs(minutes * 60))
            .save()
            .await?;
    }
    Ok(())
}

/// Adds tasks for as long as it runs: a few emails a second, a report and a webhook now and
/// then, and a digest scheduled a few minutes ahead.
pub async fn feed(client: Client) {
    let mut tick = 0u64;
    let mut every = tokio::time::interval(Duration::from_millis(1500));
    loop {
        every.tick().await;
        tick += 1;
        let mut batch = client.add(email(tick)).add(email(tick * 7));
        if tick.is_multiple_of(2) {
            batch = batch.add(webhook(tick));
        }
        if tick.is_multiple_of(3) {
            batch = batch.add(RenderReport {
                report_id: 100 + tick,
                format: if tick.is_multiple_of(2) { "pdf" } else { "csv" }.into(),
                pages: (tick % 40) as u32,
            });
        }
        let mut result = batch.save().await.map(drop);
        if tick.is_multiple_of(5) {
            result = result.and(
                client
                    .add(SendEmail {
                        to: "team@example.com".into(),
                        subject: format!("Weekly summary #{tick}"),
                    })
                    .wait(Duration::from_secs(60 + tick % 540))
                    .save()
                    .await
                    .map(drop),
            );
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not add the demo's tasks");
        }
    }
}

struct Args {
    run_for: Option<Duration>,
    database: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        run_for: None,
        database: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = || {
            argv.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--for" => args.run_for = Some(Duration::from_secs(value()?.parse()?)),
            "--database" => args.database = Some(value()?.into()),
            _ => anyhow::bail!("usage: ui [--for <seconds>] [--database <path>]"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "ui=info".into()),
        )
        .init();
    let args = args()?;
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 3000,
    };
    let dir = tempfile::tempdir()?;
    let database = args
        .database
        .unwrap_or_else(|| dir.path().join("ui-demo.db"));

    let client = demo_client(&database).await?;
    seed(&client).await?;
    let feeder = tokio::spawn(feed(client.clone()));

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let url = format!("http://{}/admin/tasks", listener.local_addr()?);
    tracing::info!(%url, database = %database.display(), "serving the backlite UI; Ctrl-C stops");
    let run_for = args.run_for;
    let shutdown = async move {
        match run_for {
            Some(limit) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = tokio::time::sleep(limit) => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    axum::serve(listener, app(&client))
        .with_graceful_shutdown(shutdown)
        .await?;

    feeder.abort();
    let finished = client.stop(Duration::from_secs(5)).await;
    tracing::info!(finished, "stopped");
    Ok(())
}
