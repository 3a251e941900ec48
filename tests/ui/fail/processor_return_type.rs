use backlite::{Task, processor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct A;

struct NotAnError;

#[processor]
async fn nothing(_task: A) {}

#[processor]
async fn unit(_task: A) -> () {}

#[processor]
async fn value(_task: A) -> Result<u32, std::io::Error> {
    Ok(1)
}

#[processor]
async fn not_an_error(_task: A) -> Result<(), NotAnError> {
    Ok(())
}

fn main() {}
