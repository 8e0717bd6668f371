//! Messages to and from XML: the one mapping the SOAP frontend and the REST frontend's
//! `application/xml` bodies share, and that the generated WSDL's schema describes.
//!
//! # The mapping
//! - **Namespaces.** Each proto package has its namespace, `urn:dragoman:<package>`
//!   ([`namespace`]). A message's field elements are in the namespace of the package that
//!   declares the message (the schema's `elementFormDefault="qualified"`). On input, prefixes are
//!   whatever the client chose — names are matched by namespace URI and local name — and an
//!   element in no namespace is taken as in the expected one, so plain-XML clients may leave
//!   namespaces out.
//! - **Fields.** One element per field, named by its JSON name (`displayName`); the proto name
//!   (`display_name`) is accepted on input. Written in the order of the schema: field-number
//!   order, a oneof at its first member's place ([`layout`]); read in any order.
//! - **Absent, empty, nil.** Scalars without presence are always written, even at their default
//!   (typed SOAP clients then see `0` rather than nothing); fields with presence (messages,
//!   `optional`, oneof members, wrappers) only when set. On input an absent element leaves the
//!   field unset, an empty one sets it (`""`, an empty message), and `xsi:nil="true"` leaves it
//!   unset (as JSON's `null`).
//! - **Repeated fields** repeat their element; **maps** repeat an entry element holding `key`
//!   and `value`; a **oneof** is a choice of its members' elements, at most one given.
//! - **Scalars** as XML Schema writes them: integers in decimal (64-bit ones too, with their
//!   range checked), `true`/`false` (`1`/`0` accepted), floats as `xs:double` (`INF`, `-INF`,
//!   `NaN`), bytes as base64, enums by name (numbers accepted on input). Strings exactly as
//!   given; XML 1.0 cannot carry control characters other than tab, CR and LF, so a string
//!   holding one has no XML form.
//! - **Well-known types.** Timestamp as `xs:dateTime` (RFC 3339, UTC), Duration as
//!   `xs:duration` (`PT1.5S`; days, hours and minutes accepted, years and months refused as
//!   having no fixed length), wrappers as their scalar (nillable), FieldMask as its JSON string
//!   (`a.b,c`), and Struct, Value, ListValue and Any as their proto3 JSON text in a string.
//!
//! # Safety
//! Input is read with quick-xml, which expands nothing by itself; on top of it a document
//! type declaration is refused outright (no DTD, so no external entities and no entity
//! expansion), only the five predefined entities and character references are accepted, depth is
//! bounded ([`MAX_DEPTH`]), so are attributes per element ([`MAX_ATTRIBUTES`]; namespace
//! lookups scan the declarations in scope) and element names ([`MAX_NAME`]); only UTF-8 is read, and only
//! the characters XML 1.0 allows, line ends normalized to LF. Size is bounded by the caller's body limit.

mod decode;
mod duration;
mod encode;
mod events;

pub use decode::{DecodeOptions, decode, decode_body, decode_content, decode_element, field_mask_paths};
pub use encode::{Writer, encode, encode_body, escape};
pub use events::{Element, Events, Node};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, OneofDescriptor};

/// Deepest element nesting accepted in a request, the SOAP envelope included.
pub const MAX_DEPTH: usize = 64;

/// Most attributes on one element, namespace declarations included: what a message needs is
/// `xsi:nil` and a few declarations.
pub const MAX_ATTRIBUTES: usize = 32;

/// Largest XML written for one document (a reply): an error past it.
pub const MAX_OUTPUT: usize = 64 << 20;

/// Longest element name, prefix included: no field is named longer.
pub const MAX_NAME: usize = 1024;

/// The XML Schema instance namespace (`xsi:nil`).
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Malformed XML, or XML that does not fit the message: what, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct XmlError {
    pub message: String,
}

impl XmlError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        XmlError { message: message.into() }
    }
}

/// The namespace of a proto package's elements and types.
pub fn namespace(package: &str) -> String {
    if package.is_empty() { "urn:dragoman".to_owned() } else { format!("urn:dragoman:{package}") }
}

/// A message's name inside its package's namespace: `Order`, `Order.Item` for a nested one.
pub fn local_type_name(descriptor: &MessageDescriptor) -> &str {
    strip_package(descriptor.full_name(), descriptor.package_name())
}

pub(crate) fn strip_package<'a>(full_name: &'a str, package: &str) -> &'a str {
    if package.is_empty() {
        full_name
    } else {
        full_name.strip_prefix(package).and_then(|n| n.strip_prefix('.')).unwrap_or(full_name)
    }
}

/// One place in a message's element sequence.
pub enum Item {
    Field(FieldDescriptor),
    /// A (real, not `optional`'s synthetic) oneof: at most one of its fields.
    Choice(OneofDescriptor),
}

/// A message's fields in the order its elements are written and its schema lists them: each
/// field in field-number order (as the descriptor lists them), a real oneof at its first member's
/// place.
pub fn layout(descriptor: &MessageDescriptor) -> impl Iterator<Item = Item> {
    descriptor.fields().filter_map(|field| match field.containing_oneof().filter(|o| !o.is_synthetic()) {
        None => Some(Item::Field(field)),
        Some(oneof) if oneof.fields().next().as_ref() == Some(&field) => Some(Item::Choice(oneof)),
        Some(_) => None,
    })
}

/// Whether `namespace` is the namespace of `package` (without building it).
pub fn is_namespace_of(namespace: &str, package: &str) -> bool {
    match namespace.strip_prefix("urn:dragoman") {
        Some("") => package.is_empty(),
        Some(rest) => rest.strip_prefix(':') == Some(package) && !package.is_empty(),
        None => false,
    }
}

/// How a well-known message type is written: as text, not as elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// `xs:dateTime`.
    Timestamp,
    /// `xs:duration`.
    Duration,
    /// A wrapper: the scalar of its `value` field, nillable.
    Wrapper,
    /// The JSON mapping's string form (`FieldMask`).
    JsonString,
    /// JSON text (`Struct`, `Value`, `ListValue`, `Any`).
    JsonText,
}

impl Special {
    pub fn of(descriptor: &MessageDescriptor) -> Option<Special> {
        Some(match descriptor.full_name() {
            "google.protobuf.Timestamp" => Special::Timestamp,
            "google.protobuf.Duration" => Special::Duration,
            "google.protobuf.FieldMask" => Special::JsonString,
            "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.Any" => Special::JsonText,
            "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue" => Special::Wrapper,
            _ => return None,
        })
    }
}

/// A field that is written as elements of its own (a message that is not a [`Special`]).
pub fn is_structured(kind: &Kind) -> bool {
    matches!(kind, Kind::Message(m) if Special::of(m).is_none())
}

#[cfg(test)]
mod tests;
