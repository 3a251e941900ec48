use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", max_attempts = 3, timeout = "1s", max_attempts = 5)]
struct InOneAttribute;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "b")]
#[queue(name = "c")]
struct AcrossAttributes;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "d", retention(only_failed, only_failed = false))]
struct Nested;

fn main() {}
