// `periodic(..)`: a bad cron expression, a zero interval, a missing or doubled schedule, an
// unknown key, each reported at its own token.
use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize, Task)]
#[queue(name = "bad_cron", periodic(cron = "61 * * * *"))]
struct BadCron;

#[derive(Default, Serialize, Deserialize, Task)]
#[queue(name = "zero", periodic(every = "0s"))]
struct Zero;

#[derive(Default, Serialize, Deserialize, Task)]
#[queue(name = "empty", periodic())]
struct Empty;

#[derive(Default, Serialize, Deserialize, Task)]
#[queue(name = "both", periodic(every = "5m", cron = "0 * * * *"))]
struct Both;

#[derive(Default, Serialize, Deserialize, Task)]
#[queue(name = "misspelt", periodic(evry = "5m"), every = "1m")]
struct Misspelt;

#[derive(Default, Serialize, Deserialize, Task)]
#[queue(name = "value", periodic = "5m")]
struct Value;

fn main() {}
