//! The hook on task events and the span around each attempt.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backlite::testing::TestClock;
use backlite::{Client, Task, TaskEvent, TaskStatus, processor, processors};
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "invoices", max_attempts = 2, backoff = "1m", retention)]
struct Invoice {
    ok: bool,
}

#[processor]
async fn send_invoice(task: Invoice) -> Result<(), std::io::Error> {
    tracing::info!(ok = task.ok, "sending the invoice");
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

/// Keeps the fields of every `backlite.process` span, and for each event inside one, the
/// event's message with that span's fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, Fields)>>>);

#[derive(Clone, Debug, Default, PartialEq)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        ctx.span(id).unwrap().extensions_mut().insert(fields);
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope.filter(|span| span.name() == "backlite.process") {
            let mut message = Fields::default();
            event.record(&mut message);
            let fields = span.extensions().get::<Fields>().unwrap().clone();
            let text = message.0.remove("message").unwrap_or_default();
            self.0.lock().unwrap().push((text, fields));
        }
    }
}

#[tokio::test]
async fn each_attempt_runs_in_a_messaging_span_around_the_processor_events() {
    let capture = Capture::default();
    // The test's runtime has one thread, which runs the drained attempts too.
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let client = Client::builder()
        .database(":memory:")
        .processors(processors![send_invoice])
        .build()
        .await
        .unwrap();
    let id = client.add(Invoice { ok: true }).save().await.unwrap()[0];
    client.drain().await.unwrap();

    let events = capture.0.lock().unwrap().clone();
    let (message, span) = events
        .iter()
        .find(|(message, _)| message == "sending the invoice")
        .expect("the processor's event is not inside a backlite.process span");
    assert_eq!(message, "sending the invoice");
    let expected = [
        ("messaging.system", "backlite".to_owned()),
        ("messaging.operation", "process".to_owned()),
        ("messaging.destination.name", "invoices".to_owned()),
        ("messaging.message.id", id.to_string()),
        ("attempt", "1".to_owned()),
        ("otel.name", "process invoices".to_owned()),
        ("otel.kind", "consumer".to_owned()),
    ];
    for (field, value) in expected {
        assert_eq!(span.0.get(field), Some(&value), "{field} in {span:?}");
    }
}
