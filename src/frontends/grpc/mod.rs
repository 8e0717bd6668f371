//! The native gRPC frontend: passthrough to backends (and to the services the gateway answers
//! itself, health and reflection, which go through the same stack: see `builtin`).
//!
//! Requests are classified by path ([`Target`]); calls to loaded methods become a
//! [`Call`] whose body is the client's frames as they are — no decode, no re-encode. Metadata,
//! compression flags (`grpc-encoding`) and trailers pass both ways; `grpc-timeout` becomes the
//! call's deadline.
//!
//! # Limitations
//! - gRPC-Web and Connect are not handled here (a later frontend).
//! - Reflection lists every loaded service, whether or not a backend serves it.

mod body;

use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::ServiceExt;

use super::{Peer, ResponseBody};
use crate::call::{Call, Protocol};
use crate::catalog::{Catalog, Lookup, MethodRoute};
use crate::error::{GatewayError, Origin};
use crate::observe::access_log;
use crate::stack::Stack;
use body::{ReplyBody, RequestBody};

/// True for gRPC requests (`application/grpc`, `application/grpc+proto`, ...), not gRPC-Web.
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        ct == "application/grpc" || ct.starts_with("application/grpc+") || ct.starts_with("application/grpc;")
    })
}

/// The gRPC frontend: the stack calls go through.
#[derive(Clone)]
pub struct GrpcFrontend {
    pub stack: Stack,
    /// The largest message passed either way (`server.max_message_size`).
    pub max_message_size: u32,
}

/// What a gRPC request is for.
enum Target {
    /// A loaded or built-in method: through the policy stack.
    Method(Arc<MethodRoute>),
    /// Refused before any backend is involved (gRPC: unknown service or method is UNIMPLEMENTED).
    Refused(GatewayError),
}

impl GrpcFrontend {
    pub async fn serve(&self, request: Request<Incoming>, catalog: &Catalog, peer: &Peer) -> Response<ResponseBody> {
        let started = Instant::now();
        let target = if request.version() == http::Version::HTTP_2 {
            classify(request.uri().path(), catalog)
        } else {
            // gRPC over HTTP/2 needs HTTP/2 (trailers); a Trailers-Only answer still reaches an
            // HTTP/1.1 client.
            Target::Refused(GatewayError::new(
                Code::Unimplemented,
                Origin::Client,
                "gRPC needs HTTP/2; this request came over HTTP/1.x",
            ))
        };
        match target {
            // gRPC over HTTP/2: the call is forwarded frame by frame.
            Target::Method(method) => self.forward(request, method, peer, started).await,
            // gRPC over HTTP/2: errors before a response are a Trailers-Only response.
            Target::Refused(error) => {
                access_log::unrouted(
                    Protocol::Grpc,
                    request.uri().path(),
                    Some(peer.address),
                    error.code,
                    &error.message,
                    started,
                );
                trailers_only(error.to_status())
            }
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        method: Arc<MethodRoute>,
        peer: &Peer,
        started: Instant,
    ) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let deadline = match super::grpc_timeout(&parts.headers) {
            Ok(timeout) => timeout.map(|t| started + t),
            Err(error) => {
                access_log::refused(Protocol::Grpc, &method, Some(peer.address), error.code, &error.message, started);
                return trailers_only(error.to_status());
            }
        };
        let request_error = body::RequestError::default();
        let body = RequestBody::new(body, self.max_message_size, request_error.clone()).boxed_unsync();
        let call = Call {
            method,
            protocol: Protocol::Grpc,
            metadata: metadata(parts.headers, peer),
            deadline,
            peer: Some(peer.address),
            client: peer.client.clone(),
            extensions: http::Extensions::new(),
            body,
        };
        match self.stack.clone().oneshot(call).await {
            Ok(reply) => {
                let body = ReplyBody::new(reply.body, self.max_message_size, request_error);
                let mut response = Response::new(body.boxed_unsync());
                *response.headers_mut() = reply.metadata;
                response.headers_mut().entry(CONTENT_TYPE).or_insert(HeaderValue::from_static("application/grpc"));
                response
            }
            // The request's own fault, if it had one, over what the backend made of the reset.
            Err(error) => trailers_only(request_error.get().unwrap_or(&error).to_status()),
        }
    }
}

fn classify(path: &str, catalog: &Catalog) -> Target {
    let refuse = |message: String| Target::Refused(GatewayError::new(Code::Unimplemented, Origin::Client, message));
    match catalog.lookup(path) {
        Lookup::Method(route) => Target::Method(route.clone()),
        Lookup::UnknownMethod { service, method } => refuse(format!("unknown method {method} for service {service}")),
        Lookup::UnknownService { service } => refuse(format!("unknown service {service}")),
        Lookup::Malformed => refuse(format!("malformed gRPC path {path:?}: expected /package.Service/Method")),
    }
}

/// The client's headers as call metadata: all of them (compression and other `grpc-` headers
/// pass end to end) but the framing headers each hop sets for itself — except the gRPC content
/// type, which names the message encoding — and `grpc-timeout`, which became the deadline; plus
/// this hop in `X-Forwarded-For` and `Forwarded`.
fn metadata(mut headers: HeaderMap, peer: &Peer) -> HeaderMap {
    let content_type = headers.remove(CONTENT_TYPE);
    let mut forwarded = HeaderMap::new();
    super::metadata::add_forwarded(&headers, &mut forwarded, peer);
    let dropped = [&crate::call::GRPC_TIMEOUT, &super::metadata::X_FORWARDED_CLIENT_CERT];
    for name in crate::call::FRAMING_HEADERS.iter().chain(dropped) {
        headers.remove(name);
    }
    headers.extend(forwarded);
    if let Some(content_type) = content_type {
        headers.insert(CONTENT_TYPE, content_type);
    }
    headers
}

/// A Trailers-Only response: the status in the headers, no body.
pub fn trailers_only(status: Status) -> Response<ResponseBody> {
    status.into_http()
}
