//! The UI in a real browser. Headless Chromium opens every page of the `ui` example while its
//! tasks run, follows links from the lists to tasks' pages, and saves a screenshot of each
//! page in `tests/artifacts/ui-screenshots/`.
//!
//! Chromium is `$CHROMIUM`, or else `/usr/bin/chromium` (Debian's `chromium` package). Without
//! it the test says so and passes, unless `CI` is set: there it fails, so that CI cannot skip
//! it unnoticed.

#[allow(
    dead_code,
    reason = "the example's `main` and argument parsing are not used here"
)]
#[path = "../examples/ui.rs"]
mod example;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use backlite::{Client, QueueStats};

/// How long one page may take, Chromium's start included.
const PAGE_TIMEOUT: Duration = Duration::from_secs(90);

const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

struct Browser {
    chromium: PathBuf,
    shots: PathBuf,
    origin: String,
}

impl Browser {
    /// Loads `path`, saves a screenshot as `<name>.png`, and returns the DOM after the page
    /// (and its script) loaded.
    async fn visit(&self, name: &str, path: &str, (width, height): (u32, u32)) -> String {
        let url = format!("{}{path}", self.origin);
        // A fresh profile per page: no cache, no state carried from one page to the next.
        let profile = tempfile::tempdir().unwrap();
        let shot = self.shots.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&shot);
        let run = tokio::process::Command::new(&self.chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("--dump-dom")
            .arg(&url)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(PAGE_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| panic!("Chromium took over {PAGE_TIMEOUT:?} on {url}"))
            .expect("Chromium starts");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "Chromium failed on {url}:\n{stderr}"
        );
        assert!(
            shot.metadata().is_ok_and(|m| m.len() > 1000),
            "no screenshot of {url}:\n{stderr}"
        );
        let dom = String::from_utf8(output.stdout).expect("the DOM is UTF-8");
        // The embedded script ran (the page's policy lets only the UI's own script run).
        assert!(
            dom.contains("<label class=\"live\"><input"),
            "app.js did not run on {url}"
        );
        dom
    }
}

/// The hrefs in `dom` that start with `prefix`, in page order.
fn links<'a>(dom: &'a str, prefix: &str) -> Vec<&'a str> {
    let pattern = format!("href=\"{prefix}");
    dom.match_indices(&pattern)
        .map(|(at, _)| {
            let rest = &dom[at + "href=\"".len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

fn chromium() -> Option<PathBuf> {
    let path =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "no Chromium at {}: install Debian's `chromium` package or set CHROMIUM=<path>",
        path.display()
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "{message}; CI must run the browser test"
    );
    eprintln!("ui_browser skipped: {message}");
    None
}

/// Waits until the example has tasks in every state, so that no page is empty.
async fn every_state_has_tasks(client: &Client) {
    let total = |stats: &[QueueStats], f: fn(&QueueStats) -> u64| stats.iter().map(f).sum::<u64>();
    for _ in 0..600 {
        let stats = client.stats().await.unwrap();
        if total(&stats, |q| q.running) > 0
            && total(&stats, |q| q.scheduled) > 0
            && total(&stats, |q| q.succeeded) > 0
            && total(&stats, |q| q.failed) > 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the example did not reach every state in a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let client = example::demo_client(&dir.path().join("ui.db"))
        .await
        .unwrap();
    example::seed(&client).await.unwrap();
    let feeder = tokio::spawn(example::feed(client.clone()));
    // A payload that would change the page's title if it ever ran as a script.
    let script = client
        .add(example::SendEmail {
            to: "mallory@example.com".into(),
            subject: "<script>document.title='pwned'</script><b>bold?</b>".into(),
        })
        .wait(Duration::from_secs(7200))
        .save()
        .await
        .unwrap()[0];

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, example::app(&client)).into_future());
    every_state_has_tasks(&client).await;
    let browser = Browser {
        chromium,
        shots: shots.clone(),
        origin,
    };

    // Each list, under the prefix the example nests the UI at.
    let running = browser.visit("running", "/admin/tasks", DESKTOP).await;
    assert!(running.contains("<h1>Running</h1>"));
    assert!(
        running.contains(
            "aria-current=\"page\"><span class=\"dot\" aria-hidden=\"true\"></span>Running"
        )
    );

    let upcoming = browser
        .visit("upcoming", "/admin/tasks/upcoming", DESKTOP)
        .await;
    assert!(upcoming.contains("<h1>Upcoming</h1>"));
    assert!(upcoming.contains("<span class=\"badge scheduled\">scheduled</span>"));

    let succeeded = browser
        .visit("succeeded", "/admin/tasks/succeeded", DESKTOP)
        .await;
    assert!(succeeded.contains("<h1>Succeeded</h1>"));
    assert!(!links(&succeeded, "/admin/tasks/completed/").is_empty());

    let failed = browser
        .visit("failed", "/admin/tasks/failed", DESKTOP)
        .await;
    assert!(failed.contains("<h1>Failed</h1>"));

    // From a list to a task: the last upcoming row is the one due last, so it is still
    // waiting when the browser follows its link.
    let task_link = *links(&upcoming, "/admin/tasks/task/")
        .last()
        .expect("an upcoming task");
    let task = browser.visit("task", task_link, DESKTOP).await;
    assert!(task.contains("<h1 class=\"task-title\">Task <code class=\"task-id\">"));
    for field in [
        "Queue",
        "Attempts",
        "Created",
        "Wait until",
        "Last executed",
        "Claimed at",
    ] {
        assert!(task.contains(&format!("<dt>{field}</dt>")), "{field}");
    }
    assert!(
        task.contains("<pre class=\"payload\">{\n"),
        "the payload as indented JSON"
    );

    // From the failed list to a failed task, whose error is an HTML page with a script that
    // would navigate away if it ran.
    let completed_link = links(&failed, "/admin/tasks/completed/")[0];
    let completed = browser.visit("completed", completed_link, DESKTOP).await;
    for field in [
        "Outcome",
        "Attempts",
        "Last duration",
        "Created",
        "Last executed",
        "Expires at",
    ] {
        assert!(completed.contains(&format!("<dt>{field}</dt>")), "{field}");
    }
    assert!(completed.contains("<dd>Failed</dd>"));
    assert!(completed.contains("&lt;script&gt;location='/oops'&lt;/script&gt;"));
    assert!(!completed.contains("<script>location"));

    // A payload with markup is shown as text, and its script never runs.
    let escaped = browser
        .visit(
            "task-with-markup",
            &format!("/admin/tasks/task/{script}"),
            DESKTOP,
        )
        .await;
    assert!(
        escaped.contains(
            "&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;b&gt;bold?&lt;/b&gt;"
        )
    );
    assert!(!escaped.contains("<b>bold?</b>"));
    assert!(escaped.contains(&format!("<title>Task {script} · backlite</title>")));

    let missing = browser
        .visit(
            "not-found",
            "/admin/tasks/task/0190a8a0-7c3e-7d6e-9a1b-3f2c4d5e6f70",
            DESKTOP,
        )
        .await;
    assert!(missing.contains("<h1>Not found</h1>"));

    let phone = browser
        .visit("upcoming-phone", "/admin/tasks/upcoming", PHONE)
        .await;
    assert!(phone.contains("<h1>Upcoming</h1>"));

    server.abort();
    feeder.abort();
    client.stop(Duration::from_secs(2)).await;
    eprintln!("screenshots in {}", shots.display());
}
