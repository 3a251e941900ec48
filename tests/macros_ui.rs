//! Compile-time behaviour of `#[derive(Task)]`, `#[processor]` and `processors![..]`: what
//! they accept (`ui/pass`, each also run) and what they refuse, with the exact diagnostics
//! (`ui/fail/*.stderr`). Diagnostics depend on the compiler release, hence the pinned
//! toolchain; after a toolchain bump, regenerate with `TRYBUILD=overwrite` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
