//! The UI's actions and views, called as a service on a real SQLite file: each button does
//! what its client operation does, only from the router's own pages (same origin, form
//! token), after a confirmation where it destroys; the read-only routers have none; and the
//! filtered lists, the jump to an id, the task's story, the queues and processes pages, and
//! hostile text (control characters, a long queue name).

use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use backlite::{Client, ListState, Task, TaskId, TaskStatus, processor, processors};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

const HOST: &str = "ui.test:8080";
const ORIGIN: &str = "http://ui.test:8080";

/// Fails until its text is healed; retained with its payload.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "flaky", retention(data))]
struct Flaky {
    text: String,
}

/// The texts of the `Flaky` tasks that succeed from now on (tests run at once: each heals
/// its own).
static HEALED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn heal(text: &str) {
    HEALED.lock().unwrap().push(text.to_owned());
}

#[processor]
async fn flaky(task: Flaky) -> Result<(), String> {
    if !HEALED.lock().unwrap().contains(&task.text) {
        return Err(format!(
            "bell\u{7} nul\u{0} esc\u{1b}[31m del\u{7f}: {}",
            task.text
        ));
    }
    Ok(())
}

/// Always succeeds; kept.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "mail", retention(data))]
struct Mail {
    to: String,
}

#[processor]
async fn mail(_: Mail) -> Result<(), String> {
    Ok(())
}

/// Runs until cancelled: stays claimed.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "slow")]
struct Slow {
    n: u32,
}

#[processor]
async fn slow(ctx: backlite::Context, _: Slow) -> Result<(), String> {
    ctx.cancelled().await;
    Ok(())
}

/// A valid name of 99 characters, none of them a space.
const LONG: &str = "a-very-long-queue-name-that-keeps-going.and-going:and-going_and-going-till-\
                    it-has-ninety-nine-chars";

#[derive(Serialize, Deserialize)]
struct Long {
    n: u32,
}

impl Task for Long {
    const CONFIG: backlite::QueueConfig = backlite::QueueConfig::builder(LONG).build();
}

struct Fixture {
    client: Client,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    assert_eq!(LONG.len(), 99);
    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .database(dir.path().join("ui.db"))
        .release_after(Duration::from_secs(3))
        .processors(processors![flaky, mail, slow])
        .build()
        .await
        .unwrap();
    Fixture { client, dir }
}

impl Fixture {
    /// A kept `Mail` task due in an hour, so that it waits while the test looks at it.
    async fn later_mail(&self, to: impl Into<String>) -> TaskId {
        self.client
            .add(Mail { to: to.into() })
            .wait(Duration::from_secs(3600))
            .save()
            .await
            .unwrap()[0]
    }
}

struct Reply {
    status: StatusCode,
    location: Option<String>,
    csp: Option<String>,
    body: String,
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let (location, csp) = (
        header(header::LOCATION),
        header(header::CONTENT_SECURITY_POLICY),
    );
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        location,
        csp,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(app: &Router, uri: &str) -> Reply {
    let request = Request::get(uri)
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap();
    send(app, request).await
}

/// A form post, as a browser sends it from a page of `origin`.
async fn post(app: &Router, uri: &str, origin: Option<&str>, form: &str) -> Reply {
    let mut request = Request::post(uri)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    send(app, request.body(Body::from(form.to_owned())).unwrap()).await
}

/// The form token a page carries.
fn token(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with a token")
        + "name=\"csrf\" value=\"".len();
    body[at..at + body[at..].find('"').unwrap()].to_owned()
}

async fn wait_for(client: &Client, id: TaskId, status: TaskStatus) {
    for _ in 0..500 {
        if client.status(&id).await.unwrap() == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{id} did not become {status:?}: {:?}",
        client.status(&id).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_routers_have_no_buttons_and_no_action_routes() {
    let f = fixture().await;
    let id = f.later_mail("a@b").await;
    for app in [
        backlite::ui::router(&f.client),
        backlite::ui::router_read_only(&f.client),
    ] {
        let page = get(&app, &format!("/task/{id}")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(!page.body.contains("<form class=\"action\""));
        assert!(!page.body.contains("name=\"csrf\""));
        let queues = get(&app, "/queues").await;
        assert!(queues.body.contains(">mail</a>"));
        assert!(!queues.body.contains("method=\"post\""));
        for action in ["delete", "cancel", "run-now", "retry"] {
            let reply = post(
                &app,
                &format!("/task/{id}/{action}"),
                Some(ORIGIN),
                "confirm=yes",
            )
            .await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{action}");
        }
        let reply = post(&app, "/queue/mail/pause", Some(ORIGIN), "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(f.client.status(&id).await.unwrap(), TaskStatus::Pending);
    assert!(!f.client.queues().await.unwrap()[0].is_paused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_a_post_from_the_same_origin_with_the_pages_token() {
    let f = fixture().await;
    let app = backlite::ui::router_with_actions(&f.client);
    let id = f.later_mail("a@b").await;
    let page = get(&app, &format!("/task/{id}")).await;
    assert!(page.body.contains(&format!("action=\"/task/{id}/delete\"")));
    assert!(
        page.body
            .contains(&format!("action=\"/task/{id}/run-now\""))
    );
    let csp = page.csp.unwrap();
    assert!(csp.contains("form-action 'self'"), "{csp}");
    let token = token(&page.body);
    assert_eq!(token.len(), 64);
    // Another router (another start of the server) has another token.
    assert_ne!(
        token,
        self::token(
            &get(
                &backlite::ui::router_with_actions(&f.client),
                &format!("/task/{id}")
            )
            .await
            .body
        )
    );
    let uri = format!("/task/{id}/delete");
    let forged = [
        (Some(ORIGIN), "confirm=yes".to_owned(), "no form token"),
        (
            Some(ORIGIN),
            "confirm=yes&csrf=00".to_owned(),
            "not this server",
        ),
        (
            Some(ORIGIN),
            format!("confirm=yes&csrf={}", &token[..63]),
            "not this server",
        ),
        (
            Some("http://evil.test"),
            format!("confirm=yes&csrf={token}"),
            "another site",
        ),
        (
            Some("null"),
            format!("confirm=yes&csrf={token}"),
            "another site",
        ),
        (
            None,
            format!("confirm=yes&csrf={token}"),
            "neither an Origin nor a Referer",
        ),
    ];
    for (origin, form, reason) in forged {
        let reply = post(&app, &uri, origin, &form).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{origin:?} {form}");
        assert!(reply.body.contains("<h1>Refused</h1>"));
        assert!(reply.body.contains(reason), "{reason}: {}", reply.body);
    }
    // A GET never acts.
    let reply = get(&app, &format!("{uri}?confirm=yes&csrf={token}")).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(f.client.status(&id).await.unwrap(), TaskStatus::Pending);

    // A Referer of the same origin stands for a missing Origin.
    let request = Request::post(&uri)
        .header(header::HOST, HOST)
        .header(header::REFERER, format!("{ORIGIN}/task/{id}"))
        .body(Body::from(format!("confirm=yes&csrf={token}")))
        .unwrap();
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location.as_deref(), Some("/?done=deleted"));
    assert_eq!(f.client.status(&id).await.unwrap(), TaskStatus::NotFound);
    let home = get(&app, "/?done=deleted").await;
    assert!(home.body.contains("The task was deleted."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_actions_ask_first_and_every_button_does_its_operation() {
    let f = fixture().await;
    let app =
        Router::new().nest_service("/admin/tasks", backlite::ui::router_with_actions(&f.client));
    let later = f.later_mail("later@b").await;
    let doomed = f.later_mail("doomed@b").await;
    let page = get(&app, &format!("/admin/tasks/task/{later}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let token = token(&page.body);
    let act = |path: String, form: String| {
        let app = app.clone();
        async move { post(&app, &path, Some(ORIGIN), &form).await }
    };

    // Cancel: first the question, then, confirmed, the cancel.
    let ask = act(
        format!("/admin/tasks/task/{doomed}/cancel"),
        format!("csrf={token}"),
    )
    .await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(
        ask.body
            .contains(&format!("<h1>Cancel task {doomed}?</h1>"))
    );
    assert!(
        ask.body
            .contains(&format!("action=\"/admin/tasks/task/{doomed}/cancel\""))
    );
    assert!(ask.body.contains("name=\"confirm\" value=\"yes\""));
    assert_eq!(f.client.status(&doomed).await.unwrap(), TaskStatus::Pending);
    let done = act(
        format!("/admin/tasks/task/{doomed}/cancel"),
        format!("csrf={token}&confirm=yes"),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(
        done.location.as_deref(),
        Some(&*format!("/admin/tasks/task/{doomed}?done=cancelled"))
    );
    assert_eq!(
        f.client.status(&doomed).await.unwrap(),
        TaskStatus::Cancelled
    );
    // The task's link leads to its outcome, with the notice.
    let moved = get(&app, &format!("/admin/tasks/task/{doomed}?done=cancelled")).await;
    assert_eq!(
        moved.location.as_deref(),
        Some(&*format!("/admin/tasks/completed/{doomed}?done=cancelled"))
    );
    let outcome = get(&app, moved.location.as_deref().unwrap()).await;
    assert!(outcome.body.contains("The task was cancelled"));
    assert!(
        outcome
            .body
            .contains("<span class=\"reason-label\">Why</span> cancelled at "),
        "the explanation"
    );
    // Cancelling again changes nothing, and says so.
    let again = act(
        format!("/admin/tasks/task/{doomed}/cancel"),
        format!("csrf={token}&confirm=yes"),
    )
    .await;
    assert!(again.location.unwrap().ends_with("?done=not-cancelled"));

    // Run now: a scheduled task becomes due, at once, no question asked.
    let reply = act(
        format!("/admin/tasks/task/{later}/run-now"),
        format!("csrf={token}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let info = f.client.task(&later).await.unwrap().unwrap();
    assert!(info.due_at.unwrap() <= std::time::SystemTime::now());

    // Pause and resume a queue.
    let reply = act(
        "/admin/tasks/queue/mail/pause".into(),
        format!("csrf={token}"),
    )
    .await;
    assert_eq!(
        reply.location.as_deref(),
        Some("/admin/tasks/queues?done=paused")
    );
    let queues = f.client.queues().await.unwrap();
    assert!(
        queues
            .iter()
            .find(|q| q.name() == "mail")
            .unwrap()
            .is_paused()
    );
    let page = get(&app, "/admin/tasks/queues?done=paused").await;
    assert!(
        page.body
            .contains("<span class=\"badge paused\">paused</span>")
    );
    assert!(
        page.body
            .contains("action=\"/admin/tasks/queue/mail/resume\"")
    );
    assert!(page.body.contains("The queue is paused"));
    let explained = get(&app, &format!("/admin/tasks/task/{later}")).await;
    assert!(
        explained
            .body
            .contains("Why</span> queue `mail` is paused (since "),
        "explain names the pause"
    );
    let reply = act(
        "/admin/tasks/queue/mail/resume".into(),
        format!("csrf={token}"),
    )
    .await;
    assert_eq!(
        reply.location.as_deref(),
        Some("/admin/tasks/queues?done=resumed")
    );
    assert!(
        !f.client
            .queues()
            .await
            .unwrap()
            .iter()
            .any(|q| q.is_paused())
    );
    let reply = act(
        "/admin/tasks/queue/bad%20name/pause".into(),
        format!("csrf={token}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // Retry: a failed task runs again, and its failed attempts are on its page.
    let failed = f
        .client
        .add(Flaky {
            text: "retry-one".into(),
        })
        .save()
        .await
        .unwrap()[0];
    f.client.start();
    wait_for(&f.client, failed, TaskStatus::Failed).await;
    let page = get(&app, &format!("/admin/tasks/completed/{failed}")).await;
    assert!(
        page.body
            .contains("<h2>Failed attempts <span class=\"muted\">1, oldest first</span></h2>")
    );
    assert!(
        page.body
            .contains(&format!("action=\"/admin/tasks/task/{failed}/retry\""))
    );
    heal("retry-one");
    let reply = act(
        format!("/admin/tasks/task/{failed}/retry"),
        format!("csrf={token}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    wait_for(&f.client, failed, TaskStatus::Succeeded).await;

    // Retry failed of a queue: asked first, then every failed one runs again.
    let ids = f
        .client
        .add(Flaky {
            text: "retry-all-1".into(),
        })
        .add(Flaky {
            text: "retry-all-2".into(),
        })
        .save()
        .await
        .unwrap();
    for id in &ids {
        wait_for(&f.client, *id, TaskStatus::Failed).await;
    }
    let ask = act(
        "/admin/tasks/queue/flaky/retry-failed".into(),
        format!("csrf={token}"),
    )
    .await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(
        ask.body
            .contains("<h1>Retry every failed task of flaky?</h1>")
    );
    heal("retry-all-1");
    heal("retry-all-2");
    let reply = act(
        "/admin/tasks/queue/flaky/retry-failed".into(),
        format!("csrf={token}&confirm=yes"),
    )
    .await;
    assert_eq!(
        reply.location.as_deref(),
        Some("/admin/tasks/queues?done=retried-failed&n=2")
    );
    for id in &ids {
        wait_for(&f.client, *id, TaskStatus::Succeeded).await;
    }
    let page = get(&app, "/admin/tasks/queues?done=retried-failed&n=2").await;
    assert!(
        page.body
            .contains("2 failed or cancelled tasks were put back to run now.")
    );

    // Delete of a retained task, confirmed.
    let reply = act(
        format!("/admin/tasks/task/{failed}/delete"),
        format!("csrf={token}&confirm=yes"),
    )
    .await;
    assert_eq!(reply.location.as_deref(), Some("/admin/tasks?done=deleted"));
    assert_eq!(
        f.client.status(&failed).await.unwrap(),
        TaskStatus::NotFound
    );
    f.client.stop(Duration::from_secs(2)).await;
    drop(f.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_filter_jump_explain_and_list_processes() {
    let f = fixture().await;
    let app = Router::new().nest_service("/admin/tasks", backlite::ui::router(&f.client));
    let mails = f
        .client
        .add(Mail { to: "1".into() })
        .add(Mail { to: "2".into() })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap();
    let long = f.client.add(Long { n: 1 }).save().await.unwrap()[0];

    // The trailing slash of the mount point is the front page, not an empty 404.
    for uri in ["/admin/tasks", "/admin/tasks/"] {
        let page = get(&app, uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        assert!(page.body.contains("<h1>Running</h1>"), "{uri}");
        assert!(
            page.body.contains("href=\"/admin/tasks/upcoming\""),
            "{uri}"
        );
    }

    // Filtered by queue and state.
    let page = get(&app, "/admin/tasks/tasks?queue=mail&state=scheduled").await;
    assert_eq!(page.status, StatusCode::OK);
    for id in &mails {
        assert!(
            page.body
                .contains(&format!("href=\"/admin/tasks/task/{id}\""))
        );
    }
    assert!(!page.body.contains(&long.to_string()));
    assert!(page.body.contains("<option value=\"mail\" selected>"));
    assert!(page.body.contains("<option value=\"scheduled\" selected>"));
    let bad = get(&app, "/admin/tasks/tasks?queue=%3Cb%3E%26x").await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND, "not a queue name");
    assert!(!bad.body.contains("<b>&x"));
    let page = get(&app, "/admin/tasks/tasks?queue=mail&state=pending").await;
    assert!(!page.body.contains(&mails[0].to_string()));
    let encoded = LONG.replace(':', "%3A");
    let page = get(
        &app,
        &format!("/admin/tasks/tasks?queue={encoded}&state=pending"),
    )
    .await;
    assert!(
        page.body.contains(&long.to_string()),
        "a percent-encoded queue name"
    );
    // A page of one row by cursor, through the client's list.
    let first = f
        .client
        .tasks(ListState::Scheduled)
        .queue("mail")
        .limit(1)
        .fetch()
        .await
        .unwrap();
    let next = first.next.unwrap();
    let page = get(
        &app,
        &format!("/admin/tasks/tasks?queue=mail&state=scheduled&after={next}"),
    )
    .await;
    assert!(page.body.contains(&mails[1].to_string()));
    assert!(!page.body.contains(&format!("task/{}\"", mails[0])));
    assert!(page.body.contains("← First page"));

    // Jump to a task by id.
    let jump = get(&app, &format!("/admin/tasks/jump?id=+{}+", mails[0])).await;
    assert_eq!(jump.status, StatusCode::SEE_OTHER);
    assert_eq!(
        jump.location,
        Some(format!("/admin/tasks/task/{}", mails[0]))
    );
    let jump = get(&app, "/admin/tasks/jump?id=%3Cb%3Enope").await;
    assert_eq!(jump.status, StatusCode::NOT_FOUND);
    assert!(jump.body.contains("nope") && !jump.body.contains("<b>nope"));

    // A task's page says why it waits.
    let page = get(&app, &format!("/admin/tasks/task/{}", mails[0])).await;
    assert!(
        page.body
            .contains("<p class=\"reason\"><span class=\"reason-label\">Why</span> ")
    );
    assert!(
        page.body
            .contains("Why</span> no live process serves queue `mail`"),
        "{}",
        page.body
    );

    // Processes: none before the start, this one after.
    let page = get(&app, "/admin/tasks/processes").await;
    assert!(
        page.body
            .contains("No started client is running on this database.")
    );
    f.client.start();
    let mut listed = false;
    for _ in 0..200 {
        let page = get(&app, "/admin/tasks/processes").await;
        if page
            .body
            .contains(&format!("<td class=\"num\">{}</td>", std::process::id()))
        {
            assert!(page.body.contains("<span class=\"queue\">flaky</span>"));
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listed, "the started client is on the processes page");
    let page = get(&app, &format!("/admin/tasks/task/{}", mails[0])).await;
    assert!(
        page.body.contains("Why</span> scheduled for "),
        "{}",
        page.body
    );
    f.client.stop(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_of_payloads_and_errors_are_shown_escaped() {
    let f = fixture().await;
    let app = backlite::ui::router(&f.client);
    let raw = "nul\u{0} bell\u{7} esc\u{1b}[2J del\u{7f} rlo\u{202e}txt";
    let waiting = f.later_mail(raw).await;
    let failed = f
        .client
        .add(Flaky { text: raw.into() })
        .save()
        .await
        .unwrap()[0];
    f.client.start();
    wait_for(&f.client, failed, TaskStatus::Failed).await;
    // JSON escapes the C0 controls of a payload itself (`\u001b`): DEL and the override
    // reach it raw. An error is text: all of them do.
    for (uri, mark) in [
        ("/upcoming".to_owned(), "7f"),
        (format!("/task/{waiting}"), "7f"),
        (format!("/task/{waiting}"), "202e"),
        ("/failed".to_owned(), "1b"),
        (format!("/completed/{failed}"), "1b"),
        (format!("/completed/{failed}"), "0"),
        ("/tasks?state=failed".to_owned(), "1b"),
    ] {
        let page = get(&app, &uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        for c in ['\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{202e}'] {
            assert!(!page.body.contains(c), "{uri} carries {c:?} raw");
        }
        let shown = format!(
            "<span class=\"ctrl\" title=\"a hidden character, shown as its code\">\\u{{{mark}}}</span>"
        );
        assert!(
            page.body.contains(&shown),
            "{uri}: {shown} in {}",
            page.body
        );
    }
    let page = get(&app, &format!("/completed/{failed}")).await;
    // The error history too: the error of each attempt.
    let history = &page.body[page.body.find("Failed attempts").unwrap()..];
    assert!(history.contains(">\\u{7}</span>"));
    f.client.stop(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_draw_the_hour_from_the_counters_as_svg() {
    let f = fixture().await;
    let app = backlite::ui::router(&f.client);
    let page = get(&app, "/charts").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("Nothing ended and nothing was sampled in the last hour.")
    );

    let ids = f
        .client
        .add(Mail { to: "1".into() })
        .add(Mail { to: "2".into() })
        .add(Mail { to: "3".into() })
        .add(Flaky {
            text: "chart-1".into(),
        })
        .add(Flaky {
            text: "chart-2".into(),
        })
        .save()
        .await
        .unwrap();
    f.client.start();
    for id in &ids[..3] {
        wait_for(&f.client, *id, TaskStatus::Succeeded).await;
    }
    for id in &ids[3..] {
        wait_for(&f.client, *id, TaskStatus::Failed).await;
    }
    // The maintenance loop samples each queue's depth once a minute, at its start too.
    let mut page = get(&app, "/charts").await;
    for _ in 0..100 {
        if page.body.contains("<polyline class=\"waiting\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        page = get(&app, "/charts").await;
    }
    assert_eq!(page.status, StatusCode::OK);
    let body = &page.body;
    assert!(body.contains("<polyline class=\"waiting\""), "{body}");
    assert!(body.contains("<polyline class=\"running\""));
    for (queue, summary) in [
        ("every queue", "3 succeeded · 2 failed · 0 retried"),
        ("mail", "3 succeeded · 0 failed · 0 retried"),
        ("flaky", "0 succeeded · 2 failed · 0 retried"),
    ] {
        assert!(
            body.contains(&format!(
                "<h2><span class=\"queue\">{queue}</span> <span class=\"muted\">{summary}</span></h2>"
            )),
            "{queue}: {body}"
        );
    }
    assert!(body.contains("<rect class=\"succeeded\""));
    assert!(body.contains("<rect class=\"failed\""));
    assert!(body.contains(" succeeded</title></rect>"));
    assert!(body.contains("<svg viewBox=\"0 0 600 120\""));
    // Drawn here: no script, nothing from elsewhere.
    assert!(!body.contains("<script>"));
    let csp = page.csp.unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("img-src 'self'"));
    f.client.stop(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_tasks_page_shows_its_lease_and_marks_it_lapsed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ui.db");
    // A lease of a minute: the first release check is at the start, the next 6 s later, and
    // the first renewal 20 s later, so the lease the test moves back stays as it is set.
    let client = Client::builder()
        .database(&path)
        .release_after(Duration::from_secs(60))
        .processors(processors![slow])
        .build()
        .await
        .unwrap();
    let id = client.add(Slow { n: 1 }).save().await.unwrap()[0];
    client.start();
    wait_for(&client, id, TaskStatus::Running).await;
    let app = backlite::ui::router(&client);
    let page = get(&app, &format!("/task/{id}")).await;
    assert!(page.body.contains("<dt>Lease ends</dt><dd><time"));
    assert!(!page.body.contains(">lapsed</span>"));
    // The claim's lease as a process that froze would leave it: ended.
    backlite::rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE backlite_tasks SET lease_until = 1 WHERE id = ?1",
            [&uuid::Uuid::parse_str(&id.to_string()).unwrap().as_bytes()[..]],
        )
        .unwrap();
    let page = get(&app, &format!("/task/{id}")).await;
    assert!(page.body.contains(">lapsed</span>"), "{}", page.body);
    client.stop(Duration::from_secs(2)).await;
}
