use backlite::{Task, processor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct A;

#[processor]
async fn attempt_first(_attempt: u32, _task: A) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
