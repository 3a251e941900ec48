//! Expiry of waiting tasks: a task given an expiry (`AddTasks::expires_in`) that no claim has
//! taken by then never runs. Claims skip it from that moment; the maintenance sweep then moves
//! it, in batches, to its failed end with [`EXPIRED_ERROR`]. The SQL is in each driver's
//! `expiry.rs`.

/// The error of a task that expired before it started, in its outcome and error history.
pub(crate) const EXPIRED_ERROR: &str = "expired";

/// The most expired tasks one sweep statement ends: a sweep after a long stop finds them all
/// in a few short writes rather than one that holds the write lock for long.
pub(crate) const EXPIRE_BATCH: usize = 1_000;
