//! The error type of every fallible backlite call.

use std::time::Duration;

use crate::processor::BoxError;

/// What went wrong in a backlite call. A processor's own error is not one of these: it is
/// recorded as the task's error text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder setting is out of range, or a queue configuration breaks its rules.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The database could not be opened or created at this path.
    #[error("cannot open database `{path}`: {source}")]
    Open {
        /// The path given to the builder.
        path: String,
        /// What the database engine reported.
        #[source]
        source: BoxError,
    },

    /// The file exists but is not an SQLite database.
    #[error("`{path}` is not an SQLite database (or it is encrypted or corrupt)")]
    NotADatabase {
        /// The path given to the builder.
        path: String,
    },

    /// The database was written by a newer backlite, whose schema this version does not know.
    #[error(
        "the database schema is at version {found}, newer than version {supported} that this \
         backlite knows; upgrade backlite to open it"
    )]
    SchemaTooNew {
        /// The schema version found in the database.
        found: i64,
        /// The newest schema version this backlite knows.
        supported: i64,
    },

    /// Another connection held the database's write lock for longer than the busy timeout.
    /// Nothing was written; the call can be retried.
    #[error("the database stayed locked by another connection for longer than {0:?}")]
    Busy(Duration),

    /// The disk, or the database's page limit, is full. Nothing was written.
    #[error("the database or the disk is full")]
    Full,

    /// The database cannot be written: on SQLite, an existing file that is read-only, or a
    /// new file in a directory where it cannot be created; on PostgreSQL, a server that
    /// refuses writes (a standby, or `default_transaction_read_only`).
    #[error("the database `{path}` is read-only")]
    ReadOnly {
        /// Where the database is: the path given to the builder, or the file SQLite reports
        /// for a connection that is already open; on PostgreSQL, the server.
        path: String,
    },

    /// The task could not be serialized to JSON.
    #[error("cannot serialize a task of queue `{queue}`: {source}")]
    Serialize {
        /// The task's queue.
        queue: &'static str,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A stored task could not be read back as a value of its task type.
    #[error("cannot read a stored task of queue `{queue}` as its task type: {source}")]
    Deserialize {
        /// The task's queue.
        queue: &'static str,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A stored payload is not JSON (it was written behind backlite's back), so it cannot be
    /// shown as JSON; the task itself can still be read.
    #[error("the stored payload of task {id} is not JSON: {source}")]
    Payload {
        /// The task.
        id: crate::task::TaskId,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// Any other storage failure.
    #[error("database error: {0}")]
    Storage(#[source] BoxError),

    /// The storage writer has shut down (its thread ended), so nothing more can be written.
    #[error("the backlite storage writer has shut down")]
    Closed,

    /// The connection to the database server was lost or could not be made: the server is
    /// down, restarting or refusing connections, or every pooled connection stayed busy.
    /// Nothing was written, or the write was rolled back; the call can be retried.
    #[error("cannot reach the database: {0}")]
    Connection(#[source] BoxError),

    /// The database ended the transaction to resolve a conflict with a concurrent one (a
    /// serialization failure or a deadlock). Nothing was written; the call can be retried.
    #[error("the database rolled the transaction back after a conflict: {0}")]
    Conflict(#[source] BoxError),

    /// A queue name given to a control call (`pause_queue`, `retry_failed`, ...) breaks the
    /// queue-name rules: 1 to 100 ASCII letters, digits and `_ - . :`.
    #[error("invalid queue name `{name}`: {reason}")]
    InvalidQueueName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: String,
    },

    /// `save_in` was given a transaction on another database (or another PostgreSQL schema)
    /// than the client's. Nothing was written.
    #[error("the transaction is on {found}, but this client's database is {expected}")]
    WrongDatabase {
        /// The client's database (a URL is shown without its password).
        expected: String,
        /// Where the transaction is.
        found: String,
    },

    /// A cron expression given to [`Schedule::cron`](crate::Schedule::cron) could not be
    /// parsed.
    #[error("invalid cron expression `{expression}`: {source}")]
    Cron {
        /// The expression as given.
        expression: String,
        /// What the parser found wrong.
        #[source]
        source: BoxError,
    },

    /// A time zone given to [`Schedule::in_timezone`](crate::Schedule::in_timezone) is not a
    /// name of the IANA time zone database.
    #[error("unknown time zone `{zone}`: expected an IANA name such as `Europe/Paris`")]
    TimeZone {
        /// The name as given.
        zone: String,
    },
    /// A processor's [`Snooze`](crate::Snooze), for a processor that returns
    /// `backlite::Result<()>`: the task runs again after the delay, the attempt not counted.
    #[error(transparent)]
    Snooze(#[from] crate::Snooze),

    /// A processor's [`Cancel`](crate::Cancel), for a processor that returns
    /// `backlite::Result<()>`: the task stops for good and ends cancelled.
    #[error(transparent)]
    Cancel(#[from] crate::Cancel),
}

impl Error {
    /// Whether the failure may pass by itself, so that the same call can be retried as it is:
    /// a lock held by another connection, a lost connection, a server restarting, a pool with
    /// no free connection, or a conflict with a concurrent transaction. backlite retries its
    /// own writes (claims, outcomes) on these; `save()` returns them for the caller to decide.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Busy(_) | Error::Connection(_) | Error::Conflict(_)
        )
    }
}

/// The result type of backlite calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
