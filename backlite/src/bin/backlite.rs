//! The `backlite` command: `cargo install backlite --features cli` (add `postgres` for
//! PostgreSQL databases). `backlite --help` lists the commands and their exit codes.

fn main() -> std::process::ExitCode {
    backlite::cli::main()
}
