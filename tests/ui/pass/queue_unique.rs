// `unique`: alone, with a window, with the fields compared (raw names too); the window is
// what `QueueConfig::unique` reports, zero when there is none.

use std::time::Duration;

use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "bare", unique)]
struct Bare {
    user: u64,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "empty", unique())]
enum Empty {
    A,
    B(u8),
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "window", max_attempts = 3, unique(for = "1h30m"))]
struct Window(u64);

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "fields", unique(by = [customer, r#type], for = "10m"))]
struct Fields {
    customer: u64,
    r#type: String,
    note: String,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "plain")]
struct Plain;

fn main() {
    assert_eq!(Bare::CONFIG.unique(), Some(Duration::ZERO));
    assert_eq!(Empty::CONFIG.unique(), Some(Duration::ZERO));
    assert_eq!(Window::CONFIG.unique(), Some(Duration::from_secs(5400)));
    assert_eq!(Window::CONFIG.max_attempts(), 3);
    assert_eq!(Fields::CONFIG.unique(), Some(Duration::from_secs(600)));
    assert_eq!(Plain::CONFIG.unique(), None);
    assert!(Bare::UNIQUE_BY.is_none());

    let by = Fields::UNIQUE_BY.expect("`by` gives the fields");
    let task = Fields {
        customer: 7,
        r#type: "weekly".into(),
        note: "not compared".into(),
    };
    assert_eq!(
        by(&task).unwrap(),
        serde_json::json!({"customer": 7, "type": "weekly"})
    );
}
