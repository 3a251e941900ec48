//! `save_in` through the application's sqlx 0.8 SQLite connection or transaction (feature
//! `sqlx-sqlite`): the driver's own insert, run with sqlx.

use std::time::Duration;

use rusqlite::ffi;
use sqlx::SqliteConnection;

use super::{SqliteTarget, sql};
use crate::error::{Error, Result};
use crate::storage::NewTask;
use crate::task::TaskId;

impl SqliteTarget {
    /// As [`SqliteTarget::insert_in`], on an sqlx connection.
    pub(crate) async fn insert_in_sqlx(
        &self,
        conn: &mut SqliteConnection,
        tasks: &[NewTask],
    ) -> Result<Vec<TaskId>> {
        let busy = self.busy_timeout;
        let file: String = sqlx::query_scalar(sql::MAIN_FILE)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| map_sqlx_error(e, busy, &self.given))?;
        self.check_file(&file)?;
        let mut ids = Vec::with_capacity(tasks.len());
        let error = |e| map_sqlx_error(e, busy, &file);
        for task in tasks {
            let insert = |sql| {
                sqlx::query(sql)
                    .bind(&task.id.as_bytes()[..])
                    .bind(task.queue)
                    .bind(&task.payload[..])
                    .bind(task.run_at)
                    .bind(task.created_at)
                    .bind(task.priority)
                    .bind(task.expires_at)
                    .bind(task.unique_key.as_deref())
                    .bind(task.unique_for)
            };
            let Some(key) = &task.unique_key else {
                insert(sql::TASK_INSERT)
                    .execute(&mut *conn)
                    .await
                    .map_err(error)?;
                ids.push(task.id);
                continue;
            };
            let inserted = insert(sql::TASK_INSERT_UNIQUE)
                .execute(&mut *conn)
                .await
                .map_err(error)?
                .rows_affected();
            if inserted == 1 {
                ids.push(task.id);
                continue;
            }
            // The write lock this transaction took at its first write keeps the holder where
            // it is until the lookup, as in `sql::task_insert_many`.
            let (held, expired): (Vec<u8>, bool) = sqlx::query_as(sql::UNIQUE_HOLDER)
                .bind(&key[..])
                .bind(task.created_at)
                .fetch_one(&mut *conn)
                .await
                .map_err(error)?;
            if expired {
                sqlx::query(sql::UNIQUE_RELEASE)
                    .bind(&held[..])
                    .execute(&mut *conn)
                    .await
                    .map_err(error)?;
                insert(sql::TASK_INSERT)
                    .execute(&mut *conn)
                    .await
                    .map_err(error)?;
                ids.push(task.id);
                continue;
            }
            let held = <[u8; 16]>::try_from(held.as_slice()).map_err(|_| {
                Error::Storage(format!("a stored task id of {} bytes", held.len()).into())
            })?;
            ids.push(TaskId::from_bytes(held));
        }
        Ok(ids)
    }
}

/// As [`super::map_error`], for the codes sqlx reports: SQLite's extended result codes.
fn map_sqlx_error(error: sqlx::Error, busy: Duration, path: &str) -> Error {
    let code = match &error {
        sqlx::Error::Database(e) => e.code().and_then(|code| code.parse::<i32>().ok()),
        _ => None,
    };
    // The primary result code is the extended code's low byte.
    match code.map(|code| code & 0xff) {
        Some(ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED) => Error::Busy(busy),
        Some(ffi::SQLITE_FULL) => Error::Full,
        Some(ffi::SQLITE_READONLY) => Error::ReadOnly {
            path: path.to_owned(),
        },
        _ => Error::Storage(Box::new(error)),
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;
    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;
    use crate::storage::sqlite::{file_identity, migrations};
    use crate::task::TaskId;

    /// A migrated database file in `dir`, a connection to it, and its target with `busy`.
    fn migrated(
        dir: &tempfile::TempDir,
        busy: Duration,
    ) -> (std::path::PathBuf, rusqlite::Connection, SqliteTarget) {
        let path = dir.path().join("tasks.db");
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        migrations::migrate(&mut conn, 0)
            .expect("migrate")
            .expect("schema");
        let given = path.to_string_lossy().into_owned();
        let target = SqliteTarget {
            file: file_identity(&given),
            given,
            busy_timeout: busy,
        };
        (path, conn, target)
    }

    #[tokio::test]
    async fn inserts_on_the_clients_file_and_reports_a_lock_as_busy() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (path, conn, target) = migrated(&dir, Duration::ZERO);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(Duration::ZERO);
        let mut app = SqliteConnection::connect_with(&options)
            .await
            .expect("sqlx");
        let task = NewTask {
            id: TaskId::new(),
            queue: "q",
            payload: b"{}".to_vec(),
            created_at: 0,
            run_at: 0,
            priority: 0,
            expires_at: None,
            unique_key: None,
            unique_for: None,
        };

        conn.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let locked = target
            .insert_in_sqlx(&mut app, std::slice::from_ref(&task))
            .await;
        assert!(matches!(locked, Err(Error::Busy(_))), "{locked:?}");
        conn.execute_batch("COMMIT").expect("unlock");

        target
            .insert_in_sqlx(&mut app, &[task])
            .await
            .expect("insert");
        let tasks: i64 = conn
            .query_row("SELECT COUNT(*) FROM backlite_tasks", [], |r| r.get(0))
            .expect("count");
        assert_eq!(tasks, 1);
    }

    /// Tasks with a unique key through sqlx: a held key (stored before, or earlier in the
    /// batch) stores nothing and answers the holder's id, as the driver's own insert does.
    #[tokio::test]
    async fn a_held_unique_key_answers_the_holder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (path, conn, target) = migrated(&dir, Duration::from_secs(5));
        let mut app = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
            .await
            .expect("sqlx");
        let keyed = |key: &str| NewTask {
            id: TaskId::new(),
            queue: "q",
            payload: b"{}".to_vec(),
            created_at: 0,
            run_at: 0,
            priority: 0,
            expires_at: None,
            unique_key: Some(key.as_bytes().to_vec()),
            unique_for: Some(0),
        };
        let (a, b) = (keyed("a"), keyed("b"));
        let ids = target
            .insert_in_sqlx(&mut app, &[a.clone(), keyed("a"), b.clone()])
            .await
            .expect("insert");
        assert_eq!(ids, [a.id, a.id, b.id]);
        let ids = target
            .insert_in_sqlx(&mut app, &[keyed("b")])
            .await
            .expect("insert");
        assert_eq!(ids, [b.id]);
        let tasks: i64 = conn
            .query_row("SELECT COUNT(*) FROM backlite_tasks", [], |r| r.get(0))
            .expect("count");
        assert_eq!(tasks, 2);
    }
}
