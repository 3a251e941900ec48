#![doc = include_str!("../../README.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod error;
mod processor;
pub mod rules;
mod task;

pub use backlite_macros::{Task, processor, processors};
pub use client::Client;
pub use error::{Error, Result};
pub use processor::{BoxError, Context, Processor, Registry};
pub use task::{
    Backoff, ParseTaskIdError, QueueConfig, QueueConfigBuilder, RetainData, Retention, Task,
    TaskId, TaskStatus,
};

#[doc(hidden)]
pub use processor::__private;
