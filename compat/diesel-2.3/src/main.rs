//! backlite beside diesel 2.3 (`sqlite`): one SQLite library, one database file.

#[path = "../../common/backlite_part.rs"]
mod backlite_part;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("compat.db");
    let client = backlite_part::client(&path).await?;

    let url = path
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 temp path"))?;
    let mut conn = SqliteConnection::establish(url)?;
    conn.batch_execute("PRAGMA busy_timeout = 5000; CREATE TABLE notes (body TEXT NOT NULL)")?;
    let inserted =
        diesel::sql_query("INSERT INTO notes (body) VALUES ('from diesel')").execute(&mut conn)?;
    anyhow::ensure!(inserted == 1, "{inserted} rows inserted");

    backlite_part::run_one_task(&client, &[]).await?;

    let notes: Count =
        diesel::sql_query("SELECT COUNT(*) AS n FROM notes").get_result(&mut conn)?;
    anyhow::ensure!(notes.n == 1, "{} notes", notes.n);
    println!("diesel 2.3, SQLite {}", backlite_part::sqlite_version());
    Ok(())
}
