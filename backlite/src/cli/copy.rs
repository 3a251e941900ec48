//! `backlite copy --to postgres://..`: copies every task (ids, states, attempts, due times,
//! priorities, claims, error histories, unique keys, retained tasks), the schedules with
//! their next ticks and the queue rows (paused queues) into another database, then verifies
//! the counts. Rows already there are left as they are, so a copy can be run again: it
//! copies what is missing.

use std::collections::BTreeMap;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::client::Client;
use crate::storage::copy::Census;

use super::error::{CliError, exit};
use super::open::Target;
use super::output::{Table, print, print_json};

#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// The database to copy into: a postgres:// URL (or an SQLite path).
    #[arg(long, value_name = "URL")]
    pub(crate) to: String,
    /// PostgreSQL: the schema to copy into (default `public`).
    #[arg(long, value_name = "NAME")]
    pub(crate) to_schema: Option<String>,
    /// Copy even when started clients (workers) are live on either database.
    #[arg(long)]
    pub(crate) force: bool,
    /// Tasks read and written per batch.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub(crate) batch: u32,
}

const STATES: [&str; 5] = ["waiting", "running", "succeeded", "failed", "cancelled"];

fn state_name(state: i16) -> String {
    usize::try_from(state)
        .ok()
        .and_then(|s| STATES.get(s))
        .map_or_else(|| format!("state {state}"), |s| (*s).to_owned())
}

pub(crate) async fn run(source: &Target, args: CopyArgs, json: bool) -> Result<u8, CliError> {
    let dest = Target::new(Some(args.to), args.to_schema)?;
    if dest.database == source.database && dest.schema == source.schema {
        return Err(CliError::usage("--to names the database being copied"));
    }
    // The source must exist and be no newer than this backlite; both are then brought to this
    // version, so that their rows have the same columns.
    let status = source.status().await?;
    if status.found == 0 || status.is_newer() {
        super::open::check_current(&source.shown(), status)?;
    }
    let from = source.builder().build().await?;
    let to = dest.builder().build().await?;
    refuse_live(&from, &source.shown(), args.force).await?;
    refuse_live(&to, &dest.shown(), args.force).await?;

    let before = from.driver().copy_census().await?;
    let total = before.total();
    let bar = progress(total, json);
    let started = Instant::now();
    let (mut read, mut inserted) = (0u64, 0u64);
    let mut after = None;
    loop {
        let page = from.driver().copy_tasks(after, args.batch as usize).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        let n = page.len() as u64;
        inserted += to.driver().copy_insert_tasks(page).await?;
        read += n;
        bar.inc(n);
        tracing::debug!(read, inserted, "copy batch stored");
        if n < u64::from(args.batch) {
            break;
        }
    }
    bar.finish_and_clear();
    let source_census = from.driver().copy_census().await?;
    let meta = to
        .driver()
        .copy_insert_meta(
            source_census.schedules.clone(),
            source_census.queues.clone(),
        )
        .await?;
    let copy_census = to.driver().copy_census().await?;
    let differences = compare(&source_census, &copy_census);
    let elapsed = started.elapsed();
    if json {
        print_json(&json!({
            "from": source.shown(),
            "to": dest.shown(),
            "tasks": read,
            "inserted": inserted,
            "already_there": read - inserted,
            "schedules": source_census.schedules.len(),
            "schedules_inserted": meta.schedules,
            "queues": source_census.queues.len(),
            "queues_inserted": meta.queues,
            "seconds": elapsed.as_secs_f64(),
            "verified": differences.is_empty(),
            "differences": differences,
        }));
    } else {
        let rate = read as f64 / elapsed.as_secs_f64().max(0.001);
        let mut text = format!(
            "copied `{}` into `{}`: {read} tasks read, {inserted} inserted, {} already there \
             ({:.1}s, {rate:.0} tasks/s); {} schedule(s) ({} inserted), {} queue row(s) ({} \
             inserted)\n",
            source.shown(),
            dest.shown(),
            read - inserted,
            elapsed.as_secs_f64(),
            source_census.schedules.len(),
            meta.schedules,
            source_census.queues.len(),
            meta.queues,
        );
        if differences.is_empty() {
            text.push_str(&format!(
                "verified: the task count of every queue and state ({} tasks), the schedules and \
                 the paused queues are the same in both databases\n",
                copy_census.total()
            ));
        } else {
            text.push_str("the two databases differ:\n");
            for d in &differences {
                text.push_str(&format!("  {d}\n"));
            }
        }
        print(&text);
    }
    if !differences.is_empty() {
        return Err(
            CliError::new(exit::MISMATCH, "the copy's counts differ from the source's").hint(
                "a worker changed either database during the copy, or the target held other \
             tasks: stop every worker and copy into an empty schema",
            ),
        );
    }
    Ok(exit::OK)
}

/// Refuses a database that live started clients use: they would change it during the copy
/// (or, on the target, run copied tasks before the copy is verified).
async fn refuse_live(client: &Client, shown: &str, force: bool) -> Result<(), CliError> {
    let live = client.processes().await?;
    if live.is_empty() {
        return Ok(());
    }
    if force {
        tracing::warn!(
            database = shown,
            live = live.len(),
            "copying while workers are live"
        );
        return Ok(());
    }
    let mut table = Table::new(&["HOST", ">PID", "QUEUES"]);
    for p in &live {
        table.row(vec![p.host.clone(), p.pid.to_string(), p.queues.join(",")]);
    }
    Err(CliError::new(
        exit::NOT_APPLIED,
        format!(
            "{} worker process(es) are live on `{shown}`:\n{}",
            live.len(),
            table.render().trim_end()
        ),
    )
    .hint("stop them first (`backlite processes` lists them), or pass --force"))
}

/// The bar on a terminal: done, total, rate and time left. Hidden for `--json`, and by
/// indicatif when standard error is not a terminal.
fn progress(total: u64, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40} {pos}/{len} tasks  {rate}  {elapsed} elapsed, about {eta} left",
    ) {
        bar.set_style(style.with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} tasks/s", state.per_sec());
            },
        ));
    }
    bar
}

/// What differs between the two censuses, one line each.
fn compare(source: &Census, copy: &Census) -> Vec<String> {
    let mut differences = Vec::new();
    let counts = |c: &Census| -> BTreeMap<(String, i16), u64> {
        c.tasks
            .iter()
            .map(|(q, s, n)| ((q.clone(), *s), *n))
            .collect()
    };
    let (a, b) = (counts(source), counts(copy));
    let keys: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).cloned().collect();
    for key in keys {
        let (x, y) = (
            a.get(&key).copied().unwrap_or(0),
            b.get(&key).copied().unwrap_or(0),
        );
        if x != y {
            differences.push(format!(
                "queue `{}`, {}: {x} in the source, {y} in the copy",
                key.0,
                state_name(key.1)
            ));
        }
    }
    if source.schedules != copy.schedules {
        differences.push(format!(
            "schedules: {:?} in the source, {:?} in the copy",
            source.schedules, copy.schedules
        ));
    }
    let paused = |c: &Census| -> Vec<String> {
        c.queues
            .iter()
            .filter(|q| q.paused_at.is_some())
            .map(|q| q.name.clone())
            .collect()
    };
    if paused(source) != paused(copy) {
        differences.push(format!(
            "paused queues: {:?} in the source, {:?} in the copy",
            paused(source),
            paused(copy)
        ));
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::copy::{CopyQueue, CopySchedule};

    #[test]
    fn differences_name_the_queue_and_state() {
        let source = Census {
            tasks: vec![("a".into(), 0, 5), ("a".into(), 3, 2)],
            schedules: vec![CopySchedule {
                name: "a".into(),
                definition: "every 1000ms".into(),
                next_run_at: 7,
            }],
            queues: vec![CopyQueue {
                name: "a".into(),
                paused_at: Some(1),
            }],
        };
        assert!(compare(&source, &source.clone()).is_empty());
        let mut copy = source.clone();
        copy.tasks[1].2 = 1;
        copy.tasks.push(("b".into(), 4, 1));
        copy.queues[0].paused_at = None;
        assert_eq!(
            compare(&source, &copy),
            [
                "queue `a`, failed: 2 in the source, 1 in the copy",
                "queue `b`, cancelled: 0 in the source, 1 in the copy",
                "paused queues: [\"a\"] in the source, [] in the copy",
            ]
        );
    }
}
