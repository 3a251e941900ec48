use backlite::{Task, processors};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct A;

// No `#[processor]`.
async fn plain(_task: A) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {
    let _ = processors![plain];
    let _ = plain(A);
}
