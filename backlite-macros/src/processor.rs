//! `#[processor]`: implements `backlite::Processor` for an `async fn`.
//!
//! The function stays as written, so it can be called (and unit-tested) directly. Beside it
//! goes a braced struct of the same name: a braced struct lives only in the type namespace and
//! the function only in the value namespace, so the two do not clash, and `processors![f]`
//! names the processor by the function's own path. The struct implements `Processor` by
//! calling the function.
//!
//! What syntax can tell (not `async`, a `self`, generics, the number of arguments) is reported
//! here. Arguments written as `Context` or `State<..>` are made from the attempt's context,
//! in any order; the one other argument is the task. What only types can tell (are those
//! backlite's `Context` and `State`, is the task a `Task`; is the result a
//! `Result<(), E>`; is the future `Send`) is left to the compiler, through calls spanned at the
//! user's tokens and traits in `backlite::__private` whose `#[diagnostic::on_unimplemented]`
//! says what is wrong.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, Item, ItemFn, PathArguments, ReturnType, Type};

use crate::ctxt::Ctxt;

const SHAPE: &str = "`async fn name(task: MyTask)`, with any `ctx: backlite::Context` and \
                     `State(x): backlite::State<X>` arguments before or after the task";

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
        // compile, and a stub processor, so that `processors![..]` still accepts it: one
        // mistake gives one error.
        (result, function, _) => {
            let errors = result.err().map(syn::Error::into_compile_error);
            let stub = function.as_ref().and_then(stub_processor);
            quote!(#errors #input #stub)
        }
    }
}

/// One argument of a processor.
enum Arg<'a> {
    /// The task the processor runs.
    Task(&'a Type),
    /// A `Context` or a `State<T>`, made from the attempt's context.
    FromContext(&'a Type),
}

/// The parts of a valid processor's signature.
struct Signature<'a> {
    args: Vec<Arg<'a>>,
    task: &'a Type,
    output: &'a Type,
}

/// Whether `ty` is written as a `Context` or a `State<..>`: the arguments other than the task.
/// Only syntax is known here, so they are told apart by the type's name; the compiler then
/// checks that they are backlite's (`ProcessorArg`).
fn is_from_context(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    if path.qself.is_some() {
        return false;
    }
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    match &last.arguments {
        PathArguments::None => last.ident == "Context",
        PathArguments::AngleBracketed(_) => last.ident == "State",
        PathArguments::Parenthesized(_) => false,
    }
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

    let mut args = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(receiver) => cx.error_spanned_by(
                receiver,
                "a processor is a free function, not a method: move it out of the `impl` \
                 block and drop `self`",
            ),
            FnArg::Typed(arg) => {
                let ty = &*arg.ty;
                match ty {
                    Type::ImplTrait(_) => cx.error_spanned_by(
                        ty,
                        "a processor's arguments need concrete types, not `impl Trait`",
                    ),
                    // The dispatcher decodes a fresh task for each attempt and hands it
                    // over: there is nothing for a reference to borrow from.
                    Type::Reference(reference) if is_from_context(&reference.elem) => {
                        let elem = &reference.elem;
                        cx.error_at(
                            reference.and_token.span,
                            format!(
                                "a processor takes `{}` by value: drop the `&`",
                                quote!(#elem).to_string().replace(' ', "")
                            ),
                        );
                    }
                    Type::Reference(reference) => cx.error_at(
                        reference.and_token.span,
                        "a processor takes its task by value, since each attempt decodes a \
                         task of its own: drop the `&`",
                    ),
                    _ => {}
                }
                // A `&Context` was reported above; taking it for the task too would add a
                // second error about the same argument.
                let unreferenced = match ty {
                    Type::Reference(reference) => &*reference.elem,
                    ty => ty,
                };
                args.push(if is_from_context(unreferenced) {
                    Arg::FromContext(ty)
                } else {
                    Arg::Task(ty)
                });
            }
        }
    }
    if args.len() < sig.inputs.len() {
        // The receiver's error says it all; an arity error too would be noise.
        return None;
    }
    let tasks: Vec<&Type> = args
        .iter()
        .filter_map(|arg| match arg {
            Arg::Task(ty) => Some(*ty),
            Arg::FromContext(_) => None,
        })
        .collect();
    let task = match tasks[..] {
        [task] => task,
        [] => {
            cx.error_at(
                sig.paren_token.span.join(),
                format!("a processor takes the task it runs: {SHAPE}"),
            );
            return None;
        }
        [_, _, ..] => {
            let mut names: Vec<String> = tasks
                .iter()
                .map(|ty| format!("`{}`", quote!(#ty).to_string().replace(' ', "")))
                .collect();
            let last = names.pop().unwrap_or_default();
            cx.error_spanned_by(
                quote!(#(#tasks)*),
                format!(
                    "a processor takes exactly one task, but {} and {last} could each be it: \
                     besides the task, a processor takes only `backlite::Context` and \
                     `backlite::State<T>` arguments",
                    names.join(", ")
                ),
            );
            return None;
        }
    };

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
    Some(Signature { args, task, output })
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
    let mut lets = Vec::new();
    let mut call_args = Vec::new();
    let mut states = Vec::new();
    for (i, arg) in signature.args.iter().enumerate() {
        match arg {
            Arg::Task(_) => call_args.push(task.clone()),
            Arg::FromContext(ty) => {
                let local = Ident::new(&format!("__backlite_arg{i}"), Span::mixed_site());
                lets.push(quote_spanned! {ty.span()=>
                    let #local = <#ty as ::backlite::__private::ProcessorArg>::from_context(&#ctx)?;
                });
                states.push(quote_spanned! {ty.span()=>
                    <#ty as ::backlite::__private::ProcessorArg>::state()
                });
                call_args.push(local);
            }
        }
    }
    let ctx_param = if lets.is_empty() {
        quote!(_)
    } else {
        ctx.to_token_stream()
    };
    // The `.await` too: the compiler checks `Send` wherever the asserted future's type
    // appears, and reports the same error once only when both places share a span.
    let output = quote_spanned! {ident.span()=>
        ::backlite::__private::assert_send(#ident(#(#call_args),*)).await
    };
    // Where the task type is refused (not a `Task`, or less visible than the function), at
    // the user's argument.
    let task_assoc = quote_spanned! {task_ty.span()=>
        type Task = #task_ty;
    };
    let result = quote_spanned! {output_ty.span()=>
        <#output_ty as ::backlite::__private::ProcessorOutput>::into_result(#output)
    };
    let states_fn = (!states.is_empty()).then(|| {
        quote! {
            fn states() -> ::std::vec::Vec<::backlite::StateType> {
                [#(#states),*].into_iter().flatten().collect()
            }
        }
    });

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
                    async move {
                        #(#lets)*
                        #result
                    }
                }

                #states_fn
            }
        };
    }
}

/// The type and `Processor` impl beside a function that `#[processor]` refused, so that
/// listing it in `processors![..]` adds no error to the ones reported. None for a method,
/// since a struct cannot go in an `impl` block.
fn stub_processor(function: &ItemFn) -> Option<TokenStream> {
    let sig = &function.sig;
    if matches!(sig.inputs.first(), Some(FnArg::Receiver(_))) {
        return None;
    }
    let vis = &function.vis;
    let ident = &sig.ident;
    Some(quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #ident {}

        const _: () = {
            impl ::backlite::Processor for #ident {
                type Task = ::backlite::__private::InvalidProcessor;

                fn process(
                    _: ::backlite::Context,
                    _: <Self as ::backlite::Processor>::Task,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), ::backlite::BoxError>,
                > + ::core::marker::Send + 'static {
                    async { ::core::result::Result::Ok(()) }
                }
            }
        };
    })
}
