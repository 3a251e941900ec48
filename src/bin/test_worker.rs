//! A worker process for the multi-process and crash tests: `test_worker <db> add <n> [queue]`
//! adds tasks; `test_worker <db> work <log> <workers> <millis>` serves until its stdin closes
//! (or it is killed), appending `start <id> <pid>` and `end <id> <pid>` lines to `<log>`
//! around every run, each task taking `<millis>` ms.

use std::io::Write;
use std::time::Duration;

use backlite::{Client, Context, Task, processor, processors};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "work", max_attempts = 3)]
struct Work {
    n: u64,
    millis: u64,
}

static LOG: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

fn log(line: &str) {
    if let Some(Ok(mut file)) = LOG.get().map(|f| f.lock()) {
        // One write per line with O_APPEND: lines of several processes do not interleave.
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

#[processor]
async fn work(ctx: Context, task: Work) -> Result<(), std::io::Error> {
    let pid = std::process::id();
    log(&format!("start {} {pid} {}", ctx.task_id(), task.n));
    tokio::time::sleep(Duration::from_millis(task.millis)).await;
    log(&format!("end {} {pid} {}", ctx.task_id(), task.n));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: test_worker <db> add <n> <millis> | work <log> <workers> <release_ms>";
    let (db, mode) = match (args.get(1), args.get(2)) {
        (Some(db), Some(mode)) => (db.as_str(), mode.as_str()),
        _ => return Err(usage.into()),
    };
    let arg = |i: usize| -> Result<u64, Box<dyn std::error::Error>> {
        Ok(args.get(i).ok_or(usage)?.parse()?)
    };
    match mode {
        "add" => {
            let client = Client::builder().database(db).build().await?;
            let (n, millis) = (arg(3)?, arg(4)?);
            for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
                let mut batch = client.add(Work {
                    n: chunk[0],
                    millis,
                });
                for &n in &chunk[1..] {
                    batch = batch.add(Work { n, millis });
                }
                batch.save().await?;
            }
        }
        "work" => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(args.get(3).ok_or(usage)?)?;
            let _ = LOG.set(std::sync::Mutex::new(file));
            let client = Client::builder()
                .database(db)
                .workers(arg(4)? as usize)
                .release_after(Duration::from_millis(arg(5)?))
                .processors(processors![work])
                .build()
                .await?;
            client.start();
            println!("ready");
            // Serve until stdin closes: the parent ends us by closing it, or kills us.
            tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                while std::io::stdin()
                    .read_line(&mut sink)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {}
            })
            .await?;
            client.stop(Duration::from_secs(10)).await;
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
