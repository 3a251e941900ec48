//! The UI's buttons in a real browser: headless Chromium, driven through chromedriver over
//! WebDriver, clicks retry on a failed task and sees it run, cancels a scheduled task,
//! pauses a queue and sees none of its tasks start until it resumes it, submits a forged
//! form from another site and sees it refused, checks what a hostile task looks like at
//! 1280 px, and that the charts are drawn. Screenshots of each step go to `tests/artifacts/ui-browser/`.
//!
//! Chromium is `$CHROMIUM` or `/usr/bin/chromium`, chromedriver `$CHROMEDRIVER` or
//! `/usr/bin/chromedriver` (Debian's `chromium` and `chromium-driver`). Without them the test
//! says so and passes, unless `CI` is set: there it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use backlite::{Client, Task, TaskId, TaskStatus, processor, processors};
use fantoccini::{Locator, elements::Element};
use serde::{Deserialize, Serialize};

const WINDOW: (u32, u32) = (1280, 900);

/// Fails until its text is healed.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "flaky", retention(data))]
struct Flaky {
    text: String,
}

static HEALED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[processor]
async fn flaky(task: Flaky) -> Result<(), String> {
    if !HEALED.lock().unwrap().contains(&task.text) {
        return Err(format!(
            "upstream said \u{1b}[31mno\u{1b}[0m\u{7} <b>twice</b>: {}",
            task.text
        ));
    }
    Ok(())
}

/// Counts its runs.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "mail", retention(data))]
struct Mail {
    to: String,
}

static MAIL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[processor]
async fn mail(_: Mail) -> Result<(), String> {
    MAIL_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// A valid queue name of 99 characters, no space in it; no processor here, so its tasks wait.
const LONG: &str = "reports.monthly-invoice-for-every-customer-account_in-the-european-union:\
                    rendered-as-pdf-and-mailed";

#[derive(Serialize, Deserialize)]
struct Long {
    subject: String,
}

impl Task for Long {
    const CONFIG: backlite::QueueConfig = backlite::QueueConfig::builder(LONG).build();
}

fn tool(variable: &str, default: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable).map_or_else(|| default.into(), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "no {} at {}: install Debian's `{package}` package or set {variable}=<path>",
        package,
        path.display()
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "{message}; CI must run the browser test"
    );
    eprintln!("ui_browser_actions skipped: {message}");
    None
}

/// A chromedriver on a free port, ended with the test.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

async fn chromedriver(path: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(path)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Driver {
                _child: child,
                url: format!("http://127.0.0.1:{port}"),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not listen on port {port}");
}

struct Browser {
    web: fantoccini::Client,
    origin: String,
    shots: PathBuf,
}

impl Browser {
    async fn open(&self, path: &str) {
        let url = format!("{}{path}", self.origin);
        self.web.goto(&url).await.unwrap();
    }

    async fn shot(&self, name: &str) {
        let png = self.web.screenshot().await.unwrap();
        assert!(png.len() > 1000, "a screenshot of {name}");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn find(&self, css: &str) -> Element {
        self.web
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// Clicks the element and waits until the page it submits to has loaded, which shows
    /// `then`.
    async fn click(&self, css: &str, then: &str) {
        self.find(css).await.click().await.unwrap();
        self.find(then).await;
    }

    /// Reloads the page until `css` shows up, or panics after 20 s.
    async fn reload_until(&self, css: &str) {
        for _ in 0..100 {
            self.web.refresh().await.unwrap();
            if self.web.find(Locator::Css(css)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{css} never showed");
    }

    async fn script(&self, js: &str) -> serde_json::Value {
        self.web.execute(js, vec![]).await.unwrap()
    }
}

async fn wait_for(client: &Client, id: TaskId, status: TaskStatus) {
    for _ in 0..1000 {
        if client.status(&id).await.unwrap() == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} did not become {status:?}");
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buttons_work_in_chromium_and_forged_posts_do_not() {
    assert_eq!(LONG.len(), 99);
    let (Some(chromium), Some(driver)) = (
        tool("CHROMIUM", "/usr/bin/chromium", "chromium"),
        tool("CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver"),
    ) else {
        return;
    };
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/ui-browser");
    std::fs::create_dir_all(&shots).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .database(dir.path().join("ui.db"))
        .workers(2)
        .processors(processors![flaky, mail])
        .build()
        .await
        .unwrap();
    // A task that waits from before the start: the depth sample taken at the start (one a
    // minute) counts it, so the charts have a depth line to draw.
    client
        .add(Mail {
            to: "tomorrow".into(),
        })
        .wait(Duration::from_secs(86_400))
        .save()
        .await
        .unwrap();
    client.start();
    let app =
        Router::new().nest_service("/admin/tasks", backlite::ui::router_with_actions(&client));
    let origin = serve(app).await;

    let driver = chromedriver(&driver).await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--hide-scrollbars",
                format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            ],
        }),
    );
    let web =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a chromedriver session");
    let b = Browser {
        web,
        origin: origin.clone(),
        shots,
    };

    // The mount point with its trailing slash is the front page.
    b.open("/admin/tasks/").await;
    assert_eq!(b.text("h1").await, "Running");

    // Retry: a failed task, retried from its page, runs and succeeds.
    let failed = client
        .add(Flaky {
            text: "retry me".into(),
        })
        .save()
        .await
        .unwrap()[0];
    wait_for(&client, failed, TaskStatus::Failed).await;
    b.open(&format!("/admin/tasks/completed/{failed}")).await;
    assert!(b.text(".badge.failed").await.contains("failed"));
    // The error's escape and bell characters are spelt out, not passed to the page raw.
    let marks = b
        .script("return [...document.querySelectorAll('.error-box .ctrl')].map(e => e.textContent)")
        .await;
    assert_eq!(
        marks,
        serde_json::json!([
            "\\u{1b}", "\\u{1b}", "\\u{7}", "\\u{1b}", "\\u{1b}", "\\u{7}"
        ]),
        "the last error and the attempt's error"
    );
    b.shot("retry-before").await;
    HEALED.lock().unwrap().push("retry me".into());
    b.click("form[action$='/retry'] button", ".notice.done")
        .await;
    assert_eq!(
        b.text(".notice.done").await,
        "The task was put back to run now."
    );
    wait_for(&client, failed, TaskStatus::Succeeded).await;
    b.reload_until(".badge.succeeded").await;
    b.shot("retry-after").await;

    // Cancel a scheduled task: the question first, then the cancel.
    let later = client
        .add(Mail { to: "later".into() })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap()[0];
    b.open(&format!("/admin/tasks/task/{later}")).await;
    assert_eq!(b.text(".badge.scheduled").await, "scheduled");
    b.click("form[action$='/cancel'] button", ".confirm").await;
    assert_eq!(b.text("h1").await, format!("Cancel task {later}?"));
    b.shot("cancel-confirm").await;
    assert_eq!(client.status(&later).await.unwrap(), TaskStatus::Pending);
    b.click(".confirm button.danger", ".notice.done").await;
    assert_eq!(client.status(&later).await.unwrap(), TaskStatus::Cancelled);
    assert!(b.text(".reason").await.contains("cancelled at"));
    b.shot("cancel-after").await;

    // Pause a queue: a task added meanwhile does not start, until the queue is resumed.
    b.open("/admin/tasks/queues").await;
    b.click(
        "form[action='/admin/tasks/queue/mail/pause'] button",
        ".notice.done",
    )
    .await;
    assert!(b.text(".badge.paused").await.contains("paused"));
    let runs = MAIL_RUNS.load(Ordering::SeqCst);
    let held = client.add(Mail { to: "held".into() }).save().await.unwrap()[0];
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(client.status(&held).await.unwrap(), TaskStatus::Pending);
    assert_eq!(
        MAIL_RUNS.load(Ordering::SeqCst),
        runs,
        "no task of mail ran"
    );
    b.open(&format!("/admin/tasks/task/{held}")).await;
    assert!(b.text(".reason").await.contains("queue `mail` is paused"));
    b.shot("pause-held").await;
    b.open("/admin/tasks/queues").await;
    b.shot("queues-paused").await;
    b.click(
        "form[action='/admin/tasks/queue/mail/resume'] button",
        ".notice.done",
    )
    .await;
    wait_for(&client, held, TaskStatus::Succeeded).await;
    assert_eq!(MAIL_RUNS.load(Ordering::SeqCst), runs + 1);

    // A forged form on another site: refused, with or without a token, and nothing changes.
    let target = client
        .add(Mail {
            to: "target".into(),
        })
        .wait(Duration::from_secs(3600))
        .save()
        .await
        .unwrap()[0];
    b.open(&format!("/admin/tasks/task/{target}")).await;
    let token: String = b
        .find("input[name='csrf']")
        .await
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let action = format!("{origin}/admin/tasks/task/{target}/delete");
    let forger = serve(Router::new().route(
        "/",
        get(move || async move {
            Html(format!(
                "<!doctype html><title>win a prize</title>\
                 <form id=bare method=post action='{action}'>\
                 <input type=hidden name=confirm value=yes><button>bare</button></form>\
                 <form id=stolen method=post action='{action}'>\
                 <input type=hidden name=confirm value=yes>\
                 <input type=hidden name=csrf value='{token}'><button>stolen</button></form>"
            ))
        }),
    ))
    .await;
    for form in ["bare", "stolen"] {
        b.web.goto(&forger).await.unwrap();
        b.click(&format!("#{form} button"), "h1").await;
        assert_eq!(b.text("h1").await, "Refused", "{form}");
        assert!(
            b.text(".empty").await.contains("another site"),
            "{form}: the Origin of another site"
        );
        b.shot(&format!("forged-{form}")).await;
    }
    assert_eq!(client.status(&target).await.unwrap(), TaskStatus::Pending);

    // A long queue name at 1280 px: the list stays within the screen.
    client
        .add(Long {
            subject: "\u{7f}DEL and \u{202e}override".into(),
        })
        .save()
        .await
        .unwrap();
    b.open("/admin/tasks/upcoming").await;
    b.find("td.queue-cell").await;
    let fits = b
        .script(
            "const wrap = document.querySelector('.table-wrap');
             const last = document.querySelector('table.list thead th:last-child');
             return [wrap.scrollWidth <= wrap.clientWidth,
                     last.getBoundingClientRect().right <= window.innerWidth];",
        )
        .await;
    assert_eq!(
        fits,
        serde_json::json!([true, true]),
        "the Payload column stays on screen"
    );
    let marks = b
        .script("return document.querySelectorAll('code.preview .ctrl').length")
        .await;
    assert_eq!(
        marks,
        serde_json::json!(2),
        "DEL and the override, spelt out"
    );
    b.shot("long-queue-name").await;

    // The charts of the hour: bars of what ended, lines of the sampled depth, drawn as SVG
    // by the server.
    b.open("/admin/tasks/charts").await;
    b.find("figure.chart svg").await;
    let drawn = b
        .script(
            "const svg = document.querySelector('figure.chart svg').getBoundingClientRect();
             return [document.querySelectorAll('svg rect.succeeded').length > 0,
                     document.querySelectorAll('svg rect.failed').length > 0,
                     document.querySelectorAll('svg polyline.waiting').length > 0,
                     svg.width > 200 && svg.height > 100,
                     document.querySelectorAll('script:not([src])').length];",
        )
        .await;
    assert_eq!(drawn, serde_json::json!([true, true, true, true, 0]));
    b.shot("charts").await;

    b.web.close().await.unwrap();
    client.stop(Duration::from_secs(2)).await;
}
