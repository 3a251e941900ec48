//! The `backlite` command, run as a real process against a real database, on SQLite and on
//! PostgreSQL: every command, its output for people and for scripts, its exit codes, and its
//! errors. The command's client must never start: no process row, no claim.

mod cli_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use backlite::{Client, Context, ListState, Task, TaskId, TaskStatus, processor, processors};
use cli_support::{Db, bin, eventually, postgres, sqlite};
use serde::{Deserialize, Serialize};

macro_rules! cli_suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            use super::*;

            cli_suite!(@tests $open;
                migrate_creates_checks_and_refuses_other_schemas,
                inspection_commands_show_every_state,
                control_commands_change_tasks_and_queues_and_say_when_they_did_not,
                purge_deletes_what_its_filters_name,
                ui_serves_the_pages_until_stopped,
            );
        }
    };
    (@tests $open:path; $($test:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                if let Some(db) = $open() {
                    super::$test(db).await
                }
            }
        )*
    };
}

cli_suite!(sqlite, sqlite);
cli_suite!(postgres, postgres);

// ---------------------------------------------------------------- tasks and processors

/// Fails when told to; every outcome retained with its payload.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "cli_jobs", max_attempts = 1, retention(data))]
struct Job {
    n: u32,
    #[serde(default)]
    fail: bool,
}

#[processor]
async fn run_job(task: Job) -> anyhow::Result<()> {
    anyhow::ensure!(!task.fail, "job {} told to fail", task.n);
    Ok(())
}

/// Runs until cancelled: a task that stays running while the test looks at it.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "cli_slow", max_attempts = 1, retention(data))]
struct Slow;

#[processor]
async fn run_slow(ctx: Context, _task: Slow) -> anyhow::Result<()> {
    ctx.cancelled().await;
    anyhow::bail!("stopped")
}

/// A database in every state, through the application's own API: in `cli_jobs` a pending
/// task, a scheduled one, one that succeeded, one that failed (twice: one to retry by id, one
/// by queue), one cancelled; and, when `running`, a started client holding a `cli_slow` task.
struct Fixture {
    pending: TaskId,
    scheduled: TaskId,
    succeeded: TaskId,
    failed: TaskId,
    failed_too: TaskId,
    cancelled: TaskId,
    running: Option<(Client, TaskId)>,
}

async fn fixture(db: &Db, running: bool) -> Fixture {
    let client = db
        .builder()
        .processors(processors![run_job, run_slow])
        .build()
        .await
        .expect("build");
    let succeeded = client.add(Job { n: 1, fail: false }).save().await.unwrap()[0];
    let failed = client.add(Job { n: 2, fail: true }).save().await.unwrap()[0];
    let failed_too = client.add(Job { n: 3, fail: true }).save().await.unwrap()[0];
    assert_eq!(client.drain().await.expect("drain"), 3);
    let cancelled = client.add(Job { n: 4, fail: false }).save().await.unwrap()[0];
    assert!(client.cancel(&cancelled).await.unwrap());
    let scheduled = client
        .add(Job { n: 5, fail: false })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap()[0];
    let pending = client
        .add(Job { n: 6, fail: false })
        .priority(3)
        .save()
        .await
        .unwrap()[0];
    let running = match running {
        false => None,
        true => {
            // A client of its own that serves only the slow queue, so that the pending job
            // stays pending.
            let worker = db
                .builder()
                .processors(processors![run_slow])
                // Renewed every second: a cancel asked of its running task reaches it at once.
                .release_after(Duration::from_secs(3))
                .build()
                .await
                .expect("build worker");
            let id = worker.add(Slow).save().await.unwrap()[0];
            worker.start();
            eventually("the slow task runs", async || {
                worker.status(&id).await.unwrap() == TaskStatus::Running
            })
            .await;
            Some((worker, id))
        }
    };
    Fixture {
        pending,
        scheduled,
        succeeded,
        failed,
        failed_too,
        cancelled,
        running,
    }
}

// ---------------------------------------------------------------- the tests

async fn migrate_creates_checks_and_refuses_other_schemas(db: Db) {
    // Nothing there yet: on SQLite a wrong path must not become a new file; a PostgreSQL
    // schema without tables is told apart.
    let missing = db.run(&["stats"]);
    if db.is_postgres() {
        let missing = missing.code(4);
        assert!(
            missing.stderr.contains("holds no backlite tables"),
            "{}",
            missing.stderr
        );
        assert!(missing.stderr.contains("backlite migrate"));
        db.run(&["migrate", "--check"]).code(1);
    } else {
        let missing = missing.code(3);
        assert!(
            missing.stderr.contains("no database at"),
            "{}",
            missing.stderr
        );
        assert!(missing.stderr.contains("hint:"));
        db.run(&["migrate", "--check"]).code(3);
        let Db::Sqlite { path, .. } = &db else {
            unreachable!()
        };
        assert!(!path.exists(), "a read created the database");
    }

    let migrated = db.run(&["migrate", "--json"]).code(0).json();
    assert_eq!(migrated["from"], 0);
    assert_eq!(migrated["migrated"], true);
    let latest = migrated["to"].as_i64().expect("a version");
    assert!(latest > 0);

    let check = db.run(&["migrate", "--check", "--json"]).code(0).json();
    assert_eq!(check["found"], latest);
    assert_eq!(check["pending"], 0);
    let again = db.run(&["migrate"]).code(0);
    assert!(
        again.stdout.contains("nothing to migrate"),
        "{}",
        again.stdout
    );
    db.run(&["stats"]).code(0);

    // What the application's `build()` sees is the same schema.
    db.builder()
        .build()
        .await
        .expect("the application opens it");

    // A newer backlite wrote it: every command refuses it and says to upgrade.
    db.record_schema_version(latest + 1).await;
    let newer = db.run(&["migrate", "--check"]).code(4);
    assert!(newer.stdout.contains("newer"), "{}", newer.stdout);
    let refused = db.run(&["queues"]).code(4);
    assert!(refused.stderr.contains("upgrade"), "{}", refused.stderr);
    db.run(&["migrate"]).code(4);
}

async fn inspection_commands_show_every_state(db: Db) {
    db.run(&["migrate"]).code(0);
    let fx = fixture(&db, true).await;
    let (worker, running) = fx.running.as_ref().expect("running");

    // stats: counts per queue, as the client's.
    let stats = db.run_async(&["stats", "--json"]).await.code(0).json();
    let jobs = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "cli_jobs")
        .expect("cli_jobs in stats")
        .clone();
    assert_eq!(
        (
            &jobs["pending"],
            &jobs["scheduled"],
            &jobs["succeeded"],
            &jobs["failed"],
            &jobs["cancelled"]
        ),
        (&1.into(), &1.into(), &1.into(), &2.into(), &1.into())
    );
    let table = db.run_async(&["stats"]).await.code(0).stdout;
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("QUEUE") && header.contains("CANCELLED"),
        "{table}"
    );
    let slow_row = table.lines().find(|l| l.starts_with("cli_slow")).unwrap();
    assert_eq!(
        slow_row.split_whitespace().collect::<Vec<_>>(),
        ["cli_slow", "0", "0", "1", "0", "0", "0"]
    );
    assert!(table.contains("(total)"));

    // queues: both, running.
    let queues = db.run_async(&["queues", "--json"]).await.code(0).json();
    let names: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cli_jobs", "cli_slow"]);
    assert!(
        queues
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["paused"] == false)
    );

    // ls: every state by default, one state, one queue; the rows the client lists.
    let all = db.run_async(&["ls", "--json"]).await.code(0).json();
    let listed = |value: &serde_json::Value, state: &str| -> Vec<String> {
        value["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == state)
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&all, "pending"), [fx.pending.to_string()]);
    assert_eq!(listed(&all, "scheduled"), [fx.scheduled.to_string()]);
    assert_eq!(listed(&all, "running"), [running.to_string()]);
    assert_eq!(listed(&all, "succeeded"), [fx.succeeded.to_string()]);
    let mut failed = listed(&all, "failed");
    failed.sort();
    let mut expected = vec![fx.failed.to_string(), fx.failed_too.to_string()];
    expected.sort();
    assert_eq!(failed, expected);
    assert_eq!(listed(&all, "cancelled"), [fx.cancelled.to_string()]);
    let failed_rows = db
        .run_async(&["ls", "--state", "failed", "--queue", "cli_jobs", "--json"])
        .await
        .code(0)
        .json();
    assert_eq!(failed_rows["tasks"].as_array().unwrap().len(), 2);
    assert!(
        failed_rows["tasks"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("told to fail")
    );
    let none = db
        .run_async(&["ls", "--state", "running", "--queue", "cli_jobs", "--json"])
        .await
        .code(0)
        .json();
    assert!(none["tasks"].as_array().unwrap().is_empty());

    // Paging: one row a page, the cursor printed, the next page the other task.
    let first = db
        .run_async(&["ls", "-s", "failed", "--limit", "1", "--json"])
        .await
        .code(0)
        .json();
    let cursor = first["next"]["failed"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let second = db
        .run_async(&[
            "ls", "-s", "failed", "--limit", "1", "--after", &cursor, "--json",
        ])
        .await
        .code(0)
        .json();
    assert_ne!(first["tasks"][0]["id"], second["tasks"][0]["id"]);
    assert!(second["next"].as_object().unwrap().is_empty());
    let people = db
        .run_async(&["ls", "-s", "failed", "--limit", "1"])
        .await
        .code(0);
    assert!(
        people.stdout.contains(&format!("--after {cursor}")),
        "{}",
        people.stdout
    );
    // A cursor of one list does not page another.
    db.run_async(&["ls", "-s", "succeeded", "--after", &cursor])
        .await
        .code(2);

    // show: the payload and the error history.
    let shown = db
        .run_async(&["show", &fx.failed.to_string(), "--json"])
        .await
        .code(0)
        .json();
    assert_eq!(shown["state"], "failed");
    assert_eq!(shown["queue"], "cli_jobs");
    assert_eq!(shown["payload"]["n"], 2);
    assert_eq!(shown["errors"][0]["attempt"], 1);
    assert!(
        shown["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("job 2 told to fail")
    );
    let people = db
        .run_async(&["show", &fx.failed.to_string()])
        .await
        .code(0)
        .stdout;
    assert!(people.contains("\"fail\": true"), "{people}");
    assert!(people.contains("job 2 told to fail"), "{people}");
    let pending = db
        .run_async(&["show", &fx.pending.to_string(), "--json"])
        .await
        .code(0)
        .json();
    assert_eq!(
        (&pending["state"], &pending["priority"]),
        (&"pending".into(), &3.into())
    );
    let scheduled = db
        .run_async(&["show", &fx.scheduled.to_string(), "--json"])
        .await
        .json();
    assert_eq!(scheduled["state"], "scheduled");
    let run = db
        .run_async(&["show", &running.to_string(), "--json"])
        .await
        .code(0)
        .json();
    assert_eq!(run["state"], "running");
    assert!(run["lease"]["claimed_by"].is_string());
    let unknown = uuid_v7().to_string();
    db.run_async(&["show", &unknown]).await.code(1);

    // explain: the reasons, with stable names for scripts.
    let why = |id: TaskId| {
        let db = &db;
        async move {
            db.run_async(&["explain", &id.to_string(), "--json"])
                .await
                .code(0)
                .json()["reason"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(why(*running).await, "running");
    assert_eq!(why(fx.failed).await, "failed");
    assert_eq!(why(fx.cancelled).await, "cancelled");
    // No live process serves `cli_jobs` (the worker serves `cli_slow` only).
    assert_eq!(why(fx.pending).await, "no_live_process");
    let people = db
        .run_async(&["explain", &fx.pending.to_string()])
        .await
        .code(0)
        .stdout;
    assert!(
        people.contains("no live process serves queue `cli_jobs`"),
        "{people}"
    );
    db.run_async(&["explain", &unknown]).await.code(1);

    // processes: the started worker, and only it: the command's own clients never register.
    let processes = db.run_async(&["processes", "--json"]).await.code(0).json();
    let processes = processes.as_array().unwrap();
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(processes[0]["pid"], std::process::id());
    assert_eq!(processes[0]["queues"], serde_json::json!(["cli_slow"]));
    let people = db.run_async(&["processes"]).await.code(0).stdout;
    assert!(people.contains(&std::process::id().to_string()), "{people}");

    // A bad id is a usage error, before any database is opened.
    db.run_async(&["show", "not-an-id"]).await.code(2);
    // The slow task runs until cancelled: a stop that gives up hands it back.
    worker.stop(Duration::ZERO).await;
    let gone = db.run_async(&["processes"]).await.code(0).stdout;
    assert_eq!(gone, "no live process\n");
}

async fn control_commands_change_tasks_and_queues_and_say_when_they_did_not(db: Db) {
    db.run(&["migrate"]).code(0);
    let fx = fixture(&db, true).await;
    let (worker, running) = fx.running.as_ref().expect("running");
    let client = db.builder().build().await.unwrap();
    let status = |id: TaskId| {
        let client = client.clone();
        async move { client.status(&id).await.unwrap() }
    };

    // pause / resume: 1 when nothing changed.
    db.run_async(&["pause", "cli_jobs"]).await.code(0);
    db.run_async(&["pause", "cli_jobs"]).await.code(1);
    let queues = client.queues().await.unwrap();
    assert!(
        queues
            .iter()
            .find(|q| q.name() == "cli_jobs")
            .unwrap()
            .is_paused()
    );
    let why = db
        .run_async(&["explain", &fx.pending.to_string(), "--json"])
        .await
        .json();
    assert_eq!(why["reason"], "queue_paused");
    let resumed = db
        .run_async(&["resume", "cli_jobs", "--json"])
        .await
        .code(0)
        .json();
    assert_eq!(resumed["applied"], true);
    db.run_async(&["resume", "cli_jobs"]).await.code(1);
    assert!(!client.queues().await.unwrap().iter().any(|q| q.is_paused()));
    // A name that breaks the rules is a usage error.
    db.run_async(&["pause", "no spaces"]).await.code(2);

    // run-now: the scheduled task becomes due; a second time it is due already.
    db.run_async(&["run-now", &fx.scheduled.to_string()])
        .await
        .code(0);
    let page = client.tasks(ListState::Pending).fetch().await.unwrap();
    assert!(page.tasks.iter().any(|t| t.id == fx.scheduled));
    db.run_async(&["run-now", &fx.scheduled.to_string()])
        .await
        .code(1);

    // cancel: a waiting task ends cancelled; a running one is asked and its processor stops;
    // a completed one is not cancelled again.
    db.run_async(&["cancel", &fx.pending.to_string()])
        .await
        .code(0);
    assert_eq!(status(fx.pending).await, TaskStatus::Cancelled);
    db.run_async(&["cancel", &running.to_string()])
        .await
        .code(0);
    eventually("the running task ends cancelled", async || {
        status(*running).await == TaskStatus::Cancelled
    })
    .await;
    let again = db
        .run_async(&["cancel", &fx.succeeded.to_string(), "--json"])
        .await
        .code(1);
    assert_eq!(again.json()["applied"], false);

    // retry by id: a failed task waits again; a second retry finds it waiting.
    db.run_async(&["retry", &fx.failed.to_string()])
        .await
        .code(0);
    assert_eq!(status(fx.failed).await, TaskStatus::Pending);
    db.run_async(&["retry", &fx.failed.to_string()])
        .await
        .code(1);
    db.run_async(&["retry", &fx.succeeded.to_string()])
        .await
        .code(1);

    // retry by queue: the other failed and the cancelled ones (the cancelled pending task
    // and the first cancelled one).
    let retried = db
        .run_async(&["retry", "--queue", "cli_jobs", "--failed", "--json"])
        .await
        .code(0)
        .json();
    assert_eq!(retried["retried"], 3);
    for id in [fx.failed_too, fx.cancelled, fx.pending] {
        assert_eq!(status(id).await, TaskStatus::Pending, "{id}");
    }
    db.run_async(&["retry", "--queue", "cli_jobs"])
        .await
        .code(2);
    db.run_async(&["retry"]).await.code(2);
    assert!(worker.stop(Duration::from_secs(5)).await);
}

async fn purge_deletes_what_its_filters_name(db: Db) {
    db.run(&["migrate"]).code(0);
    let fx = fixture(&db, false).await;
    let client = db.builder().build().await.unwrap();

    // No filter: refused, nothing deleted.
    let refused = db.run_async(&["purge"]).await.code(2);
    assert!(refused.stderr.contains("--all"), "{}", refused.stderr);
    assert_eq!(
        client.status(&fx.succeeded).await.unwrap(),
        TaskStatus::Succeeded
    );

    // Completed longer ago than a day: none.
    let none = db
        .run_async(&["purge", "--older-than", "1d", "--json"])
        .await
        .code(0)
        .json();
    assert_eq!(none["deleted"], 0);
    // The failed ones of the queue.
    let failed = db
        .run_async(&["purge", "--queue", "cli_jobs", "--failed", "--json"])
        .await
        .code(0)
        .json();
    assert_eq!(failed["deleted"], 2);
    assert_eq!(
        client.status(&fx.failed).await.unwrap(),
        TaskStatus::NotFound
    );
    assert_eq!(
        client.status(&fx.cancelled).await.unwrap(),
        TaskStatus::Cancelled
    );
    // Everything retained; waiting tasks stay.
    let all = db.run_async(&["purge", "--all"]).await.code(0);
    assert_eq!(all.stdout, "2 retained task(s) deleted\n");
    assert_eq!(
        client.status(&fx.succeeded).await.unwrap(),
        TaskStatus::NotFound
    );
    assert_eq!(
        client.status(&fx.pending).await.unwrap(),
        TaskStatus::Pending
    );
    assert_eq!(
        client.status(&fx.scheduled).await.unwrap(),
        TaskStatus::Pending
    );
    db.run_async(&["purge", "--older-than", "soon"])
        .await
        .code(2);
}

async fn ui_serves_the_pages_until_stopped(db: Db) {
    db.run(&["migrate"]).code(0);
    let fx = fixture(&db, false).await;
    // Read-only by default; `--actions` adds the buttons, each a form with the router's token.
    for actions in [false, true] {
        let mut args = vec!["ui", "--listen", "127.0.0.1:0"];
        if actions {
            args.push("--actions");
        }
        let mut child = db
            .command()
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the UI");
        let stdout = child.stdout.take().unwrap();
        let first = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .unwrap()
        .expect("the first line");
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {first:?}"));
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let get = |path: String| {
            let addr = addr.clone();
            tokio::task::spawn_blocking(move || {
                let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
                write!(
                    stream,
                    "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).expect("read");
                response
            })
        };
        let upcoming = get("/upcoming".into()).await.unwrap();
        assert!(upcoming.starts_with("HTTP/1.1 200"), "{upcoming}");
        assert!(upcoming.contains(&fx.pending.to_string()), "{upcoming}");
        let failed = get(format!("/completed/{}", fx.failed)).await.unwrap();
        assert!(failed.starts_with("HTTP/1.1 200"), "{failed}");
        assert!(failed.contains("told to fail"));
        let has_button = failed.contains("name=\"csrf\"") && failed.contains("/retry\"");
        assert_eq!(
            has_button, actions,
            "a retry button with --actions only: {failed}"
        );
        child.kill().expect("stop the UI");
        child.wait().expect("reap the UI");
    }

    // A port taken: a usage error that says what to do.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let refused = db.run_async(&["ui", "--listen", &port]).await.code(2);
    assert!(refused.stderr.contains("--listen"), "{}", refused.stderr);
}

// ---------------------------------------------------------------- without a database

#[test]
fn usage_errors_exit_2_and_help_lists_the_exit_codes() {
    let run = |args: &[&str]| cli_support::Run::from(bin().args(args).output().unwrap());
    let missing = run(&["stats"]).code(2);
    assert!(
        missing.stderr.contains("BACKLITE_DATABASE"),
        "{}",
        missing.stderr
    );
    run(&["frobnicate"]).code(2);
    run(&["--database", "x.db"]).code(2);
    let help = run(&["--help"]).code(0);
    for line in ["Exit codes:", "  3  database error", "  4  schema"] {
        assert!(help.stdout.contains(line), "{}", help.stdout);
    }
    for command in [
        "migrate",
        "stats",
        "queues",
        "ls",
        "show",
        "explain",
        "retry",
        "cancel",
        "run-now",
        "pause",
        "resume",
        "purge",
        "processes",
        "ui",
    ] {
        assert!(
            help.stdout.contains(&format!("  {command} ")),
            "{command}: {}",
            help.stdout
        );
    }
    // --schema names a PostgreSQL schema: on an SQLite path it is a mistake.
    let schema = run(&["--database", "x.db", "--schema", "s", "stats"]).code(2);
    assert!(schema.stderr.contains("PostgreSQL"), "{}", schema.stderr);
}

#[test]
fn a_file_that_is_not_sqlite_is_named_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "these are not the tasks you are looking for".repeat(50),
    )
    .unwrap();
    let out = cli_support::Run::from(
        bin()
            .arg("stats")
            .env("BACKLITE_DATABASE", &path)
            .output()
            .unwrap(),
    )
    .code(3);
    assert!(
        out.stderr.contains("is not an SQLite database"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
}

#[test]
fn an_unreachable_server_is_a_database_error_without_its_password() {
    // Port 1 on the loopback: nothing listens there.
    let out = cli_support::Run::from(
        bin()
            .args(["stats", "--database", "postgres://u:s3cret@127.0.0.1:1/db"])
            .output()
            .unwrap(),
    )
    .code(3);
    assert!(out.stderr.contains("u:***@127.0.0.1:1"), "{}", out.stderr);
    assert!(!out.stderr.contains("s3cret"), "{}", out.stderr);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
}

/// A fresh UUID v7 text, parsed as a task id nobody stored.
fn uuid_v7() -> TaskId {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    format!(
        "{:08x}-{:04x}-7000-8000-{:012x}",
        now >> 16,
        now & 0xffff,
        std::process::id()
    )
    .parse()
    .unwrap()
}
