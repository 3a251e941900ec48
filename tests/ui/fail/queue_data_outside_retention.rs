use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", retention(duration = "1d"), data(only_failed))]
struct DataAtTopLevel;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "b", only_failed)]
struct OnlyFailedAtTopLevel;

fn main() {}
