//! The `backlite` command (feature `cli`): inspect and control the queues of a database from a
//! shell, serve the web UI on its own, migrate a database, copy an SQLite queue into
//! PostgreSQL. Every command but `migrate` and `copy` goes through the public [`Client`] API,
//! on a client that is never started: it runs no worker and registers no process.
//!
//! One file per concern: `args` (the command line), `open` (checks before opening), `error`
//! (messages, hints and exit codes), `output` (tables, times, JSON), then the commands.

mod args;
#[cfg(feature = "postgres")]
mod copy;
mod error;
mod migrate;
mod open;
mod output;
mod queues;
mod tasks;
mod ui;

use std::process::ExitCode;

use clap::Parser;

use crate::client::Client;
use args::{Cli, ClientCommand, Command};
use error::{CliError, exit};
use open::Target;

/// Runs the command line of this process and returns its exit code. What `main` of the
/// `backlite` binary calls.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::DATABASE);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{error}");
            error.code
        }
    };
    ExitCode::from(code)
}

/// Library warnings (and more with `RUST_LOG`) go to standard error, apart from the output.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    let target = Target::new(cli.database, cli.schema)?;
    let json = cli.json;
    match cli.command {
        Command::Migrate { check } => migrate::run(&target, check, json).await,
        #[cfg(feature = "postgres")]
        Command::Copy(args) => copy::run(&target, args, json).await,
        Command::Client(command) => {
            let client = target.open().await?;
            on_client(&client, &target, command, json).await
        }
    }
}

async fn on_client(
    client: &Client,
    target: &Target,
    command: ClientCommand,
    json: bool,
) -> Result<u8, CliError> {
    match command {
        ClientCommand::Stats => queues::stats(client, json).await,
        ClientCommand::Queues => queues::queues(client, json).await,
        ClientCommand::Pause { queue } => queues::pause(client, &queue, true, json).await,
        ClientCommand::Resume { queue } => queues::pause(client, &queue, false, json).await,
        ClientCommand::Processes => queues::processes(client, json).await,
        ClientCommand::Ls(args) => tasks::ls(client, args, json).await,
        ClientCommand::Show { id } => tasks::show(client, id, json).await,
        ClientCommand::Explain { id } => tasks::explain(client, id, json).await,
        ClientCommand::Retry(args) => tasks::retry(client, args, json).await,
        ClientCommand::Cancel { id } => tasks::cancel(client, id, json).await,
        ClientCommand::RunNow { id } => tasks::run_now(client, id, json).await,
        ClientCommand::Purge(args) => tasks::purge(client, args, json).await,
        ClientCommand::Ui { listen, actions } => {
            ui::serve(client, listen, actions, &target.shown()).await
        }
    }
}
