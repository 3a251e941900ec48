use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", priority = 40000)]
struct TooHigh;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "b", priority = -40000)]
struct TooLow;

fn main() {}
