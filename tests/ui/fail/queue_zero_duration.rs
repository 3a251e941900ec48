use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", timeout = "0s", backoff = "0ms", retention(duration = "0d"))]
struct Zeros;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "b", backoff = exponential(base = "0s", cap = "0s"))]
struct ZeroExponential;

fn main() {}
