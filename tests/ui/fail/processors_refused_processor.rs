// A processor that `#[processor]` refused is still accepted by `processors![..]`: its one
// error is all the user sees.
use backlite::{Task, processor, processors};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct A;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "b")]
struct B;

#[processor]
fn blocking(_task: A) -> Result<(), std::io::Error> {
    Ok(())
}

#[processor]
async fn no_task() -> Result<(), std::io::Error> {
    Ok(())
}

#[processor]
async fn fine(_task: B) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {
    let _ = processors![blocking, no_task, fine];
}
