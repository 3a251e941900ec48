//! Opening the database a command names: checked first without writing (a wrong path must
//! not become a new empty database, an old schema is not migrated behind the operator's
//! back), then opened as a client that never starts: no worker, no row in the processes
//! table, no claim.

use std::path::Path;

use crate::client::{Client, ClientBuilder};
use crate::database::{Database, redact};
use crate::schema::SchemaStatus;

use super::error::{CliError, exit};

/// Where the command's database is, as given.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) database: String,
    pub(crate) schema: Option<String>,
}

impl Target {
    /// `--database` and `--schema`, checked for what can be told before connecting.
    pub(crate) fn new(
        database: Option<String>,
        schema: Option<String>,
    ) -> Result<Target, CliError> {
        let Some(database) = database.filter(|d| !d.is_empty()) else {
            return Err(CliError::usage("no database given")
                .hint("pass --database <PATH|URL>, or set BACKLITE_DATABASE"));
        };
        let target = Target { database, schema };
        match (target.is_postgres(), &target.schema) {
            (true, _) if !cfg!(feature = "postgres") => {
                return Err(CliError::usage(format!(
                    "`{}` is a PostgreSQL URL, and this backlite command was built without \
                     PostgreSQL",
                    redact(&target.database)
                ))
                .hint("install it with `cargo install backlite --features cli,postgres`"));
            }
            (false, Some(_)) => {
                return Err(CliError::usage(
                    "--schema (BACKLITE_SCHEMA) applies to PostgreSQL databases only",
                ));
            }
            _ => {}
        }
        Ok(target)
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(Database::parse(&self.database), Database::Postgres(_))
    }

    /// The database as printed: a URL without its password.
    pub(crate) fn shown(&self) -> String {
        let shown = Database::parse(&self.database).to_string();
        match &self.schema {
            Some(schema) => format!("{shown} (schema {schema})"),
            None => shown,
        }
    }

    /// A builder on this database, for a client that will never start.
    pub(crate) fn builder(&self) -> ClientBuilder {
        let builder = Client::builder().database(&self.database).pool_size(2);
        match &self.schema {
            Some(schema) => builder.schema(schema),
            None => builder,
        }
    }

    /// The schema's version, without creating or writing anything.
    pub(crate) async fn status(&self) -> Result<SchemaStatus, CliError> {
        if !self.is_postgres() && !Path::new(&self.database).exists() {
            return Err(CliError::new(
                exit::DATABASE,
                format!("no database at `{}`", self.database),
            )
            .hint(
                "check --database (or BACKLITE_DATABASE); `backlite migrate` creates a new one",
            ));
        }
        Ok(self.builder().schema_status().await?)
    }

    /// A client on a database that exists and is at this backlite's schema version.
    pub(crate) async fn open(&self) -> Result<Client, CliError> {
        let status = self.status().await?;
        check_current(&self.shown(), status)?;
        Ok(self.builder().build().await?)
    }
}

/// Refuses a database whose schema is not this backlite's, saying what to do.
pub(crate) fn check_current(shown: &str, status: SchemaStatus) -> Result<(), CliError> {
    if status.found == 0 {
        return Err(
            CliError::new(exit::SCHEMA, format!("`{shown}` holds no backlite tables")).hint(
                "check --database and --schema (BACKLITE_DATABASE, BACKLITE_SCHEMA); `backlite \
             migrate` creates the tables",
            ),
        );
    }
    if status.is_newer() {
        return Err(crate::error::Error::SchemaTooNew {
            found: status.found,
            supported: status.latest,
        }
        .into());
    }
    if status.pending() > 0 {
        return Err(CliError::new(
            exit::SCHEMA,
            format!(
                "the schema of `{shown}` is at version {}, older than version {} of this \
                 backlite",
                status.found, status.latest
            ),
        )
        .hint(
            "run `backlite migrate` (an application on this backlite version migrates when it \
             starts, too)",
        ));
    }
    Ok(())
}
