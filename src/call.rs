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
use http::header::{self, HeaderName};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::time::Instant;
use tonic::Status;

use crate::catalog::MethodRoute;
use crate::error::GatewayError;
use crate::transcode::framing::Deframer;

/// A stream of gRPC-framed messages; trailers carry the status.
pub type Body = UnsyncBoxBody<Bytes, GatewayError>;

/// Which client protocol a call arrived on. Policies may read it; none should need to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Rest,
    WebSocket,
    Soap,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Rest => "rest",
            Protocol::WebSocket => "websocket",
            Protocol::Soap => "soap",
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
    /// The client's verified certificate, when it connected with mutual TLS.
    pub client: Option<Arc<ClientIdentity>>,
    /// What a layer learned for the layers below it (the caller's verified identity, say).
    pub extensions: http::Extensions,
    /// The request messages, gRPC-framed.
    pub body: Body,
}

/// Who a client is by its certificate, verified in the TLS handshake against the listener's
/// client CAs (`tls.client_ca_file`): for the policies, and for the backend in
/// `x-forwarded-client-cert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject's distinguished name, e.g. `CN=billing, O=Example`.
    pub subject: String,
    /// The DNS names among its subject alternative names.
    pub dns_names: Vec<String>,
    /// The URIs among its subject alternative names (a SPIFFE ID, say).
    pub uris: Vec<String>,
    /// SHA-256 of the certificate (DER), lower-case hex: names this exact certificate.
    pub hash: String,
}

/// The backends a call's earlier attempts went to (`host:port`), shared by its attempts: the
/// retry layer puts it in the call's extensions, the upstream adds the backend it picks and, while
/// another can take the call, passes these over.
#[derive(Debug, Clone, Default)]
pub struct TriedBackends(pub Arc<std::sync::Mutex<Vec<String>>>);

impl TriedBackends {
    pub fn add(&self, backend: &str) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(backend.to_owned());
    }

    pub fn list(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// gRPC's own header names, parsed once.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Headers that frame one HTTP hop, never call metadata (RFC 9110 7.6.1's hop-by-hop headers,
/// and the length and type of the body): each hop sets its own, so a client must not set them
/// for the backend, nor a backend for the client. Names, not strings: removing them costs a hash,
/// not a parse.
pub static FRAMING_HEADERS: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
];

pub fn is_framing_header(name: &HeaderName) -> bool {
    FRAMING_HEADERS.contains(name)
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
    /// The status, when it came with the response's headers (gRPC's Trailers-Only): the body
    /// then holds nothing but the trailers. A frontend can answer without reading the body.
    pub early_status: Option<tonic::Status>,
}

impl Reply {
    /// A gRPC response's headers and body as a reply. A Trailers-Only response (the status in its
    /// one header block) becomes an empty body ending with that block as its trailers, so that
    /// every reply ends the same way; the framing headers of the backend's hop stay behind.
    pub fn from_grpc(mut headers: HeaderMap, body: Body) -> Reply {
        for name in FRAMING_HEADERS.iter().filter(|n| **n != header::CONTENT_TYPE) {
            headers.remove(name);
        }
        if !headers.contains_key(&GRPC_STATUS) {
            return Reply { metadata: headers, body, early_status: None };
        }
        // gRPC over HTTP/2: everything but the content type belongs to the trailers.
        let content_type = headers.remove(http::header::CONTENT_TYPE);
        let trailers = std::mem::take(&mut headers);
        if let Some(content_type) = content_type {
            headers.insert(http::header::CONTENT_TYPE, content_type);
        }
        let early_status = tonic::Status::from_header_map(&trailers);
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .with_trailers(std::future::ready(Some(Ok(trailers))))
            .boxed_unsync();
        Reply { metadata: headers, body, early_status }
    }
}

/// Status of a finished call from its trailers.
fn trailer_status(trailers: &HeaderMap) -> Status {
    Status::from_header_map(trailers).unwrap_or_else(|| Status::internal("the backend ended the call without a status"))
}

/// What comes next in a reply.
pub enum Next {
    Message(Bytes),
    End(Status, HeaderMap),
}

/// Reads a reply until a whole message is buffered or the call ends. The status of a reply that
/// breaks off or ends without one is INTERNAL, saying why.
pub async fn next(body: &mut Body, deframer: &mut Deframer) -> Next {
    loop {
        match deframer.next_message() {
            Ok(Some(message)) => return Next::Message(message),
            Ok(None) => {}
            Err(e) => return Next::End(Status::internal(format!("the backend's response: {e}")), HeaderMap::new()),
        }
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => deframer.push(data),
                Err(frame) => {
                    let trailers = frame.into_trailers().unwrap_or_default();
                    return Next::End(trailer_status(&trailers), trailers);
                }
            },
            Some(Err(e)) => return Next::End(e.to_status(), HeaderMap::new()),
            None => {
                let status = match deframer.finish() {
                    Ok(()) => Status::internal("the backend ended the call without a status"),
                    Err(e) => Status::internal(e.to_string()),
                };
                return Next::End(status, HeaderMap::new());
            }
        }
    }
}
