//! What a processor can return instead of a failure to steer its task: [`Snooze`] (run again
//! later, the attempt not counted) and [`Cancel`] (stop for good).
//!
//! Both are error types, so that a processor returns them through its `Err` whatever error
//! type it declares, as long as the value stays reachable: the executor looks for them in the
//! returned error and its chain of sources.

use std::time::Duration;

use crate::processor::BoxError;

/// Returned by a processor (`Err(Snooze(delay).into())`): run the task again after `delay`,
/// as if this attempt had not happened. Its attempts stay as they were, so `max_attempts` is
/// not consumed, and its error history is untouched.
///
/// A snooze suits work that waits on something outside the task (a rate limit, a resource
/// not ready yet) without being a failure. A processor that snoozes forever runs forever:
/// count the snoozes in the payload, or bound them by time, when that matters.
///
/// It works with every error type from which the executor can reach it:
/// - [`BoxError`] (`Box<dyn Error + Send + Sync>`): `Err(Snooze(d).into())`;
/// - an error type of the application that holds it as its [`source`](std::error::Error::source)
///   (with `thiserror`, a variant `#[error("snoozed")] Snooze(#[from] backlite::Snooze)`);
/// - [`backlite::Error`](crate::Error), through its `From<Snooze>`
///   ([`Error::Snooze`](crate::Error::Snooze)).
///
/// Not through `anyhow::Error`: `anyhow` turns its error into a box of its own type, whose
/// source is the wrapped error's source, not the error itself, so the snooze is out of reach
/// (and the attempt fails with the snooze's message). Declare [`BoxError`] on a processor
/// that snoozes.
///
/// ```
/// use std::time::Duration;
///
/// use backlite::{BoxError, Context, Snooze, Task, processor};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Task)]
/// #[queue(name = "exports")]
/// struct Export { report: u64 }
///
/// # fn report_ready(_: u64) -> bool { true }
/// #[processor]
/// async fn export(task: Export) -> Result<(), BoxError> {
///     if !report_ready(task.report) {
///         // Not a failure: look again in a minute, attempts unchanged.
///         return Err(Snooze(Duration::from_secs(60)).into());
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snooze(pub Duration);

impl std::fmt::Display for Snooze {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "snoozed for {:?}", self.0)
    }
}

impl std::error::Error for Snooze {}

/// Returned by a processor (`Err(Cancel("reason".into()).into())`): stop the task for good,
/// without further attempts. It ends [`TaskStatus::Cancelled`](crate::TaskStatus::Cancelled),
/// retained as its queue's retention keeps failed tasks, with the reason as its error.
///
/// It works with the same error types as [`Snooze`]: [`BoxError`], an application error
/// that holds it as its source, and [`backlite::Error`](crate::Error) (through its
/// `From<Cancel>`); not `anyhow::Error`.
///
/// ```
/// use backlite::{BoxError, Cancel, Task, processor};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Task)]
/// #[queue(name = "reminders")]
/// struct Reminder { user: u64 }
///
/// # fn account_closed(_: u64) -> bool { false }
/// #[processor]
/// async fn remind(task: Reminder) -> Result<(), BoxError> {
///     if account_closed(task.user) {
///         return Err(Cancel("the account was closed".into()).into());
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel(pub String);

impl std::fmt::Display for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cancelled: {}", self.0)
    }
}

impl std::error::Error for Cancel {}

/// What a processor's error asks for, when it is not a plain failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Directive {
    Snooze(Duration),
    Cancel(String),
}

impl Directive {
    /// The first [`Snooze`] or [`Cancel`] in `error` or its chain of sources.
    pub(crate) fn find(error: &BoxError) -> Option<Directive> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
        while let Some(error) = current {
            if let Some(Snooze(delay)) = error.downcast_ref::<Snooze>() {
                return Some(Directive::Snooze(*delay));
            }
            if let Some(Cancel(reason)) = error.downcast_ref::<Cancel>() {
                return Some(Directive::Cancel(reason.clone()));
            }
            // Transparent variants: their source is the wrapped value's source.
            match error.downcast_ref::<crate::Error>() {
                Some(crate::Error::Snooze(Snooze(delay))) => {
                    return Some(Directive::Snooze(*delay));
                }
                Some(crate::Error::Cancel(Cancel(reason))) => {
                    return Some(Directive::Cancel(reason.clone()));
                }
                _ => {}
            }
            current = error.source();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Cancel, Directive, Snooze};
    use crate::processor::BoxError;

    #[derive(Debug, thiserror::Error)]
    enum AppError {
        #[error("waiting")]
        Wait(#[from] Snooze),
        #[error("io")]
        Io(#[from] std::io::Error),
    }

    #[test]
    fn found_directly_and_through_sources_not_through_other_errors() {
        let boxed: BoxError = Snooze(Duration::from_secs(3)).into();
        assert_eq!(
            Directive::find(&boxed),
            Some(Directive::Snooze(Duration::from_secs(3)))
        );
        let boxed: BoxError = Cancel("gone".into()).into();
        assert_eq!(
            Directive::find(&boxed),
            Some(Directive::Cancel("gone".into()))
        );
        let app: BoxError = AppError::from(Snooze(Duration::from_millis(5))).into();
        assert_eq!(
            Directive::find(&app),
            Some(Directive::Snooze(Duration::from_millis(5)))
        );
        let plain: BoxError = AppError::from(std::io::Error::other("disk")).into();
        assert_eq!(Directive::find(&plain), None);
        let ours: BoxError = crate::Error::from(Cancel("stale".into())).into();
        assert_eq!(
            Directive::find(&ours),
            Some(Directive::Cancel("stale".into()))
        );
        // What the documentation says: anyhow's box hides the value it wraps.
        let through_anyhow: BoxError = anyhow::Error::from(Snooze(Duration::ZERO)).into();
        assert_eq!(Directive::find(&through_anyhow), None);
    }
}
