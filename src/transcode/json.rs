//! Messages to and from JSON by the proto3 canonical mapping (prost-reflect's serde support):
//! int64 as strings, bytes as base64, enums by name, every well-known type, `json_name`, and both
//! the JSON and the proto field names accepted on input. JSON is read straight into the message
//! and written straight from it — no intermediate `serde_json::Value` tree.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, MessageDescriptor, ReflectMessage, SerializeOptions,
};

/// How responses are printed (Envoy's `print_options`, same names and meanings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
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
    let first = read(descriptor.clone(), json, ignore_unknown, shift);
    // Only a body that failed pays for the rewrite of integral numbers (`2.0` for an enum), and
    // only if it has any: every other body is read once, as it came.
    match first {
        Err(_) => match integral_numbers(json) {
            std::borrow::Cow::Owned(rewritten) => read(descriptor, &rewritten, ignore_unknown, shift).or(first),
            std::borrow::Cow::Borrowed(_) => first,
        },
        ok => ok,
    }
}

fn read(
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
    result.map_err(|e| json_error(&e, &track.path().to_string(), shift))
}

/// A serde_json error as ours: malformed or invalid, at which field, where.
fn json_error(e: &serde_json::Error, path: &str, shift: usize) -> JsonError {
    let column = if e.line() == 1 { e.column().saturating_sub(shift) } else { e.column() };
    let at = if matches!(path, "." | "" | "?") { String::new() } else { format!(" at field {path}") };
    let what = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "malformed JSON",
        _ => "invalid JSON",
    };
    let reason = strip_position(&e.to_string());
    JsonError { message: format!("{what}{at} (line {}, column {column}): {reason}", e.line()) }
}

/// JSON has one kind of number: `2.0` is the integer 2 (and JSON Schema, which the OpenAPI
/// document speaks, agrees). prost-reflect reads such a number for every integer type but an enum,
/// which takes integer literals only; written as integers first, they read alike everywhere.
/// Only where that changes nothing else: magnitudes below 2^53 (exact in f64), and never a
/// negative zero (a double keeps its sign). A body without such numbers is not copied. An error
/// later on the same line may then report a column a few bytes off.
fn integral_numbers(json: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0; // json[..copied] is in `out`
    let mut i = 0;
    let mut in_string = false;
    while i < json.len() {
        let b = json[i];
        if in_string {
            match b {
                b'\\' => i += 2,
                b'"' => {
                    in_string = false;
                    i += 1;
                }
                _ => i += 1,
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len() && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                if let Some(integer) = integral(&json[start..i]) {
                    let out = out.get_or_insert_with(|| Vec::with_capacity(json.len()));
                    out.extend_from_slice(&json[copied..start]);
                    out.extend_from_slice(integer.as_bytes());
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    match out {
        None => std::borrow::Cow::Borrowed(json),
        Some(mut out) => {
            out.extend_from_slice(&json[copied..]);
            std::borrow::Cow::Owned(out)
        }
    }
}

/// A JSON number token with a fraction or exponent whose value is a small integer, as an integer.
fn integral(token: &[u8]) -> Option<String> {
    if !token.iter().any(|c| matches!(c, b'.' | b'e' | b'E')) || !is_json_number(token) {
        return None;
    }
    let value: f64 = std::str::from_utf8(token).ok()?.parse().ok()?;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    let plain = value.fract() == 0.0 && value.abs() < EXACT && !(value == 0.0 && value.is_sign_negative());
    #[allow(clippy::cast_possible_truncation)] // integral and below 2^53: exact
    plain.then(|| (value as i64).to_string())
}

/// RFC 8259's number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` — so that a token
/// JSON refuses (`01.0`, `1.`) is left for serde_json to refuse.
fn is_json_number(token: &[u8]) -> bool {
    let digits = |t: &[u8]| t.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut t = token.strip_prefix(b"-").unwrap_or(token);
    match digits(t) {
        0 => return false,
        n if n > 1 && t[0] == b'0' => return false,
        n => t = &t[n..],
    }
    if let Some(rest) = t.strip_prefix(b".") {
        match digits(rest) {
            0 => return false,
            n => t = &rest[n..],
        }
    }
    if let Some(rest) = t.strip_prefix(b"e").or_else(|| t.strip_prefix(b"E")) {
        let rest = rest.strip_prefix(b"+").or_else(|| rest.strip_prefix(b"-")).unwrap_or(rest);
        match digits(rest) {
            0 => return false,
            n => t = &rest[n..],
        }
    }
    t.is_empty()
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
    // The wrapper would also take a body that is not one JSON value but goes on to close it and
    // name more fields (`{}, "product": {...}`), the later value winning: such a body is
    // malformed. Checked once the wrapped read succeeds, so bad bodies still err as before.
    serde_json::from_slice::<serde::de::IgnoredAny>(json).map_err(|e| json_error(&e, "", 0))?;
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
        let formatter = FloatsReadBack(serde_json::ser::PrettyFormatter::new());
        message.serialize_with_options(&mut serde_json::Serializer::with_formatter(&mut out, formatter), &options)
    } else {
        let formatter = FloatsReadBack(serde_json::ser::CompactFormatter);
        message.serialize_with_options(&mut serde_json::Serializer::with_formatter(&mut out, formatter), &options)
    };
    result.map_err(|e| no_json_form(message, &e))?;
    Ok(out)
}

/// The field mask a JSON object sets, as grpc-gateway fills a PATCH's `update_mask` from the body:
/// one path per key present, in proto field names, nested objects as dotted paths (`address.city`)
/// for singular message fields. A map, a repeated field, a well-known type with a JSON form of its
/// own, and a `null` are leaves: the whole field is meant. Keys that name no field are skipped
/// (reading the body into the message has said whether they are allowed).
pub fn field_mask_paths(descriptor: &MessageDescriptor, json: &[u8]) -> Result<Vec<String>, JsonError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| JsonError { message: format!("malformed JSON: {e}") })?;
    let mut paths = Vec::new();
    if let serde_json::Value::Object(object) = &value {
        mask_paths(descriptor, object, "", &mut paths);
    }
    Ok(paths)
}

fn mask_paths(
    descriptor: &MessageDescriptor,
    object: &serde_json::Map<String, serde_json::Value>,
    prefix: &str,
    out: &mut Vec<String>,
) {
    for (key, value) in object {
        let Some(field) = descriptor.get_field_by_json_name(key).or_else(|| descriptor.get_field_by_name(key)) else {
            continue;
        };
        let path = format!("{prefix}{}", field.name());
        match (field.kind(), value) {
            (prost_reflect::Kind::Message(m), serde_json::Value::Object(inner))
                if !field.is_list() && !field.is_map() && !m.full_name().starts_with("google.protobuf.") =>
            {
                mask_paths(&m, inner, &format!("{path}."), out);
            }
            _ => out.push(path),
        }
    }
}

/// How deep messages may nest in JSON written by the gateway, `Any`s counted as a level. Decoding
/// a message bounds its nesting (prost's recursion limit), but each `Any` holds a message decoded
/// afresh when it is written, so a chain of `Any`s would nest without bound and overflow the stack.
pub const MAX_NESTING: usize = 100;

/// True when a message of this type can hold an `Any`, anywhere down its fields: only such
/// messages need [`check_nesting`] before [`encode`]. Computed once per route, not per call.
pub fn holds_any(descriptor: &MessageDescriptor) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![descriptor.clone()];
    while let Some(message) = todo.pop() {
        if message.full_name() == "google.protobuf.Any" {
            return true;
        }
        if !seen.insert(message.full_name().to_owned()) {
            continue;
        }
        // Its fields, and the extensions the pool defines for it (written to JSON too).
        let kinds = message.fields().map(|f| f.kind()).chain(message.extensions().map(|x| x.kind()));
        todo.extend(kinds.filter_map(|kind| match kind {
            prost_reflect::Kind::Message(m) => Some(m),
            _ => None,
        }));
    }
    false
}

/// Checks that a message, `Any`s opened as [`encode`] opens them, nests no deeper than
/// [`MAX_NESTING`]: what may be encoded without exhausting the stack.
pub fn check_nesting(message: &DynamicMessage) -> Result<(), JsonError> {
    nesting(message, 0)
}

fn nesting(message: &DynamicMessage, depth: usize) -> Result<(), JsonError> {
    if depth > MAX_NESTING {
        return Err(JsonError {
            message: format!("messages nest more than {MAX_NESTING} deep (through google.protobuf.Any)"),
        });
    }
    let descriptor = message.descriptor();
    if descriptor.full_name() == "google.protobuf.Any" {
        let url = message.get_field_by_name("type_url");
        let value = message.get_field_by_name("value");
        let name = url.as_deref().and_then(prost_reflect::Value::as_str).and_then(|u| u.rsplit('/').next());
        let bytes = value.as_deref().and_then(prost_reflect::Value::as_bytes);
        let inner = name
            .and_then(|n| descriptor.parent_pool().get_message_by_name(n))
            .zip(bytes)
            .and_then(|(inner, bytes)| DynamicMessage::decode(inner, bytes.clone()).ok());
        // An Any that does not open has no JSON form, and encode says so: no nesting to follow.
        return inner.map_or(Ok(()), |inner| nesting(&inner, depth + 1));
    }
    for value in message.fields().map(|(_, v)| v).chain(message.extensions().map(|(_, v)| v)) {
        match value {
            prost_reflect::Value::Message(m) => nesting(m, depth + 1)?,
            prost_reflect::Value::List(list) => {
                for m in list.iter().filter_map(prost_reflect::Value::as_message) {
                    nesting(m, depth + 1)?;
                }
            }
            prost_reflect::Value::Map(map) => {
                for m in map.values().filter_map(prost_reflect::Value::as_message) {
                    nesting(m, depth + 1)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn no_json_form(message: &DynamicMessage, error: &serde_json::Error) -> JsonError {
    JsonError { message: format!("a {} has no JSON form: {error}", message.descriptor().full_name()) }
}

/// serde_json's formatting, except for a float of ±`f32::MAX`: its shortest form, `3.4028235e38`,
/// is above `f32::MAX` when read back (JSON numbers are read as f64), so the gateway would refuse
/// what it printed. Written as the f64 of the very same value, it reads back exactly. Every other
/// float prints in its shortest form.
struct FloatsReadBack<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for FloatsReadBack<F> {
    fn write_f32<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, value: f32) -> std::io::Result<()> {
        if value.abs() == f32::MAX {
            self.0.write_f64(writer, f64::from(value))
        } else {
            self.0.write_f32(writer, value)
        }
    }

    // The layout (PrettyFormatter's indentation) is the inner formatter's.
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_array(writer)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_array(writer)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        self.0.begin_array_value(writer, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(writer)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_object(writer)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_object(writer)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        self.0.begin_object_key(writer, first)
    }
    fn end_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_object_key(writer)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(writer)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(writer)
    }
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
    let formatter = FloatsReadBack(serde_json::ser::CompactFormatter);
    message
        .serialize_with_options(&mut serde_json::Serializer::with_formatter(&mut out, formatter), &options)
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
    fn an_integral_number_is_an_integer_for_every_field() {
        let order = pool().get_message_by_name("shop.orders.v1.OrderEvent").expect("type");
        let by_int = decode(order.clone(), br#"{"status": 2}"#, false).expect("an enum by number");
        for integral in [&br#"{"status": 2.0}"#[..], br#"{"status": 2e0}"#, br#"{"status":0.2E1}"#] {
            assert_eq!(decode(order.clone(), integral, false).expect("the same number"), by_int);
        }
        assert!(decode(order.clone(), br#"{"status": 2.5}"#, false).is_err());
        assert!(decode(order.clone(), br#"{"status": 02.0}"#, false).is_err(), "still not JSON");
        assert!(decode(order, br#"{"orderId": "2.0", "status": 1.}"#, false).is_err(), "still not JSON");
        assert_eq!(
            &*integral_numbers(br#"{"a":"1.0","b":[1.0,-0.0,2.5,1e2,9007199254740992.0]}"#),
            br#"{"a":"1.0","b":[1,-0.0,2.5,100,9007199254740992.0]}"#
        );
        assert!(matches!(integral_numbers(br#"{"a": 1, "b": "x"}"#), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn the_largest_float_prints_as_it_reads_back() {
        let pool = DescriptorPool::global();
        let float = pool.get_message_by_name("google.protobuf.FloatValue").expect("type");
        for value in [f32::MAX, -f32::MAX, 0.1, 1.5e38] {
            let mut message = DynamicMessage::new(float.clone());
            message.set_field_by_name("value", prost_reflect::Value::F32(value));
            for print in [PrintOptions::default(), PrintOptions { add_whitespace: true, ..Default::default() }] {
                let json = encode(&message, &print).expect("json");
                let back = decode(float.clone(), &json, false).expect("reads back what it printed");
                assert_eq!(back, message, "{}", String::from_utf8_lossy(&json));
            }
        }
        let mut small = DynamicMessage::new(float);
        small.set_field_by_name("value", prost_reflect::Value::F32(0.1));
        assert_eq!(encode(&small, &PrintOptions::default()).expect("json"), b"0.1", "shortest form");
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

    #[test]
    fn a_body_field_is_one_json_value() {
        // Wrapped as {"product": <body>}, these bodies closed the body's value and named the
        // field again, and the later value won.
        let request = pool().get_message_by_name("shop.products.v1.CreateProductRequest").expect("type");
        let field = request.get_field_by_name("product").expect("field");
        let mut message = DynamicMessage::new(request);
        for body in [&br#"{}, "product": {"name": "x"}"#[..], br#"{"name": "a"}, "product": null"#] {
            let err = decode_into_field(&mut message, &field, body, false).expect_err("not one JSON value");
            assert!(err.message.starts_with("malformed JSON (line 1, column "), "{}", err.message);
            assert!(err.message.ends_with("trailing characters"), "{}", err.message);
        }
        assert!(decode_into_field(&mut message, &field, b"{}\n", false).is_ok(), "whitespace after it is fine");
        let order = pool().get_message_by_name("shop.orders.v1.WatchOrderRequest").expect("type");
        let id = order.get_field_by_name("id").expect("field");
        let mut message = DynamicMessage::new(order);
        assert!(decode_into_field(&mut message, &id, br#""a", "id": "b""#, false).is_err());
        assert!(decode_into_field(&mut message, &id, br#""a""#, false).is_ok());
    }
}

/// Properties over generated messages and JSON bodies of the demo types: bodies come from
/// clients, messages from backends.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::transcode::generate::{Text, any_demo_message, demo_messages};
    use proptest::prelude::*;
    use prost::Message;

    fn print_options() -> impl Strategy<Value = PrintOptions> {
        any::<[bool; 4]>().prop_map(|[a, b, c, d]| PrintOptions {
            add_whitespace: a,
            always_print_primitive_fields: b,
            always_print_enums_as_ints: c,
            preserve_proto_field_names: d,
        })
    }

    /// JSON documents made of the demo types' field names and values that mean something to
    /// some field, any text among them.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value as J;
        let mut names: Vec<String> = demo_messages()
            .iter()
            .flat_map(|m| m.fields())
            .flat_map(|f| [f.name().into(), f.json_name().into()])
            .collect();
        names.extend(["@type", "seconds", "x"].map(String::from));
        let strings = prop::sample::select(vec![
            "ORDER_STATUS_PAID",
            "PAYMENT_STATE_CAPTURED",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00.5-01:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "1.5s",
            "-315576000000s",
            "NaN",
            "-Infinity",
            "1e3",
            "-1",
            "9223372036854775807",
            "18446744073709551616",
            "AAA=",
            "_-8",
            "",
            "USD",
        ]);
        let leaf = prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            any::<i64>().prop_map(J::from),
            any::<u64>().prop_map(J::from),
            any::<f64>().prop_map(J::from),
            strings.prop_map(|s| J::String(s.into())),
            any::<String>().prop_map(J::String),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(J::Array),
                prop::collection::vec((prop::sample::select(names.clone()), inner), 0..4)
                    .prop_map(|fields| J::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// JSON text: a generated document, cut short sometimes, or any bytes.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let document = json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()).boxed();
        let cut =
            (document.clone(), any::<prop::sample::Index>()).prop_map(|(d, at)| d[..at.index(d.len() + 1)].to_vec());
        // A value, then more fields: what a body wrapped as `{"field": <body>}` must not take.
        let more = (document.clone(), json_value()).prop_map(|(d, v)| {
            let mut out = d;
            out.extend_from_slice(br#", "id": "#);
            out.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
            out
        });
        prop_oneof![3 => document, 1 => cut, 1 => more, 1 => any::<Vec<u8>>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn encode_then_decode_is_the_identity(message in any_demo_message(Text::Any), print in print_options()) {
            let json = encode(&message, &print).map_err(|e| TestCaseError::fail(e.message))?;
            let decoded = decode(message.descriptor(), &json, false)
                .map_err(|e| TestCaseError::fail(format!("{}: {}", e.message, String::from_utf8_lossy(&json))))?;
            prop_assert_eq!(decoded.encode_to_vec(), message.encode_to_vec(), "{}", String::from_utf8_lossy(&json));
        }

        #[test]
        fn any_body_decodes_or_errs_and_what_decodes_round_trips(
            descriptor in prop::sample::select(demo_messages()),
            body in body(),
            ignore_unknown in any::<bool>(),
        ) {
            if let Ok(message) = decode(descriptor.clone(), &body, ignore_unknown) {
                let json = encode(&message, &PrintOptions::default()).map_err(|e| TestCaseError::fail(e.message))?;
                let again = decode(descriptor, &json, false).map_err(|e| TestCaseError::fail(e.message))?;
                prop_assert_eq!(again.encode_to_vec(), message.encode_to_vec());
            }
        }

        #[test]
        fn any_body_decodes_into_a_field_or_errs(
            descriptor in prop::sample::select(demo_messages()),
            field in any::<prop::sample::Index>(),
            body in body(),
            ignore_unknown in any::<bool>(),
        ) {
            let fields: Vec<FieldDescriptor> = descriptor.fields().collect();
            prop_assume!(!fields.is_empty());
            let field = field.get(&fields);
            let mut message = DynamicMessage::new(descriptor);
            if decode_into_field(&mut message, field, &body, ignore_unknown).is_ok() {
                prop_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok(), "one JSON value");
                // Only the field is set, to what the body says.
                prop_assert!(message.fields().all(|(f, _)| f == *field));
                let printed = encode_field(&message, field, &PrintOptions::default())
                    .map_err(|e| TestCaseError::fail(e.message))?;
                let mut again = DynamicMessage::new(message.descriptor());
                decode_into_field(&mut again, field, &printed, false).map_err(|e| TestCaseError::fail(e.message))?;
                prop_assert_eq!(again.encode_to_vec(), message.encode_to_vec());
            }
        }
    }
}
