//! Running one attempt: decode, run under timeout and panic guard, decide what follows,
//! hand it to the completer.

use std::any::Any;
use std::future::Future;
use std::hash::BuildHasher;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Poll, ready};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Shared;
use super::lease::{Ending, Leases};
use crate::BoxFuture;
use crate::client::{Client, retention_expiry};
use crate::directive::Directive;
use crate::events::TaskEvent;
use crate::metrics::{self, Outcome};
use crate::processor::{BoxError, Context};
use crate::storage::{
    CANCELLED_ERROR, ClaimedTask, Completion, Millis, Next, Retain, duration_millis,
};

/// Why an attempt failed.
enum Failure {
    /// The processor returned an error.
    Error(BoxError),
    /// The processor panicked.
    Panic(String),
    /// The attempt ran past the queue's timeout and was dropped.
    TimedOut(Duration),
    /// The stored payload is not a value of the queue's task type. Retrying cannot help.
    Decode(serde_json::Error),
    /// No processor serves the claimed task's queue (a registry changed under a claim).
    NoProcessor,
}

impl Failure {
    fn retryable(&self) -> bool {
        !matches!(self, Failure::Decode(_) | Failure::NoProcessor)
    }

    fn text(&self, queue: &str) -> String {
        match self {
            Failure::Error(error) => {
                // The whole chain, as `anyhow` prints it with `{:#}`.
                let mut text = error.to_string();
                let mut source = error.source();
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                text
            }
            Failure::Panic(message) => format!("panicked: {message}"),
            Failure::TimedOut(limit) => format!("timed out after {limit:?}"),
            Failure::Decode(error) => {
                format!("payload is not a valid task of queue `{queue}`: {error}")
            }
            Failure::NoProcessor => format!("no processor serves queue `{queue}` in this client"),
        }
    }
}

pub(super) fn spawn(
    shared: &Arc<Shared>,
    task: ClaimedTask,
    slot: OwnedSemaphorePermit,
    cancel: CancellationToken,
) {
    let id = task.id;
    let token = task.token;
    // Registered before the task can finish, removed by it: the map lock orders both.
    let mut running = shared.running.lock().ok();
    let handle = shared
        .workers
        .spawn(run(shared.clone(), task, slot, cancel));
    if let Some(running) = running.as_mut() {
        running.insert(id, (handle.abort_handle(), token));
    }
}

async fn run(
    shared: Arc<Shared>,
    task: ClaimedTask,
    slot: OwnedSemaphorePermit,
    cancel: CancellationToken,
) {
    let id = task.id;
    let queue = task.queue.clone();
    let completion = attempt(&shared.client, task, cancel, Some(&shared.leases)).await;
    if let Ok(mut running) = shared.running.lock() {
        running.remove(&id);
    }
    drop(slot);
    shared.limits.release(&queue);
    shared.finished.fetch_add(1, Ordering::Relaxed);
    // Stored by the completer, with the outcomes of the tasks that finish meanwhile.
    if shared.completions.send(completion).is_err() {
        tracing::error!(task_id = %id, "could not record the task's outcome: the client has stopped; it runs again after release_after");
    }
}

/// Runs one attempt of a claimed task and decides what follows it. `cancel` is what the
/// processor's `Context` reports; `leases`, where the client holds its claims, says whether
/// someone asked to cancel the task meanwhile (it then ends cancelled, whatever the processor
/// returned).
///
/// The attempt runs in a span with the attributes of OpenTelemetry's messaging conventions,
/// so that the processor's own events nest in it and a tracing-to-OpenTelemetry layer
/// exports it as a consumer span named `process <queue>`.
pub(crate) async fn attempt(
    client: &Client,
    task: ClaimedTask,
    cancel: CancellationToken,
    leases: Option<&Leases>,
) -> Completion {
    let attempt = task.attempts.saturating_add(1);
    let span = tracing::info_span!(
        "backlite.process",
        otel.name = %format_args!("process {}", task.queue),
        otel.kind = "consumer",
        messaging.system = "backlite",
        messaging.operation = "process",
        messaging.operation.type = "process",
        messaging.destination.name = %task.queue,
        messaging.message.id = %task.id,
        attempt,
    );
    run_attempt(client, task, attempt, cancel, leases)
        .instrument(span)
        .await
}

async fn run_attempt(
    client: &Client,
    task: ClaimedTask,
    attempt: u32,
    cancel: CancellationToken,
    leases: Option<&Leases>,
) -> Completion {
    let entry = client.inner.registry.entry(&task.queue).copied();
    let queue: &str = entry.map_or(task.queue.as_str(), |e| e.config.name());
    let started = Instant::now();
    let executed_at = client.now();
    let pickup = Duration::from_millis(u64::try_from(executed_at - task.run_at).unwrap_or(0));
    metrics::attempt_started(queue, pickup);
    let hooks = &client.inner.hooks;
    hooks.emit(&TaskEvent::Started {
        task_id: task.id,
        queue,
        attempt,
    });

    let outcome = match entry {
        None => Err(Failure::NoProcessor),
        Some(entry) => {
            let ctx = Context {
                client: client.clone(),
                task_id: task.id,
                queue: entry.config.name(),
                attempt,
                fence: u64::try_from(task.token.fence).unwrap_or(0),
                cancel,
            };
            let cancel = ctx.cancel.clone();
            match (entry.start)(ctx, &task.payload) {
                Err(e) => Err(Failure::Decode(e)),
                Ok(attempt_future) => {
                    let mut guarded = CatchUnwind {
                        attempt: attempt_future,
                        busy: Duration::ZERO,
                    };
                    let result = match entry.config.timeout() {
                        Some(limit) => match tokio::time::timeout(limit, &mut guarded).await {
                            // A processor that blocks its thread cannot be dropped at an
                            // `.await` it never reaches, but its late success is no success.
                            Ok(Ok(Ok(()))) if started.elapsed() > limit => {
                                tracing::warn!(
                                    task_id = %task.id,
                                    queue,
                                    attempt,
                                    duration = ?started.elapsed(),
                                    blocked = ?guarded.busy,
                                    timeout = ?limit,
                                    "the processor returned after its timeout: it blocked its \
                                     thread, which a timeout cannot interrupt, so the attempt \
                                     counts as timed out; run blocking code with \
                                     `tokio::task::spawn_blocking`"
                                );
                                Err(Failure::TimedOut(limit))
                            }
                            Ok(result) => result,
                            Err(_) => {
                                // The future is dropped here; the token tells anything the
                                // processor spawned with its context.
                                cancel.cancel();
                                Err(Failure::TimedOut(limit))
                            }
                        },
                        None => guarded.await,
                    };
                    result.and_then(|r| r.map_err(Failure::Error))
                }
            }
        }
    };
    let duration = started.elapsed();
    let ending = leases.map_or(Ending::AsItReturned, |l| l.finish(task.id, task.token));
    if ending == Ending::Lost {
        // The outcome would be refused: no hook or metric reports it as the task's.
        tracing::warn!(
            task_id = %task.id,
            queue,
            attempt,
            ?duration,
            "the attempt ended after its lease was lost; its outcome is not recorded"
        );
        // Sent all the same, and refused by its claim's token: nothing waits on it, and no
        // counter counts it.
        return Completion {
            id: task.id,
            queue: None,
            token: task.token,
            executed_at,
            duration,
            error: None,
            next: Next::Done {
                retain: None,
                cancelled: false,
            },
        };
    }
    let ended = Ended {
        queue,
        attempt,
        executed_at,
        duration,
    };
    if ending == Ending::Cancelled {
        return ended.cancelled(client, &task, CANCELLED_ERROR);
    }

    // A snooze or a cancel that the processor returned, found in its error.
    let directive = match &outcome {
        Err(Failure::Error(error)) => Directive::find(error),
        _ => None,
    };
    match directive {
        Some(Directive::Snooze(delay)) => {
            tracing::info!(task_id = %task.id, queue, attempt, ?duration, snooze = ?delay, "task snoozed");
            hooks.emit(&TaskEvent::Snoozed {
                task_id: task.id,
                queue,
                attempt,
                duration,
                snooze: delay,
            });
            return Completion {
                id: task.id,
                queue: entry.map(|e| e.config.name()),
                token: task.token,
                executed_at,
                duration,
                error: None,
                next: Next::Snooze {
                    run_at: client.now().saturating_add(duration_millis(delay)),
                },
            };
        }
        Some(Directive::Cancel(reason)) => return ended.cancelled(client, &task, &reason),
        None => {}
    }

    let config = entry.map(|e| e.config);
    let max_attempts = config.map_or(1, |c| c.max_attempts());
    let retention = config.and_then(|c| c.retention());
    let now = client.now();
    let (next, error) = match &outcome {
        Ok(()) => {
            tracing::debug!(task_id = %task.id, queue, attempt, ?duration, "task succeeded");
            metrics::attempt_finished(queue, Outcome::Succeeded, duration);
            hooks.emit(&TaskEvent::Succeeded {
                task_id: task.id,
                queue,
                attempt,
                duration,
            });
            let retain = retention.and_then(|r| {
                r.keeps(true).map(|payload| Retain {
                    payload,
                    expires_at: retention_expiry(r.duration, now),
                })
            });
            (
                Next::Done {
                    retain,
                    cancelled: false,
                },
                None,
            )
        }
        Err(failure) if failure.retryable() && attempt < max_attempts => {
            let text = failure.text(queue);
            let backoff = config.map(|c| c.backoff()).unwrap_or(crate::Backoff::NONE);
            let entropy =
                std::collections::hash_map::RandomState::new().hash_one((task.id, attempt));
            let wait = backoff.delay(attempt, entropy);
            tracing::warn!(task_id = %task.id, queue, attempt, ?duration, error = %text, retry_in = ?wait, "task failed; will retry");
            metrics::attempt_finished(queue, Outcome::Retried, duration);
            hooks.emit(&TaskEvent::Retried {
                task_id: task.id,
                queue,
                attempt,
                duration,
                error: &text,
                retry_in: wait,
            });
            (
                Next::Retry {
                    run_at: now.saturating_add(duration_millis(wait)),
                },
                Some(text),
            )
        }
        Err(failure) => {
            let text = failure.text(queue);
            tracing::error!(task_id = %task.id, queue, attempt, ?duration, error = %text, "task failed");
            metrics::attempt_finished(queue, Outcome::Failed, duration);
            hooks.emit(&TaskEvent::Failed {
                task_id: task.id,
                queue,
                attempt,
                duration,
                error: &text,
            });
            let retain = match failure {
                // A payload nothing can read is kept whatever the retention: deleting it
                // would lose the only copy of the data.
                Failure::Decode(_) | Failure::NoProcessor => Some(Retain {
                    payload: true,
                    expires_at: retention.and_then(|r| retention_expiry(r.duration, now)),
                }),
                _ => retention.and_then(|r| {
                    r.keeps(false).map(|payload| Retain {
                        payload,
                        expires_at: retention_expiry(r.duration, now),
                    })
                }),
            };
            (
                Next::Done {
                    retain,
                    cancelled: false,
                },
                Some(text),
            )
        }
    };
    Completion {
        id: task.id,
        queue: entry.map(|e| e.config.name()),
        token: task.token,
        executed_at,
        duration,
        error,
        next,
    }
}

/// The end of a task that someone asked to cancel, or whose processor returned a
/// [`Cancel`](crate::Cancel): done, no retry, kept as a failed task of its queue would be,
/// with `error` saying why.
/// An attempt that has ended, as its report names it.
struct Ended<'q> {
    queue: &'q str,
    attempt: u32,
    executed_at: Millis,
    duration: Duration,
}

impl Ended<'_> {
    /// Ends the task cancelled, by `Client::cancel` or by its processor: reported as a failed
    /// attempt whose error is `reason`, kept as its queue keeps failed tasks, never retried.
    fn cancelled(&self, client: &Client, task: &ClaimedTask, reason: &str) -> Completion {
        let Ended {
            queue,
            attempt,
            executed_at,
            duration,
        } = *self;
        tracing::info!(task_id = %task.id, queue, attempt, ?duration, reason, "task cancelled");
        metrics::attempt_finished(queue, Outcome::Failed, duration);
        client.inner.hooks.emit(&TaskEvent::Failed {
            task_id: task.id,
            queue,
            attempt,
            duration,
            error: reason,
        });
        cancelled(client, task, executed_at, duration, reason)
    }
}

pub(super) fn cancelled(
    client: &Client,
    task: &ClaimedTask,
    executed_at: Millis,
    duration: Duration,
    error: &str,
) -> Completion {
    let now = client.now();
    let retention = client
        .inner
        .registry
        .config(&task.queue)
        .and_then(|c| c.retention());
    let retain = retention.and_then(|r| {
        r.keeps(false).map(|payload| Retain {
            payload,
            expires_at: retention_expiry(r.duration, now),
        })
    });
    Completion {
        id: task.id,
        queue: client
            .inner
            .registry
            .entry(&task.queue)
            .map(|e| e.config.name()),
        token: task.token,
        executed_at,
        duration,
        error: Some(error.to_owned()),
        next: Next::Done {
            retain,
            cancelled: true,
        },
    }
}

/// Turns a panic while polling the attempt into a failure of that attempt, so the worker
/// (and the dispatcher) carry on.
struct CatchUnwind {
    attempt: BoxFuture<Result<(), BoxError>>,
    /// Time spent inside the processor's `poll`, where nothing can interrupt it: what a
    /// processor that blocks its thread spends there shows in the warning about it.
    busy: Duration,
}

impl Future for CatchUnwind {
    type Output = Result<Result<(), BoxError>, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let start = Instant::now();
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| self.attempt.as_mut().poll(cx)));
        self.busy += start.elapsed();
        Poll::Ready(match polled {
            Ok(poll) => Ok(ready!(poll)),
            Err(payload) => Err(Failure::Panic(panic_message(payload))),
        })
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "a panic with a non-string payload".to_owned(),
        },
    }
}
