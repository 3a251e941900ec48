use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "new order email")]
struct Spaces;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "")]
struct Empty;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")]
struct TooLong;

fn main() {}
