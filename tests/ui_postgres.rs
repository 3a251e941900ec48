//! The UI's router on a PostgreSQL client: the same pages, from the same driver operations,
//! with every state present and what users control escaped.

mod common;

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
    let Some((url, schema)) = common::pg_schema() else {
        return;
    };
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

/// A form post from the router's own origin.
async fn post(app: &Router, uri: &str, form: &str) -> (StatusCode, Option<String>, String) {
    let request = Request::post(uri)
        .header("host", "ui.test")
        .header("origin", "http://ui.test")
        .body(Body::from(form.to_owned()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, location, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_and_views_work_on_postgresql() {
    let Some((url, schema)) = common::pg_schema() else {
        return;
    };
    let client = Client::builder()
        .database(&url)
        .schema(&schema)
        .processors(processors![note, alarm, slow])
        .build()
        .await
        .unwrap();
    let app = backlite::ui::router_with_actions(&client);
    let ids = client
        .add(Note { text: "a".into() })
        .add(Note { text: "b".into() })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap();
    let failed = client
        .add(Alarm {
            text: "esc\u{1b}".into(),
        })
        .save()
        .await
        .unwrap()[0];
    client.start();
    for _ in 0..1000 {
        if client.status(&failed).await.unwrap() == TaskStatus::Failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.status(&failed).await.unwrap(), TaskStatus::Failed);

    // Views: the filter, the story of a failed task, queues and processes.
    let (status, body) = get(&app, "/tasks?queue=pg_notes&state=scheduled").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ids.iter().all(|id| body.contains(&id.to_string())));
    let (_, body) = get(&app, &format!("/completed/{failed}")).await;
    assert!(body.contains("Why</span> failed at "));
    assert!(body.contains("<h2>Failed attempts <span class=\"muted\">1, oldest first</span></h2>"));
    assert!(body.contains(">\\u{1b}</span>"), "the escape, spelt out");
    assert!(!body.contains('\u{1b}'));
    let (_, body) = get(&app, "/queues").await;
    assert!(body.contains("action=\"/queue/pg_notes/pause\""));
    let mut listed = false;
    for _ in 0..200 {
        let (_, body) = get(&app, "/processes").await;
        if body.contains(&format!("<td class=\"num\">{}</td>", std::process::id())) {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listed, "the started client is on the processes page");

    // Actions, with the page's token.
    let (_, page) = get(&app, &format!("/task/{}", ids[0])).await;
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let token = &page[at..at + 64];
    let (status, _, body) = post(&app, &format!("/task/{}/cancel", ids[0]), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no token");
    assert!(body.contains("<h1>Refused</h1>"));
    let cancel = format!("/task/{}/cancel", ids[0]);
    let (status, _, body) = post(&app, &cancel, &format!("csrf={token}")).await;
    assert_eq!(status, StatusCode::OK, "the question first");
    assert!(body.contains("name=\"confirm\" value=\"yes\""));
    let (status, to, _) = post(&app, &cancel, &format!("csrf={token}&confirm=yes")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(to, Some(format!("/task/{}?done=cancelled", ids[0])));
    assert_eq!(client.status(&ids[0]).await.unwrap(), TaskStatus::Cancelled);
    let (_, to, _) = post(&app, "/queue/pg_notes/pause", &format!("csrf={token}")).await;
    assert_eq!(to.as_deref(), Some("/queues?done=paused"));
    let (_, to, _) = post(
        &app,
        &format!("/task/{}/run-now", ids[1]),
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(to, Some(format!("/task/{}?done=run-now", ids[1])));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client.status(&ids[1]).await.unwrap(),
        TaskStatus::Pending,
        "its queue is paused"
    );
    let (_, to, _) = post(&app, "/queue/pg_notes/resume", &format!("csrf={token}")).await;
    assert_eq!(to.as_deref(), Some("/queues?done=resumed"));
    for _ in 0..1000 {
        if client.status(&ids[1]).await.unwrap() == TaskStatus::Succeeded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.status(&ids[1]).await.unwrap(), TaskStatus::Succeeded);
    let (_, to, _) = post(
        &app,
        &format!("/task/{failed}/retry"),
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(to, Some(format!("/task/{failed}?done=retried")));
    let (_, to, _) = post(
        &app,
        &format!("/task/{failed}/delete"),
        &format!("csrf={token}&confirm=yes"),
    )
    .await;
    // The retried task may be running (not deleted) or waiting again (deleted): either way
    // the answer says which.
    let to = to.unwrap();
    assert!(
        to == "/?done=deleted" || to == format!("/task/{failed}?done=not-deleted"),
        "{to}"
    );
    // The charts, from the counters the completions added on PostgreSQL.
    let (status, body) = get(&app, "/charts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(
            "<h2><span class=\"queue\">pg_notes</span> <span class=\"muted\">1 succeeded"
        ),
        "{body}"
    );
    assert!(body.contains("<rect class=\"failed\""));
    client.stop(Duration::from_millis(100)).await;
}
