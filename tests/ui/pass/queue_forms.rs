// Every form `#[queue(..)]` accepts, and the configuration each one builds.

use std::time::Duration;

use backlite::{Backoff, RetainData, Retention, Task};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "defaults")]
struct Defaults;

// Keys in any order, integer suffixes and raw strings are fine.
#[derive(Serialize, Deserialize, Task)]
#[queue(timeout = "1m30s", max_attempts = 7u32, name = r"every.key:v2-x_y", backoff = "500ms",
        retention(duration = "7d", only_failed, data(only_failed)),)]
struct EveryKey;

// Several `#[queue]` attributes read as one list.
#[derive(Serialize, Deserialize, Task)]
#[queue(name = "split")]
#[queue(max_attempts = 2)]
struct Split;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "limited", concurrency = 4)]
struct Limited;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "exp", backoff = exponential(base = "1s", cap = "10m"))]
struct Exponential;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "exp_jitter", backoff = exponential(cap = "1h", base = "2s", jitter))]
struct ExponentialJitter;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "exp_jitter_true", backoff = exponential(base = "1s", cap = "1s", jitter = true))]
struct ExponentialJitterTrue;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "exp_jitter_false", backoff = exponential(base = "1s", cap = "2s", jitter = false))]
struct ExponentialJitterFalse;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "retain_bare", retention)]
struct RetainBare;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "retain_empty", retention())]
struct RetainEmpty;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "retain_flags", retention(only_failed = true, data()))]
struct RetainFlags;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "retain_false", retention(only_failed = false, data(only_failed = false)))]
struct RetainFalse;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "retain_data", retention(data, duration = "6h"))]
struct RetainData_;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "retain_data_failed", retention(data(only_failed = true)))]
struct RetainDataFailed;

fn retention<T: Task>() -> Retention {
    T::CONFIG.retention().expect("retention is set")
}

fn main() {
    assert_eq!(Limited::CONFIG.concurrency(), Some(4));
    assert_eq!(Defaults::CONFIG.concurrency(), None);
    let ms = Duration::from_millis;

    assert_eq!(Defaults::CONFIG.name(), "defaults");
    assert_eq!(Defaults::CONFIG.max_attempts(), 1);
    assert_eq!(Defaults::CONFIG.backoff(), Backoff::NONE);
    assert_eq!(Defaults::CONFIG.timeout(), None);
    assert_eq!(Defaults::CONFIG.retention(), None);

    assert_eq!(EveryKey::CONFIG.name(), "every.key:v2-x_y");
    assert_eq!(EveryKey::CONFIG.max_attempts(), 7);
    assert_eq!(EveryKey::CONFIG.backoff(), Backoff::Fixed(ms(500)));
    assert_eq!(EveryKey::CONFIG.timeout(), Some(ms(90_000)));
    assert_eq!(
        retention::<EveryKey>(),
        Retention { duration: Some(ms(7 * 86_400_000)), only_failed: true, data: RetainData::OnlyFailed }
    );

    assert_eq!(Split::CONFIG.name(), "split");
    assert_eq!(Split::CONFIG.max_attempts(), 2);

    let exponential = |base, cap, jitter| Backoff::Exponential { base, cap, jitter };
    assert_eq!(Exponential::CONFIG.backoff(), exponential(ms(1_000), ms(600_000), false));
    assert_eq!(ExponentialJitter::CONFIG.backoff(), exponential(ms(2_000), ms(3_600_000), true));
    assert_eq!(ExponentialJitterTrue::CONFIG.backoff(), exponential(ms(1_000), ms(1_000), true));
    assert_eq!(ExponentialJitterFalse::CONFIG.backoff(), exponential(ms(1_000), ms(2_000), false));

    let keep = |duration, only_failed, data| Retention { duration, only_failed, data };
    assert_eq!(retention::<RetainBare>(), keep(None, false, RetainData::None));
    assert_eq!(retention::<RetainEmpty>(), keep(None, false, RetainData::None));
    assert_eq!(retention::<RetainFlags>(), keep(None, true, RetainData::All));
    assert_eq!(retention::<RetainFalse>(), keep(None, false, RetainData::All));
    assert_eq!(retention::<RetainData_>(), keep(Some(ms(21_600_000)), false, RetainData::All));
    assert_eq!(retention::<RetainDataFailed>(), keep(None, false, RetainData::OnlyFailed));
}
