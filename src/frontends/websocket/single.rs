//! A socket opened at a method's path: one call, from the upgrade to the close.
//!
//! One task runs the socket: the reader passes the client's frames to the call, the call's pump
//! writes the reply, and the keep-alive, the idle timeout and the gateway's shutdown can each end
//! it. Whichever ends first decides the call's status; the socket then sends that status and its
//! close. A client that closes (or breaks) the socket cancels the call: dropping the pump resets
//! the backend's stream.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use http::HeaderMap;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tonic::{Code, Status};

use super::exchange::{self, Requests, Start};
use super::frames::{self, Replies};
use super::socket::{self, Clocks, Socket};
use crate::config::WebSocketOptions;
use crate::error::{GatewayError, Origin};

/// Everything one call's socket needs.
pub(super) struct Session {
    pub start: Start,
    pub requests: Arc<frames::Requests>,
    pub replies: Arc<Replies>,
    pub options: Arc<WebSocketOptions>,
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// How the socket's call ended.
enum Ended {
    /// With this status (the backend's, or the gateway's: a bad frame, idle, shutting down).
    Status(Status, HeaderMap),
    /// The client went away: nobody to tell.
    Gone,
}

pub(super) async fn run(socket: Socket, session: Session) {
    let Session { start, requests, replies, options, mut stopping } = session;
    let stall = options.stall();
    let pool = start.method.descriptor.parent_pool().clone();
    let one_message = !start.method.descriptor.is_client_streaming();
    let (sink, mut stream) = socket.split();
    let (queue, outgoing) = mpsc::channel(socket::QUEUE);
    let clocks = Arc::new(Clocks::new());
    let max = options.max_message_size;
    let (call_requests, pump) = exchange::start(start, replies, None, queue.clone(), clocks.clone(), max);
    let writer_clocks = clocks.clone();
    let reader = &mut stream;
    // Owns `queue`: when the session ends, the writer sees the queue close and stops.
    let session = async move {
        let ended = tokio::select! {
            (status, trailers) = pump => Ended::Status(status, trailers),
            ended = read(reader, call_requests, &requests, one_message, &clocks, max) => ended,
            () = clocks.keepalive(&queue, options.ping_interval) => Ended::Gone,
            // The writer gave up on the client (a stalled write, or a broken connection).
            () = queue.closed() => Ended::Gone,
            () = clocks.idle(options.idle_timeout) => Ended::Status(idle(&options), HeaderMap::new()),
            () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                Ended::Status(Status::unavailable("the gateway is shutting down"), HeaderMap::new())
            }
        };
        let Ended::Status(status, trailers) = ended else { return false };
        let _ = queue.send(frames::status(None, &status, &trailers, Some(&pool))).await;
        // Waiting for the client's close only makes sense if ours went out.
        queue.send(frames::close(&status)).await.is_ok()
    };
    let ((), closing) = tokio::join!(socket::write(sink, outgoing, &writer_clocks, stall), session);
    if closing {
        socket::await_close(&mut stream).await;
    }
}

fn idle(options: &WebSocketOptions) -> Status {
    Status::deadline_exceeded(format!("no message either way for {:?} (websocket.idle_timeout)", options.idle_timeout))
}

/// Passes the client's frames to the call until the client goes away or sends something the
/// call cannot take. Waits for room in the call before reading the next frame: a backend that
/// reads slowly slows the client down.
async fn read(
    stream: &mut SplitStream<Socket>,
    call: Requests,
    requests: &Arc<frames::Requests>,
    one_message: bool,
    clocks: &Clocks,
    max_message_size: u32,
) -> Ended {
    let failed = |error: GatewayError| Ended::Status(error.to_status(), HeaderMap::new());
    let mut sender = Some(call);
    // The client ended its side: by a half-close, or by the one message of a unary or
    // server-streaming method.
    let mut ended_by_client = false;
    loop {
        clocks.paused();
        let permit = match sender.take() {
            Some(sender) => sender.reserve_owned().await.ok(),
            None => None,
        };
        clocks.reading();
        let frame = match stream.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(WsError::Capacity(e))) => {
                let message = format!("{e} (websocket.max_message_size is {max_message_size})");
                return failed(GatewayError::new(Code::ResourceExhausted, Origin::Client, message));
            }
            Some(Err(_)) | None => return Ended::Gone,
        };
        let framed = match frame {
            // The empty text frame half-closes: no JSON message is empty.
            Message::Text(text) if text.is_empty() => {
                ended_by_client = true;
                continue;
            }
            Message::Text(text) => requests.json(text.into()).await,
            Message::Binary(bytes) => requests.proto(&bytes),
            Message::Close(_) => return Ended::Gone,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                sender = permit.map(mpsc::OwnedPermit::release);
                continue;
            }
        };
        let framed = match framed {
            Ok(framed) => framed,
            Err(error) => return failed(error),
        };
        clocks.message();
        match permit {
            Some(permit) if !ended_by_client => {
                let sender_back = permit.send(Ok(framed));
                if one_message {
                    ended_by_client = true;
                } else {
                    sender = Some(sender_back);
                }
            }
            _ if ended_by_client => {
                let message = if one_message {
                    "this method takes one request message; the socket sent another"
                } else {
                    "a message came after the half-close (the empty text frame)"
                };
                return failed(GatewayError::new(Code::InvalidArgument, Origin::Client, message));
            }
            // The call no longer reads requests (its backend has answered): nothing to do.
            _ => {}
        }
    }
}
