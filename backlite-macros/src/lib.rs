//! The macros of backlite: `#[derive(Task)]`, `#[processor]` and `processors![..]`.
//!
//! Use them through the `backlite` crate, which re-exports them and documents them. They only
//! generate implementations of `backlite`'s traits; every name in the generated code is a full
//! path under `::backlite` or `::core`, so the user's own `Result`, `Task` or `Duration` do not
//! get in the way.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod processor;
mod registry;
mod similar;
mod valid;

// The duration grammar and queue-name rules are the runtime's own `rules.rs`: this crate
// cannot depend on `backlite` (which depends on it). `src/rules.rs` is a symlink to that file,
// so both crates compile the same source and `cargo package` ships its contents here.
mod rules;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `backlite::Task`: the type's queue and how its tasks run, from `#[queue(..)]`.
///
/// ```text
/// #[derive(Serialize, Deserialize, Task)]
/// #[queue(
///     name = "new_order_email",      // required: the queue, stable across renames of the type
///     max_attempts = 5,              // runs before the task counts as failed; default 1
///     backoff = "5s",                // wait before a retry; default none
///  // backoff = exponential(base = "1s", cap = "10m", jitter),
///     timeout = "10s",               // longest attempt; default none
///     retention(duration = "6h", only_failed, data(only_failed)),  // default: keep nothing
///     periodic(every = "5m"),        // enqueue `Self::default()` every 5 minutes; default none
///  // periodic(cron = "0 */5 * * * *"),
///     priority = 5,                  // -32768 to 32767, higher runs first; default 0
///     unique(by = [order_id], for = "1h"),  // one task per order at a time, and 1h after
/// )]
/// struct NewOrderEmail { order_id: String }
/// ```
///
/// - **Durations** are strings of `<number><unit>` pairs, units `d h m s ms` largest first:
///   `"500ms"`, `"1m30s"`, `"7d"`. Zero is refused: leave the key out instead.
/// - **Queue names** are 1 to 100 ASCII letters, digits and `_ - . :`.
/// - **`retention`** keeps completed tasks (their outcome, without payload, until deleted);
///   `duration` deletes them after that long, `only_failed` keeps only failed ones, `data`
///   keeps the payload too and `data(only_failed)` only that of failed tasks.
/// - **Flags** (`jitter`, `only_failed`) are written alone or as `flag = true|false`.
/// - **`periodic`** gives the task its own schedule: `every` a duration (ticks at its multiples
///   since the Unix epoch) or `cron` an expression (five fields, or six with the second first,
///   in UTC), checked here with the runtime's parser. The type must implement `Default`: a
///   client serving the queue enqueues `Self::default()` at every tick, once across processes.
/// - **`unique`** makes equal tasks one: an add of a task equal to one waiting, scheduled or
///   running (or succeeded less than `for` ago) stores nothing and returns the existing id.
///   Equal means the same payload, or with `by = [..]` the same values of the named fields
///   (of a struct with named fields; each must exist). `unique` alone holds only while a task
///   waits or runs.
///
/// Works on structs and enums without generic parameters. Every mistake is reported at once,
/// at its own token; the type then still implements `Task` (with a placeholder queue), so
/// that its other uses do not add errors.
#[proc_macro_derive(Task, attributes(queue))]
pub fn derive_task(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}

/// Makes an `async fn` the processor of its task type's queue.
///
/// ```text
/// #[processor]
/// async fn send_order_email(ctx: Context, task: NewOrderEmail) -> Result<(), MailError> { .. }
///
/// #[processor]
/// async fn resize(task: ResizeImage) -> anyhow::Result<()> { .. }
///
/// #[processor]
/// async fn receipt(task: Receipt, State(db): State<Db>, ctx: Context) -> Result<(), DbError> { .. }
/// ```
///
/// The function takes the task and, in any order around it, `backlite::Context` and
/// `backlite::State<T>` arguments. These are told apart from the task by the last name of
/// their type's path (an alias of either would be taken for the task). It returns
/// `Result<(), E>` for any `E: Into<backlite::BoxError>`; its future must be `Send`. It stays
/// as written, callable directly (in unit tests, say). Next to it the macro adds a hidden type
/// of the same name (a braced struct lives only in the type namespace, so the two do not
/// clash) that implements `backlite::Processor`; list the function in `processors![..]`.
///
/// Besides failing, a processor can steer its task through its `Err`:
/// `Err(backlite::Snooze(duration).into())` runs it again after `duration` without counting
/// the attempt, and `Err(backlite::Cancel("reason".into()).into())` ends it cancelled, with no
/// further attempt. Both work when `E` is `backlite::BoxError`, `backlite::Error`, or an error
/// type of the application that holds them as its `source()` (a `#[from]` variant with
/// `thiserror`); not through `anyhow::Error`, whose box hides the value it wraps.
#[proc_macro_attribute]
pub fn processor(args: TokenStream, input: TokenStream) -> TokenStream {
    processor::expand(&args.into(), &input.into()).into()
}

/// Builds the `backlite::Registry` of the listed processors: `processors![send_order_email,
/// jobs::resize]`.
///
/// Each entry is the path of a `#[processor]` function. Two processors of the same queue stop
/// the compilation with an error naming both and the queue. A function without
/// `#[processor]` is refused by the compiler itself, as error E0747 "constant provided when a
/// type was expected": only the attribute gives the function's name a type to list.
#[proc_macro]
pub fn processors(input: TokenStream) -> TokenStream {
    registry::expand(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
