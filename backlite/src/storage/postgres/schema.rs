//! The schema version of a PostgreSQL schema, read without creating or migrating anything
//! (`ClientBuilder::schema_status`).

use std::time::Duration;

use tokio_postgres::NoTls;

use super::{map_error, migrations, quote_ident};
use crate::database::redact;
use crate::error::{Error, Result};

/// The version recorded in `schema`'s `backlite_schema` (0 when the schema, or that table,
/// does not exist), and the newest this build knows. One connection of its own, closed after.
pub(crate) async fn version(url: &str, schema: &str) -> Result<(i64, i64)> {
    let shown = redact(url);
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| Error::Open {
        path: shown.clone(),
        source: Box::new(e),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let (client, connection) = config.connect(NoTls).await.map_err(|e| Error::Open {
        path: shown.clone(),
        source: Box::new(e),
    })?;
    let connection = tokio::spawn(connection);
    let read = async {
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables \
                 WHERE schemaname = $1 AND tablename = 'backlite_schema')",
                &[&schema],
            )
            .await?
            .try_get(0)?;
        if !exists {
            return Ok(0);
        }
        let sql = format!(
            "SELECT COALESCE(MAX(version), 0) FROM {}.backlite_schema",
            quote_ident(schema)
        );
        client.query_one(&sql, &[]).await?.try_get::<_, i32>(0)
    };
    let found = read.await.map_err(map_error)?;
    drop(client);
    // The connection ends once its client is dropped; its own error (if any) changes nothing.
    let _ = connection.await;
    Ok((i64::from(found), i64::from(migrations::LATEST)))
}

#[cfg(test)]
mod tests {
    use super::version;
    use crate::storage::postgres::{migrations, test_url};

    /// A schema that does not exist reads as version 0 and is not created by the read; a
    /// migrated one reads as the latest.
    #[tokio::test]
    async fn reads_the_version_without_creating_the_schema() {
        let Some(url) = test_url() else { return };
        let schema = format!("backlite_test_{}_status", std::process::id());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
        let latest = i64::from(migrations::LATEST);
        assert_eq!(version(&url, &schema).await.unwrap(), (0, latest));
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&schema],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!exists, "the read created the schema");
        let mut migrating = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map(|(c, conn)| {
                tokio::spawn(conn);
                c
            })
            .unwrap();
        migrations::migrate(&mut migrating, &schema).await.unwrap();
        assert_eq!(version(&url, &schema).await.unwrap(), (latest, latest));
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
