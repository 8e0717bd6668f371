//! The multiplexed socket: many calls on one socket, each message a JSON envelope with the call's
//! id (README, "Many calls on one socket").
//!
//! The client sends `{"id", "call": "/pkg.Service/Method", "metadata"?, "timeout_ms"?,
//! "message"?, "end"?}` to start a call, `{"id", "message"}` for each further message,
//! `{"id", "end": true}` to half-close and `{"id", "cancel": true}` to cancel. The gateway answers
//! with the single socket's `headers`, `result` and `status` frames, each with the call's `id`.
//! A call's status is its last frame; the socket stays open for the next calls.
//!
//! Each call runs as a task of its own: a slow reply pump holds back only its own call. Requests
//! are passed on in the order they arrive: the reader stops reading while a call's backend is not
//! taking its messages, so a backend that stops reading holds back the requests of every call on
//! the socket, cancels included (head-of-line), never the gateway's memory; the call's end (its
//! deadline, its backend's answer) releases them. Each call counts under the server's
//! `max_calls_in_flight`, as a call of any other protocol does.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, Id, JoinSet};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::WebSocketFrontend;
use super::exchange::{self, Requests, Start};
use super::frames::{self, Replies};
use super::socket::{self, Clocks, Socket};

/// Everything a multiplexed socket needs.
pub(super) struct Session {
    pub frontend: WebSocketFrontend,
    pub current: super::Current,
    /// Metadata from the upgrade request, which every call on the socket carries.
    pub metadata: HeaderMap,
    pub peer: SocketAddr,
    pub client: Option<Arc<crate::call::ClientIdentity>>,
    pub stopping: watch::Receiver<bool>,
    /// A slot under the server's `max_calls_in_flight`, held by each call.
    pub admit: super::Admit,
}

/// One frame from the client.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: &'a RawValue,
    call: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    timeout_ms: Option<u64>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(default)]
    end: bool,
    #[serde(default)]
    cancel: bool,
}

/// A call in progress, as the socket's reader sees it.
struct Open {
    /// Where its messages go; `None` once the client has ended its side.
    requests: Option<Requests>,
    one_message: bool,
    frames: Arc<frames::Requests>,
    /// Its task: to stop it, and to tell it from a newer call with the same id.
    task: AbortHandle,
    /// Cancelled when its task ends: a message waiting for room in a call that has ended is
    /// dropped instead of waiting for ever.
    ended: CancellationToken,
    pool: prost_reflect::DescriptorPool,
}

/// A message on its way into a call whose backend has no room for it yet: the socket reads
/// nothing more until it has gone in (or the call has ended).
type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The socket's calls and the tasks that pump their replies.
struct Calls {
    open: HashMap<Arc<str>, Open>,
    tasks: JoinSet<(Status, HeaderMap)>,
    /// Task ids to call ids, for the tasks still running.
    ids: HashMap<Id, Arc<str>>,
}

pub(super) async fn run(socket: Socket, session: Session) {
    let (sink, mut stream) = socket.split();
    let (queue, outgoing) = mpsc::channel(socket::QUEUE);
    let clocks = Arc::new(Clocks::new());
    let stall = session.frontend.options.stall();
    let mux = Mux { session, queue, clocks: clocks.clone() };
    let reader = &mut stream;
    // Owns the queue's senders (the calls' are dropped with them): when the socket is done, the
    // writer sees the queue close and stops.
    let serve = async move { mux.serve(reader).await };
    let ((), closing) = tokio::join!(socket::write(sink, outgoing, &clocks, stall), serve);
    if closing {
        socket::await_close(&mut stream).await;
    }
}

struct Mux {
    session: Session,
    queue: mpsc::Sender<Message>,
    clocks: Arc<Clocks>,
}

/// Waits for the pending message, if there is one (else for ever: the branch is off then).
async fn wait(pending: &mut Option<Pending>) {
    match pending {
        Some(pending) => pending.await,
        None => std::future::pending().await,
    }
}

impl Mux {
    /// Runs the socket until the client leaves (false) or the gateway closes it (true).
    async fn serve(self, stream: &mut futures_util::stream::SplitStream<Socket>) -> bool {
        let options = self.session.frontend.options.clone();
        let mut stopping = self.session.stopping.clone();
        let mut calls = Calls { open: HashMap::new(), tasks: JoinSet::new(), ids: HashMap::new() };
        let keepalive = self.clocks.keepalive(&self.queue, options.ping_interval);
        tokio::pin!(keepalive);
        let mut idle = Box::pin(self.clocks.idle(options.idle_timeout));
        let mut pending: Option<Pending> = None;
        self.clocks.reading();
        loop {
            tokio::select! {
                frame = stream.next(), if pending.is_none() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(WsError::Capacity(e))) => {
                            let why = format!("{e} (websocket.max_message_size is {})", options.max_message_size);
                            return self.close(&mut calls, CloseCode::Size, &why).await;
                        }
                        Some(Err(_)) | None => return false,
                    };
                    match frame {
                        Message::Text(text) => pending = self.envelope(&mut calls, text.as_str()).await,
                        Message::Binary(_) => {
                            let why = "the multiplexed socket takes JSON envelopes in text frames";
                            self.send(frames::status(None, &Status::invalid_argument(why), &HeaderMap::new(), None)).await;
                        }
                        Message::Close(_) => return false,
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                    if pending.is_none() {
                        self.clocks.reading();
                    }
                }
                () = wait(&mut pending), if pending.is_some() => {
                    pending = None;
                    self.clocks.reading();
                }
                Some(joined) = calls.tasks.join_next_with_id(), if !calls.tasks.is_empty() => {
                    let (task, (status, trailers)) = match joined {
                        Ok(done) => done,
                        // A call that panicked; one that was aborted has had its status already.
                        Err(e) if e.is_panic() => (e.id(), (Status::internal("the call failed in the gateway"), HeaderMap::new())),
                        Err(_) => continue,
                    };
                    let Some(id) = calls.ids.remove(&task) else { continue };
                    if let Some(open) = calls.open.remove(&id) {
                        self.send(frames::status(Some(&id), &status, &trailers, Some(&open.pool))).await;
                    }
                }
                () = &mut keepalive => return false,
                // The writer gave up on the client (a stalled write, or a broken connection).
                () = self.queue.closed() => return false,
                () = &mut idle => {
                    // A socket held up by a call that takes no messages cannot hear the client
                    // either: after an idle period without a message either way, it closes too.
                    if calls.open.is_empty() || pending.is_some() {
                        let what = if calls.open.is_empty() { "no call" } else { "no message either way" };
                        let why = format!("{what} for {:?} (websocket.idle_timeout)", options.idle_timeout);
                        return self.close(&mut calls, CloseCode::Normal, &why).await;
                    }
                    // Open calls keep the socket; their deadlines are theirs. Counted from now.
                    self.clocks.message();
                    idle = Box::pin(self.clocks.idle(options.idle_timeout));
                }
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                    return self.close(&mut calls, CloseCode::Away, "the gateway is shutting down").await;
                }
            }
        }
    }

    /// Ends every open call with UNAVAILABLE and closes the socket.
    async fn close(&self, calls: &mut Calls, code: CloseCode, why: &str) -> bool {
        calls.tasks.abort_all();
        for (id, open) in calls.open.drain() {
            let status = Status::unavailable(format!("the socket is closing: {why}"));
            self.send(frames::status(Some(&id), &status, &HeaderMap::new(), Some(&open.pool))).await;
        }
        self.send(frames::close_with(code, why)).await;
        true
    }

    async fn send(&self, frame: Message) {
        let _ = self.queue.send(frame).await;
    }

    /// Ends one call with `status`: its task is stopped and its status sent.
    async fn end(&self, calls: &mut Calls, id: &Arc<str>, status: Status) {
        let pool = calls.open.remove(id).map(|open| {
            open.task.abort();
            calls.ids.remove(&open.task.id());
            open.pool
        });
        self.send(frames::status(Some(id), &status, &HeaderMap::new(), pool.as_ref())).await;
    }

    async fn refuse(&self, id: Option<&str>, status: Status) -> Option<Pending> {
        self.send(frames::status(id, &status, &HeaderMap::new(), None)).await;
        None
    }

    /// Acts on one envelope; a message that has to wait for room in its call is returned.
    /// A frame that is not an envelope is answered with a status without an id.
    async fn envelope(&self, calls: &mut Calls, text: &str) -> Option<Pending> {
        let envelope: Envelope = match serde_json::from_str(text) {
            Ok(envelope) => envelope,
            Err(e) => return self.refuse(None, Status::invalid_argument(format!("not an envelope: {e}"))).await,
        };
        let id_text = envelope.id.get();
        if !(id_text.starts_with('"') || id_text.starts_with(|c: char| c == '-' || c.is_ascii_digit())) {
            return self.refuse(None, Status::invalid_argument("an envelope's id is a string or a number")).await;
        }
        let id: Arc<str> = Arc::from(id_text);
        if envelope.cancel {
            if calls.open.contains_key(&id) {
                self.end(calls, &id, Status::cancelled("cancelled by the client")).await;
            }
            return None;
        }
        if let Some(method) = &envelope.call {
            if calls.open.contains_key(&id) {
                let why = format!("call id {id} is already in use; the call that had it is ended");
                self.end(calls, &id, Status::invalid_argument(why)).await;
                return None;
            }
            if calls.open.len() >= self.session.frontend.options.max_calls_per_socket {
                let why = format!(
                    "this socket has {} calls open, its limit (websocket.max_calls_per_socket)",
                    calls.open.len()
                );
                return self.refuse(Some(&id), Status::resource_exhausted(why)).await;
            }
            if let Err(status) = self.start(calls, &id, method, &envelope) {
                return self.refuse(Some(&id), status).await;
            }
        } else if !calls.open.contains_key(&id) {
            // A call that has ended (its status may be on its way) takes nothing more.
            return None;
        }
        let pending = match envelope.message {
            Some(message) => match self.pass(calls, &id, message.get()).await {
                Ok(pending) => pending,
                Err(status) => {
                    self.end(calls, &id, status).await;
                    return None;
                }
            },
            None => None,
        };
        // The pending message holds a sender of its own: the half-close follows it.
        if envelope.end
            && let Some(open) = calls.open.get_mut(&id)
        {
            open.requests = None;
        }
        pending
    }

    /// Starts the call an envelope asks for.
    fn start(&self, calls: &mut Calls, id: &Arc<str>, method: &str, envelope: &Envelope<'_>) -> Result<(), Status> {
        let frontend = &self.session.frontend;
        let (tables, stack) = (self.session.current)();
        let Some((route, bound)) = tables.routes.find_any(method) else {
            return Err(Status::unimplemented(format!("unknown method {method}")));
        };
        let mut metadata = self.session.metadata.clone();
        for (name, value) in &envelope.metadata {
            super::add_metadata(&mut metadata, name, value).map_err(|e| e.to_status())?;
        }
        let deadline = match envelope.timeout_ms {
            Some(ms) => Some(
                tokio::time::Instant::now()
                    .checked_add(Duration::from_millis(ms))
                    .ok_or_else(|| Status::invalid_argument(format!("timeout_ms {ms} is too far away")))?,
            ),
            None => None,
        };
        let slot = (self.session.admit)()
            .ok_or_else(|| Status::unavailable("the gateway is at its limit of calls in flight; retry later"))?;
        let descriptor = &route.method.descriptor;
        let start = Start {
            stack,
            method: route.method.clone(),
            metadata,
            deadline,
            peer: self.session.peer,
            client: self.session.client.clone(),
        };
        let replies = Arc::new(Replies {
            output: descriptor.output(),
            holds_any: route.reply_holds_any,
            print: frontend.rest.print,
            proto: false,
        });
        let max = frontend.options.max_message_size;
        let (requests, pump) =
            exchange::start(start, replies, Some(id.clone()), self.queue.clone(), self.clocks.clone(), max);
        let ended = CancellationToken::new();
        let ending = ended.clone().drop_guard();
        let task = calls.tasks.spawn(async move {
            let _held = (slot, ending);
            pump.await
        });
        calls.ids.insert(task.id(), id.clone());
        let open = Open {
            requests: Some(requests),
            one_message: !descriptor.is_client_streaming(),
            frames: Arc::new(frames::Requests { route: route.clone(), bound, rest: frontend.rest.clone() }),
            task,
            ended,
            pool: descriptor.parent_pool().clone(),
        };
        calls.open.insert(id.clone(), open);
        Ok(())
    }

    /// Turns one message into its call's request; when the call has no room for it yet, the
    /// sending is returned, to be awaited before anything more is read.
    async fn pass(&self, calls: &mut Calls, id: &Arc<str>, message: &str) -> Result<Option<Pending>, Status> {
        let Some(open) = calls.open.get_mut(id) else { return Ok(None) };
        let Some(requests) = open.requests.clone() else {
            let why = if open.one_message {
                "this method takes one request message; the call was sent another"
            } else {
                "a message came after the call's end"
            };
            return Err(Status::invalid_argument(why));
        };
        let framed: Bytes =
            open.frames.json(Bytes::copy_from_slice(message.as_bytes())).await.map_err(|e| e.to_status())?;
        if open.one_message {
            open.requests = None;
        }
        self.clocks.message();
        let permit = match requests.try_reserve_owned() {
            Ok(permit) => permit,
            // The call no longer reads (its backend has answered): the message is dropped.
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(None),
            Err(mpsc::error::TrySendError::Full(requests)) => {
                self.clocks.paused();
                let ended = open.ended.clone();
                return Ok(Some(Box::pin(async move {
                    tokio::select! {
                        _ = requests.send(Ok(framed)) => {}
                        () = ended.cancelled() => {}
                    }
                })));
            }
        };
        permit.send(Ok(framed));
        Ok(None)
    }
}
