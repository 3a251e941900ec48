//! A read-only web UI: what runs now, what comes next, what succeeded and what failed, and
//! why. Enabled by the `ui` feature.
//!
//! [`router`] returns an [`axum::Router`] to serve on its own or to nest under any prefix of
//! the application's own server; its links follow the prefix it is mounted at. The pages
//! carry their stylesheet and script with them (no CDN, works offline), print every task
//! value HTML-escaped, and only read: browsing never delays task processing.
//!
//! ```no_run
//! # async fn run(client: backlite::Client) {
//! let app: axum::Router = axum::Router::new()
//!     // .route("/", ..): the application's own routes
//!     .nest("/admin/tasks", backlite::ui::router(&client));
//! // then `axum::serve(listener, app)`, as the application serves itself
//! # }
//! ```
//!
//! To look at a database that another process runs, open a client on it without processors
//! and do not start it: `Client::builder().database(path).build().await?`. The UI has no
//! authentication of its own; mount it behind the application's.

mod format;
mod view;

use std::convert::Infallible;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, NestedPath, OriginalUri, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::client::Client;
use crate::storage::{Millis, Page, QueueStats, TaskState, now_millis};
use crate::task::TaskId;
use view::{
    CompletedListPage, CompletedPage, CompletedView, ErrorPage, Layout, List, NotFoundPage, Pager,
    TaskPage, TaskView, TasksPage, Totals,
};

/// Rows per page of a list.
const PER_PAGE: u64 = 25;

/// Pages past this are taken for a mistyped number, and the first page is shown instead.
const MAX_PAGE: u64 = 1_000_000;

/// The UI's router, reading `client`'s database. Serve it as it is, or nest it under a
/// prefix: `Router::new().nest("/admin/tasks", backlite::ui::router(&client))`.
///
/// Routes, relative to where it is mounted:
///
/// | Path              | Page                                               |
/// |-------------------|----------------------------------------------------|
/// | `/`               | running tasks (`/admin/tasks` when nested there)   |
/// | `/upcoming`       | waiting tasks, in the order they will run          |
/// | `/succeeded`      | retained tasks that succeeded                      |
/// | `/failed`         | retained tasks that failed                         |
/// | `/task/{id}`      | a waiting or running task                          |
/// | `/completed/{id}` | a retained completed task                          |
/// | `/assets/..`      | the stylesheet, the script and the icon            |
///
/// Lists take `?page=N` (25 rows a page). A task that completes while someone looks at it
/// moves: `/task/{id}` then redirects to `/completed/{id}` when the task was retained.
///
/// The router carries its own state, so it nests into an application router of any state
/// type `S`:
///
/// ```no_run
/// # async fn run(client: backlite::Client) {
/// #[derive(Clone)]
/// struct AppState { name: &'static str }
///
/// let app: axum::Router = axum::Router::new()
///     .nest("/admin/tasks", backlite::ui::router(&client))
///     .with_state(AppState { name: "shop" });
/// # }
/// ```
pub fn router<S: Clone + Send + Sync + 'static>(client: &Client) -> Router<S> {
    Router::new()
        .route("/", get(running))
        .route("/upcoming", get(upcoming))
        .route("/succeeded", get(succeeded))
        .route("/failed", get(failed))
        .route("/task/{id}", get(task))
        .route("/completed/{id}", get(completed))
        .route("/assets/style.css", get(style))
        .route("/assets/app.js", get(script))
        .route("/assets/icon.svg", get(icon))
        .fallback(unknown_path)
        .with_state(client.clone())
}

async fn running(client: State<Client>, base: Base, query: RawQuery) -> Response {
    task_list(&client, base, query, List::Running).await
}

async fn upcoming(client: State<Client>, base: Base, query: RawQuery) -> Response {
    task_list(&client, base, query, List::Upcoming).await
}

async fn succeeded(client: State<Client>, base: Base, query: RawQuery) -> Response {
    completed_list(&client, base, query, List::Succeeded).await
}

async fn failed(client: State<Client>, base: Base, query: RawQuery) -> Response {
    completed_list(&client, base, query, List::Failed).await
}

async fn task_list(client: &Client, base: Base, query: RawQuery, list: List) -> Response {
    let state = match list {
        List::Running => TaskState::Running,
        _ => TaskState::Upcoming,
    };
    let driver = client.driver();
    let rows = |window| driver.task_list(state, window);
    let release_after = client.inner.settings.release_after;
    let view = |base: &str, row, registry: &crate::Registry, now| {
        TaskView::new(base, row, registry, now, release_after)
    };
    match list_page(client, base, query, list, rows, view).await {
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

async fn completed_list(client: &Client, base: Base, query: RawQuery, list: List) -> Response {
    let succeeded = list == List::Succeeded;
    let driver = client.driver();
    let rows = |window| driver.completed_list(succeeded, window);
    match list_page(client, base, query, list, rows, CompletedView::new).await {
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
    client: &Client,
    Base(base): Base,
    query: RawQuery,
    list: List,
    rows: impl FnOnce(Page) -> crate::BoxFuture<crate::Result<Vec<R>>>,
    view: impl Fn(&str, R, &crate::Registry, Millis) -> V,
) -> Result<(Layout, Vec<V>, Pager), Response> {
    let (page, window) = page(query);
    let now = now_millis();
    // One more row than shown says whether there is a next page.
    let (stats, rows) = tokio::join!(client.driver().queue_stats(now), rows(window));
    let stats = stats.ok();
    let mut rows = rows.map_err(|e| storage_error(base.clone(), stats.as_deref(), &e, now))?;
    let more = rows.len() as u64 > PER_PAGE;
    rows.truncate(PER_PAGE as usize);
    let layout = Layout::new(
        base.clone(),
        list.label().to_owned(),
        Some(list),
        stats.as_deref(),
        now,
    );
    let pager = pager(&base, list, page, rows.len(), more, stats.as_deref());
    let registry = client.registry();
    let rows = rows
        .into_iter()
        .map(|row| view(&base, row, registry, now))
        .collect();
    Ok((layout, rows, pager))
}

async fn task(client: State<Client>, Base(base): Base, Path(id): Path<String>) -> Response {
    let now = now_millis();
    let Ok(task_id) = id.parse::<TaskId>() else {
        return not_found(&client, base, id, NOT_AN_ID, now).await;
    };
    let driver = client.driver();
    let (stats, found) = tokio::join!(driver.queue_stats(now), driver.task_get(task_id));
    let stats = stats.ok();
    match found {
        Ok(Some(task)) => {
            let release_after = client.inner.settings.release_after;
            let task = TaskView::new(&base, task, client.registry(), now, release_after);
            let title = format!("Task {}", task.id);
            let list = match task.status {
                "running" => List::Running,
                _ => List::Upcoming,
            };
            let layout = Layout::new(base, title, Some(list), stats.as_deref(), now);
            html(StatusCode::OK, &TaskPage { layout, task })
        }
        // It may have completed since the link was drawn: look among the retained ones.
        Ok(None) => match driver.completed_get(task_id).await {
            Ok(Some(_)) => Redirect::to(&format!("{base}/completed/{task_id}")).into_response(),
            Ok(None) => not_found(&client, base, id, GONE, now).await,
            Err(e) => storage_error(base, stats.as_deref(), &e, now),
        },
        Err(e) => storage_error(base, stats.as_deref(), &e, now),
    }
}

async fn completed(client: State<Client>, Base(base): Base, Path(id): Path<String>) -> Response {
    let now = now_millis();
    let Ok(task_id) = id.parse::<TaskId>() else {
        return not_found(&client, base, id, NOT_AN_ID, now).await;
    };
    let driver = client.driver();
    let (stats, found) = tokio::join!(driver.queue_stats(now), driver.completed_get(task_id));
    let stats = stats.ok();
    match found {
        Ok(Some(task)) => {
            let task = CompletedView::new(&base, task, client.registry(), now);
            let title = format!("Task {}", task.id);
            let list = if task.succeeded {
                List::Succeeded
            } else {
                List::Failed
            };
            let layout = Layout::new(base, title, Some(list), stats.as_deref(), now);
            html(StatusCode::OK, &CompletedPage { layout, task })
        }
        Ok(None) => not_found(&client, base, id, GONE, now).await,
        Err(e) => storage_error(base, stats.as_deref(), &e, now),
    }
}

const NOT_AN_ID: &str = "This is not a task id: ids are UUIDs, as in the lists' links.";
const GONE: &str = "No task has this id. A task that completed is kept only if its queue \
                    has a retention, and only until that retention expires.";

async fn unknown_path(client: State<Client>, Base(base): Base, uri: axum::http::Uri) -> Response {
    let hint = "This page does not exist in the task UI.";
    not_found(&client, base, uri.path().to_owned(), hint, now_millis()).await
}

async fn not_found(
    client: &Client,
    base: String,
    what: String,
    hint: &'static str,
    now: i64,
) -> Response {
    let stats = client.driver().queue_stats(now).await.ok();
    let layout = Layout::new(base, "Not found".to_owned(), None, stats.as_deref(), now);
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
    base: String,
    stats: Option<&[QueueStats]>,
    error: &crate::Error,
    now: i64,
) -> Response {
    tracing::warn!(error = %error, "backlite UI could not read the database");
    let layout = Layout::new(base, "Error".to_owned(), None, stats, now);
    let message = error.to_string();
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        &ErrorPage { layout, message },
    )
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
         base-uri 'none'; form-action 'none'; frame-ancestors 'self'",
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
