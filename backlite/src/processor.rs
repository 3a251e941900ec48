//! Processors, the registry the dispatcher consults, and the context a processor runs with.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::BoxFuture;
use crate::client::Client;
use crate::state::StateType;
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

    /// The application state types this processor reads (see [`State`](crate::State)):
    /// [`ClientBuilder::build`](crate::ClientBuilder::build) fails unless the builder received
    /// a value of each. `#[processor]` lists its `State<T>` arguments; the default is none.
    /// A processor written by hand that calls [`Context::state`] lists the types it needs.
    fn states() -> Vec<StateType> {
        Vec::new()
    }
}

/// One attempt's future, or the reason its payload could not be decoded.
pub(crate) type Attempt = Result<BoxFuture<Result<(), BoxError>>, serde_json::Error>;

/// A processor with its task type erased: what the registry stores per queue.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) config: QueueConfig,
    pub(crate) start: fn(Context, &[u8]) -> Attempt,
    /// The processor's path (`std::any::type_name`), for configuration errors.
    pub(crate) name: fn() -> &'static str,
    pub(crate) states: fn() -> Vec<StateType>,
    /// The task's own schedule, from `#[queue(.., periodic(..))]`.
    pub(crate) periodic: Option<__private::PeriodicSpec>,
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

    /// The schedules of the served tasks that have `periodic(..)` in their `#[queue(..)]`.
    pub(crate) fn periodic(
        &self,
    ) -> impl Iterator<Item = (&'static str, __private::PeriodicSpec)> + '_ {
        self.entries
            .iter()
            .filter_map(|e| e.periodic.map(|spec| (e.config.name(), spec)))
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

    /// Each state type a processor needs: `(processor path, queue, state type)`.
    pub(crate) fn states(&self) -> impl Iterator<Item = (&'static str, &'static str, StateType)> {
        self.entries.iter().flat_map(|e| {
            let (name, queue) = ((e.name)(), e.config.name());
            (e.states)().into_iter().map(move |ty| (name, queue, ty))
        })
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.queues()).finish()
    }
}

/// What a processor knows about the attempt it runs.
///
/// What follows the attempt is decided by what the processor returns: `Ok(())` succeeds, an
/// error fails the attempt (retried while attempts remain), [`Snooze`](crate::Snooze) runs
/// the task again later without counting the attempt, and [`Cancel`](crate::Cancel) ends it
/// cancelled with no further attempt. Snooze and cancel reach the executor through the
/// processor's error type when that is [`BoxError`], [`backlite::Error`](crate::Error), or an
/// error of the application that holds them as its `source()`; not through `anyhow::Error`.
///
/// ```
/// use std::time::Duration;
///
/// use backlite::{BoxError, Cancel, Context, Snooze, Task, processor};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Task)]
/// #[queue(name = "webhooks", max_attempts = 5)]
/// struct Webhook { url: String }
///
/// # enum Reply { Delivered, RateLimited(Duration), Gone }
/// # async fn deliver(_: &str) -> Reply { Reply::Delivered }
/// #[processor]
/// async fn call(ctx: Context, task: Webhook) -> Result<(), BoxError> {
///     match deliver(&task.url).await {
///         Reply::Delivered => Ok(()),
///         // The receiver asks us to wait: not a failure, attempt `ctx.attempt()` again later.
///         Reply::RateLimited(wait) => Err(Snooze(wait).into()),
///         // Nobody is listening any more: no point in the four attempts left.
///         Reply::Gone => Err(Cancel(format!("{} is gone", task.url)).into()),
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Context {
    pub(crate) client: Client,
    pub(crate) task_id: TaskId,
    pub(crate) queue: &'static str,
    pub(crate) attempt: u32,
    /// The claim's fencing number.
    pub(crate) fence: u64,
    pub(crate) cancel: CancellationToken,
}

impl Context {
    /// The client that runs this task, for adding further tasks. It (and any clone of it)
    /// does not keep the client running: once the application has dropped its own handles,
    /// the client stops (see [`Client`]).
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

    /// The fencing number of this attempt's claim: it grows with every claim of the task, so
    /// a later attempt (this one's lease lost, the task claimed again) always carries a
    /// larger one.
    ///
    /// backlite refuses the outcome of an attempt whose claim is no longer current, but the
    /// processor's own side effects are its own to guard. Send the fence along with each write
    /// to a store that keeps, per task id, the largest fence it has seen, and refuses a write
    /// carrying a smaller one: a process that froze past its lease and wakes up then cannot
    /// overwrite what the task's newer attempt wrote.
    ///
    /// ```
    /// # use backlite::{Context, Task, processor};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, Task)]
    /// # #[queue(name = "invoices")]
    /// # struct Invoice { number: u64 }
    /// # fn store_pdf(number: u64, pdf: &[u8], fence: u64) -> std::io::Result<()> { Ok(()) }
    /// // In the store: `UPDATE pdfs SET body = ?, fence = ? WHERE number = ? AND fence <= ?`,
    /// // which changes nothing for a writer whose fence is behind.
    /// #[processor]
    /// async fn render(ctx: Context, task: Invoice) -> std::io::Result<()> {
    ///     store_pdf(task.number, b"%PDF", ctx.fence())
    /// }
    /// ```
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Whether the attempt has been asked to stop: its timeout elapsed, the client is
    /// stopping, someone asked to cancel the task, or this client lost the task's lease. A
    /// processor that finds this true should return soon; one that runs past its timeout is
    /// dropped at its next `.await`.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the attempt is asked to stop (see [`Context::is_cancelled`]).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The client's state value of type `T`, given to
    /// [`ClientBuilder::state`](crate::ClientBuilder::state); `None` when the builder did not
    /// receive one. For code that holds only a `Context`: a processor declares what it needs
    /// with [`State<T>`](crate::State) arguments instead, which `build()` checks.
    ///
    /// ```
    /// # use backlite::{Context, Task, processor};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, Task)]
    /// # #[queue(name = "report")]
    /// # struct Report;
    /// #[derive(Clone)]
    /// struct Settings { bucket: String }
    ///
    /// fn bucket(ctx: &Context) -> Option<&str> {
    ///     ctx.state::<Settings>().map(|s| s.bucket.as_str())
    /// }
    ///
    /// #[processor]
    /// async fn report(ctx: Context, _task: Report) -> Result<(), std::io::Error> {
    ///     let bucket = bucket(&ctx).unwrap_or("default");
    ///     Ok(())
    /// }
    /// ```
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.client.inner.states.get::<T>()
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

    pub use crate::unique::{UniqueBy, UniqueValue, unique_fields, unique_value};

    use std::future::Future;

    use super::{BoxError, Context, Entry, Processor, Registry};
    use crate::state::{State, StateType};

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
            name: std::any::type_name::<P>,
            states: P::states,
            periodic: <P::Task as crate::Task>::PERIODIC,
        })
    }

    /// A schedule written in `#[queue(.., periodic(..))]`, checked by the macro.
    #[derive(Debug, Clone, Copy)]
    pub struct PeriodicSpec {
        pub timing: PeriodicTiming,
        /// The task's `Default` value, serialized.
        pub payload: fn() -> Result<Vec<u8>, serde_json::Error>,
    }

    /// `every = ".."` in milliseconds, or `cron = ".."`.
    #[derive(Debug, Clone, Copy)]
    pub enum PeriodicTiming {
        EveryMillis(u64),
        Cron(&'static str),
    }

    /// What `periodic(..)` needs of its task: a value to enqueue at every tick.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` has `periodic(..)` in its `#[queue(..)]`, so it must implement `Default`",
        label = "the task enqueued at every tick is `{Self}::default()`",
        note = "derive or implement `Default` for `{Self}`, or drop `periodic(..)` and call \
                `ClientBuilder::periodic(schedule, task)` with a value"
    )]
    pub trait PeriodicDefault: crate::Task {
        fn payload() -> Result<Vec<u8>, serde_json::Error>;
    }

    impl<T: crate::Task + Default> PeriodicDefault for T {
        fn payload() -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec(&T::default())
        }
    }

    /// The queue of each entry, for `check_queues`.
    pub const fn queue_names<const N: usize>(entries: &[RegistryEntry; N]) -> [&'static str; N] {
        let mut names = [""; N];
        let mut i = 0;
        while i < N {
            names[i] = entries[i].0.config.name();
            i += 1;
        }
        names
    }

    /// Builds the registry; queues were checked to be distinct by `check_queues`.
    pub fn registry<const N: usize>(entries: [RegistryEntry; N]) -> Registry {
        let mut entries: Vec<Entry> = entries.into_iter().map(|e| e.0).collect();
        entries.sort_by(|a, b| a.config.name().cmp(b.config.name()));
        Registry {
            entries: entries.into(),
        }
    }

    /// What `#[processor]` passes its arguments other than the task through: implemented
    /// for [`Context`] and [`State<T>`], so a type that only looks like them (the application's
    /// own `Context`, say) is reported at the argument, in these words.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not an argument a processor can take",
        label = "expected `backlite::Context` or `backlite::State<T>`",
        note = "a processor takes its task and, in any order around it, any of \
                `backlite::Context` and `backlite::State<T>`"
    )]
    pub trait ProcessorArg: Sized {
        /// The argument's value for one attempt.
        fn from_context(ctx: &Context) -> Result<Self, BoxError>;

        /// The state type this argument reads, for `Processor::states`.
        fn state() -> Option<StateType>;
    }

    impl ProcessorArg for Context {
        fn from_context(ctx: &Context) -> Result<Self, BoxError> {
            Ok(ctx.clone())
        }

        fn state() -> Option<StateType> {
            None
        }
    }

    impl<T: Clone + Send + Sync + 'static> ProcessorArg for State<T> {
        fn from_context(ctx: &Context) -> Result<Self, BoxError> {
            // `build()` checked that the client has every state its processors take, so this
            // fails only for a processor run outside of its client's registry.
            match ctx.state::<T>() {
                Some(value) => Ok(State(value.clone())),
                None => Err(format!(
                    "the client has no state of type `{}`: give it to `ClientBuilder::state`",
                    std::any::type_name::<T>()
                )
                .into()),
            }
        }

        fn state() -> Option<StateType> {
            Some(StateType::of::<T>())
        }
    }

    /// The task of the stub processor that `#[processor]` emits beside its errors, so that
    /// `processors![..]` still accepts the function and reports nothing more.
    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct InvalidProcessor;

    impl crate::Task for InvalidProcessor {
        const CONFIG: crate::QueueConfig = crate::QueueConfig::builder(INVALID_QUEUE).build();
    }

    const INVALID_QUEUE: &str = "backlite_invalid_processor";

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

    /// The outcome of [`check_queues`]: the error message, if two processors share a queue.
    pub struct QueueCheck {
        message: [u8; 512],
        len: usize,
    }

    impl QueueCheck {
        /// The message that `processors![..]` stops the compilation with, if any.
        pub const fn message(&self) -> Option<&str> {
            if self.len == 0 {
                return None;
            }
            let (message, _) = self.message.split_at(self.len);
            match core::str::from_utf8(message) {
                Ok(message) => Some(message),
                // Cut inside a non-ASCII name: the message without the names.
                Err(_) => Some("two processors are registered for the same queue"),
            }
        }

        const fn push(mut self, part: &str) -> Self {
            let part = part.as_bytes();
            let mut k = 0;
            while k < part.len() && self.len < self.message.len() {
                self.message[self.len] = part[k];
                self.len += 1;
                k += 1;
            }
            self
        }
    }

    /// Checks that the processors of one `processors![..]` serve distinct queues. `queues[i]`
    /// is the queue of the processor written `paths[i]`; the message names the first two
    /// processors of a shared queue, and the queue. Processors that `#[processor]` refused
    /// are skipped: their error is already reported.
    pub const fn check_queues(queues: &[&str], paths: &[&str]) -> QueueCheck {
        let mut i = 0;
        while i < queues.len() {
            let mut j = i + 1;
            while j < queues.len() && !str_eq(queues[i], INVALID_QUEUE) {
                if str_eq(queues[i], queues[j]) {
                    let check = QueueCheck {
                        message: [0; 512],
                        len: 0,
                    };
                    return check
                        .push("`")
                        .push(paths[i])
                        .push("` and `")
                        .push(paths[j])
                        .push("` both process queue `")
                        .push(queues[i])
                        .push("`: each queue takes exactly one processor");
                }
                j += 1;
            }
            i += 1;
        }
        QueueCheck {
            message: [0; 512],
            len: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::__private::ProcessorArg;
    use super::Context;
    use crate::{Client, State, TaskId};

    fn context(client: Client) -> Context {
        Context {
            client,
            task_id: TaskId::new(),
            queue: "q",
            attempt: 1,
            fence: 1,
            cancel: CancellationToken::new(),
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    struct Db(u32);

    #[tokio::test]
    async fn state_arguments_clone_the_clients_value_or_fail_the_attempt() {
        let with = Client::builder()
            .database(":memory:")
            .state(Db(7))
            .build()
            .await
            .unwrap();
        let ctx = context(with);
        assert_eq!(ctx.state::<Db>(), Some(&Db(7)));
        let State(db) = State::<Db>::from_context(&ctx).unwrap();
        assert_eq!(db, Db(7));

        // A context whose client lacks the state (a processor run outside of the registry
        // that `build()` checked): the attempt fails, naming the type, instead of panicking.
        let without = Client::builder()
            .database(":memory:")
            .build()
            .await
            .unwrap();
        let ctx = context(without);
        assert_eq!(ctx.state::<Db>(), None);
        let error = State::<Db>::from_context(&ctx).err().unwrap();
        assert!(
            error.to_string().contains("processor::tests::Db"),
            "{error}"
        );
    }
}
