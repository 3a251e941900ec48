use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", priority = "high")]
struct Named;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "b", priority = 1.5)]
struct Fraction;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "c", priority = "9")]
struct Quoted;

fn main() {}
