//! The one listener. Each connection speaks HTTP/1.1 or HTTP/2 (h2c by prior knowledge); each
//! request goes to the frontend its protocol calls for (DESIGN.md, "One port, many protocols").
//!
//! Thread per core: each worker thread runs a single-threaded runtime that accepts from the shared
//! listening socket and owns everything its connections touch — the client's HTTP/2 connection,
//! the policy stack and the backend connections. A call is served start to end on one thread: no
//! cross-thread wake-ups, no contended locks inside h2 (the profile showed both on a shared
//! multi-threaded runtime; bench/README.md).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;

use crate::frontends::ResponseBody;
use crate::frontends::grpc;
use crate::gateway::{Gateway, Worker};

/// How long open connections get to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves on `listener` with `workers` threads (0: one per core) until `shutdown` resolves, then
/// drains open connections.
pub async fn serve(
    listener: std::net::TcpListener,
    gateway: Gateway,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let workers = if workers == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { workers };
    listener.set_nonblocking(true)?;
    let (stop, stopping) = watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    for n in 0..workers {
        let listener = listener.try_clone()?;
        let gateway = gateway.clone();
        let stopping = stopping.clone();
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(format!("dragoman-worker-{n}")).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(runtime) => runtime.block_on(run_worker(listener, gateway, stopping)),
                Err(e) => tracing::error!(error = %e, "cannot start a worker runtime"),
            }
            let _ = done.send(());
        })?;
        threads.push((thread, finished));
    }
    shutdown.await;
    let _ = stop.send(true);
    for (thread, finished) in threads {
        let _ = finished.await;
        let _ = thread.join();
    }
    Ok(())
}

async fn run_worker(listener: std::net::TcpListener, gateway: Gateway, mut stopping: watch::Receiver<bool>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return tracing::error!(error = %e, "worker cannot use the listener"),
    };
    let worker = std::sync::Arc::new(gateway.worker());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_frame_size(64 << 10)
        .max_concurrent_streams(1000);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
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
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let worker = worker.clone();
        let service = hyper::service::service_fn(move |request| {
            let gateway = gateway.clone();
            let worker = worker.clone();
            async move { Ok::<_, std::convert::Infallible>(route(request, &gateway, &worker, peer).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

async fn route(
    request: Request<Incoming>,
    gateway: &Gateway,
    worker: &Worker,
    peer: SocketAddr,
) -> Response<ResponseBody> {
    let snapshot = gateway.snapshot();
    // gRPC over HTTP/2 is told apart by its content type; everything else is REST.
    if grpc::is_grpc(&request) {
        return worker.grpc.serve(request, &snapshot.catalog, &snapshot.grpc, Some(peer)).await;
    }
    worker.rest.serve(request, &snapshot.rest, Some(peer)).await
}
