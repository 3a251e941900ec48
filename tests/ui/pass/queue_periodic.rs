// `periodic(..)` forms: an interval or a cron expression (five or six fields), beside the
// other keys, on a type that implements `Default`.

use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize, Task)]
#[queue(name = "every", periodic(every = "1m30s"))]
struct Every;

#[derive(Default, Serialize, Deserialize, Task)]
#[queue(name = "cron_minutes", max_attempts = 3, periodic(cron = "*/5 * * * MON-FRI"))]
struct CronMinutes;

#[derive(Default, Serialize, Deserialize, Task)]
#[queue(periodic(cron = "0 0 6 * * *"), name = "cron_seconds", retention)]
struct CronSeconds {
    #[serde(default)]
    note: String,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "plain")]
struct Plain;

fn main() {
    assert!(Every::PERIODIC.is_some());
    assert!(CronMinutes::PERIODIC.is_some());
    assert!(CronSeconds::PERIODIC.is_some());
    assert!(Plain::PERIODIC.is_none());
    assert_eq!(CronMinutes::CONFIG.max_attempts(), 3);
}
