//! W3p: W3's backlog drained by 3 worker processes sharing one database, each the benchmark
//! re-executed with `--child W3p` and a client of 4 workers; compared to W3, the same backlog
//! drained by one process.
//!
//! The children build their clients first and say `ready` on stdout; the clock starts when the
//! parent writes `go` to every child's stdin, and stops when the tasks table is empty. Closing
//! stdin stops a child, which then prints how many tasks it ran.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::runtime::Runtime;

use super::db::Db;
use super::workloads;
use super::{Figure, Sizes};

/// Worker processes of W3p.
const PROCESSES: usize = 3;
/// Workers per process, as in W3.
const WORKERS: usize = 4;

struct Worker {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim().to_owned())
    }
}

/// The parent: adds the backlog, starts the children, and times the drain.
pub fn drain(runtime: &Runtime, db: &Db, sizes: Sizes, smoke: bool) -> anyhow::Result<Figure> {
    let n = sizes.drain;
    runtime.block_on(async {
        let client = workloads::client(db, WORKERS, false).await?;
        workloads::preload(&client, n, false, None).await
    })?;
    let mut workers = Vec::with_capacity(PROCESSES);
    for _ in 0..PROCESSES {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("--child").arg("W3p").args(db.args());
        if smoke {
            command.arg("--smoke");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a W3p child process")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        workers.push(Worker { child, stdout });
    }
    for worker in &mut workers {
        let line = worker.line()?;
        if line != "ready" {
            bail!("a W3p child process said `{line}` instead of `ready`");
        }
    }
    let start = Instant::now();
    for worker in &mut workers {
        let stdin = worker.child.stdin.as_mut().context("no stdin")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
    }
    runtime.block_on(db.table_empty())?;
    let elapsed = start.elapsed();
    let mut ran = 0u64;
    for worker in &mut workers {
        // Closing stdin tells the child to stop.
        drop(worker.child.stdin.take());
        let line = worker.line()?;
        ran += line
            .parse::<u64>()
            .with_context(|| format!("a W3p child process said `{line}`"))?;
        let status = worker.child.wait()?;
        if !status.success() {
            bail!("a W3p child process failed: {status}");
        }
    }
    anyhow::ensure!(ran == n as u64, "W3p: {ran} runs for {n} tasks");
    Ok(Figure::new("W3p", n, elapsed, None).workers(PROCESSES * WORKERS))
}

/// A child (`--child W3p`): serves the queue from `go` until stdin closes.
pub fn serve(runtime: &Runtime, db: &Db) -> anyhow::Result<()> {
    let client = runtime.block_on(workloads::client(db, WORKERS, false))?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    if line.trim() != "go" {
        bail!("W3p child: expected `go`, got `{}`", line.trim());
    }
    runtime.block_on(async { client.start() });
    // The runtime's threads serve the queue meanwhile.
    while stdin.read_line(&mut line)? > 0 {}
    let stopped = runtime.block_on(client.stop(Duration::from_secs(10)));
    anyhow::ensure!(stopped, "W3p child: stop timed out");
    println!("{}", workloads::runs());
    Ok(())
}
