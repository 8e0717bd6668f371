//! The REST route table, built once per catalog snapshot from every method's `google.api.http`
//! bindings, plus `POST /<package.Service>/<Method>` for every method (annotated or not), the
//! path a gRPC client uses, told apart from gRPC by its JSON content type.
//!
//! Matching is deterministic: within an HTTP method, templates are tried most specific first
//! (a literal segment before `*` before `**`), whatever order the rules were declared in. When two
//! bindings match exactly the same requests, the first one wins — services in order of their full
//! names, methods in declaration order, a rule before its `additional_bindings` (grpc-gateway v1
//! keeps the first too; Envoy serves neither) — and the other is dropped with a warning. A binding
//! the gateway cannot honour (a bad template, a body field that does not exist) is dropped with a
//! warning too. Real API sets carry such rules (etcd's `Hash` and `HashKV` share a path); refusing
//! the whole catalog for one of them would keep every other route from being served. A method
//! whose bindings were all dropped stays reachable at its gRPC path.
//!
//! A last segment ending in `:verb`, for a verb some template of the table declares, is that
//! custom verb — it matches only templates with the verb, as Envoy's path matcher treats
//! registered custom verbs. So `GET /v1/payments/p-1:refund` is not `GET /v1/payments/{id}` with
//! the id `p-1:refund` (grpc-gateway's reading): it is the refund path, where only POST is
//! bound, and OPTIONS, 405 and the OpenAPI document all say so. A colon followed by anything
//! else is data (`/v1/users/a:b` binds the id `a:b`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::Method;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

use crate::catalog::{Catalog, MethodRoute};
use crate::transcode::http_rule::{self, Binding, BodyTarget};
use crate::transcode::template::Template;

/// Path variables bound by a template: field-path index and the matched text.
pub type Bound = Vec<(usize, String)>;

/// One binding of one method.
#[derive(Debug)]
pub struct Route {
    pub method: Arc<MethodRoute>,
    pub binding: Binding,
    /// `binding.body` resolved against the input message once.
    pub body: BodyInto,
    /// The reply can hold a `google.protobuf.Any`: its nesting is checked before it is written.
    pub reply_holds_any: bool,
    /// For a PATCH whose body is one message field and whose request has a
    /// `google.protobuf.FieldMask update_mask`: that field, which the body's keys fill when the
    /// client sets no mask (grpc-gateway's behaviour).
    pub patch_mask: Option<FieldDescriptor>,
}

impl Route {
    fn new(method: Arc<MethodRoute>, binding: Binding) -> Self {
        let body = BodyInto::of(&binding, &method.descriptor.input());
        let reply_holds_any = crate::transcode::json::holds_any(&method.descriptor.output());
        let patch_mask = patch_mask(&binding, &body, &method.descriptor.input());
        Route { method, binding, body, reply_holds_any, patch_mask }
    }
}

/// The `update_mask` a PATCH's body fills (see [`Route::patch_mask`]).
fn patch_mask(binding: &Binding, body: &BodyInto, input: &MessageDescriptor) -> Option<FieldDescriptor> {
    let BodyInto::Field(field) = body else { return None };
    if binding.method != Method::PATCH || !matches!(field.kind(), Kind::Message(_)) || field.is_list() {
        return None;
    }
    let mask = input.get_field_by_name("update_mask")?;
    let is_mask = matches!(mask.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask");
    (is_mask && !mask.is_list()).then_some(mask)
}

/// Where the body goes for this route, with the field resolved.
#[derive(Debug)]
pub enum BodyInto {
    Nothing,
    Message,
    Field(FieldDescriptor),
}

impl BodyInto {
    fn of(binding: &Binding, input: &MessageDescriptor) -> Self {
        match &binding.body {
            BodyTarget::None => BodyInto::Nothing,
            BodyTarget::Whole => BodyInto::Message,
            // http_rule checked that the field exists.
            BodyTarget::Field(name) => input.get_field_by_name(name).map_or(BodyInto::Nothing, BodyInto::Field),
        }
    }

    /// The message type the body is read into, if it is `google.api.HttpBody`: then the body is
    /// raw bytes with their content type, not JSON.
    pub fn is_http_body(&self, input: &MessageDescriptor) -> bool {
        match self {
            BodyInto::Nothing => false,
            BodyInto::Message => input.full_name() == super::request::HTTP_BODY,
            BodyInto::Field(f) => matches!(f.kind(), Kind::Message(m) if m.full_name() == super::request::HTTP_BODY),
        }
    }
}

/// What a request resolves to.
pub enum Found<'a> {
    /// The route and its path variables (index into the template's variables, decoded value).
    Route(&'a Arc<Route>, Vec<(usize, String)>),
    /// The path matches routes of other HTTP methods only.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

#[derive(Debug, Default)]
pub struct Routes {
    /// Per HTTP method, most specific first.
    by_method: HashMap<Method, Vec<Arc<Route>>>,
    /// `/<package.Service>/<Method>`, reached with POST.
    by_grpc_path: HashMap<Box<str>, Arc<Route>>,
    /// The bindings that were dropped, and why: logged at load, listed by `dragoman check`.
    pub warnings: Vec<String>,
    /// Every custom verb the templates declare (`watch` of `/v1/orders/{id}:watch`).
    verbs: HashSet<Box<str>>,
}

impl Routes {
    pub fn build(catalog: &Catalog) -> Self {
        let mut routes = Routes::default();
        for service in catalog.services() {
            for descriptor in service.descriptor.methods() {
                let path = format!("/{}/{}", service.descriptor.full_name(), descriptor.name());
                let crate::catalog::Lookup::Method(method) = catalog.lookup(&path) else { continue };
                let method = method.clone();
                let bindings = http_rule::bindings(&descriptor);
                for unusable in bindings.unusable {
                    routes
                        .warnings
                        .push(format!("{unusable}; binding ignored, the method stays reachable at POST {path}"));
                }
                for binding in bindings.usable {
                    routes.add(Arc::new(Route::new(method.clone(), binding)), &path);
                }
                // Identifiers joined by '/' always parse.
                if let Ok(template) = Template::parse(&path) {
                    let binding =
                        Binding { method: Method::POST, template, body: BodyTarget::Whole, response_body: None };
                    routes.by_grpc_path.insert(path.into(), Arc::new(Route::new(method, binding)));
                }
            }
        }
        for list in routes.by_method.values_mut() {
            // A stable sort: among equally specific templates, the order of declaration stays.
            list.sort_by_key(|r| std::cmp::Reverse(r.binding.template.specificity()));
        }
        routes.verbs = routes.annotated().filter_map(|r| r.binding.template.verb.as_deref()).map(Box::from).collect();
        routes
    }

    /// Adds a binding unless an earlier one matches the same requests; `path` is its method's
    /// gRPC path, for the warning.
    fn add(&mut self, route: Arc<Route>, path: &str) {
        let list = self.by_method.entry(route.binding.method.clone()).or_default();
        match list.iter().find(|r| r.binding.template.same_shape(&route.binding.template)) {
            Some(kept) => self.warnings.push(format!(
                "{}: google.api.http: {} {} is ignored: {} {} of {} matches the same requests and was declared first; \
                 the method stays reachable at POST {path}",
                route.method.descriptor.full_name(),
                route.binding.method,
                route.binding.template,
                kept.binding.method,
                kept.binding.template,
                kept.method.descriptor.full_name(),
            )),
            None => list.push(route),
        }
    }

    /// Resolves a request line.
    pub fn find(&self, method: &Method, path: &str) -> Found<'_> {
        if let Some(routes) = self.by_method.get(method) {
            let verb = self.verb_of(path);
            for route in routes {
                if let Some(bound) = matches(&route.binding.template, verb, path) {
                    return Found::Route(route, bound);
                }
            }
        }
        if *method == Method::POST {
            if let Some(route) = self.by_grpc_path.get(path) {
                return Found::Route(route, Vec::new());
            }
        }
        let allowed = self.methods_except(Some(method), path);
        if allowed.is_empty() { Found::NotFound } else { Found::MethodNotAllowed(allowed) }
    }

    /// The route a WebSocket opened at `path` calls, whatever HTTP method its binding names (a
    /// WebSocket always opens with GET): the method's gRPC path first, then its `google.api.http`
    /// templates — GET's, then the other methods' in the order of their names.
    pub fn find_any(&self, path: &str) -> Option<(&Arc<Route>, Bound)> {
        if let Some(route) = self.by_grpc_path.get(path) {
            return Some((route, Vec::new()));
        }
        let verb = self.verb_of(path);
        let mut methods: Vec<&Method> = self.by_method.keys().collect();
        methods.sort_by_key(|m| (**m != Method::GET, m.as_str()));
        methods.into_iter().flat_map(|m| &self.by_method[m]).find_map(|route| {
            let bound = matches(&route.binding.template, verb, path)?;
            Some((route, bound))
        })
    }

    /// Every annotated route, for the OpenAPI document.
    pub fn annotated(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.by_method.values().flatten()
    }

    /// A method's HTTP bindings as `GET /v1/things/{id}`, sorted (for `dragoman check` and the
    /// admin catalog).
    pub fn bindings_of(&self, method: &prost_reflect::MethodDescriptor) -> Vec<String> {
        let mut bindings: Vec<String> = self
            .annotated()
            .filter(|route| route.method.descriptor == *method)
            .map(|route| format!("{} {}", route.binding.method, route.binding.template))
            .collect();
        bindings.sort();
        bindings
    }

    /// The HTTP methods a path answers to (for OPTIONS and CORS preflight), sorted.
    pub fn methods_for(&self, path: &str) -> Vec<Method> {
        self.methods_except(None, path)
    }

    fn methods_except(&self, except: Option<&Method>, path: &str) -> Vec<Method> {
        let verb = self.verb_of(path);
        let mut methods: Vec<Method> = self
            .by_method
            .iter()
            .filter(|(m, routes)| {
                Some(*m) != except && routes.iter().any(|r| matches(&r.binding.template, verb, path).is_some())
            })
            .map(|(m, _)| m.clone())
            .collect();
        if self.by_grpc_path.contains_key(path) && except != Some(&Method::POST) {
            methods.push(Method::POST);
        }
        methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        methods.dedup();
        methods
    }

    /// The custom verb a path ends with, if it is one the table declares.
    fn verb_of<'p>(&self, path: &'p str) -> Option<&'p str> {
        let last = &path[path.rfind('/').map_or(0, |i| i + 1)..];
        let (_, verb) = last.rsplit_once(':')?;
        self.verbs.contains(verb).then_some(verb)
    }
}

/// A template's match, where a path ending in a declared custom verb matches only templates with
/// a verb (the template's own `matches` checks that it is the same one).
fn matches(template: &Template, verb: Option<&str>, path: &str) -> Option<Vec<(usize, String)>> {
    if verb.is_some() && template.verb.is_none() {
        return None;
    }
    template.matches(path)
}
