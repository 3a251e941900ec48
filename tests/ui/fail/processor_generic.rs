use backlite::{Task, processor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct A;

#[processor]
async fn generic<T: Task>(_task: T) -> Result<(), std::io::Error> {
    Ok(())
}

#[processor]
async fn impl_trait(_task: impl Task) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {
    let _ = generic(A);
    let _ = impl_trait(A);
}
