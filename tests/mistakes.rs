//! Mistakes a user makes that used to fail silently: each now gets an error, a warning, a UI
//! badge or a defined behaviour, and each test here checks that signal.

mod common;

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use backlite::{Client, Context, Error, Task, TaskId, TaskStatus, processor, processors};
use common::{completed_row, eventually, eventually_async, record, runs, temp_db, uuid_bytes};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

const SHORT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- tracing capture

mod events {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    /// An event: its level, its message and its other fields, printed with `{:?}`.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub level: tracing::Level,
        pub message: String,
        pub fields: HashMap<String, String>,
    }

    #[derive(Clone, Default)]
    pub struct Captured(Arc<Mutex<Vec<Seen>>>);

    impl Captured {
        /// The events whose message contains `text`.
        pub fn with(&self, text: &str) -> Vec<Seen> {
            let events = self.0.lock().unwrap();
            events
                .iter()
                .filter(|e| e.message.contains(text))
                .cloned()
                .collect()
        }
    }

    struct Fields(String, HashMap<String, String>);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            } else {
                self.1.insert(field.name().to_owned(), format!("{value:?}"));
            }
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                self.0 = value.to_owned();
            } else {
                self.1.insert(field.name().to_owned(), value.to_owned());
            }
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = Fields(String::new(), HashMap::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(Seen {
                level: *event.metadata().level(),
                message: fields.0,
                fields: fields.1,
            });
        }
    }

    /// Captures the events of this thread; use a current-thread runtime so that the client's
    /// tasks run on it too.
    pub fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(captured.clone());
        (captured, tracing::subscriber::set_default(subscriber))
    }
}

// ---------------------------------------------------------------- tasks and processors

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "served", retention(data))]
struct Served {
    key: String,
}

#[processor]
async fn run_served(ctx: Context, task: Served) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "elsewhere_a")]
struct ElsewhereA;

#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "elsewhere_b")]
struct ElsewhereB;

/// Never returns: only a stop that gives up ends it. A task it spawns with its context
/// records the cancellation, which the attempt itself, dropped right after, may not see.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "held")]
struct Held {
    key: String,
}

#[processor]
async fn run_held(ctx: Context, task: Held) -> anyhow::Result<()> {
    record(&task.key, &ctx);
    let watcher = ctx.clone();
    tokio::spawn(async move {
        watcher.cancelled().await;
        record(&format!("{}-cancelled", task.key), &watcher);
    });
    std::future::pending::<()>().await;
    Ok(())
}

/// Blocks its thread past its queue's timeout, then succeeds.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "blocks", timeout = "100ms", retention(data))]
struct Blocks;

#[processor]
async fn run_blocks(_task: Blocks) -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_millis(400));
    Ok(())
}

async fn client_on(path: &std::path::Path, registry: backlite::Registry) -> Client {
    Client::builder()
        .database(path)
        .workers(2)
        .processors(registry)
        .build()
        .await
        .expect("build")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Marks `id` claimed at `claimed_at` by a process that then died.
fn claim_as_dead(db: &common::TempDb, id: &TaskId, claimed_at: i64) {
    let bytes = uuid_bytes(id);
    let changed = db
        .conn()
        .execute(
            "UPDATE backlite_tasks SET state = 1, claimed_at = ?2 WHERE id = ?1",
            (&bytes[..], claimed_at),
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// The body of `GET uri`, which must answer 200.
async fn body(app: &Router, uri: &str) -> String {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {uri}");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

// ---------------------------------------------------------------- an empty path

#[tokio::test(flavor = "current_thread")]
async fn an_empty_database_path_is_a_config_error() {
    // What `std::env::var("DATABASE").unwrap_or_default()` gives when the variable is unset.
    let result = Client::builder().database("").build().await;
    match result {
        Err(Error::Config(message)) => assert!(message.contains("empty"), "{message}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

// ---------------------------------------------------------------- never started

#[tokio::test(flavor = "current_thread")]
async fn a_client_with_processors_dropped_without_start_warns() {
    let (captured, _guard) = events::install();
    let db = temp_db();
    let client = client_on(&db.path, processors![run_served]).await;
    drop(client);
    let warned = captured.with("without ever being started");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].level, tracing::Level::WARN);
    assert!(warned[0].fields["queues"].contains("served"), "{warned:?}");

    // A producer, or a client that did start, has nothing to say.
    let producer = Client::builder().database(&db.path).build().await.unwrap();
    drop(producer);
    let started = client_on(&db.path, processors![run_served]).await;
    started.start();
    assert!(started.stop(SHORT).await);
    drop(started);
    assert_eq!(captured.with("without ever being started").len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn saving_for_an_own_queue_before_start_warns_once() {
    let (captured, _guard) = events::install();
    let db = temp_db();
    let client = client_on(&db.path, processors![run_served]).await;
    for key in ["unstarted-1", "unstarted-2"] {
        let task = Served { key: key.into() };
        client.add(task).save().await.unwrap();
    }
    let warned = captured.with("the client is not started");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].level, tracing::Level::WARN);
    assert_eq!(warned[0].fields["queue"], "served");

    // Once started, saving is silent, and the waiting tasks run.
    client.start();
    let task = Served {
        key: "unstarted-3".into(),
    };
    client.add(task).save().await.unwrap();
    assert!(
        eventually(SHORT, || ["unstarted-1", "unstarted-2", "unstarted-3"]
            .iter()
            .all(|k| runs(k).len() == 1))
        .await
    );
    assert!(client.stop(SHORT).await);
    assert_eq!(captured.with("the client is not started").len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn saving_for_an_unserved_queue_warns_once_per_queue_but_a_producer_stays_silent() {
    let (captured, _guard) = events::install();
    let db = temp_db();
    let client = client_on(&db.path, processors![run_served]).await;
    client.start();
    client.add(ElsewhereA).add(ElsewhereA).save().await.unwrap();
    client.add(ElsewhereA).add(ElsewhereB).save().await.unwrap();
    let warned = captured.with("a queue this client does not serve");
    let mut queues: Vec<_> = warned.iter().map(|e| e.fields["queue"].clone()).collect();
    queues.sort();
    assert_eq!(queues, ["elsewhere_a", "elsewhere_b"], "{warned:?}");
    assert!(warned.iter().all(|e| e.level == tracing::Level::WARN));
    assert!(client.stop(SHORT).await);

    // A client without processors saves for the processes that serve the queues.
    let producer = Client::builder().database(&db.path).build().await.unwrap();
    producer
        .add(ElsewhereA)
        .add(Served { key: "p".into() })
        .save()
        .await
        .unwrap();
    drop(producer);
    assert_eq!(captured.with("does not serve").len(), 2);
    assert!(captured.with("not started").is_empty());
}

// ---------------------------------------------------------------- claims of dead processes

#[tokio::test(flavor = "current_thread")]
async fn start_warns_about_tasks_claimed_by_earlier_processes() {
    let (captured, _guard) = events::install();
    let db = temp_db();
    let adder = Client::builder().database(&db.path).build().await.unwrap();
    let ids = adder
        .add(Held {
            key: "dead-1".into(),
        })
        .add(Held {
            key: "dead-2".into(),
        })
        .save()
        .await
        .unwrap();
    let claimed_at = now_ms() - 60_000;
    for id in &ids {
        claim_as_dead(&db, id, claimed_at);
    }

    let client = Client::builder()
        .database(&db.path)
        .release_after(Duration::from_secs(3600))
        .processors(processors![run_held])
        .build()
        .await
        .unwrap();
    client.start();
    let text = "claimed by other processes";
    assert!(eventually(SHORT, || !captured.with(text).is_empty()).await);
    let warned = captured.with(text);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].level, tracing::Level::WARN);
    assert_eq!(warned[0].fields["claimed"], "2");
    assert_eq!(warned[0].fields["release_after"], "3600s");
    // Claimed a minute ago, released an hour after the claim: in 59 minutes.
    let first = &warned[0].fields["first_release_in"];
    let secs: f64 = first
        .trim_start_matches("Some(")
        .trim_end_matches("s)")
        .parse()
        .unwrap_or_else(|_| panic!("{first}"));
    assert!((3530.0..=3540.0).contains(&secs), "{first}");
    assert!(client.stop(SHORT).await);

    // A start that finds nothing claimed says nothing.
    let (captured, _guard) = events::install();
    let db = temp_db();
    let client = client_on(&db.path, processors![run_served]).await;
    client.start();
    client
        .add(Served {
            key: "no-claims".into(),
        })
        .save()
        .await
        .unwrap();
    assert!(eventually(SHORT, || runs("no-claims").len() == 1).await);
    assert!(client.stop(SHORT).await);
    assert!(captured.with(text).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_marks_a_task_claimed_longer_than_release_after_as_stale() {
    let db = temp_db();
    let adder = Client::builder().database(&db.path).build().await.unwrap();
    let ids = adder
        .add(Held {
            key: "ui-old".into(),
        })
        .add(Held {
            key: "ui-new".into(),
        })
        .save()
        .await
        .unwrap();
    let (old, new) = (ids[0], ids[1]);
    claim_as_dead(&db, &old, now_ms() - 2 * 3600 * 1000);
    claim_as_dead(&db, &new, now_ms());

    // A viewer: the UI judges by this client's `release_after`.
    let viewer = Client::builder()
        .database(&db.path)
        .release_after(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let app: Router = backlite::ui::router(&viewer);
    let page = body(&app, "/").await;
    let rows: Vec<&str> = page.split("<tr>").skip(2).collect();
    let row = |id: &TaskId| {
        rows.iter()
            .find(|r| r.contains(&id.to_string()))
            .unwrap_or_else(|| panic!("no row for {id} in {page}"))
    };
    assert!(row(&old).contains("badge stale"), "{}", row(&old));
    assert!(row(&old).contains("1 h"), "{}", row(&old));
    assert!(!row(&new).contains("badge stale"), "{}", row(&new));
    assert!(
        body(&app, &format!("/task/{old}"))
            .await
            .contains("badge stale")
    );
    assert!(
        !body(&app, &format!("/task/{new}"))
            .await
            .contains("badge stale")
    );

    // With a longer `release_after`, neither is stale yet.
    let patient = Client::builder()
        .database(&db.path)
        .release_after(Duration::from_secs(3 * 3600))
        .build()
        .await
        .unwrap();
    let app: Router = backlite::ui::router(&patient);
    assert!(!body(&app, "/").await.contains("badge stale"));
}

// ---------------------------------------------------------------- dropping the client

fn unclaimed_not_attempted(db: &common::TempDb, ids: &[TaskId]) -> bool {
    let conn = db.conn();
    ids.iter().all(|id| {
        conn.query_row(
            "SELECT claimed_at IS NULL AND attempts = 0 FROM backlite_tasks WHERE id = ?1",
            [&uuid_bytes(id)[..]],
            |r| r.get::<_, bool>(0),
        )
        .unwrap_or(false)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_stops_the_dispatcher_and_hands_tasks_back() {
    let db = temp_db();
    let client = client_on(&db.path, processors![run_held]).await;
    let ids = client
        .add(Held { key: "drop".into() })
        .add(Held { key: "drop".into() })
        .add(Held { key: "drop".into() })
        .add(Held { key: "drop".into() })
        .save()
        .await
        .unwrap();
    client.start();
    // Two workers: two tasks run (and hold their `Context`, with its client), two wait.
    assert!(eventually(SHORT, || runs("drop").len() == 2).await);
    let clone = client.clone();
    drop(client);
    // Another handle of the application keeps it running.
    assert_eq!(clone.status(&ids[0]).await.unwrap(), TaskStatus::Running);
    assert!(runs("drop-cancelled").is_empty());
    drop(clone);

    assert!(eventually(SHORT, || runs("drop-cancelled").len() == 2).await);
    assert!(
        eventually(SHORT, || unclaimed_not_attempted(&db, &ids)).await,
        "running tasks were not handed back"
    );
    // A dispatcher still at work would claim the handed-back tasks at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs("drop").len(), 2, "a task started after the drop");
    assert!(unclaimed_not_attempted(&db, &ids));

    // They were handed back, not lost: the next client runs them, as first attempts.
    let next = client_on(&db.path, processors![run_held]).await;
    next.start();
    // The two runs before the drop, and two more on the new client's two workers.
    assert!(eventually(SHORT, || runs("drop").len() == 4).await);
    assert!(runs("drop").iter().all(|r| r.attempt == 1));
    assert!(!next.stop(Duration::ZERO).await);
}

// ---------------------------------------------------------------- blocking processors

#[tokio::test(flavor = "current_thread")]
async fn a_processor_that_blocks_past_its_timeout_fails_as_timed_out_and_is_warned_about() {
    let (captured, _guard) = events::install();
    let db = temp_db();
    let client = client_on(&db.path, processors![run_blocks]).await;
    client.start();
    let id = client.add(Blocks).save().await.unwrap()[0];
    assert!(
        eventually_async(SHORT, || async {
            client.status(&id).await.unwrap() == TaskStatus::Failed
        })
        .await
    );
    assert!(client.stop(SHORT).await);
    let row = completed_row(&db.conn(), &id).unwrap();
    assert!(!row.succeeded);
    assert_eq!(row.error.as_deref(), Some("timed out after 100ms"));
    let warned = captured.with("blocked its thread");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].level, tracing::Level::WARN);
    assert_eq!(warned[0].fields["task_id"], id.to_string());
    assert_eq!(warned[0].fields["timeout"], "100ms");
}

// ---------------------------------------------------------------- unwritable places

/// Makes a directory unwritable for this process until dropped; as root, where permission
/// bits do not bind, with `chattr +i` (as `tests/failures.rs` does for files).
struct Unwritable(std::path::PathBuf);

impl Unwritable {
    fn set(dir: &std::path::Path) -> Unwritable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = dir.join("probe");
        if std::fs::write(&probe, b"").is_ok() {
            std::fs::remove_file(&probe).unwrap();
            let status = std::process::Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status()
                .expect("chattr");
            assert!(status.success(), "chattr +i failed");
        }
        assert!(std::fs::write(&probe, b"").is_err());
        Unwritable(dir.to_owned())
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_new_file_in_an_unwritable_directory_is_read_only_and_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("locked");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("new.db");
    let _unwritable = Unwritable::set(&dir);
    let result = Client::builder().database(&path).build().await;
    match result {
        Err(Error::ReadOnly { path: named }) => {
            assert_eq!(named, path.to_string_lossy());
            let message = Error::ReadOnly { path: named }.to_string();
            assert!(message.contains("new.db"), "{message}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(!path.exists());
}

// ---------------------------------------------------------------- the UI in a stateful app

#[derive(Clone)]
struct AppState {
    greeting: &'static str,
}

async fn hello(axum::extract::State(state): axum::extract::State<AppState>) -> &'static str {
    state.greeting
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_nests_into_a_router_with_state() {
    let db = temp_db();
    let client = Client::builder().database(&db.path).build().await.unwrap();
    let app: Router = Router::new()
        .route("/hello", axum::routing::get(hello))
        .nest("/admin", backlite::ui::router(&client))
        .with_state(AppState { greeting: "hi" });
    assert_eq!(body(&app, "/hello").await, "hi");
    let page = body(&app, "/admin").await;
    assert!(page.contains("<h1>Running</h1>"), "{page}");
    let page = body(&app, "/admin/upcoming").await;
    assert!(page.contains("<h1>Upcoming</h1>"), "{page}");
}
