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
mod request;
mod response;
pub mod routes;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::Instant;
use tonic::Code;
use tower::ServiceExt;

use super::ResponseBody;
use crate::call::{Body, Call, Protocol};
use crate::config::RestOptions;
use crate::error::{GatewayError, Origin};
use crate::observe::access_log;
use crate::stack::Stack;
use crate::transcode::framing;
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
    pub fn new(catalog: &crate::catalog::Catalog, options: &RestOptions) -> Result<Self, String> {
        let routes = Routes::build(catalog)?;
        let openapi = Bytes::from(openapi::document(catalog, &routes, options, None));
        let openapi_by_service = openapi::per_service(catalog, &routes, options);
        Ok(Tables { routes, openapi, openapi_by_service })
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
    pub async fn serve(
        &self,
        request: Request<Incoming>,
        tables: &Tables,
        peer: Option<SocketAddr>,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let origin = request.headers().get(http::header::ORIGIN).cloned();
        let mut response = match classify(request.method(), request.uri().path(), tables) {
            // Fetch (CORS) preflight, and RFC 9110 OPTIONS: what this path allows.
            Target::Options(methods) => cors::preflight(request.headers(), &methods, &self.options),
            Target::OpenApi(document) => openapi::response(document),
            // google/api/http.proto: the request is bound to the method's input message.
            Target::Call(route, bound) => self.call(request, route, bound, peer, started).await,
            // RFC 9110 15.5.6: 405 names the methods the path allows.
            Target::MethodNotAllowed(allowed) => {
                let path = request.uri().path();
                let response = response::method_not_allowed(request.method(), path, &allowed);
                access_log::record(Protocol::Rest, path, peer, Code::Unimplemented, "method not allowed", started);
                response
            }
            Target::NotFound => {
                let path = request.uri().path();
                let message = format!("no route for {} {path}", request.method());
                access_log::record(Protocol::Rest, path, peer, Code::NotFound, &message, started);
                response::refused_with(StatusCode::NOT_FOUND, Code::NotFound, message)
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
        peer: Option<SocketAddr>,
        started: Instant,
    ) -> Response<ResponseBody> {
        let options = &self.options;
        let descriptor = &route.method.descriptor;
        // Every refusal before the stack is logged here, once.
        let refuse = |refusal: Refusal| {
            let error = &refusal.error;
            access_log::record(Protocol::Rest, route.method.path(), peer, error.code, &error.message, started);
            let mut response = response::refused(error, Some(descriptor.parent_pool()));
            if let Some(status) = refusal.status {
                *response.status_mut() = status;
            }
            response
        };
        let (parts, body) = request.into_parts();
        let deadline = match deadline(&parts.headers, options) {
            Ok(timeout) => timeout.map(|t| started + t),
            Err(error) => return refuse(error.into()),
        };
        let format = descriptor.is_server_streaming().then(|| {
            let accept = parts.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
            response::stream_format(accept, options.stream_format)
        });
        let trailers_wanted =
            parts.headers.get(http::header::TE).is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        // Where a client stream's bad line is kept: the call itself is reset by it.
        let request_error = descriptor.is_client_streaming().then(|| Arc::new(std::sync::OnceLock::new()));

        let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let not_json = |content_type: Option<&str>, send: &str| {
            let message = format!("content-type {:?} is not JSON; send {send}", content_type.unwrap_or(""));
            Refusal::with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE, Code::InvalidArgument, message)
        };
        let call_body: Body = if let Some(request_error) = &request_error {
            // Lines of JSON, so a JSON type or none, as for a whole body; refused before the call
            // starts, whether the stream is empty or not (it is not read yet).
            if !is_json(content_type) {
                return refuse(not_json(content_type, "application/x-ndjson"));
            }
            stream::RequestStream::new(body, route.clone(), bound, options.clone(), request_error.clone())
                .boxed_unsync()
        } else {
            let bytes = match read_body(body, &parts.headers, options.max_request_body_size).await {
                Ok(bytes) => bytes,
                Err(refusal) => return refuse(refusal),
            };
            if !bytes.is_empty() && !route.body.is_http_body(&descriptor.input()) && !is_json(content_type) {
                return refuse(not_json(content_type, "application/json"));
            }
            let query = parts.uri.query();
            let message = match request::message(route, &bound, query, &bytes, content_type, options) {
                Ok(message) => message,
                Err(error) => return refuse(error.into()),
            };
            Full::new(framing::encode(&message)).map_err(|never| match never {}).boxed_unsync()
        };
        let call = Call {
            method: route.method.clone(),
            protocol: Protocol::Rest,
            metadata: metadata(&parts.headers, options, peer),
            deadline,
            peer,
            body: call_body,
        };
        let reply = self.stack.clone().oneshot(call).await;
        let response = match (reply, format) {
            // A server stream reports a bad request line itself, in the stream.
            (Ok(reply), Some(format)) => {
                return response::streaming(reply, route, options, format, request_error).await;
            }
            (Ok(reply), None) => response::unary(reply, route, options, trailers_wanted).await,
            (Err(error), _) => response::refused(&error, Some(descriptor.parent_pool())),
        };
        // A bad line of a client stream is the answer, whatever the reset it caused made of the call.
        match request_error.as_deref().and_then(std::sync::OnceLock::get) {
            Some(error) => response::refused(error, Some(descriptor.parent_pool())),
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

/// How much of an oversized body is read and discarded so that the client, still sending, gets
/// the 413 instead of a reset connection. Beyond it the connection is closed.
const DRAIN_LIMIT: u64 = 64 << 20;

/// The whole request body, or the error response: 413 past the limit, whether announced by
/// `Content-Length` or found while reading.
async fn read_body(body: Incoming, headers: &HeaderMap, limit: u64) -> Result<Bytes, Refusal> {
    let too_large = || {
        let message = format!("the request body is larger than the limit of {limit} bytes");
        Refusal::with_status(StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted, message)
    };
    let announced = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        // A client waiting for `100 Continue` has sent nothing yet: answer at once.
        let waiting =
            headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waiting && announced.is_some_and(|n| n <= DRAIN_LIMIT) {
            drain(body).await;
        }
        return Err(too_large());
    }
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    read += data.len() as u64;
                    chunks.push(data);
                }
            }
            Err(e) => {
                let message = format!("the request body could not be read: {e}");
                return Err(Refusal::with_status(StatusCode::BAD_REQUEST, Code::Cancelled, message));
            }
        }
        if read > limit {
            drain(body).await;
            return Err(too_large());
        }
    }
    // One chunk (the usual case) is passed on as it is; several are joined once.
    if chunks.len() == 1 {
        return Ok(chunks.pop().unwrap_or_default());
    }
    let mut joined = Vec::with_capacity(usize::try_from(read).unwrap_or(0));
    for chunk in chunks {
        joined.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(joined))
}

/// Reads and discards up to [`DRAIN_LIMIT`] bytes of a body.
async fn drain(mut body: Incoming) {
    let mut read = 0u64;
    while read <= DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

/// JSON or no content type at all (curl's `-d` sends a form type; that is refused, it is not JSON).
fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence == "application/x-ndjson" || essence.ends_with("+json")
}

/// The call's deadline: `grpc-timeout`, else the configured milliseconds header.
fn deadline(headers: &HeaderMap, options: &RestOptions) -> Result<Option<Duration>, GatewayError> {
    if let Some(timeout) = super::grpc_timeout(headers)? {
        return Ok(Some(timeout));
    }
    let Some(value) = headers.get(&options.timeout_header) else { return Ok(None) };
    let ms: u64 = value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
        GatewayError::new(
            Code::InvalidArgument,
            Origin::Client,
            format!("{}: expected a whole number of milliseconds, got {value:?}", options.timeout_header),
        )
    })?;
    Ok(Some(Duration::from_millis(ms)))
}

/// Hop-by-hop headers (RFC 9110 7.6.1) never become metadata, whatever the config says.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "host"];

/// The request headers that become gRPC metadata: the configured ones, those with the metadata
/// prefix (without it), and `X-Forwarded-For`/`Forwarded` with this hop added.
fn metadata(headers: &HeaderMap, options: &RestOptions, peer: Option<SocketAddr>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in &options.forward_headers {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        for value in headers.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    for (name, value) in headers {
        let Some(stripped) = name.as_str().strip_prefix(options.metadata_header_prefix.as_str()) else { continue };
        if stripped.is_empty() || stripped.starts_with("grpc-") || HOP_BY_HOP.contains(&stripped) {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(stripped.as_bytes()) {
            out.append(name, value.clone());
        }
    }
    if let Some(peer) = peer {
        let ip = peer.ip().to_string();
        let append = |name: &str, node: &str| {
            let chain = match headers.get(name).and_then(|v| v.to_str().ok()) {
                Some(prior) => HeaderValue::from_str(&format!("{prior}, {node}")),
                None => HeaderValue::from_str(node),
            };
            chain.ok()
        };
        if let Some(value) = append("x-forwarded-for", &ip) {
            out.insert("x-forwarded-for", value);
        }
        // RFC 7239: IPv6 addresses are quoted and bracketed.
        let node = if peer.is_ipv6() { format!("for=\"[{ip}]\"") } else { format!("for={ip}") };
        if let Some(value) = append("forwarded", &node) {
            out.insert("forwarded", value);
        }
    }
    out
}
