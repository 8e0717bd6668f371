//! The one listener. Each connection speaks HTTP/1.1 or HTTP/2 (h2c by prior knowledge); each
//! request goes to the frontend its protocol calls for (DESIGN.md, "One port, many protocols").
//!
//! Thread per core: each worker thread runs a single-threaded runtime that accepts from the shared
//! listening socket and owns everything its connections touch — the client's HTTP/2 connection,
//! the policy stack and the backend connections. A call is served start to end on one thread: no
//! cross-thread wake-ups, no contended locks inside h2 (the profile showed both on a shared
//! multi-threaded runtime; bench/README.md).
//!
//! The edge's limits (`server:` in the config) act here, before any frontend: connections over
//! `max_connections` are closed as accepted; a connection must send its first bytes, then start
//! its first request, within `header_read_timeout` (HTTP/1.1 heads are timed by hyper, HTTP/2's
//! by us); one with nothing in flight for `idle_timeout` is closed; heads must fit
//! `max_header_size`; HTTP/2 connections are pinged; requests over `max_calls_in_flight` are
//! refused at once. A connection the gateway closes gets a bounded time to go, then is dropped.

mod admission;
mod preface;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::call::Protocol;
use crate::config::ServerLimits;
use crate::frontends::{Peer, ResponseBody, grpc, rest, soap, websocket};
use crate::gateway::{Gateway, Snapshot, Worker};
use crate::observe::access_log;
use crate::observe::metrics::Open;
use admission::{Activity, Admission, CallGuard, Tracked};
pub use tls::Tls;

/// A socket the gateway accepts connections on: plain text (h2c and HTTP/1.1), or TLS.
pub struct Listener {
    socket: std::net::TcpListener,
    tls: Option<Arc<Tls>>,
}

impl Listener {
    /// A listener whose connections shake hands with `tls` first, if given.
    pub fn new(socket: std::net::TcpListener, tls: Option<Arc<Tls>>) -> Self {
        Listener { socket, tls }
    }
}

/// Serves on `listeners` with `workers` threads (0: one per core) until `shutdown` resolves, then
/// drains open connections.
pub async fn serve(
    listeners: Vec<Listener>,
    gateway: Gateway,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let workers = if workers == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { workers };
    for listener in &listeners {
        listener.socket.set_nonblocking(true)?;
    }
    // Shared by every worker for the life of the process (one per `serve`).
    let admission: &'static Admission = Box::leak(Box::new(Admission::new(&gateway.config().server)));
    let (stop, stopping) = watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    for n in 0..workers {
        let listeners = listeners
            .iter()
            .map(|l| Ok(Listener { socket: l.socket.try_clone()?, tls: l.tls.clone() }))
            .collect::<std::io::Result<Vec<_>>>()?;
        let gateway = gateway.clone();
        let stopping = stopping.clone();
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(format!("dragoman-worker-{n}")).spawn(move || {
            crate::observe::backends::set_worker(n);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(runtime) => runtime.block_on(async {
                    crate::observe::hold_lines_on_this_worker();
                    run_worker(listeners, gateway, admission, stopping).await
                }),
                Err(e) => tracing::error!(error = %e, "cannot start a worker runtime"),
            }
            let _ = done.send(());
        })?;
        threads.push((thread, finished));
    }
    // The workers hold the only sockets left: when they stop accepting, the port closes and new
    // connections are refused at once rather than left in the backlog until the process ends.
    drop(listeners);
    shutdown.await;
    gateway.start_draining();
    // Readiness is false from here; new connections are still taken for a while.
    tokio::time::sleep(gateway.config().server.shutdown_delay).await;
    let _ = stop.send(true);
    for (thread, finished) in threads {
        let _ = finished.await;
        let _ = thread.join();
    }
    Ok(())
}

/// The HTTP/1.1 and HTTP/2 settings of client connections.
fn connection_builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_size as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_frame_size(64 << 10)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_size)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    builder
}

/// What one worker's connections share.
struct WorkerState {
    gateway: Gateway,
    /// The frontends over this worker's stack and backend pools, for the config they were built
    /// from; rebuilt when a reload lands (or a request sees a newer config first).
    worker: ArcSwap<Worker>,
    admission: &'static Admission,
    limits: Arc<ServerLimits>,
    builder: auto::Builder<TokioExecutor>,
    stopping: watch::Receiver<bool>,
    /// The worker's tasks: connections, and the WebSockets that outlive their connection's
    /// HTTP exchange.
    connections: tokio_util::task::TaskTracker,
}

async fn run_worker(
    listeners: Vec<Listener>,
    gateway: Gateway,
    admission: &'static Admission,
    stopping: watch::Receiver<bool>,
) {
    let config = gateway.config();
    let limits = config.server.clone();
    let state = Arc::new(WorkerState {
        worker: ArcSwap::from_pointee(gateway.worker(&config)),
        gateway,
        admission,
        builder: connection_builder(&limits),
        limits,
        stopping,
        connections: tokio_util::task::TaskTracker::new(),
    });
    // A reload rebuilds this worker's frontends at once, not at its next request: pools of a
    // config gone close when their last calls end, even on a worker no request reaches.
    let mut reloads = state.gateway.reloads();
    let rebuilding = state.clone();
    tokio::spawn(async move {
        while reloads.changed().await.is_ok() {
            rebuilding.worker_for(&rebuilding.gateway.snapshot());
        }
    });
    futures_util::future::join_all(listeners.into_iter().map(|listener| accept(listener, state.clone()))).await;
    state.connections.close();
    let _ = tokio::time::timeout(state.limits.drain_timeout, state.connections.wait()).await;
}

impl WorkerState {
    /// This worker's frontends for `snapshot`'s config.
    fn worker_for(&self, snapshot: &Snapshot) -> Arc<Worker> {
        let current = self.worker.load_full();
        if Arc::ptr_eq(&current.config, &snapshot.config) {
            return current;
        }
        let fresh = Arc::new(self.gateway.worker(&snapshot.config));
        self.worker.store(fresh.clone());
        fresh
    }
}

/// Accepts connections on one listener until the gateway stops.
async fn accept(listener: Listener, state: Arc<WorkerState>) {
    let socket = match tokio::net::TcpListener::from_std(listener.socket) {
        Ok(socket) => socket,
        Err(e) => return tracing::error!(error = %e, "worker cannot use the listener"),
    };
    let mut stopping = state.stopping.clone();
    loop {
        let (stream, address) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopping.wait_for(|s| *s) => break,
        };
        let Some(permit) = state.admission.connection() else {
            crate::observe::metrics::unrouted().refuse(crate::error::Refusal::Connections);
            tracing::debug!(peer = %address, "connection refused: max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(state.limits.tcp_keepalive);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (tls, state) = (listener.tls.clone(), state.clone());
        state.connections.clone().spawn(async move {
            // The handshake and the first bytes share one header_read_timeout.
            let started = Instant::now();
            let timeout = state.limits.header_read_timeout;
            match tls {
                None => serve_connection(stream, Peer::new(address), false, timeout, permit, state).await,
                Some(tls) => {
                    let Some((stream, client)) = tls.accept(stream, timeout).await else { return };
                    let remaining = timeout.saturating_sub(started.elapsed());
                    let peer = Peer::new(address).with_client(client);
                    serve_connection(stream, peer, true, remaining, permit, state).await;
                }
            }
        });
    }
}

/// Serves one client connection (plain, or past its TLS handshake) until it closes, goes idle or
/// the gateway stops.
async fn serve_connection<S>(
    stream: S,
    peer: Peer,
    tls: bool,
    first_bytes_within: Duration,
    permit: tokio::sync::OwnedSemaphorePermit,
    state: Arc<WorkerState>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = &state.limits;
    let address = peer.address;
    let Some(stream) = preface::read(stream, first_bytes_within).await else {
        return tracing::debug!(peer = %address, "closed: nothing sent within header_read_timeout");
    };
    let _open = match (stream.is_http2(), tls) {
        (false, false) => Open::Http1,
        (true, false) => Open::Http2,
        (false, true) => Open::Http1Tls,
        (true, true) => Open::Http2Tls,
    }
    .count();
    // Everything a request needs, shared once per connection: one reference count per call.
    let connection =
        Arc::new(Connection { state: state.clone(), activity: Arc::new(Activity::default()), peer, _permit: permit });
    let service = {
        let connection = connection.clone();
        hyper::service::service_fn(move |request| {
            let connection = connection.clone();
            async move {
                let response = match connection.state.admission.call(&connection.activity) {
                    Some(guard) => connection.route(request, guard).await,
                    None => overloaded(&request, &connection).map(|body| Tracked::new(body, None)),
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let mut stopping = state.stopping.clone();
    let served = state.builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(served);
    // Closed gracefully (GOAWAY, or `Connection: close` once the response in flight is
    // sent) when the gateway stops, when no request starts within header_read_timeout of
    // the preface (HTTP/2 heads have no timer of hyper's), or when it sits idle.
    let idle = tokio::select! {
        result = served.as_mut() => Err(result),
        _ = stopping.wait_for(|s| *s) => Ok(false),
        () = connection.activity.idle(limits.header_read_timeout, limits.idle_timeout) => Ok(true),
    };
    let result = match idle {
        Err(result) => result,
        // Stopping: calls in flight finish, within the worker's drain_timeout.
        Ok(false) => {
            served.as_mut().graceful_shutdown();
            served.await
        }
        // Idle: a client that neither closes nor answers the GOAWAY's PING would hold the
        // connection until its keep-alive gave up; once nothing is in flight (a stream
        // may have started after the idle check), it gets a bounded time, then is dropped.
        Ok(true) => {
            tracing::debug!(peer = %address, "closing an idle connection");
            served.as_mut().graceful_shutdown();
            loop {
                match tokio::time::timeout(limits.header_read_timeout, served.as_mut()).await {
                    Ok(result) => break result,
                    Err(_) if connection.activity.in_flight() == 0 => {
                        tracing::debug!(peer = %address, "dropped a connection that did not close");
                        break Ok(());
                    }
                    Err(_) => {}
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %address, error = %e, "connection ended with an error");
    }
}

/// One client connection, as its requests see it. A WebSocket holds it for as long as it is open,
/// and with it the connection's place under `max_connections`.
struct Connection {
    state: Arc<WorkerState>,
    activity: Arc<Activity>,
    peer: Peer,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The frontend a request is for.
enum Frontend {
    /// gRPC over HTTP/2, told apart by its content type.
    Grpc,
    /// `Upgrade: websocket`.
    WebSocket,
    /// A path under the SOAP prefix.
    Soap,
    /// Everything else.
    Rest,
}

impl Frontend {
    fn of<B>(request: &Request<B>, soap_options: &crate::config::SoapOptions) -> Self {
        if grpc::is_grpc(request) {
            Frontend::Grpc
        } else if websocket::is_upgrade(request) {
            Frontend::WebSocket
        } else if soap::is_soap(request, soap_options) {
            Frontend::Soap
        } else {
            Frontend::Rest
        }
    }
}

impl Connection {
    /// Serves a request counted in by `guard`, which is held until its response ends (or, for a
    /// WebSocket, until the socket closes).
    async fn route(self: &Arc<Self>, request: Request<Incoming>, guard: CallGuard) -> Response<Tracked<ResponseBody>> {
        let snapshot = self.state.gateway.snapshot();
        let worker = self.state.worker_for(&snapshot);
        let response = match Frontend::of(&request, &snapshot.config.soap) {
            Frontend::Grpc => worker.grpc.serve(request, &snapshot.catalog, &self.peer).await,
            Frontend::Rest => worker.rest.serve(request, &snapshot.rest, &self.peer).await,
            Frontend::Soap => worker.soap.serve(request, &snapshot.soap, &self.peer).await,
            Frontend::WebSocket => {
                let connection = self.clone();
                let admit: websocket::Admit = Arc::new(move || {
                    let guard = connection.state.admission.call(&connection.activity)?;
                    Some(Box::new(guard) as Box<dyn Send + Sync>)
                });
                let lease = websocket::Lease {
                    hold: Box::new((guard, self.clone())),
                    stopping: self.state.stopping.clone(),
                    tasks: self.state.connections.clone(),
                    admit,
                };
                let state = self.state.clone();
                let current: websocket::Current = Arc::new(move || {
                    let snapshot = state.gateway.snapshot();
                    (snapshot.rest.clone(), state.worker_for(&snapshot).websocket.stack.clone())
                });
                let response = worker.websocket.serve(request, current, &self.peer, lease).await;
                return response.map(|body| Tracked::new(body, None));
            }
        };
        response.map(|body| Tracked::new(body, Some(guard)))
    }
}

/// The answer when `max_calls_in_flight` is reached: refused at once, in the client's protocol,
/// so that it can retry elsewhere instead of queueing here. Logged as a call (the access log's
/// level), not as a warning: under overload that would be a flood of them.
fn overloaded<B>(request: &Request<B>, connection: &Connection) -> Response<ResponseBody> {
    let peer = &connection.peer;
    let message = "the gateway is at its limit of calls in flight; retry later";
    let (protocol, response) = if grpc::is_grpc(request) {
        (Protocol::Grpc, grpc::trailers_only(tonic::Status::unavailable(message)))
    } else if soap::is_soap(request, &connection.state.gateway.snapshot().config.soap) {
        (Protocol::Soap, soap::fault(request, tonic::Status::unavailable(message)))
    } else {
        (Protocol::Rest, rest::error::error_response(&tonic::Status::unavailable(message), None))
    };
    let path = request.uri().path();
    crate::observe::metrics::unrouted().refuse(crate::error::Refusal::CallsInFlight);
    access_log::unrouted(protocol, path, Some(peer.address), tonic::Code::Unavailable, message, Instant::now());
    response
}
