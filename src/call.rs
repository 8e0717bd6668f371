//! `Call` and `Reply`: one gRPC call as the protocol-blind core sees it.
//!
//! Messages cross the core as gRPC wire bytes — length-prefixed messages, each with its
//! compression flag — in an HTTP body whose trailers carry the final `grpc-status`. Native gRPC
//! therefore passes through without a decode, while the transcoding frontends frame and deframe
//! at the edge. A policy that needs a field decodes lazily.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::time::Instant;

use crate::catalog::MethodRoute;
use crate::error::GatewayError;

/// A stream of gRPC-framed messages; trailers carry the status.
pub type Body = UnsyncBoxBody<Bytes, GatewayError>;

/// Which client protocol a call arrived on. Policies may read it; none should need to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Rest,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Rest => "rest",
        }
    }
}

/// One call on its way to a backend.
pub struct Call {
    /// The method, its service and the config rule that routes it, from the catalog snapshot the
    /// call started on.
    pub method: Arc<MethodRoute>,
    pub protocol: Protocol,
    /// Custom request metadata (never hop-by-hop or gRPC framing headers).
    pub metadata: HeaderMap,
    /// When the call must have finished; the upstream passes the remainder on as `grpc-timeout`.
    pub deadline: Option<Instant>,
    pub peer: Option<SocketAddr>,
    /// The request messages, gRPC-framed.
    pub body: Body,
}

/// Headers that frame one HTTP hop, never call metadata (RFC 9110 7.6.1's hop-by-hop headers,
/// and the length and type of the body): each hop sets its own, so a client must not set them
/// for the backend, nor a backend for the client.
pub const FRAMING_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "content-length",
    "content-type",
];

pub fn is_framing_header(name: &str) -> bool {
    FRAMING_HEADERS.contains(&name)
}

/// Trailers carrying a final status (`grpc-status`, `grpc-message` percent-encoded,
/// `grpc-status-details-bin`), as gRPC over HTTP/2 writes them.
pub fn status_trailers(status: &tonic::Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        trailers.insert("grpc-status", (tonic::Code::Internal as i32).into());
    }
    trailers
}

/// A backend's answer: response metadata, then messages, then the status in the body's trailers.
pub struct Reply {
    pub metadata: HeaderMap,
    pub body: Body,
}
