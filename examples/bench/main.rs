//! The benchmark of issue 4: what backlite drains and saves per second, next to the bound of
//! plain SQLite doing the minimum a durable queue needs, measured in the same process on the
//! same kind of file.
//!
//! ```text
//! cargo run --release --example bench                     # every workload
//! cargo run --release --example bench -- --workload W3    # one, with what it is compared to
//! cargo run --example bench -- --smoke                    # small sizes: checks that it runs
//! cargo run --release --example bench -- --postgres postgres://postgres@127.0.0.1/test
//! ```
//!
//! One JSON line per figure on stdout, notes on stderr. Every workload gets a fresh database
//! file in a directory of its own under `--dir` (default `target/bench-db`: on disk, not
//! tmpfs), in WAL mode with `synchronous = NORMAL`. Backlite figures carry `vs_raw`, their
//! ratio to the matching raw figure of the same run. The workloads are described in
//! `docs/performance.md`.
//!
//! With `--postgres URL` (or `BACKLITE_BENCH_POSTGRES_URL`), the same workloads run on that
//! PostgreSQL database too, after SQLite's, each in a fresh schema dropped at its end, next to
//! a raw PostgreSQL baseline (`pg_raw.rs`). Every line says its `backend`.

mod db;
mod layout;
mod leases;
mod pg_raw;
mod priority;
mod processes;
mod raw;
mod workloads;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use db::Db;

fn main() -> anyhow::Result<()> {
    run(std::env::args().skip(1).collect())
}

/// Every workload, in the order a full run measures them: each raw baseline right before the
/// backlite figures compared to it, and W7 last, in a child process.
const ALL: &[&str] = &[
    "raw-W1", "W1", "raw-W2", "W2", "raw-W3", "W3", "W3b", "W3r", "raw-W4", "W4", "W6", "W8",
    "W3l", "W3lx", "W9", "W7",
];

/// The same on PostgreSQL, with two more raw baselines for W6 (16 concurrent inserters,
/// without and with a NOTIFY each) and the multi-process drain W3p.
const PG_ALL: &[&str] = &[
    "raw-W1", "W1", "raw-W2", "W2", "raw-W3", "W3", "W3b", "W3r", "raw-W4", "W4", "raw-W6",
    "raw-W6n", "W6", "W8", "W3p", "W3l", "W3lx", "W9", "W7",
];

/// The figures a workload's ratios are computed from; they run too when it is picked alone.
/// Names a backend does not have are ignored.
fn needs(workload: &str) -> &'static [&'static str] {
    match workload {
        "W1" => &["raw-W1"],
        "W2" => &["raw-W2"],
        "W3" | "W3b" | "W3r" => &["raw-W3"],
        "W4" => &["raw-W4"],
        "W6" => &["raw-W1", "W1", "raw-W6", "raw-W6n"],
        "W7" | "W3p" => &["raw-W3", "W3"],
        "W3l" | "W3lx" => &["W3l", "W3lx"],
        _ => &[],
    }
}

#[derive(Debug)]
struct Args {
    smoke: bool,
    /// Empty: all.
    workloads: Vec<String>,
    dir: PathBuf,
    /// `--child W7`: run W7 alone and print its figure; `--child W3p`: serve as one of W3p's
    /// worker processes. The parent re-executes itself with this.
    child: Option<String>,
    /// PostgreSQL's URL: its workloads run too.
    postgres: Option<String>,
    /// A child's PostgreSQL schema; a child without one works on the SQLite file in `dir`.
    schema: Option<String>,
    /// `--backend sqlite|postgres`: only that backend's workloads.
    backend: Option<String>,
}

fn parse(args: Vec<String>) -> anyhow::Result<Args> {
    let mut parsed = Args {
        smoke: false,
        workloads: Vec::new(),
        dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-db")),
        child: None,
        postgres: None,
        schema: None,
        backend: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => parsed.smoke = true,
            "--child" => parsed.child = Some(args.next().context("--child needs a workload")?),
            "--postgres" => parsed.postgres = Some(args.next().context("--postgres needs a URL")?),
            "--schema" => parsed.schema = Some(args.next().context("--schema needs a name")?),
            "--backend" => {
                let value = args.next().context("--backend needs sqlite or postgres")?;
                if value != "sqlite" && value != "postgres" {
                    bail!("unknown backend `{value}`: sqlite or postgres");
                }
                parsed.backend = Some(value);
            }
            "--threads" => workloads::report_threads(),
            "--workload" => {
                let value = args.next().context("--workload needs a value, e.g. W3")?;
                for w in value.split(',') {
                    let known = ALL.iter().chain(PG_ALL).find(|a| a.eq_ignore_ascii_case(w));
                    let Some(known) = known else {
                        bail!("unknown workload `{w}`; known: {}", PG_ALL.join(", "));
                    };
                    parsed.workloads.push((*known).to_owned());
                }
            }
            "--dir" => parsed.dir = args.next().context("--dir needs a path")?.into(),
            "-h" | "--help" => {
                eprintln!(
                    "usage: bench [--smoke] [--workload W1[,W3..]] [--dir PATH] [--threads]\n\
                     \x20            [--postgres URL] [--backend sqlite|postgres]\n\
                     workloads: {}\n\
                     PostgreSQL (--postgres URL or BACKLITE_BENCH_POSTGRES_URL): {}",
                    ALL.join(", "),
                    PG_ALL.join(", ")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    if parsed.postgres.is_none() && parsed.child.is_none() {
        parsed.postgres = std::env::var("BACKLITE_BENCH_POSTGRES_URL")
            .ok()
            .filter(|url| !url.is_empty());
    }
    Ok(parsed)
}

/// How big each workload is. `--smoke` shrinks everything so that a debug build finishes in
/// seconds; its figures mean nothing.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub single_saves: usize,
    pub batches: usize,
    pub batch: usize,
    pub drain: usize,
    pub latency_samples: usize,
    pub savers: usize,
    pub saves_each: usize,
    pub backlog: usize,
    pub scheduled: usize,
    pub scheduled_ahead: Duration,
    /// Rows per claim and per delete transaction of the raw drain.
    pub raw_claim: usize,
    /// The lease workloads: tasks, workers, and how long each task runs (ms).
    pub sleepers: (usize, usize, u64),
}

impl Sizes {
    /// PostgreSQL commits once per flush of its WAL to disk (`synchronous_commit = on`),
    /// milliseconds each where SQLite's WAL mode takes microseconds: its workloads of single
    /// saves and drains are smaller, so that a full run takes minutes, not hours.
    fn postgres(self, smoke: bool) -> Sizes {
        if smoke {
            return self;
        }
        Sizes {
            single_saves: 2_000,
            saves_each: 250,
            drain: 20_000,
            ..self
        }
    }

    fn new(smoke: bool) -> Sizes {
        if smoke {
            Sizes {
                single_saves: 200,
                batches: 5,
                batch: 200,
                drain: 2_000,
                latency_samples: 10,
                savers: 4,
                saves_each: 50,
                backlog: 5_000,
                scheduled: 500,
                scheduled_ahead: Duration::from_millis(500),
                raw_claim: 1_000,
                sleepers: (40, 20, 200),
            }
        } else {
            Sizes {
                single_saves: 20_000,
                batches: 100,
                batch: 1_000,
                drain: 100_000,
                latency_samples: 200,
                savers: 16,
                saves_each: 2_000,
                backlog: 1_000_000,
                scheduled: 10_000,
                scheduled_ahead: Duration::from_secs(1),
                raw_claim: 1_000,
                sleepers: (1_000, 200, 2_000),
            }
        }
    }
}

/// One printed line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figure {
    pub workload: String,
    /// `sqlite` or `postgres`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backend: String,
    pub n: u64,
    pub secs: f64,
    pub per_sec: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub max_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// W9: due tasks of low priority waiting when the samples began, and left at their end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog_left: Option<u64>,
    /// This figure's rate over the matching raw figure's (for W4, the raw median latency over
    /// backlite's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_raw: Option<f64>,
    /// PostgreSQL's W6: its rate over raw-W6n's (16 inserters, each with a NOTIFY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_raw_notify: Option<f64>,
    /// W3p's rate over W3's: three processes against one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_w3: Option<f64>,
    /// W6's rate over W1's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_w1: Option<f64>,
    /// W7's per-task cost over W3's (1.0: the same; 1.2: 20% dearer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_vs_w3: Option<f64>,
    /// How late past due the last task started (W8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_late_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
    /// W3l, W3lx: what the workers could do at best (workers over the task's run time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ideal_per_sec: Option<f64>,
    /// W3l, W3lx: `per_sec` over `ideal_per_sec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_ideal: Option<f64>,
    /// W3l, W3lx: the client's `release_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_after_ms: Option<u64>,
    /// W3l, W3lx: renewal writes per second (each renews every lease the client holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewals_per_sec: Option<f64>,
    /// W3l, W3lx: leases renewed per second, over all renewal writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_per_sec: Option<f64>,
}

impl Figure {
    /// `n` operations in `elapsed`; `latencies` (one per operation or sample) give the
    /// percentiles, when the workload has any.
    pub fn new(
        workload: &str,
        n: usize,
        elapsed: Duration,
        latencies: Option<&mut [Duration]>,
    ) -> Figure {
        let secs = elapsed.as_secs_f64();
        let mut figure = Figure {
            workload: workload.to_owned(),
            n: n as u64,
            secs: round(secs, 4),
            per_sec: round(n as f64 / secs, 0),
            ..Figure::default()
        };
        if let Some(latencies) = latencies.filter(|l| !l.is_empty()) {
            latencies.sort_unstable();
            let us = |d: Duration| round(d.as_secs_f64() * 1e6, 1);
            let at = |p: f64| latencies[((p * latencies.len() as f64).ceil() as usize).max(1) - 1];
            figure.p50_us = Some(us(at(0.50)));
            figure.p99_us = Some(us(at(0.99)));
            figure.max_us = Some(us(latencies[latencies.len() - 1]));
        }
        figure
    }

    pub fn workers(mut self, workers: usize) -> Figure {
        self.workers = Some(workers);
        self
    }
}

pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

fn ratio(a: &Figure, b: &Figure) -> f64 {
    round(a.per_sec / b.per_sec, 2)
}

/// Runs the benchmark with these command-line arguments (without the program name).
pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    if args.first().is_some_and(|a| a == "--layout") {
        return layout::run(args[1..].to_vec());
    }
    let args = parse(args)?;
    let sizes = Sizes::new(args.smoke);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    if let Some(child) = &args.child {
        let (db, sizes) = match (&args.postgres, &args.schema) {
            (Some(url), Some(schema)) => (
                Db::Postgres {
                    url: url.clone(),
                    schema: schema.clone(),
                },
                sizes.postgres(args.smoke),
            ),
            _ => (Db::Sqlite(args.dir.clone()), sizes),
        };
        return match child.as_str() {
            "W7" => {
                let figure = runtime.block_on(workloads::backlog(&db, sizes))?;
                println!("{}", serde_json::to_string(&figure)?);
                Ok(())
            }
            "W3p" => processes::serve(&runtime, &db),
            other => bail!("--child {other}: only W7 and W3p run in a child process"),
        };
    }

    let wanted = |backend: &str| args.backend.as_deref().is_none_or(|b| b == backend);
    if args.backend.as_deref() == Some("postgres") && args.postgres.is_none() {
        bail!("--backend postgres needs --postgres URL or BACKLITE_BENCH_POSTGRES_URL");
    }
    eprintln!(
        "backlite bench: {} (databases under {}{})",
        if args.smoke {
            "smoke sizes"
        } else {
            "full sizes"
        },
        args.dir.display(),
        if args.postgres.is_some() && wanted("postgres") {
            ", and PostgreSQL"
        } else {
            ""
        }
    );
    if wanted("sqlite") {
        run_backend(&runtime, &args, sizes, ALL, None)?;
    }
    if let Some(url) = args.postgres.as_deref().filter(|_| wanted("postgres")) {
        runtime.block_on(db::drop_stale_schemas(url))?;
        run_backend(
            &runtime,
            &args,
            sizes.postgres(args.smoke),
            PG_ALL,
            Some(url),
        )?;
    }
    Ok(())
}

/// Runs the selected workloads of one backend (`url`: PostgreSQL's; `None`: SQLite), each on a
/// fresh database, and prints their figures.
fn run_backend(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    sizes: Sizes,
    all: &[&'static str],
    url: Option<&str>,
) -> anyhow::Result<()> {
    let mut selected: Vec<&str> = Vec::new();
    for w in all {
        if args.workloads.is_empty() || args.workloads.iter().any(|a| a == w) {
            selected.extend(needs(w));
            selected.push(w);
        }
    }
    let mut figures: HashMap<&str, Figure> = HashMap::new();
    for w in all.iter().copied().filter(|w| selected.contains(w)) {
        let mut figure = match url {
            None => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("{w}-"))
                    .tempdir_in(&args.dir)?;
                let db = Db::Sqlite(dir.path().to_owned());
                measure(runtime, w, &db, sizes, args.smoke)?
            }
            Some(url) => {
                let schema = db::fresh_schema(w);
                let db = Db::Postgres {
                    url: url.to_owned(),
                    schema: schema.clone(),
                };
                let figure = measure(runtime, w, &db, sizes, args.smoke);
                runtime
                    .block_on(db::drop_schema(url, &schema))
                    .with_context(|| format!("cannot drop the schema {schema}"))?;
                figure?
            }
        };
        figure.backend = if url.is_some() { "postgres" } else { "sqlite" }.to_owned();
        compare(w, &mut figure, &figures);
        println!("{}", serde_json::to_string(&figure)?);
        figures.insert(w, figure);
    }
    Ok(())
}

/// Measures workload `w` on `db`.
fn measure(
    runtime: &tokio::runtime::Runtime,
    w: &str,
    db: &Db,
    sizes: Sizes,
    smoke: bool,
) -> anyhow::Result<Figure> {
    Ok(match (w, db) {
        ("raw-W1", Db::Sqlite(dir)) => raw::single_inserts(dir, sizes)?,
        ("raw-W2", Db::Sqlite(dir)) => raw::batched_inserts(dir, sizes)?,
        ("raw-W3", Db::Sqlite(dir)) => raw::drain(dir, sizes)?,
        ("raw-W4", Db::Sqlite(dir)) => raw::latency(dir, sizes)?,
        ("raw-W1", Db::Postgres { url, schema }) => {
            runtime.block_on(pg_raw::single_inserts(url, schema, sizes))?
        }
        ("raw-W2", Db::Postgres { url, schema }) => {
            runtime.block_on(pg_raw::batched_inserts(url, schema, sizes))?
        }
        ("raw-W3", Db::Postgres { url, schema }) => {
            runtime.block_on(pg_raw::drain(url, schema, sizes))?
        }
        ("raw-W4", Db::Postgres { url, schema }) => {
            runtime.block_on(pg_raw::latency(url, schema, sizes))?
        }
        ("raw-W6", Db::Postgres { url, schema }) => {
            runtime.block_on(pg_raw::concurrent_inserts(url, schema, sizes, false))?
        }
        ("raw-W6n", Db::Postgres { url, schema }) => {
            runtime.block_on(pg_raw::concurrent_inserts(url, schema, sizes, true))?
        }
        ("W1", db) => runtime.block_on(workloads::single_saves(db, sizes))?,
        ("W2", db) => runtime.block_on(workloads::batched_saves(db, sizes))?,
        ("W3", db) => runtime.block_on(workloads::drain(db, sizes, "W3", 4, false))?,
        ("W3b", db) => runtime.block_on(workloads::drain(db, sizes, "W3b", 16, false))?,
        ("W3r", db) => runtime.block_on(workloads::drain(db, sizes, "W3r", 4, true))?,
        ("W4", db) => runtime.block_on(workloads::latency(db, sizes))?,
        ("W6", db) => runtime.block_on(workloads::concurrent_saves(db, sizes))?,
        ("W8", db) => runtime.block_on(workloads::scheduled(db, sizes))?,
        ("W9", db) => runtime.block_on(priority::pickup(db, sizes))?,
        ("W3p", db) => processes::drain(runtime, db, sizes, smoke)?,
        ("W3l", db) => runtime.block_on(leases::drain(
            db,
            "W3l",
            sizes.sleepers,
            Duration::from_millis(300),
        ))?,
        ("W3lx", db) => runtime.block_on(leases::drain(
            db,
            "W3lx",
            sizes.sleepers,
            Duration::from_secs(30),
        ))?,
        ("W7", db) => backlog_in_child(db, smoke)?,
        _ => unreachable!("every workload of ALL and PG_ALL is matched"),
    })
}

/// Sets the ratios of `figure` (workload `w`) to the figures of the same backend before it.
fn compare(w: &str, figure: &mut Figure, figures: &HashMap<&str, Figure>) {
    let base = match w {
        "W1" => figures.get("raw-W1"),
        "W2" => figures.get("raw-W2"),
        "W3" | "W3b" | "W3r" | "W3p" | "W7" => figures.get("raw-W3"),
        // PostgreSQL only: SQLite has no raw-W6.
        "W6" => figures.get("raw-W6"),
        _ => None,
    };
    figure.vs_raw = base.map(|base| ratio(figure, base));
    if let (Some(raw), Some(p50)) = (figures.get("raw-W4").filter(|_| w == "W4"), figure.p50_us) {
        // A latency: the raw median over backlite's, so that 1.0 is again "as good as raw".
        figure.vs_raw = raw.p50_us.map(|raw| round(raw / p50, 2));
    }
    if w == "W6" {
        figure.vs_w1 = figures.get("W1").map(|w1| ratio(figure, w1));
        figure.vs_raw_notify = figures.get("raw-W6n").map(|raw| ratio(figure, raw));
    }
    if w == "W7" {
        figure.cost_vs_w3 = figures.get("W3").map(|w3| ratio(w3, figure));
    }
    if w == "W3p" {
        figure.vs_w3 = figures.get("W3").map(|w3| ratio(figure, w3));
    }
}

/// W7 runs in a fresh process, so that its peak RSS is its own and not the earlier
/// workloads'.
fn backlog_in_child(db: &Db, smoke: bool) -> anyhow::Result<Figure> {
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    command.arg("--child").arg("W7").args(db.args());
    if smoke {
        command.arg("--smoke");
    }
    if workloads::reporting_threads() {
        command.arg("--threads");
    }
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start the W7 child process")?;
    if !output.status.success() {
        bail!("the W7 child process failed: {}", output.status);
    }
    let stdout = String::from_utf8(output.stdout)?;
    let line = stdout
        .lines()
        .last()
        .context("the W7 child process printed nothing")?;
    Ok(serde_json::from_str(line)?)
}
