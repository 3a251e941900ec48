//! The generated code raises no warning, even under lints that are off by default.

#![deny(warnings, missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unused_qualifications, unused_results, trivial_casts, trivial_numeric_casts)]
#![deny(single_use_lifetimes, unused_lifetimes, elided_lifetimes_in_paths, let_underscore_drop)]
#![deny(unsafe_code, variant_size_differences, meta_variable_misuse, unused_import_braces)]

use backlite::{Context, Task, processor, processors};
use serde::{Deserialize, Serialize};

/// A documented task.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "strict", max_attempts = 2, backoff = exponential(base = "1s", cap = "1m"),
        timeout = "1s", retention(duration = "1h", data))]
pub struct Strict {
    /// A field.
    pub id: u64,
}

/// A documented processor.
#[processor]
pub async fn strict(ctx: Context, task: Strict) -> Result<(), std::io::Error> {
    let _attempt = (ctx.attempt(), task.id);
    Ok(())
}

mod private {
    use super::*;

    #[processor]
    pub(crate) async fn private_strict(_task: Strict) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {
    let registry = processors![strict];
    assert_eq!(registry.queues().count(), 1);
    let other = processors![private::private_strict];
    assert_eq!(other.queues().count(), 1);
}
