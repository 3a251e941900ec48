//! The testing helpers, used as an application's tests would use them: a scheduled task and
//! a retry's backoff driven by a clock the test moves, with no sleeping anywhere.

use std::sync::Mutex;
use std::time::Duration;

use backlite::testing::{TestClock, TestContext};
use backlite::{Client, Context, Task, TaskStatus, processor, processors};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Task)]
#[queue(name = "reminders", retention(duration = "1d"))]
struct Reminder {
    user: u64,
}

/// Sends the reminder and queues a follow-up, due at once.
#[processor]
async fn remind(ctx: Context, task: Reminder) -> Result<(), backlite::Error> {
    ctx.client()
        .add(FollowUp { user: task.user })
        .save()
        .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Task)]
#[queue(name = "follow_ups", retention(duration = "1d"))]
struct FollowUp {
    user: u64,
}

#[processor]
async fn follow_up(_task: FollowUp) -> Result<(), std::io::Error> {
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Task)]
#[queue(
    name = "charges",
    max_attempts = 3,
    backoff = "10m",
    retention(duration = "1d")
)]
struct Charge {
    id: u64,
}

/// Which attempts of which charge ran; the card network is down for the first two.
static CHARGE_ATTEMPTS: Mutex<Vec<(u64, u32)>> = Mutex::new(Vec::new());

#[processor]
async fn charge(ctx: Context, task: Charge) -> Result<(), std::io::Error> {
    CHARGE_ATTEMPTS
        .lock()
        .unwrap()
        .push((task.id, ctx.attempt()));
    if ctx.attempt() < 3 {
        return Err(std::io::Error::other("card network down"));
    }
    Ok(())
}

async fn client(clock: &TestClock) -> Client {
    Client::builder()
        .database(":memory:")
        .processors(processors![remind, follow_up, charge])
        .test_clock(clock.clone())
        .build()
        .await
        .unwrap()
}

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test]
async fn a_scheduled_task_runs_once_the_clock_reaches_it() {
    let clock = TestClock::new();
    let client = client(&clock).await;
    let id = client
        .add(Reminder { user: 7 })
        .wait(DAY)
        .save()
        .await
        .unwrap()[0];

    assert_eq!(client.drain().await.unwrap(), 0, "ran a task due tomorrow");
    let waiting = client.enqueued::<Reminder>().await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        (waiting[0].id, &waiting[0].task),
        (id, &Reminder { user: 7 })
    );
    assert_eq!(waiting[0].run_at, clock.now() + DAY);

    clock.advance(DAY - Duration::from_secs(1));
    assert_eq!(client.drain().await.unwrap(), 0, "ran a second early");
    clock.advance(Duration::from_secs(1));
    // The reminder, then the follow-up it added.
    assert_eq!(client.drain().await.unwrap(), 2);
    assert_eq!(client.status(&id).await.unwrap(), TaskStatus::Succeeded);
    assert!(client.enqueued::<Reminder>().await.unwrap().is_empty());
    assert!(client.enqueued::<FollowUp>().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_retry_waits_for_its_backoff_on_the_test_clock() {
    let clock = TestClock::new();
    let client = client(&clock).await;
    let id = client.add(Charge { id: 1 }).save().await.unwrap()[0];
    let attempts = || -> Vec<u32> {
        let runs = CHARGE_ATTEMPTS.lock().unwrap();
        runs.iter().filter(|r| r.0 == 1).map(|r| r.1).collect()
    };

    assert_eq!(client.drain().await.unwrap(), 1);
    assert_eq!(attempts(), [1]);
    let waiting = client.enqueued::<Charge>().await.unwrap();
    assert_eq!(
        (waiting[0].attempts, waiting[0].run_at),
        (1, clock.now() + 10 * MINUTE)
    );

    clock.advance(9 * MINUTE);
    assert_eq!(
        client.drain().await.unwrap(),
        0,
        "retried during the backoff"
    );
    clock.advance(MINUTE);
    assert_eq!(client.drain().await.unwrap(), 1);
    clock.advance(10 * MINUTE);
    assert_eq!(client.drain().await.unwrap(), 1);
    assert_eq!(attempts(), [1, 2, 3]);
    assert_eq!(client.status(&id).await.unwrap(), TaskStatus::Succeeded);
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_started_client_runs_what_an_advance_makes_due() {
    let clock = TestClock::new();
    let client = client(&clock).await;
    client.start();
    let id = client
        .add(Reminder { user: 8 })
        .wait(DAY)
        .save()
        .await
        .unwrap()[0];
    assert!(
        client.drain().await.is_err(),
        "drain ran beside a started dispatcher"
    );
    clock.advance(DAY);
    // No timer stands for a controlled clock: only the advance can have woken the
    // dispatcher. The deadline is only a guard against a hang.
    let done = async {
        while client.status(&id).await.unwrap() != TaskStatus::Succeeded {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), done)
        .await
        .expect("the advance did not wake the dispatcher");
    assert!(client.stop(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_processor_runs_inline_with_a_chosen_attempt_and_cancellation() {
    let client = Client::builder()
        .database(":memory:")
        .build()
        .await
        .unwrap();
    let first = TestContext::new(&client)
        .run::<charge>(Charge { id: 2 })
        .await;
    assert_eq!(first.unwrap_err().to_string(), "card network down");
    let last = TestContext::new(&client).attempt(3);
    assert!(last.run::<charge>(Charge { id: 2 }).await.is_ok());

    let ctx = TestContext::<Charge>::new(&client);
    assert!(!ctx.context().is_cancelled());
    ctx.cancel();
    let context = ctx.context();
    assert!(context.is_cancelled());
    context.cancelled().await;
    assert_eq!(
        (context.queue(), context.task_id()),
        ("charges", ctx.task_id())
    );
    // Nothing was stored: inline runs are the processor alone.
    assert!(client.enqueued::<Charge>().await.unwrap().is_empty());
}

/// The same queue as `Reminder`, with a field the stored payloads lack.
#[derive(Debug, Serialize, Deserialize, Task)]
#[queue(name = "reminders")]
struct ReminderV2 {
    user: u64,
    channel: String,
}

#[tokio::test]
async fn a_waiting_task_that_is_not_a_t_is_a_typed_error() {
    let clock = TestClock::at(std::time::UNIX_EPOCH + DAY);
    let client = client(&clock).await;
    client.add(Reminder { user: 9 }).save().await.unwrap();
    let waiting = client.enqueued::<Reminder>().await.unwrap();
    assert_eq!(waiting[0].run_at, std::time::UNIX_EPOCH + DAY);
    match client.enqueued::<ReminderV2>().await {
        Err(backlite::Error::Deserialize { queue, source }) => {
            assert_eq!(queue, "reminders");
            assert!(source.to_string().contains("channel"), "{source}");
        }
        other => panic!("expected a deserialize error, got {other:?}"),
    }
}
