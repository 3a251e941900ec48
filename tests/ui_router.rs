//! The UI's router, called as a service: every route, its status and content, escaping of
//! what users control, pagination, the 404s, and links under a prefix.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use backlite::{Client, Context, Task, TaskId, TaskStatus, processor, processors};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

const SCRIPT: &str = "<script>alert('owned')</script>";
const HTML_ERROR: &str = "upstream replied <img src=x onerror=alert(1)> & \"gave up\"";

/// Succeeds; retained with its payload.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "notes", max_attempts = 3, retention(data))]
struct Note {
    text: String,
}

#[processor]
async fn note(_: Note) -> Result<(), String> {
    Ok(())
}

/// Fails with an error message full of HTML; retained with its payload.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "alarms", retention(data))]
struct Alarm {
    text: String,
}

#[processor]
async fn alarm(_: Alarm) -> Result<(), String> {
    Err(HTML_ERROR.to_owned())
}

/// Succeeds; only its outcome is retained, for an hour.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "bare", retention(duration = "1h"))]
struct Bare {
    n: u32,
}

#[processor]
async fn bare(_: Bare) -> Result<(), String> {
    Ok(())
}

/// Runs until the client stops: stays on the Running page.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "slow")]
struct Slow {
    n: u32,
}

#[processor]
async fn slow(ctx: Context, _: Slow) -> Result<(), String> {
    ctx.cancelled().await;
    Ok(())
}

/// A started client with one task in each state, and its UI.
struct Fixture {
    client: Client,
    app: Router,
    succeeded: TaskId,
    failed: TaskId,
    bare: TaskId,
    running: TaskId,
    upcoming: TaskId,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .database(dir.path().join("ui.db"))
        .workers(4)
        .processors(processors![note, alarm, bare, slow])
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
        .add(Bare { n: 7 })
        .add(Slow { n: 1 })
        .save()
        .await
        .unwrap();
    client.start();
    let f = Fixture {
        app: backlite::ui::router(&client),
        client,
        succeeded: ids[0],
        failed: ids[1],
        bare: ids[2],
        running: ids[3],
        upcoming,
        _dir: dir,
    };
    let expected = [
        (f.succeeded, TaskStatus::Succeeded),
        (f.failed, TaskStatus::Failed),
        (f.bare, TaskStatus::Succeeded),
        (f.running, TaskStatus::Running),
        (f.upcoming, TaskStatus::Pending),
    ];
    for _ in 0..500 {
        let mut settled = true;
        for (id, status) in expected {
            settled &= f.client.status(&id).await.unwrap() == status;
        }
        if settled {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the fixture's tasks did not reach their states");
}

impl Fixture {
    async fn stop(self) {
        self.client.stop(Duration::from_millis(100)).await;
    }
}

struct Page {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    csp: Option<String>,
    body: String,
}

async fn get(app: &Router, uri: &str) -> Page {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let (content_type, location, csp) = (
        header(header::CONTENT_TYPE).unwrap_or_default(),
        header(header::LOCATION),
        header(header::CONTENT_SECURITY_POLICY),
    );
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Page {
        status,
        content_type,
        location,
        csp,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn ok_page(app: &Router, uri: &str) -> String {
    let page = get(app, uri).await;
    assert_eq!(page.status, StatusCode::OK, "GET {uri}");
    assert_eq!(page.content_type, "text/html; charset=utf-8", "GET {uri}");
    page.body
}

/// Every `href` and `src` of a page.
fn links(body: &str) -> Vec<String> {
    let mut links = Vec::new();
    for attr in ["href=\"", "src=\""] {
        let mut rest = body;
        while let Some(start) = rest.find(attr) {
            rest = &rest[start + attr.len()..];
            let end = rest.find('"').unwrap();
            links.push(rest[..end].replace("&amp;", "&"));
            rest = &rest[end..];
        }
    }
    links
}

/// The count in the tab of `label`.
fn tab_count(body: &str, label: &str) -> String {
    let tab = body
        .split("<a class=\"tab ")
        .find(|t| t.contains(&format!("</span>{label}<span class=\"count\">")))
        .unwrap_or_else(|| panic!("no tab {label}"));
    let count = tab.split("<span class=\"count\">").nth(1).unwrap();
    count[..count.find('<').unwrap()].to_owned()
}

/// A page's text as a browser shows it: character references decoded.
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

/// Nothing a task carries reaches the page as markup.
fn assert_escaped(body: &str) {
    assert!(!body.contains("<script>alert"), "unescaped payload");
    assert!(!body.contains("<img src=x"), "unescaped error");
    assert!(!body.contains("onerror=alert(1)>"), "unescaped error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_page_lists_claimed_tasks_and_counts_every_state() {
    let f = fixture().await;
    let body = ok_page(&f.app, "/").await;
    assert!(body.contains(&f.running.to_string()));
    assert!(body.contains(&format!("href=\"/task/{}\"", f.running)));
    assert!(!body.contains(&f.upcoming.to_string()));
    assert!(
        body.contains("<td class=\"num\">1 of 1</td>"),
        "the attempt running"
    );
    assert_eq!(tab_count(&body, "Running"), "1");
    assert_eq!(tab_count(&body, "Upcoming"), "1");
    assert_eq!(tab_count(&body, "Succeeded"), "2");
    assert_eq!(tab_count(&body, "Failed"), "1");
    // One card per queue, named.
    for queue in ["alarms", "bare", "notes", "slow"] {
        assert!(
            body.contains(&format!(
                "<h2 class=\"queue-name\"><a href=\"/tasks?queue={queue}\">{queue}</a></h2>"
            )),
            "{queue}"
        );
    }
    assert!(body.contains("aria-current=\"page\""));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upcoming_page_shows_when_each_task_is_due() {
    let f = fixture().await;
    let body = ok_page(&f.app, "/upcoming").await;
    assert!(body.contains(&format!("href=\"/task/{}\"", f.upcoming)));
    assert!(!body.contains(&f.running.to_string()));
    assert!(
        body.contains("in 59 min") || body.contains("in 1 h"),
        "{body}"
    );
    assert!(
        body.contains(" UTC</span>"),
        "absolute times beside relative ones"
    );
    assert!(body.contains("<span class=\"badge scheduled\">scheduled</span>"));
    assert!(
        decoded(&body).contains(SCRIPT),
        "the payload, shown as text"
    );
    assert_escaped(&body);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_succeeded_and_failed_pages_list_retained_outcomes() {
    let f = fixture().await;
    let ok = ok_page(&f.app, "/succeeded").await;
    assert!(ok.contains(&format!("href=\"/completed/{}\"", f.succeeded)));
    assert!(ok.contains(&format!("href=\"/completed/{}\"", f.bare)));
    assert!(!ok.contains(&f.failed.to_string()));
    assert!(
        ok.contains("not retained"),
        "the outcome-only task has no payload"
    );
    assert_escaped(&ok);

    let failed = ok_page(&f.app, "/failed").await;
    assert!(failed.contains(&format!("href=\"/completed/{}\"", f.failed)));
    assert!(!failed.contains(&f.succeeded.to_string()));
    assert!(decoded(&failed).contains("upstream replied <img src=x onerror=alert(1)> &"));
    assert_escaped(&failed);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_page_shows_every_field_and_the_payload_as_json() {
    let f = fixture().await;
    let body = ok_page(&f.app, &format!("/task/{}", f.upcoming)).await;
    for label in [
        "Queue",
        "Attempts",
        "Created",
        "Wait until",
        "Last executed",
        "Claimed at",
    ] {
        assert!(body.contains(&format!("<dt>{label}</dt>")), "{label}");
    }
    assert!(body.contains(">notes</a></dd>"));
    assert!(
        body.contains("<dd>0 of 3</dd>"),
        "attempts out of max_attempts"
    );
    assert!(body.contains("not claimed"));
    // Indented JSON, escaped.
    let json = format!("{{\n  \"text\": \"{SCRIPT}\"\n}}");
    assert!(decoded(&body).contains(&json), "indented JSON");
    assert_escaped(&body);

    let running = ok_page(&f.app, &format!("/task/{}", f.running)).await;
    assert!(running.contains("<span class=\"badge running\">running</span>"));
    assert!(running.contains("<dt>Claimed at</dt><dd><time"));
    assert!(running.contains("<dd>attempt 1 of 1 running</dd>"));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_task_page_shows_outcome_error_and_retained_payload() {
    let f = fixture().await;
    let failed = ok_page(&f.app, &format!("/completed/{}", f.failed)).await;
    for label in [
        "Outcome",
        "Attempts",
        "Last duration",
        "Created",
        "Last executed",
        "Expires at",
    ] {
        assert!(failed.contains(&format!("<dt>{label}</dt>")), "{label}");
    }
    assert!(failed.contains("<dd>Failed</dd>"));
    assert!(decoded(&failed).contains(&format!("<pre class=\"error-box\">{HTML_ERROR}</pre>")));
    assert!(decoded(&failed).contains("\"text\": \"smoke\""));
    assert!(failed.contains("kept until deleted"));
    assert_escaped(&failed);

    let bare = ok_page(&f.app, &format!("/completed/{}", f.bare)).await;
    assert!(bare.contains("<dd>Succeeded</dd>"));
    assert!(bare.contains("The payload was not retained"));
    assert!(
        bare.contains("<dt>Expires at</dt><dd><time"),
        "an expiry time"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_task_that_completed_leads_to_its_outcome() {
    let f = fixture().await;
    let page = get(&f.app, &format!("/task/{}", f.failed)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location, Some(format!("/completed/{}", f.failed)));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tasks_and_paths_are_404_pages() {
    let f = fixture().await;
    // A well-formed id that this database never held.
    let unknown: TaskId = "0190a8a0-7c3e-7d6e-9a1b-3f2c4d5e6f70".parse().unwrap();
    for uri in [
        format!("/task/{unknown}"),
        format!("/completed/{unknown}"),
        "/task/not-an-id".to_owned(),
        "/task/%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_owned(),
        "/nope".to_owned(),
    ] {
        let page = get(&f.app, &uri).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "GET {uri}");
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        assert!(page.body.contains("<h1>Not found</h1>"), "GET {uri}");
        assert_escaped(&page.body);
    }
    let page = get(&f.app, &format!("/task/{unknown}")).await;
    assert!(page.body.contains(&unknown.to_string()));
    // A waiting task's outcome page leads to the task (a retry puts one back).
    let page = get(&f.app, &format!("/completed/{}", f.upcoming)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location, Some(format!("/task/{}", f.upcoming)));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_by_25_and_a_bad_page_gives_the_first() {
    let f = fixture().await;
    let batch = (0..59).fold(f.client.add(Bare { n: 0 }), |batch, n| {
        batch.add(Bare { n: n + 1 })
    });
    batch.wait(Duration::from_secs(600)).save().await.unwrap();
    // 61 upcoming: the fixture's and these 60.
    let rows = |body: &str| body.matches("<td class=\"id\">").count();

    let first = ok_page(&f.app, "/upcoming").await;
    assert_eq!(rows(&first), 25);
    assert!(first.contains("1–25 of 61"));
    assert!(first.contains("<a class=\"button\" rel=\"next\" href=\"/upcoming?page=2\">"));
    assert!(first.contains("<span class=\"button disabled\">← Previous</span>"));

    let second = ok_page(&f.app, "/upcoming?page=2").await;
    assert_eq!(rows(&second), 25);
    assert!(second.contains("26–50 of 61"));
    assert!(second.contains("rel=\"prev\" href=\"/upcoming\""));
    assert!(second.contains("rel=\"next\" href=\"/upcoming?page=3\""));

    let last = ok_page(&f.app, "/upcoming?page=3").await;
    assert_eq!(rows(&last), 11);
    assert!(last.contains("51–61 of 61"));
    assert!(last.contains("rel=\"prev\" href=\"/upcoming?page=2\""));
    assert!(last.contains("<span class=\"button disabled\">Next →</span>"));

    // Pages do not overlap.
    let ids = |body: &str| -> Vec<String> {
        links(body)
            .into_iter()
            .filter(|l| l.starts_with("/task/"))
            .collect()
    };
    let mut all: Vec<String> = [&first, &second, &last]
        .iter()
        .flat_map(|b| ids(b))
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 61);

    for bad in ["0", "-2", "abc", "", "1e3", "99999999999999999999"] {
        let body = ok_page(&f.app, &format!("/upcoming?page={bad}")).await;
        assert!(body.contains("1–25 of 61"), "page={bad}");
    }
    let past = ok_page(&f.app, "/upcoming?page=9").await;
    assert!(past.contains("Page 9 is past the end"));
    assert!(past.contains("href=\"/upcoming\">Back to the first page"));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_lists_page_too() {
    let f = fixture().await;
    let batch = (0..29).fold(f.client.add(Alarm { text: "0".into() }), |batch, n| {
        batch.add(Alarm {
            text: n.to_string(),
        })
    });
    batch.save().await.unwrap();
    // 31 failed: the fixture's and these 30.
    for _ in 0..500 {
        if f.client
            .stats()
            .await
            .unwrap()
            .iter()
            .map(|q| q.failed)
            .sum::<u64>()
            == 31
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = ok_page(&f.app, "/failed").await;
    assert_eq!(first.matches("<td class=\"id\">").count(), 25);
    assert!(first.contains("1–25 of 31"));
    assert!(first.contains("rel=\"next\" href=\"/failed?page=2\""));
    let second = ok_page(&f.app, "/failed?page=2").await;
    assert_eq!(second.matches("<td class=\"id\">").count(), 6);
    assert!(second.contains("rel=\"prev\" href=\"/failed\""));
    assert!(second.contains("<span class=\"button disabled\">Next →</span>"));
    f.stop().await;
}

#[tokio::test]
async fn a_database_that_cannot_be_read_gives_a_500_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.db");
    let client = Client::builder().database(&path).build().await.unwrap();
    let app = backlite::ui::router(&client);
    let admin = backlite::rusqlite::Connection::open(&path).unwrap();
    admin
        .execute_batch("ALTER TABLE backlite_tasks RENAME TO hidden")
        .unwrap();
    let page = get(&app, "/failed").await;
    assert_eq!(page.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(page.body.contains("The task database could not be read."));
    assert!(
        page.body.contains("no such table"),
        "the error, for the operator"
    );
    assert!(page.body.contains("Task counts could not be read."));
    // The UI answers again once the database can be read.
    admin
        .execute_batch("ALTER TABLE hidden RENAME TO backlite_tasks")
        .unwrap();
    assert_eq!(get(&app, "/failed").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/upcoming").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_under_a_prefix_every_link_keeps_it() {
    let f = fixture().await;
    let app = Router::new().nest("/admin/tasks", f.app.clone());
    let mut seen = std::collections::BTreeSet::new();
    let mut queue = vec!["/admin/tasks".to_owned()];
    // Follow every link, breadth first, until each page and asset has been fetched once.
    while let Some(uri) = queue.pop() {
        if !seen.insert(uri.clone()) {
            continue;
        }
        let page = get(&app, &uri).await;
        let page = if page.status == StatusCode::SEE_OTHER {
            let to = page.location.unwrap();
            assert!(to.starts_with("/admin/tasks/"), "{uri} -> {to}");
            get(&app, &to).await
        } else {
            page
        };
        assert_eq!(page.status, StatusCode::OK, "GET {uri}");
        if page.content_type.starts_with("text/html") {
            for link in links(&page.body) {
                assert!(
                    link == "/admin/tasks" || link.starts_with("/admin/tasks/"),
                    "{uri} links to {link}"
                );
                queue.push(link);
            }
        }
    }
    for expected in [
        "/admin/tasks",
        "/admin/tasks/upcoming",
        "/admin/tasks/succeeded",
        "/admin/tasks/failed",
    ] {
        assert!(seen.iter().any(|s| s == expected), "{expected}: {seen:?}");
    }
    for asset in ["style.css?v=", "app.js?v=", "icon.svg"] {
        let asset = format!("/admin/tasks/assets/{asset}");
        assert!(seen.iter().any(|s| s.starts_with(&asset)), "{asset}");
    }
    assert!(seen.iter().any(|s| s.starts_with("/admin/tasks/task/")));
    assert!(
        seen.iter()
            .any(|s| s.starts_with("/admin/tasks/completed/"))
    );
    let missing = get(&app, "/admin/tasks/task/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("href=\"/admin/tasks/upcoming\""));

    // A prefix with a parameter: links carry the value, not the pattern.
    let app = Router::new().nest("/t/{tenant}/tasks", f.app.clone());
    let body = ok_page(&app, "/t/acme/tasks/upcoming").await;
    for link in links(&body) {
        assert!(link.starts_with("/t/acme/tasks"), "{link}");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_embedded_and_pages_load_nothing_from_elsewhere() {
    let f = fixture().await;
    for (uri, content_type, needle) in [
        (
            "/assets/style.css",
            "text/css; charset=utf-8",
            ".badge.failed",
        ),
        (
            "/assets/app.js",
            "text/javascript; charset=utf-8",
            "location.reload",
        ),
        ("/assets/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let page = get(&f.app, uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        assert_eq!(page.content_type, content_type, "{uri}");
        assert!(page.body.contains(needle), "{uri}");
    }
    for uri in ["/", "/upcoming", "/succeeded", "/failed"] {
        let page = get(&f.app, uri).await;
        for link in links(&page.body) {
            assert!(link.starts_with('/'), "{uri} loads {link}");
        }
        assert!(!page.body.contains("http://") && !page.body.contains("https://"));
        let csp = page.csp.expect("a content security policy");
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    }
    f.stop().await;
}
