use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
struct NoQueue {
    id: u64,
}

fn main() {}
