//! What a command that fails reports, with what to do about it, and its exit code.

use std::fmt;

use crate::error::Error;

/// The exit codes, as `--help` and the README list them.
pub(crate) mod exit {
    pub(crate) const OK: u8 = 0;
    pub(crate) const NOT_APPLIED: u8 = 1;
    pub(crate) const USAGE: u8 = 2;
    pub(crate) const DATABASE: u8 = 3;
    pub(crate) const SCHEMA: u8 = 4;
    #[cfg_attr(
        not(feature = "postgres"),
        allow(dead_code, reason = "only the copy verifies")
    )]
    pub(crate) const MISMATCH: u8 = 5;
}

/// A failed command: the message, what to do (when there is something to say), the code.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    pub(crate) code: u8,
}

impl CliError {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            hint: None,
            code,
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> CliError {
        CliError::new(exit::USAGE, message)
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// A backlite error, its whole chain of sources in the message, with a hint for the errors an
/// operator can fix.
impl From<Error> for CliError {
    fn from(error: Error) -> CliError {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        let (code, hint) = match &error {
            Error::SchemaTooNew { .. } => (
                exit::SCHEMA,
                Some(
                    "upgrade this command to the backlite version the application runs \
                     (`cargo install backlite --features cli`)",
                ),
            ),
            Error::Config(_) | Error::InvalidQueueName { .. } => (exit::USAGE, None),
            Error::NotADatabase { .. } => (
                exit::DATABASE,
                Some("check --database (or BACKLITE_DATABASE): it names a file that is not SQLite"),
            ),
            Error::Open { .. } => (
                exit::DATABASE,
                Some(
                    "check --database (or BACKLITE_DATABASE): the path, or the URL's host, port, \
                     user and database, and that the server runs",
                ),
            ),
            Error::Busy(_) => (
                exit::DATABASE,
                Some("another connection holds the database's write lock; try again"),
            ),
            Error::Connection(_) => (
                exit::DATABASE,
                Some("the server is down or refuses connections; try again"),
            ),
            _ => (exit::DATABASE, None),
        };
        CliError {
            message,
            hint: hint.map(str::to_owned),
            code,
        }
    }
}
