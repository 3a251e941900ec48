//! `processors![a, b, c]`: the registry of a client's processors.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Path, Token};

pub fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let paths = Punctuated::<Path, Token![,]>::parse_terminated.parse2(input)?;
    let len = Literal::usize_unsuffixed(paths.len());
    // Spanned at each path, so that a path which is not a processor is underlined, with the
    // `on_unimplemented` message of `Processor`. Each path is named once: the queue names are
    // read back from the entries.
    let entries = paths.iter().map(|path| {
        quote_spanned! {path.span()=>
            ::backlite::__private::entry::<#path>()
        }
    });
    Ok(quote! {
        {
            const __BACKLITE_ENTRIES: [::backlite::__private::RegistryEntry; #len] = [#(#entries),*];
            // Two processors for one queue stop the compilation, naming the queue.
            const _: () = ::backlite::__private::assert_distinct_queues(
                &::backlite::__private::queue_names(&__BACKLITE_ENTRIES),
            );
            ::backlite::__private::registry(__BACKLITE_ENTRIES)
        }
    })
}
