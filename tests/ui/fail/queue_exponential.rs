use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", backoff = exponential(base = "1m", cap = "30s"))]
struct CapBelowBase;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "b", backoff = exponential(base = "1s"))]
struct NoCap;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "c", backoff = exponential(cap = "1s", jitter))]
struct NoBase;

fn main() {}
