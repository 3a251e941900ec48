//! `save_in` with the application's sqlx 0.8 PostgreSQL connection or transaction: the same
//! checked insert and wake-up as with tokio-postgres, through sqlx.

use super::{InsertColumns, PgTarget};
use crate::error::{Error, Result};
use crate::storage::NewTask;

impl PgTarget {
    /// Inserts tasks inside the application's sqlx transaction; see [`PgTarget::insert_in`].
    pub(crate) async fn insert_in_sqlx(
        &self,
        conn: &mut sqlx::PgConnection,
        tasks: Vec<NewTask>,
    ) -> Result<()> {
        let statements = &self.statements;
        let columns = InsertColumns::new(tasks);
        let wrong = |found: &str| Error::WrongDatabase {
            expected: self.shown.to_string(),
            found: found.to_owned(),
        };
        let inserted = sqlx::query(&statements.insert_checked)
            .bind(&columns.ids)
            .bind(&columns.queues)
            .bind(&columns.payloads)
            .bind(&columns.run_at)
            .bind(&columns.created_at)
            .bind(&columns.priority)
            .bind(&columns.expires_at)
            .bind(&columns.unique_key)
            .bind(&columns.unique_for)
            .bind(self.instance)
            .execute(&mut *conn)
            .await;
        let inserted = match inserted {
            Ok(done) => done.rows_affected(),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                return Err(wrong("a database without backlite's tables in that schema"));
            }
            Err(e) => return Err(map_sqlx_error(e)),
        };
        if inserted as usize != columns.len() {
            return Err(wrong("another backlite database"));
        }
        match &self.commit_watch {
            None => {
                sqlx::query(&statements.notify)
                    .bind(&statements.channel)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_sqlx_error)?;
            }
            Some(watch) => {
                let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(map_sqlx_error)?;
                let _ = watch.send(xid);
            }
        }
        Ok(())
    }
}

/// The kinds of [`super::map_error`], for sqlx's errors: by SQLSTATE where the server sent
/// one, a lost connection or a pool that gave none as `Connection`.
fn map_sqlx_error(error: sqlx::Error) -> Error {
    let code = match &error {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => return Error::Connection(Box::new(error)),
        _ => None,
    };
    match code.as_deref() {
        Some("40001" | "40P01") => Error::Conflict(Box::new(error)),
        Some("53100") => Error::Full,
        Some("25006") => Error::ReadOnly {
            path: "the PostgreSQL server".into(),
        },
        Some(c) if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "53300") => {
            Error::Connection(Box::new(error))
        }
        _ => Error::Storage(Box::new(error)),
    }
}
