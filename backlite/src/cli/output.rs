//! What the commands print: aligned tables and times for people, JSON for scripts.

use std::io::Write;
use std::time::{Duration, SystemTime};

use crate::storage::to_millis;
use crate::task::TaskStatus;
use crate::utc::utc;

/// A table of text cells, each column as wide as its widest cell, two spaces apart; columns
/// of counts are aligned right. (A dependency would add borders and colours; a shell user
/// wants columns that `grep`, `sort -k` and `awk` read.)
pub(crate) struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers; a header that starts with `>` is aligned right
    /// (the `>` is not shown).
    pub(crate) fn new(headers: &[&'static str]) -> Table {
        Table {
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            headers: headers.iter().map(|h| h.trim_start_matches('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right.get(i).copied().unwrap_or(false) {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < row.len() {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `time` for a table: to the second, in UTC.
pub(crate) fn time(time: SystemTime) -> String {
    let (date, clock, _) = utc(to_millis(time));
    format!("{date} {clock}")
}

/// An optional time for a table: `-` when there is none.
pub(crate) fn time_or_dash(at: Option<SystemTime>) -> String {
    at.map_or_else(|| "-".into(), time)
}

/// `time` for JSON: RFC 3339 in UTC, to the millisecond.
pub(crate) fn json_time(time: SystemTime) -> serde_json::Value {
    let (date, clock, millis) = utc(to_millis(time));
    serde_json::Value::String(format!("{date}T{clock}.{millis:03}Z"))
}

pub(crate) fn json_time_opt(time: Option<SystemTime>) -> serde_json::Value {
    time.map_or(serde_json::Value::Null, json_time)
}

/// A duration for people: `850ms`, `12.3s`, `4m05s`.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let secs = d.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

pub(crate) fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Pending => "pending",
        TaskStatus::Running => "running",
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
        TaskStatus::NotFound => "not found",
    }
}

/// The first line of `text`, cut to `max` characters, for a table cell.
pub(crate) fn cell(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max || text.lines().nth(1).is_some() {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// Prints `text` to standard output. A closed pipe (`backlite ls | head`) is not an error.
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Prints `value` as pretty JSON, with a final newline.
pub(crate) fn print_json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    print(&format!("{text}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_counts() {
        let mut table = Table::new(&["QUEUE", ">PENDING", "NOTE"]);
        table.row(vec!["emails".into(), "7".into(), "a".into()]);
        table.row(vec!["q".into(), "1234".into(), String::new()]);
        assert_eq!(
            table.render(),
            "QUEUE   PENDING  NOTE\nemails        7  a\nq          1234\n"
        );
    }

    #[test]
    fn times_and_durations_read_for_people() {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(time(at), "2026-11-18 11:06:40");
        assert_eq!(json_time(at), "2026-11-18T11:06:40.123Z");
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(cell("boom\nat line 2", 20), "boom…");
        assert_eq!(cell("abcdef", 4), "abc…");
    }
}
