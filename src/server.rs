//! The one listener. Each connection speaks HTTP/1.1 or HTTP/2 (h2c by prior knowledge); each
//! request goes to the frontend its protocol calls for (DESIGN.md, "One port, many protocols").

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::frontends::ResponseBody;
use crate::frontends::grpc;
use crate::gateway::Gateway;

/// How long open connections get to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then drains open connections.
pub async fn serve(listener: TcpListener, gateway: Gateway, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_frame_size(64 << 10)
        .max_concurrent_streams(1000);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
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
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let service = hyper::service::service_fn(move |request| {
            let gateway = gateway.clone();
            async move { Ok::<_, std::convert::Infallible>(route(request, &gateway, peer).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: draining open connections");
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    Ok(())
}

async fn route(request: Request<Incoming>, gateway: &Gateway, peer: SocketAddr) -> Response<ResponseBody> {
    let snapshot = gateway.snapshot();
    if grpc::is_grpc(&request) {
        return gateway.grpc().serve(request, &snapshot.catalog, &snapshot.grpc, Some(peer)).await;
    }
    not_found(&request)
}

/// Until the REST frontend lands, anything but gRPC is answered with a JSON 404.
fn not_found<B>(request: &Request<B>) -> Response<ResponseBody> {
    let message = format!(
        "no route for {} {}: this gateway serves gRPC (content-type: application/grpc)",
        request.method(),
        request.uri().path()
    );
    let body =
        serde_json::json!({ "code": tonic::Code::NotFound as i32, "message": message, "details": [] }).to_string();
    let mut response = Response::new(http_body_util::Full::from(body).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}
