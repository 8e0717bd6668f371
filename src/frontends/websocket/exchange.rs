//! One call over a socket: its request messages go into a small channel that is the call's body,
//! and a pump writes its reply — headers, then each message — into the socket's queue, returning
//! the final status for the socket to send. A full channel stops the socket's reader and a full
//! queue stops the pump, so nothing piles up either way.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tonic::Status;
use tower::ServiceExt;

use super::frames::Replies;
use super::socket::Clocks;
use crate::call::{Call, Next, Protocol, next};
use crate::catalog::MethodRoute;
use crate::error::GatewayError;
use crate::stack::Stack;
use crate::transcode::framing::Deframer;

/// Request messages a call has been given but its backend has not read yet.
const BACKLOG: usize = 2;

/// The request side of a call: where its messages go.
pub(super) type Requests = mpsc::Sender<Result<Bytes, GatewayError>>;

/// A call's body: the messages the socket's reader sends, framed; an error resets the call.
struct ChannelBody(mpsc::Receiver<Result<Bytes, GatewayError>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = GatewayError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, GatewayError>>> {
        self.0.poll_recv(cx).map(|message| message.map(|m| m.map(Frame::data)))
    }
}

/// What a call needs besides its messages.
pub(super) struct Start {
    pub stack: Stack,
    pub method: Arc<MethodRoute>,
    pub metadata: HeaderMap,
    pub deadline: Option<Instant>,
    pub peer: std::net::SocketAddr,
    pub client: Option<Arc<crate::call::ClientIdentity>>,
}

/// Starts a call: its request side, and the future that pumps its reply into `queue` and
/// resolves to its final status and trailers. Dropping the future cancels the call.
pub(super) fn start(
    start: Start,
    replies: Arc<Replies>,
    id: Option<Arc<str>>,
    queue: mpsc::Sender<Message>,
    clocks: Arc<Clocks>,
    max_message_size: u32,
) -> (Requests, impl Future<Output = (Status, HeaderMap)> + Send + 'static) {
    let (requests, receiver) = mpsc::channel(BACKLOG);
    let call = Call {
        method: start.method,
        protocol: Protocol::WebSocket,
        metadata: start.metadata,
        deadline: start.deadline,
        peer: Some(start.peer),
        client: start.client,
        extensions: http::Extensions::new(),
        body: ChannelBody(receiver).boxed_unsync(),
    };
    let pump = async move {
        let reply = match start.stack.oneshot(call).await {
            Ok(reply) => reply,
            Err(error) => return (error.to_status(), HeaderMap::new()),
        };
        let id = id.as_deref();
        // A call that failed at once (gRPC's Trailers-Only) has no headers: only its status.
        let answered = reply.early_status.is_none();
        if answered && queue.send(super::frames::headers(id, &reply.metadata)).await.is_err() {
            return (Status::cancelled("the socket closed"), HeaderMap::new());
        }
        let mut body = reply.body;
        let mut deframer = Deframer::new(max_message_size);
        loop {
            match next(&mut body, &mut deframer).await {
                Next::Message(message) => {
                    let frame = match replies.frame(id, message).await {
                        Ok(frame) => frame,
                        Err(status) => return (status, HeaderMap::new()),
                    };
                    if queue.send(frame).await.is_err() {
                        return (Status::cancelled("the socket closed"), HeaderMap::new());
                    }
                    clocks.message();
                }
                Next::End(status, trailers) => return (status, trailers),
            }
        }
    };
    (requests, pump)
}
