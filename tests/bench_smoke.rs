//! Runs the benchmark (`examples/bench`) at smoke sizes, so that it cannot rot. No figure is
//! checked: timings on a shared CI machine mean nothing. With `BACKLITE_TEST_POSTGRES_URL`,
//! the PostgreSQL workloads run too, each in a schema of its own that it drops.

#[allow(dead_code, reason = "the example's own `main` is not used here")]
#[path = "../examples/bench/main.rs"]
mod bench;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--child") {
        // Re-executed by the W7 and W3p workloads.
        return bench::run(args);
    }
    // Arguments of the test harness (filters, --nocapture) do not apply here.
    let mut args = vec!["--smoke".to_owned()];
    match std::env::var("BACKLITE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => args.extend(["--postgres".to_owned(), url]),
        _ if std::env::var_os("CI").is_some() => {
            anyhow::bail!("CI is set but BACKLITE_TEST_POSTGRES_URL is not: PostgreSQL must run")
        }
        _ => {
            eprintln!("skipped: BACKLITE_TEST_POSTGRES_URL is not set");
            // Not the benchmark's own variable either: this run is SQLite's only.
            args.extend(["--backend".to_owned(), "sqlite".to_owned()]);
        }
    }
    bench::run(args)
}
