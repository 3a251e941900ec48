// One attribute, several mistakes: every one is reported, at its own token.
use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(
    name = "has space",
    max_attempts = 0,
    max_attempts = 2,
    timout = "10s",
    backoff = "soon",
    retention(duration = "0s", data(only_failed = maybe)),
)]
struct EverythingWrong;

// The placeholder impl keeps later uses of the type from adding errors.
const _: &str = EverythingWrong::CONFIG.name();

fn main() {}
