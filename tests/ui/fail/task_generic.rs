use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "wrapper")]
struct Wrapper<T> {
    inner: T,
}

fn main() {
    // The error above is the only one: the type's other uses still compile.
    let _ = Wrapper::<u32>::CONFIG.name();
}
