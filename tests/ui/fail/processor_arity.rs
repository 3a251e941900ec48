use backlite::{Context, Task, processor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct A;

#[processor]
async fn nothing() -> Result<(), std::io::Error> {
    Ok(())
}

#[processor]
async fn too_many(_ctx: Context, _task: A, _extra: u32, _more: bool) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
