//! The span around each attempt. Alone in its binary, with the subscriber installed for the
//! whole process: a subscriber set for one thread only misses events whose callsite another
//! test's thread registered first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use backlite::{Client, Task, processor, processors};
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "invoices")]
struct Invoice {
    number: u64,
}

#[processor]
async fn send_invoice(task: Invoice) -> Result<(), std::io::Error> {
    tracing::info!(number = task.number, "sending the invoice");
    Ok(())
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
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
        .unwrap();
    let client = Client::builder()
        .database(":memory:")
        .processors(processors![send_invoice])
        .build()
        .await
        .unwrap();
    let id = client.add(Invoice { number: 7 }).save().await.unwrap()[0];
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
