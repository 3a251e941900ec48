use backlite::{Task, processor, processors};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "emails")]
struct Email;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "other")]
struct Other;

#[processor]
async fn send(_task: Email) -> Result<(), std::io::Error> {
    Ok(())
}

#[processor]
async fn send_again(_task: Email) -> Result<(), std::io::Error> {
    Ok(())
}

#[processor]
async fn other(_task: Other) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {
    let _ = processors![send, other, send_again];
}
