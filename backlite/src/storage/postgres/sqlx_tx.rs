//! `save_in` with the application's sqlx 0.8 PostgreSQL connection or transaction: the same
//! checked insert and wake-up as with tokio-postgres, through sqlx.

use std::collections::HashSet;

use sqlx::Row;

use super::{InsertColumns, PgTarget, unique};
use crate::error::{Error, Result};
use crate::storage::NewTask;
use crate::task::TaskId;

impl PgTarget {
    /// Inserts tasks inside the application's sqlx transaction; see [`PgTarget::insert_in`].
    pub(crate) async fn insert_in_sqlx(
        &self,
        conn: &mut sqlx::PgConnection,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<TaskId>> {
        let statements = &self.statements;
        let wrong = |found: &str| Error::WrongDatabase {
            expected: self.shown.to_string(),
            found: found.to_owned(),
        };
        const NO_TABLES: &str = "a database without backlite's tables in that schema";
        let ids = if tasks.iter().any(|t| t.unique_key.is_some()) {
            let here = sqlx::query(&unique::instance_check(&statements.schema))
                .bind(self.instance)
                .fetch_optional(&mut *conn)
                .await;
            match here {
                Ok(Some(_)) => {}
                Ok(None) => return Err(wrong("another backlite database")),
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                    return Err(wrong(NO_TABLES));
                }
                Err(e) => return Err(map_sqlx_error(e)),
            }
            insert_unique(conn, &statements.schema, tasks).await?
        } else {
            let ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
            let columns = InsertColumns::new(tasks);
            let inserted = sqlx::query(&statements.insert_checked);
            let inserted = bind_columns(inserted, &columns)
                .bind(self.instance)
                .execute(&mut *conn)
                .await;
            let inserted = match inserted {
                Ok(done) => done.rows_affected(),
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                    return Err(wrong(NO_TABLES));
                }
                Err(e) => return Err(map_sqlx_error(e)),
            };
            if inserted as usize != columns.len() {
                return Err(wrong("another backlite database"));
            }
            ids
        };
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
        Ok(ids)
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The nine columns of [`InsertColumns`], as `$1` to `$9`.
fn bind_columns<'q>(query: PgQuery<'q>, columns: &'q InsertColumns) -> PgQuery<'q> {
    query
        .bind(&columns.ids)
        .bind(&columns.queues)
        .bind(&columns.payloads)
        .bind(&columns.run_at)
        .bind(&columns.created_at)
        .bind(&columns.priority)
        .bind(&columns.expires_at)
        .bind(&columns.unique_key)
        .bind(&columns.unique_for)
}

/// [`unique::insert_in_tx`], through sqlx: the same statements and rounds.
async fn insert_unique(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    tasks: Vec<NewTask>,
) -> Result<Vec<TaskId>> {
    let sql = unique::UniqueSql::new(schema);
    let mut round = unique::Round::new(tasks);
    for _ in 0..unique::ROUNDS {
        let Some(columns) = round.columns() else {
            break;
        };
        let inserted: HashSet<TaskId> = bind_columns(sqlx::query(&sql.insert), &columns)
            .fetch_all(&mut *conn)
            .await
            .map_err(map_sqlx_error)?
            .iter()
            .map(|row| row.try_get::<uuid::Uuid, _>(0).map(super::task_id))
            .collect::<std::result::Result<_, _>>()
            .map_err(map_sqlx_error)?;
        let (keys, at) = round.missing(&inserted);
        let mut holders = unique::Holders::new();
        if !keys.is_empty() {
            let rows = sqlx::query(&sql.holders)
                .bind(&keys)
                .bind(&at)
                .fetch_all(&mut *conn)
                .await
                .map_err(map_sqlx_error)?;
            for row in rows {
                let key: Vec<u8> = row.try_get(0).map_err(map_sqlx_error)?;
                let id: uuid::Uuid = row.try_get(1).map_err(map_sqlx_error)?;
                let lets_go: bool = row.try_get(2).map_err(map_sqlx_error)?;
                holders.insert(key, (super::task_id(id), lets_go));
            }
        }
        let release = round.settle(&inserted, &holders)?;
        if !release.is_empty() {
            sqlx::query(&sql.release)
                .bind(&release)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx_error)?;
        }
    }
    round.finish()
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
