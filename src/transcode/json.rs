//! Messages to and from JSON by the proto3 canonical mapping (prost-reflect's serde support):
//! int64 as strings, bytes as base64, enums by name, every well-known type, `json_name`, and both
//! the JSON and the proto field names accepted on input. JSON is read straight into the message
//! and written straight from it — no intermediate `serde_json::Value` tree.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, MessageDescriptor, ReflectMessage, SerializeOptions,
};

/// How responses are printed (Envoy's `print_options`, same names and meanings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrintOptions {
    /// Pretty-print with indentation.
    pub add_whitespace: bool,
    /// Emit fields that have their default value (0, "", false, empty lists).
    pub always_print_primitive_fields: bool,
    /// Enums as numbers instead of names.
    pub always_print_enums_as_ints: bool,
    /// Field names as in the .proto (`display_name`) instead of lowerCamelCase (`displayName`).
    pub preserve_proto_field_names: bool,
}

impl PrintOptions {
    fn serialize_options(&self) -> SerializeOptions {
        SerializeOptions::new()
            .skip_default_fields(!self.always_print_primitive_fields)
            .use_enum_numbers(self.always_print_enums_as_ints)
            .use_proto_field_name(self.preserve_proto_field_names)
    }
}

/// Malformed or ill-typed JSON: what, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonError {
    pub message: String,
}

/// Reads a JSON body into a new message of type `descriptor`. Unknown fields are an error unless
/// `ignore_unknown`.
pub fn decode(descriptor: MessageDescriptor, json: &[u8], ignore_unknown: bool) -> Result<DynamicMessage, JsonError> {
    decode_shifted(descriptor, json, ignore_unknown, 0)
}

/// [`decode`], with error columns on the first line shifted left by `shift` bytes (for a body
/// that was wrapped before decoding).
fn decode_shifted(
    descriptor: MessageDescriptor,
    json: &[u8],
    ignore_unknown: bool,
    shift: usize,
) -> Result<DynamicMessage, JsonError> {
    let options = DeserializeOptions::new().deny_unknown_fields(!ignore_unknown);
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(&mut deserializer, &mut track);
    let result = DynamicMessage::deserialize_with_options(descriptor, tracked, &options).and_then(|m| {
        deserializer.end()?;
        Ok(m)
    });
    result.map_err(|e| {
        let path = track.path().to_string();
        let column = if e.line() == 1 { e.column().saturating_sub(shift) } else { e.column() };
        let at = if matches!(path.as_str(), "." | "" | "?") { String::new() } else { format!(" at field {path}") };
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "malformed JSON",
            _ => "invalid JSON",
        };
        let reason = strip_position(&e.to_string());
        JsonError { message: format!("{what}{at} (line {}, column {column}): {reason}", e.line()) }
    })
}

/// serde_json appends " at line L column C" to its messages; we say it our way.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Reads a JSON body into one field of `message` (`body: "field"`): the body is the field's JSON
/// value, of whatever type.
pub fn decode_into_field(
    message: &mut DynamicMessage,
    field: &FieldDescriptor,
    json: &[u8],
    ignore_unknown: bool,
) -> Result<(), JsonError> {
    // Wrap as {"<name>": <body>} and read the whole message: prost-reflect has no per-field entry
    // point, and the wrapper costs a copy of the body, not a tree.
    let prefix = format!("{{{}:", serde_json::to_string(field.json_name()).unwrap_or_default());
    let mut wrapped = Vec::with_capacity(prefix.len() + json.len() + 1);
    wrapped.extend_from_slice(prefix.as_bytes());
    wrapped.extend_from_slice(json);
    wrapped.push(b'}');
    let decoded = decode_shifted(message.descriptor(), &wrapped, ignore_unknown, prefix.len())?;
    message.set_field(field, decoded.get_field(field).into_owned());
    Ok(())
}

/// Writes a message as JSON. Fails when the message has no JSON form: an `Any` whose type is not
/// in the pool, a `Timestamp` or `Duration` out of the range the JSON mapping allows, a
/// non-finite number in a `Value`. Such a message comes from a backend, and the client gets an
/// error saying so instead of a truncated document.
pub fn encode(message: &DynamicMessage, print: &PrintOptions) -> Result<Vec<u8>, JsonError> {
    let mut out = Vec::with_capacity(128);
    let options = print.serialize_options();
    let result = if print.add_whitespace {
        message.serialize_with_options(&mut serde_json::Serializer::pretty(&mut out), &options)
    } else {
        message.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options)
    };
    result.map_err(|e| no_json_form(message, &e))?;
    Ok(out)
}

fn no_json_form(message: &DynamicMessage, error: &serde_json::Error) -> JsonError {
    JsonError { message: format!("a {} has no JSON form: {error}", message.descriptor().full_name()) }
}

/// Writes one field of a message as JSON (`response_body`).
pub fn encode_field(
    message: &DynamicMessage,
    field: &FieldDescriptor,
    print: &PrintOptions,
) -> Result<Vec<u8>, JsonError> {
    if let prost_reflect::Value::Message(inner) = &*message.get_field(field) {
        if !field.is_list() && !field.is_map() {
            return encode(inner, print);
        }
    }
    // A scalar, list or map: prost-reflect writes values only as fields of a message, so write
    // the message and pick the field out. Rare (response_body naming a non-message field), so a
    // small tree is fine here.
    let options = print.serialize_options().skip_default_fields(false);
    let mut out = Vec::new();
    message
        .serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options)
        .map_err(|e| no_json_form(message, &e))?;
    let key = if print.preserve_proto_field_names { field.name() } else { field.json_name() };
    let value = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&out)
        .ok()
        .and_then(|mut fields| fields.remove(key))
        .unwrap_or(serde_json::Value::Null);
    serde_json::to_vec(&value).map_err(|e| no_json_form(message, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;

    fn pool() -> DescriptorPool {
        DescriptorPool::decode(crate::demo::DESCRIPTOR_SET).expect("demo set")
    }

    #[test]
    fn errors_say_what_and_where() {
        let user = pool().get_message_by_name("shop.users.v1.CreateUserRequest").expect("type");
        let err = decode(user.clone(), br#"{"email": "a@b", "display_name": 5}"#, false).expect_err("wrong type");
        assert!(err.message.contains("display_name") && err.message.contains("column"), "{}", err.message);
        let err = decode(user.clone(), br#"{"email": "a@b""#, false).expect_err("truncated");
        assert!(err.message.starts_with("malformed JSON"), "{}", err.message);
        let err = decode(user.clone(), br#"{"emial": "a@b"}"#, false).expect_err("unknown field");
        assert!(err.message.contains("emial"), "{}", err.message);
        assert!(decode(user, br#"{"emial": "a@b"}"#, true).is_ok(), "unknown fields can be ignored");
    }

    #[test]
    fn both_field_names_are_accepted_and_json_names_printed() {
        let user = pool().get_message_by_name("shop.users.v1.CreateUserRequest").expect("type");
        let a = decode(user.clone(), br#"{"displayName": "Ada"}"#, false).expect("json name");
        let b = decode(user, br#"{"display_name": "Ada"}"#, false).expect("proto name");
        assert_eq!(a, b);
        assert_eq!(encode(&a, &PrintOptions::default()).expect("json"), br#"{"displayName":"Ada"}"#);
        let proto_names = PrintOptions { preserve_proto_field_names: true, ..Default::default() };
        assert_eq!(encode(&a, &proto_names).expect("json"), br#"{"display_name":"Ada"}"#);
    }

    #[test]
    fn body_field_and_response_field() {
        let request = pool().get_message_by_name("shop.products.v1.CreateProductRequest").expect("type");
        let field = request.get_field_by_name("product").expect("field");
        let mut message = DynamicMessage::new(request);
        decode_into_field(&mut message, &field, br#"{"name": "Gear", "price": {"units": "3"}}"#, false).expect("ok");
        assert_eq!(
            encode_field(&message, &field, &PrintOptions::default()).expect("json"),
            br#"{"name":"Gear","price":{"units":"3"}}"#
        );
        let err = decode_into_field(&mut message, &field, br#"{"name": 1}"#, false).expect_err("wrong type");
        assert!(err.message.contains("product.name"), "{}", err.message);
    }
}
