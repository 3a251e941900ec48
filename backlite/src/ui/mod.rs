//! A web UI: what runs now, what comes next, what succeeded and what failed, and why; charts
//! of the last hour per queue; with [`router_with_actions`], the buttons to retry, cancel,
//! run now, delete, and pause or resume a queue. Enabled by the `ui` feature.
//!
//! [`router`] returns an [`axum::Router`] to serve on its own or to mount under any prefix
//! of the application's own server; its links follow the prefix it is mounted at. The pages
//! carry their stylesheet and script with them (no CDN, works offline), print every task
//! value HTML-escaped (control characters spelt out, as `\u{1b}`), and browsing never
//! delays task processing.
//!
//! ```no_run
//! # async fn run(client: backlite::Client) {
//! let app: axum::Router = axum::Router::new()
//!     // .route("/", ..): the application's own routes
//!     .nest_service("/admin/tasks", backlite::ui::router(&client));
//! // then `axum::serve(listener, app)`, as the application serves itself
//! # }
//! ```
//!
//! Mount it with `nest_service`, which also answers `/admin/tasks/` (axum's `nest` routes
//! `/admin/tasks` and `/admin/tasks/…`, but leaves `/admin/tasks/` to the application's own
//! fallback, usually an empty 404).
//!
//! # Read-only or with actions
//!
//! [`router`] and [`router_read_only`] only read: they have no route that changes anything,
//! so an application that upgrades backlite never finds buttons it did not ask for.
//! [`router_with_actions`] adds them. Every action is a `POST` (a link or a prefetch can
//! never trigger one) and is refused (403) unless both hold:
//!
//! - **same origin:** its `Origin` header (or, without one, its `Referer`) names the host the
//!   request was sent to (`Host`). A reverse proxy in front must pass the `Host` the browser
//!   used (nginx: `proxy_set_header Host $host;`).
//! - **the form's token:** each router makes a random token when it is built and puts it in
//!   its forms; a page of another site cannot read it. A form from before a restart carries
//!   the old token and is refused: reload the page.
//!
//! Cancel, delete, and "retry failed" of a whole queue first show a page that asks to
//! confirm. The pages set a content security policy that lets them load and post to nothing
//! but the router's own paths.
//!
//! To look at a database that another process runs, open a client on it without processors
//! and do not start it: `Client::builder().database(path).build().await?`. The UI has no
//! authentication of its own; mount it behind the application's.

mod actions;
mod charts;
mod format;
mod text;
mod view;

use std::convert::Infallible;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, NestedPath, OriginalUri, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::client::Client;
use crate::inspect::{ListState, TaskCursor};
use crate::storage::{Millis, Page, QueueStats, TaskState, now_millis};
use crate::task::TaskId;
use view::{
    AttemptView, CompletedListPage, CompletedPage, CompletedView, ErrorPage, FilteredPage, Layout,
    List, NotFoundPage, Pager, ProcessRow, ProcessesPage, QueueRow, QueuesPage, Story, SummaryView,
    TaskPage, TaskView, TasksPage, Totals,
};

/// Rows per page of a list.
const PER_PAGE: u64 = 25;

/// Pages past this are taken for a mistyped number, and the first page is shown instead.
const MAX_PAGE: u64 = 1_000_000;

/// What every handler is given: the client, and the form token when actions are on.
#[derive(Clone)]
struct Ui {
    client: Client,
    /// `None`: the router is read-only.
    token: Option<Arc<str>>,
}

impl Ui {
    /// A page's frame, with the form token when the router has actions.
    fn layout(
        &self,
        base: String,
        title: String,
        active: Option<List>,
        stats: Option<&[QueueStats]>,
        now: Millis,
    ) -> Layout {
        let mut layout = Layout::new(base, title, active, stats, now);
        layout.csrf = self.token.as_deref().map(str::to_owned);
        layout
    }
}

impl std::ops::Deref for Ui {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// The UI's read-only router, reading `client`'s database: the same as [`router_read_only`].
/// It stays read-only in every version: the buttons that change tasks and queues come only
/// with [`router_with_actions`].
///
/// Routes, relative to where it is mounted:
///
/// | Path              | Page                                               |
/// |-------------------|----------------------------------------------------|
/// | `/`               | running tasks (`/admin/tasks` when mounted there)  |
/// | `/upcoming`       | waiting tasks, in the order they will run          |
/// | `/succeeded`      | retained tasks that succeeded                      |
/// | `/failed`         | retained tasks that failed                         |
/// | `/tasks`          | tasks filtered by `?queue=` and `?state=`          |
/// | `/task/{id}`      | a waiting or running task, with why it waits       |
/// | `/completed/{id}` | a retained completed task                          |
/// | `/jump?id=`       | the page of the task with that id                  |
/// | `/queues`         | every queue, paused or not                         |
/// | `/processes`      | the started clients on the database                |
/// | `/charts`         | per queue, the last hour's outcomes and depth      |
/// | `/assets/..`      | the stylesheet, the script and the icon            |
///
/// Lists take `?page=N` (25 rows a page). A task that completes while someone looks at it
/// moves: `/task/{id}` then redirects to `/completed/{id}` when the task was retained.
///
/// The router carries its own state, so it mounts into an application router of any state
/// type `S`:
///
/// ```no_run
/// # async fn run(client: backlite::Client) {
/// #[derive(Clone)]
/// struct AppState { name: &'static str }
///
/// let app: axum::Router = axum::Router::new()
///     .nest_service("/admin/tasks", backlite::ui::router(&client))
///     .with_state(AppState { name: "shop" });
/// # }
/// ```
pub fn router<S: Clone + Send + Sync + 'static>(client: &Client) -> Router<S> {
    router_read_only(client)
}

/// The UI's pages, without any action: nothing it answers changes a task or a queue. See
/// [`router`] for its routes.
///
/// ```no_run
/// # async fn run(client: backlite::Client) {
/// let app: axum::Router =
///     axum::Router::new().nest_service("/admin/tasks", backlite::ui::router_read_only(&client));
/// # }
/// ```
pub fn router_read_only<S: Clone + Send + Sync + 'static>(client: &Client) -> Router<S> {
    pages().with_state(Ui {
        client: client.clone(),
        token: None,
    })
}

/// The UI's pages with their buttons: retry a failed or cancelled task, cancel, run now,
/// delete, retry every failed task of a queue, pause and resume a queue. Each calls the
/// [`Client`] operation of the same name (`retry`, `cancel`, `run_now`, `delete`,
/// `retry_failed`, `pause_queue`, `resume_queue`).
///
/// Actions are `POST`s to these paths, refused unless they come from the router's own pages
/// (same origin, and the form's token): see [the module's docs](self).
///
/// | Path                              | Action                                  |
/// |-----------------------------------|-----------------------------------------|
/// | `/task/{id}/retry`                | [`Client::retry`]                       |
/// | `/task/{id}/cancel`               | [`Client::cancel`], after a confirmation |
/// | `/task/{id}/run-now`              | [`Client::run_now`]                     |
/// | `/task/{id}/delete`               | [`Client::delete`], after a confirmation |
/// | `/queue/{name}/retry-failed`      | [`Client::retry_failed`], after a confirmation |
/// | `/queue/{name}/pause`             | [`Client::pause_queue`]                 |
/// | `/queue/{name}/resume`            | [`Client::resume_queue`]                |
///
/// ```no_run
/// # async fn run(client: backlite::Client) {
/// // Behind the application's own authentication: whoever reaches it can act on tasks.
/// let app: axum::Router = axum::Router::new()
///     .nest_service("/admin/tasks", backlite::ui::router_with_actions(&client));
/// # }
/// ```
pub fn router_with_actions<S: Clone + Send + Sync + 'static>(client: &Client) -> Router<S> {
    pages()
        .route("/task/{id}/{action}", post(actions::task))
        .route("/queue/{name}/{action}", post(actions::queue))
        .with_state(Ui {
            client: client.clone(),
            token: Some(actions::new_token().into()),
        })
}

/// The routes that only read.
fn pages() -> Router<Ui> {
    Router::new()
        .route("/", get(running))
        .route("/upcoming", get(upcoming))
        .route("/succeeded", get(succeeded))
        .route("/failed", get(failed))
        .route("/tasks", get(filtered))
        .route("/task/{id}", get(task))
        .route("/completed/{id}", get(completed))
        .route("/jump", get(jump))
        .route("/queues", get(queues))
        .route("/processes", get(processes))
        .route("/charts", get(charts_page))
        .route("/assets/style.css", get(style))
        .route("/assets/app.js", get(script))
        .route("/assets/icon.svg", get(icon))
        .fallback(unknown_path)
}

async fn running(ui: State<Ui>, base: Base, query: RawQuery) -> Response {
    task_list(&ui, base, query, List::Running).await
}

async fn upcoming(ui: State<Ui>, base: Base, query: RawQuery) -> Response {
    task_list(&ui, base, query, List::Upcoming).await
}

async fn succeeded(ui: State<Ui>, base: Base, query: RawQuery) -> Response {
    completed_list(&ui, base, query, List::Succeeded).await
}

async fn failed(ui: State<Ui>, base: Base, query: RawQuery) -> Response {
    completed_list(&ui, base, query, List::Failed).await
}

async fn task_list(ui: &Ui, base: Base, query: RawQuery, list: List) -> Response {
    let state = match list {
        List::Running => TaskState::Running,
        _ => TaskState::Upcoming,
    };
    let driver = ui.driver();
    let rows = |window| driver.task_list(state, window);
    let release_after = ui.inner.settings.release_after;
    let view = |base: &str, row, registry: &crate::Registry, now| {
        TaskView::new(base, row, registry, now, release_after)
    };
    match list_page(ui, base, query, list, rows, view).await {
        Ok((layout, rows, pager)) => html(
            StatusCode::OK,
            &TasksPage {
                layout,
                running: list == List::Running,
                rows,
                pager,
            },
        ),
        Err(response) => response,
    }
}

async fn completed_list(ui: &Ui, base: Base, query: RawQuery, list: List) -> Response {
    let succeeded = list == List::Succeeded;
    let driver = ui.driver();
    let rows = |window| driver.completed_list(succeeded, window);
    match list_page(ui, base, query, list, rows, CompletedView::new).await {
        Ok((layout, rows, pager)) => html(
            StatusCode::OK,
            &CompletedListPage {
                layout,
                succeeded,
                rows,
                pager,
            },
        ),
        Err(response) => response,
    }
}

/// What every list page shows: the header with its counts, one page of rows as views, and the
/// pager; or the error page when the rows cannot be read.
async fn list_page<R, V>(
    ui: &Ui,
    Base(base): Base,
    query: RawQuery,
    list: List,
    rows: impl FnOnce(Page) -> crate::BoxFuture<crate::Result<Vec<R>>>,
    view: impl Fn(&str, R, &crate::Registry, Millis) -> V,
) -> Result<(Layout, Vec<V>, Pager), Response> {
    let notice = actions::notice(query.0.as_deref());
    let (page, window) = page(query);
    let now = now_millis();
    // One more row than shown says whether there is a next page.
    let (stats, rows) = tokio::join!(ui.driver().queue_stats(now), rows(window));
    let stats = stats.ok();
    let mut rows = rows.map_err(|e| storage_error(ui, base.clone(), stats.as_deref(), &e, now))?;
    let more = rows.len() as u64 > PER_PAGE;
    rows.truncate(PER_PAGE as usize);
    let mut layout = ui.layout(
        base.clone(),
        list.label().to_owned(),
        Some(list),
        stats.as_deref(),
        now,
    );
    layout.notice = notice;
    let pager = pager(&base, list, page, rows.len(), more, stats.as_deref());
    let registry = ui.registry();
    let rows = rows
        .into_iter()
        .map(|row| view(&base, row, registry, now))
        .collect();
    Ok((layout, rows, pager))
}

/// Why the task is where it is and its failed attempts, read through the client; a page
/// still shows without them when they cannot be read.
async fn story(ui: &Ui, id: TaskId, now: Millis) -> Story {
    let (reason, info) = tokio::join!(ui.explain(&id), ui.task(&id));
    if let Err(e) = &reason {
        tracing::warn!(task_id = %id, error = %e, "backlite UI could not explain a task");
    }
    let info = info.ok().flatten();
    let until = info
        .as_ref()
        .and_then(|t| t.lease.as_ref())
        .and_then(|l| l.until)
        .map(crate::storage::to_millis);
    Story {
        reason: reason.ok().map(|r| r.to_string()),
        attempts: info
            .map(|t| t.errors.iter().map(|e| AttemptView::new(e, now)).collect())
            .unwrap_or_default(),
        lease_until: until.map(|at| format::Time::new(at, now)),
        lapsed: until.is_some_and(|at| at <= now),
    }
}

async fn task(
    ui: State<Ui>,
    Base(base): Base,
    Path(id): Path<String>,
    query: RawQuery,
) -> Response {
    let now = now_millis();
    let Ok(task_id) = id.parse::<TaskId>() else {
        return not_found(&ui, base, id, NOT_AN_ID, now).await;
    };
    let driver = ui.driver();
    let (stats, found) = tokio::join!(driver.queue_stats(now), driver.task_get(task_id));
    let stats = stats.ok();
    match found {
        Ok(Some(task)) => {
            let release_after = ui.inner.settings.release_after;
            let task = TaskView::new(&base, task, ui.registry(), now, release_after);
            let title = format!("Task {}", task.id);
            let list = match task.status {
                "running" => List::Running,
                _ => List::Upcoming,
            };
            let mut layout = ui.layout(base, title, Some(list), stats.as_deref(), now);
            layout.notice = actions::notice(query.0.as_deref());
            let story = story(&ui, task_id, now).await;
            html(
                StatusCode::OK,
                &TaskPage {
                    layout,
                    task,
                    story,
                },
            )
        }
        // It may have completed since the link was drawn: look among the retained ones.
        Ok(None) => match driver.completed_get(task_id).await {
            Ok(Some(_)) => {
                // The notice of an action travels with it.
                let query = query.0.map(|q| format!("?{q}")).unwrap_or_default();
                Redirect::to(&format!("{base}/completed/{task_id}{query}")).into_response()
            }
            Ok(None) => not_found(&ui, base, id, GONE, now).await,
            Err(e) => storage_error(&ui, base, stats.as_deref(), &e, now),
        },
        Err(e) => storage_error(&ui, base, stats.as_deref(), &e, now),
    }
}

async fn completed(
    ui: State<Ui>,
    Base(base): Base,
    Path(id): Path<String>,
    query: RawQuery,
) -> Response {
    let now = now_millis();
    let Ok(task_id) = id.parse::<TaskId>() else {
        return not_found(&ui, base, id, NOT_AN_ID, now).await;
    };
    let driver = ui.driver();
    let (stats, found) = tokio::join!(driver.queue_stats(now), driver.completed_get(task_id));
    let stats = stats.ok();
    match found {
        Ok(Some(task)) => {
            let task = CompletedView::new(&base, task, ui.registry(), now);
            let title = format!("Task {}", task.id);
            let list = if task.succeeded {
                List::Succeeded
            } else {
                List::Failed
            };
            let mut layout = ui.layout(base, title, Some(list), stats.as_deref(), now);
            layout.notice = actions::notice(query.0.as_deref());
            let story = story(&ui, task_id, now).await;
            html(
                StatusCode::OK,
                &CompletedPage {
                    layout,
                    task,
                    story,
                },
            )
        }
        // A retry may have put it back among the waiting ones.
        Ok(None) => match driver.task_get(task_id).await {
            Ok(Some(_)) => {
                let query = query.0.map(|q| format!("?{q}")).unwrap_or_default();
                Redirect::to(&format!("{base}/task/{task_id}{query}")).into_response()
            }
            Ok(None) => not_found(&ui, base, id, GONE, now).await,
            Err(e) => storage_error(&ui, base, stats.as_deref(), &e, now),
        },
        Err(e) => storage_error(&ui, base, stats.as_deref(), &e, now),
    }
}

/// `/jump?id=…`: the form in every page's header that opens a task by its id.
async fn jump(ui: State<Ui>, Base(base): Base, query: RawQuery) -> Response {
    let id = param(query.0.as_deref(), "id").unwrap_or_default();
    let id = id.trim();
    match id.parse::<TaskId>() {
        Ok(id) => Redirect::to(&format!("{base}/task/{id}")).into_response(),
        Err(_) => not_found(&ui, base, id.to_owned(), NOT_AN_ID, now_millis()).await,
    }
}

/// The filtered list's states, as they read in its URL and its menu.
const STATES: [(&str, &str, ListState); 6] = [
    ("pending", "Due", ListState::Pending),
    ("scheduled", "Scheduled", ListState::Scheduled),
    ("running", "Running", ListState::Running),
    ("succeeded", "Succeeded", ListState::Succeeded),
    ("failed", "Failed", ListState::Failed),
    ("cancelled", "Cancelled", ListState::Cancelled),
];

/// `/tasks?queue=…&state=…&after=…`: a list filtered by queue and state, read with
/// [`Client::tasks`] a page at a time by cursor.
async fn filtered(ui: State<Ui>, Base(base): Base, query: RawQuery) -> Response {
    let query = query.0.as_deref();
    let now = now_millis();
    let queue = param(query, "queue").filter(|q| !q.is_empty());
    if let Some(name) = queue
        .as_deref()
        .filter(|q| crate::rules::validate_queue_name(q).is_err())
    {
        let hint = "This is not a queue name: names are letters, digits and `_ - . :`.";
        return not_found(&ui, base, name.to_owned(), hint, now).await;
    }
    let (state_name, state) = param(query, "state")
        .and_then(|s| STATES.iter().find(|(name, ..)| *name == s))
        .map_or(("failed", ListState::Failed), |(name, _, state)| {
            (*name, *state)
        });
    let after = param(query, "after").and_then(|c| c.parse::<TaskCursor>().ok());
    let mut list = ui.tasks(state).limit(PER_PAGE as u32);
    if let Some(queue) = &queue {
        list = list.queue(queue.clone());
    }
    if let Some(after) = after {
        list = list.after(after);
    }
    let (stats, page) = tokio::join!(ui.driver().queue_stats(now), list.fetch());
    let stats = stats.ok();
    let page = match page {
        Ok(page) => page,
        Err(e) => return storage_error(&ui, base, stats.as_deref(), &e, now),
    };
    let queue = queue.unwrap_or_default();
    let href = |after: Option<String>| {
        let mut href = format!("{base}/tasks?state={state_name}");
        if !queue.is_empty() {
            href.push_str("&queue=");
            href.push_str(&queue);
        }
        if let Some(after) = after {
            href.push_str("&after=");
            href.push_str(&after);
        }
        href
    };
    let next = page.next.map(|c| href(Some(c.to_string())));
    let first = after.map(|_| href(None));
    let queues = stats
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|q| q.queue.clone())
        .collect();
    let title = match queue.as_str() {
        "" => "Tasks".to_owned(),
        queue => format!("Tasks of {queue}"),
    };
    let mut layout = ui.layout(base.clone(), title, None, stats.as_deref(), now);
    layout.section = "tasks";
    let rows = page
        .tasks
        .into_iter()
        .map(|t| SummaryView::new(&base, t, now))
        .collect();
    html(
        StatusCode::OK,
        &FilteredPage {
            layout,
            queues,
            queue,
            state: state_name,
            states: STATES.map(|(name, label, _)| (name, label)),
            rows,
            next,
            first,
        },
    )
}

/// `/queues`: every queue with its counts, whether it is paused, and its buttons.
async fn queues(ui: State<Ui>, Base(base): Base, query: RawQuery) -> Response {
    let now = now_millis();
    let (stats, queues) = tokio::join!(ui.driver().queue_stats(now), ui.queues());
    let stats = stats.ok();
    let queues = match queues {
        Ok(queues) => queues,
        Err(e) => return storage_error(&ui, base, stats.as_deref(), &e, now),
    };
    let mut layout = ui.layout(
        base.clone(),
        "Queues".to_owned(),
        None,
        stats.as_deref(),
        now,
    );
    layout.notice = actions::notice(query.0.as_deref());
    layout.section = "queues";
    let queues = queues
        .into_iter()
        .map(|q| {
            let s = &q.stats;
            QueueRow {
                actions: format!("{base}/queue/{}", s.queue),
                href: format!("{base}/tasks?state=pending&queue={}", s.queue),
                paused: q
                    .paused_since
                    .map(|at| format::Time::new(crate::storage::to_millis(at), now)),
                waiting: format::count(s.pending + s.scheduled),
                running: format::count(s.running),
                failed: s.failed + s.cancelled,
                failed_text: format::count(s.failed + s.cancelled),
                name: s.queue.clone(),
            }
        })
        .collect();
    html(StatusCode::OK, &QueuesPage { layout, queues })
}

/// `/processes`: the started clients, as [`Client::processes`] lists them.
async fn processes(ui: State<Ui>, Base(base): Base) -> Response {
    let now = now_millis();
    let (stats, processes) = tokio::join!(ui.driver().queue_stats(now), ui.processes());
    let stats = stats.ok();
    let processes = match processes {
        Ok(processes) => processes,
        Err(e) => return storage_error(&ui, base, stats.as_deref(), &e, now),
    };
    let mut layout = ui.layout(base, "Processes".to_owned(), None, stats.as_deref(), now);
    layout.section = "processes";
    let at = |t| format::Time::new(crate::storage::to_millis(t), now);
    let processes = processes
        .into_iter()
        .map(|p| ProcessRow {
            id: p.id.to_string(),
            host: p.host,
            pid: p.pid,
            queues: p.queues,
            workers: p.workers,
            started: at(p.started_at),
            seen: at(p.last_seen_at),
        })
        .collect();
    html(
        StatusCode::OK,
        &ProcessesPage {
            layout,
            processes,
            release_after: format::duration(ui.inner.settings.release_after),
        },
    )
}

/// `/charts`: per queue, the tasks that succeeded, failed and were retried in each minute of
/// the last hour, and its depth, as SVG drawn here.
async fn charts_page(ui: State<Ui>, Base(base): Base) -> Response {
    use crate::storage::counters::{MINUTE, minute_of};
    let now = now_millis();
    let since = minute_of(now) - (charts::MINUTES as i64 - 1) * MINUTE;
    let (stats, counts) = tokio::join!(
        ui.driver().queue_stats(now),
        ui.driver().counters_read(since)
    );
    let stats = stats.ok();
    let counts = match counts {
        Ok(counts) => counts,
        Err(e) => return storage_error(&ui, base, stats.as_deref(), &e, now),
    };
    let mut layout = ui.layout(base, "Charts".to_owned(), None, stats.as_deref(), now);
    layout.section = "charts";
    let clock = |at: Millis| {
        let (_, time, _) = crate::utc::utc(at);
        time[..5].to_owned()
    };
    let span = format!("{} to {} UTC", clock(since), clock(minute_of(now)));
    html(
        StatusCode::OK,
        &view::ChartsPage {
            layout,
            charts: charts::charts(&counts, now),
            span,
        },
    )
}

const NOT_AN_ID: &str = "This is not a task id: ids are UUIDs, as in the lists' links.";
const GONE: &str = "No task has this id. A task that completed is kept only if its queue \
                    has a retention, and only until that retention expires.";

async fn unknown_path(ui: State<Ui>, Base(base): Base, uri: axum::http::Uri) -> Response {
    let hint = "This page does not exist in the task UI.";
    not_found(&ui, base, uri.path().to_owned(), hint, now_millis()).await
}

async fn not_found(ui: &Ui, base: String, what: String, hint: &'static str, now: i64) -> Response {
    let stats = ui.driver().queue_stats(now).await.ok();
    let layout = ui.layout(base, "Not found".to_owned(), None, stats.as_deref(), now);
    html(
        StatusCode::NOT_FOUND,
        &NotFoundPage {
            layout,
            what: what.chars().take(200).collect(),
            hint,
        },
    )
}

fn storage_error(
    ui: &Ui,
    base: String,
    stats: Option<&[QueueStats]>,
    error: &crate::Error,
    now: i64,
) -> Response {
    tracing::warn!(error = %error, "backlite UI could not read the database");
    let layout = ui.layout(base, "Error".to_owned(), None, stats, now);
    let message = error.to_string();
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        &ErrorPage { layout, message },
    )
}

/// The value of `name` in a query string or a form body, percent-decoded (`+` is a space).
fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The requested page number and the rows to read for it: one more than a page shows.
/// A missing, malformed or absurd `page` gives the first page rather than an error.
fn page(RawQuery(query): RawQuery) -> (u64, Page) {
    let page = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("page="))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .unwrap_or(1);
    let window = Page {
        offset: (page - 1) * PER_PAGE,
        limit: PER_PAGE + 1,
    };
    (page, window)
}

fn pager(
    base: &str,
    list: List,
    page: u64,
    shown: usize,
    more: bool,
    stats: Option<&[QueueStats]>,
) -> Pager {
    let href = list.href(base);
    let total = stats.map(|s| Totals::of(s).of_list(list));
    Pager::new(&href, page, PER_PAGE, shown, more, total)
}

/// Headers of every page: nothing but the UI's own files may load or run (a payload that
/// slipped past escaping could still not run a script), nothing is cached (the pages change
/// as tasks move), and the pages are not framed by other sites.
const PAGE_HEADERS: [(header::HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'self'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "same-origin"),
    (header::CACHE_CONTROL, "no-store"),
];

fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => {
            let mut response = (status, body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            for (name, value) in PAGE_HEADERS {
                headers.insert(name, HeaderValue::from_static(value));
            }
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "backlite UI page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "page failed to render").into_response()
        }
    }
}

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");
const ICON: &str = include_str!("assets/icon.svg");

/// A digest of the embedded files. Pages link to them as `style.css?v=<digest>`, so a cached
/// copy is never used with pages that expect another.
pub(crate) const ASSETS_DIGEST: &str = match std::str::from_utf8(&DIGEST_HEX) {
    Ok(hex) => hex,
    Err(_) => panic!("hex digits are ASCII"),
};

const DIGEST_HEX: [u8; 16] = hex(fnv1a(&[STYLE, SCRIPT, ICON]));

/// 64-bit FNV-1a over the files, in a `const`: the digest costs nothing at run time.
const fn fnv1a(files: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut f = 0;
    while f < files.len() {
        let bytes = files[f].as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            i += 1;
        }
        f += 1;
    }
    hash
}

const fn hex(n: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = b"0123456789abcdef"[((n >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

/// An embedded file, cached for a day: its links carry [`ASSETS_DIGEST`].
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Where the router is mounted, without a trailing slash: `""` at the root of a server,
/// `"/admin/tasks"` when nested there. Every link of the pages starts with it.
struct Base(String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let inner = parts.uri.path();
        let original = parts.extensions.get::<OriginalUri>().map(|o| o.0.path());
        let nested = parts.extensions.get::<NestedPath>().map(|n| n.as_str());
        Ok(Base(mount_point(original, inner, nested)))
    }
}

/// The prefix under which a request reached the router. The request's full path ends with
/// the path the router sees, so the difference is the prefix as the browser spelled it,
/// which also holds when the nest path has parameters (`/{tenant}/tasks`), where the
/// pattern that `NestedPath` gives would not do.
fn mount_point(original: Option<&str>, inner: &str, nested: Option<&str>) -> String {
    let prefix = match original {
        Some(original) => match original.strip_suffix(inner) {
            Some(prefix) => prefix,
            // The router's root, reached without a trailing slash: `/admin/tasks`.
            None if inner == "/" => original,
            None => nested.unwrap_or_default(),
        },
        None => nested.unwrap_or_default(),
    };
    // `//host` would be a link to another site.
    let prefix = prefix.trim_end_matches('/');
    match prefix.trim_start_matches('/') {
        "" => String::new(),
        rest => format!("/{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_point_is_the_part_of_the_path_the_router_did_not_see() {
        assert_eq!(mount_point(Some("/"), "/", None), "");
        assert_eq!(mount_point(Some("/upcoming"), "/upcoming", None), "");
        let nested = Some("/admin/tasks");
        assert_eq!(
            mount_point(Some("/admin/tasks"), "/", nested),
            "/admin/tasks"
        );
        assert_eq!(
            mount_point(Some("/admin/tasks/"), "/", nested),
            "/admin/tasks"
        );
        assert_eq!(
            mount_point(Some("/admin/tasks/failed"), "/failed", nested),
            "/admin/tasks"
        );
        assert_eq!(
            mount_point(
                Some("/t/acme/tasks/failed"),
                "/failed",
                Some("/t/{tenant}/tasks")
            ),
            "/t/acme/tasks"
        );
        assert_eq!(
            mount_point(Some("//evil.example/x"), "/x", None),
            "/evil.example"
        );
        assert_eq!(mount_point(None, "/x", nested), "/admin/tasks");
        assert_eq!(mount_point(None, "/x", None), "");
    }

    #[test]
    fn a_bad_page_parameter_gives_the_first_page() {
        let at = |q: &str| page(RawQuery(Some(q.to_owned()))).0;
        assert_eq!(page(RawQuery(None)).0, 1);
        assert_eq!(at("page=3"), 3);
        assert_eq!(at("x=1&page=2"), 2);
        for bad in [
            "page=0",
            "page=-1",
            "page=abc",
            "page=",
            "page=99999999999999999999",
        ] {
            assert_eq!(at(bad), 1, "{bad}");
        }
        let (_, window) = page(RawQuery(Some("page=3".into())));
        assert_eq!((window.offset, window.limit), (50, 26));
    }
}
