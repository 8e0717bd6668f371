//! Setting message fields from strings: path variables and query parameters
//! (google/api/http.proto: "fields not bound by the path or the body become URL query
//! parameters"). Nested fields by dotted path (`a.b.c=`), repeated fields by repetition
//! (`ids=1&ids=2`), enums by name or number, 64-bit integers exactly, bytes as base64, and the
//! well-known types whose JSON form is a string or a number (Timestamp, Duration, FieldMask, the
//! wrappers).

use base64::Engine;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value};

/// Why a value could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("unknown field {0:?}")]
    UnknownField(String),
    #[error("invalid value {value:?} for field {field}: {reason}")]
    BadValue { field: String, value: String, reason: String },
}

/// How strings are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindOptions {
    /// Enum names match regardless of case (Envoy's `case_insensitive_enum_parsing`).
    pub case_insensitive_enums: bool,
}

/// The wrapper types, whose JSON form (and query text) is their `value` field's.
pub const WRAPPERS: &[&str] = &[
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
];

const STRING_FORM: &[&str] = &["google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"];

/// Messages whose JSON form is a single string or number, so a string can set them.
pub fn is_scalar_like(message: &MessageDescriptor) -> bool {
    let name = message.full_name();
    WRAPPERS.contains(&name) || STRING_FORM.contains(&name)
}

/// A field by its proto name or its JSON name.
pub fn field_named(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message.get_field_by_name(name).or_else(|| message.get_field_by_json_name(name))
}

/// Sets the field at `path` (names, proto or JSON) to `value`; a repeated field gets `value`
/// appended. Errors name the path as it was given.
pub fn set_path<S: AsRef<str>>(
    message: &mut DynamicMessage,
    path: &[S],
    value: &str,
    options: BindOptions,
) -> Result<(), BindError> {
    // Built only when something is wrong: the common case allocates nothing here.
    let named = |upto: usize| path[..=upto.min(path.len() - 1)].iter().map(AsRef::as_ref).collect::<Vec<_>>().join(".");
    let (last, parents) = path.split_last().ok_or_else(|| BindError::UnknownField(String::new()))?;
    let mut current = message;
    for (i, name) in parents.iter().enumerate() {
        let field =
            field_named(&current.descriptor(), name.as_ref()).ok_or_else(|| BindError::UnknownField(named(i)))?;
        if !matches!(field.kind(), Kind::Message(_)) {
            // The next name would be a field of a scalar.
            return Err(BindError::UnknownField(named(i + 1)));
        }
        if field.is_list() || field.is_map() {
            return Err(bad(&named(i), value, "a repeated message field cannot be set from a string"));
        }
        current = match current.get_field_mut(&field) {
            Value::Message(m) => m,
            _ => return Err(BindError::UnknownField(named(i))),
        };
    }
    let at = parents.len();
    let field = field_named(&current.descriptor(), last.as_ref()).ok_or_else(|| BindError::UnknownField(named(at)))?;
    if field.is_map() {
        return Err(bad(&named(at), value, "map fields cannot be set from a string"));
    }
    let parsed = parse(&field.kind(), value, options).map_err(|reason| bad(&named(at), value, &reason))?;
    if field.is_list() {
        if let Value::List(list) = current.get_field_mut(&field) {
            list.push(parsed);
        }
    } else {
        current.set_field(&field, parsed);
    }
    Ok(())
}

/// Sets the field a path variable names, as [`set_path`] does — except that a repeated field takes
/// the comma-separated values the path gives (`/v1/items/1,2,3`), replacing whatever it held.
/// google/api/http.proto forbids repeated fields in paths; grpc-gateway allows them this way, and
/// clients written for it rely on it.
pub fn set_path_variable<S: AsRef<str>>(
    message: &mut DynamicMessage,
    path: &[S],
    value: &str,
    options: BindOptions,
) -> Result<(), BindError> {
    // Which field the path ends at, by the descriptors alone.
    let mut descriptor = message.descriptor();
    let mut leaf = None;
    for (i, name) in path.iter().enumerate() {
        let Some(field) = field_named(&descriptor, name.as_ref()) else { break };
        match field.kind() {
            Kind::Message(m) if i + 1 < path.len() && !field.is_list() => descriptor = m,
            _ if i + 1 == path.len() => leaf = Some(field),
            _ => break,
        }
    }
    let Some(leaf) = leaf.filter(FieldDescriptor::is_list) else { return set_path(message, path, value, options) };
    let mut current = message;
    for name in &path[..path.len() - 1] {
        let field =
            field_named(&current.descriptor(), name.as_ref()).ok_or_else(|| BindError::UnknownField(joined(path)))?;
        current = match current.get_field_mut(&field) {
            Value::Message(m) => m,
            _ => return Err(BindError::UnknownField(joined(path))),
        };
    }
    current.clear_field(&leaf);
    for part in value.split(',') {
        let parsed = parse(&leaf.kind(), part, options).map_err(|reason| bad(&joined(path), part, &reason))?;
        if let Value::List(list) = current.get_field_mut(&leaf) {
            list.push(parsed);
        }
    }
    Ok(())
}

fn joined<S: AsRef<str>>(path: &[S]) -> String {
    path.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(".")
}

fn bad(field: &str, value: &str, reason: &str) -> BindError {
    BindError::BadValue { field: field.to_owned(), value: value.to_owned(), reason: reason.to_owned() }
}

/// One value of a field's kind from its string form.
fn parse(kind: &Kind, s: &str, options: BindOptions) -> Result<Value, String> {
    let number = |e: std::num::ParseIntError| e.to_string();
    Ok(match kind {
        Kind::String => Value::String(s.to_owned()),
        Kind::Bool => match s {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err("expected true or false".into()),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(s.parse().map_err(number)?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(s.parse().map_err(number)?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(s.parse().map_err(number)?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(s.parse().map_err(number)?),
        Kind::Double => Value::F64(parse_float(s)?),
        Kind::Float => Value::F32(parse_float(s)? as f32),
        Kind::Bytes => Value::Bytes(decode_base64(s)?.into()),
        Kind::Enum(e) => {
            let by_name = if options.case_insensitive_enums {
                e.values().find(|v| v.name().eq_ignore_ascii_case(s))
            } else {
                e.get_value_by_name(s)
            };
            match (by_name, s.parse::<i32>()) {
                (Some(v), _) => Value::EnumNumber(v.number()),
                (None, Ok(n)) => Value::EnumNumber(n),
                (None, Err(_)) => return Err(format!("not a value of {}", e.full_name())),
            }
        }
        Kind::Message(m) if WRAPPERS.contains(&m.full_name()) => {
            let inner = m.get_field_by_name("value").ok_or("malformed wrapper type")?;
            let mut wrapper = DynamicMessage::new(m.clone());
            wrapper.set_field(&inner, parse(&inner.kind(), s, options)?);
            Value::Message(wrapper)
        }
        Kind::Message(m) if STRING_FORM.contains(&m.full_name()) => {
            let json = serde_json::Value::String(s.to_owned());
            Value::Message(DynamicMessage::deserialize(m.clone(), json).map_err(|e| e.to_string())?)
        }
        Kind::Message(m) => return Err(format!("{} cannot be set from a string", m.full_name())),
    })
}

fn parse_float(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|e: std::num::ParseFloatError| e.to_string()),
    }
}

/// Standard or URL-safe base64, padded or not: read exactly as a JSON body's bytes are
/// (prost-reflect's engines), so one description fits both — no more padding than due, and
/// trailing bits are not checked.
fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&STANDARD, CONFIG)
        .decode(s)
        .or_else(|_| GeneralPurpose::new(&URL_SAFE, CONFIG).decode(s))
        .map_err(|e| format!("not base64: {e}"))
}

/// Most pairs a query string may hold: enough for any form a person or a client library
/// writes, few enough that a hostile one costs little.
pub const MAX_PAIRS: usize = 1000;

/// Most names in a dotted key (`a.b.c` has 3). A recursive message type would otherwise let a
/// long `a.a.a...` nest messages deep enough to overflow a worker's stack when they are encoded
/// or dropped.
pub const MAX_DEPTH: usize = 32;

/// Splits a query string into decoded pairs. `+` means a space unless `unescape_plus` is off
/// (Envoy's `query_param_unescape_plus`, off by default: `+` stays `+`). More than [`MAX_PAIRS`]
/// pairs, or a key deeper than [`MAX_DEPTH`], is an error.
pub fn pairs(query: &str, unescape_plus: bool) -> Result<Vec<(String, String)>, String> {
    let decode = |s: &str| {
        let s = if unescape_plus { s.replace('+', " ") } else { s.to_owned() };
        percent_encoding::percent_decode_str(&s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| format!("query parameter {s:?} is not UTF-8"))
    };
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_PAIRS {
            return Err(format!("the query has more than {MAX_PAIRS} parameters"));
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k)?;
        if key.split('.').count() > MAX_DEPTH {
            let shown: String = key.chars().take(40).collect();
            return Err(format!("query parameter {shown:?}... names fields more than {MAX_DEPTH} deep"));
        }
        out.push((key, decode(v)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_decoded_and_bounded() {
        assert_eq!(
            pairs("a=1&b.c=x%20y&&d", false),
            Ok(vec![("a".into(), "1".into()), ("b.c".into(), "x y".into()), ("d".into(), String::new())])
        );
        assert_eq!(pairs("a=x+y", false), Ok(vec![("a".into(), "x+y".into())]));
        assert_eq!(pairs("a=x+y", true), Ok(vec![("a".into(), "x y".into())]));
        let many = vec!["a=1"; MAX_PAIRS + 1].join("&");
        assert!(pairs(&many, false).is_err_and(|e| e.contains("more than 1000")));
        assert!(pairs(&vec!["a=1"; MAX_PAIRS].join("&"), false).is_ok());
        let deep = vec!["a"; MAX_DEPTH + 1].join(".");
        assert!(pairs(&format!("{deep}=1"), false).is_err_and(|e| e.contains("deep")));
        assert!(pairs(&format!("{}=1", vec!["a"; MAX_DEPTH].join(".")), false).is_ok());
    }
}

/// Properties over generated query strings and key paths: both come from clients.
#[cfg(test)]
mod properties {
    use super::*;
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    use proptest::prelude::*;
    use prost::Message;
    use prost_reflect::DescriptorPool;
    use std::sync::LazyLock;

    static POOL: LazyLock<DescriptorPool> =
        LazyLock::new(|| DescriptorPool::decode(crate::demo::DESCRIPTOR_SET).expect("demo set"));

    /// Every message type of the demo set, the imported google ones (recursive ones included) too.
    fn messages() -> Vec<MessageDescriptor> {
        POOL.all_messages().collect()
    }

    /// Values that mean something to some field kind, and anything at all.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "",
                "0",
                "1",
                "-1",
                "true",
                "false",
                "NaN",
                "-Infinity",
                "1e400",
                "-0",
                "4294967296",
                "9223372036854775808",
                "-9223372036854775809",
                "ORDER_STATUS_PAID",
                "order_status_paid",
                "2024-02-30T25:61:61Z",
                "2024-01-01T00:00:00.123456789+01:00",
                "10000-01-01T00:00:00Z",
                "1.5s",
                "-0.5s",
                "315576000001s",
                "99999999999999999999s",
                "a.b,cD",
                "AAA=",
                "-_8",
                "////",
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn pairs_never_panic_and_stay_bounded(query in "[a.=&%2B+é]{0,40}", any_query in any::<String>(), plus in any::<bool>()) {
            for q in [&query, &any_query] {
                if let Ok(pairs) = pairs(q, plus) {
                    prop_assert!(pairs.len() <= MAX_PAIRS);
                    prop_assert!(pairs.iter().all(|(k, _)| k.split('.').count() <= MAX_DEPTH));
                }
            }
        }

        #[test]
        fn the_bounds_are_exact(
            count in prop_oneof![0..MAX_PAIRS + 3, MAX_PAIRS - 2..MAX_PAIRS + 3],
            depth in 1..MAX_DEPTH + 3,
            plus in any::<bool>(),
        ) {
            let key = vec!["a"; depth].join(".");
            let query = vec![format!("{key}=1"); count].join("&");
            let parsed = pairs(&query, plus);
            prop_assert_eq!(parsed.is_ok(), count <= MAX_PAIRS && (count == 0 || depth <= MAX_DEPTH), "{:?}", parsed);
            // Empty pairs are skipped, not counted.
            prop_assert_eq!(pairs(&format!("&&{query}&"), plus).is_ok(), parsed.is_ok());
        }

        #[test]
        fn percent_encoded_pairs_round_trip(
            given in prop::collection::vec((any::<String>(), any::<String>()), 0..12),
            plus in any::<bool>(),
        ) {
            let given: Vec<(String, String)> =
                given.into_iter().filter(|(k, _)| k.split('.').count() <= MAX_DEPTH).collect();
            let encode = |s: &str| {
                let encoded = utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
                // With `unescape_plus`, a client may write a space as '+' (HTML forms do).
                if plus { encoded.replace("%20", "+") } else { encoded }
            };
            let query: Vec<String> = given.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
            prop_assert_eq!(pairs(&query.join("&"), plus), Ok(given));
        }

        #[test]
        fn set_path_never_panics(
            message in prop::sample::select(messages()),
            walk in prop::collection::vec((any::<prop::sample::Index>(), 0..8u8), 0..6),
            value in value(),
            case_insensitive_enums in any::<bool>(),
        ) {
            // A key path that mostly follows real fields (by proto or JSON name), sometimes not.
            let mut path = Vec::new();
            let mut current = Some(message.clone());
            for (index, how) in walk {
                let field = current.as_ref().and_then(|m| {
                    let fields: Vec<_> = m.fields().collect();
                    (!fields.is_empty()).then(|| index.get(&fields).clone())
                });
                let name = match (&field, how) {
                    (Some(f), 0..=3) => f.name().to_owned(),
                    (Some(f), 4..=6) => f.json_name().to_owned(),
                    _ => ["", "x", "value", "seconds", "name"][index.index(5)].to_owned(),
                };
                current = field.and_then(|f| f.kind().as_message().cloned());
                path.push(name);
            }
            let mut dynamic = DynamicMessage::new(message);
            let result = set_path(&mut dynamic, &path, &value, BindOptions { case_insensitive_enums });
            match result {
                // Whatever was set can go on the wire.
                Ok(()) => { let _ = dynamic.encode_to_vec(); }
                // An error names the path as given, or a prefix of it.
                Err(BindError::UnknownField(named) | BindError::BadValue { field: named, .. }) => {
                    prop_assert!(path.join(".").starts_with(&named), "{:?} not in {:?}", named, path);
                }
            }
        }
    }
}
