// `priority` sets the queue's default priority, negative or not; without it, 0.

use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "urgent", priority = 9)]
struct Urgent;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "bulk", priority = -5, max_attempts = 2)]
struct Bulk;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "plain")]
struct Plain;

fn main() {
    assert_eq!(Urgent::CONFIG.priority(), 9);
    assert_eq!(Bulk::CONFIG.priority(), -5);
    assert_eq!(Bulk::CONFIG.max_attempts(), 2);
    assert_eq!(Plain::CONFIG.priority(), 0);
}
