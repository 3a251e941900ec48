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

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::plan;
    use crate::storage::sqlite::{control, dispatch, expiry, inspect, lease, periodic, sql};

    /// Every statement on the tasks table names the states it reads or changes, and is served
    /// by the index of those states or by the primary key: none scans the table, whose rows are
    /// mostly retained ones in a long-lived database.
    #[test]
    fn every_task_statement_reads_an_index_never_the_table() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut conn, 0)
            .unwrap()
            .unwrap();
        let by_id = "sqlite_autoindex_backlite_tasks_1 (id=?)";
        // A write by the claimed row's rowid: one lookup of the table's own b-tree.
        let by_row = "USING INTEGER PRIMARY KEY (rowid=?)";
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "claim's mark",
                sql::CLAIM_MARK.into(),
                "INTEGER PRIMARY KEY",
            ),
            ("retry", sql::RETRY.into(), by_id),
            ("retry by row", sql::RETRY_BY_ROW.into(), by_row),
            ("snooze", dispatch::SNOOZE.into(), by_id),
            ("snooze by row", dispatch::SNOOZE_BY_ROW.into(), by_row),
            ("retained end", sql::RETAIN.into(), by_id),
            ("retained end by row", sql::RETAIN_BY_ROW.into(), by_row),
            ("tombstone", sql::TOMBSTONE.into(), by_id),
            ("tombstone by row", sql::TOMBSTONE_BY_ROW.into(), by_row),
            ("end", sql::DELETE.into(), by_id),
            ("unclaim", sql::UNCLAIM.into(), by_id),
            ("renewal", lease::RENEW.into(), by_id),
            ("renewal by row", lease::RENEW_BY_ROW.into(), by_row),
            ("release", sql::RELEASE.into(), "backlite_tasks_running"),
            ("status", sql::STATUS.into(), by_id),
            (
                "retention cleanup",
                sql::DELETE_EXPIRED.into(),
                "backlite_tasks_expires",
            ),
            (
                "expired end",
                expiry::RETAIN_EXPIRED.into(),
                "INTEGER PRIMARY KEY",
            ),
            ("cancel's read", control::CANCEL_READ.into(), by_id),
            ("cancel request", control::CANCEL_REQUEST.into(), by_id),
            ("cancel retained", control::CANCEL_RETAIN.into(), by_id),
            ("cancel", control::CANCEL_DELETE.into(), by_id),
            ("retry of a task", control::retry_sql("id = ?1"), by_id),
            (
                "retry of a queue",
                control::retry_sql("queue = ?1"),
                "backlite_tasks_ended",
            ),
            ("run now", control::RUN_NOW.into(), by_id),
            ("delete", control::DELETE_TASK.into(), by_id),
            ("purge", control::PURGE.into(), "backlite_tasks_ended"),
            ("info", inspect::TASK_INFO.into(), by_id),
            ("tick", periodic::INSERT_TICK.into(), ""),
        ];
        for (name, sql, index) in cases {
            let plan = plan(&conn, &sql);
            assert!(plan.contains(index), "{name} does not use {index}:\n{plan}");
            let table_scan = |step: &&str| step.starts_with("SCAN") && !step.contains("INDEX");
            assert!(
                !plan.lines().any(|step| table_scan(&step)),
                "{name} scans a table:\n{plan}"
            );
        }
    }
}
