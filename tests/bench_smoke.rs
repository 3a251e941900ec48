//! Runs the benchmark (`examples/bench`) at smoke sizes, so that it cannot rot. No figure is
//! checked: timings on a shared CI machine mean nothing.

#[allow(dead_code, reason = "the example's own `main` is not used here")]
#[path = "../examples/bench/main.rs"]
mod bench;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--child") {
        // Re-executed by the W7 workload.
        return bench::run(args);
    }
    // Arguments of the test harness (filters, --nocapture) do not apply here.
    bench::run(vec!["--smoke".into()])
}
