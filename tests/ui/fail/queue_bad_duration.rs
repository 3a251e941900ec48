use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", timeout = "30", backoff = "5x")]
struct NoUnit;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "b", timeout = "1m 30s", retention(duration = "30s1m"))]
struct Spaced;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "c", timeout = "", backoff = exponential(base = "s", cap = "99999999999999999999d"))]
struct Empty;

fn main() {}
