//! Parses `#[queue(..)]` into plain data.
//!
//! This stage checks the syntax, the type of each value (a string where a string belongs, a
//! duration that parses) and the rules that concern one value alone (a valid queue name,
//! `max_attempts >= 1`, durations above zero), so that errors come out in the order of the
//! source. Rules that involve several keys or the type (a required key, `cap >= base`) are in
//! `valid.rs`. Every problem is reported to the [`Ctxt`] and parsing goes on, so that one
//! attribute with three mistakes gives three errors.

use std::time::Duration;

use proc_macro2::Span;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, ExprLit, ExprUnary, Ident, Lit, Path, Token, UnOp, token};

use crate::ctxt::Ctxt;
use crate::rules;
use crate::similar::did_you_mean;

/// A value read from the attribute, with the span of the literal it came from.
#[derive(Debug, Clone, Copy)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// A key that must be present, as far as parsing could tell.
#[derive(Debug, Clone, Copy)]
pub enum Key<T> {
    Absent,
    /// Present, but its value was refused and the error reported: not worth a second error
    /// saying the key is missing.
    Refused,
    Value(T),
}

/// The keys of `#[queue(..)]`; `None` where a key is absent or its value was refused. A value
/// that breaks a rule of its own (`max_attempts = 0`) is kept: its error is already reported.
pub struct Queue {
    pub name: Key<Spanned<String>>,
    pub max_attempts: Option<Spanned<u32>>,
    pub backoff: Option<Backoff>,
    pub timeout: Option<Spanned<Duration>>,
    pub retention: Option<Retention>,
    pub periodic: Option<Periodic>,
    pub concurrency: Option<Spanned<u32>>,
    pub priority: Option<Spanned<i16>>,
    pub unique: Option<Unique>,
}

/// `unique`, `unique(for = "1h")`, `unique(by = [customer_id, day], for = "1h")`: two tasks
/// of the queue are equal when their payloads (or the named fields) are.
pub struct Unique {
    /// How long a succeeded task keeps blocking equal ones; `None`: not after it ends.
    pub window: Option<Spanned<Duration>>,
    /// `by = [..]`: the fields compared, as written (each is checked against the type in
    /// `valid.rs`, at its own token); `None`: the whole payload.
    pub by: Option<By>,
}

/// `by = [field, ..]`.
pub struct By {
    /// The word `by`, where a type without named fields is reported.
    pub keyword: Span,
    /// Distinct names, in the order written.
    pub fields: Vec<Ident>,
}

/// `periodic(every = "5m")` or `periodic(cron = "0 */5 * * * *")`: the task's own schedule.
pub struct Periodic {
    /// The word `periodic`, where a missing schedule or a type without `Default` is reported.
    pub keyword: Span,
    pub every: Key<Spanned<Duration>>,
    /// Parsed with the runtime's cron parser; its error is reported at the literal.
    pub cron: Key<Spanned<String>>,
}

pub enum Backoff {
    /// `backoff = "5s"`
    Fixed(Spanned<Duration>),
    /// `backoff = exponential(base = "1s", cap = "10m", jitter)`
    Exponential(Exponential),
}

pub struct Exponential {
    /// The word `exponential`, where a missing `base` or `cap` is reported.
    pub keyword: Span,
    pub base: Key<Spanned<Duration>>,
    pub cap: Key<Spanned<Duration>>,
    pub jitter: bool,
}

/// `retention`, `retention(..)`: completed tasks are kept.
#[derive(Default)]
pub struct Retention {
    pub duration: Option<Spanned<Duration>>,
    pub only_failed: bool,
    pub data: Data,
}

/// Which retained tasks keep their payload.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// No `data` key.
    #[default]
    None,
    /// `data` or `data()`.
    All,
    /// `data(only_failed)`.
    OnlyFailed,
}

/// The lists of keys, for "unknown key" messages.
const QUEUE: List = List {
    name: "#[queue(..)]",
    keys: &[
        "name",
        "max_attempts",
        "backoff",
        "timeout",
        "retention",
        "periodic",
        "concurrency",
        "priority",
        "unique",
    ],
};
const UNIQUE: List = List {
    name: "unique(..)",
    keys: &["by", "for"],
};
const PERIODIC: List = List {
    name: "periodic(..)",
    keys: &["every", "cron"],
};
const RETENTION: List = List {
    name: "retention(..)",
    keys: &["duration", "only_failed", "data"],
};
const DATA: List = List {
    name: "data(..)",
    keys: &["only_failed"],
};
const EXPONENTIAL: List = List {
    name: "exponential(..)",
    keys: &["base", "cap", "jitter"],
};

/// What to write for each key, quoted in the messages.
fn example(key: &str) -> &'static str {
    match key {
        "name" => "name = \"new_order_email\"",
        "max_attempts" => "max_attempts = 5",
        "priority" => "priority = 5",
        "backoff" => "backoff = \"5s\"` or `backoff = exponential(base = \"1s\", cap = \"10m\")",
        "timeout" => "timeout = \"30s\"",
        "retention" => "retention(duration = \"7d\", only_failed, data(only_failed))",
        "duration" => "duration = \"7d\"",
        "data" => "data(only_failed)",
        "base" => "base = \"1s\"",
        "cap" => "cap = \"10m\"",
        "periodic" => "periodic(every = \"5m\")` or `periodic(cron = \"0 */5 * * * *\")",
        "every" => "every = \"5m\"",
        "cron" => "cron = \"0 */5 * * * *\"",
        "concurrency" => "concurrency = 4",
        "unique" => "unique(for = \"1h\")` or `unique(by = [customer_id], for = \"1h\")",
        "for" => "for = \"1h\"",
        "by" => "by = [customer_id, day]",
        _ => "",
    }
}

/// Reads every `#[queue(..)]` of the type as one list of keys.
pub fn parse(cx: &Ctxt, attrs: &[&Attribute]) -> Queue {
    let mut name = Slot::new("name");
    let mut max_attempts = Slot::new("max_attempts");
    let mut backoff = Slot::new("backoff");
    let mut timeout = Slot::new("timeout");
    let mut retention = Slot::new("retention");
    let mut periodic = Slot::new("periodic");
    let mut concurrency = Slot::new("concurrency");
    let mut priority = Slot::new("priority");
    let mut unique = Slot::new("unique");

    for attr in attrs {
        let parsed = attr.parse_nested_meta(|meta| {
            match key(&meta.path).as_deref() {
                Some("name") => name.set(cx, &meta, value(cx, &meta, queue_name)?),
                Some("max_attempts") => {
                    max_attempts.set(cx, &meta, value(cx, &meta, max_attempts_value)?);
                }
                Some("backoff") => backoff.set(cx, &meta, value(cx, &meta, backoff_value)?),
                Some("timeout") => timeout.set(cx, &meta, value(cx, &meta, duration)?),
                Some("retention") => retention.set(cx, &meta, retention_list(cx, &meta)?),
                Some("periodic") => periodic.set(cx, &meta, periodic_list(cx, &meta)?),
                Some("concurrency") => {
                    concurrency.set(cx, &meta, value(cx, &meta, concurrency_value)?);
                }
                Some("priority") => priority.set(cx, &meta, value(cx, &meta, priority_value)?),
                Some("unique") => unique.set(cx, &meta, unique_list(cx, &meta)?),
                _ => unknown_key(cx, &meta, &QUEUE)?,
            }
            Ok(())
        });
        if let Err(error) = parsed {
            cx.syn_error(error);
        }
    }

    Queue {
        name: name.key(),
        max_attempts: max_attempts.value,
        backoff: backoff.value,
        timeout: timeout.value,
        retention: retention.value,
        periodic: periodic.value,
        concurrency: concurrency.value,
        priority: priority.value,
        unique: unique.value,
    }
}

/// One key of a list. It remembers that the key was seen, so that a second occurrence is an
/// error at the second one, even when the first one's value was refused.
struct Slot<T> {
    key: &'static str,
    seen: bool,
    value: Option<T>,
}

impl<T> Slot<T> {
    fn new(key: &'static str) -> Self {
        Slot {
            key,
            seen: false,
            value: None,
        }
    }

    fn key(self) -> Key<T> {
        match (self.seen, self.value) {
            (_, Some(value)) => Key::Value(value),
            (true, None) => Key::Refused,
            (false, None) => Key::Absent,
        }
    }

    fn set(&mut self, cx: &Ctxt, meta: &ParseNestedMeta, value: Option<T>) {
        if self.seen {
            cx.error_spanned_by(
                &meta.path,
                format!("duplicate `{}`: each key may appear only once", self.key),
            );
        } else {
            self.seen = true;
            self.value = value;
        }
    }
}

/// The key, or `None` for a path such as `a::b` (never a valid key).
fn key(path: &Path) -> Option<String> {
    path.get_ident().map(ToString::to_string)
}

fn path_text(path: &Path) -> String {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    segments.join("::")
}

/// The value of a `key = value` pair, turned into `T` by `convert` (which reports a value of
/// the wrong kind itself). A key written without `= value` is reported at the key.
fn value<T>(
    cx: &Ctxt,
    meta: &ParseNestedMeta,
    convert: fn(&Ctxt, &str, &Expr) -> Option<T>,
) -> syn::Result<Option<T>> {
    let key = path_text(&meta.path);
    if meta.input.peek(Token![=]) {
        let expr: Expr = meta.value()?.parse()?;
        return Ok(convert(cx, &key, &expr));
    }
    skip_value(meta)?;
    cx.error_spanned_by(
        &meta.path,
        format!("`{key}` needs a value: `{}`", example(&key)),
    );
    Ok(None)
}

/// Steps over whatever follows a key, `= value` or `(..)`, so that parsing can go on after an
/// error in it.
fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

fn literal(expr: &Expr) -> Option<&Lit> {
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => Some(lit),
        Expr::Group(group) => literal(&group.expr),
        _ => None,
    }
}

/// An integer in the range of an i16, possibly negative: higher runs first.
fn priority_value(cx: &Ctxt, key: &str, expr: &Expr) -> Option<Spanned<i16>> {
    let (negative, inner) = match expr {
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => (true, &**expr),
        _ => (false, expr),
    };
    match literal(inner) {
        Some(Lit::Int(lit)) => {
            let digits = lit.base10_digits();
            let text = if negative {
                format!("-{digits}")
            } else {
                digits.to_owned()
            };
            let parsed = if lit.suffix().is_empty() || lit.suffix() == "i16" {
                text.parse::<i16>().ok()
            } else {
                None
            };
            match parsed {
                Some(value) => Some(Spanned {
                    value,
                    span: lit.span(),
                }),
                None => {
                    cx.error_spanned_by(
                        expr,
                        format!(
                            "`{key}` must be an integer from {} to {}: higher runs first",
                            i16::MIN,
                            i16::MAX
                        ),
                    );
                    None
                }
            }
        }
        Some(Lit::Str(lit)) if lit.value().parse::<i16>().is_ok() => {
            let n = lit.value();
            cx.error_spanned_by(
                lit,
                format!("expected an integer, not a string: write `{key} = {n}` without quotes"),
            );
            None
        }
        _ => {
            cx.error_spanned_by(expr, format!("expected an integer: `{}`", example(key)));
            None
        }
    }
}

/// A string that the runtime accepts as a queue name.
fn queue_name(cx: &Ctxt, key: &str, expr: &Expr) -> Option<Spanned<String>> {
    let Some(Lit::Str(lit)) = literal(expr) else {
        cx.error_spanned_by(expr, format!("expected a string: `{}`", example(key)));
        return None;
    };
    if let Err(error) = rules::validate_queue_name(&lit.value()) {
        cx.error_spanned_by(lit, format!("invalid queue name: {error}"));
    }
    Some(Spanned {
        value: lit.value(),
        span: lit.span(),
    })
}

/// An integer of at least 1.
fn max_attempts_value(cx: &Ctxt, key: &str, expr: &Expr) -> Option<Spanned<u32>> {
    match literal(expr) {
        Some(Lit::Int(lit)) => match lit.base10_parse::<u32>() {
            Ok(value) => {
                if value == 0 {
                    cx.error_spanned_by(
                        lit,
                        format!("`{key}` must be at least 1: a task runs at least once"),
                    );
                }
                Some(Spanned {
                    value,
                    span: lit.span(),
                })
            }
            Err(_) => {
                cx.error_spanned_by(lit, format!("`{key}` must fit in a u32"));
                None
            }
        },
        Some(Lit::Str(lit)) if lit.value().parse::<u32>().is_ok() => {
            let n = lit.value();
            cx.error_spanned_by(
                lit,
                format!("expected an integer, not a string: write `{key} = {n}` without quotes"),
            );
            None
        }
        _ => {
            cx.error_spanned_by(
                expr,
                format!("expected a positive integer: `{}`", example(key)),
            );
            None
        }
    }
}

/// `concurrency`: a whole number of tasks, at least 1. Zero would never run the queue, and
/// a negative or fractional count means nothing; each is refused at its token.
fn concurrency_value(cx: &Ctxt, key: &str, expr: &Expr) -> Option<Spanned<u32>> {
    let expr = match expr {
        Expr::Group(group) => &*group.expr,
        other => other,
    };
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => match lit.base10_parse::<u32>() {
            Ok(0) => {
                cx.error_spanned_by(
                    lit,
                    format!(
                        "`{key}` must be at least 1: a queue limited to 0 tasks would never run; \
                         omit `{key}` to run as many as the client has workers"
                    ),
                );
                None
            }
            Ok(value) => Some(Spanned {
                value,
                span: lit.span(),
            }),
            Err(_) => {
                cx.error_spanned_by(lit, format!("`{key}` must fit in a u32"));
                None
            }
        },
        Expr::Unary(unary) if matches!(unary.op, syn::UnOp::Neg(_)) => {
            cx.error_spanned_by(
                expr,
                format!("`{key}` must be a positive integer: `{}`", example(key)),
            );
            None
        }
        _ => {
            cx.error_spanned_by(
                expr,
                format!(
                    "expected a whole number of tasks for `{key}`: `{}`",
                    example(key)
                ),
            );
            None
        }
    }
}

/// A duration string above zero. Each key says why zero is refused, since zero never means
/// "none": the way to have no timeout, backoff or retention limit is to leave the key out.
fn duration(cx: &Ctxt, key: &str, expr: &Expr) -> Option<Spanned<Duration>> {
    match literal(expr) {
        Some(Lit::Str(lit)) => match rules::parse_duration(&lit.value()) {
            Ok(value) => {
                if value.is_zero() {
                    cx.error_spanned_by(lit, zero_duration(key));
                }
                Some(Spanned {
                    value,
                    span: lit.span(),
                })
            }
            Err(error) => {
                cx.error_spanned_by(lit, format!("invalid duration {:?}: {error}", lit.value()));
                None
            }
        },
        // `timeout = 10s` lexes as the integer 10 with the suffix `s`.
        Some(Lit::Int(lit)) => {
            let unit = if lit.suffix().is_empty() {
                "s"
            } else {
                lit.suffix()
            };
            cx.error_spanned_by(
                lit,
                format!(
                    "write the duration as a string with its unit: `{key} = \"{}{unit}\"`",
                    lit.base10_digits()
                ),
            );
            None
        }
        _ => {
            cx.error_spanned_by(
                expr,
                format!("expected a duration string: `{}`", example(key)),
            );
            None
        }
    }
}

fn zero_duration(key: &str) -> String {
    match key {
        "timeout" => {
            "`timeout` must be greater than zero: omit it to let attempts run as long as they take"
                .to_owned()
        }
        "backoff" => "a zero backoff is the default: omit `backoff` to retry at once".to_owned(),
        "every" => "`every` must be greater than zero".to_owned(),
        "for" => "`for` must be greater than zero: omit it to let equal tasks in as soon as \
                  the last one has succeeded"
            .to_owned(),
        "duration" => "a retention `duration` must be greater than zero: omit it to keep \
                       completed tasks until they are deleted, or omit `retention` to keep none"
            .to_owned(),
        _ => format!("`{key}` must be greater than zero"),
    }
}

fn boolean(cx: &Ctxt, key: &str, expr: &Expr) -> Option<bool> {
    if let Some(Lit::Bool(lit)) = literal(expr) {
        return Some(lit.value);
    }
    cx.error_spanned_by(
        expr,
        format!("expected `true` or `false`; or write `{key}` alone for `true`"),
    );
    None
}

/// A flag: `only_failed` alone, or `only_failed = true|false`.
fn flag(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<bool>> {
    if meta.input.peek(token::Paren) {
        skip_value(meta)?;
        let key = path_text(&meta.path);
        cx.error_spanned_by(
            &meta.path,
            format!("`{key}` is a flag: write `{key}` or `{key} = false`, without a list"),
        );
        return Ok(None);
    }
    if meta.input.peek(Token![=]) {
        return value(cx, meta, boolean);
    }
    Ok(Some(true))
}

/// `"5s"` or `exponential(base = "1s", cap = "10m", jitter)`.
fn backoff_value(cx: &Ctxt, key: &str, expr: &Expr) -> Option<Backoff> {
    match expr {
        Expr::Call(call) => match &*call.func {
            Expr::Path(func) if func.path.is_ident("exponential") => {
                let keyword = func.path.segments[0].ident.span();
                Some(Backoff::Exponential(exponential(cx, keyword, &call.args)))
            }
            func => {
                let message = match func {
                    Expr::Path(func)
                        if did_you_mean(&path_text(&func.path), &["exponential"]).is_some() =>
                    {
                        format!(
                            "unknown backoff `{}`; did you mean `exponential`?",
                            path_text(&func.path)
                        )
                    }
                    _ => format!("expected `{}`", example(key)),
                };
                cx.error_spanned_by(func, message);
                None
            }
        },
        Expr::Path(func) if func.path.is_ident("exponential") => {
            cx.error_spanned_by(
                func,
                "`exponential` needs its settings: `exponential(base = \"1s\", cap = \"10m\")`",
            );
            None
        }
        _ => {
            if let Some(Lit::Str(_) | Lit::Int(_)) = literal(expr) {
                return duration(cx, key, expr).map(Backoff::Fixed);
            }
            cx.error_spanned_by(expr, format!("expected `{}`", example(key)));
            None
        }
    }
}

/// The arguments of `exponential(..)`, read as a list of keys like the attribute itself.
fn exponential(cx: &Ctxt, keyword: Span, args: &Punctuated<Expr, Token![,]>) -> Exponential {
    let mut base = Slot::new("base");
    let mut cap = Slot::new("cap");
    let mut jitter = Slot::new("jitter");
    let parser = syn::meta::parser(|meta| {
        match key(&meta.path).as_deref() {
            Some("base") => base.set(cx, &meta, value(cx, &meta, duration)?),
            Some("cap") => cap.set(cx, &meta, value(cx, &meta, duration)?),
            Some("jitter") => jitter.set(cx, &meta, flag(cx, &meta)?),
            _ => unknown_key(cx, &meta, &EXPONENTIAL)?,
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args.to_token_stream()) {
        cx.syn_error(error);
    }
    Exponential {
        keyword,
        base: base.key(),
        cap: cap.key(),
        jitter: jitter.value.unwrap_or(false),
    }
}

/// `retention`, `retention()` or `retention(duration = "7d", only_failed, data(..))`.
fn retention_list(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<Retention>> {
    if meta.input.peek(Token![=]) {
        skip_value(meta)?;
        cx.error_spanned_by(
            &meta.path,
            format!(
                "`retention` takes a list, not a value: `retention` alone keeps completed tasks, \
                 `{}` says which and for how long",
                example("retention")
            ),
        );
        return Ok(None);
    }
    let mut duration_slot = Slot::new("duration");
    let mut only_failed = Slot::new("only_failed");
    let mut data = Slot::new("data");
    if meta.input.peek(token::Paren) {
        nested_list(meta, |meta| {
            match key(&meta.path).as_deref() {
                Some("duration") => duration_slot.set(cx, &meta, value(cx, &meta, duration)?),
                Some("only_failed") => only_failed.set(cx, &meta, flag(cx, &meta)?),
                Some("data") => data.set(cx, &meta, data_list(cx, &meta)?),
                _ => unknown_key(cx, &meta, &RETENTION)?,
            }
            Ok(())
        })?;
    }
    Ok(Some(Retention {
        duration: duration_slot.value,
        only_failed: only_failed.value.unwrap_or(false),
        data: data.value.unwrap_or(Data::None),
    }))
}

/// `unique`, `unique()` or `unique(by = [field, ..], for = "1h")`.
fn unique_list(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<Unique>> {
    if meta.input.peek(Token![=]) {
        skip_value(meta)?;
        cx.error_spanned_by(
            &meta.path,
            format!(
                "`unique` takes a list, not a value: `unique` alone, or `{}`",
                example("unique")
            ),
        );
        return Ok(None);
    }
    let mut window = Slot::new("for");
    let mut by = Slot::new("by");
    if meta.input.peek(token::Paren) {
        nested_list(meta, |meta| {
            match key(&meta.path).as_deref() {
                Some("for") => window.set(cx, &meta, value(cx, &meta, duration)?),
                Some("by") => by.set(cx, &meta, by_list(cx, &meta)?),
                _ => unknown_key(cx, &meta, &UNIQUE)?,
            }
            Ok(())
        })?;
    }
    Ok(Some(Unique {
        window: window.value.filter(|window| !window.value.is_zero()),
        by: by.value,
    }))
}

/// `by = [field, ..]`: at least one field, each named once.
fn by_list(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<By>> {
    let keyword = meta.path.segments[0].ident.span();
    if !meta.input.peek(Token![=]) {
        skip_value(meta)?;
        cx.error_spanned_by(
            &meta.path,
            format!("`by` needs the fields compared: `{}`", example("by")),
        );
        return Ok(None);
    }
    let expr: Expr = meta.value()?.parse()?;
    let Expr::Array(array) = &expr else {
        cx.error_spanned_by(
            &expr,
            format!(
                "expected a list of field names in brackets: `{}`",
                example("by")
            ),
        );
        return Ok(None);
    };
    if array.elems.is_empty() {
        cx.error_spanned_by(
            &expr,
            "`by` needs at least one field: omit `by` to compare whole payloads",
        );
        return Ok(None);
    }
    let mut fields: Vec<Ident> = Vec::new();
    let mut refused = false;
    for elem in &array.elems {
        let ident = match elem {
            Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
                path.path.get_ident()
            }
            _ => None,
        };
        match ident {
            Some(ident) if fields.contains(ident) => cx.error_spanned_by(
                ident,
                format!("duplicate field `{ident}`: each field is named once"),
            ),
            Some(ident) => fields.push(ident.clone()),
            None => {
                refused = true;
                cx.error_spanned_by(
                    elem,
                    format!("expected the name of a field, as in `{}`", example("by")),
                );
            }
        }
    }
    Ok((!refused).then_some(By { keyword, fields }))
}

/// `periodic(every = "5m")` or `periodic(cron = "..")`; which of them is there (exactly one)
/// is checked in `valid.rs`.
fn periodic_list(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<Periodic>> {
    let keyword = meta.path.segments[0].ident.span();
    if !meta.input.peek(token::Paren) {
        skip_value(meta)?;
        cx.error_spanned_by(
            &meta.path,
            format!(
                "`periodic` takes a list with the schedule: `{}`",
                example("periodic")
            ),
        );
        return Ok(None);
    }
    let mut every = Slot::new("every");
    let mut cron = Slot::new("cron");
    let mut unknown = false;
    nested_list(meta, |meta| {
        match key(&meta.path).as_deref() {
            Some("every") => every.set(cx, &meta, value(cx, &meta, duration)?),
            Some("cron") => cron.set(cx, &meta, value(cx, &meta, cron_expression)?),
            _ => {
                unknown = true;
                unknown_key(cx, &meta, &PERIODIC)?;
            }
        }
        Ok(())
    })?;
    let (every, cron) = match (every.key(), cron.key()) {
        // A misspelt key was the schedule: reported already.
        (Key::Absent, Key::Absent) if unknown => (Key::Refused, Key::Absent),
        keys => keys,
    };
    Ok(Some(Periodic {
        keyword,
        every,
        cron,
    }))
}

/// A string the runtime's cron parser accepts.
fn cron_expression(cx: &Ctxt, key: &str, expr: &Expr) -> Option<Spanned<String>> {
    let Some(Lit::Str(lit)) = literal(expr) else {
        cx.error_spanned_by(expr, format!("expected a string: `{}`", example(key)));
        return None;
    };
    if let Err(error) = rules::parse_cron(&lit.value()) {
        cx.error_spanned_by(
            lit,
            format!(
                "invalid cron expression {:?}: {error}; five fields (minute hour day month \
                 weekday), or six with the second first",
                lit.value()
            ),
        );
        return None;
    }
    Some(Spanned {
        value: lit.value(),
        span: lit.span(),
    })
}

/// `data`, `data()` or `data(only_failed)`.
fn data_list(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<Data>> {
    if meta.input.peek(Token![=]) {
        skip_value(meta)?;
        cx.error_spanned_by(
            &meta.path,
            "`data` takes a list, not a value: `data` alone keeps the payload of every retained \
             task, `data(only_failed)` only that of failed ones",
        );
        return Ok(None);
    }
    let mut only_failed = Slot::new("only_failed");
    if meta.input.peek(token::Paren) {
        nested_list(meta, |meta| {
            match key(&meta.path).as_deref() {
                Some("only_failed") => only_failed.set(cx, &meta, flag(cx, &meta)?),
                _ => unknown_key(cx, &meta, &DATA)?,
            }
            Ok(())
        })?;
    }
    Ok(Some(match only_failed.value {
        Some(true) => Data::OnlyFailed,
        _ => Data::All,
    }))
}

/// A key's list, `key(..)`, read by `logic` one key at a time; `key()` is an empty list.
fn nested_list(
    meta: &ParseNestedMeta,
    logic: impl FnMut(ParseNestedMeta) -> syn::Result<()>,
) -> syn::Result<()> {
    let ahead = meta.input.fork();
    let content;
    syn::parenthesized!(content in ahead);
    if content.is_empty() {
        meta.input.parse::<proc_macro2::Group>()?;
        return Ok(());
    }
    meta.parse_nested_meta(logic)
}

struct List {
    name: &'static str,
    keys: &'static [&'static str],
}

/// Reports a key that does not belong in `list`, at the key, and steps over its value.
fn unknown_key(cx: &Ctxt, meta: &ParseNestedMeta, list: &List) -> syn::Result<()> {
    skip_value(meta)?;
    let key = path_text(&meta.path);
    let message = if let Some(close) = did_you_mean(&key, list.keys) {
        format!(
            "unknown key `{key}` in `{}`; did you mean `{close}`?",
            list.name
        )
    } else if let Some(home) = [&QUEUE, &RETENTION, &EXPONENTIAL, &PERIODIC, &UNIQUE]
        .into_iter()
        .find(|other| other.keys.contains(&key.as_str()))
    {
        match home.name {
            "retention(..)" => {
                let inner = match example(&key) {
                    "" => key.as_str(),
                    example => example,
                };
                format!("`{key}` belongs inside `retention(..)`, as in `retention({inner})`")
            }
            "periodic(..)" => format!(
                "`{key}` belongs inside `periodic(..)`, as in `periodic({})`",
                example(&key)
            ),
            "unique(..)" => format!(
                "`{key}` belongs inside `unique(..)`, as in `unique({})`",
                example(&key)
            ),
            "exponential(..)" => format!(
                "`{key}` belongs inside `backoff = exponential(..)`, as in \
                 `backoff = exponential(base = \"1s\", cap = \"10m\", jitter)`"
            ),
            _ => format!(
                "`{key}` belongs in `#[queue(..)]`, not inside `{}`",
                list.name
            ),
        }
    } else {
        let expected: Vec<String> = list.keys.iter().map(|k| format!("`{k}`")).collect();
        format!(
            "unknown key `{key}` in `{}`; expected {}",
            list.name,
            expected.join(", ")
        )
    };
    cx.error_spanned_by(&meta.path, message);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn parse_attrs(attrs: &[Attribute]) -> (Queue, Vec<String>) {
        let cx = Ctxt::new();
        let refs: Vec<&Attribute> = attrs.iter().collect();
        let queue = parse(&cx, &refs);
        let errors = match cx.check() {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        };
        (queue, errors)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_key() {
        let (queue, errors) = parse_attrs(&[parse_quote! {
            #[queue(name = "q", max_attempts = 5, backoff = "1m30s", timeout = "10s",
                    retention(duration = "6h", only_failed, data(only_failed)))]
        }]);
        assert_eq!(errors, Vec::<String>::new());
        assert!(matches!(queue.name, Key::Value(name) if name.value == "q"));
        assert_eq!(queue.max_attempts.unwrap().value, 5);
        assert!(matches!(queue.backoff, Some(Backoff::Fixed(d)) if d.value == ms(90_000)));
        assert_eq!(queue.timeout.unwrap().value, ms(10_000));
        let retention = queue.retention.unwrap();
        assert_eq!(retention.duration.unwrap().value, ms(6 * 3_600_000));
        assert!(retention.only_failed);
        assert_eq!(retention.data, Data::OnlyFailed);
    }

    #[test]
    fn priority_takes_an_i16_negative_or_not() {
        for (attr, expected) in [
            (parse_quote!(#[queue(name = "q", priority = 9)]), 9),
            (
                parse_quote!(#[queue(name = "q", priority = -32768)]),
                i16::MIN,
            ),
            (
                parse_quote!(#[queue(name = "q", priority = 32767i16)]),
                i16::MAX,
            ),
        ] {
            let (queue, errors) = parse_attrs(&[attr]);
            assert_eq!(errors, Vec::<String>::new());
            assert_eq!(queue.priority.unwrap().value, expected);
        }
        let (queue, errors) = parse_attrs(&[parse_quote! {
            #[queue(name = "q", priority = 32768)]
        }]);
        assert_eq!(
            errors,
            ["`priority` must be an integer from -32768 to 32767: higher runs first"]
        );
        assert!(queue.priority.is_none());
        let (_, errors) = parse_attrs(&[parse_quote!(#[queue(name = "q", priority = "5")])]);
        assert_eq!(
            errors,
            ["expected an integer, not a string: write `priority = 5` without quotes"]
        );
    }

    #[test]
    fn exponential_backoff_and_flags() {
        let (queue, errors) = parse_attrs(&[parse_quote! {
            #[queue(name = "q", backoff = exponential(base = "1s", cap = "10m", jitter = false),
                    retention(only_failed = false, data))]
        }]);
        assert_eq!(errors, Vec::<String>::new());
        let Some(Backoff::Exponential(exp)) = queue.backoff else {
            panic!("not exponential")
        };
        assert!(matches!(exp.base, Key::Value(base) if base.value == ms(1_000)));
        assert!(matches!(exp.cap, Key::Value(cap) if cap.value == ms(600_000)));
        assert!(!exp.jitter);
        let retention = queue.retention.unwrap();
        assert!(!retention.only_failed);
        assert_eq!(retention.data, Data::All);
    }

    #[test]
    fn bare_retention_keeps_outcomes_only() {
        for attr in [
            parse_quote!(#[queue(name = "q", retention)]),
            parse_quote!(#[queue(name = "q", retention())]),
        ] {
            let (queue, errors) = parse_attrs(&[attr]);
            assert_eq!(errors, Vec::<String>::new());
            let retention = queue.retention.unwrap();
            assert!(retention.duration.is_none());
            assert!(!retention.only_failed);
            assert_eq!(retention.data, Data::None);
        }
    }

    #[test]
    fn several_attributes_are_one_list() {
        let (queue, errors) = parse_attrs(&[
            parse_quote!(#[queue(name = "q")]),
            parse_quote!(#[queue(max_attempts = 2, name = "r")]),
        ]);
        assert_eq!(errors, ["duplicate `name`: each key may appear only once"]);
        assert!(matches!(queue.name, Key::Value(name) if name.value == "q"));
        assert_eq!(queue.max_attempts.unwrap().value, 2);
    }

    #[test]
    fn concurrency_is_a_whole_number_of_at_least_one() {
        let (queue, errors) = parse_attrs(&[parse_quote!(#[queue(name = "q", concurrency = 4)])]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(queue.concurrency.unwrap().value, 4);
        for (attr, message) in [
            (
                parse_quote!(#[queue(name = "q", concurrency = 0)]),
                "`concurrency` must be at least 1: a queue limited to 0 tasks would never run; \
                 omit `concurrency` to run as many as the client has workers",
            ),
            (
                parse_quote!(#[queue(name = "q", concurrency = -2)]),
                "`concurrency` must be a positive integer: `concurrency = 4`",
            ),
            (
                parse_quote!(#[queue(name = "q", concurrency = 2.5)]),
                "expected a whole number of tasks for `concurrency`: `concurrency = 4`",
            ),
            (
                parse_quote!(#[queue(name = "q", concurrency = "4")]),
                "expected a whole number of tasks for `concurrency`: `concurrency = 4`",
            ),
        ] {
            let (queue, errors) = parse_attrs(&[attr]);
            assert_eq!(errors, [message]);
            assert!(queue.concurrency.is_none());
        }
    }

    #[test]
    fn every_error_is_reported() {
        let (_, errors) = parse_attrs(&[parse_quote! {
            #[queue(name = 5, max_attempt = 3, timeout = 10s, timeout = "1x",
                    retention(data(only_failed = 1), cap = "1s"), jitter)]
        }]);
        assert_eq!(
            errors,
            [
                "expected a string: `name = \"new_order_email\"`",
                "unknown key `max_attempt` in `#[queue(..)]`; did you mean `max_attempts`?",
                "write the duration as a string with its unit: `timeout = \"10s\"`",
                "invalid duration \"1x\": unknown unit `x`; the units are ms, s, m, h and d",
                "duplicate `timeout`: each key may appear only once",
                "expected `true` or `false`; or write `only_failed` alone for `true`",
                "`cap` belongs inside `backoff = exponential(..)`, as in \
                 `backoff = exponential(base = \"1s\", cap = \"10m\", jitter)`",
                "`jitter` belongs inside `backoff = exponential(..)`, as in \
                 `backoff = exponential(base = \"1s\", cap = \"10m\", jitter)`",
            ]
        );
    }

    #[test]
    fn a_refused_value_still_counts_as_present() {
        let (queue, errors) = parse_attrs(&[parse_quote!(#[queue(name = 5)])]);
        assert_eq!(errors.len(), 1);
        assert!(matches!(queue.name, Key::Refused));
        let (queue, _) = parse_attrs(&[parse_quote!(#[queue(max_attempts = 5)])]);
        assert!(matches!(queue.name, Key::Absent));
    }

    #[test]
    fn rules_of_one_value_are_checked_in_source_order() {
        let (queue, errors) = parse_attrs(&[parse_quote! {
            #[queue(name = "a b", max_attempts = 0, timeout = "0s", backoff = "0ms",
                    retention(duration = "0d"))]
        }]);
        assert_eq!(
            errors,
            [
                "invalid queue name: a queue name may hold only ASCII letters, digits and the \
                 characters `_ - . :`",
                "`max_attempts` must be at least 1: a task runs at least once",
                "`timeout` must be greater than zero: omit it to let attempts run as long as \
                 they take",
                "a zero backoff is the default: omit `backoff` to retry at once",
                "a retention `duration` must be greater than zero: omit it to keep completed \
                 tasks until they are deleted, or omit `retention` to keep none",
            ]
        );
        // The values are kept; their errors are already reported.
        assert_eq!(queue.max_attempts.unwrap().value, 0);
    }

    #[test]
    fn periodic_reads_an_interval_or_a_checked_cron_expression() {
        let (queue, errors) =
            parse_attrs(&[parse_quote!(#[queue(name = "q", periodic(every = "1m30s"))])]);
        assert_eq!(errors, Vec::<String>::new());
        let periodic = queue.periodic.unwrap();
        assert!(matches!(periodic.every, Key::Value(every) if every.value == ms(90_000)));
        assert!(matches!(periodic.cron, Key::Absent));

        let (queue, errors) =
            parse_attrs(&[parse_quote!(#[queue(name = "q", periodic(cron = "0 */5 * * * *"))])]);
        assert_eq!(errors, Vec::<String>::new());
        let cron = queue.periodic.unwrap().cron;
        assert!(matches!(cron, Key::Value(cron) if cron.value == "0 */5 * * * *"));

        let (queue, errors) =
            parse_attrs(&[parse_quote!(#[queue(name = "q", periodic(cron = "* * * * * * *"))])]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("invalid cron expression \"* * * * * * *\""));
        assert!(matches!(queue.periodic.unwrap().cron, Key::Refused));
    }

    #[test]
    fn unique_reads_a_window_and_fields() {
        let (queue, errors) = parse_attrs(&[parse_quote!(#[queue(name = "q", unique)])]);
        assert_eq!(errors, Vec::<String>::new());
        let unique = queue.unique.unwrap();
        assert!(unique.window.is_none() && unique.by.is_none());

        let (queue, errors) = parse_attrs(&[parse_quote! {
            #[queue(name = "q", unique(by = [customer, day], for = "1h30m"))]
        }]);
        assert_eq!(errors, Vec::<String>::new());
        let unique = queue.unique.unwrap();
        assert_eq!(unique.window.unwrap().value, ms(5_400_000));
        let fields: Vec<String> = unique
            .by
            .unwrap()
            .fields
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(fields, ["customer", "day"]);
    }

    #[test]
    fn unique_errors_are_each_reported() {
        let (queue, errors) = parse_attrs(&[parse_quote! {
            #[queue(name = "q", unique(by = [a, a, b.c], for = "0s", fo = "1h"), for = "1m")]
        }]);
        assert_eq!(
            errors,
            [
                "duplicate field `a`: each field is named once",
                "expected the name of a field, as in `by = [customer_id, day]`",
                "`for` must be greater than zero: omit it to let equal tasks in as soon as the \
                 last one has succeeded",
                "unknown key `fo` in `unique(..)`; did you mean `for`?",
                "`for` belongs inside `unique(..)`, as in `unique(for = \"1h\")`",
            ]
        );
        let unique = queue.unique.unwrap();
        assert!(unique.by.is_none() && unique.window.is_none());
        let (_, errors) = parse_attrs(&[parse_quote!(#[queue(name = "q", unique(by = []))])]);
        assert_eq!(
            errors,
            ["`by` needs at least one field: omit `by` to compare whole payloads"]
        );
        let (_, errors) = parse_attrs(&[parse_quote!(#[queue(name = "q", unique = "1h")])]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("`unique` takes a list, not a value"));
    }

    #[test]
    fn unknown_keys_list_the_expected_ones() {
        let (_, errors) = parse_attrs(&[parse_quote!(#[queue(name = "q", retries = 3)])]);
        assert_eq!(
            errors,
            [
                "unknown key `retries` in `#[queue(..)]`; expected `name`, `max_attempts`, \
              `backoff`, `timeout`, `retention`, `periodic`, `concurrency`, `priority`, \
              `unique`"
            ]
        );
    }
}
