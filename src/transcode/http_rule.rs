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

/// A binding that cannot be used, with the method it belongs to. The method's other bindings
/// still serve, and the method stays reachable at its gRPC path.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{method}: google.api.http: {reason}")]
pub struct RuleError {
    pub method: String,
    pub reason: String,
}

/// What a method's `google.api.http` option yields: the bindings that can be served, in
/// declaration order (the rule itself, then its `additional_bindings`), and those that cannot.
#[derive(Debug, Default)]
pub struct Bindings {
    pub usable: Vec<Binding>,
    pub unusable: Vec<RuleError>,
}

/// The method's bindings from its `google.api.http` option; none when it has no option. A bad
/// binding is reported and skipped, not fatal: one unparsable template in a large API must not
/// keep the rest of it from being served.
pub fn bindings(method: &MethodDescriptor) -> Bindings {
    let fail = |reason: String| RuleError { method: method.full_name().to_owned(), reason };
    let rule = match http_rule(method) {
        Ok(Some(rule)) => rule,
        Ok(None) => return Bindings::default(),
        Err(reason) => return Bindings { usable: Vec::new(), unusable: vec![fail(reason)] },
    };
    let mut results = vec![binding(&rule, method)];
    for additional in &rule.additional_bindings {
        results.push(if additional.additional_bindings.is_empty() {
            binding(additional, method)
        } else {
            Err("additional_bindings cannot nest".into())
        });
    }
    let mut out = Bindings::default();
    for result in results {
        match result {
            Ok(binding) => out.usable.push(binding),
            Err(reason) => out.unusable.push(fail(reason)),
        }
    }
    out
}

/// The method's `google.api.http` option, decoded.
fn http_rule(method: &MethodDescriptor) -> Result<Option<HttpRule>, String> {
    let Some(extension) = method.parent_pool().get_extension_by_name("google.api.http") else {
        return Ok(None);
    };
    let options = method.options();
    if !options.has_extension(&extension) {
        return Ok(None);
    }
    let Value::Message(rule) = options.get_extension(&extension).into_owned() else {
        return Err("the option is not an HttpRule".into());
    };
    HttpRule::decode(rule.encode_to_vec().as_slice()).map(Some).map_err(|e| e.to_string())
}

fn binding(rule: &HttpRule, method: &MethodDescriptor) -> Result<Binding, String> {
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
    Ok(Binding { method: verb, template, body, response_body })
}

/// A path variable must name singular fields all the way down, ending in a scalar — or, as
/// grpc-gateway allows (an extension: google/api/http.proto forbids it), in a repeated scalar
/// field, whose values the path gives comma-separated.
fn check_field_path(message: &prost_reflect::MessageDescriptor, path: &[String]) -> Result<(), String> {
    let mut current = message.clone();
    for (i, name) in path.iter().enumerate() {
        let field =
            current.get_field_by_name(name).ok_or_else(|| format!("no field {name:?} in {}", current.full_name()))?;
        let last = i + 1 == path.len();
        if field.is_map() || (field.is_list() && !last) {
            return Err(format!("{name} is a {}", if field.is_map() { "map" } else { "repeated field" }));
        }
        match field.kind() {
            prost_reflect::Kind::Message(m) if !last => current = m,
            prost_reflect::Kind::Message(_) if field.is_list() => return Err(format!("{name} is a repeated message")),
            prost_reflect::Kind::Message(m) if !super::query::is_scalar_like(&m) => {
                return Err(format!("{name} is a message"));
            }
            _ if !last => return Err(format!("{name} is not a message")),
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
        let found = bindings(&watch).usable;
        assert_eq!(found.len(), 1, "{:?}", watch.options());
        assert_eq!(found[0].method, http::Method::GET);
        assert_eq!(found[0].template.to_string(), "/v1/orders/{id}:watch");
    }
}
