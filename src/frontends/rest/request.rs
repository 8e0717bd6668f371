//! Building the request message of a REST call: the body (JSON, or raw for `google.api.HttpBody`),
//! then the path variables, then the query parameters (google/api/http.proto, "HTTP rule").

use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};
use tonic::Code;

use super::Refusal;
use super::error::is_xml;
use super::routes::{BodyInto, Route};
use crate::config::{PathBodyConflict, RestOptions};
use crate::error::{GatewayError, Origin};
use crate::transcode::query::{self, BindError, BindOptions};
use crate::transcode::{framing, json, xml};

pub(super) const HTTP_BODY: &str = "google.api.HttpBody";

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::new(Code::InvalidArgument, Origin::Client, message)
}

/// The request message of a unary or server-streaming call, framed for the backend.
pub(super) fn frame(
    route: &Route,
    bound: &[(usize, String)],
    query: Option<&str>,
    body: &[u8],
    content_type: Option<&str>,
    options: &RestOptions,
) -> Result<bytes::Bytes, Refusal> {
    let message = message(route, bound, query, body, content_type, options)?;
    framing::encode(&message, options.max_message_size).map_err(|e| {
        let message = format!("the request: {e}");
        Refusal::with_status(http::StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted, message)
    })
}

/// The request message of a unary or server-streaming call.
fn message(
    route: &Route,
    bound: &[(usize, String)],
    query: Option<&str>,
    body: &[u8],
    content_type: Option<&str>,
    options: &RestOptions,
) -> Result<DynamicMessage, GatewayError> {
    let input = route.method.descriptor.input();
    let target = &route.body;
    let mut message = match target {
        BodyInto::Nothing => DynamicMessage::new(input.clone()),
        BodyInto::Message if target.is_http_body(&input) => http_body(input.clone(), body, content_type),
        BodyInto::Message if body.is_empty() => DynamicMessage::new(input.clone()),
        BodyInto::Message if is_xml(content_type) => {
            xml::decode(input.clone(), body, xml_options(options)).map_err(|e| invalid(e.message))?
        }
        BodyInto::Message => {
            json::decode(input.clone(), body, options.ignore_unknown_fields).map_err(|e| invalid(e.message))?
        }
        BodyInto::Field(field) => {
            let mut message = DynamicMessage::new(input.clone());
            if let (true, Kind::Message(m)) = (target.is_http_body(&input), field.kind()) {
                message.set_field(field, Value::Message(http_body(m, body, content_type)));
            } else if !body.is_empty() && is_xml(content_type) {
                xml::decode_body(&mut message, field, body, xml_options(options)).map_err(|e| invalid(e.message))?;
            } else if !body.is_empty() {
                json::decode_into_field(&mut message, field, body, options.ignore_unknown_fields)
                    .map_err(|e| invalid(e.message))?;
            }
            message
        }
    };
    bind_path(&mut message, route, bound, options)?;
    if let Some(query) = query {
        bind_query(&mut message, route, query, options)?;
    }
    fill_patch_mask(&mut message, route, body, content_type, options)?;
    Ok(message)
}

/// A PATCH whose client set no `update_mask` gets one from the keys its body sets, so that
/// `PATCH {"displayName": "x"}` changes that field instead of blanking the others (grpc-gateway
/// does the same; `rest.patch_update_mask_from_body: false` turns it off).
fn fill_patch_mask(
    message: &mut DynamicMessage,
    route: &Route,
    body: &[u8],
    content_type: Option<&str>,
    options: &RestOptions,
) -> Result<(), GatewayError> {
    let (Some(mask), BodyInto::Field(field)) = (&route.patch_mask, &route.body) else { return Ok(()) };
    if !options.patch_update_mask_from_body || body.is_empty() || message.has_field(mask) {
        return Ok(());
    }
    let Kind::Message(target) = field.kind() else { return Ok(()) };
    let paths = if is_xml(content_type) {
        xml::field_mask_paths(&target, body).map_err(|e| invalid(e.message))?
    } else {
        json::field_mask_paths(&target, body).map_err(|e| invalid(e.message))?
    };
    let Kind::Message(mask_type) = mask.kind() else { return Ok(()) };
    let mut value = DynamicMessage::new(mask_type);
    value.set_field_by_name("paths", Value::List(paths.into_iter().map(Value::String).collect()));
    message.set_field(mask, Value::Message(value));
    Ok(())
}

fn xml_options(options: &RestOptions) -> xml::DecodeOptions {
    xml::DecodeOptions { ignore_unknown_fields: options.ignore_unknown_fields }
}

/// A `google.api.HttpBody` holding the raw request body.
fn http_body(descriptor: MessageDescriptor, body: &[u8], content_type: Option<&str>) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor);
    let _ = message.try_set_field_by_name("content_type", Value::String(content_type.unwrap_or_default().to_owned()));
    let _ = message.try_set_field_by_name("data", Value::Bytes(bytes::Bytes::copy_from_slice(body)));
    message
}

fn bind_options(options: &RestOptions) -> BindOptions {
    BindOptions { case_insensitive_enums: options.case_insensitive_enum_parsing }
}

/// Path variables; they win over the body unless the config says a conflict is an error.
pub(crate) fn bind_path(
    message: &mut DynamicMessage,
    route: &Route,
    bound: &[(usize, String)],
    options: &RestOptions,
) -> Result<(), GatewayError> {
    for (index, value) in bound {
        let variable = &route.binding.template.variables[*index];
        let path = &variable.field_path;
        if options.path_body_conflict == PathBodyConflict::Reject {
            // Compared as values of the field's type: "5" in the path is 5 in the body.
            let mut probe = DynamicMessage::new(message.descriptor());
            query::set_path_variable(&mut probe, path, value, bind_options(options))
                .map_err(|e| bind_error(e, "path variable"))?;
            if let (Some(existing), Some(bound)) = (value_at(message, path), value_at(&probe, path)) {
                if existing != bound {
                    return Err(invalid(format!(
                        "field {} is {value:?} in the path but {} in the body",
                        variable.field(),
                        shown(existing)
                    )));
                }
            }
        }
        query::set_path_variable(message, path, value, bind_options(options))
            .map_err(|e| bind_error(e, "path variable"))?;
    }
    Ok(())
}

/// The value at `path`, if every field along it is set.
fn value_at<'a>(message: &'a DynamicMessage, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut current = message;
    for name in parents {
        current = set_field(current, name)?.as_message()?;
    }
    set_field(current, last)
}

/// A scalar value as a person would write it.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        Value::I32(n) | Value::EnumNumber(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F32(n) => n.to_string(),
        Value::F64(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// A field's value if it is set; `fields()` lends the set values without copying the message.
fn set_field<'a>(message: &'a DynamicMessage, name: &str) -> Option<&'a Value> {
    let field = query::field_named(&message.descriptor(), name)?;
    message.fields().find(|(f, _)| *f == field).map(|(_, value)| value)
}

/// A binding error as a client error: `what` is "path variable" or "query parameter".
fn bind_error(error: BindError, what: &str) -> GatewayError {
    match error {
        BindError::UnknownField(f) => invalid(format!("{what} names no field: {f}")),
        BindError::BadValue { field, value, reason } => {
            invalid(format!("{what} {field} = {value:?} does not fit: {reason}"))
        }
    }
}

/// Query parameters fill the fields the path and the body do not bind.
fn bind_query(
    message: &mut DynamicMessage,
    route: &Route,
    query: &str,
    options: &RestOptions,
) -> Result<(), GatewayError> {
    let pairs = query::pairs(query, options.query_param_unescape_plus).map_err(invalid)?;
    let api_key = options.key_query_parameter.as_ref().map(|(parameter, _)| parameter.as_str());
    for (key, value) in pairs {
        // The API key is the auth layer's, not a field.
        if Some(key.as_str()) == api_key {
            continue;
        }
        let path: Vec<&str> = key.split('.').collect();
        let resolved = resolve(&message.descriptor(), &path);
        // Resolved to proto names: the field exists, so setting it can only fail on the value.
        let why = match &resolved {
            None => Some("names no field of the request"),
            Some(_) if matches!(route.body, BodyInto::Message) => Some("is bound by the body"),
            Some(names) if matches!(&route.body, BodyInto::Field(f) if f.name() == names[0]) => {
                Some("is bound by the body")
            }
            Some(names) if route.binding.template.variables.iter().any(|v| overlaps(&v.field_path, names)) => {
                Some("is bound by the path")
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            if options.ignore_unknown_query_parameters {
                continue;
            }
            return Err(invalid(format!("unknown query parameter {key:?}: it {why}")));
        }
        let names = resolved.unwrap_or_default();
        query::set_path(message, &names, &value, bind_options(options))
            .map_err(|e| bind_error(e, "query parameter"))?;
    }
    Ok(())
}

/// The proto names along a dotted path of proto or JSON names; None when a name is no field.
fn resolve(message: &MessageDescriptor, path: &[&str]) -> Option<Vec<String>> {
    let mut current = message.clone();
    let mut names = Vec::with_capacity(path.len());
    for (i, name) in path.iter().enumerate() {
        let field = query::field_named(&current, name)?;
        names.push(field.name().to_owned());
        if i + 1 < path.len() {
            let Kind::Message(next) = field.kind() else { return None };
            current = next;
        }
    }
    Some(names)
}

/// One path is a prefix of the other: setting one would touch the other.
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// One message of a streamed request body (a line of NDJSON): the body is the whole message,
/// path variables apply to each.
pub(crate) fn stream_message(
    route: &Route,
    bound: &[(usize, String)],
    line: &[u8],
    options: &RestOptions,
) -> Result<DynamicMessage, GatewayError> {
    let input = route.method.descriptor.input();
    let mut message = json::decode(input, line, options.ignore_unknown_fields).map_err(|e| invalid(e.message))?;
    bind_path(&mut message, route, bound, options)?;
    Ok(message)
}
