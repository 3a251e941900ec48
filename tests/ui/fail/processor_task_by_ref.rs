use backlite::{Context, Task, processor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "emails")]
struct Email;

#[processor]
async fn borrowed_task(_task: &Email) -> Result<(), std::io::Error> {
    Ok(())
}

#[processor]
async fn borrowed_context(_ctx: &Context, _task: Email) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
