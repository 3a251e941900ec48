//! The buttons of [`router_with_actions`](super::router_with_actions): each a `POST` of a
//! form, checked to come from the router's own pages (same origin and the form's token),
//! confirmed first when it destroys or touches many tasks, then done by the client operation
//! of the same name, and answered with a redirect to the page it concerns, which says what
//! happened.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::view::{ConfirmPage, RefusedPage};
use super::{Base, Ui, html, now_millis, param};
use crate::task::TaskId;

/// A new form token: 244 random bits (two random UUIDs), as hex.
pub(super) fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// What a task's button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskAction {
    Retry,
    Cancel,
    RunNow,
    Delete,
}

impl TaskAction {
    fn parse(path: &str) -> Option<TaskAction> {
        Some(match path {
            "retry" => TaskAction::Retry,
            "cancel" => TaskAction::Cancel,
            "run-now" => TaskAction::RunNow,
            "delete" => TaskAction::Delete,
            _ => return None,
        })
    }
}

/// What a queue's button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueAction {
    Pause,
    Resume,
    RetryFailed,
}

impl QueueAction {
    fn parse(path: &str) -> Option<QueueAction> {
        Some(match path {
            "pause" => QueueAction::Pause,
            "resume" => QueueAction::Resume,
            "retry-failed" => QueueAction::RetryFailed,
            _ => return None,
        })
    }
}

/// `POST /task/{id}/{action}`.
pub(super) async fn task(
    ui: State<Ui>,
    Base(base): Base,
    Path((id, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Some(action), Ok(task_id)) = (TaskAction::parse(&name), id.parse::<TaskId>()) else {
        return super::not_found(&ui, base, id, "No such action.", now_millis()).await;
    };
    let form = std::str::from_utf8(&body).ok();
    if let Err(reason) = check(&ui, &uri, &headers, form) {
        return refused(&ui, base, reason).await;
    }
    let confirmed = param(form, "confirm").as_deref() == Some("yes");
    let question = match action {
        TaskAction::Cancel => Some((
            format!("Cancel task {task_id}?"),
            "A waiting task will not run, and is kept as cancelled as its queue keeps failed \
             tasks. A running task is asked to stop: its process cancels it at its next lease \
             renewal, and its attempt may still finish first.",
            "Cancel the task",
        )),
        TaskAction::Delete => Some((
            format!("Delete task {task_id}?"),
            "A waiting task will never run; a completed one is forgotten. This cannot be \
             undone. A running task is not deleted.",
            "Delete the task",
        )),
        TaskAction::Retry | TaskAction::RunNow => None,
    };
    if let (Some((question, detail, button)), false) = (question, confirmed) {
        let back = format!("{base}/task/{task_id}");
        let path = format!("{base}/task/{task_id}/{name}");
        return confirm(&ui, base, path, question, detail, button, back).await;
    }
    let done = match action {
        TaskAction::Retry => ui.retry(&task_id).await,
        TaskAction::Cancel => ui.cancel(&task_id).await,
        TaskAction::RunNow => ui.run_now(&task_id).await,
        TaskAction::Delete => ui.delete(&task_id).await,
    };
    let done = match done {
        Ok(done) => done,
        Err(e) => return failed(&ui, base, &e).await,
    };
    let code = match (action, done) {
        (TaskAction::Retry, true) => "retried",
        (TaskAction::Retry, false) => "not-retried",
        (TaskAction::Cancel, true) => "cancelled",
        (TaskAction::Cancel, false) => "not-cancelled",
        (TaskAction::RunNow, true) => "run-now",
        (TaskAction::RunNow, false) => "not-run-now",
        (TaskAction::Delete, true) => "deleted",
        (TaskAction::Delete, false) => "not-deleted",
    };
    let to = match (action, done) {
        // Its page is gone: back to the lists.
        (TaskAction::Delete, true) => format!("{}?done={code}", super::List::Running.href(&base)),
        _ => format!("{base}/task/{task_id}?done={code}"),
    };
    Redirect::to(&to).into_response()
}

/// `POST /queue/{name}/{action}`.
pub(super) async fn queue(
    ui: State<Ui>,
    Base(base): Base,
    Path((name, verb)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let queue_ok = crate::rules::validate_queue_name(&name).is_ok();
    let (Some(action), true) = (QueueAction::parse(&verb), queue_ok) else {
        return super::not_found(&ui, base, name, "No such action.", now_millis()).await;
    };
    let form = std::str::from_utf8(&body).ok();
    if let Err(reason) = check(&ui, &uri, &headers, form) {
        return refused(&ui, base, reason).await;
    }
    let confirmed = param(form, "confirm").as_deref() == Some("yes");
    if action == QueueAction::RetryFailed && !confirmed {
        let back = format!("{base}/queues");
        let question = format!("Retry every failed task of {name}?");
        let detail = "Every retained task of the queue that failed or was cancelled, and kept \
                      its payload, runs again now, with its attempts counted from zero.";
        let path = format!("{base}/queue/{name}/{verb}");
        return confirm(&ui, base, path, question, detail, "Retry them", back).await;
    }
    let code = match action {
        QueueAction::Pause => ui
            .pause_queue(&name)
            .await
            .map(|done| if done { "paused" } else { "not-paused" }.to_owned()),
        QueueAction::Resume => ui
            .resume_queue(&name)
            .await
            .map(|done| if done { "resumed" } else { "not-resumed" }.to_owned()),
        QueueAction::RetryFailed => ui
            .retry_failed(&name)
            .await
            .map(|n| format!("retried-failed&n={n}")),
    };
    match code {
        Ok(code) => Redirect::to(&format!("{base}/queues?done={code}")).into_response(),
        Err(e) => failed(&ui, base, &e).await,
    }
}

/// Why an action is refused, or nothing when it may be done.
fn check(ui: &Ui, uri: &Uri, headers: &HeaderMap, form: Option<&str>) -> Result<(), &'static str> {
    same_origin(uri, headers)?;
    let Some(expected) = ui.token.as_deref() else {
        return Err("This router is read-only.");
    };
    match param(form, "csrf") {
        Some(token) if same_bytes(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(
            "The form's token is not this server's: the page is older than the server's \
             last start. Reload the page and try again.",
        ),
        None => Err("The request carries no form token: it did not come from this UI's pages."),
    }
}

/// The request names the host it was sent to as its origin: its `Origin` header, or without
/// one its `Referer`, has the authority (host and port) of `Host` (or of the request's URI,
/// in HTTP/2).
fn same_origin(uri: &Uri, headers: &HeaderMap) -> Result<(), &'static str> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST)
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .ok_or("The request names no host.")?;
    let source = text(header::ORIGIN)
        .or_else(|| text(header::REFERER))
        .ok_or("The request has neither an Origin nor a Referer header: its page is unknown.")?;
    let authority = source
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default())
        .ok_or("The request comes from a page of another site.")?;
    if authority.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err("The request comes from a page of another site.")
    }
}

/// Compares in a time that does not depend on where the first difference is.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn confirm(
    ui: &Ui,
    base: String,
    action: String,
    question: String,
    detail: &'static str,
    button: &'static str,
    back: String,
) -> Response {
    let now = now_millis();
    let stats = ui.driver().queue_stats(now).await.ok();
    let layout = ui.layout(base, question.clone(), None, stats.as_deref(), now);
    html(
        StatusCode::OK,
        &ConfirmPage {
            layout,
            action,
            question,
            detail,
            button,
            back,
        },
    )
}

async fn refused(ui: &Ui, base: String, reason: &'static str) -> Response {
    tracing::warn!(reason, "backlite UI refused an action");
    let now = now_millis();
    let stats = ui.driver().queue_stats(now).await.ok();
    let layout = ui.layout(base, "Refused".to_owned(), None, stats.as_deref(), now);
    html(StatusCode::FORBIDDEN, &RefusedPage { layout, reason })
}

async fn failed(ui: &Ui, base: String, error: &crate::Error) -> Response {
    let now = now_millis();
    let stats = ui.driver().queue_stats(now).await.ok();
    super::storage_error(ui, base, stats.as_deref(), error, now)
}

/// The sentence for `?done=…`, which an action's redirect carries to the page it leads to.
pub(super) fn notice(query: Option<&str>) -> Option<String> {
    let code = param(query, "done")?;
    let text = match code.as_str() {
        "retried" => "The task was put back to run now.",
        "not-retried" => {
            "The task was not retried: it is not retained as failed or cancelled with its \
             payload, or a task with its id waits or runs."
        }
        "cancelled" => {
            "The task was cancelled (a running one is asked to stop, and ends as cancelled)."
        }
        "not-cancelled" => "The task was not cancelled: it has completed already, or is gone.",
        "run-now" => "The task is due now.",
        "not-run-now" => "The task was not moved: it is due already, running, or gone.",
        "deleted" => "The task was deleted.",
        "not-deleted" => "The task was not deleted: it is running, or gone.",
        "paused" => "The queue is paused: no process starts its tasks until it is resumed.",
        "not-paused" => "The queue was paused already.",
        "resumed" => "The queue is running again.",
        "not-resumed" => "The queue was not paused.",
        "retried-failed" => {
            let n = param(query, "n").and_then(|n| n.parse::<u64>().ok())?;
            return Some(format!(
                "{} failed or cancelled {} put back to run now.",
                super::format::count(n),
                if n == 1 { "task was" } else { "tasks were" }
            ));
        }
        _ => return None,
    };
    Some(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn an_action_must_name_its_own_host_as_origin() {
        let uri: Uri = "/task/x/retry".parse().unwrap();
        let host = (header::HOST, "ui.example:8080");
        let ok = [
            headers(&[host.clone(), (header::ORIGIN, "https://ui.example:8080")]),
            headers(&[host.clone(), (header::ORIGIN, "http://UI.example:8080")]),
            headers(&[
                host.clone(),
                (header::REFERER, "https://ui.example:8080/a/b?c"),
            ]),
        ];
        for h in ok {
            assert_eq!(same_origin(&uri, &h), Ok(()), "{h:?}");
        }
        let refused = [
            headers(std::slice::from_ref(&host)),
            headers(&[host.clone(), (header::ORIGIN, "null")]),
            headers(&[host.clone(), (header::ORIGIN, "https://evil.example")]),
            headers(&[host.clone(), (header::ORIGIN, "https://ui.example:8081")]),
            headers(&[
                host.clone(),
                (header::ORIGIN, "https://ui.example:8080.evil"),
            ]),
            // The Origin wins over a Referer that would pass.
            headers(&[
                host.clone(),
                (header::ORIGIN, "https://evil.example"),
                (header::REFERER, "https://ui.example:8080/"),
            ]),
            headers(&[(header::ORIGIN, "https://ui.example:8080")]),
        ];
        for h in refused {
            assert!(same_origin(&uri, &h).is_err(), "{h:?}");
        }
        // HTTP/2: the authority is in the URI.
        let uri: Uri = "https://ui.example:8080/task/x/retry".parse().unwrap();
        let h = headers(&[(header::ORIGIN, "https://ui.example:8080")]);
        assert_eq!(same_origin(&uri, &h), Ok(()));
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same_bytes(a.as_bytes(), a.clone().as_bytes()));
        assert!(!same_bytes(a.as_bytes(), b.as_bytes()));
        assert!(!same_bytes(a.as_bytes(), &a.as_bytes()[..63]));
        assert!(!same_bytes(b"", a.as_bytes()));
    }

    #[test]
    fn notices_are_known_sentences_only() {
        assert_eq!(
            notice(Some("done=paused")).as_deref(),
            Some("The queue is paused: no process starts its tasks until it is resumed.")
        );
        assert_eq!(
            notice(Some("done=retried-failed&n=3")).as_deref(),
            Some("3 failed or cancelled tasks were put back to run now.")
        );
        assert_eq!(notice(Some("done=retried-failed&n=x")), None);
        assert_eq!(notice(Some("done=%3Cscript%3E")), None);
        assert_eq!(notice(Some("page=2")), None);
        assert_eq!(notice(None), None);
    }
}
