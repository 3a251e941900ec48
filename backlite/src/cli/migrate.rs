//! `backlite migrate` and `backlite migrate --check`.

use serde_json::json;

use super::error::{CliError, exit};
use super::open::Target;
use super::output::{print, print_json};

/// Applies the missing migrations (creating an SQLite file that does not exist), or with
/// `check` only reports whether any are due.
pub(crate) async fn run(target: &Target, check: bool, json: bool) -> Result<u8, CliError> {
    let shown = target.shown();
    if check {
        return report(target, json).await;
    }
    // A new SQLite file is at version 0; anything else is read before it is changed.
    let exists = target.is_postgres() || std::path::Path::new(&target.database).exists();
    let before = match exists {
        true => target.status().await?.found,
        false => 0,
    };
    let client = target.builder().build().await?;
    drop(client);
    let after = target.status().await?;
    if json {
        print_json(&json!({
            "database": shown,
            "from": before,
            "to": after.found,
            "migrated": after.found != before,
        }));
    } else if after.found == before {
        print(&format!(
            "`{shown}` is at schema version {}: nothing to migrate\n",
            after.found
        ));
    } else {
        print(&format!(
            "migrated `{shown}` from schema version {} to {}\n",
            before, after.found
        ));
    }
    Ok(exit::OK)
}

/// `--check`: 0 when current, 1 when migrations are due, 4 when the schema is newer.
async fn report(target: &Target, json: bool) -> Result<u8, CliError> {
    let shown = target.shown();
    let status = target.status().await?;
    let code = if status.is_newer() {
        exit::SCHEMA
    } else if status.pending() > 0 {
        exit::NOT_APPLIED
    } else {
        exit::OK
    };
    if json {
        print_json(&json!({
            "database": shown,
            "found": status.found,
            "latest": status.latest,
            "pending": status.pending(),
            "newer": status.is_newer(),
        }));
    } else if status.is_newer() {
        print(&format!(
            "`{shown}` is at schema version {}, newer than version {} of this backlite: \
             upgrade backlite\n",
            status.found, status.latest
        ));
    } else if status.pending() > 0 {
        print(&format!(
            "`{shown}` is at schema version {}; {} migration(s) to version {} are due: run \
             `backlite migrate`\n",
            status.found,
            status.pending(),
            status.latest
        ));
    } else {
        print(&format!(
            "`{shown}` is at schema version {}: up to date\n",
            status.found
        ));
    }
    Ok(code)
}
