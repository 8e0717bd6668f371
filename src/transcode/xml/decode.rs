//! XML to a message, by the mapping in the module's documentation.

use base64::Engine;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value};

use super::events::{Element, Events, Node};
use super::{Special, XmlError, duration, namespace};
use crate::transcode::json;

/// How strictly input is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeOptions {
    /// Skip elements that name no field instead of refusing them.
    pub ignore_unknown_fields: bool,
}

/// A whole document whose root element (any name) holds a message of type `descriptor`.
pub fn decode(descriptor: MessageDescriptor, xml: &[u8], options: DecodeOptions) -> Result<DynamicMessage, XmlError> {
    let mut events = Events::new(xml);
    let root = root(&mut events)?;
    let message = if root.nil {
        events.skip()?;
        DynamicMessage::new(descriptor)
    } else {
        decode_element(&mut events, descriptor, options)?
    };
    events.finish()?;
    Ok(message)
}

/// A whole document whose root element (any name) holds the elements of `field` of `message`:
/// a message when the field is a singular message, else the field's own elements.
pub fn decode_body(
    message: &mut DynamicMessage,
    field: &FieldDescriptor,
    xml: &[u8],
    options: DecodeOptions,
) -> Result<(), XmlError> {
    let mut events = Events::new(xml);
    let root = root(&mut events)?;
    match field.kind() {
        Kind::Message(m) if !field.is_list() && !field.is_map() && Special::of(&m).is_none() => {
            if !root.nil {
                let value = decode_content(&mut events, m, options)?;
                message.set_field(field, Value::Message(value));
            } else {
                events.skip()?;
            }
        }
        _ => {
            let descriptor = message.descriptor();
            let package = descriptor.package_name();
            let singular = !field.is_list() && !field.is_map();
            let mut given = false;
            loop {
                match events.node()? {
                    Node::Start(element) if element.is_in_package(package) && names(field, &element.name) => {
                        if singular && given {
                            return Err(events.error(format!("the field {} is given twice", field.json_name())));
                        }
                        given = true;
                        read_field(&mut events, message, field, &element, options)?;
                    }
                    Node::Start(element) => {
                        return Err(events.error(format!(
                            "expected <{}> elements, found <{}>",
                            field.json_name(),
                            element.name
                        )));
                    }
                    Node::Text(t) if t.trim().is_empty() => {}
                    Node::Text(_) => return Err(events.error("text where elements are expected")),
                    Node::End => break,
                    Node::Eof => return Err(events.error("the document ends inside an element")),
                }
            }
        }
    }
    events.finish()
}

/// The field mask an XML body sets, as [`crate::transcode::json::field_mask_paths`] reads a JSON
/// one: a path per element present, in proto field names, singular message fields as dotted
/// paths; maps, repeated fields, well-known types and nil elements are leaves. Elements that name
/// no field (or are in another namespace) are skipped, as the decoder skips them when unknown
/// fields are ignored, and refuses them otherwise.
pub fn field_mask_paths(descriptor: &MessageDescriptor, xml: &[u8]) -> Result<Vec<String>, XmlError> {
    let mut events = Events::new(xml);
    root(&mut events)?;
    let mut paths = Vec::new();
    mask_paths(&mut events, descriptor, "", &mut paths)?;
    Ok(paths)
}

fn mask_paths(
    events: &mut Events<'_>,
    descriptor: &MessageDescriptor,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<(), XmlError> {
    loop {
        match events.node()? {
            Node::Start(element) => {
                let field =
                    element.is_in_package(descriptor.package_name()).then(|| field_named(descriptor, &element.name));
                let Some(field) = field.flatten() else {
                    events.skip()?;
                    continue;
                };
                let path = format!("{prefix}{}", field.name());
                match field.kind() {
                    Kind::Message(m)
                        if !field.is_list()
                            && !field.is_map()
                            && !element.nil
                            && !m.full_name().starts_with("google.protobuf.") =>
                    {
                        mask_paths(events, &m, &format!("{path}."), out)?;
                    }
                    _ => {
                        if !out.contains(&path) {
                            out.push(path);
                        }
                        events.skip()?;
                    }
                }
            }
            Node::End | Node::Eof => return Ok(()),
            Node::Text(_) => {}
        }
    }
}

/// The document's root element.
fn root(events: &mut Events<'_>) -> Result<Element, XmlError> {
    loop {
        match events.node()? {
            Node::Start(element) => return Ok(element),
            Node::Text(t) if t.trim().is_empty() => {}
            Node::Text(_) => return Err(events.error("text before the root element")),
            Node::End | Node::Eof => return Err(XmlError::new("the document has no root element")),
        }
    }
}

/// The content of the element just opened, as a message of type `descriptor`; reads up to and
/// including the element's end tag.
pub fn decode_content(
    events: &mut Events<'_>,
    descriptor: MessageDescriptor,
    options: DecodeOptions,
) -> Result<DynamicMessage, XmlError> {
    let mut message = DynamicMessage::new(descriptor.clone());
    let package = descriptor.package_name();
    // Singular fields given so far: `has_field` cannot say, for a field given at its default.
    let mut given = Vec::new();
    loop {
        match events.node()? {
            Node::Start(element) => {
                let field = element.is_in_package(package).then(|| field_named(&descriptor, &element.name)).flatten();
                match field {
                    Some(field) => {
                        if !field.is_list() && !field.is_map() {
                            if given.contains(&field.number()) {
                                return Err(events.error(format!("the field {} is given twice", field.json_name())));
                            }
                            given.push(field.number());
                        }
                        read_field(events, &mut message, &field, &element, options)?;
                    }
                    None if options.ignore_unknown_fields => events.skip()?,
                    None => {
                        let descriptor = message.descriptor();
                        let where_ = match &element.namespace {
                            Some(other) if !super::is_namespace_of(other, package) => {
                                format!(" in namespace {other:?} (its fields are in {:?})", namespace(package))
                            }
                            _ => String::new(),
                        };
                        return Err(events.error(format!(
                            "{} has no field <{}>{where_}",
                            descriptor.full_name(),
                            element.name
                        )));
                    }
                }
            }
            Node::Text(t) if t.trim().is_empty() => {}
            Node::Text(t) => {
                let descriptor = message.descriptor();
                let shown: String = t.trim().chars().take(40).collect();
                return Err(events
                    .error(format!("text {shown:?} inside {}, which holds only elements", descriptor.full_name())));
            }
            Node::End => return Ok(message),
            Node::Eof => return Err(events.error("the document ends inside an element")),
        }
    }
}

/// The content of the element just opened as a message of type `descriptor`: its fields'
/// elements, or for a well-known type its text. Reads up to and including the end tag.
pub fn decode_element(
    events: &mut Events<'_>,
    descriptor: MessageDescriptor,
    options: DecodeOptions,
) -> Result<DynamicMessage, XmlError> {
    let Some(special) = Special::of(&descriptor) else { return decode_content(events, descriptor, options) };
    let text = events.text()?;
    special_value(&descriptor, special, &text).map_err(|e| events.error(e))
}

fn field_named(descriptor: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    descriptor.get_field_by_json_name(name).or_else(|| descriptor.get_field_by_name(name))
}

fn names(field: &FieldDescriptor, name: &str) -> bool {
    field.json_name() == name || field.name() == name
}

/// One element of `field`, just opened.
fn read_field(
    events: &mut Events<'_>,
    message: &mut DynamicMessage,
    field: &FieldDescriptor,
    element: &Element,
    options: DecodeOptions,
) -> Result<(), XmlError> {
    if field.is_map() {
        if element.nil {
            return Err(events.error("a map entry cannot be nil"));
        }
        let Kind::Message(entry) = field.kind() else { unreachable!("a map field's kind is its entry") };
        let entry = decode_content(events, entry, options)?;
        let descriptor = entry.descriptor();
        let (key_field, value_field) = (descriptor.map_entry_key_field(), descriptor.map_entry_value_field());
        let key = match entry.get_field(&key_field).into_owned() {
            Value::String(s) => MapKey::String(s),
            Value::I32(n) => MapKey::I32(n),
            Value::I64(n) => MapKey::I64(n),
            Value::U32(n) => MapKey::U32(n),
            Value::U64(n) => MapKey::U64(n),
            Value::Bool(b) => MapKey::Bool(b),
            other => return Err(events.error(format!("a map key cannot be {other:?}"))),
        };
        let value = entry.get_field(&value_field).into_owned();
        if let Value::Map(map) = message.get_field_mut(field) {
            map.insert(key, value);
        }
        return Ok(());
    }
    if field.is_list() {
        if element.nil {
            return Err(events.error(format!("an item of the list {} cannot be nil", field.json_name())));
        }
        let value = read_value(events, field, options)?;
        if let Value::List(list) = message.get_field_mut(field) {
            list.push(value);
        }
        return Ok(());
    }
    if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
        if let Some(other) = oneof.fields().find(|f| f != field && message.has_field(f)) {
            return Err(events.error(format!(
                "{} and {} are both given, but they are members of oneof {}",
                other.json_name(),
                field.json_name(),
                oneof.name()
            )));
        }
    }
    if element.nil {
        return events.skip();
    }
    let value = read_value(events, field, options)?;
    message.set_field(field, value);
    Ok(())
}

/// The value of one element of `field` (not a map entry), read up to its end tag.
fn read_value(events: &mut Events<'_>, field: &FieldDescriptor, options: DecodeOptions) -> Result<Value, XmlError> {
    let kind = field.kind();
    // The text is read to the end tag: errors name the element it was in (built only for an
    // error: a path per value would cost its length each time).
    let error = |events: &Events<'_>, e: String| {
        XmlError::new(format!("{}: {e} (at {}/{})", field.json_name(), events.path(), field.json_name()))
    };
    if let Kind::Message(descriptor) = &kind {
        let Some(special) = Special::of(descriptor) else {
            return decode_content(events, descriptor.clone(), options).map(Value::Message);
        };
        let text = events.text()?;
        return special_value(descriptor, special, &text).map(Value::Message).map_err(|e| error(events, e));
    }
    let text = events.text()?;
    scalar(&kind, &text).map_err(|e| error(events, e))
}

/// A well-known type from its text.
fn special_value(descriptor: &MessageDescriptor, special: Special, text: &str) -> Result<DynamicMessage, String> {
    let from_json = |json: &[u8]| {
        json::decode(descriptor.clone(), json, false)
            .map_err(|e| format!("not a valid {}: {}", descriptor.full_name(), e.message))
    };
    match special {
        Special::Timestamp | Special::JsonString => {
            let quoted = serde_json::to_vec(text.trim()).map_err(|e| e.to_string())?;
            from_json(&quoted)
        }
        Special::JsonText => from_json(text.as_bytes()),
        Special::Duration => {
            let (seconds, nanos) = duration::parse(text.trim())?;
            let mut message = DynamicMessage::new(descriptor.clone());
            message.set_field_by_name("seconds", Value::I64(seconds));
            message.set_field_by_name("nanos", Value::I32(nanos));
            Ok(message)
        }
        Special::Wrapper => {
            let mut message = DynamicMessage::new(descriptor.clone());
            let value = descriptor.get_field_by_name("value").ok_or("a wrapper without a value field")?;
            message.set_field(&value, scalar(&value.kind(), text)?);
            Ok(message)
        }
    }
}

/// A scalar from its XML Schema lexical form.
pub(super) fn scalar(kind: &Kind, text: &str) -> Result<Value, String> {
    if let Kind::String = kind {
        return Ok(Value::String(text.to_owned()));
    }
    let text = text.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r'));
    fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
        text.parse().map_err(|_| {
            if text.trim_start_matches(['-', '+']).bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
                format!("{:?} is out of range for {what}", shorten(text))
            } else {
                format!("expected {what}, got {:?}", shorten(text))
            }
        })
    }
    Ok(match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(number(text, "a 32-bit integer")?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(number(text, "a 64-bit integer")?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(number(text, "an unsigned 32-bit integer")?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(number(text, "an unsigned 64-bit integer")?),
        Kind::Float => Value::F32(float(text)? as f32),
        Kind::Double => Value::F64(float(text)?),
        Kind::Bool => Value::Bool(match text {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("expected true or false, got {:?}", shorten(text))),
        }),
        Kind::Bytes => {
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&compact)
                .map_err(|e| format!("expected base64, got {:?}: {e}", shorten(text)))?;
            Value::Bytes(bytes.into())
        }
        Kind::Enum(e) => match e.get_value_by_name(text) {
            Some(v) => Value::EnumNumber(v.number()),
            None => match text.parse::<i32>() {
                Ok(n) => Value::EnumNumber(n),
                Err(_) => {
                    let known: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                    let text = shorten(text);
                    return Err(format!("{text:?} is not a value of {} (one of {})", e.full_name(), known.join(", ")));
                }
            },
        },
        Kind::String | Kind::Message(_) => unreachable!("handled by the callers"),
    })
}

/// `xs:double`: decimal or scientific, `INF`, `-INF`, `NaN`.
fn float(text: &str) -> Result<f64, String> {
    match text {
        "INF" | "+INF" => Ok(f64::INFINITY),
        "-INF" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        // Rust also reads `inf` and `infinity`, which XML Schema does not.
        _ if text.bytes().any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E')) => {
            Err(format!("expected a number, got {:?}", shorten(text)))
        }
        _ => text.parse().map_err(|_| format!("expected a number, got {:?}", shorten(text))),
    }
}

/// At most 40 characters of a client's text, for an error message.
pub(super) fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}
