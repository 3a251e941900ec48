//! A typed view of the type `#[derive(Task)]` is applied to. It borrows the original syntax,
//! so every error can point at the user's own tokens.

use syn::{Attribute, Data, DeriveInput, Fields, Generics, Ident, Token};

pub struct Input<'a> {
    pub ident: &'a Ident,
    pub generics: &'a Generics,
    pub shape: Shape<'a>,
    /// Every `#[queue(..)]` on the type, in order. Usually one; several are read as one list.
    pub queue_attrs: Vec<&'a Attribute>,
}

/// What kind of type it is. A task only needs serde to handle it, so the kind matters only to
/// refuse unions, which serde cannot derive for, and to know the fields `unique(by = [..])`
/// may name.
pub enum Shape<'a> {
    /// A struct; its field names when they have names (for `unique(by = [..])`).
    Struct(Option<Vec<&'a Ident>>),
    Enum,
    Union(&'a Token![union]),
}

impl<'a> Input<'a> {
    pub fn from_syn(input: &'a DeriveInput) -> Self {
        Input {
            ident: &input.ident,
            generics: &input.generics,
            shape: match &input.data {
                Data::Struct(data) => Shape::Struct(match &data.fields {
                    Fields::Named(fields) => Some(
                        fields
                            .named
                            .iter()
                            .filter_map(|f| f.ident.as_ref())
                            .collect(),
                    ),
                    Fields::Unnamed(_) | Fields::Unit => None,
                }),
                Data::Enum(_) => Shape::Enum,
                Data::Union(data) => Shape::Union(&data.union_token),
            },
            queue_attrs: input
                .attrs
                .iter()
                .filter(|attr| attr.path().is_ident("queue"))
                .collect(),
        }
    }

    pub fn is_generic(&self) -> bool {
        !self.generics.params.is_empty() || self.generics.where_clause.is_some()
    }
}
