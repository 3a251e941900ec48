// `#[derive(Task)]` works on every shape of struct and on enums, with any serde attributes.

use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "named")]
struct Named {
    id: u64,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "tuple")]
struct Tuple(u64, String);

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "unit")]
struct Unit;

#[derive(Serialize, Deserialize, Task)]
#[serde(tag = "kind")]
#[queue(name = "enum")]
enum Event {
    Created { id: u64 },
    Deleted { id: u64 },
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "empty_enum")]
enum Never {}

// Visibility, docs and other attributes around the derive do not matter.
mod inner {
    use super::*;

    /// A documented task.
    #[derive(Debug, Clone, Serialize, Deserialize, Task)]
    #[queue(name = "inner")]
    pub struct Inner(pub u8);
}

fn names<const N: usize>(names: [&str; N]) -> [&str; N] {
    names
}

fn main() {
    assert_eq!(
        names([
            Named::CONFIG.name(),
            Tuple::CONFIG.name(),
            Unit::CONFIG.name(),
            Event::CONFIG.name(),
            Never::CONFIG.name(),
            inner::Inner::CONFIG.name(),
        ]),
        ["named", "tuple", "unit", "enum", "empty_enum", "inner"]
    );
    let _ = (Named { id: 1, note: None }.id, Tuple(1, String::new()).1, Unit);
    let _ = (Event::Created { id: 1 }, Event::Deleted { id: 2 }, inner::Inner(3).0);
}
