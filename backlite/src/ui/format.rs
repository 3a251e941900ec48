//! Turning stored values into text people read: times (absolute in UTC and relative to the
//! page's "now"), durations, counts and payloads. Plain text only: the templates escape it.

use std::time::Duration;

use crate::storage::Millis;
use crate::utc::utc;

/// A moment, as the pages show it: "3 min ago" with "2026-11-22 10:44:12 UTC" beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Time {
    /// Relative to the page's now: "in 2 min", "5 s ago", "now".
    pub(crate) rel: String,
    /// "2026-11-22 10:44:12 UTC".
    pub(crate) abs: String,
    /// RFC 3339, for `<time datetime>`.
    pub(crate) iso: String,
}

impl Time {
    pub(crate) fn new(at: Millis, now: Millis) -> Time {
        let (date, clock, millis) = utc(at);
        Time {
            rel: relative(at, now),
            abs: format!("{date} {clock} UTC"),
            iso: format!("{date}T{clock}.{millis:03}Z"),
        }
    }
}

/// "in 2 min", "5 s ago", or "now" within a second.
pub(crate) fn relative(at: Millis, now: Millis) -> String {
    let delta = at.saturating_sub(now);
    if delta.unsigned_abs() < 1000 {
        return "now".to_owned();
    }
    let span = span(Duration::from_millis(delta.unsigned_abs()));
    if delta > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A span of at least a second in its two largest units, seconds only under ten minutes:
/// "42 s", "3 min 5 s", "25 min", "2 h 10 min".
fn span(span: Duration) -> String {
    let s = span.as_secs();
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let pair = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big} {big_unit}")
        } else {
            format!("{big} {big_unit} {small} {small_unit}")
        }
    };
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, ..10) => pair(m, "min", s, "s"),
        (0, 0, _) => format!("{m} min"),
        (0, _, _) => pair(h, "h", m, "min"),
        _ => pair(d, "d", h, "h"),
    }
}

/// How long an attempt ran: "850 µs", "12.3 ms", "1.25 s", "2 min 3 s".
pub(crate) fn duration(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else if us < 60_000_000 {
        format!("{:.2} s", us as f64 / 1_000_000.0)
    } else {
        span(d)
    }
}

/// 1234567 as "1,234,567".
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A payload's size: "312 B", "4.2 KiB".
pub(crate) fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// At most `max` characters of `text` on one line, with "…" when something was left out.
/// `cut` says the text was already cut short (a payload preview read from storage).
pub(crate) fn one_line(text: &str, max: usize, cut: bool) -> String {
    let mut out = String::new();
    let mut words = text.split_whitespace().peekable();
    let mut len = 0;
    while let Some(word) = words.next() {
        for c in word.chars() {
            if len == max {
                out.push('…');
                return out;
            }
            out.push(c);
            len += 1;
        }
        if words.peek().is_some() {
            if len == max {
                out.push('…');
                return out;
            }
            out.push(' ');
            len += 1;
        }
    }
    if cut {
        out.push('…');
    }
    out
}

/// The start of a payload, for a list. A preview cut inside a UTF-8 sequence loses the
/// partial character rather than showing a replacement mark.
pub(crate) fn preview(payload: &[u8], whole_len: u64, max: usize) -> String {
    let cut = (payload.len() as u64) < whole_len;
    let text = match std::str::from_utf8(payload) {
        Ok(text) => text.to_owned(),
        Err(e) if cut && e.error_len().is_none() => {
            String::from_utf8_lossy(&payload[..e.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(payload).into_owned(),
    };
    one_line(&text, max, cut)
}

/// A payload as indented JSON, its members in stored order (reparsing into a map would sort
/// them). What is not valid JSON is shown as text.
pub(crate) fn payload(payload: &[u8]) -> String {
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err() {
        return String::from_utf8_lossy(payload).into_owned();
    }
    let Ok(json) = std::str::from_utf8(payload) else {
        return String::from_utf8_lossy(payload).into_owned();
    };
    indent_json(json)
}

/// Re-indents valid JSON by two spaces per level, leaving strings and numbers untouched.
fn indent_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut chars = json.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    out.push(c);
                    match c {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.extend(chars.next());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_times_are_utc_dates() {
        let t = Time::new(0, 0);
        assert_eq!(t.abs, "1970-01-01 00:00:00 UTC");
        assert_eq!(t.iso, "1970-01-01T00:00:00.000Z");
        // 2024-02-29 23:59:59.250, a leap day.
        let t = Time::new(1_709_251_199_250, 0);
        assert_eq!(t.abs, "2024-02-29 23:59:59 UTC");
        assert_eq!(t.iso, "2024-02-29T23:59:59.250Z");
        assert_eq!(Time::new(-1, 0).abs, "1969-12-31 23:59:59 UTC");
        assert_eq!(Time::new(951_782_400_000, 0).abs, "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn relative_times_read_naturally() {
        let now = 1_000_000_000;
        assert_eq!(relative(now + 400, now), "now");
        assert_eq!(relative(now - 3_000, now), "3 s ago");
        assert_eq!(relative(now + 120_000, now), "in 2 min");
        assert_eq!(relative(now + 125_000, now), "in 2 min 5 s");
        assert_eq!(relative(now + 1_785_000, now), "in 29 min");
        assert_eq!(relative(now - 7_260_000, now), "2 h 1 min ago");
        assert_eq!(
            relative(now + 3 * 86_400_000 + 3_600_000, now),
            "in 3 d 1 h"
        );
        assert!(relative(i64::MIN, now).ends_with(" ago"));
    }

    #[test]
    fn durations_counts_and_sizes() {
        assert_eq!(duration(Duration::from_micros(850)), "850 µs");
        assert_eq!(duration(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(duration(Duration::from_millis(1_250)), "1.25 s");
        assert_eq!(duration(Duration::from_secs(123)), "2 min 3 s");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(bytes(312), "312 B");
        assert_eq!(bytes(4_300), "4.2 KiB");
    }

    #[test]
    fn previews_stay_on_one_line_and_mark_what_is_cut() {
        assert_eq!(one_line("a\n  b\tc", 10, false), "a b c");
        assert_eq!(one_line("abcdef", 3, false), "abc…");
        assert_eq!(one_line("abc", 3, true), "abc…");
        // "é" is two bytes: a preview cut between them drops the half character.
        assert_eq!(preview("aé".as_bytes()[..2].as_ref(), 3, 10), "a…");
        assert_eq!(preview(b"{\"a\":1}", 7, 10), "{\"a\":1}");
    }

    #[test]
    fn payloads_are_indented_in_stored_order() {
        let json = br#"{"z":1,"a":[1,{"s":"x,\"y\":{"}],"e":{},"l":[ ]}"#;
        assert_eq!(
            payload(json),
            "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    {\n      \"s\": \"x,\\\"y\\\":{\"\n    }\n  ],\n  \
             \"e\": {},\n  \"l\": []\n}"
        );
        assert_eq!(payload(b"\"<script>\""), "\"<script>\"");
        assert_eq!(payload(b"not json {"), "not json {");
    }
}
