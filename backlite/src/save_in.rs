//! Adding tasks inside the application's own transaction: `AddTasks::save_in` takes any
//! transaction type that implements the sealed [`SaveIn`], so that one method name serves
//! every database library backlite supports, each with the calling convention its library has
//! (a plain `Result` for rusqlite, a future for async clients).

use crate::client::Client;
use crate::error::Result;
use crate::storage::NewTask;
use crate::task::TaskId;
use crate::unique::{Batch, Saved};

/// A transaction that [`AddTasks::save_in`](crate::AddTasks::save_in) can add tasks in: the
/// tasks exist if and only if that transaction commits.
///
/// Implemented for (`save_in_detailed` returns the same with `Vec<Saved>`):
/// - `&rusqlite::Transaction` on the client's SQLite file; `save_in` returns
///   `Result<Vec<TaskId>>`.
/// - `&tokio_postgres::Transaction` (feature `postgres`; a deadpool-postgres transaction
///   reaches it with `&*tx`) on the client's PostgreSQL database and schema; `save_in`
///   returns a future of `Result<Vec<TaskId>>`. Once the transaction commits, every client
///   is woken: by a NOTIFY in the transaction, or just after its commit (see
///   `SaveInWakeup`).
/// - `&mut sqlx::SqliteConnection` (feature `sqlx-sqlite`, sqlx 0.8; an sqlx transaction
///   reaches it with `&mut *tx`) on the client's SQLite file; `save_in` returns a future of
///   `Result<Vec<TaskId>>`.
///
/// - `&mut sqlx::PgConnection` (feature `sqlx-postgres`, sqlx 0.8; an sqlx transaction
///   reaches it with `&mut *tx`) on the client's PostgreSQL database and schema; `save_in`
///   returns a future of `Result<Vec<TaskId>>`, and wakes the workers as with tokio-postgres.
///
/// Sealed: the set of accepted transaction types is backlite's to extend.
pub trait SaveIn: sealed::SaveInto {}

impl<T: sealed::SaveInto> SaveIn for T {}

#[allow(
    private_interfaces,
    reason = "sealed: only backlite implements or calls it, so its types stay private"
)]
pub(crate) mod sealed {
    use super::{Client, NewTask, Result};

    /// What each transaction type does; not nameable outside the crate.
    pub trait SaveInto {
        /// `Result<Vec<TaskId>>` for a synchronous library, a future of it for an async one.
        type Output;

        /// `Result<Vec<Saved>>`, or a future of it.
        type Detailed;

        /// Checks that the transaction is on `client`'s database, then inserts `tasks` in it
        /// (or returns the error that preparing them met).
        fn save_into(self, client: &Client, tasks: Result<Vec<NewTask>>) -> Self::Detailed;

        /// The ids of what `save_into` reports.
        fn ids(detailed: Self::Detailed) -> Self::Output;
    }
}

/// The ids of what a save reports.
fn saved_ids(saved: Result<Vec<Saved>>) -> Result<Vec<TaskId>> {
    saved.map(|saved| saved.iter().map(Saved::id).collect())
}

#[allow(private_interfaces, reason = "see `sealed`")]
impl sealed::SaveInto for &rusqlite::Transaction<'_> {
    type Output = Result<Vec<TaskId>>;
    type Detailed = Result<Vec<Saved>>;

    fn save_into(self, client: &Client, tasks: Result<Vec<NewTask>>) -> Self::Detailed {
        let tasks = tasks?;
        // Counted when written: the application's transaction may still roll back.
        Batch::of(&tasks).saved(client.sqlite_target()?.insert_in(self, &tasks)?)
    }

    fn ids(detailed: Self::Detailed) -> Self::Output {
        saved_ids(detailed)
    }
}

/// A future that borrows the application's transaction.
#[cfg(any(feature = "postgres", feature = "sqlx-sqlite"))]
pub type SaveInFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<TaskId>>> + Send + 'a>>;

/// The future of `save_in_detailed`, which borrows the application's transaction.
#[cfg(any(feature = "postgres", feature = "sqlx-sqlite"))]
pub type SaveInDetailedFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Saved>>> + Send + 'a>>;

/// The ids of what a `save_in_detailed` future reports.
#[cfg(any(feature = "postgres", feature = "sqlx-sqlite"))]
fn future_ids(detailed: SaveInDetailedFuture<'_>) -> SaveInFuture<'_> {
    Box::pin(async move { saved_ids(detailed.await) })
}

/// Inserts `tasks` with `insert` once preparing them succeeded, counting them once written
/// (the application's transaction may still roll back), and reports what it did.
#[cfg(feature = "postgres")]
async fn insert_counted<F>(
    tasks: Result<Vec<NewTask>>,
    insert: impl FnOnce(Vec<NewTask>) -> F,
) -> Result<Vec<Saved>>
where
    F: std::future::Future<Output = Result<Vec<TaskId>>>,
{
    let tasks = tasks?;
    let batch = Batch::of(&tasks);
    batch.saved(insert(tasks).await?)
}

#[cfg(feature = "postgres")]
#[allow(private_interfaces, reason = "see `sealed`")]
impl<'a> sealed::SaveInto for &'a tokio_postgres::Transaction<'_> {
    type Output = SaveInFuture<'a>;
    type Detailed = SaveInDetailedFuture<'a>;

    fn ids(detailed: Self::Detailed) -> Self::Output {
        future_ids(detailed)
    }

    fn save_into(self, client: &Client, tasks: Result<Vec<NewTask>>) -> Self::Detailed {
        let target = client.postgres_target().cloned();
        Box::pin(async move {
            let target = target?;
            insert_counted(tasks, |tasks| target.insert_in(self, tasks)).await
        })
    }
}

#[cfg(feature = "sqlx-sqlite")]
#[allow(private_interfaces, reason = "see `sealed`")]
impl<'a> sealed::SaveInto for &'a mut sqlx::SqliteConnection {
    type Output = SaveInFuture<'a>;
    type Detailed = SaveInDetailedFuture<'a>;

    fn ids(detailed: Self::Detailed) -> Self::Output {
        future_ids(detailed)
    }

    fn save_into(self, client: &Client, tasks: Result<Vec<NewTask>>) -> Self::Detailed {
        let target = client.sqlite_target().cloned();
        Box::pin(async move {
            let tasks = tasks?;
            let stored = target?.insert_in_sqlx(self, &tasks).await?;
            Batch::of(&tasks).saved(stored)
        })
    }
}

#[cfg(feature = "sqlx-postgres")]
#[allow(private_interfaces, reason = "see `sealed`")]
impl<'a> sealed::SaveInto for &'a mut sqlx::PgConnection {
    type Output = SaveInFuture<'a>;
    type Detailed = SaveInDetailedFuture<'a>;

    fn ids(detailed: Self::Detailed) -> Self::Output {
        future_ids(detailed)
    }

    fn save_into(self, client: &Client, tasks: Result<Vec<NewTask>>) -> Self::Detailed {
        let target = client.postgres_target().cloned();
        Box::pin(async move {
            let target = target?;
            insert_counted(tasks, |tasks| target.insert_in_sqlx(self, tasks)).await
        })
    }
}
