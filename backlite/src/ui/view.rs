//! The pages: one askama template per page and the values it shows, built from storage
//! records. Templates escape every value they print; nothing here is marked safe.

use std::time::Duration;

use askama::Template;

use super::format::{self, Time};
use super::text::Text;
use crate::processor::Registry;
use crate::storage::{CompletedRecord, Millis, QueueStats, TaskRecord, duration_millis};

/// Characters of a payload or an error shown in a list row.
const PREVIEW_CHARS: usize = 96;

/// What every page shows around its content: the tabs with their counts and the queues.
pub(crate) struct Layout {
    /// Where the router is mounted ("" or "/admin/tasks"): every link starts with it.
    pub(crate) base: String,
    /// The front page (the running tasks).
    pub(crate) home: String,
    pub(crate) title: String,
    pub(crate) tabs: Vec<Tab>,
    pub(crate) queues: Vec<QueueCard>,
    /// Whether the counts could be read; the page says so when not.
    pub(crate) counted: bool,
    pub(crate) now: Time,
    pub(crate) version: &'static str,
    /// Appended to the links of the stylesheet and the script, for caching.
    pub(crate) assets: &'static str,
    /// The form token, when the router offers actions: pages show their buttons only then.
    pub(crate) csrf: Option<String>,
    /// What the action that led here did, in a sentence.
    pub(crate) notice: Option<String>,
    /// The page of the secondary navigation that is shown: `tasks`, `queues`, `processes` or
    /// `charts`; `""` for the others.
    pub(crate) section: &'static str,
}

pub(crate) struct Tab {
    pub(crate) label: &'static str,
    /// The state's colour, a CSS class: `running`, `upcoming`, `succeeded`, `failed`.
    pub(crate) class: &'static str,
    pub(crate) href: String,
    pub(crate) count: String,
    pub(crate) active: bool,
}

pub(crate) struct QueueCard {
    pub(crate) name: String,
    /// The list of the queue's tasks.
    pub(crate) href: String,
    pub(crate) stats: Vec<Stat>,
}

pub(crate) struct Stat {
    pub(crate) label: &'static str,
    pub(crate) class: &'static str,
    pub(crate) value: String,
    pub(crate) zero: bool,
}

/// The lists, as tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum List {
    Running,
    Upcoming,
    Succeeded,
    Failed,
}

impl List {
    pub(crate) const ALL: [List; 4] =
        [List::Running, List::Upcoming, List::Succeeded, List::Failed];

    pub(crate) fn label(self) -> &'static str {
        match self {
            List::Running => "Running",
            List::Upcoming => "Upcoming",
            List::Succeeded => "Succeeded",
            List::Failed => "Failed",
        }
    }

    pub(crate) fn class(self) -> &'static str {
        match self {
            List::Running => "running",
            List::Upcoming => "upcoming",
            List::Succeeded => "succeeded",
            List::Failed => "failed",
        }
    }

    /// The list's link: the running tasks are the front page, linked as `/admin/tasks` (not
    /// `/admin/tasks/`, which a nested axum router does not match) or `/` at the root.
    pub(crate) fn href(self, base: &str) -> String {
        match (self, base) {
            (List::Running, "") => "/".to_owned(),
            _ => format!("{base}{}", self.path()),
        }
    }

    fn path(self) -> &'static str {
        match self {
            List::Running => "",
            List::Upcoming => "/upcoming",
            List::Succeeded => "/succeeded",
            List::Failed => "/failed",
        }
    }

    fn count(self, totals: &Totals) -> u64 {
        match self {
            List::Running => totals.running,
            List::Upcoming => totals.upcoming,
            List::Succeeded => totals.succeeded,
            List::Failed => totals.failed,
        }
    }
}

/// Task counts per list, summed over the queues.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    pub(crate) running: u64,
    pub(crate) upcoming: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
}

impl Totals {
    pub(crate) fn of(stats: &[QueueStats]) -> Totals {
        stats.iter().fold(Totals::default(), |t, q| Totals {
            running: t.running + q.running,
            upcoming: t.upcoming + q.pending + q.scheduled,
            succeeded: t.succeeded + q.succeeded,
            // The failed list shows every retained task that did not succeed, cancelled
            // ones too.
            failed: t.failed + q.failed + q.cancelled,
        })
    }

    pub(crate) fn of_list(&self, list: List) -> u64 {
        list.count(self)
    }
}

impl Layout {
    /// The frame of a page; `stats` is `None` when the counts could not be read.
    pub(crate) fn new(
        base: String,
        title: String,
        active: Option<List>,
        stats: Option<&[QueueStats]>,
        now: Millis,
    ) -> Layout {
        let totals = stats.map(Totals::of);
        let tabs = List::ALL
            .into_iter()
            .map(|list| Tab {
                label: list.label(),
                class: list.class(),
                href: list.href(&base),
                count: totals.map_or_else(|| "–".to_owned(), |t| format::count(list.count(&t))),
                active: active == Some(list),
            })
            .collect();
        let queues = stats
            .unwrap_or_default()
            .iter()
            .map(|q| {
                let stat = |label, class, value: u64| Stat {
                    label,
                    class,
                    value: format::count(value),
                    zero: value == 0,
                };
                QueueCard {
                    href: format!("{base}/tasks?queue={}", q.queue),
                    name: q.queue.clone(),
                    stats: vec![
                        stat("running", "running", q.running),
                        stat("due", "upcoming", q.pending),
                        stat("scheduled", "upcoming", q.scheduled),
                        stat("succeeded", "succeeded", q.succeeded),
                        stat("failed", "failed", q.failed),
                    ],
                }
            })
            .collect();
        Layout {
            home: List::Running.href(&base),
            base,
            title,
            tabs,
            queues,
            counted: stats.is_some(),
            now: Time::new(now, now),
            version: env!("CARGO_PKG_VERSION"),
            assets: super::ASSETS_DIGEST,
            csrf: None,
            notice: None,
            section: "",
        }
    }
}

/// Previous and next links of a list, and which rows this page shows.
pub(crate) struct Pager {
    pub(crate) page: u64,
    /// 1-based index of the first row shown, and of the last.
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) total: Option<String>,
    pub(crate) prev: Option<String>,
    pub(crate) next: Option<String>,
    /// A page past the end: link back to the first one.
    pub(crate) restart: Option<String>,
}

impl Pager {
    pub(crate) fn new(
        href: &str,
        page: u64,
        per_page: u64,
        shown: usize,
        more: bool,
        total: Option<u64>,
    ) -> Pager {
        let link = |page: u64| match page {
            1 => href.to_owned(),
            _ => format!("{href}?page={page}"),
        };
        let offset = (page - 1) * per_page;
        Pager {
            page,
            first: offset + 1,
            last: offset + shown as u64,
            total: total.map(format::count),
            prev: (page > 1 && shown > 0).then(|| link(page - 1)),
            next: more.then(|| link(page + 1)),
            restart: (page > 1 && shown == 0).then(|| link(1)),
        }
    }
}

/// A waiting or running task, in a list or on its own page.
pub(crate) struct TaskView {
    pub(crate) id: String,
    pub(crate) href: String,
    pub(crate) queue: String,
    /// `running`, `due` (waiting for a worker), `scheduled` or `retrying`.
    pub(crate) status: &'static str,
    /// Attempts done, or the attempt running, with the queue's maximum: "2 of 3".
    pub(crate) attempt: String,
    /// The same, said in full for the task's page: "attempt 2 of 3 running".
    pub(crate) attempts: String,
    pub(crate) created: Time,
    pub(crate) run_at: Time,
    pub(crate) claimed: Option<Time>,
    /// Why a running task is shown as stale: its lease was last renewed (or, never renewed,
    /// claimed) longer ago than the client's `release_after`, so its process most likely died
    /// or froze and it waits to be released.
    pub(crate) stale: Option<String>,
    pub(crate) last_executed: Option<Time>,
    pub(crate) last_duration: Option<String>,
    pub(crate) last_error: Option<Text>,
    /// One line of the error, for a list.
    pub(crate) error_preview: Option<Text>,
    pub(crate) preview: Text,
    /// Indented JSON; empty in lists.
    pub(crate) payload: Text,
    pub(crate) size: String,
    /// Waiting for a later time: "run now" can make it due.
    pub(crate) later: bool,
}

impl TaskView {
    pub(crate) fn new(
        base: &str,
        t: TaskRecord,
        registry: &Registry,
        now: Millis,
        release_after: Duration,
    ) -> TaskView {
        let max = registry.config(&t.queue).map(|c| c.max_attempts());
        let status = match (t.claimed_at, t.attempts) {
            (Some(_), _) => "running",
            (None, 0) if t.run_at > now => "scheduled",
            (None, 0) => "due",
            (None, _) => "retrying",
        };
        let shown = t.attempts + u32::from(t.claimed_at.is_some());
        let attempt = match max {
            Some(max) => format!("{shown} of {max}"),
            None => shown.to_string(),
        };
        let attempts = match t.claimed_at {
            Some(_) => format!("attempt {attempt} running"),
            None => attempt.clone(),
        };
        let whole = t.payload.len() as u64 == t.payload_len;
        TaskView {
            id: t.id.to_string(),
            href: format!("{base}/task/{}", t.id),
            status,
            attempt,
            attempts,
            created: Time::new(t.created_at, now),
            run_at: Time::new(t.run_at, now),
            claimed: t.claimed_at.map(|at| Time::new(at, now)),
            stale: t
                .lease_renewed_at
                .or(t.claimed_at)
                .filter(|at| now.saturating_sub(*at) > duration_millis(release_after))
                .map(|_| {
                    format!(
                        "Its lease was not renewed for more than {} (release_after): its \
                         process has probably died or frozen. A started client runs it again \
                         once it releases it.",
                        format::duration(release_after)
                    )
                }),
            last_executed: t.last_executed_at.map(|at| Time::new(at, now)),
            last_duration: t.last_duration.map(format::duration),
            error_preview: t
                .last_error
                .as_deref()
                .map(|e| format::one_line(e, PREVIEW_CHARS, false).into()),
            last_error: t.last_error.map(Text::from),
            preview: format::preview(&t.payload, t.payload_len, PREVIEW_CHARS).into(),
            payload: if whole {
                format::payload(&t.payload).into()
            } else {
                Text::default()
            },
            size: format::bytes(t.payload_len),
            later: t.claimed_at.is_none() && t.run_at > now,
            queue: t.queue,
        }
    }
}

/// A retained completed task, in a list or on its own page.
pub(crate) struct CompletedView {
    pub(crate) id: String,
    pub(crate) href: String,
    pub(crate) queue: String,
    pub(crate) succeeded: bool,
    pub(crate) attempts: String,
    pub(crate) duration: String,
    pub(crate) error: Option<Text>,
    pub(crate) error_preview: Option<Text>,
    pub(crate) created: Time,
    pub(crate) finished: Time,
    /// From creation to the end of the last attempt.
    pub(crate) turnaround: String,
    pub(crate) expires: Option<Time>,
    pub(crate) preview: Option<Text>,
    /// Indented JSON when the payload was retained (whole, on the task's page).
    pub(crate) payload: Option<Text>,
    pub(crate) size: String,
    /// It failed or was cancelled and kept its payload: it can be run again.
    pub(crate) retriable: bool,
    /// Where its buttons post to, before the action's name: `{base}/task/{id}`.
    pub(crate) actions: String,
}

impl CompletedView {
    pub(crate) fn new(
        base: &str,
        c: CompletedRecord,
        registry: &Registry,
        now: Millis,
    ) -> CompletedView {
        let max = registry.config(&c.queue).map(|q| q.max_attempts());
        let turnaround = u64::try_from(c.last_executed_at.saturating_sub(c.created_at))
            .map(|ms| format::duration(std::time::Duration::from_millis(ms) + c.last_duration))
            .unwrap_or_default();
        let whole = c
            .payload
            .as_ref()
            .is_some_and(|p| p.len() as u64 == c.payload_len);
        CompletedView {
            id: c.id.to_string(),
            href: format!("{base}/completed/{}", c.id),
            actions: format!("{base}/task/{}", c.id),
            succeeded: c.succeeded,
            attempts: match max {
                Some(max) => format!("{} of {max}", c.attempts),
                None => c.attempts.to_string(),
            },
            duration: format::duration(c.last_duration),
            error_preview: c
                .error
                .as_deref()
                .map(|e| format::one_line(e, PREVIEW_CHARS, false).into()),
            error: c.error.map(Text::from),
            created: Time::new(c.created_at, now),
            finished: Time::new(c.last_executed_at, now),
            turnaround,
            expires: c.expires_at.map(|at| Time::new(at, now)),
            preview: c
                .payload
                .as_deref()
                .map(|p| format::preview(p, c.payload_len, PREVIEW_CHARS).into()),
            payload: c
                .payload
                .as_deref()
                .filter(|_| whole)
                .map(|p| format::payload(p).into()),
            size: format::bytes(c.payload_len),
            retriable: !c.succeeded && c.payload.is_some(),
            queue: c.queue,
        }
    }
}

#[derive(Template)]
#[template(path = "tasks.html")]
pub(crate) struct TasksPage {
    pub(crate) layout: Layout,
    /// The running tasks; otherwise the upcoming ones.
    pub(crate) running: bool,
    pub(crate) rows: Vec<TaskView>,
    pub(crate) pager: Pager,
}

#[derive(Template)]
#[template(path = "completed_list.html")]
pub(crate) struct CompletedListPage {
    pub(crate) layout: Layout,
    pub(crate) succeeded: bool,
    pub(crate) rows: Vec<CompletedView>,
    pub(crate) pager: Pager,
}

#[derive(Template)]
#[template(path = "task.html")]
pub(crate) struct TaskPage {
    pub(crate) layout: Layout,
    pub(crate) task: TaskView,
    pub(crate) story: Story,
}

#[derive(Template)]
#[template(path = "completed.html")]
pub(crate) struct CompletedPage {
    pub(crate) layout: Layout,
    pub(crate) task: CompletedView,
    pub(crate) story: Story,
}

/// What a task's page tells beyond its row: why it is where it is, and its failed attempts.
#[derive(Default)]
pub(crate) struct Story {
    /// [`Client::explain`](crate::Client::explain)'s sentence; `None` when it could not be
    /// read.
    pub(crate) reason: Option<String>,
    /// The failed attempts, oldest first.
    pub(crate) attempts: Vec<AttemptView>,
    /// When a running task's claim ends unless renewed, as stored with the claim.
    pub(crate) lease_until: Option<Time>,
    /// That end has passed: the claim lapsed, and a release will make the task wait again.
    pub(crate) lapsed: bool,
}

/// One failed attempt of a task.
pub(crate) struct AttemptView {
    pub(crate) attempt: u32,
    pub(crate) at: Time,
    pub(crate) duration: String,
    pub(crate) error: Text,
}

impl AttemptView {
    pub(crate) fn new(e: &crate::AttemptError, now: Millis) -> AttemptView {
        AttemptView {
            attempt: e.attempt,
            at: Time::new(crate::storage::to_millis(e.at), now),
            duration: format::duration(e.duration),
            error: Text::new(&e.message),
        }
    }
}

/// An action's question before it is done: "Delete task …?", with the button that does it.
#[derive(Template)]
#[template(path = "confirm.html")]
pub(crate) struct ConfirmPage {
    pub(crate) layout: Layout,
    pub(crate) question: String,
    pub(crate) detail: &'static str,
    /// Where the form posts: the action's own path.
    pub(crate) action: String,
    pub(crate) button: &'static str,
    pub(crate) back: String,
}

/// An action the router refused to do, and why.
#[derive(Template)]
#[template(path = "refused.html")]
pub(crate) struct RefusedPage {
    pub(crate) layout: Layout,
    pub(crate) reason: &'static str,
}

/// Every queue, paused or not, with its buttons.
#[derive(Template)]
#[template(path = "queues.html")]
pub(crate) struct QueuesPage {
    pub(crate) layout: Layout,
    pub(crate) queues: Vec<QueueRow>,
}

pub(crate) struct QueueRow {
    pub(crate) name: String,
    /// Where its buttons post to, before the action's name: `{base}/queue/{name}`.
    pub(crate) actions: String,
    pub(crate) href: String,
    pub(crate) paused: Option<Time>,
    pub(crate) waiting: String,
    pub(crate) running: String,
    /// Failed and cancelled tasks retained: what "retry failed" may run again.
    pub(crate) failed: u64,
    pub(crate) failed_text: String,
}

/// The started clients on the database.
#[derive(Template)]
#[template(path = "processes.html")]
pub(crate) struct ProcessesPage {
    pub(crate) layout: Layout,
    pub(crate) processes: Vec<ProcessRow>,
    /// The lease: a process not seen for this long is no longer listed.
    pub(crate) release_after: String,
}

pub(crate) struct ProcessRow {
    pub(crate) id: String,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) queues: Vec<String>,
    pub(crate) workers: u32,
    pub(crate) started: Time,
    pub(crate) seen: Time,
}

/// A list filtered by queue and state, paged by cursor.
#[derive(Template)]
#[template(path = "filtered.html")]
pub(crate) struct FilteredPage {
    pub(crate) layout: Layout,
    /// Every queue the database knows, for the filter's choice.
    pub(crate) queues: Vec<String>,
    pub(crate) queue: String,
    /// The state's name in the URL, `""` for the default.
    pub(crate) state: &'static str,
    pub(crate) states: [(&'static str, &'static str); 6],
    pub(crate) rows: Vec<SummaryView>,
    pub(crate) next: Option<String>,
    /// The first page of the same filter, when this one is not it.
    pub(crate) first: Option<String>,
}

/// A row of a filtered list.
pub(crate) struct SummaryView {
    pub(crate) id: String,
    pub(crate) href: String,
    pub(crate) queue: String,
    pub(crate) status: &'static str,
    pub(crate) attempts: u32,
    /// When it is due (waiting), was claimed (running), or last started (completed).
    pub(crate) when: Option<Time>,
    pub(crate) error: Option<Text>,
}

impl SummaryView {
    pub(crate) fn new(base: &str, t: crate::TaskSummary, now: Millis) -> SummaryView {
        use crate::TaskStatus;
        let at = |t: std::time::SystemTime| Time::new(crate::storage::to_millis(t), now);
        let (status, when, page) = match t.state {
            TaskStatus::Pending => ("pending", t.due_at.map(at), "task"),
            TaskStatus::Running => ("running", t.started_at.map(at), "task"),
            TaskStatus::Succeeded => ("succeeded", t.started_at.map(at), "completed"),
            TaskStatus::Failed => ("failed", t.started_at.map(at), "completed"),
            TaskStatus::Cancelled => ("cancelled", t.started_at.map(at), "completed"),
            _ => ("unknown", None, "task"),
        };
        let status = match (status, t.due_at) {
            ("pending", Some(due)) if crate::storage::to_millis(due) > now => "scheduled",
            _ => status,
        };
        SummaryView {
            href: format!("{base}/{page}/{}", t.id),
            id: t.id.to_string(),
            queue: t.queue,
            status,
            attempts: t.attempts,
            when,
            error: t
                .last_error
                .as_deref()
                .map(|e| format::one_line(e, PREVIEW_CHARS, false).into()),
        }
    }
}

#[derive(Template)]
#[template(path = "not_found.html")]
pub(crate) struct NotFoundPage {
    pub(crate) layout: Layout,
    /// What was asked for: an id, or a path.
    pub(crate) what: String,
    pub(crate) hint: &'static str,
}

#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage {
    pub(crate) layout: Layout,
    pub(crate) message: String,
}

/// The charts of the last hour.
#[derive(Template)]
#[template(path = "charts.html")]
pub(crate) struct ChartsPage {
    pub(crate) layout: Layout,
    pub(crate) charts: Vec<super::charts::QueueCharts>,
    /// The hour shown: "09:43 to 10:42 UTC".
    pub(crate) span: String,
}
