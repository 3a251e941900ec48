use backlite::{Task, processor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct A;

#[processor]
fn blocking(_task: A) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {
    // The function is emitted unchanged, so its callers do not add errors.
    let _ = blocking(A);
}
