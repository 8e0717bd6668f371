//! Reads a method's `google.api.http` option (google/api/http.proto) into bindings: an HTTP
//! method, a compiled path template, where the body goes and which response field is the body.

use prost::Message;
use prost_reflect::{MethodDescriptor, Value};

use super::template::{Template, TemplateError};

/// `google.api.HttpRule`, decoded from the option's bytes (field numbers as in http.proto).
#[derive(Clone, PartialEq, Message)]
struct HttpRule {
    #[prost(string, tag = "1")]
    selector: String,
    #[prost(string, optional, tag = "2")]
    get: Option<String>,
    #[prost(string, optional, tag = "3")]
    put: Option<String>,
    #[prost(string, optional, tag = "4")]
    post: Option<String>,
    #[prost(string, optional, tag = "5")]
    delete: Option<String>,
    #[prost(string, optional, tag = "6")]
    patch: Option<String>,
    #[prost(message, optional, tag = "8")]
    custom: Option<CustomHttpPattern>,
    #[prost(string, tag = "7")]
    body: String,
    #[prost(string, tag = "12")]
    response_body: String,
    #[prost(message, repeated, tag = "11")]
    additional_bindings: Vec<HttpRule>,
}

#[derive(Clone, PartialEq, Message)]
struct CustomHttpPattern {
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(string, tag = "2")]
    path: String,
}

/// Where the HTTP request body goes (`HttpRule.body`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyTarget {
    /// No body: every field not in the path comes from the query.
    None,
    /// `body: "*"`: the whole request message.
    Whole,
    /// `body: "field"`: that top-level field.
    Field(String),
}

/// One way to reach a method over HTTP.
#[derive(Debug, Clone)]
pub struct Binding {
    pub method: http::Method,
    pub template: Template,
    pub body: BodyTarget,
    /// `response_body`: the response field sent as the body; None for the whole message.
    pub response_body: Option<String>,
}

/// A rule that cannot be used, with the method it belongs to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{method}: google.api.http: {reason}")]
pub struct RuleError {
    pub method: String,
    pub reason: String,
}

/// The method's bindings from its `google.api.http` option; empty when it has none.
pub fn bindings(method: &MethodDescriptor) -> Result<Vec<Binding>, RuleError> {
    let fail = |reason: String| RuleError { method: method.full_name().to_owned(), reason };
    let Some(extension) = method.parent_pool().get_extension_by_name("google.api.http") else {
        return Ok(Vec::new());
    };
    let options = method.options();
    if !options.has_extension(&extension) {
        return Ok(Vec::new());
    }
    let Value::Message(rule) = options.get_extension(&extension).into_owned() else {
        return Err(fail("the option is not an HttpRule".into()));
    };
    let rule = HttpRule::decode(rule.encode_to_vec().as_slice()).map_err(|e| fail(e.to_string()))?;
    let mut out = Vec::new();
    push_binding(&rule, method, &mut out).map_err(fail)?;
    for additional in &rule.additional_bindings {
        if !additional.additional_bindings.is_empty() {
            return Err(fail("additional_bindings cannot nest".into()));
        }
        push_binding(additional, method, &mut out).map_err(fail)?;
    }
    Ok(out)
}

fn push_binding(rule: &HttpRule, method: &MethodDescriptor, out: &mut Vec<Binding>) -> Result<(), String> {
    let (verb, path) = match (&rule.get, &rule.put, &rule.post, &rule.delete, &rule.patch, &rule.custom) {
        (Some(p), ..) => (http::Method::GET, p.as_str()),
        (_, Some(p), ..) => (http::Method::PUT, p.as_str()),
        (_, _, Some(p), ..) => (http::Method::POST, p.as_str()),
        (_, _, _, Some(p), ..) => (http::Method::DELETE, p.as_str()),
        (_, _, _, _, Some(p), _) => (http::Method::PATCH, p.as_str()),
        (.., Some(custom)) => {
            let verb = http::Method::from_bytes(custom.kind.as_bytes())
                .map_err(|_| format!("bad custom verb {:?}", custom.kind))?;
            (verb, custom.path.as_str())
        }
        _ => return Err("no pattern (get, put, post, delete, patch or custom)".into()),
    };
    let template = Template::parse(path).map_err(|e: TemplateError| e.to_string())?;
    let input = method.input();
    for variable in &template.variables {
        check_field_path(&input, &variable.field_path)
            .map_err(|e| format!("path variable {{{}}}: {e}", variable.field()))?;
    }
    let body = match rule.body.as_str() {
        "" => BodyTarget::None,
        "*" => BodyTarget::Whole,
        field => {
            if input.get_field_by_name(field).is_none() {
                return Err(format!("body field {field:?} is not a field of {}", input.full_name()));
            }
            BodyTarget::Field(field.to_owned())
        }
    };
    let response_body = match rule.response_body.as_str() {
        "" => None,
        field if method.output().get_field_by_name(field).is_some() => Some(field.to_owned()),
        field => return Err(format!("response_body {field:?} is not a field of {}", method.output().full_name())),
    };
    out.push(Binding { method: verb, template, body, response_body });
    Ok(())
}

/// A path variable must name singular fields all the way down, ending in a scalar.
fn check_field_path(message: &prost_reflect::MessageDescriptor, path: &[String]) -> Result<(), String> {
    let mut current = message.clone();
    for (i, name) in path.iter().enumerate() {
        let field =
            current.get_field_by_name(name).ok_or_else(|| format!("no field {name:?} in {}", current.full_name()))?;
        if field.is_list() || field.is_map() {
            return Err(format!("{name} is repeated"));
        }
        match field.kind() {
            prost_reflect::Kind::Message(m) if i + 1 < path.len() => current = m,
            prost_reflect::Kind::Message(m) if !super::query::is_scalar_like(&m) => {
                return Err(format!("{name} is a message"));
            }
            _ if i + 1 < path.len() => return Err(format!("{name} is not a message")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_annotations_are_read() {
        let pool = prost_reflect::DescriptorPool::decode(crate::demo::DESCRIPTOR_SET).expect("demo set");
        let service = pool.get_service_by_name("shop.orders.v1.OrderService").expect("service");
        let watch = service.methods().find(|m| m.name() == "WatchOrder").expect("method");
        let found = bindings(&watch).expect("valid rule");
        assert_eq!(found.len(), 1, "{:?}", watch.options());
        assert_eq!(found[0].method, http::Method::GET);
        assert_eq!(found[0].template.to_string(), "/v1/orders/{id}:watch");
    }
}
