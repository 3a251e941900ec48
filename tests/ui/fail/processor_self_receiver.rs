use backlite::{Task, processor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "a")]
struct A;

struct Mailer;

impl Mailer {
    #[processor]
    async fn send(&self, _task: A) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {
    let _ = Mailer.send(A);
}
