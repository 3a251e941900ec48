use backlite::{State, Task, processor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct A;

// Neither is a `Context` or a `State`: which one is the task?
#[processor]
async fn attempt_first(_attempt: u32, _task: A) -> Result<(), std::io::Error> {
    Ok(())
}

mod app {
    pub struct Context;
}

// Named like backlite's, but the application's own type.
#[processor]
async fn own_context(_ctx: app::Context, _task: A) -> Result<(), std::io::Error> {
    Ok(())
}

struct Pool;

// State is cloned for each attempt.
#[processor]
async fn not_clone(_task: A, State(_pool): State<Pool>) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
