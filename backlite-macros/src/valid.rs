//! The rules that involve more than one value: the keys a queue needs, how `base` and `cap`
//! relate, and which types can be tasks at all. Rules about one value alone are checked as it
//! is parsed, in `attr.rs`.

use std::fmt::Write;
use std::time::Duration;

use crate::ast::{Input, Shape};
use crate::attr::{Backoff, By, Key, Queue, Spanned};
use crate::ctxt::Ctxt;
use crate::similar::did_you_mean;

/// Reports every broken rule. Returns the queue name when the attribute has one.
pub fn check<'q>(cx: &Ctxt, input: &Input, queue: &'q Queue) -> Option<&'q Spanned<String>> {
    check_shape(cx, input);
    if let Some(Backoff::Exponential(exp)) = &queue.backoff {
        const FORM: &str = "`exponential(base = \"1s\", cap = \"10m\")`";
        if let Key::Absent = exp.base {
            cx.error_at(
                exp.keyword,
                format!(
                    "exponential backoff needs a `base`, the wait after the first failure: {FORM}"
                ),
            );
        }
        if let Key::Absent = exp.cap {
            cx.error_at(
                exp.keyword,
                format!("exponential backoff needs a `cap`, the longest wait: {FORM}"),
            );
        }
        if let (Key::Value(base), Key::Value(cap)) = (exp.base, exp.cap) {
            if cap.value < base.value {
                cx.error_at(
                    cap.span,
                    format!(
                        "`cap` ({}) must be at least `base` ({})",
                        show(cap.value),
                        show(base.value)
                    ),
                );
            }
        }
    }
    if let Some(periodic) = &queue.periodic {
        match (&periodic.every, &periodic.cron) {
            (Key::Absent, Key::Absent) => cx.error_at(
                periodic.keyword,
                "`periodic` needs its schedule: `periodic(every = \"5m\")` or \
                 `periodic(cron = \"0 */5 * * * *\")`",
            ),
            (Key::Value(_), Key::Value(cron)) => cx.error_at(
                cron.span,
                "`periodic` takes one schedule: `every` or `cron`, not both",
            ),
            _ => {}
        }
    }
    if let Some(by) = queue.unique.as_ref().and_then(|unique| unique.by.as_ref()) {
        check_unique_fields(cx, input, by);
    }
    check_name(cx, input, queue)
}

/// Each field `unique(by = [..])` names is a field of the struct, reported at its own name.
fn check_unique_fields(cx: &Ctxt, input: &Input, by: &By) {
    let fields = match &input.shape {
        Shape::Struct(Some(fields)) => fields,
        Shape::Struct(None) | Shape::Enum => {
            let kind = match input.shape {
                Shape::Enum => "an enum",
                _ => "a struct without named fields",
            };
            cx.error_at(
                by.keyword,
                format!(
                    "`by` names fields of a struct with named fields, and `{}` is {kind}: omit \
                     `by` to compare whole payloads",
                    input.ident
                ),
            );
            return;
        }
        Shape::Union(_) => return,
    };
    let names: Vec<String> = fields.iter().map(ToString::to_string).collect();
    let candidates: Vec<&str> = names.iter().map(String::as_str).collect();
    for field in &by.fields {
        let name = field.to_string();
        if candidates.contains(&name.as_str()) {
            continue;
        }
        let hint = match did_you_mean(&name, &candidates) {
            Some(close) => format!("; did you mean `{close}`?"),
            None if candidates.is_empty() => "; it has no fields".to_owned(),
            None => {
                let listed: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
                format!("; its fields are {}", listed.join(", "))
            }
        };
        cx.error_spanned_by(
            field,
            format!("`{}` has no field `{name}`{hint}", input.ident),
        );
    }
}

/// A task is stored as one concrete type under one queue name.
fn check_shape(cx: &Ctxt, input: &Input) {
    if input.is_generic() {
        let message = "`#[derive(Task)]` needs a type without generic parameters: a queue \
                       stores one concrete type; derive it on a concrete type or a wrapper";
        if input.generics.params.is_empty() {
            cx.error_spanned_by(&input.generics.where_clause, message);
        } else {
            cx.error_spanned_by(input.generics, message);
        }
    }
    if let Shape::Union(union_token) = input.shape {
        cx.error_spanned_by(
            union_token,
            "`#[derive(Task)]` does not support unions, whose payload cannot be stored as \
             JSON; use a struct or an enum",
        );
    }
}

fn check_name<'q>(cx: &Ctxt, input: &Input, queue: &'q Queue) -> Option<&'q Spanned<String>> {
    match &queue.name {
        Key::Value(name) => return Some(name),
        Key::Refused => {}
        Key::Absent => match input.queue_attrs.first() {
            None => cx.error_spanned_by(
                input.ident,
                format!(
                    "`{}` needs `#[queue(name = \"..\")]`: every task type names the queue it \
                     is stored in",
                    input.ident
                ),
            ),
            Some(attr) => cx.error_spanned_by(
                attr,
                "missing `name`: every task type names the queue it is stored in, as in \
                 `#[queue(name = \"new_order_email\")]`",
            ),
        },
    }
    None
}

/// A duration the way it is written in the attribute, for messages: `1m30s`.
fn show(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            // Writing to a `String` cannot fail.
            let _ = write!(text, "{}{unit}", ms / size);
            ms %= size;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;

    #[test]
    fn durations_show_as_written() {
        let ms = Duration::from_millis;
        assert_eq!(show(ms(0)), "0s");
        assert_eq!(show(ms(500)), "500ms");
        assert_eq!(show(ms(90_000)), "1m30s");
        assert_eq!(show(ms(86_400_000 + 1)), "1d1ms");
        for text in ["7d", "1h30m", "10m", "1s500ms"] {
            assert_eq!(show(rules::parse_duration(text).unwrap()), text);
        }
    }
}
