#![doc = include_str!("../../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
mod client;
mod clock;
mod control;
mod database;
mod directive;
mod dispatcher;
mod error;
mod events;
mod explain;
mod inspect;
mod maintenance;
pub mod metrics;
pub(crate) mod periodic;
mod processes;
mod processor;
// Shared with `backlite-macros`, which compiles the same file; only the queue-name rule is
// used here, to check hand-written `Task` impls again.
#[allow(
    dead_code,
    reason = "the duration parser serves the macros and the `cli` feature only"
)]
mod rules;
mod save_in;
mod schema;
mod state;
mod storage;
mod task;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "ui")]
#[cfg_attr(docsrs, doc(cfg(feature = "ui")))]
pub mod ui;
mod unique;
mod utc;

pub use backlite_macros::{Task, processor, processors};
pub use client::{AddTasks, Client, ClientBuilder};
pub use control::{Purge, QueueInfo};
pub use directive::{Cancel, Snooze};
pub use error::{Error, Result};
pub use events::TaskEvent;
pub use explain::{Claimer, Explanation};
pub use inspect::{
    AttemptError, Lease, ListState, ParseTaskCursorError, TaskCursor, TaskInfo, TaskList, TaskPage,
    TaskSummary,
};
pub use periodic::{CatchUp, Schedule};
pub use processor::{BoxError, Context, Processor, Registry};
pub use save_in::SaveIn;
pub use schema::SchemaStatus;
pub use state::{State, StateType};
#[cfg(feature = "postgres")]
pub use storage::postgres::SaveInWakeup;
pub use storage::sqlite::Synchronous;
pub use storage::{ProcessId, ProcessInfo, QueueStats};
pub use task::{
    Backoff, ParseTaskIdError, QueueConfig, QueueConfigBuilder, RetainData, Retention, Task,
    TaskId, TaskStatus,
};
pub use unique::Saved;

/// The SQLite bindings backlite uses, for [`AddTasks::save_in`] with the same version.
///
/// backlite accepts rusqlite 0.32 to 0.43, so that it links the same SQLite as the
/// application's sqlx, diesel or rusqlite: cargo picks the rusqlite whose `libsqlite3-sys` is
/// theirs. An application on rusqlite itself then shares this crate, except that 0.42 and
/// 0.43 link the same `libsqlite3-sys`: with `rusqlite = "0.42"`, run
/// `cargo update -p rusqlite@0.43.0 --precise 0.42.0` to have one.
pub use rusqlite;

/// The sqlx backlite uses, for [`AddTasks::save_in`] with the same version.
#[cfg(any(feature = "sqlx-sqlite", feature = "sqlx-postgres"))]
pub use sqlx;

/// The PostgreSQL client backlite uses, for [`AddTasks::save_in`] with the same version.
#[cfg(feature = "postgres")]
pub use tokio_postgres;

#[doc(hidden)]
pub use processor::__private;

/// A boxed, sendable future: what storage operations and processor attempts return.
pub(crate) type BoxFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;
