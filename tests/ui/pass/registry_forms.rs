// `processors![..]`: empty, one, several, paths into modules, a trailing comma.

use backlite::{Registry, Task, processor, processors};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a", max_attempts = 3)]
struct A;

#[processor]
async fn process_a(_task: A) -> Result<(), std::io::Error> {
    Ok(())
}

mod jobs {
    use super::*;

    #[derive(Serialize, Deserialize, Task)]
    #[queue(name = "b")]
    pub struct B;

    #[processor]
    pub async fn process_b(_task: B) -> Result<(), std::io::Error> {
        Ok(())
    }

    pub mod nested {
        use super::*;

        #[derive(Serialize, Deserialize, Task)]
        #[queue(name = "c")]
        pub struct C;

        #[processor]
        pub(crate) async fn process_c(_task: C) -> Result<(), std::io::Error> {
            Ok(())
        }
    }
}

fn queues(registry: &Registry) -> Vec<&'static str> {
    registry.queues().collect()
}

fn main() {
    let empty: Registry = processors![];
    assert!(queues(&empty).is_empty());

    assert_eq!(queues(&processors![process_a]), ["a"]);
    assert_eq!(queues(&processors![process_a,]), ["a"]);

    // Listed in any order, served in name order.
    let all = processors![jobs::nested::process_c, crate::jobs::process_b, self::process_a,];
    assert_eq!(queues(&all), ["a", "b", "c"]);
    assert_eq!(all.config("a").map(|c| c.max_attempts()), Some(3));

    // Inside a function, next to local processors.
    #[derive(Serialize, Deserialize, Task)]
    #[queue(name = "local")]
    struct Local;

    #[processor]
    async fn process_local(_task: Local) -> Result<(), std::io::Error> {
        Ok(())
    }

    assert_eq!(queues(&processors![process_local, process_a]), ["a", "local"]);
}
