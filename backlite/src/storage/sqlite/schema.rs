//! The schema version of an SQLite database, read without creating, opening for write or
//! migrating it (`ClientBuilder::schema_status`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{map_error, migrations, open_error};
use crate::error::{Error, Result};

/// How long the read waits for a writer's lock (a migration in progress).
const BUSY: Duration = Duration::from_secs(5);

/// The version recorded in `backlite_schema` (0 when the file holds no backlite tables), and
/// the newest this build knows. A missing file is an error: reading it must not create it.
pub(crate) fn version(path: &str) -> Result<(i64, i64)> {
    if path == ":memory:" {
        // A new in-memory database every time: it has no schema yet.
        return Ok((0, migrations::LATEST));
    }
    if !Path::new(path).exists() {
        return Err(Error::Open {
            path: path.to_owned(),
            source: "no such file".into(),
        });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, &e, BUSY))?;
    let read = || -> rusqlite::Result<i64> {
        conn.busy_timeout(BUSY)?;
        let has_table = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'backlite_schema'",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !has_table {
            return Ok(0);
        }
        conn.query_row("SELECT MAX(version) FROM backlite_schema", [], |row| {
            row.get::<_, Option<i64>>(0)
        })
        .map(|v| v.unwrap_or(0))
    };
    let found = read().map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => Error::NotADatabase {
            path: path.to_owned(),
        },
        _ => map_error(&e, BUSY, path),
    })?;
    Ok((found, migrations::LATEST))
}

#[cfg(test)]
mod tests {
    use super::version;
    use crate::error::Error;

    #[test]
    fn a_missing_file_is_an_error_and_stays_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        let path = path.to_str().unwrap();
        assert!(matches!(version(path), Err(Error::Open { .. })));
        assert!(!std::path::Path::new(path).exists());
    }

    #[test]
    fn versions_read_as_found_and_latest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let path = path.to_str().unwrap();
        let mut conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("CREATE TABLE app (x)").unwrap();
        assert_eq!(version(path).unwrap(), (0, super::migrations::LATEST));
        super::migrations::migrate(&mut conn, 0).unwrap().unwrap();
        let latest = super::migrations::LATEST;
        assert_eq!(version(path).unwrap(), (latest, latest));
        std::fs::write(
            dir.path().join("junk.db"),
            b"not a database, not at all....",
        )
        .unwrap();
        let junk = dir.path().join("junk.db");
        assert!(matches!(
            version(junk.to_str().unwrap()),
            Err(Error::NotADatabase { .. })
        ));
    }
}
