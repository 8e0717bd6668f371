//! The REST/JSON frontend: `google.api.http` transcoding (google/api/http.proto), with the
//! semantics users know from Envoy's gRPC-JSON transcoder and grpc-gateway.
//!
//! A request is classified ([`Target`]) against the snapshot's [`routes::Routes`]; a call's
//! message is built from body, path and query ([`request`]), framed, and sent through the same
//! policy stack as gRPC; the reply becomes JSON, a message stream, or an error with the HTTP
//! status of google/rpc/code.proto and a JSON `google.rpc.Status` body ([`response`],
//! [`error`]).
//!
//! # Limitations
//! - Request bodies of unary and server-streaming calls are read whole (up to
//!   `max_request_body_size`) before the call starts: JSON must be complete to be parsed.
//! - Client-streaming bodies are newline-delimited JSON, one message per line, each with the
//!   whole message as its body (`body: "*"` per line).
//! - `response_body` naming a scalar or repeated field is printed compactly whatever
//!   `add_whitespace` says.

mod cors;
pub mod error;
pub mod openapi;
pub(crate) mod request;
mod response;
pub mod routes;
mod stream;

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::Instant;
use tonic::Code;
use tower::ServiceExt;

use super::{Peer, ResponseBody, body, offload};
use crate::call::{Body, Call, Protocol};
use crate::config::RestOptions;
use crate::error::{GatewayError, Origin};
use crate::observe::access_log;
use crate::stack::Stack;
use routes::{Found, Route, Routes};

/// What the REST frontend derives from one catalog snapshot.
pub struct Tables {
    pub routes: Routes,
    /// `/openapi.json`.
    pub openapi: Bytes,
    /// `/openapi/<package.Service>.json`.
    pub openapi_by_service: std::collections::BTreeMap<String, Bytes>,
}

impl Tables {
    /// The routes, and the documents saying what they accept under `options`.
    pub fn new(catalog: &crate::catalog::Catalog, options: &RestOptions) -> Self {
        let routes = Routes::build(catalog);
        let openapi = Bytes::from(openapi::document(catalog, &routes, options, None));
        let openapi_by_service = openapi::per_service(catalog, &routes, options);
        Tables { routes, openapi, openapi_by_service }
    }
}

/// The REST frontend: the stack calls go through, and its settings.
#[derive(Clone)]
pub struct RestFrontend {
    pub stack: Stack,
    pub options: Arc<RestOptions>,
}

/// What an HTTP request is for.
enum Target<'a> {
    /// A CORS preflight, or a plain OPTIONS: answered by the gateway for every route.
    Options(Vec<Method>),
    /// The OpenAPI document of the loaded services, or of one.
    OpenApi(Bytes),
    /// A method call.
    Call(&'a Arc<Route>, Vec<(usize, String)>),
    /// A known path under another HTTP method: 405 with `Allow`.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

fn classify<'a>(method: &Method, path: &str, tables: &'a Tables) -> Target<'a> {
    let routes = &tables.routes;
    if *method == Method::GET {
        if path == "/openapi.json" {
            return Target::OpenApi(tables.openapi.clone());
        }
        let service = path.strip_prefix("/openapi/").and_then(|p| p.strip_suffix(".json"));
        if let Some(document) = service.and_then(|s| tables.openapi_by_service.get(s)) {
            return Target::OpenApi(document.clone());
        }
    }
    if *method == Method::OPTIONS {
        let methods = routes.methods_for(path);
        return if methods.is_empty() { Target::NotFound } else { Target::Options(methods) };
    }
    match routes.find(method, path) {
        Found::Route(route, bound) => Target::Call(route, bound),
        Found::MethodNotAllowed(allowed) => Target::MethodNotAllowed(allowed),
        Found::NotFound => Target::NotFound,
    }
}

impl RestFrontend {
    pub async fn serve(&self, request: Request<Incoming>, tables: &Tables, peer: &Peer) -> Response<ResponseBody> {
        let started = Instant::now();
        let origin = request.headers().get(http::header::ORIGIN).cloned();
        let format = error::Format::of(request.headers(), true);
        let mut response = match classify(request.method(), request.uri().path(), tables) {
            // Fetch (CORS) preflight, and RFC 9110 OPTIONS: what this path allows.
            Target::Options(methods) => cors::preflight(request.headers(), &methods, &self.options),
            Target::OpenApi(document) => openapi::response(document),
            // google/api/http.proto: the request is bound to the method's input message.
            Target::Call(route, bound) => self.call(request, route, bound, peer, started, format).await,
            // RFC 9110 15.5.6: 405 names the methods the path allows.
            Target::MethodNotAllowed(allowed) => {
                let path = request.uri().path();
                let response = response::method_not_allowed(request.method(), path, &allowed, format);
                access_log::unrouted(
                    Protocol::Rest,
                    path,
                    Some(peer.address),
                    Code::Unimplemented,
                    "method not allowed",
                    started,
                );
                response
            }
            Target::NotFound => {
                let path = request.uri().path();
                let message = format!("no route for {} {path}", request.method());
                access_log::unrouted(Protocol::Rest, path, Some(peer.address), Code::NotFound, &message, started);
                response::refused_with(StatusCode::NOT_FOUND, Code::NotFound, message, format)
            }
        };
        if let Some(origin) = origin {
            cors::decorate(response.headers_mut(), &origin, &self.options);
        }
        response
    }

    async fn call(
        &self,
        request: Request<Incoming>,
        route: &Arc<Route>,
        bound: Vec<(usize, String)>,
        peer: &Peer,
        started: Instant,
        format: error::Format,
    ) -> Response<ResponseBody> {
        let options = &self.options;
        let descriptor = &route.method.descriptor;
        // A raw HttpBody in XML is no reason to answer in XML.
        let format = if route.body.is_http_body(&descriptor.input()) {
            error::Format::of(request.headers(), false)
        } else {
            format
        };
        // Every refusal before the stack is logged here, once.
        let refuse = |refusal: Refusal| {
            let error = &refusal.error;
            access_log::refused(Protocol::Rest, &route.method, Some(peer.address), error.code, &error.message, started);
            let mut response = response::refused(error, Some(descriptor.parent_pool()), format);
            if let Some(status) = refusal.status {
                *response.status_mut() = status;
            }
            response
        };
        let (parts, body) = request.into_parts();
        let deadline = match super::deadline(&parts.headers, options) {
            Ok(timeout) => timeout.map(|t| started + t),
            Err(error) => return refuse(error.into()),
        };
        let stream_format = descriptor.is_server_streaming().then(|| {
            let accept = parts.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
            response::stream_format(accept, options.stream_format)
        });
        let trailers_wanted =
            parts.headers.get(http::header::TE).is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        // Where a client stream's bad line is kept: the call itself is reset by it.
        let progress = descriptor.is_client_streaming().then(|| Arc::new(stream::Progress::default()));

        let call_body: Body = if let Some(progress) = &progress {
            let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
            if not_json(content_type) {
                return refuse(unsupported_media_type(content_type, "a client stream is newline-delimited JSON"));
            }
            stream::RequestStream::new(body, route.clone(), bound, options.clone(), progress.clone()).boxed_unsync()
        } else {
            let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
            let limit = options.max_request_body_size;
            let bytes = match body::read(body, &parts.headers, limit, options.body_read_timeout).await {
                Ok(bytes) => bytes,
                Err(error) => return refuse(error.into()),
            };
            let readable = !not_json(content_type) || error::is_xml(content_type);
            if !bytes.is_empty() && !route.body.is_http_body(&descriptor.input()) && !readable {
                return refuse(unsupported_media_type(content_type, "send application/json or application/xml"));
            }
            let framed = if offload::is_big(bytes.len()) {
                let (route, query, content_type, options) = (
                    route.clone(),
                    parts.uri.query().map(str::to_owned),
                    content_type.map(str::to_owned),
                    options.clone(),
                );
                let work =
                    move || request::frame(&route, &bound, query.as_deref(), &bytes, content_type.as_deref(), &options);
                offload::run(work).await.map_err(Refusal::from).and_then(|framed| framed)
            } else {
                request::frame(route, &bound, parts.uri.query(), &bytes, content_type, options)
            };
            let frame = match framed {
                Ok(frame) => frame,
                Err(refusal) => return refuse(refusal),
            };
            Full::new(frame).map_err(|never| match never {}).boxed_unsync()
        };
        let metadata = match super::metadata::from_headers(&parts.headers, parts.uri.query(), options, peer) {
            Ok(metadata) => metadata,
            Err(error) => return refuse(error.into()),
        };
        let call = Call {
            method: route.method.clone(),
            protocol: Protocol::Rest,
            metadata,
            deadline,
            peer: Some(peer.address),
            client: peer.client.clone(),
            extensions: http::Extensions::new(),
            body: call_body,
        };
        let reply = self.stack.clone().oneshot(call).await;
        let response = match (reply, stream_format) {
            // A server stream reports a bad request line itself, in the stream.
            (Ok(reply), Some(stream_format)) => {
                return response::streaming(reply, route, options, stream_format, progress).await;
            }
            (Ok(reply), None) => response::unary(reply, route, options, trailers_wanted, format).await,
            (Err(error), _) => response::refused(&error, Some(descriptor.parent_pool()), format),
        };
        // A bad line of a client stream is the answer, whatever the reset it caused made of the call.
        match progress.as_deref().and_then(stream::Progress::error) {
            Some(error) => response::refused(error, Some(descriptor.parent_pool()), format),
            None => response,
        }
    }
}

/// A request refused before it reaches the stack, with the HTTP status when the gRPC code's own
/// (google/rpc/code.proto) is not the right one: 413 and 415 have no gRPC code of their own.
struct Refusal {
    error: GatewayError,
    status: Option<StatusCode>,
}

impl Refusal {
    fn with_status(status: StatusCode, code: Code, message: String) -> Self {
        Refusal { error: GatewayError::new(code, Origin::Client, message), status: Some(status) }
    }
}

impl From<GatewayError> for Refusal {
    fn from(error: GatewayError) -> Self {
        Refusal { error, status: None }
    }
}

impl From<body::BodyError> for Refusal {
    fn from(error: body::BodyError) -> Self {
        let (status, code, message) = error.explain();
        Refusal::with_status(status, code, message)
    }
}

/// A content type that is clearly not JSON (XML, multipart forms), for a route that takes JSON.
/// Anything else is read as JSON, as grpc-gateway and Envoy do: `curl -d` sends
/// `application/x-www-form-urlencoded`, and many clients send no type or `text/plain`.
fn not_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = ct.split(';').next().unwrap_or_default().trim().as_bytes();
    let starts = |prefix: &[u8]| essence.len() >= prefix.len() && essence[..prefix.len()].eq_ignore_ascii_case(prefix);
    let ends = |suffix: &[u8]| {
        essence.len() >= suffix.len() && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    starts(b"multipart/") || ends(b"/xml") || ends(b"+xml")
}

fn unsupported_media_type(content_type: Option<&str>, what: &str) -> Refusal {
    let message = format!("content-type {:?} cannot be read here: {what}", content_type.unwrap_or(""));
    Refusal::with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE, Code::InvalidArgument, message)
}
