//! `#[derive(Task)]` builds the same `QueueConfig` as the builder would, field for field.

use std::time::Duration;

use backlite::{Backoff, QueueConfig, RetainData, Retention, Task};
use serde::{Deserialize, Serialize};

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "minimal")]
struct Minimal;

#[test]
fn defaults_are_the_builders() {
    assert_eq!(Minimal::CONFIG, QueueConfig::builder("minimal").build());
}

#[derive(Serialize, Deserialize, Task)]
#[queue(
    name = "new_order_email",
    max_attempts = 5,
    backoff = "5s",
    timeout = "10s",
    retention(duration = "6h", only_failed, data(only_failed))
)]
struct NewOrderEmail {
    order_id: String,
}

#[test]
fn every_key_of_a_fixed_backoff() {
    let expected = QueueConfig::builder("new_order_email")
        .max_attempts(5)
        .backoff(Backoff::Fixed(Duration::from_secs(5)))
        .timeout(Duration::from_secs(10))
        .retention(Retention {
            duration: Some(Duration::from_secs(6 * 3600)),
            only_failed: true,
            data: RetainData::OnlyFailed,
        })
        .build();
    assert_eq!(NewOrderEmail::CONFIG, expected);
}

#[derive(Serialize, Deserialize, Task)]
#[queue(
    name = "reports:v2",
    max_attempts = 10,
    backoff = exponential(base = "1m30s", cap = "1d", jitter),
    timeout = "1h",
    retention(data)
)]
enum Report {
    Daily,
    Monthly { year: u16, month: u8 },
}

#[test]
fn exponential_backoff_with_jitter() {
    let expected = QueueConfig::builder("reports:v2")
        .max_attempts(10)
        .backoff(Backoff::Exponential {
            base: ms(90_000),
            cap: ms(86_400_000),
            jitter: true,
        })
        .timeout(ms(3_600_000))
        .retention(Retention {
            duration: None,
            only_failed: false,
            data: RetainData::All,
        })
        .build();
    assert_eq!(Report::CONFIG, expected);
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "thumbnail", backoff = exponential(base = "250ms", cap = "4s"), retention)]
struct Thumbnail(String);

#[test]
fn exponential_backoff_without_jitter_and_bare_retention() {
    let expected = QueueConfig::builder("thumbnail")
        .backoff(Backoff::Exponential {
            base: ms(250),
            cap: ms(4_000),
            jitter: false,
        })
        .retention(Retention {
            duration: None,
            only_failed: false,
            data: RetainData::None,
        })
        .build();
    assert_eq!(Thumbnail::CONFIG, expected);
}

#[derive(Serialize, Deserialize, Task)]
#[queue(
    name = "audit",
    timeout = "2d3h4m5s6ms",
    retention(only_failed = true, duration = "30d", data())
)]
struct Audit;

#[test]
fn combined_durations_and_explicit_flags() {
    let expected = QueueConfig::builder("audit")
        .timeout(ms(2 * 86_400_000 + 3 * 3_600_000 + 4 * 60_000 + 5_000 + 6))
        .retention(Retention {
            duration: Some(ms(30 * 86_400_000)),
            only_failed: true,
            data: RetainData::All,
        })
        .build();
    assert_eq!(Audit::CONFIG, expected);
}

#[derive(Serialize, Deserialize, Task)]
#[queue(
    name = "cleanup",
    retention(only_failed = false, data(only_failed = false))
)]
struct Cleanup;

#[test]
fn false_flags_are_the_defaults() {
    let expected = QueueConfig::builder("cleanup")
        .retention(Retention {
            duration: None,
            only_failed: false,
            data: RetainData::All,
        })
        .build();
    assert_eq!(Cleanup::CONFIG, expected);
}

/// The configuration is a constant: usable in `const` items and array lengths.
const EMAIL_ATTEMPTS: u32 = NewOrderEmail::CONFIG.max_attempts();

#[test]
fn the_configuration_is_a_constant() {
    const LEN: usize = NewOrderEmail::CONFIG.name().len();
    let name = [0u8; LEN];
    assert_eq!(name.len(), "new_order_email".len());
    assert_eq!(EMAIL_ATTEMPTS, 5);
}
