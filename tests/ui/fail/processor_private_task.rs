use backlite::{Task, processor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct Private;

// A public processor of a private task type would let other crates run that type.
#[processor]
pub async fn public(_task: Private) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
