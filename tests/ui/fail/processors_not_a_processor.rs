use backlite::{Task, processor, processors};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct A;

#[processor]
async fn process_a(_task: A) -> Result<(), std::io::Error> {
    Ok(())
}

mod jobs {
    pub struct Helper;
}

async fn plain(_task: A) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {
    let _ = processors![process_a, jobs::Helper, A];
    let _ = plain(A);
}
