//! JSON Schemas (2020-12, as OpenAPI 3.1 uses them) of exactly what the gateway reads: the proto3
//! JSON mapping as prost-reflect's deserializer implements it (`transcode::json`) for bodies, and
//! `transcode::query`'s string forms for path variables and query parameters. A schema that is
//! looser than the gateway lets a client (or schemathesis) send what is refused; one that is
//! stricter makes the gateway accept what the document forbids — both are bugs of the document.
//!
//! What the deserializer accepts, and so what the schemas say:
//! - every field also under its proto name, and `null` for "not set";
//! - integers as JSON numbers (a zero fraction included) or as decimal strings (`+` and leading
//!   zeros allowed, as Rust's `from_str` reads them), in the type's range;
//! - floats as numbers or as strings Rust's `from_str` reads (`NaN`, `Infinity`, `1e5`, `.5`...);
//! - bytes as standard or URL-safe base64, padding optional;
//! - enums by name (unknown names are ignored when `ignore_unknown_fields` is on) or by number;
//! - the well-known types in their own JSON forms.
//!
//! It does not describe what the backends require (a required field, a range): that is theirs.

use std::collections::BTreeMap;

use crate::transcode::query::WRAPPERS;
use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

/// Builds schemas, keeping each message's under `components/schemas` by its full name.
pub(super) struct Schemas {
    pub(super) defs: BTreeMap<String, Value>,
    ignore_unknown_fields: bool,
    case_insensitive_enums: bool,
}

impl Schemas {
    /// `rest.ignore_unknown_fields` and `rest.case_insensitive_enum_parsing` change what is read.
    pub(super) fn new(ignore_unknown_fields: bool, case_insensitive_enums: bool) -> Self {
        Schemas { defs: BTreeMap::new(), ignore_unknown_fields, case_insensitive_enums }
    }

    /// A message as a JSON value: a `$ref` to its object schema, or a well-known type's own form.
    pub(super) fn message(&mut self, message: &MessageDescriptor) -> Value {
        if message.full_name() == ANY {
            return self.any(message);
        }
        if let Some(known) = self.well_known(message) {
            return known;
        }
        let name = message.full_name().to_owned();
        if !self.defs.contains_key(&name) {
            self.defs.insert(name.clone(), json!({})); // placeholder: recursion stops here
            let schema = self.object(message);
            self.defs.insert(name.clone(), schema);
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    /// `google.protobuf.Any`: `@type` names a message of the loaded sets (after its last `/`), and
    /// the other members are that message's fields — or, for a well-known type, its JSON form
    /// under `value` (proto3 JSON mapping). So one branch per message of the pool.
    fn any(&mut self, any: &MessageDescriptor) -> Value {
        let reference = json!({"$ref": format!("#/components/schemas/{ANY}")});
        if self.defs.contains_key(ANY) {
            return reference;
        }
        self.defs.insert(ANY.to_owned(), json!({})); // placeholder: an Any may hold an Any
        let mut branches = Vec::new();
        // Not descriptor.proto's own types: every set carries them for the annotations, no API
        // sends them in an Any, and their deep schemas would swamp the document and its
        // consumers. Nor google/rpc's (the gateway adds them to every catalog): error details
        // travel in error responses, and google.rpc.Status, an Any holding Anys, defeats schema-
        // driven generators (schemathesis). An Any holding one is still read; the document does
        // not offer it.
        let offered = |m: &MessageDescriptor| {
            let file = m.parent_file();
            file.name() != "google/protobuf/descriptor.proto" && !file.name().starts_with("google/rpc/")
        };
        let messages = any.parent_pool().all_messages().filter(offered);
        for message in messages {
            let name = message.full_name().replace('.', "\\.");
            let type_url = json!({"type": "string", "pattern": format!("/{name}$")});
            let mut branch = if message.full_name() == ANY || self.well_known(&message).is_some() {
                let value = self.message(&message);
                json!({"type": "object", "required": ["@type", "value"], "properties": {"value": value}})
            } else {
                let mut object = self.object(&message);
                object["required"] = json!(["@type"]);
                object
            };
            branch["properties"]["@type"] = type_url;
            if !self.ignore_unknown_fields {
                branch["additionalProperties"] = false.into();
            }
            branches.push(branch);
        }
        let schema = json!({"type": "object", "required": ["@type"], "anyOf": branches,
            "description": "`@type` names the message, `type.googleapis.com/<full name>`; the other members are its fields."});
        self.defs.insert(ANY.to_owned(), schema);
        reference
    }

    fn object(&mut self, message: &MessageDescriptor) -> Value {
        let mut properties = Map::new();
        let mut by_proto_name = Map::new();
        for field in message.fields() {
            let mut schema = self.member(&field);
            if let (Some(text), Some(o)) = (super::field_comments(&field), schema.as_object_mut()) {
                if !o.contains_key("$ref") {
                    o.insert("description".into(), text.into());
                }
            }
            // The proto name is read too. As a pattern property it validates like a property but
            // documentation shows one name per field; a second `properties` entry would read as a
            // second field. Field names are identifiers: nothing to escape.
            if field.name() != field.json_name() {
                by_proto_name.insert(format!("^{}$", field.name()), schema.clone());
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut schema = json!({"type": "object", "properties": properties});
        if !by_proto_name.is_empty() {
            schema["patternProperties"] = by_proto_name.into();
        }
        if !self.ignore_unknown_fields {
            // `deny_unknown_fields`: a key that is neither name of a field is a 400.
            schema["additionalProperties"] = false.into();
        }
        let groups: Vec<Value> = oneof_groups(message).into_iter().map(at_most_one_set).collect();
        match groups.len() {
            0 => {}
            1 => schema["not"] = groups.into_iter().next().unwrap_or_default(),
            _ => schema["allOf"] = groups.into_iter().map(|g| json!({"not": g})).collect(),
        }
        if let Some(text) = super::message_comments(message) {
            schema["description"] = text.into();
        }
        schema
    }

    /// A field as a member of a JSON object: its value, or `null`, which leaves it unset.
    fn member(&mut self, field: &FieldDescriptor) -> Value {
        nullable(self.field(field))
    }

    /// The JSON value of a field (a list, a map or one value), as printed and as read.
    pub(super) fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            if let Kind::Message(entry) = field.kind() {
                let key = entry.map_entry_key_field();
                let value = entry.map_entry_value_field();
                let mut schema = json!({"type": "object", "additionalProperties": self.value(&value.kind())});
                if let Some(names) = map_key_names(&key.kind()) {
                    schema["propertyNames"] = names;
                }
                return schema;
            }
        }
        let item = self.value(&field.kind());
        if field.is_list() { json!({"type": "array", "items": item}) } else { item }
    }

    /// One value of a kind in JSON: a list element, a map value or a singular field's value.
    /// Not `null` (a list element or map value cannot be), except where the type's own JSON form
    /// is (`google.protobuf.Value`, `NullValue`).
    fn value(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double => float_number(f64::MAX),
            Kind::Float => float_number(f64::from(f32::MAX)),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => integer(i128::from(i32::MIN), i128::from(i32::MAX), "int32"),
            Kind::Uint32 | Kind::Fixed32 => integer(0, i128::from(u32::MAX), "uint32"),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => int64(),
            Kind::Uint64 | Kind::Fixed64 => uint64(),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64", "pattern": BASE64}),
            Kind::Enum(e) => self.json_enum(e),
            Kind::Message(m) => self.message(m),
        }
    }

    /// Enums in JSON: a name, or any number in int32 (an unknown number is kept, as proto3 keeps
    /// open enums' values); `2.0` too (`transcode::json` reads integral numbers as integers). A
    /// negative zero is refused although it equals 0: no schema can tell the two apart.
    fn json_enum(&self, e: &EnumDescriptor) -> Value {
        let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
        if e.full_name() == "google.protobuf.NullValue" {
            // Read by its own visitor: null or its one name, never a number.
            return if self.ignore_unknown_fields {
                json!({"type": ["string", "null"]})
            } else {
                json!({"enum": [null, "NULL_VALUE"]})
            };
        }
        let number = json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX});
        if self.ignore_unknown_fields {
            let unknown = "Names this enum lacks are accepted and leave the field unset (rest.ignore_unknown_fields).";
            json!({"anyOf": [{"type": "string", "enum": names}, {"type": "string", "description": unknown}, number]})
        } else {
            json!({"anyOf": [{"type": "string", "enum": names}, number]})
        }
    }

    /// A path variable's or query parameter's value: the text `transcode::query` reads for the
    /// field's kind (a query value is a string; the schema says which strings).
    pub(super) fn text(&mut self, field: &FieldDescriptor) -> Value {
        match field.kind() {
            Kind::Message(m) if WRAPPERS.contains(&m.full_name()) => {
                // A wrapper is set from the text of its `value` field.
                match m.get_field_by_name("value") {
                    Some(inner) => self.text(&inner),
                    None => json!({}),
                }
            }
            Kind::Message(m) => self.well_known(&m).unwrap_or_else(|| json!({})),
            Kind::Bool => json!({"enum": [true, false, 1, 0], "description": "true, false, 1 or 0."}),
            // Unbounded: a string is read with `from_str`, which overflows to infinity, not an error.
            Kind::Double | Kind::Float => json!({"type": ["number", "string"], "pattern": FLOAT}),
            Kind::Enum(e) => {
                let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                let by_name = if self.case_insensitive_enums {
                    let alternatives: Vec<String> = names.iter().map(|n| any_case(n)).collect();
                    json!({"type": "string", "pattern": format!("^(?:{})$", alternatives.join("|")), "examples": names})
                } else {
                    json!({"type": "string", "enum": names})
                };
                // A number is read as text too (`"1"`, `"+1"`), unlike in JSON.
                json!({"anyOf": [by_name, integer(i128::from(i32::MIN), i128::from(i32::MAX), "int32")]})
            }
            // Text has no f64 detour: the exact range (see [`int64`]).
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => integer(i128::from(i64::MIN), i128::from(i64::MAX), "int64"),
            Kind::Uint64 | Kind::Fixed64 => integer(0, i128::from(u64::MAX), "uint64"),
            // 32-bit integers and bytes read as JSON strings are; a string is any text.
            kind => self.value(&kind),
        }
    }

    /// The JSON forms of the well-known types (the proto3 JSON mapping), as prost-reflect reads
    /// them. `google.api.HttpBody` is not here: as a field it is a plain message; only as a whole
    /// body is it raw bytes, which the operation says.
    fn well_known(&self, message: &MessageDescriptor) -> Option<Value> {
        Some(match message.full_name() {
            // Strict RFC 3339 (upper-case T and Z, a colon in the offset), a real calendar date,
            // years 0001 to 9999. No `format: date-time`: that allows a leap second only at 23:59
            // UTC, and the gateway reads `:60` at any minute (as `:59`), so the format would
            // forbid what is accepted; the pattern says it all. The pattern still lets through a
            // time whose offset moves it before 0001-01-01 or after 9999-12-31 UTC, refused.
            "google.protobuf.Timestamp" => json!({"type": "string", "pattern": timestamp_pattern(),
                "description": "An RFC 3339 date-time, upper-case T and Z: 2024-05-01T12:00:00Z, 2024-05-01T14:00:00.5+02:00."}),
            // Seconds up to ±315,576,000,000 (10,000 years), fractions beyond nanoseconds cut off.
            "google.protobuf.Duration" => {
                json!({"type": "string", "pattern": format!("^-?0*(?:{})(?:\\.[0-9]+)?s$", at_most("315576000000"))})
            }
            // Comma-separated lowerCamelCase paths; an underscore is the one thing refused.
            "google.protobuf.FieldMask" => json!({"type": "string", "pattern": "^[^_]*$"}),
            "google.protobuf.Struct" => json!({"type": "object"}),
            "google.protobuf.Value" => json!({}),
            "google.protobuf.ListValue" => json!({"type": "array"}),
            "google.protobuf.Empty" => json!({"type": "object", "maxProperties": 0}),
            "google.protobuf.DoubleValue" => float_number(f64::MAX),
            "google.protobuf.FloatValue" => float_number(f64::from(f32::MAX)),
            "google.protobuf.Int32Value" => integer(i128::from(i32::MIN), i128::from(i32::MAX), "int32"),
            "google.protobuf.UInt32Value" => integer(0, i128::from(u32::MAX), "uint32"),
            "google.protobuf.Int64Value" => int64(),
            "google.protobuf.UInt64Value" => uint64(),
            "google.protobuf.BoolValue" => json!({"type": "boolean"}),
            "google.protobuf.StringValue" => json!({"type": "string"}),
            "google.protobuf.BytesValue" => json!({"type": "string", "contentEncoding": "base64", "pattern": BASE64}),
            _ => return None,
        })
    }
}

const ANY: &str = "google.protobuf.Any";

/// `schema` or `null`: a type list gains "null", anything else becomes one branch of an `anyOf`.
pub(super) fn nullable(schema: Value) -> Value {
    if schema.as_object().is_some_and(Map::is_empty) {
        return schema; // anything already
    }
    let simple = schema.get("enum").is_none() && schema.get("$ref").is_none() && schema.get("anyOf").is_none();
    match schema.get("type") {
        Some(Value::String(t)) if simple => {
            let mut schema = schema.clone();
            schema["type"] = json!([t, "null"]);
            schema
        }
        Some(Value::Array(types)) if simple => {
            let mut schema = schema.clone();
            let mut types = types.clone();
            if !types.iter().any(|t| t == "null") {
                types.push("null".into());
            }
            schema["type"] = types.into();
            schema
        }
        _ => json!({"anyOf": [schema, {"type": "null"}]}),
    }
}

/// Every name (JSON and proto) of each oneof's fields, proto3 `optional`'s own one-field oneofs
/// included: the deserializer refuses a second member of a oneof, even the same field under its
/// other name, unless one of them is `null`.
fn oneof_groups(message: &MessageDescriptor) -> Vec<Vec<String>> {
    message
        .oneofs()
        .map(|oneof| {
            let mut names: Vec<String> = Vec::new();
            for field in oneof.fields() {
                names.push(field.json_name().to_owned());
                if field.name() != field.json_name() {
                    names.push(field.name().to_owned());
                }
            }
            names
        })
        .filter(|names| names.len() > 1)
        .collect()
}

/// Matches an object with two of `names` set to something other than `null` (to be negated).
fn at_most_one_set(names: Vec<String>) -> Value {
    let mut pairs = Vec::new();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            let set = json!({"not": {"type": "null"}});
            pairs.push(json!({"required": [a, b], "properties": {a: set.clone(), b: set}}));
        }
    }
    json!({"anyOf": pairs})
}

/// Map keys are strings in JSON; an integer or bool key must read as one.
fn map_key_names(kind: &Kind) -> Option<Value> {
    let (min, max) = match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => (i128::from(i64::MIN), i128::from(i64::MAX)),
        Kind::Uint32 | Kind::Fixed32 => (0, i128::from(u32::MAX)),
        Kind::Uint64 | Kind::Fixed64 => (0, i128::from(u64::MAX)),
        Kind::Bool => return Some(json!({"enum": ["true", "false"]})),
        _ => return None,
    };
    Some(json!({"pattern": decimal_pattern(min, max)}))
}

/// An integer field: a number in range, or a decimal string in range. `minimum`/`maximum`
/// bind numbers only and `pattern` strings only, so one schema says both.
fn integer(min: i128, max: i128, format: &str) -> Value {
    integer_with_numbers(min, max, (min, max), format)
}

/// A 64-bit integer in JSON, whose numbers' range is not its strings' (see [`int64`]). No
/// `format`: `int64` would tell tools the exact range, which the numbers overshoot.
fn integer_with_numbers(min: i128, max: i128, (low, high): (i128, i128), description: &str) -> Value {
    let bound = |n: i128| -> Value {
        i64::try_from(n)
            .map(Value::from)
            .or_else(|_| u64::try_from(n).map(Value::from))
            .unwrap_or_else(|_| Value::String(format!("{BIG_INTEGER}{n}")))
    };
    json!({"type": ["integer", "string"], "minimum": bound(low), "maximum": bound(high),
        "pattern": decimal_pattern(min, max), "description": description})
}

/// serde_json holds no integer past 64 bits (and these bounds are not f64s either): such a bound
/// goes into the document as this prefix and its digits, and [`write`] writes it as the number.
const BIG_INTEGER: &str = "dragoman:big-integer:";

/// The document's bytes, with [`BIG_INTEGER`] strings as the numbers they stand for.
pub(super) fn write(document: &Value) -> Vec<u8> {
    let text = serde_json::to_string_pretty(document).unwrap_or_default();
    let quoted = format!("\"{BIG_INTEGER}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find(&quoted) {
        out.push_str(&rest[..start]);
        let digits = &rest[start + quoted.len()..];
        let end = digits.find('"').unwrap_or(digits.len());
        out.push_str(&digits[..end]);
        rest = digits.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out.into_bytes()
}

/// int64: strings exactly in range. Numbers too, except that an integer literal just below
/// -2^63 is read (serde_json holds it as an f64, which rounds to -2^63) and clamped to i64::MIN
/// instead of refused — prost-reflect's reading, not the type's range. The schema says what is
/// accepted: down to -2^63 - 1024, the last literal that rounds up (serde_json's
/// `float_roundtrip` makes that rounding exact, so the bound is a number a schema can hold).
fn int64() -> Value {
    let description = "int64: a decimal string, as printed, or a number.";
    integer_with_numbers(
        i128::from(i64::MIN),
        i128::from(i64::MAX),
        (i128::from(i64::MIN) - 1024, i128::from(i64::MAX)),
        description,
    )
}

/// uint64: as [`int64`], at the top: literals up to 2^64 + 2048 round to 2^64 and are clamped to
/// u64::MAX.
fn uint64() -> Value {
    let description = "uint64: a decimal string, as printed, or a number.";
    integer_with_numbers(0, i128::from(u64::MAX), (0, i128::from(u64::MAX) + 1 + 2048), description)
}

/// A float field: a finite JSON number within `max` (a larger one is refused), or a string Rust's
/// `from_str` reads, which includes `NaN` and `Infinity` in any case and with a sign.
fn float_number(max: f64) -> Value {
    json!({"type": ["number", "string"], "minimum": -max, "maximum": max, "pattern": FLOAT})
}

/// Rust's float grammar (`f64::from_str`), whole string.
const FLOAT: &str = "^[+-]?(?:(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])$";

/// Standard or URL-safe base64 (not mixed), padding optional but never more than due.
const BASE64: &str = "^(?:(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==?)?|[A-Za-z0-9+/]{3}=?)?|(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==?)?|[A-Za-z0-9_-]{3}=?)?)$";

/// Decimal strings `from_str` reads as an integer in `min..=max`: an optional sign (`-` only for
/// a negative bound), leading zeros, digits up to the bound.
fn decimal_pattern(min: i128, max: i128) -> String {
    let positive = at_most(&max.to_string());
    if min < 0 {
        let negative = at_most(&min.unsigned_abs().to_string());
        format!("^(?:\\+?0*(?:{positive})|-0*(?:{negative}))$")
    } else {
        format!("^\\+?0*(?:{positive})$")
    }
}

/// A regular expression (no anchors) for the decimal numbers from 0 to `bound`, without leading
/// zeros: shorter numbers, then those of the bound's length digit by digit below it.
fn at_most(bound: &str) -> String {
    let digits: Vec<u32> = bound.chars().filter_map(|c| c.to_digit(10)).collect();
    let n = digits.len();
    let mut alternatives = vec!["0".to_owned()];
    match n {
        0 | 1 => {}
        2 => alternatives.push("[1-9]".to_owned()),
        _ => alternatives.push(format!("[1-9][0-9]{{0,{}}}", n - 2)),
    }
    for (i, &d) in digits.iter().enumerate() {
        let low = u32::from(i == 0);
        if d > low {
            let prefix = &bound[..i];
            let rest = n - i - 1;
            let digit = if d - 1 == low { low.to_string() } else { format!("[{low}-{}]", d - 1) };
            let tail = match rest {
                0 => String::new(),
                1 => "[0-9]".to_owned(),
                _ => format!("[0-9]{{{rest}}}"),
            };
            alternatives.push(format!("{prefix}{digit}{tail}"));
        }
    }
    alternatives.push(bound.to_owned());
    alternatives.join("|")
}

/// A name in any letter case, for `case_insensitive_enum_parsing`.
fn any_case(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// RFC 3339 as prost-reflect reads a Timestamp: `validate_strict_rfc3339`, then a valid date in
/// years 0001-9999 (leap years: divisible by 4, centuries only by 400), hours below 24, and the
/// instant, offset applied, within 0001-01-01T00:00:00Z..=9999-12-31T23:59:59Z. That last rule is
/// kept by allowing, in year 0001, only offsets that move the instant later (`-hh:mm`), and in
/// 9999 only ones that move it earlier: stricter than the gateway in those two years, never
/// looser.
fn timestamp_pattern() -> String {
    let middle_years = "(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])";
    let leap = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)";
    // Month and day of a common year.
    let days = "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))";
    let time = "T(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\\.[0-9]+)?";
    let hours = "(?:[01][0-9]|2[0-3]):[0-5][0-9]";
    format!(
        "^(?:(?:{middle_years}-{days}|{leap}-02-29){time}(?:Z|[+-]{hours})\
         |0001-{days}{time}(?:Z|[+-]00:00|-{hours})\
         |9999-{days}{time}(?:Z|[+-]00:00|\\+{hours}))$"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::{DescriptorPool, DynamicMessage};

    /// Whether prost-reflect's deserializer reads `value` as the wrapper type's JSON form — the
    /// very visitor a field of the wrapped kind uses.
    fn accepts(type_name: &str, value: Value) -> bool {
        let pool = DescriptorPool::global();
        let descriptor = pool.get_message_by_name(type_name).expect("a well-known type");
        DynamicMessage::deserialize(descriptor, value).is_ok()
    }

    fn pattern_of(schema: &Value) -> regex::Regex {
        regex::Regex::new(schema["pattern"].as_str().expect("a pattern")).expect("the pattern compiles")
    }

    /// Each sample string is accepted by the gateway exactly when the schema's pattern matches it.
    fn agree(type_name: &str, schema: &Value, samples: &[&str]) {
        let pattern = pattern_of(schema);
        for sample in samples {
            let gateway = accepts(type_name, Value::String((*sample).to_owned()));
            assert_eq!(pattern.is_match(sample), gateway, "{type_name} {sample:?}: gateway accepts: {gateway}");
        }
    }

    #[test]
    fn integer_strings_are_what_from_str_reads_in_range() {
        let ints = [
            "0",
            "-0",
            "+0",
            "007",
            "-007",
            "1",
            "+1",
            "-1",
            "",
            "+",
            "-",
            "+-1",
            "1.0",
            "1e3",
            " 1",
            "1 ",
            "0x10",
            "2147483647",
            "2147483648",
            "-2147483648",
            "-2147483649",
            "4294967295",
            "4294967296",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "00000000000000000000000018446744073709551615",
            "99999999999999999999",
            "1999999999",
            "2099999999",
            "2147483639",
            "9223372036854775799",
        ];
        let mut schemas = Schemas::new(false, false);
        for (wrapper, kind) in [
            ("google.protobuf.Int32Value", Kind::Int32),
            ("google.protobuf.UInt32Value", Kind::Uint32),
            ("google.protobuf.Int64Value", Kind::Int64),
            ("google.protobuf.UInt64Value", Kind::Uint64),
        ] {
            agree(wrapper, &schemas.value(&kind), &ints);
        }
    }

    #[test]
    fn number_bounds_are_the_deserializer_s() {
        // As the gateway reads a body: from the text, through serde_json's own number parsing.
        let reads = |type_name: &str, text: &str| {
            let descriptor = DescriptorPool::global().get_message_by_name(type_name).expect("a well-known type");
            DynamicMessage::deserialize(descriptor, &mut serde_json::Deserializer::from_str(text)).is_ok()
        };
        let int64 = String::from_utf8(write(&int64())).expect("UTF-8");
        assert!(int64.contains("\"minimum\": -9223372036854776832,"), "the number itself, not a string: {int64}");
        assert!(int64.contains("\"maximum\": 9223372036854775807,"), "{int64}");
        for (text, read) in [
            ("9223372036854775807", true),
            ("9223372036854775808", false),
            ("-9223372036854775808", true),
            ("-9223372036854776832", true),
            ("-9223372036854776833", false),
        ] {
            assert_eq!(reads("google.protobuf.Int64Value", text), read, "int64 {text}");
        }
        assert!(String::from_utf8_lossy(&write(&uint64())).contains("\"maximum\": 18446744073709553664"));
        for (text, read) in [
            ("18446744073709551615", true),
            ("18446744073709553664", true),
            ("18446744073709553665", false),
            ("-9223372036854775809", false),
            ("-1", false),
            ("-0", true),
        ] {
            assert_eq!(reads("google.protobuf.UInt64Value", text), read, "uint64 {text}");
        }
        assert!(accepts("google.protobuf.Int32Value", json!(5.0)), "a zero fraction is an integer, as in JSON Schema");
        assert!(!accepts("google.protobuf.Int32Value", json!(5.5)));
        let float = float_number(f64::from(f32::MAX));
        assert!(accepts("google.protobuf.FloatValue", float["maximum"].clone()));
        assert!(!accepts("google.protobuf.FloatValue", json!(f64::from(f32::MAX) * 2.0)));
    }

    #[test]
    fn float_strings_are_rust_s_grammar() {
        let samples = [
            "1",
            "1.",
            ".5",
            "-.5",
            "+1.5e-3",
            "1E5",
            "1e",
            "e5",
            ".",
            "",
            "NaN",
            "nan",
            "-NaN",
            "Infinity",
            "-Infinity",
            "inf",
            "+INF",
            "infinity",
            "infinit",
            "Inf1",
            "1.5.",
            "0x1",
            " 1",
            "1_000",
            "1e400",
        ];
        agree("google.protobuf.DoubleValue", &float_number(f64::MAX), &samples);
        agree("google.protobuf.FloatValue", &float_number(f64::from(f32::MAX)), &samples);
    }

    #[test]
    fn bytes_are_either_base64_alphabet_with_optional_padding() {
        let samples = [
            "", "QQ", "QQ=", "QQ==", "QQ===", "QUI", "QUI=", "QUI==", "QUJD", "QUJD=", "Q", "QUJDR", "a+/b", "a-_b",
            "a+_b", "a-/b", "-_-_", "+/+/", "QR", "QUJ", "Q===", "QU=I", "QUJD RA", "QUJD\n",
        ];
        agree("google.protobuf.BytesValue", &json!({"pattern": BASE64}), &samples);
    }

    #[test]
    fn timestamps_durations_and_field_masks() {
        let schemas = Schemas::new(false, false);
        let pool = DescriptorPool::global();
        let known = |name: &str| schemas.well_known(&pool.get_message_by_name(name).expect("type")).expect("known");
        let timestamps = [
            "2024-02-29T12:00:00Z",
            "2023-02-29T12:00:00Z",
            "2000-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-12-31T23:59:60Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.123456789123Z",
            "2024-01-01T00:00:00+23:59",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01t00:00:00Z",
            "2024-01-01T00:00:00z",
            "2024-01-01T00:00:00",
            "2024-01-01",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2024-01-01T00:00:00+0100",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "0001-01-01T00:00:00-01:00",
            "0001-06-01T00:00:00+00:00",
            "9999-12-31T23:59:59+01:00",
            "9999-06-30T10:00:00Z",
            "0001-01-01T00:00:41.29+09:37",
            "9999-12-31T23:00:00-01:00",
            "0004-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
        ];
        agree("google.protobuf.Timestamp", &known("google.protobuf.Timestamp"), &timestamps);
        let durations = [
            "1s",
            "-1s",
            "1.5s",
            "-0.000000001s",
            "1.0000000001s",
            "1",
            "s",
            ".5s",
            "1.s",
            "+1s",
            "315576000000s",
            "315576000000.999999999s",
            "315576000001s",
            "-315576000000s",
            "0000315576000000s",
            "1e3s",
            "1 s",
        ];
        agree("google.protobuf.Duration", &known("google.protobuf.Duration"), &durations);
        let masks = ["", "a", "a,b.c", "fooBar", "foo_bar", ",,", "a.B"];
        agree("google.protobuf.FieldMask", &known("google.protobuf.FieldMask"), &masks);
    }

    #[test]
    fn query_text_is_what_the_query_reader_reads() {
        use crate::transcode::query::{self, BindOptions};
        let pool = DescriptorPool::global();
        let mut schemas = Schemas::new(false, false);
        let samples = [
            "",
            "0",
            "+7",
            "-7",
            "1.5",
            "NaN",
            "inf",
            "QQ",
            "QQ==",
            "QQ===",
            "a-_b",
            "a+/b",
            "a+_b",
            "9223372036854775808",
        ];
        for wrapper in [
            "google.protobuf.Int64Value",
            "google.protobuf.UInt32Value",
            "google.protobuf.DoubleValue",
            "google.protobuf.BytesValue",
        ] {
            let descriptor = pool.get_message_by_name(wrapper).expect("a well-known type");
            let field = descriptor.get_field_by_name("value").expect("value");
            let pattern = pattern_of(&schemas.text(&field));
            for sample in samples {
                let mut message = DynamicMessage::new(descriptor.clone());
                let read = query::set_path(&mut message, &["value"], sample, BindOptions::default()).is_ok();
                assert_eq!(pattern.is_match(sample), read, "{wrapper} {sample:?}: the query reader accepts: {read}");
            }
        }
    }

    #[test]
    fn at_most_covers_exactly_zero_to_the_bound() {
        for bound in [0u32, 7, 10, 19, 20, 99, 100, 305, 1000] {
            let re = regex::Regex::new(&format!("^(?:{})$", at_most(&bound.to_string()))).expect("compiles");
            for n in 0..=1100u32 {
                assert_eq!(re.is_match(&n.to_string()), n <= bound, "{n} against {bound}");
            }
        }
    }
}
