//! Macros of backlite; use them through the `backlite` crate.
use proc_macro::TokenStream;

/// Derives `backlite::Task`.
#[proc_macro_derive(Task, attributes(queue))]
pub fn derive_task(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}

/// Turns an `async fn` into a processor.
#[proc_macro_attribute]
pub fn processor(_args: TokenStream, input: TokenStream) -> TokenStream {
    input
}

/// Builds the registry.
#[proc_macro]
pub fn processors(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
