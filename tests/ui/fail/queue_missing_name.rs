use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(max_attempts = 3)]
struct NoName;

#[derive(Serialize, Deserialize, Task)]
#[queue()]
struct Empty;

fn main() {}
