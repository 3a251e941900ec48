use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", concurrency = 0)]
struct Zero;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "b", concurrency = -2)]
struct Negative;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "c", concurrency = 2.5)]
struct Fraction;

fn main() {}
