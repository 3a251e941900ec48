use std::rc::Rc;

use backlite::{Task, processor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct A;

async fn flush() {}

#[processor]
async fn holds_rc(_task: A) -> Result<(), std::io::Error> {
    let shared = Rc::new(1);
    flush().await;
    drop(shared);
    Ok(())
}

fn main() {}
