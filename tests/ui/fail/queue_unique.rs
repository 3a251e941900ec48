// `unique(..)`: every mistake at its own token: a field that does not exist (with a
// suggestion, or the list of fields), `by` on a type without named fields, a list that is
// not one, empty or repeating itself, a zero window, a misspelt or misplaced key, a value in
// place of the list, and a field that cannot be serialized.
use backlite::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "misspelt", unique(by = [custmer, day]))]
struct Misspelt {
    customer: u64,
    day: u32,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "unknown", unique(by = [customer, region], for = "1h"))]
struct Unknown {
    customer: u64,
    day: u32,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "an_enum", unique(by = [customer]))]
enum AnEnum {
    A { customer: u64 },
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "not_a_list", unique(by = customer))]
struct NotAList {
    customer: u64,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "empty", unique(by = []))]
struct Empty {
    customer: u64,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "twice", unique(by = [customer, customer], for = "0s"))]
struct Twice {
    customer: u64,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "keys", unique(fo = "1h"), by = [customer])]
struct Keys {
    customer: u64,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "value", unique = "1h")]
struct Value {
    customer: u64,
}

struct Connection;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "skipped", unique(by = [customer, connection]))]
struct Skipped {
    customer: u64,
    #[serde(skip)]
    connection: Option<Connection>,
}

fn main() {}
