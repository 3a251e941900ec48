//! What `#[derive(Task)]` emits when the attribute has errors: the errors, and a placeholder
//! `impl Task` so that the type's other uses (in a processor, in `processors![..]`) compile
//! and the user sees only the errors that matter.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, parse_quote};

use crate::rules;

pub fn derive(input: &DeriveInput, error: syn::Error) -> TokenStream {
    let errors = error.into_compile_error();
    // serde cannot derive for a union, so a union can never be a task: any stub would only
    // add errors.
    if let Data::Union(_) = input.data {
        return errors;
    }

    let ident = &input.ident;
    // The type's own name when it makes a valid queue name, so that two types with errors do
    // not also collide in `processors![..]`.
    let name = match ident.unraw().to_string() {
        name if rules::validate_queue_name(&name).is_ok() => name,
        _ => "backlite_invalid_task".to_owned(),
    };
    // A generic type cannot be a task (that is one of the errors), but the stub keeps its uses
    // quiet. Its bounds stand in for the supertraits, which hold only for some parameters.
    let mut generics = input.generics.clone();
    if !generics.params.is_empty() {
        generics.make_where_clause().predicates.push(parse_quote! {
            Self: ::backlite::__private::serde::Serialize
                + ::backlite::__private::serde::de::DeserializeOwned
                + ::core::marker::Send
                + 'static
        });
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    quote! {
        #errors
        impl #impl_generics ::backlite::Task for #ident #ty_generics #where_clause {
            const CONFIG: ::backlite::QueueConfig = ::backlite::QueueConfig::builder(#name).build();
        }
    }
}
