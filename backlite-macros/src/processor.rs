//! `#[processor]`: implements `backlite::Processor` for an `async fn`.
//!
//! The function stays as written, so it can be called (and unit-tested) directly. Beside it
//! goes a braced struct of the same name: a braced struct lives only in the type namespace and
//! the function only in the value namespace, so the two do not clash, and `processors![f]`
//! names the processor by the function's own path. The struct implements `Processor` by
//! calling the function.
//!
//! What syntax can tell (not `async`, a `self`, generics, the number of arguments) is reported
//! here. What only types can tell (is the argument a `Context`, a `Task`; is the result a
//! `Result<(), E>`; is the future `Send`) is left to the compiler, through calls spanned at the
//! user's tokens and traits in `backlite::__private` whose `#[diagnostic::on_unimplemented]`
//! says what is wrong.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, Item, ItemFn, ReturnType, Type};

use crate::ctxt::Ctxt;

const SHAPE: &str =
    "`async fn name(task: MyTask)` or `async fn name(ctx: backlite::Context, task: MyTask)`";

pub fn expand(args: &TokenStream, input: &TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    if !args.is_empty() {
        cx.error_spanned_by(args, "`#[processor]` takes no arguments");
    }
    let function = match syn::parse2::<Item>(input.clone()) {
        Ok(Item::Fn(function)) => Some(function),
        Ok(item) => {
            cx.error_spanned_by(item, "`#[processor]` goes on an `async fn`");
            None
        }
        Err(error) => {
            cx.syn_error(error);
            None
        }
    };
    let signature = function.as_ref().and_then(|function| check(&cx, function));
    match (cx.check(), &function, signature) {
        (Ok(()), Some(function), Some(signature)) => {
            let processor = impl_processor(function, &signature);
            quote!(#function #processor)
        }
        // The function unchanged, so that its body is still checked and its callers still
        // compile: one mistake gives one error.
        (result, _, _) => {
            let errors = result.err().map(syn::Error::into_compile_error);
            quote!(#errors #input)
        }
    }
}

/// The parts of a valid processor's signature.
struct Signature<'a> {
    context: Option<&'a Type>,
    task: &'a Type,
    output: &'a Type,
}

fn check<'a>(cx: &Ctxt, function: &'a ItemFn) -> Option<Signature<'a>> {
    let sig = &function.sig;
    if let Some(constness) = &sig.constness {
        cx.error_spanned_by(constness, "a processor cannot be a `const fn`");
    }
    if sig.asyncness.is_none() {
        cx.error_spanned_by(
            sig.fn_token,
            format!("a processor must be an `async fn`: {SHAPE}"),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        cx.error_spanned_by(
            unsafety,
            "a processor cannot be an `unsafe fn`: the dispatcher calls it with no way to \
             uphold its safety contract",
        );
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(abi, "a processor cannot declare an ABI");
    }
    let generic = "a processor cannot be generic: the dispatcher runs it for one concrete task \
                   type";
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(&sig.generics, generic);
    } else if let Some(where_clause) = &sig.generics.where_clause {
        cx.error_spanned_by(where_clause, generic);
    }
    if let Some(variadic) = &sig.variadic {
        cx.error_spanned_by(variadic, format!("a processor takes {SHAPE}"));
    }

    let mut types = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(receiver) => cx.error_spanned_by(
                receiver,
                "a processor is a free function, not a method: move it out of the `impl` \
                 block and drop `self`",
            ),
            FnArg::Typed(arg) => types.push(&*arg.ty),
        }
    }
    if types.len() < sig.inputs.len() {
        // The receiver's error says it all; an arity error too would be noise.
        return None;
    }
    let (context, task) = match types[..] {
        [task] => (None, task),
        [context, task] => (Some(context), task),
        [] => {
            cx.error_at(
                sig.paren_token.span.join(),
                format!("a processor takes the task it runs: {SHAPE}"),
            );
            return None;
        }
        [_, _, ..] => {
            let extra: Vec<_> = sig.inputs.iter().skip(2).collect();
            cx.error_spanned_by(
                quote!(#(#extra),*),
                format!("a processor takes at most two arguments: {SHAPE}"),
            );
            return None;
        }
    };
    for ty in context.into_iter().chain([task]) {
        if let Type::ImplTrait(_) = ty {
            cx.error_spanned_by(
                ty,
                "a processor's arguments need concrete types, not `impl Trait`",
            );
        }
    }

    let output = match &sig.output {
        ReturnType::Type(_, output) => &**output,
        ReturnType::Default => {
            cx.error_at(
                sig.paren_token.span.close(),
                "a processor must return `Result<(), E>`: add `-> Result<(), MyError>` (any \
                 error type that converts into `backlite::BoxError`)",
            );
            return None;
        }
    };
    Some(Signature {
        context,
        task,
        output,
    })
}

fn impl_processor(function: &ItemFn, signature: &Signature) -> TokenStream {
    let vis = &function.vis;
    let ident = &function.sig.ident;
    let task_ty = signature.task;
    let output_ty = signature.output;
    // Mixed-site locals do not capture the user's names (a function called `task` still
    // works), but a pattern can still resolve to a unit struct or constant in scope, hence
    // names no one else uses.
    let ctx = Ident::new("__backlite_ctx", Span::mixed_site());
    let task = Ident::new("__backlite_task", Span::mixed_site());

    // Each check is spanned at the tokens it is about, so that the compiler's error underlines
    // the user's argument, return type or function name, not the `#[processor]` attribute.
    let (ctx_param, ctx_arg) = match signature.context {
        Some(context_ty) => (
            ctx.to_token_stream(),
            quote_spanned! {context_ty.span()=>
                <#context_ty as ::backlite::__private::ContextArg>::from_context(#ctx),
            },
        ),
        None => (quote!(_), TokenStream::new()),
    };
    // The `.await` too: the compiler checks `Send` wherever the asserted future's type
    // appears, and reports the same error once only when both places share a span.
    let output = quote_spanned! {ident.span()=>
        ::backlite::__private::assert_send(#ident(#ctx_arg #task)).await
    };
    // Where the task type is refused (not a `Task`, or less visible than the function), at
    // the user's argument.
    let task_assoc = quote_spanned! {task_ty.span()=>
        type Task = #task_ty;
    };
    let result = quote_spanned! {output_ty.span()=>
        <#output_ty as ::backlite::__private::ProcessorOutput>::into_result(#output)
    };

    quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #ident {}

        const _: () = {
            impl ::backlite::Processor for #ident {
                #task_assoc

                fn process(
                    #ctx_param: ::backlite::Context,
                    #task: <Self as ::backlite::Processor>::Task,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), ::backlite::BoxError>,
                > + ::core::marker::Send + 'static {
                    async move { #result }
                }
            }
        };
    }
}
