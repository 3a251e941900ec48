use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", max_attempts = "5")]
struct QuotedInteger;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "b", timeout = 10)]
struct BareNumber;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = c, backoff = 5s, max_attempts = -1)]
struct Mixed;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "d", retention(only_failed = "yes"), backoff = exponential)]
struct Flags;

#[derive(Serialize, Deserialize, Task)]
#[queue(name, retention = true, backoff = exponentail(base = "1s", cap = "1m"))]
struct Forms;

fn main() {}
