//! Queue-level commands: `stats`, `queues`, `pause`, `resume`, `processes`.

use serde_json::{Value, json};

use crate::client::Client;
use crate::storage::QueueStats;

use super::error::{CliError, exit};
use super::output::{Table, json_time, json_time_opt, print, print_json, time, time_or_dash};

const COUNT_HEADERS: [&str; 6] = [
    ">PENDING",
    ">SCHEDULED",
    ">RUNNING",
    ">SUCCEEDED",
    ">FAILED",
    ">CANCELLED",
];

fn counts(s: &QueueStats) -> [u64; 6] {
    [
        s.pending,
        s.scheduled,
        s.running,
        s.succeeded,
        s.failed,
        s.cancelled,
    ]
}

fn counts_json(s: &QueueStats) -> Value {
    json!({
        "pending": s.pending,
        "scheduled": s.scheduled,
        "running": s.running,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "cancelled": s.cancelled,
    })
}

/// `stats`: one row per queue, and a total when there are several.
pub(crate) async fn stats(client: &Client, json: bool) -> Result<u8, CliError> {
    let stats = client.stats().await?;
    if json {
        let rows: Vec<Value> = stats
            .iter()
            .map(|s| {
                let mut row = counts_json(s);
                row["queue"] = json!(s.queue);
                row
            })
            .collect();
        print_json(&Value::Array(rows));
        return Ok(exit::OK);
    }
    if stats.is_empty() {
        print("no tasks\n");
        return Ok(exit::OK);
    }
    let mut headers = vec!["QUEUE"];
    headers.extend(COUNT_HEADERS);
    let mut table = Table::new(&headers);
    let mut total = [0u64; 6];
    for s in &stats {
        let mut row = vec![s.queue.clone()];
        for (i, n) in counts(s).into_iter().enumerate() {
            total[i] += n;
            row.push(n.to_string());
        }
        table.row(row);
    }
    if stats.len() > 1 {
        let mut row = vec!["(total)".to_owned()];
        row.extend(total.iter().map(u64::to_string));
        table.row(row);
    }
    print(&table.render());
    Ok(exit::OK)
}

/// `queues`: every queue the database knows, paused or running, with its counts.
pub(crate) async fn queues(client: &Client, json: bool) -> Result<u8, CliError> {
    let queues = client.queues().await?;
    if json {
        let rows: Vec<Value> = queues
            .iter()
            .map(|q| {
                json!({
                    "queue": q.name(),
                    "paused": q.is_paused(),
                    "paused_since": json_time_opt(q.paused_since),
                    "counts": counts_json(&q.stats),
                })
            })
            .collect();
        print_json(&Value::Array(rows));
        return Ok(exit::OK);
    }
    if queues.is_empty() {
        print("no queues\n");
        return Ok(exit::OK);
    }
    let mut headers = vec!["QUEUE", "STATE", "PAUSED SINCE"];
    headers.extend(COUNT_HEADERS);
    let mut table = Table::new(&headers);
    for q in &queues {
        let state = if q.is_paused() { "paused" } else { "running" };
        let mut row = vec![
            q.name().to_owned(),
            state.to_owned(),
            time_or_dash(q.paused_since),
        ];
        row.extend(counts(&q.stats).iter().map(u64::to_string));
        table.row(row);
    }
    print(&table.render());
    Ok(exit::OK)
}

/// `pause` (or `resume` when `pause` is false): 1 when the queue was so already.
pub(crate) async fn pause(
    client: &Client,
    queue: &str,
    pause: bool,
    json: bool,
) -> Result<u8, CliError> {
    let applied = match pause {
        true => client.pause_queue(queue).await?,
        false => client.resume_queue(queue).await?,
    };
    let (done, already) = match pause {
        true => ("paused", "was paused already"),
        false => ("resumed", "was not paused"),
    };
    if json {
        print_json(&json!({ "queue": queue, "applied": applied, "action": done }));
    } else if applied {
        print(&format!("queue `{queue}` {done}\n"));
    } else {
        print(&format!("queue `{queue}` {already}: nothing changed\n"));
    }
    Ok(if applied { exit::OK } else { exit::NOT_APPLIED })
}

/// `processes`: the live started clients.
pub(crate) async fn processes(client: &Client, json: bool) -> Result<u8, CliError> {
    let processes = client.processes().await?;
    if json {
        let rows: Vec<Value> = processes
            .iter()
            .map(|p| {
                json!({
                    "id": p.id.to_string(),
                    "host": p.host,
                    "pid": p.pid,
                    "workers": p.workers,
                    "queues": p.queues,
                    "started_at": json_time(p.started_at),
                    "last_seen_at": json_time(p.last_seen_at),
                })
            })
            .collect();
        print_json(&Value::Array(rows));
        return Ok(exit::OK);
    }
    if processes.is_empty() {
        print("no live process\n");
        return Ok(exit::OK);
    }
    let mut table = Table::new(&[
        "ID",
        "HOST",
        ">PID",
        ">WORKERS",
        "STARTED",
        "LAST SEEN",
        "QUEUES",
    ]);
    for p in &processes {
        table.row(vec![
            p.id.to_string(),
            p.host.clone(),
            p.pid.to_string(),
            p.workers.to_string(),
            time(p.started_at),
            time(p.last_seen_at),
            p.queues.join(","),
        ]);
    }
    print(&table.render());
    Ok(exit::OK)
}
