//! The benchmark of issue 4: what backlite drains and saves per second, next to the bound of
//! plain SQLite doing the minimum a durable queue needs, measured in the same process on the
//! same kind of file.
//!
//! ```text
//! cargo run --release --example bench                     # every workload
//! cargo run --release --example bench -- --workload W3    # one, with what it is compared to
//! cargo run --example bench -- --smoke                    # small sizes: checks that it runs
//! ```
//!
//! One JSON line per figure on stdout, notes on stderr. Every workload gets a fresh database
//! file in a directory of its own under `--dir` (default `target/bench-db`: on disk, not
//! tmpfs), in WAL mode with `synchronous = NORMAL`. Backlite figures carry `vs_raw`, their
//! ratio to the matching raw figure of the same run. The workloads are described in
//! `docs/performance.md`.

mod raw;
mod workloads;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

fn main() -> anyhow::Result<()> {
    run(std::env::args().skip(1).collect())
}

/// Every workload, in the order a full run measures them: each raw baseline right before the
/// backlite figures compared to it, and W7 last, in a child process.
const ALL: &[&str] = &[
    "raw-W1", "W1", "raw-W2", "W2", "raw-W3", "W3", "W3b", "W3r", "W4", "W6", "W8", "W7",
];

/// The figures a workload's ratios are computed from; they run too when it is picked alone.
fn needs(workload: &str) -> &'static [&'static str] {
    match workload {
        "W1" => &["raw-W1"],
        "W2" => &["raw-W2"],
        "W3" | "W3b" | "W3r" => &["raw-W3"],
        "W6" => &["raw-W1", "W1"],
        "W7" => &["raw-W3", "W3"],
        _ => &[],
    }
}

#[derive(Debug)]
struct Args {
    smoke: bool,
    /// Empty: all.
    workloads: Vec<String>,
    dir: PathBuf,
    /// Run W7 alone and print its figure: the parent re-executes itself with this.
    child: bool,
}

fn parse(args: Vec<String>) -> anyhow::Result<Args> {
    let mut parsed = Args {
        smoke: false,
        workloads: Vec::new(),
        dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-db")),
        child: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => parsed.smoke = true,
            "--child" => parsed.child = true,
            "--threads" => workloads::report_threads(),
            "--workload" => {
                let value = args.next().context("--workload needs a value, e.g. W3")?;
                for w in value.split(',') {
                    let Some(known) = ALL.iter().find(|a| a.eq_ignore_ascii_case(w)) else {
                        bail!("unknown workload `{w}`; known: {}", ALL.join(", "));
                    };
                    parsed.workloads.push((*known).to_owned());
                }
            }
            "--dir" => parsed.dir = args.next().context("--dir needs a path")?.into(),
            "-h" | "--help" => {
                eprintln!(
                    "usage: bench [--smoke] [--workload W1[,W3..]] [--dir PATH] [--threads]\n\
                     workloads: {}",
                    ALL.join(", ")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
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
}

impl Sizes {
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
            }
        }
    }
}

/// One printed line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figure {
    pub workload: String,
    pub n: u64,
    pub secs: f64,
    pub per_sec: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub max_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// This figure's rate over the matching raw figure's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_raw: Option<f64>,
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
    let args = parse(args)?;
    let sizes = Sizes::new(args.smoke);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    if args.child {
        let figure = runtime.block_on(workloads::backlog(&args.dir, sizes))?;
        println!("{}", serde_json::to_string(&figure)?);
        return Ok(());
    }

    let mut selected: Vec<&str> = Vec::new();
    for w in ALL {
        if args.workloads.is_empty() || args.workloads.iter().any(|a| a == w) {
            selected.extend(needs(w));
            selected.push(w);
        }
    }
    eprintln!(
        "backlite bench: {} (databases under {})",
        if args.smoke {
            "smoke sizes"
        } else {
            "full sizes"
        },
        args.dir.display()
    );

    let mut figures: HashMap<&str, Figure> = HashMap::new();
    for w in ALL.iter().copied().filter(|w| selected.contains(w)) {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{w}-"))
            .tempdir_in(&args.dir)?;
        let mut figure = match w {
            "raw-W1" => raw::single_inserts(dir.path(), sizes)?,
            "raw-W2" => raw::batched_inserts(dir.path(), sizes)?,
            "raw-W3" => raw::drain(dir.path(), sizes)?,
            "W1" => runtime.block_on(workloads::single_saves(dir.path(), sizes))?,
            "W2" => runtime.block_on(workloads::batched_saves(dir.path(), sizes))?,
            "W3" => runtime.block_on(workloads::drain(dir.path(), sizes, "W3", 4, false))?,
            "W3b" => runtime.block_on(workloads::drain(dir.path(), sizes, "W3b", 16, false))?,
            "W3r" => runtime.block_on(workloads::drain(dir.path(), sizes, "W3r", 4, true))?,
            "W4" => runtime.block_on(workloads::latency(dir.path(), sizes))?,
            "W6" => runtime.block_on(workloads::concurrent_saves(dir.path(), sizes))?,
            "W8" => runtime.block_on(workloads::scheduled(dir.path(), sizes))?,
            "W7" => backlog_in_child(dir.path(), args.smoke)?,
            _ => unreachable!("every workload of ALL is matched"),
        };
        let base = match w {
            "W1" => figures.get("raw-W1"),
            "W2" => figures.get("raw-W2"),
            "W3" | "W3b" | "W3r" | "W7" => figures.get("raw-W3"),
            _ => None,
        };
        figure.vs_raw = base.map(|base| ratio(&figure, base));
        if w == "W6" {
            figure.vs_w1 = figures.get("W1").map(|w1| ratio(&figure, w1));
        }
        if w == "W7" {
            figure.cost_vs_w3 = figures.get("W3").map(|w3| ratio(w3, &figure));
        }
        println!("{}", serde_json::to_string(&figure)?);
        figures.insert(w, figure);
    }
    Ok(())
}

/// W7 runs in a fresh process, so that its peak RSS is its own and not the earlier
/// workloads'.
fn backlog_in_child(dir: &std::path::Path, smoke: bool) -> anyhow::Result<Figure> {
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    command.arg("--child").arg("--dir").arg(dir);
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
