use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", max_attempts = 0)]
struct NeverRuns;

fn main() {}
