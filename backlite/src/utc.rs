//! Dates in UTC from stored times, for what people read (the UI's pages, an explanation's
//! text), without a date crate.

use crate::storage::Millis;

/// The date, the time of day and the milliseconds of `at`, in UTC.
pub(crate) fn utc(at: Millis) -> (String, String, i64) {
    let days = at.div_euclid(86_400_000);
    let in_day = at.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let secs = in_day / 1000;
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
        in_day % 1000,
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), so that no date crate is needed for one conversion.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `at` as "2026-11-22 10:44:12.345 UTC".
pub(crate) fn utc_text(at: Millis) -> String {
    let (date, clock, millis) = utc(at);
    format!("{date} {clock}.{millis:03} UTC")
}

#[cfg(test)]
mod tests {
    #[test]
    fn texts_are_utc_dates_to_the_millisecond() {
        assert_eq!(super::utc_text(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(
            super::utc_text(1_795_000_000_123),
            "2026-11-18 11:06:40.123 UTC"
        );
    }
}
