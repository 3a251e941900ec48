//! Where a database's schema stands against this backlite, read without creating or
//! migrating anything: [`ClientBuilder::schema_status`].

use crate::client::ClientBuilder;
use crate::database::Database;
use crate::error::{Error, Result};

/// The schema version of a database and the one this backlite migrates to: what
/// [`ClientBuilder::schema_status`] reads. [`ClientBuilder::build`] applies the missing
/// migrations; a database at a newer version is refused ([`Error::SchemaTooNew`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaStatus {
    /// The version the database is at; 0 when it holds no backlite tables yet.
    pub found: i64,
    /// The newest version this backlite knows.
    pub latest: i64,
}

impl SchemaStatus {
    /// Whether the database is at this backlite's version: `build()` will migrate nothing.
    pub fn is_current(&self) -> bool {
        self.found == self.latest
    }

    /// How many migrations `build()` would apply (0 for a current or newer schema).
    pub fn pending(&self) -> i64 {
        (self.latest - self.found).max(0)
    }

    /// Whether a newer backlite wrote the database: this one refuses to open it.
    pub fn is_newer(&self) -> bool {
        self.found > self.latest
    }
}

impl ClientBuilder {
    /// Reads the schema version of the database this builder names (and, on PostgreSQL,
    /// its [`schema`](ClientBuilder::schema)), without creating, migrating or locking it:
    /// for a deploy step that checks whether a migration is due before it runs one, or a
    /// tool that must not write to a database it was pointed at by mistake.
    ///
    /// A missing SQLite file is [`Error::Open`] (it is not created); a PostgreSQL schema
    /// without backlite's tables reads as version 0.
    ///
    /// ```no_run
    /// # async fn run() -> backlite::Result<()> {
    /// let status = backlite::Client::builder().database("data.db").schema_status().await?;
    /// if status.pending() > 0 {
    ///     println!("{} migrations to apply", status.pending());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn schema_status(&self) -> Result<SchemaStatus> {
        let (found, latest) = match self.database_given() {
            None => {
                return Err(Error::Config(
                    "no database path: call `.database(..)`".into(),
                ));
            }
            Some(Database::Sqlite(path)) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || crate::storage::sqlite::schema::version(&path))
                    .await
                    .map_err(|e| Error::Storage(e.to_string().into()))??
            }
            #[cfg(feature = "postgres")]
            Some(Database::Postgres(url)) => {
                let schema = self.schema_given().unwrap_or("public");
                crate::storage::postgres::schema::version(url, schema).await?
            }
            #[cfg(not(feature = "postgres"))]
            Some(Database::Postgres(url)) => {
                return Err(Error::Config(format!(
                    "`{}` is a PostgreSQL URL: enable backlite's `postgres` feature to use it",
                    crate::database::redact(url)
                )));
            }
        };
        Ok(SchemaStatus { found, latest })
    }
}
