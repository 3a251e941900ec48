//! Application state: values given to `ClientBuilder::state`, read by processors through
//! `State<T>` arguments and `Context::state`, and checked by `build()`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backlite::{Client, Context, Error, State, Task, processor, processors};
use common::{eventually, temp_db};
use serde::{Deserialize, Serialize};

const SHORT: Duration = Duration::from_secs(10);

/// A stand-in for a database pool: clones share one set of connections (here, the rows they
/// wrote) and count how many connections were checked out.
#[derive(Clone, Default)]
struct Pool {
    rows: Arc<Mutex<Vec<String>>>,
    checkouts: Arc<Mutex<u32>>,
}

impl Pool {
    fn insert(&self, row: String) {
        *self.checkouts.lock().unwrap() += 1;
        self.rows.lock().unwrap().push(row);
    }

    fn rows(&self) -> Vec<String> {
        let mut rows = self.rows.lock().unwrap().clone();
        rows.sort();
        rows
    }
}

#[derive(Clone)]
struct Settings {
    currency: &'static str,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "state_orders")]
struct Order {
    id: u32,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "state_refunds")]
struct Refund {
    id: u32,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "state_audit")]
struct Audit {
    id: u32,
}

/// The task first, its state after it.
#[processor]
async fn record_order(task: Order, State(pool): State<Pool>) -> Result<(), std::io::Error> {
    pool.insert(format!("order {}", task.id));
    Ok(())
}

/// States on both sides of the context and the task.
#[processor]
async fn record_refund(
    State(pool): State<Pool>,
    ctx: Context,
    task: Refund,
    State(settings): State<Settings>,
) -> Result<(), std::io::Error> {
    pool.insert(format!(
        "refund {} in {} (attempt {})",
        task.id,
        settings.currency,
        ctx.attempt()
    ));
    Ok(())
}

/// Code that holds only a `Context` reads the state through it.
fn pool_of(ctx: &Context) -> Option<&Pool> {
    ctx.state::<Pool>()
}

/// The task before the context: with arguments in any order, this is no mistake.
#[processor]
async fn record_audit(task: Audit, ctx: Context) -> Result<(), std::io::Error> {
    let Some(pool) = pool_of(&ctx) else {
        return Err(std::io::Error::other("no pool in the context"));
    };
    // A type the builder never received is absent, not an error.
    let absent = ctx.state::<u64>().is_none();
    pool.insert(format!("audit {} (u64 absent: {absent})", task.id));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_share_the_clients_state() {
    let db = temp_db();
    let pool = Pool::default();
    let client = Client::builder()
        .database(&db.path)
        .workers(4)
        .state(pool.clone())
        .state(Settings { currency: "EUR" })
        .processors(processors![record_order, record_refund, record_audit])
        .build()
        .await
        .expect("build");
    client.start();
    client
        .add(Order { id: 1 })
        .add(Order { id: 2 })
        .add(Refund { id: 3 })
        .add(Audit { id: 4 })
        .save()
        .await
        .expect("save");

    // Every processor wrote through a clone of the one pool the test holds.
    assert!(eventually(SHORT, || pool.rows().len() == 4).await);
    assert_eq!(
        pool.rows(),
        [
            "audit 4 (u64 absent: true)",
            "order 1",
            "order 2",
            "refund 3 in EUR (attempt 1)",
        ]
    );
    assert_eq!(*pool.checkouts.lock().unwrap(), 4);
    assert!(client.stop(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_missing_state_fails_build_naming_the_type_and_the_processor() {
    let db = temp_db();
    let result = Client::builder()
        .database(&db.path)
        .state(Pool::default())
        .processors(processors![record_order, record_refund])
        .build()
        .await;
    let Err(Error::Config(message)) = result else {
        panic!("expected a configuration error, got {result:?}");
    };
    assert!(message.contains("State<state::Settings>"), "{message}");
    assert!(message.contains("`state::record_refund`"), "{message}");
    assert!(message.contains("queue `state_refunds`"), "{message}");
    // Refused before the database was opened, so before any task could run.
    assert!(!db.path.exists());
}

#[tokio::test]
async fn a_second_value_of_one_type_fails_build() {
    let db = temp_db();
    let result = Client::builder()
        .database(&db.path)
        .state(Settings { currency: "EUR" })
        .state(Settings { currency: "USD" })
        .build()
        .await;
    let Err(Error::Config(message)) = result else {
        panic!("expected a configuration error, got {result:?}");
    };
    assert!(
        message.contains("two values of type `state::Settings`"),
        "{message}"
    );
}

#[tokio::test]
async fn processors_without_state_need_none() {
    let db = temp_db();
    // `record_audit` reads the pool through its context only: `build()` cannot know it
    // needs one, and the processor reports its absence itself.
    let client = Client::builder()
        .database(&db.path)
        .processors(processors![record_audit])
        .build()
        .await;
    assert!(client.is_ok(), "{client:?}");
}
