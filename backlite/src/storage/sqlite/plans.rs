//! Query plans of the SQLite statements, for the tests that hold them to indexes.

use rusqlite::Connection;

/// The steps of SQLite's plan for `sql`, one a line. Parameters left unbound are NULL: the
/// plan does not depend on them.
pub(super) fn plan(conn: &Connection, sql: &str) -> String {
    let mut explain = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    let mut rows = explain.raw_query();
    let mut steps = Vec::new();
    while let Some(row) = rows.next().expect("plan step") {
        steps.push(row.get::<_, String>(3).expect("plan detail"));
    }
    steps.join("\n")
}
