#![doc = include_str!("../../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod clock;
mod dispatcher;
mod error;
mod events;
mod maintenance;
pub mod metrics;
mod processor;
pub mod rules;
mod storage;
mod task;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "ui")]
pub mod ui;

pub use backlite_macros::{Task, processor, processors};
pub use client::{AddTasks, Client, ClientBuilder};
pub use error::{Error, Result};
pub use events::TaskEvent;
pub use processor::{BoxError, Context, Processor, Registry};
pub use storage::QueueStats;
pub use storage::sqlite::Synchronous;
pub use task::{
    Backoff, ParseTaskIdError, QueueConfig, QueueConfigBuilder, RetainData, Retention, Task,
    TaskId, TaskStatus,
};

/// The SQLite bindings backlite uses, for [`AddTasks::save_in`] with the same version.
pub use rusqlite;

#[doc(hidden)]
pub use processor::__private;
