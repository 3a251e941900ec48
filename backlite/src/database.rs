//! What `ClientBuilder::database` was given: an SQLite path or a PostgreSQL URL, told apart by
//! the URL's scheme. A URL's password never leaves this type: `Debug` and `Display` show the
//! URL without it, so that errors, logs and a printed builder cannot leak it.

use std::fmt;

/// The database a client opens.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Database {
    /// An SQLite file, or `":memory:"`.
    Sqlite(String),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl Database {
    pub(crate) fn parse(given: &str) -> Database {
        let lower = given.get(..13).unwrap_or(given).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Database::Postgres(given.to_owned())
        } else {
            Database::Sqlite(given.to_owned())
        }
    }
}

/// `url` with the password of its user-info part, if any, replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // The user info ends at the last `@` of the authority: a password may hold an `@` itself.
    let Some(at) = authority.rfind('@') else {
        return redact_query(url);
    };
    let user_info = &authority[..at];
    let redacted = match user_info.find(':') {
        Some(colon) => format!("{}:***", &user_info[..colon]),
        None => user_info.to_owned(),
    };
    let url = format!("{}{}{}", &url[..scheme_end + 3], redacted, &rest[at..]);
    redact_query(&url)
}

/// A password may also come as a query parameter (`?password=..`).
fn redact_query(url: &str) -> String {
    let Some(query_start) = url.find('?') else {
        return url.to_owned();
    };
    let (head, query) = url.split_at(query_start + 1);
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}{}", params.join("&"))
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => f.write_str(path),
            Database::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::{Database, redact};

    #[test]
    fn urls_pick_postgres_and_everything_else_is_a_path() {
        for url in [
            "postgres://u@h/db",
            "postgresql://h/db",
            "POSTGRES://h",
            "PostgreSQL://u:p@h:5432/db?sslmode=disable",
        ] {
            assert!(
                matches!(Database::parse(url), Database::Postgres(_)),
                "{url}"
            );
        }
        for path in [
            "data.db",
            ":memory:",
            "/var/lib/postgres.db",
            "postgres",
            "",
        ] {
            assert!(
                matches!(Database::parse(path), Database::Sqlite(_)),
                "{path}"
            );
        }
    }

    #[test]
    fn passwords_never_show() {
        let cases = [
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u:s@cr:et@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?password=secret&x=1",
                "postgres://h/db?password=***&x=1",
            ),
            (
                "postgresql://u:p@h/db?sslmode=require",
                "postgresql://u:***@h/db?sslmode=require",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown);
            let db = Database::parse(url);
            assert!(!format!("{db} {db:?}").contains("secret"));
        }
    }
}
