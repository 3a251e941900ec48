// The generated code names everything by its full path, so it compiles next to user items
// that take the names it uses: `Result`, `Task`, `Context`, `Duration`, `serde`, `Option`,
// `Send`, `Box`, ... and without the user depending on serde_json.

#![allow(dead_code, non_camel_case_types)]

use ::serde as real_serde;

mod serde {}
mod core {}
mod std {}

type Result<T> = ::core::result::Result<T, MyError>;
type Duration = u8;
struct Task;
struct Context;
struct Option;
struct Some;
struct None;
struct Box;
struct Send;
struct Future;
struct QueueConfig;
struct Backoff;
struct Retention;
struct RetainData;
struct Processor;
struct BoxError;
struct ctx;
trait From {}
trait Into {}

#[derive(Debug)]
struct MyError;

impl ::core::fmt::Display for MyError {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.write_str("my error")
    }
}

impl ::std::error::Error for MyError {}

#[derive(real_serde::Serialize, real_serde::Deserialize, backlite::Task)]
#[queue(name = "shadowed", max_attempts = 2, backoff = exponential(base = "1s", cap = "1m", jitter),
        timeout = "5s", retention(duration = "1d", only_failed, data(only_failed)))]
struct Shadowed {
    id: u32,
}

#[derive(real_serde::Serialize, real_serde::Deserialize, backlite::Task)]
#[queue(name = "fixed", backoff = "1s", retention(data))]
struct Fixed;

#[backlite::processor]
async fn process(context: backlite::Context, task: Shadowed) -> Result<()> {
    let _ = (context, task.id);
    Ok(())
}

#[backlite::processor]
async fn fixed(_task: Fixed) -> Result<()> {
    Err(MyError)
}

fn main() {
    let registry = backlite::processors![process, fixed];
    ::std::assert_eq!(registry.queues().collect::<::std::vec::Vec<_>>(), ["fixed", "shadowed"]);
    ::std::assert_eq!(<Shadowed as backlite::Task>::CONFIG.max_attempts(), 2);
}
