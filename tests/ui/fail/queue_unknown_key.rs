use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", max_attempt = 3)]
struct Misspelt;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "b", retries = 3)]
struct Unknown;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "c", retention(durration = "1d"), backoff = exponential(base = "1s", cap = "1m", jiter))]
struct Nested;

fn main() {}
