//! The command line: global options, the commands and their arguments (clap derive).

use std::net::SocketAddr;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::inspect::{ListState, TaskCursor};
use crate::task::TaskId;

/// What `--help` ends with: the exit codes a script can rely on.
const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the operation did not apply: the task or queue was not in a state it applies to, not
     found, a `migrate --check` with migrations pending, a copy refused
  2  usage: unknown command or option, missing argument, a value out of range
  3  database error: cannot open or reach the database, or a query failed
  4  schema: the database has no backlite tables, is older than this backlite (run
     `backlite migrate`), or newer (upgrade backlite)
  5  `backlite copy` finished but the counts of the two databases differ";

/// Inspect and control backlite queues: list, explain, retry, cancel and purge tasks, pause
/// queues, serve the web UI, migrate and copy databases.
#[derive(Debug, Parser)]
#[command(name = "backlite", version, after_help = EXIT_CODES, after_long_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// The database: an SQLite file, or a postgres:// URL.
    #[arg(
        long,
        short = 'd',
        env = "BACKLITE_DATABASE",
        global = true,
        value_name = "PATH|URL",
        hide_env_values = true
    )]
    pub(crate) database: Option<String>,

    /// PostgreSQL: the schema that holds backlite's tables (the application's `schema(..)`;
    /// default `public`).
    #[arg(long, env = "BACKLITE_SCHEMA", global = true, value_name = "NAME")]
    pub(crate) schema: Option<String>,

    /// Print JSON, for scripts, instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create the database, or bring its schema to this backlite's version.
    Migrate {
        /// Only say whether migrations are due (exit 1 when they are); change nothing.
        #[arg(long)]
        check: bool,
    },
    #[command(flatten)]
    Client(ClientCommand),
    /// Copy every task, schedule and paused queue into another database (PostgreSQL), then
    /// verify the counts. Safe to run again: rows already there are left as they are.
    #[cfg(feature = "postgres")]
    Copy(super::copy::CopyArgs),
}

/// The commands that work on an open database through a client that never starts.
#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Task counts per queue.
    Stats,
    /// Every queue: whether it is paused, and its task counts.
    Queues,
    /// List tasks, by state and queue, in the order each state is listed in.
    Ls(LsArgs),
    /// One task: its times, lease, payload and error history.
    Show {
        /// The task's id.
        id: TaskId,
    },
    /// Why a task is where it is (paused queue, no live process, scheduled, ...).
    Explain {
        /// The task's id.
        id: TaskId,
    },
    /// Run a failed or cancelled retained task again, or every one of a queue.
    Retry(RetryArgs),
    /// Cancel a waiting task, or ask a running one to stop.
    Cancel {
        /// The task's id.
        id: TaskId,
    },
    /// Make a scheduled (or backing-off) task due now.
    RunNow {
        /// The task's id.
        id: TaskId,
    },
    /// Pause a queue on every process: its tasks wait until it is resumed.
    Pause {
        /// The queue's name.
        queue: String,
    },
    /// Resume a paused queue.
    Resume {
        /// The queue's name.
        queue: String,
    },
    /// Delete retained (completed) tasks; waiting and running tasks are never touched.
    Purge(PurgeArgs),
    /// The started clients (worker processes) on this database.
    Processes,
    /// Serve the web UI on its own, until interrupted.
    Ui {
        /// The address to listen on (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:3000", value_name = "ADDR:PORT")]
        listen: SocketAddr,
        /// Adds the buttons (retry, cancel, run now, delete, retry failed, pause, resume):
        /// whoever reaches the address can then change tasks and queues.
        #[arg(long)]
        actions: bool,
    },
}

/// A list state, as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StateArg {
    Pending,
    Scheduled,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl StateArg {
    pub(crate) const ALL: [StateArg; 6] = [
        StateArg::Pending,
        StateArg::Scheduled,
        StateArg::Running,
        StateArg::Succeeded,
        StateArg::Failed,
        StateArg::Cancelled,
    ];

    pub(crate) fn list_state(self) -> ListState {
        match self {
            StateArg::Pending => ListState::Pending,
            StateArg::Scheduled => ListState::Scheduled,
            StateArg::Running => ListState::Running,
            StateArg::Succeeded => ListState::Succeeded,
            StateArg::Failed => ListState::Failed,
            StateArg::Cancelled => ListState::Cancelled,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            StateArg::Pending => "pending",
            StateArg::Scheduled => "scheduled",
            StateArg::Running => "running",
            StateArg::Succeeded => "succeeded",
            StateArg::Failed => "failed",
            StateArg::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Only tasks in this state (repeat for several; default: every state).
    #[arg(long, short = 's', value_enum)]
    pub(crate) state: Vec<StateArg>,
    /// Only tasks of this queue.
    #[arg(long, short = 'q')]
    pub(crate) queue: Option<String>,
    /// At most this many tasks per state (1 to 1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) limit: u32,
    /// The next page: the cursor a previous `ls` printed (with one `--state`, the same).
    #[arg(long, value_name = "CURSOR", requires = "state")]
    pub(crate) after: Option<TaskCursor>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["id", "queue"])))]
pub(crate) struct RetryArgs {
    /// The task's id.
    pub(crate) id: Option<TaskId>,
    /// Every failed or cancelled retained task of this queue (with `--failed`).
    #[arg(long, short = 'q', requires = "failed")]
    pub(crate) queue: Option<String>,
    /// With `--queue`: retry the queue's failed and cancelled tasks.
    #[arg(long, requires = "queue")]
    pub(crate) failed: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// Only tasks of this queue.
    #[arg(long, short = 'q')]
    pub(crate) queue: Option<String>,
    /// Tasks that succeeded (outcomes add up; none named: every outcome).
    #[arg(long)]
    pub(crate) succeeded: bool,
    /// Tasks that failed.
    #[arg(long)]
    pub(crate) failed: bool,
    /// Tasks that were cancelled.
    #[arg(long)]
    pub(crate) cancelled: bool,
    /// Only tasks that completed longer ago than this, e.g. `7d`, `12h`, `1h30m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) older_than: Option<std::time::Duration>,
    /// Delete every retained task: needed when no other filter is given.
    #[arg(long)]
    pub(crate) all: bool,
}

impl PurgeArgs {
    pub(crate) fn has_filter(&self) -> bool {
        self.queue.is_some()
            || self.succeeded
            || self.failed
            || self.cancelled
            || self.older_than.is_some()
    }
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::rules::parse_duration(text).map_err(|e| format!("{e} (e.g. `7d`, `12h`, `1h30m`)"))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, ClientCommand, Command};

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn retry_takes_an_id_or_a_queue_with_failed() {
        let id = "0190b6ba-3c00-7000-8000-000000000000";
        assert!(Cli::try_parse_from(["backlite", "retry", id]).is_ok());
        assert!(Cli::try_parse_from(["backlite", "retry", "--queue", "q", "--failed"]).is_ok());
        assert!(Cli::try_parse_from(["backlite", "retry", "--queue", "q"]).is_err());
        assert!(Cli::try_parse_from(["backlite", "retry"]).is_err());
        assert!(
            Cli::try_parse_from(["backlite", "retry", id, "--queue", "q", "--failed"]).is_err()
        );
    }

    #[test]
    fn purge_reads_durations() {
        let cli = Cli::try_parse_from(["backlite", "purge", "--older-than", "1h30m"]).unwrap();
        let Command::Client(ClientCommand::Purge(purge)) = cli.command else {
            panic!("not purge")
        };
        assert_eq!(purge.older_than, Some(std::time::Duration::from_secs(5400)));
        assert!(Cli::try_parse_from(["backlite", "purge", "--older-than", "soon"]).is_err());
    }
}
