//! Rules that the `#[queue(..)]` macro checks at compile time and the runtime checks again for
//! hand-written `Task` impls. This file depends only on `core` and `croner`, because
//! `backlite-macros` compiles it too (a proc-macro crate cannot depend on the runtime crate).

use core::fmt;
use core::time::Duration;

/// Longest queue name accepted.
pub const QUEUE_NAME_MAX_LEN: usize = 100;

/// Why a queue name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueNameError {
    /// The name is the empty string.
    Empty,
    /// The name is longer than [`QUEUE_NAME_MAX_LEN`] bytes.
    TooLong,
    /// The name holds a character other than ASCII letters, digits, `_`, `-`, `.` and `:`.
    InvalidChar,
}

impl fmt::Display for QueueNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueNameError::Empty => f.write_str("a queue name must not be empty"),
            QueueNameError::TooLong => write!(
                f,
                "a queue name must be at most {QUEUE_NAME_MAX_LEN} characters long"
            ),
            QueueNameError::InvalidChar => f.write_str(
                "a queue name may hold only ASCII letters, digits and the characters `_ - . :`",
            ),
        }
    }
}

/// Checks a queue name: non-empty, at most 100 characters, ASCII letters, digits, `_ - . :`.
///
/// A `const fn` so that a `QueueConfig` built in a constant is checked by the compiler.
pub const fn validate_queue_name(name: &str) -> Result<(), QueueNameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(QueueNameError::Empty);
    }
    if bytes.len() > QUEUE_NAME_MAX_LEN {
        return Err(QueueNameError::TooLong);
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')) {
            return Err(QueueNameError::InvalidChar);
        }
        i += 1;
    }
    Ok(())
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// The string is empty.
    Empty,
    /// A number is missing before a unit, as in `"s"` or `"1m s"`.
    MissingNumber,
    /// A number has no unit after it, as in `"30"`.
    MissingUnit,
    /// The unit is not one of `ms`, `s`, `m`, `h`, `d`.
    UnknownUnit(String),
    /// A unit is repeated or out of order, as in `"30s1m"`; write the largest unit first.
    UnitOrder,
    /// The value does not fit in a `Duration` of whole milliseconds.
    Overflow,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FORMS: &str =
            "write a duration such as \"500ms\", \"10s\", \"1m30s\", \"6h\" or \"7d\"";
        match self {
            DurationError::Empty => write!(f, "empty duration: {FORMS}"),
            DurationError::MissingNumber => write!(f, "a unit has no number before it: {FORMS}"),
            DurationError::MissingUnit => write!(f, "a number has no unit after it: {FORMS}"),
            DurationError::UnknownUnit(unit) => {
                write!(f, "unknown unit `{unit}`; the units are ms, s, m, h and d")
            }
            DurationError::UnitOrder => {
                f.write_str("each unit may appear once, largest first (as in \"1h30m\")")
            }
            DurationError::Overflow => f.write_str("the duration is too large"),
        }
    }
}

/// Parses durations such as `"500ms"`, `"10s"`, `"1m30s"`, `"6h"`, `"7d"`.
///
/// The grammar is one or more `<digits><unit>` pairs with no spaces, units `d`, `h`, `m`, `s`,
/// `ms`, each at most once and largest first. Zero (`"0s"`) parses; callers that need a
/// positive duration check for it.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let bytes = text.as_bytes();
    let mut total_ms: u64 = 0;
    // Rank of the last unit seen; units must strictly decrease.
    let mut last_rank = u8::MAX;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let mut value: u64 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(bytes[i] - b'0')))
                .ok_or(DurationError::Overflow)?;
            i += 1;
        }
        if i == start {
            return Err(DurationError::MissingNumber);
        }
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &text[unit_start..i];
        let (rank, ms_per_unit) = match unit {
            "" if i == bytes.len() => return Err(DurationError::MissingUnit),
            "" => return Err(DurationError::UnknownUnit(char_at(text, i).to_owned())),
            "d" => (4, 86_400_000),
            "h" => (3, 3_600_000),
            "m" => (2, 60_000),
            "s" => (1, 1_000),
            "ms" => (0, 1),
            other => return Err(DurationError::UnknownUnit(other.to_owned())),
        };
        if rank >= last_rank {
            return Err(DurationError::UnitOrder);
        }
        last_rank = rank;
        total_ms = value
            .checked_mul(ms_per_unit)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or(DurationError::Overflow)?;
        if i < bytes.len() && !bytes[i].is_ascii_digit() {
            // Anything that is neither a digit nor a letter, such as a space or a dot.
            let bad = &text[i..text[i..]
                .char_indices()
                .nth(1)
                .map_or(text.len(), |(n, _)| i + n)];
            return Err(DurationError::UnknownUnit(bad.to_owned()));
        }
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses a cron expression as periodic schedules read it: five fields, or six with the
/// second first; no year field. `periodic(cron = "..")` is checked at compile time with this
/// parser, and `Schedule::cron` uses it at run time.
pub fn parse_cron(expression: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expression)
}

/// The character starting at byte `i`.
fn char_at(text: &str, i: usize) -> &str {
    let end = text[i..]
        .char_indices()
        .nth(1)
        .map_or(text.len(), |(n, _)| i + n);
    &text[i..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let ms = |n| Duration::from_millis(n);
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("10s"), Ok(ms(10_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1d2h3m4s5ms"), Ok(ms(93_784_005)));
        assert_eq!(parse_duration("0s"), Ok(ms(0)));
    }

    #[test]
    fn bad_durations_are_refused() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("30"), Err(DurationError::MissingUnit));
        assert_eq!(parse_duration("s"), Err(DurationError::MissingNumber));
        assert_eq!(
            parse_duration("5x"),
            Err(DurationError::UnknownUnit("x".into()))
        );
        assert_eq!(
            parse_duration("1.5h"),
            Err(DurationError::UnknownUnit(".".into()))
        );
        assert_eq!(
            parse_duration("1m 30s"),
            Err(DurationError::UnknownUnit(" ".into()))
        );
        assert_eq!(parse_duration("30s1m"), Err(DurationError::UnitOrder));
        assert_eq!(parse_duration("1s1s"), Err(DurationError::UnitOrder));
        assert_eq!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn queue_names() {
        assert_eq!(validate_queue_name("new_order-email.v2:eu"), Ok(()));
        assert_eq!(validate_queue_name(""), Err(QueueNameError::Empty));
        assert_eq!(
            validate_queue_name(&"a".repeat(101)),
            Err(QueueNameError::TooLong)
        );
        assert_eq!(validate_queue_name(&"a".repeat(100)), Ok(()));
        assert_eq!(validate_queue_name("a b"), Err(QueueNameError::InvalidChar));
        assert_eq!(validate_queue_name("é"), Err(QueueNameError::InvalidChar));
    }
}
