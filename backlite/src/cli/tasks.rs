//! Task-level commands: `ls`, `show`, `explain`, `retry`, `cancel`, `run-now`, `purge`.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::client::Client;
use crate::control::Purge;
use crate::explain::Explanation;
use crate::inspect::{TaskInfo, TaskSummary};
use crate::task::TaskId;

use super::args::{LsArgs, PurgeArgs, RetryArgs, StateArg};
use super::error::{CliError, exit};
use super::output::{
    Table, cell, duration, json_time, json_time_opt, print, print_json, status_name, time,
    time_or_dash,
};

/// `ls`: a page of each state asked for, in the state's own order.
pub(crate) async fn ls(client: &Client, args: LsArgs, json: bool) -> Result<u8, CliError> {
    let states = match args.state.as_slice() {
        [] => StateArg::ALL.to_vec(),
        given => {
            let mut states = given.to_vec();
            states.dedup();
            states
        }
    };
    if args.after.is_some() && states.len() > 1 {
        return Err(CliError::usage(
            "--after pages one list: give exactly one --state, the cursor's",
        ));
    }
    let mut rows: Vec<(StateArg, TaskSummary)> = Vec::new();
    let mut next = Map::new();
    for state in states {
        let mut list = client.tasks(state.list_state()).limit(args.limit);
        if let Some(queue) = &args.queue {
            list = list.queue(queue.clone());
        }
        if let Some(after) = args.after {
            list = list.after(after);
        }
        let page = list.fetch().await?;
        if let Some(cursor) = page.next {
            next.insert(state.name().to_owned(), json!(cursor.to_string()));
        }
        rows.extend(page.tasks.into_iter().map(|t| (state, t)));
    }
    if json {
        let tasks: Vec<Value> = rows
            .iter()
            .map(|(state, t)| summary_json(*state, t))
            .collect();
        print_json(&json!({ "tasks": tasks, "next": next }));
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        print("no tasks\n");
        return Ok(exit::OK);
    }
    let mut table = Table::new(&[
        "ID",
        "QUEUE",
        "STATE",
        ">ATTEMPTS",
        "CREATED",
        "DUE",
        "STARTED",
        "LAST ERROR",
    ]);
    for (state, t) in &rows {
        table.row(vec![
            t.id.to_string(),
            t.queue.clone(),
            state.name().to_owned(),
            t.attempts.to_string(),
            time(t.created_at),
            time_or_dash(t.due_at),
            time_or_dash(t.started_at),
            t.last_error
                .as_deref()
                .map_or_else(|| "-".into(), |e| cell(e, 60)),
        ]);
    }
    let mut text = table.render();
    for (state, cursor) in &next {
        let cursor = cursor.as_str().unwrap_or_default();
        text.push_str(&format!(
            "more {state} tasks: backlite ls --state {state} --after {cursor}\n"
        ));
    }
    print(&text);
    Ok(exit::OK)
}

fn summary_json(state: StateArg, t: &TaskSummary) -> Value {
    json!({
        "id": t.id.to_string(),
        "queue": t.queue,
        "state": state.name(),
        "attempts": t.attempts,
        "created_at": json_time(t.created_at),
        "due_at": json_time_opt(t.due_at),
        "started_at": json_time_opt(t.started_at),
        "last_duration_ms": t.last_duration.map(|d| d.as_millis() as u64),
        "last_error": t.last_error,
    })
}

/// A pending task due later is listed as scheduled, as `ls` and the UI do.
fn state_name(task: &TaskInfo, now: SystemTime) -> &'static str {
    match task.state {
        crate::TaskStatus::Pending if task.due_at.is_some_and(|due| due > now) => "scheduled",
        status => status_name(status),
    }
}

/// `show`: everything about one task; 1 when there is no such task.
pub(crate) async fn show(client: &Client, id: TaskId, json: bool) -> Result<u8, CliError> {
    let Some(task) = client.task(&id).await? else {
        return not_found(id, json);
    };
    let state = state_name(&task, SystemTime::now());
    // A payload that is not JSON is shown as such; the rest of the task still is.
    let payload = task.payload();
    let errors: Vec<Value> = task
        .errors
        .iter()
        .map(|e| {
            json!({
                "attempt": e.attempt,
                "at": json_time(e.at),
                "duration_ms": e.duration.as_millis() as u64,
                "message": e.message,
            })
        })
        .collect();
    if json {
        let lease = task.lease.as_ref().map(|l| {
            json!({
                "claimed_by": l.claimed_by,
                "renewed_at": json_time_opt(l.renewed_at),
                "until": json_time_opt(l.until),
            })
        });
        let (payload, payload_error) = match &payload {
            Ok(p) => (p.clone().unwrap_or(Value::Null), None),
            Err(e) => (Value::Null, Some(e.to_string())),
        };
        print_json(&json!({
            "id": task.id.to_string(),
            "queue": task.queue,
            "state": state,
            "attempts": task.attempts,
            "priority": task.priority,
            "created_at": json_time(task.created_at),
            "due_at": json_time_opt(task.due_at),
            "started_at": json_time_opt(task.started_at),
            "finished_at": json_time_opt(task.finished_at),
            "expires_at": json_time_opt(task.expires_at),
            "pending_expires_at": json_time_opt(task.pending_expires_at),
            "lease": lease,
            "payload": payload,
            "payload_error": payload_error,
            "errors": errors,
        }));
        return Ok(exit::OK);
    }
    let mut fields = Table::new(&["FIELD", "VALUE"]);
    let mut field = |name: &'static str, value: String| fields.row(vec![name.into(), value]);
    field("id", task.id.to_string());
    field("queue", task.queue.clone());
    field("state", state.to_owned());
    field("attempts", task.attempts.to_string());
    if let Some(priority) = task.priority {
        field("priority", priority.to_string());
    }
    field("created", time(task.created_at));
    field("due", time_or_dash(task.due_at));
    field("started", time_or_dash(task.started_at));
    field("finished", time_or_dash(task.finished_at));
    if let Some(at) = task.pending_expires_at {
        field("expires unless started", time(at));
    }
    if let Some(at) = task.expires_at {
        field("retained until", time(at));
    }
    if let Some(lease) = &task.lease {
        field(
            "claimed by",
            lease.claimed_by.clone().unwrap_or_else(|| "-".into()),
        );
        field("lease renewed", time_or_dash(lease.renewed_at));
        field("lease until", time_or_dash(lease.until));
    }
    // The header row of a key-value list says nothing: drop it.
    let rendered = fields.render();
    let mut text: String = rendered.lines().skip(1).map(|l| format!("{l}\n")).collect();
    text.push_str("\npayload:\n");
    match payload {
        Ok(Some(value)) => {
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            for line in pretty.lines() {
                text.push_str(&format!("  {line}\n"));
            }
        }
        Ok(None) => text.push_str("  (not retained)\n"),
        Err(e) => text.push_str(&format!("  ({e})\n")),
    }
    if task.errors.is_empty() {
        text.push_str("\nerrors: none\n");
    } else {
        let mut table = Table::new(&[">ATTEMPT", "AT", ">DURATION", "ERROR"]);
        for e in &task.errors {
            table.row(vec![
                e.attempt.to_string(),
                time(e.at),
                duration(e.duration),
                e.message.clone(),
            ]);
        }
        text.push_str("\nerrors:\n");
        text.push_str(&table.render());
    }
    print(&text);
    Ok(exit::OK)
}

fn not_found(id: TaskId, json: bool) -> Result<u8, CliError> {
    if json {
        print_json(&json!({ "id": id.to_string(), "found": false }));
    } else {
        print(&format!(
            "task {id} not found (unknown, or completed and not retained)\n"
        ));
    }
    Ok(exit::NOT_APPLIED)
}

/// `explain`: one sentence; 1 when there is no such task.
pub(crate) async fn explain(client: &Client, id: TaskId, json: bool) -> Result<u8, CliError> {
    let why = client.explain(&id).await?;
    let found = why != Explanation::NotFound;
    if json {
        print_json(&json!({
            "id": id.to_string(),
            "found": found,
            "reason": reason(&why),
            "text": why.to_string(),
        }));
    } else {
        print(&format!("{id}: {why}\n"));
    }
    Ok(if found { exit::OK } else { exit::NOT_APPLIED })
}

/// A stable name for each kind of explanation, for scripts.
fn reason(why: &Explanation) -> &'static str {
    match why {
        Explanation::NotFound => "not_found",
        Explanation::QueuePaused { .. } => "queue_paused",
        Explanation::NoLiveProcess { .. } => "no_live_process",
        Explanation::Scheduled { .. } => "scheduled",
        Explanation::BackingOff { .. } => "backing_off",
        Explanation::WaitingBehind { .. } => "waiting_behind",
        Explanation::Expired { .. } => "expired",
        Explanation::Ready => "ready",
        Explanation::Running { .. } => "running",
        Explanation::Succeeded { .. } => "succeeded",
        Explanation::Failed { .. } => "failed",
        Explanation::Cancelled { .. } => "cancelled",
    }
}

/// The result of a command on one task: printed, and 1 when it did not apply.
fn one(id: TaskId, action: &str, applied: bool, why_not: &str, json: bool) -> u8 {
    if json {
        print_json(&json!({ "id": id.to_string(), "action": action, "applied": applied }));
    } else if applied {
        print(&format!("task {id}: {action}\n"));
    } else {
        print(&format!("task {id}: not {action}: {why_not}\n"));
    }
    if applied { exit::OK } else { exit::NOT_APPLIED }
}

/// `retry <id>` or `retry --queue q --failed`.
pub(crate) async fn retry(client: &Client, args: RetryArgs, json: bool) -> Result<u8, CliError> {
    match (args.id, args.queue) {
        (Some(id), _) => {
            let applied = client.retry(&id).await?;
            Ok(one(
                id,
                "retried",
                applied,
                "it is not a retained failed or cancelled task with its payload, or it waits or \
                 runs already",
                json,
            ))
        }
        (None, Some(queue)) => {
            let retried = client.retry_failed(&queue).await?;
            if json {
                print_json(&json!({ "queue": queue, "retried": retried }));
            } else {
                print(&format!(
                    "{retried} failed or cancelled task(s) of queue `{queue}` retried\n"
                ));
            }
            Ok(exit::OK)
        }
        (None, None) => Err(CliError::usage("give a task id, or --queue with --failed")),
    }
}

/// `cancel <id>`.
pub(crate) async fn cancel(client: &Client, id: TaskId, json: bool) -> Result<u8, CliError> {
    let applied = client.cancel(&id).await?;
    Ok(one(
        id,
        "cancelled (a running task is asked to stop)",
        applied,
        "it has completed, or is unknown",
        json,
    ))
}

/// `run-now <id>`.
pub(crate) async fn run_now(client: &Client, id: TaskId, json: bool) -> Result<u8, CliError> {
    let applied = client.run_now(&id).await?;
    Ok(one(
        id,
        "due now",
        applied,
        "it is due already, running, completed or unknown",
        json,
    ))
}

/// `purge`: deletes the retained tasks the filters name; refuses no filter without `--all`.
pub(crate) async fn purge(client: &Client, args: PurgeArgs, json: bool) -> Result<u8, CliError> {
    if !args.has_filter() && !args.all {
        return Err(
            CliError::usage("purge without a filter deletes every retained task")
                .hint("add --queue, --succeeded, --failed, --cancelled or --older-than, or --all"),
        );
    }
    let mut purge = Purge::new();
    if let Some(queue) = &args.queue {
        purge = purge.queue(queue.clone());
    }
    if args.succeeded {
        purge = purge.succeeded();
    }
    if args.failed {
        purge = purge.failed();
    }
    if args.cancelled {
        purge = purge.cancelled();
    }
    if let Some(age) = args.older_than {
        let before = SystemTime::now()
            .checked_sub(age)
            .ok_or_else(|| CliError::usage("--older-than reaches before the clock's start"))?;
        purge = purge.completed_before(before);
    }
    let deleted = client.purge(purge).await?;
    if json {
        print_json(&json!({ "deleted": deleted }));
    } else {
        print(&format!("{deleted} retained task(s) deleted\n"));
    }
    Ok(exit::OK)
}
