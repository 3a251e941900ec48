//! Processors, the registry the dispatcher consults, and the context a processor runs with.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::BoxFuture;
use crate::client::Client;
use crate::task::{QueueConfig, Task, TaskId};

/// The error a processor returns, boxed so that any error type (and `anyhow::Error`) works.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Runs the tasks of one queue. Implemented by `#[processor]` on an `async fn`:
///
/// ```
/// use backlite::{Context, Task, processor};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Task)]
/// #[queue(name = "resize_image", max_attempts = 3)]
/// struct ResizeImage { path: String }
///
/// #[processor]
/// async fn resize(ctx: Context, task: ResizeImage) -> Result<(), std::io::Error> {
///     println!("attempt {} of {}", ctx.attempt(), task.path);
///     Ok(())
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a backlite processor",
    label = "not a processor",
    note = "annotate an `async fn` with `#[backlite::processor]` and list that function here"
)]
pub trait Processor: 'static {
    /// The task type this processor runs; its queue is `<Self::Task as Task>::CONFIG`.
    type Task: Task;

    /// Runs one attempt of `task`.
    fn process(
        ctx: Context,
        task: Self::Task,
    ) -> impl Future<Output = Result<(), BoxError>> + Send + 'static;
}

/// One attempt's future, or the reason its payload could not be decoded.
pub(crate) type Attempt = Result<BoxFuture<Result<(), BoxError>>, serde_json::Error>;

/// A processor with its task type erased: what the registry stores per queue.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) config: QueueConfig,
    pub(crate) start: fn(Context, &[u8]) -> Attempt,
}

fn start<P: Processor>(ctx: Context, payload: &[u8]) -> Attempt {
    let task: P::Task = serde_json::from_slice(payload)?;
    Ok(Box::pin(P::process(ctx, task)))
}

/// The processors of one client, keyed by queue name. Built by `processors![..]`.
///
/// ```
/// # use backlite::{Context, Task, processor, processors};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Task)]
/// # #[queue(name = "emails")]
/// # struct Email { to: String }
/// # #[processor]
/// # async fn send_email(task: Email) -> Result<(), std::io::Error> { Ok(()) }
/// let registry = processors![send_email];
/// assert_eq!(registry.queues().collect::<Vec<_>>(), ["emails"]);
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    /// Sorted by queue name, so lookups are a binary search and listings are stable.
    entries: Arc<[Entry]>,
}

impl Registry {
    /// The queue names served, in name order.
    pub fn queues(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|e| e.config.name())
    }

    /// The configuration of a served queue.
    pub fn config(&self, queue: &str) -> Option<&QueueConfig> {
        self.entry(queue).map(|e| &e.config)
    }

    pub(crate) fn entry(&self, queue: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.config.name().cmp(queue))
            .ok()
            .map(|i| &self.entries[i])
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks the configurations again, for `Task` impls written by hand, and for duplicate
    /// queues that a hand-built registry could hold.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for pair in self.entries.windows(2) {
            if pair[0].config.name() == pair[1].config.name() {
                return Err(format!(
                    "two processors are registered for queue `{}`",
                    pair[0].config.name()
                ));
            }
        }
        self.entries.iter().try_for_each(|e| e.config.validate())
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.queues()).finish()
    }
}

/// What a processor knows about the attempt it runs.
#[derive(Clone)]
pub struct Context {
    pub(crate) client: Client,
    pub(crate) task_id: TaskId,
    pub(crate) queue: &'static str,
    pub(crate) attempt: u32,
    pub(crate) cancel: CancellationToken,
}

impl Context {
    /// The client that runs this task, for adding further tasks.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The id of the running task.
    pub fn task_id(&self) -> TaskId {
        self.task_id
    }

    /// The queue of the running task.
    pub fn queue(&self) -> &'static str {
        self.queue
    }

    /// Which attempt this is, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the attempt has been asked to stop: its timeout elapsed or the client is
    /// stopping. A processor that finds this true should return soon; one that runs past its
    /// timeout is dropped at its next `.await`.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the attempt is asked to stop (see [`Context::is_cancelled`]).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("task_id", &self.task_id)
            .field("queue", &self.queue)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// Support for macro expansions. Not public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use core::time::Duration;
    pub use serde;

    use std::future::Future;

    use super::{BoxError, Context, Entry, Processor, Registry};

    /// The registry entry of processor `P`.
    #[derive(Clone, Copy)]
    pub struct RegistryEntry(pub(crate) Entry);

    /// A `const fn`, so that `processors![..]` builds its entries once, in a constant, and
    /// checks their queues from there: each path is then named once and, when it is not a
    /// processor, reported once.
    pub const fn entry<P: Processor>() -> RegistryEntry {
        RegistryEntry(Entry {
            config: <P::Task as crate::Task>::CONFIG,
            start: super::start::<P>,
        })
    }

    /// The queue of each entry, for `assert_distinct_queues`.
    pub const fn queue_names<const N: usize>(entries: &[RegistryEntry; N]) -> [&'static str; N] {
        let mut names = [""; N];
        let mut i = 0;
        while i < N {
            names[i] = entries[i].0.config.name();
            i += 1;
        }
        names
    }

    /// Builds the registry; queues were checked to be distinct by `assert_distinct_queues`.
    pub fn registry<const N: usize>(entries: [RegistryEntry; N]) -> Registry {
        let mut entries: Vec<Entry> = entries.into_iter().map(|e| e.0).collect();
        entries.sort_by(|a, b| a.config.name().cmp(b.config.name()));
        Registry {
            entries: entries.into(),
        }
    }

    /// What `#[processor]` passes the first of two arguments through: implemented only for
    /// [`Context`], so any other type is reported at the argument, in these words.
    #[diagnostic::on_unimplemented(
        message = "the first argument of a processor must be `backlite::Context`, not `{Self}`",
        label = "expected `backlite::Context`",
        note = "a processor takes `(task: T)` or `(ctx: backlite::Context, task: T)`"
    )]
    pub trait ContextArg {
        fn from_context(ctx: Context) -> Self;
    }

    impl ContextArg for Context {
        fn from_context(ctx: Context) -> Self {
            ctx
        }
    }

    /// What `#[processor]` passes the function's result through: implemented only for
    /// `Result<(), E>` with an error the dispatcher can record, so any other return type is
    /// reported at the return type, in these words.
    #[diagnostic::on_unimplemented(
        message = "a processor must return `Result<(), E>`, not `{Self}`",
        label = "expected `Result<(), E>` where `E: Into<backlite::BoxError>`",
        note = "`Result<(), E>` for any `E: std::error::Error + Send + Sync + 'static`, \
                `std::io::Result<()>` and `anyhow::Result<()>` all work"
    )]
    pub trait ProcessorOutput {
        fn into_result(self) -> Result<(), BoxError>;
    }

    impl<E: Into<BoxError>> ProcessorOutput for Result<(), E> {
        fn into_result(self) -> Result<(), BoxError> {
            self.map_err(Into::into)
        }
    }

    /// Passes a processor's future through unchanged, checking that it is `Send`: spanned at
    /// the function's name, the compiler's explanation (which value is held across which
    /// `.await`) then starts there. The declared `+ Send` keeps the failure from showing up a
    /// second time in the generated `Processor::process`.
    pub fn assert_send<F: Future + Send>(future: F) -> impl Future<Output = F::Output> + Send {
        future
    }

    const fn str_eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Stops compilation when two processors of one `processors![..]` serve the same queue,
    /// naming the queue.
    pub const fn assert_distinct_queues(names: &[&str]) {
        let mut i = 0;
        while i < names.len() {
            let mut j = i + 1;
            while j < names.len() {
                if str_eq(names[i], names[j]) {
                    duplicate_queue(names[i]);
                }
                j += 1;
            }
            i += 1;
        }
    }

    const fn duplicate_queue(name: &str) -> ! {
        const HEAD: &[u8] = b"two processors are registered for queue `";
        const TAIL: &[u8] = b"`; each queue takes exactly one processor";
        // Queue names are at most 100 ASCII bytes, so the message fits; a name that does not
        // is reported without the name.
        let mut buf = [0u8; 256];
        let name = name.as_bytes();
        if HEAD.len() + name.len() + TAIL.len() > buf.len() {
            panic!("two processors are registered for the same queue");
        }
        let mut len = 0;
        let parts: [&[u8]; 3] = [HEAD, name, TAIL];
        let mut p = 0;
        while p < parts.len() {
            let mut k = 0;
            while k < parts[p].len() {
                buf[len] = parts[p][k];
                len += 1;
                k += 1;
            }
            p += 1;
        }
        let (message, _) = buf.split_at(len);
        match core::str::from_utf8(message) {
            Ok(message) => panic!("{}", message),
            Err(_) => panic!("two processors are registered for the same queue"),
        }
    }
}
