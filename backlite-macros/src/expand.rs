//! `#[derive(Task)]`: runs the stages, then writes the `impl Task`. No checks here: what
//! reaches the `quote!` has passed `valid.rs`.

use std::time::Duration;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{DeriveInput, LitStr};

use crate::ast::Input;
use crate::attr::{self, Backoff, Data, Key, Queue, Spanned};
use crate::ctxt::Ctxt;
use crate::{fallback, valid};

pub fn derive(input: &DeriveInput) -> TokenStream {
    match try_expand(input) {
        Ok(expanded) => expanded,
        Err(error) => fallback::derive(input, error),
    }
}

fn try_expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let cx = Ctxt::new();
    let input = Input::from_syn(input);
    let queue = attr::parse(&cx, &input.queue_attrs);
    let name = valid::check(&cx, &input, &queue);
    cx.check()?;
    let name = name.expect("`valid::check` reports an error whenever it returns no name");
    Ok(impl_task(&input, name, &queue))
}

fn impl_task(input: &Input, name: &Spanned<String>, queue: &Queue) -> TokenStream {
    let ident = input.ident;
    let name = LitStr::new(&name.value, name.span);
    let max_attempts = queue.max_attempts.map(|n| {
        let n = n.value;
        quote!(.max_attempts(#n))
    });
    let backoff = queue.backoff.as_ref().map(|backoff| {
        let backoff = match backoff {
            Backoff::Fixed(wait) => {
                let wait = duration(wait.value);
                quote!(::backlite::Backoff::Fixed(#wait))
            }
            Backoff::Exponential(exp) => {
                let base = duration(value(exp.base));
                let cap = duration(value(exp.cap));
                let jitter = exp.jitter;
                quote!(::backlite::Backoff::Exponential { base: #base, cap: #cap, jitter: #jitter })
            }
        };
        quote!(.backoff(#backoff))
    });
    let priority = queue.priority.map(|priority| {
        let priority = priority.value;
        quote!(.priority(#priority))
    });
    let timeout = queue.timeout.map(|timeout| {
        let timeout = duration(timeout.value);
        quote!(.timeout(#timeout))
    });
    let concurrency = queue.concurrency.map(|limit| {
        let limit = limit.value;
        quote!(.concurrency(#limit))
    });
    let retention = queue.retention.as_ref().map(|retention| {
        let duration = retention.duration.map_or_else(
            || quote!(::core::option::Option::None),
            |d| {
                let d = duration(d.value);
                quote!(::core::option::Option::Some(#d))
            },
        );
        let only_failed = retention.only_failed;
        let data = match retention.data {
            Data::None => quote!(::backlite::RetainData::None),
            Data::All => quote!(::backlite::RetainData::All),
            Data::OnlyFailed => quote!(::backlite::RetainData::OnlyFailed),
        };
        quote! {
            .retention(::backlite::Retention {
                duration: #duration,
                only_failed: #only_failed,
                data: #data,
            })
        }
    });

    let unique = queue.unique.as_ref().map(|unique| {
        let window = duration(unique.window.map_or(Duration::ZERO, |window| window.value));
        quote!(.unique(#window))
    });
    let unique_by = queue
        .unique
        .as_ref()
        .and_then(|unique| unique.by.as_ref())
        .map(|by| {
            // Each value is serialized where its field is named, so a field whose type is not
            // `Serialize` is reported at its name in `by = [..]`.
            let fields = by.fields.iter().map(|field| {
                let name = LitStr::new(&field.unraw().to_string(), field.span());
                let value = quote_spanned! {field.span()=>
                    ::backlite::__private::unique_value(&task.#field)
                };
                quote!((#name, #value))
            });
            quote! {
                const UNIQUE_BY: ::core::option::Option<::backlite::__private::UniqueBy<Self>> =
                    ::core::option::Option::Some({
                        fn unique_by(
                            task: &#ident,
                        ) -> ::backlite::__private::UniqueValue {
                            ::backlite::__private::unique_fields([#(#fields),*])
                        }
                        unique_by
                    });
            }
        });

    let periodic = queue.periodic.as_ref().map(|periodic| {
        let timing = match (&periodic.every, &periodic.cron) {
            (Key::Value(every), _) => {
                let ms = u64::try_from(every.value.as_millis()).unwrap_or(u64::MAX);
                quote!(::backlite::__private::PeriodicTiming::EveryMillis(#ms))
            }
            (_, Key::Value(cron)) => {
                let cron = LitStr::new(&cron.value, cron.span);
                quote!(::backlite::__private::PeriodicTiming::Cron(#cron))
            }
            _ => unreachable!("`valid::check` reports a schedule missing or refused"),
        };
        // Spanned at `periodic`: a type without `Default` is reported there.
        let payload = quote_spanned! {periodic.keyword=>
            <Self as ::backlite::__private::PeriodicDefault>::payload
        };
        quote! {
            const PERIODIC: ::core::option::Option<::backlite::__private::PeriodicSpec> =
                ::core::option::Option::Some(::backlite::__private::PeriodicSpec {
                    timing: #timing,
                    payload: #payload,
                });
        }
    });

    quote! {
        #[automatically_derived]
        impl ::backlite::Task for #ident {
            const CONFIG: ::backlite::QueueConfig = ::backlite::QueueConfig::builder(#name)
                #max_attempts
                #backoff
                #timeout
                #retention
                #concurrency
                #priority
                #unique
                .build();
            #periodic
            #unique_by
        }
    }
}

fn duration(duration: Duration) -> TokenStream {
    // Durations come from `rules::parse_duration`, which counts whole milliseconds in a u64.
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    quote!(::backlite::__private::Duration::from_millis(#ms))
}

/// A value that `valid::check` made sure is there.
fn value(key: Key<Spanned<Duration>>) -> Duration {
    match key {
        Key::Value(value) => value.value,
        Key::Absent | Key::Refused => unreachable!("`valid::check` reports a missing value"),
    }
}
