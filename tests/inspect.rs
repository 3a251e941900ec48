//! Inspecting tasks through the client, on every backend: `Client::task` (a task with its
//! error history), `Client::tasks` (keyset-paged lists) and `Client::explain` (why a task is
//! where it is). The rows other layers write (paused queues, live processes) are written here
//! with plain SQL.
//!
//! PostgreSQL runs when `BACKLITE_TEST_POSTGRES_URL` is set (see `common::pg_schema`).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backlite::{
    Client, Context, Error, Explanation, ListState, Task, TaskId, TaskStatus, processor, processors,
};
use common::backend::{TestDb, open_postgres, open_sqlite};
use common::eventually_async;
use serde::{Deserialize, Serialize};

/// Long enough for anything to happen on a loaded machine; a passing test never waits it out.
const SHORT: Duration = Duration::from_secs(10);

macro_rules! inspect_suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            use super::*;

            inspect_suite!(@tests $open;
                a_task_that_succeeds_on_its_third_attempt_keeps_its_two_failures,
                a_waiting_task_shows_its_times_and_a_corrupt_payload_is_a_typed_error,
                lists_page_by_state_and_filter_with_a_cursor,
                explain_names_what_holds_a_waiting_task_in_the_order_to_act_on,
                explain_and_task_follow_a_task_from_running_to_done,
            );
        }
    };
    (@tests $open:path; $($test:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                if let Some(db) = $open().await {
                    super::$test(db).await
                }
            }
        )*
    };
}

inspect_suite!(sqlite, open_sqlite);
inspect_suite!(postgres, open_postgres);

/// Fails its first `fail_until` attempts.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "inspected", max_attempts = 3, retention(data))]
struct Inspected {
    n: u32,
    #[serde(default)]
    fail_until: u32,
}

#[processor]
async fn run_inspected(ctx: Context, task: Inspected) -> Result<(), std::io::Error> {
    if ctx.attempt() <= task.fail_until {
        return Err(std::io::Error::other(format!(
            "attempt {} of {} fails",
            ctx.attempt(),
            task.n
        )));
    }
    Ok(())
}

/// Runs until its key is released: a task that stays running while the test looks at it.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "held", retention)]
struct Held {
    key: String,
}

static RELEASED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static STARTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[processor]
async fn run_held(task: Held) -> Result<(), std::io::Error> {
    STARTED.lock().unwrap().push(task.key.clone());
    while !RELEASED.lock().unwrap().contains(&task.key) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn client_on(db: &TestDb) -> Client {
    db.builder()
        .workers(2)
        .processors(processors![run_inspected, run_held])
        .build()
        .await
        .expect("build")
}

async fn reaches(client: &Client, id: &TaskId, wanted: TaskStatus) -> bool {
    eventually_async(SHORT, || async {
        client.status(id).await.ok() == Some(wanted)
    })
    .await
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs `sql` on the test's database, `{t}` standing for where backlite's tables are.
async fn execute(db: &TestDb, sql: &str) {
    match db {
        TestDb::Sqlite(file) => {
            file.conn()
                .execute_batch(&sql.replace("{t}", ""))
                .expect("SQLite statement");
        }
        TestDb::Postgres(pg) => {
            pg.conn
                .batch_execute(&sql.replace("{t}", &format!("\"{}\".", pg.schema)))
                .await
                .expect("PostgreSQL statement");
        }
    }
}

/// A live process's registry row, as a running client writes it.
async fn register_process(db: &TestDb, n: u32, queues: &str, last_seen: SystemTime) {
    let at = millis(last_seen);
    execute(
        db,
        &format!(
            "INSERT INTO {{t}}backlite_processes \
             (id, host, pid, queues, workers, started_at, last_seen_at) \
             VALUES ('00000000-0000-4000-8000-{n:012}', 'web-{n}', {pid}, '{queues}', 4, {at}, \
             {at})",
            pid = 1000 + n
        ),
    )
    .await;
}

async fn pause(db: &TestDb, queue: &str, at: SystemTime) {
    execute(
        db,
        &format!(
            "INSERT INTO {{t}}backlite_queues (name, paused_at) VALUES ('{queue}', {})",
            millis(at)
        ),
    )
    .await;
}

// ---------------------------------------------------------------- Client::task

async fn a_task_that_succeeds_on_its_third_attempt_keeps_its_two_failures(db: TestDb) {
    let client = client_on(&db).await;
    let added = SystemTime::now();
    let id = client
        .add(Inspected {
            n: 7,
            fail_until: 2,
        })
        .save()
        .await
        .unwrap()[0];
    client.start();
    assert!(reaches(&client, &id, TaskStatus::Succeeded).await);
    let task = client.task(&id).await.unwrap().expect("retained");
    assert_eq!((task.id, task.queue.as_str()), (id, "inspected"));
    assert_eq!((task.state, task.attempts), (TaskStatus::Succeeded, 3));
    let messages: Vec<_> = task.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["attempt 1 of 7 fails", "attempt 2 of 7 fails"]);
    assert_eq!(
        task.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(task.errors[0].at <= task.errors[1].at);
    assert!(task.errors[0].at >= added - Duration::from_secs(1));
    assert_eq!(
        task.payload().unwrap(),
        Some(serde_json::json!({"n": 7, "fail_until": 2}))
    );
    let (started, finished) = (task.started_at.unwrap(), task.finished_at.unwrap());
    assert!(task.errors[1].at <= started && started <= finished);
    assert_eq!((task.due_at, task.lease), (None, None));
    assert!(task.created_at >= added - Duration::from_secs(1));
    assert_eq!(client.task(&unknown_id()).await.unwrap(), None);
    assert!(client.stop(SHORT).await);
}

async fn a_waiting_task_shows_its_times_and_a_corrupt_payload_is_a_typed_error(db: TestDb) {
    let client = client_on(&db).await;
    let before = SystemTime::now();
    let ids = client
        .add(Inspected {
            n: 1,
            fail_until: 0,
        })
        .add(Inspected {
            n: 2,
            fail_until: 0,
        })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap();
    let task = client.task(&ids[0]).await.unwrap().expect("waiting");
    assert_eq!((task.state, task.attempts), (TaskStatus::Pending, 0));
    let due = task.due_at.unwrap();
    assert!(due >= before + Duration::from_secs(3599), "{due:?}");
    assert!(task.errors.is_empty());
    assert_eq!((task.started_at, task.finished_at), (None, None));
    assert_eq!(task.lease, None);
    assert_eq!(task.payload().unwrap().unwrap()["n"], 1);

    db.set_payload(&ids[1], b"{\"n\": 2").await;
    let corrupt = client.task(&ids[1]).await.unwrap().expect("still readable");
    match corrupt.payload() {
        Err(Error::Payload { id, .. }) => assert_eq!(id, ids[1]),
        other => panic!("expected a payload error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- Client::tasks

async fn lists_page_by_state_and_filter_with_a_cursor(db: TestDb) {
    let client = client_on(&db).await;
    let mut due_now = Vec::new();
    for n in 0..5 {
        let id = client
            .add(Inspected { n, fail_until: 0 })
            .save()
            .await
            .unwrap()[0];
        due_now.push(id);
    }
    let later = client
        .add(Inspected {
            n: 9,
            fail_until: 0,
        })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut page = client
        .tasks(ListState::Pending)
        .limit(2)
        .fetch()
        .await
        .unwrap();
    let mut pages = 1;
    loop {
        assert!(page.tasks.len() <= 2);
        seen.extend(page.tasks.iter().map(|t| t.id));
        let Some(next) = page.next else { break };
        // The cursor travels as text, as it would in a URL.
        let next = next.to_string().parse().unwrap();
        page = client
            .tasks(ListState::Pending)
            .limit(2)
            .after(next)
            .fetch()
            .await
            .unwrap();
        pages += 1;
    }
    assert_eq!(seen, due_now, "claim order, every task once");
    assert_eq!(pages, 3);

    let scheduled = client
        .tasks(ListState::Scheduled)
        .queue("inspected")
        .fetch()
        .await
        .unwrap();
    assert_eq!(
        scheduled.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        later
    );
    assert_eq!(scheduled.next, None);
    assert_eq!(scheduled.tasks[0].state, TaskStatus::Pending);
    let in_an_hour = SystemTime::now() + Duration::from_secs(3000);
    let due_soon = client
        .tasks(ListState::Scheduled)
        .due(..in_an_hour)
        .fetch()
        .await
        .unwrap();
    assert!(due_soon.tasks.is_empty());
    let created_later = client
        .tasks(ListState::Pending)
        .created(SystemTime::now() + Duration::from_secs(60)..)
        .fetch()
        .await
        .unwrap();
    assert!(created_later.tasks.is_empty());
    let other_queue = client
        .tasks(ListState::Pending)
        .queue("held")
        .fetch()
        .await
        .unwrap();
    assert!(other_queue.tasks.is_empty());

    let refused = client
        .tasks(ListState::Failed)
        .due(SystemTime::now()..)
        .fetch()
        .await;
    assert!(matches!(refused, Err(Error::Config(_))), "{refused:?}");
    let too_many = client.tasks(ListState::Pending).limit(0).fetch().await;
    assert!(matches!(too_many, Err(Error::Config(_))), "{too_many:?}");
    let pending_cursor = client
        .tasks(ListState::Pending)
        .limit(1)
        .fetch()
        .await
        .unwrap()
        .next
        .unwrap();
    let crossed = client
        .tasks(ListState::Scheduled)
        .after(pending_cursor)
        .fetch()
        .await;
    assert!(matches!(crossed, Err(Error::Config(_))), "{crossed:?}");

    client.start();
    for id in &due_now {
        assert!(reaches(&client, id, TaskStatus::Succeeded).await);
    }
    let succeeded = client.tasks(ListState::Succeeded).fetch().await.unwrap();
    let mut listed: Vec<_> = succeeded.tasks.iter().map(|t| t.id).collect();
    listed.sort();
    assert_eq!(listed, due_now);
    assert!(
        client
            .tasks(ListState::Failed)
            .fetch()
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
    assert!(client.stop(SHORT).await);
}

// ---------------------------------------------------------------- Client::explain

async fn explain_names_what_holds_a_waiting_task_in_the_order_to_act_on(db: TestDb) {
    let client = client_on(&db).await;
    let ids = client
        .add(Inspected {
            n: 1,
            fail_until: 0,
        })
        .add(Inspected {
            n: 2,
            fail_until: 0,
        })
        .save()
        .await
        .unwrap();
    let later = client
        .add(Inspected {
            n: 3,
            fail_until: 0,
        })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap()[0];
    let why = client.explain(&ids[1]).await.unwrap();
    assert_eq!(
        why,
        Explanation::NoLiveProcess {
            queue: "inspected".into()
        }
    );
    assert_eq!(why.to_string(), "no live process serves queue `inspected`");

    // A process seen long ago is not live; one seen now is.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    register_process(&db, 1, r#"["inspected"]"#, hour_ago).await;
    assert!(matches!(
        client.explain(&ids[1]).await.unwrap(),
        Explanation::NoLiveProcess { .. }
    ));
    register_process(&db, 2, r#"["held","inspected"]"#, SystemTime::now()).await;
    assert_eq!(
        client.explain(&ids[1]).await.unwrap(),
        Explanation::WaitingBehind { ahead: 1 }
    );
    assert_eq!(client.explain(&ids[0]).await.unwrap(), Explanation::Ready);
    match client.explain(&later).await.unwrap() {
        Explanation::Scheduled { at } => assert!(at > SystemTime::now()),
        other => panic!("{other:?}"),
    }

    // A paused queue comes first, even for a task scheduled later.
    let paused_at = SystemTime::now() - Duration::from_secs(60);
    pause(&db, "inspected", paused_at).await;
    for id in [ids[0], ids[1], later] {
        match client.explain(&id).await.unwrap() {
            Explanation::QueuePaused { queue, since } => {
                assert_eq!(queue, "inspected");
                assert_eq!(millis(since), millis(paused_at));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        client
            .explain(&ids[0])
            .await
            .unwrap()
            .to_string()
            .starts_with("queue `inspected` is paused (since ")
    );
    assert_eq!(
        client.explain(&unknown_id()).await.unwrap(),
        Explanation::NotFound
    );
}

async fn explain_and_task_follow_a_task_from_running_to_done(db: TestDb) {
    let key = db.key("held");
    let client = client_on(&db).await;
    let id = client.add(Held { key: key.clone() }).save().await.unwrap()[0];
    client.start();
    assert!(eventually_async(SHORT, || async { STARTED.lock().unwrap().contains(&key) }).await);
    match client.explain(&id).await.unwrap() {
        Explanation::Running {
            since, lease_until, ..
        } => {
            assert!(since <= SystemTime::now());
            assert!(lease_until.unwrap() > since);
        }
        other => panic!("{other:?}"),
    }
    let running = client.task(&id).await.unwrap().unwrap();
    assert_eq!(running.state, TaskStatus::Running);
    let lease = running.lease.expect("a running task's lease");
    assert!(lease.until.unwrap() > running.started_at.unwrap());
    let listed = client
        .tasks(ListState::Running)
        .queue("held")
        .fetch()
        .await
        .unwrap();
    assert_eq!(listed.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), [id]);

    RELEASED.lock().unwrap().push(key);
    assert!(reaches(&client, &id, TaskStatus::Succeeded).await);
    match client.explain(&id).await.unwrap() {
        Explanation::Succeeded { at } => assert!(at >= running.started_at.unwrap()),
        other => panic!("{other:?}"),
    }
    let done = client.task(&id).await.unwrap().unwrap();
    assert_eq!(done.payload().unwrap(), None, "payload not retained");
    assert!(done.errors.is_empty());
    assert!(client.stop(SHORT).await);
}

fn unknown_id() -> TaskId {
    "00000000-0000-7000-8000-000000000000".parse().unwrap()
}
