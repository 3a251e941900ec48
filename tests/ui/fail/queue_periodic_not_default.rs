// A periodic task enqueues `Self::default()` at every tick: a type without `Default` is
// reported at `periodic`.
use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "report", periodic(every = "1h"))]
struct Report {
    to: String,
}

fn main() {}
