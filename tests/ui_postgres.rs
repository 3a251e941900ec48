//! The UI's router on a PostgreSQL client: the same pages, from the same driver operations,
//! with every state present and what users control escaped.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use backlite::{Client, Context, Task, TaskStatus, processor, processors};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

const SCRIPT: &str = "<script>alert('owned')</script>";

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "pg_notes", retention(data))]
struct Note {
    text: String,
}

#[processor]
async fn note(_: Note) -> Result<(), String> {
    Ok(())
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "pg_alarms", retention(data))]
struct Alarm {
    text: String,
}

#[processor]
async fn alarm(task: Alarm) -> Result<(), String> {
    Err(format!("refused <b>{}</b>", task.text))
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "pg_slow")]
struct Slow {
    n: u32,
}

#[processor]
async fn slow(ctx: Context, _: Slow) -> Result<(), String> {
    ctx.cancelled().await;
    Ok(())
}

/// The text of a page with HTML's character references read back.
fn decoded(body: &str) -> String {
    let mut text = body.to_owned();
    for (reference, c) in [
        ("&lt;", "<"),
        ("&#60;", "<"),
        ("&gt;", ">"),
        ("&#62;", ">"),
        ("&quot;", "\""),
        ("&#34;", "\""),
        ("&#39;", "'"),
        ("&#x27;", "'"),
        ("&amp;", "&"),
        ("&#38;", "&"),
    ] {
        text = text.replace(reference, c);
    }
    text
}

async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_on_postgresql() {
    let url = match std::env::var("BACKLITE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but BACKLITE_TEST_POSTGRES_URL is not: PostgreSQL tests must run")
        }
        _ => return eprintln!("skipped: BACKLITE_TEST_POSTGRES_URL is not set"),
    };
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let schema = format!("backlite_test_{secs}_ui{}", std::process::id());
    let client = Client::builder()
        .database(&url)
        .schema(&schema)
        .processors(processors![note, alarm, slow])
        .build()
        .await
        .unwrap();
    let upcoming = client
        .add(Note {
            text: SCRIPT.into(),
        })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap()[0];
    let ids = client
        .add(Note {
            text: SCRIPT.into(),
        })
        .add(Alarm {
            text: "smoke".into(),
        })
        .add(Slow { n: 1 })
        .save()
        .await
        .unwrap();
    client.start();
    let expected = [
        (ids[0], TaskStatus::Succeeded),
        (ids[1], TaskStatus::Failed),
        (ids[2], TaskStatus::Running),
        (upcoming, TaskStatus::Pending),
    ];
    let mut settled = false;
    for _ in 0..1000 {
        let mut all = true;
        for (id, status) in expected {
            all &= client.status(&id).await.unwrap() == status;
        }
        if all {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(settled, "the tasks did not reach their states");

    let app = backlite::ui::router(&client);
    let pages = [
        ("/", ids[2].to_string()),
        ("/upcoming", upcoming.to_string()),
        ("/succeeded", ids[0].to_string()),
        ("/failed", ids[1].to_string()),
        (&*format!("/task/{upcoming}"), SCRIPT.to_owned()),
        (&*format!("/completed/{}", ids[0]), SCRIPT.to_owned()),
        (
            &*format!("/completed/{}", ids[1]),
            "refused <b>smoke</b>".to_owned(),
        ),
    ]
    .map(|(path, needle)| (path.to_owned(), needle));
    for (path, needle) in pages {
        let (status, body) = get(&app, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(decoded(&body).contains(&needle), "{path} lacks {needle}");
        assert!(!body.contains(SCRIPT), "{path} shows a payload unescaped");
    }
    // Counts in the header: one task in each state of its queue.
    let (_, body) = get(&app, "/").await;
    for queue in ["pg_notes", "pg_alarms", "pg_slow"] {
        assert!(body.contains(queue), "the header lacks {queue}");
    }
    client.stop(Duration::from_millis(100)).await;
}
