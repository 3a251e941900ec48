#![doc = include_str!("../../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod database;
mod dispatcher;
mod error;
mod maintenance;
mod processor;
pub mod rules;
mod save_in;
mod storage;
mod task;
#[cfg(feature = "ui")]
pub mod ui;

pub use backlite_macros::{Task, processor, processors};
pub use client::{AddTasks, Client, ClientBuilder};
pub use error::{Error, Result};
pub use processor::{BoxError, Context, Processor, Registry};
pub use save_in::SaveIn;
pub use storage::QueueStats;
#[cfg(feature = "postgres")]
pub use storage::postgres::SaveInWakeup;
pub use storage::sqlite::Synchronous;
pub use task::{
    Backoff, ParseTaskIdError, QueueConfig, QueueConfigBuilder, RetainData, Retention, Task,
    TaskId, TaskStatus,
};

/// The SQLite bindings backlite uses, for [`AddTasks::save_in`] with the same version.
pub use rusqlite;

/// The PostgreSQL client backlite uses, for [`AddTasks::save_in`] with the same version.
#[cfg(feature = "postgres")]
pub use tokio_postgres;

#[doc(hidden)]
pub use processor::__private;

/// A boxed, sendable future: what storage operations and processor attempts return.
pub(crate) type BoxFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;
