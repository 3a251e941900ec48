//! The hook on task events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backlite::testing::TestClock;
use backlite::{Client, Task, TaskEvent, TaskStatus, processor, processors};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "invoices", max_attempts = 2, backoff = "1m", retention)]
struct Invoice {
    ok: bool,
}

#[processor]
async fn send_invoice(task: Invoice) -> Result<(), std::io::Error> {
    match task.ok {
        true => Ok(()),
        false => Err(std::io::Error::other("mail server down")),
    }
}

/// An event as the test keeps it: its kind and the fields that matter here.
fn describe(event: &TaskEvent<'_>) -> String {
    match event {
        TaskEvent::Started { queue, attempt, .. } => format!("started {queue} #{attempt}"),
        TaskEvent::Succeeded { attempt, .. } => format!("succeeded #{attempt}"),
        TaskEvent::Retried {
            attempt,
            error,
            retry_in,
            ..
        } => format!("retried #{attempt} in {retry_in:?}: {error}"),
        TaskEvent::Failed { attempt, error, .. } => format!("failed #{attempt}: {error}"),
        TaskEvent::Released { count, .. } => format!("released {count}"),
        _ => "other".into(),
    }
}

#[tokio::test]
async fn hooks_see_every_attempt_and_a_panicking_hook_costs_nothing() {
    let clock = TestClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let client = Client::builder()
        .database(":memory:")
        .processors(processors![send_invoice])
        .test_clock(clock.clone())
        .on_event(move |event: &TaskEvent<'_>| log.lock().unwrap().push(describe(event)))
        .on_event(|_: &TaskEvent<'_>| panic!("a broken hook"))
        .build()
        .await
        .unwrap();
    let good = client.add(Invoice { ok: true }).save().await.unwrap()[0];
    client.drain().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        ["started invoices #1", "succeeded #1"]
    );
    assert_eq!(client.status(&good).await.unwrap(), TaskStatus::Succeeded);

    seen.lock().unwrap().clear();
    let bad = client.add(Invoice { ok: false }).save().await.unwrap()[0];
    client.drain().await.unwrap();
    clock.advance(Duration::from_secs(60));
    client.drain().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "started invoices #1",
            "retried #1 in 60s: mail server down",
            "started invoices #2",
            "failed #2: mail server down",
        ]
    );
    assert_eq!(client.status(&bad).await.unwrap(), TaskStatus::Failed);
}
