//! The WebSocket frontend: gRPC methods of every kind for browsers, one call per socket at the
//! method's path, or many calls with ids on the multiplexed socket (README, "WebSocket").
//!
//! The handshake is answered here, in the request's task ([`handshake`]); the socket then runs
//! in a task of its own on the worker, holding its connection's place in the server's limits
//! ([`Lease`]) until it closes. Calls go through the same policy stack as every other frontend
//! ([`exchange`]); messages are mapped by the REST frontend's JSON code ([`frames`]).
//!
//! # Limitations
//! - HTTP/1.1 upgrades only: WebSocket over HTTP/2 (RFC 8441) is not offered; browsers use it
//!   only over TLS, which the listener does not speak yet.
//! - No compression (permessage-deflate is not negotiated).

mod exchange;
mod frames;
mod handshake;
mod mux;
mod single;
mod socket;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::task::TaskTracker;
use tonic::Code;

use super::{Peer, ResponseBody};
use crate::call::Protocol;
use crate::config::{RestOptions, WebSocketOptions};
use crate::error::{GatewayError, Origin};
use crate::frontends::rest::error::error_response;
use crate::observe::access_log;
use crate::stack::Stack;
pub use handshake::is_upgrade;

/// The WebSocket frontend of one worker: the stack its calls go through, and its settings.
#[derive(Clone)]
pub struct WebSocketFrontend {
    pub stack: Stack,
    pub options: Arc<WebSocketOptions>,
    pub rest: Arc<RestOptions>,
}

/// Takes a slot under the server's `max_calls_in_flight` for one more call (None: at the
/// limit); the slot is freed when what it returns is dropped.
pub type Admit = Arc<dyn Fn() -> Option<Box<dyn Send + Sync>> + Send + Sync>;

/// The REST tables of the current snapshot, and the policy stack of the current config: the
/// multiplexed socket loads both for each call it starts, so a reload changes what later calls
/// find and where they go (a stack of the config the socket opened under knows only its rules).
pub type Current = Arc<dyn Fn() -> (Arc<crate::frontends::rest::Tables>, crate::stack::Stack) + Send + Sync>;

/// What an open socket holds on to after its request has been answered.
pub struct Lease {
    /// The server's accounting of the socket's connection and call (`max_connections`,
    /// `max_calls_in_flight`), released when the socket closes.
    pub hold: Box<dyn Send + Sync>,
    /// Turns true when the gateway stops: open sockets end their calls with UNAVAILABLE.
    pub stopping: watch::Receiver<bool>,
    /// The worker's tasks, which the gateway drains before it exits.
    pub tasks: TaskTracker,
    /// Slots for the multiplexed socket's calls (the socket's own slot covers one call).
    pub admit: Admit,
}

/// What the socket at a path carries.
enum Target {
    /// One call of the method the path names.
    Single(Arc<crate::frontends::rest::routes::Route>, crate::frontends::rest::routes::Bound),
    /// Many calls, each naming its method.
    Multiplexed,
}

impl WebSocketFrontend {
    /// Answers an upgrade request: `101` and the socket's task, or the refusal as a JSON error.
    pub async fn serve(
        &self,
        mut request: Request<Incoming>,
        current: Current,
        peer: &Peer,
        lease: Lease,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let refuse = |status: StatusCode, error: GatewayError| {
            access_log::unrouted(Protocol::WebSocket, &path, Some(peer.address), error.code, &error.message, started);
            let mut response = error_response(&error.to_status(), None);
            *response.status_mut() = status;
            handshake::add_version(&mut response);
            response
        };
        let accepted = match handshake::accept(&request, &self.options.allow_origins) {
            Ok(accepted) => accepted,
            Err(refused) => return refuse(refused.status, refused.error),
        };
        let target = if path == self.options.multiplex_path {
            if accepted.mode == handshake::Mode::Proto {
                let message = format!("the multiplexed socket speaks JSON ({}) only", handshake::JSON_PROTOCOL);
                return refuse(
                    StatusCode::BAD_REQUEST,
                    GatewayError::new(Code::InvalidArgument, Origin::Client, message),
                );
            }
            Target::Multiplexed
        } else {
            match current().0.routes.find_any(&path) {
                Some((route, bound)) => Target::Single(route.clone(), bound),
                None => {
                    let message = format!("no method at {path} to open a WebSocket on");
                    return refuse(StatusCode::NOT_FOUND, GatewayError::new(Code::NotFound, Origin::Client, message));
                }
            }
        };
        let metadata = match self.metadata(&request, peer, accepted.bearer.clone()) {
            Ok(metadata) => metadata,
            Err(error) => return refuse(StatusCode::BAD_REQUEST, error),
        };
        let timeout = match super::deadline(request.headers(), &self.rest) {
            Ok(timeout) => timeout,
            Err(error) => return refuse(StatusCode::BAD_REQUEST, error),
        };
        let response = handshake::switching(&accepted);
        let upgrade = hyper::upgrade::on(&mut request);
        let this = self.clone();
        let client = peer.client.clone();
        let peer = peer.address;
        let Lease { hold, stopping, tasks, admit } = lease;
        tasks.spawn(async move {
            let _hold = hold;
            let upgraded = match upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => return tracing::debug!(%peer, error = %e, "the WebSocket upgrade did not complete"),
            };
            let _open = crate::observe::metrics::Open::WebSocket.count();
            let config = this.socket_config();
            let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
            let proto = accepted.mode == handshake::Mode::Proto;
            match target {
                Target::Single(route, bound) => {
                    let descriptor = &route.method.descriptor;
                    let session = single::Session {
                        start: exchange::Start {
                            stack: this.stack.clone(),
                            method: route.method.clone(),
                            metadata,
                            deadline: timeout.and_then(|t| started.checked_add(t)),
                            peer,
                            client,
                        },
                        replies: Arc::new(frames::Replies {
                            output: descriptor.output(),
                            holds_any: route.reply_holds_any,
                            print: this.rest.print,
                            proto,
                        }),
                        requests: Arc::new(frames::Requests { route, bound, rest: this.rest.clone() }),
                        options: this.options.clone(),
                        stopping,
                    };
                    single::run(socket, session).await;
                }
                Target::Multiplexed => {
                    let session = mux::Session { frontend: this, current, metadata, peer, client, stopping, admit };
                    mux::run(socket, session).await;
                }
            }
        });
        response
    }

    /// tungstenite's settings: small buffers (thousands of sockets stay open, mostly quiet), no
    /// write buffering beyond one frame (the writer flushes batches itself), and the message
    /// limit applied to frames and messages both.
    fn socket_config(&self) -> WebSocketConfig {
        let max = self.options.max_message_size as usize;
        WebSocketConfig::default()
            .read_buffer_size(4 << 10)
            .write_buffer_size(0)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }

    /// The call's metadata: the request's headers as REST reads them, `?metadata.<name>=<value>`
    /// query parameters (pages cannot set headers on a WebSocket), and a bearer token offered as
    /// a subprotocol, unless the request has its own `authorization`.
    fn metadata<B>(
        &self,
        request: &Request<B>,
        peer: &Peer,
        bearer: Option<HeaderValue>,
    ) -> Result<HeaderMap, GatewayError> {
        let mut metadata = super::metadata::from_headers(request.headers(), request.uri().query(), &self.rest, peer)?;
        for pair in request.uri().query().unwrap_or_default().split('&') {
            let Some((name, value)) = pair.split_once('=') else { continue };
            let Some(name) = name.strip_prefix("metadata.") else { continue };
            add_metadata(&mut metadata, &decode(name), &decode(value))?;
        }
        if let Some(bearer) = bearer
            && !metadata.contains_key(http::header::AUTHORIZATION)
        {
            metadata.insert(http::header::AUTHORIZATION, bearer);
        }
        Ok(metadata)
    }
}

/// Adds metadata a client wrote into a URL or an envelope. It may not add to what is set already
/// (by the request's headers, which a proxy in front may have written), nor name the forwarding
/// headers this hop writes: such values could pose as the proxy's or the hop's. gRPC's and
/// framing names are dropped, as from headers.
fn add_metadata(metadata: &mut HeaderMap, name: &str, value: &str) -> Result<(), GatewayError> {
    let bad =
        |what: &str| GatewayError::new(Code::InvalidArgument, Origin::Client, format!("metadata {name:?}: {what}"));
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("not a metadata name"))?;
    let value = HeaderValue::from_str(value).map_err(|_| bad("not a metadata value"))?;
    if name == http::header::FORWARDED || name.as_str().starts_with("x-forwarded-") || name == "x-real-ip" {
        return Err(bad("a forwarding header: set by proxies and this hop, not by clients"));
    }
    if metadata.contains_key(&name) {
        return Err(bad("already set for this socket (by its request's headers or query)"));
    }
    if super::metadata::check(&name, &value)? {
        metadata.append(name, value);
    }
    Ok(())
}

/// A query component decoded (`+` is a space, as in forms).
fn decode(text: &str) -> String {
    let text = text.replace('+', " ");
    percent_encoding::percent_decode_str(&text).decode_utf8_lossy().into_owned()
}
