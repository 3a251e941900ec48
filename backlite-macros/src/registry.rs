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
    // Each path as written, for the message about two processors of one queue.
    let written = paths.iter().map(|path| {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let colon = if path.leading_colon.is_some() {
            "::"
        } else {
            ""
        };
        format!("{colon}{}", segments.join("::"))
    });
    Ok(quote! {
        {
            const __BACKLITE_ENTRIES: [::backlite::__private::RegistryEntry; #len] = [#(#entries),*];
            // Two processors for one queue stop the compilation, naming both and the queue.
            // The panic is here rather than in a `const fn` of backlite's, so that the error
            // shows only the user's code.
            const _: () = {
                let check = ::backlite::__private::check_queues(
                    &::backlite::__private::queue_names(&__BACKLITE_ENTRIES),
                    &[#(#written),*],
                );
                if let ::core::option::Option::Some(message) = check.message() {
                    ::core::panic!("{}", message);
                }
            };
            ::backlite::__private::registry(__BACKLITE_ENTRIES)
        }
    })
}
