//! A message to XML, by the mapping in the module's documentation.

use base64::Engine;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value};

use super::events::is_xml_char;
use super::{Item, MAX_OUTPUT, Special, XmlError, duration, layout, local_type_name};
use crate::transcode::json;

/// A document whose root element, named after the message's type, holds `message`.
pub fn encode(message: &DynamicMessage) -> Result<String, XmlError> {
    let descriptor = message.descriptor();
    let mut writer = Writer::new(String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
    writer.message(local_type_name(&descriptor), descriptor.package_name(), None, message)?;
    Ok(writer.into_string())
}

/// A document holding one field of `message` (a REST `response_body`): a singular message
/// field as [`encode`] writes that message, any other as the message's root element holding only
/// that field's elements.
pub fn encode_body(message: &DynamicMessage, field: &FieldDescriptor) -> Result<String, XmlError> {
    if let (Kind::Message(m), false, false) = (field.kind(), field.is_list(), field.is_map()) {
        if Special::of(&m).is_none() {
            let value = message.get_field(field);
            let inner = value.as_message().cloned().unwrap_or_else(|| DynamicMessage::new(m));
            return encode(&inner);
        }
    }
    let descriptor = message.descriptor();
    let package = descriptor.package_name();
    let mut writer = Writer::new(String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
    let name = local_type_name(&descriptor);
    writer.out.push('<');
    writer.out.push_str(name);
    writer.namespace("xmlns", package);
    writer.out.push('>');
    writer.field(message, field, package)?;
    writer.out.push_str("</");
    writer.out.push_str(name);
    writer.out.push('>');
    Ok(writer.into_string())
}

/// Writes messages as elements into a string (a document, or the body of a SOAP envelope).
pub struct Writer {
    out: String,
}

impl Writer {
    pub fn new(out: String) -> Self {
        Writer { out }
    }

    pub fn into_string(self) -> String {
        self.out
    }

    /// Markup written as it is.
    pub fn raw(&mut self, markup: &str) {
        self.out.push_str(markup);
    }

    /// Text, escaped.
    pub fn text(&mut self, text: &str) -> Result<(), XmlError> {
        escape_into(&mut self.out, text)
    }

    /// `message` as the element `name` in the namespace of `package`, where `scope` is the
    /// package whose namespace is the default in scope (None: no default namespace). A
    /// well-known type is written as its text. Namespaces are handled as package names, and
    /// only written out where an element declares one.
    pub fn message(
        &mut self,
        name: &str,
        package: &str,
        scope: Option<&str>,
        message: &DynamicMessage,
    ) -> Result<(), XmlError> {
        let descriptor = message.descriptor();
        if let Some(special) = Special::of(&descriptor) {
            let text = special_text(message, special)?;
            let close = self.open(name, package, scope, package);
            self.text(&text)?;
            self.close(name, close);
            return Ok(());
        }
        let content = descriptor.package_name();
        let close = self.open(name, package, scope, content);
        self.fields(message, content)?;
        self.close(name, close);
        Ok(())
    }

    /// Every field of `message` that is written, in schema order; `package`, the message's own,
    /// is the default namespace in scope.
    fn fields(&mut self, message: &DynamicMessage, package: &str) -> Result<(), XmlError> {
        for item in layout(&message.descriptor()) {
            match item {
                Item::Field(field) => self.field(message, &field, package)?,
                Item::Choice(oneof) => {
                    if let Some(field) = oneof.fields().find(|f| message.has_field(f)) {
                        self.field(message, &field, package)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn field(&mut self, message: &DynamicMessage, field: &FieldDescriptor, package: &str) -> Result<(), XmlError> {
        let name = field.json_name();
        if field.supports_presence() && !message.has_field(field) {
            return Ok(());
        }
        let value = message.get_field(field);
        match &*value {
            Value::Map(map) => {
                let Kind::Message(entry) = field.kind() else { return Ok(()) };
                let (key_field, value_field) = (entry.map_entry_key_field(), entry.map_entry_value_field());
                let mut entries: Vec<(&MapKey, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let content = entry.package_name();
                for (key, value) in entries {
                    let close = self.open(name, package, Some(package), content);
                    let key = Value::from(key.clone());
                    self.value(key_field.json_name(), content, &key_field.kind(), &key)?;
                    self.value(value_field.json_name(), content, &value_field.kind(), value)?;
                    self.close(name, close);
                }
            }
            Value::List(items) => {
                for item in items {
                    self.value(name, package, &field.kind(), item)?;
                }
            }
            value => self.value(name, package, &field.kind(), value)?,
        }
        Ok(())
    }

    /// One element `name` in the namespace of `package`, which is also the default in scope.
    fn value(&mut self, name: &str, package: &str, kind: &Kind, value: &Value) -> Result<(), XmlError> {
        // Defaults are written, so a small message can have a large XML form (an empty
        // repeated message is a few bytes, its elements many): bounded here, per element.
        if self.out.len() > MAX_OUTPUT {
            return Err(XmlError::new(format!("the XML form is larger than {} MiB", MAX_OUTPUT >> 20)));
        }
        if let (Kind::Message(_), Value::Message(message)) = (kind, value) {
            return self.message(name, package, Some(package), message);
        }
        let close = self.open(name, package, Some(package), package);
        scalar_into(&mut self.out, kind, value)?;
        self.close(name, close);
        Ok(())
    }

    /// Opens element `name` in `package`'s namespace whose children are in `content`'s, where
    /// `scope`'s is the default in scope. Returns whether the closing tag takes a prefix.
    fn open(&mut self, name: &str, package: &str, scope: Option<&str>, content: &str) -> bool {
        self.out.push('<');
        let prefixed = package != content;
        if prefixed {
            self.out.push_str("d:");
            self.out.push_str(name);
            self.namespace("xmlns:d", package);
        } else {
            self.out.push_str(name);
        }
        if scope != Some(content) {
            self.namespace("xmlns", content);
        }
        self.out.push('>');
        prefixed
    }

    fn close(&mut self, name: &str, prefixed: bool) {
        self.out.push_str(if prefixed { "</d:" } else { "</" });
        self.out.push_str(name);
        self.out.push('>');
    }

    /// ` xmlns="urn:dragoman:<package>"` (see [`super::namespace`]); package names need no escaping.
    fn namespace(&mut self, attribute: &str, package: &str) {
        self.out.push(' ');
        self.out.push_str(attribute);
        self.out.push_str("=\"urn:dragoman");
        if !package.is_empty() {
            self.out.push(':');
            self.out.push_str(package);
        }
        self.out.push('"');
    }
}

/// A well-known type's text.
fn special_text(message: &DynamicMessage, special: Special) -> Result<String, XmlError> {
    let to_json = || {
        json::encode(message, &json::PrintOptions::default()).map_err(|e| {
            XmlError::new(format!("a {} has no XML form: {}", message.descriptor().full_name(), e.message))
        })
    };
    match special {
        Special::Timestamp | Special::JsonString => {
            let json = to_json()?;
            serde_json::from_slice::<String>(&json).map_err(|e| XmlError::new(e.to_string()))
        }
        Special::JsonText => {
            // Each Any is opened afresh: a chain of them nests without bound.
            json::check_nesting(message).map_err(|e| {
                XmlError::new(format!("a {} has no XML form: {}", message.descriptor().full_name(), e.message))
            })?;
            String::from_utf8(to_json()?).map_err(|e| XmlError::new(e.to_string()))
        }
        Special::Duration => {
            let seconds = message.get_field_by_name("seconds").and_then(|v| v.as_i64()).unwrap_or_default();
            let nanos = message.get_field_by_name("nanos").and_then(|v| v.as_i32()).unwrap_or_default();
            duration::format(seconds, nanos).ok_or_else(|| {
                XmlError::new(format!("the Duration {seconds}s {nanos}ns has no XML form: out of range or mixed signs"))
            })
        }
        Special::Wrapper => {
            let descriptor: MessageDescriptor = message.descriptor();
            let field =
                descriptor.get_field_by_name("value").ok_or_else(|| XmlError::new("a wrapper without a value"))?;
            let value = message.get_field(&field);
            if let Some(s) = value.as_str() {
                return Ok(s.to_owned());
            }
            let mut text = String::new();
            scalar_into(&mut text, &field.kind(), &value)?;
            Ok(text)
        }
    }
}

/// A scalar's XML Schema lexical form, escaped.
fn scalar_into(out: &mut String, kind: &Kind, value: &Value) -> Result<(), XmlError> {
    use std::fmt::Write;
    fn float(out: &mut String, v: f64, debug: &dyn std::fmt::Debug) {
        if v.is_nan() {
            out.push_str("NaN");
        } else if v.is_infinite() {
            out.push_str(if v > 0.0 { "INF" } else { "-INF" });
        } else {
            let _ = write!(out, "{debug:?}");
        }
    }
    match value {
        Value::String(s) => escape_into(out, s)?,
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::I32(n) => {
            let _ = write!(out, "{n}");
        }
        Value::I64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::U32(n) => {
            let _ = write!(out, "{n}");
        }
        Value::U64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::F32(v) => float(out, f64::from(*v), v),
        Value::F64(v) => float(out, *v, v),
        Value::Bytes(b) => out.push_str(&base64::engine::general_purpose::STANDARD.encode(b)),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => match e.get_value(*n) {
                Some(v) => out.push_str(v.name()),
                None => {
                    let _ = write!(out, "{n}");
                }
            },
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        Value::Message(_) | Value::List(_) | Value::Map(_) => {
            return Err(XmlError::new("a nested value where a scalar is expected"));
        }
    }
    Ok(())
}

/// Text or an attribute value that must be written whatever it holds (an error message, a
/// comment), escaped; characters XML 1.0 cannot carry become U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("&quot;"),
            c if is_xml_char(c) => {
                let _ = escape_into(&mut out, c.encode_utf8(&mut [0; 4]));
            }
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

/// Text content, escaped; CR as a reference, since XML readers turn a raw CR into LF.
fn escape_into(out: &mut String, text: &str) -> Result<(), XmlError> {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            c => {
                return Err(XmlError::new(format!("a string holds U+{:04X}, which XML 1.0 cannot carry", c as u32)));
            }
        }
    }
    Ok(())
}
