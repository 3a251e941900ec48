//! Unique tasks: the key that makes two tasks equal, and what a save reports about them.
//!
//! A task of a queue with `#[queue(unique(..))]` (or [`QueueConfigBuilder::unique`]), or one
//! added with [`AddTasks::unique_key`], carries a key: the SHA-256 of the queue's name and of
//! what is compared (the payload, the fields of `unique(by = [..])`, or the key the add gave).
//! The database holds at most one waiting, running or succeeded task per key (a partial
//! unique index); the drivers insert with "on conflict do nothing" and report the id of the
//! task that holds the key.
//!
//! # Stability
//!
//! Keys are stored, so a key computed by one version of backlite must be the one the next
//! computes for the same task, or a deploy would let duplicates in beside tasks still waiting.
//! The key is therefore a fixed function, independent of the order serde writes fields in and
//! of serde_json's features (`preserve_order`):
//!
//! - SHA-256, a fixed standard, over `"backlite.unique.v1"`, a zero byte, the queue's name, a
//!   zero byte, a kind byte (`p` for a payload or its fields, `k` for a key given to the add),
//!   a zero byte, then the compared bytes;
//! - the payload as canonical JSON: the task's `serde_json::Value`, written without spaces,
//!   with object keys sorted by their UTF-8 bytes, strings escaped as serde_json escapes them
//!   and numbers as serde_json writes them (integers in decimal, floats in their shortest form
//!   that reads back the same);
//! - for `by = [..]`: the object `{"field": value, ..}` of the named fields under their Rust
//!   names, canonical in the same way, so the order of the list does not matter.
//!
//! What changes a key: the queue's name, a field's serialized form (a renamed field, a
//! `#[serde(rename)]`, a changed type), for `by` a field's Rust name. A change of these rules
//! would be a new version prefix, and named in the changelog.
//!
//! [`QueueConfigBuilder::unique`]: crate::QueueConfigBuilder::unique
//! [`AddTasks::unique_key`]: crate::AddTasks::unique_key

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::storage::NewTask;
use crate::task::TaskId;

/// What `unique(by = [..])` compares, as `#[derive(Task)]` builds it.
pub type UniqueValue = Result<Value, serde_json::Error>;

/// The function `#[derive(Task)]` writes for `unique(by = [..])`.
pub type UniqueBy<T> = fn(&T) -> UniqueValue;

/// One field's value, for `unique(by = [..])`.
pub fn unique_value<T: Serialize + ?Sized>(value: &T) -> UniqueValue {
    serde_json::to_value(value)
}

/// The object of the named fields, for `unique(by = [..])`.
pub fn unique_fields<const N: usize>(fields: [(&'static str, UniqueValue); N]) -> UniqueValue {
    let mut object = serde_json::Map::new();
    for (name, value) in fields {
        object.insert(name.to_owned(), value?);
    }
    Ok(Value::Object(object))
}

/// The version prefix of every key; see the module's "Stability".
const DOMAIN: &[u8] = b"backlite.unique.v1";

/// The key of a task compared by `value`: its payload, or the object of its `by` fields.
pub(crate) fn value_key(queue: &str, value: &Value) -> Vec<u8> {
    let mut canonical = Vec::new();
    write_canonical(value, &mut canonical);
    key(queue, b'p', &canonical)
}

/// The key of a task added with `unique_key(key)`.
pub(crate) fn given_key(queue: &str, given: &[u8]) -> Vec<u8> {
    key(queue, b'k', given)
}

fn key(queue: &str, kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update([0]);
    hasher.update(queue.as_bytes());
    hasher.update([0, kind, 0]);
    hasher.update(bytes);
    hasher.finalize().to_vec()
}

/// `value` as canonical JSON: no spaces, object keys in byte order.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => out.extend_from_slice(number.to_string().as_bytes()),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(object) => {
            let mut entries: Vec<(&String, &Value)> = object.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (name, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(name, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // Writing a string into a `Vec` cannot fail: serde_json errs only on the writer's errors
    // and on map keys that are not strings.
    if serde_json::to_writer(&mut *out, text).is_err() {
        unreachable!("serializing a str into a Vec<u8> cannot fail");
    }
}

/// What a save did with one task: what [`AddTasks::save_detailed`] and
/// [`AddTasks::save_in_detailed`] return per task, in the order added.
///
/// [`AddTasks::save_detailed`]: crate::AddTasks::save_detailed
/// [`AddTasks::save_in_detailed`]: crate::AddTasks::save_in_detailed
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Saved {
    /// Stored, with this new id.
    Added(TaskId),
    /// Not stored: an equal unique task was there already (waiting, scheduled, running, or
    /// succeeded within its queue's window), or came earlier in the same batch. Its id.
    Duplicate(TaskId),
}

impl Saved {
    /// The id of the stored task: the new one, or the one already there.
    pub fn id(&self) -> TaskId {
        match *self {
            Saved::Added(id) | Saved::Duplicate(id) => id,
        }
    }

    /// Whether the task was a duplicate, and not stored.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Saved::Duplicate(_))
    }
}

/// A batch handed to storage, to tell what storing it did from the ids storage returns.
pub(crate) struct Batch {
    ids: Vec<TaskId>,
    queues: Vec<&'static str>,
}

impl Batch {
    pub(crate) fn of(tasks: &[NewTask]) -> Batch {
        Batch {
            ids: tasks.iter().map(|t| t.id).collect(),
            queues: tasks.iter().map(|t| t.queue).collect(),
        }
    }

    /// Each task's outcome, from the id storage stored for it (its own, or a duplicate's
    /// holder); counts the added ones in the metrics.
    pub(crate) fn saved(self, stored: Vec<TaskId>) -> Result<Vec<Saved>> {
        if stored.len() != self.ids.len() {
            return Err(Error::Storage(
                format!(
                    "storage answered {} ids for {} tasks",
                    stored.len(),
                    self.ids.len()
                )
                .into(),
            ));
        }
        let saved: Vec<Saved> = self
            .ids
            .iter()
            .zip(stored)
            .map(|(own, stored)| {
                if *own == stored {
                    Saved::Added(stored)
                } else {
                    Saved::Duplicate(stored)
                }
            })
            .collect();
        crate::metrics::Added::count(&self.queues, &saved).record();
        Ok(saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let mut out = Vec::new();
        write_canonical(
            &json!({"b": 1, "a": [true, null, {"z": "é\n", "y": 1.5}], "A": -2}),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"A":-2,"a":[true,null,{"y":1.5,"z":"é\n"}],"b":1}"#
        );
    }

    #[test]
    fn keys_ignore_field_order_and_separate_queues_and_kinds() {
        let a = value_key("q", &json!({"x": 1, "y": "two"}));
        let b = value_key("q", &json!({"y": "two", "x": 1}));
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        assert_ne!(a, value_key("r", &json!({"x": 1, "y": "two"})));
        assert_ne!(a, value_key("q", &json!({"x": 2, "y": "two"})));
        // A given key never equals a payload's, even with the same bytes.
        assert_ne!(
            value_key("q", &json!("k")),
            given_key("q", br#""k""#),
            "kinds are apart"
        );
        assert_ne!(given_key("q", b"k"), given_key("r", b"k"));
    }

    /// The keys are stored: these values must never change (see "Stability"). They were
    /// computed apart from this code, from the byte layout the module documents.
    #[test]
    fn keys_are_stable() {
        assert_eq!(
            hex(&value_key(
                "emails",
                &json!({"to": "a@example.com", "n": 3})
            )),
            "e9c9a449c0e01324bb5acf240f4b522ab922bd416c01c3eaec09b64788ae23db"
        );
        assert_eq!(
            hex(&given_key("emails", b"order-42")),
            "abdfb1ec8365018ac456513ae11799c2c328da8551e59b31f2a797af6ee959ea"
        );
    }

    #[test]
    fn fields_make_one_object() {
        let value = unique_fields([("b", unique_value(&2)), ("a", unique_value("x"))]).unwrap();
        assert_eq!(value, json!({"a": "x", "b": 2}));
    }
}
