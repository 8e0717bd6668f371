//! `AccessLog<S>`: one `tracing` line per call — protocol, method, peer, gRPC status, duration,
//! trace id when the call has one — the call's metrics (`observe::metrics`) and its span
//! (`observe::trace`), written when the call really ends: at the reply's trailers, at a refusal, or when the client
//! drops the reply before the end (logged as CANCELLED). Target `dragoman::access`, so
//! `RUST_LOG=dragoman::access=off` silences it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tonic::Code;

use crate::call::{Body, Call, Protocol, Reply};
use crate::error::GatewayError;
use crate::observe::trace::{CallTrace, Tracer};

/// Logs and counts (as `rpc_method="_OTHER"`) a call that named no method of the catalog, or was
/// refused before it was read: it never reached the stack, so has no trace.
pub fn unrouted(
    protocol: Protocol,
    path: &str,
    peer: Option<std::net::SocketAddr>,
    code: Code,
    message: &str,
    started: Instant,
) {
    let metrics = super::metrics::unrouted();
    metrics.start(protocol);
    metrics.finish(protocol, code, started.elapsed());
    write(protocol, path, peer, code, message, started, None);
}

/// Logs one finished call, with the trace it belongs to if any.
fn write(
    protocol: Protocol,
    method: &str,
    peer: Option<std::net::SocketAddr>,
    code: Code,
    message: &str,
    started: Instant,
    trace_id: Option<opentelemetry::trace::TraceId>,
) {
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let peer = peer.map(tracing::field::display);
    let trace_id = trace_id.map(tracing::field::display);
    if code == Code::Ok {
        tracing::info!(target: "dragoman::access", protocol = protocol.as_str(), method, peer, status = ?code, duration_ms, trace_id, "call");
    } else {
        tracing::info!(target: "dragoman::access", protocol = protocol.as_str(), method, peer, status = ?code, message, duration_ms, trace_id, "call");
    }
}

/// Logs and counts a call of `method` that a frontend refused before it reached the stack (a
/// malformed body, a bad deadline): it counts as a call of its method that ended with `code`.
pub fn refused(
    protocol: Protocol,
    method: &crate::catalog::MethodRoute,
    peer: Option<std::net::SocketAddr>,
    code: Code,
    message: &str,
    started: Instant,
) {
    method.metrics.start(protocol);
    method.metrics.finish(protocol, code, started.elapsed());
    write(protocol, method.path(), peer, code, message, started, None);
}

/// Logs, counts and traces every call; traces go where `tracer` sends them (nowhere when off).
#[derive(Debug, Clone, Default)]
pub struct AccessLogLayer {
    tracer: Tracer,
}

impl AccessLogLayer {
    pub fn new(tracer: Tracer) -> Self {
        AccessLogLayer { tracer }
    }
}

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner, tracer: self.tracer.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
    tracer: Tracer,
}

impl<S> tower::Service<Call> for AccessLog<S>
where
    S: tower::Service<Call, Response = Reply, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, GatewayError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> Self::Future {
        call.method.metrics.start(call.protocol);
        let started = Instant::now();
        // Before the call goes on: the backend's `traceparent` names this call's span.
        let trace = self.tracer.start(&mut call);
        let entry = Entry {
            protocol: call.protocol,
            method: call.method.clone(),
            peer: call.peer,
            started,
            trace,
            finished: false,
        };
        let reply = self.inner.call(call);
        Box::pin(async move {
            match reply.await {
                Ok(Reply { metadata, body, early_status }) => {
                    let body = LoggedBody { inner: body, entry, status: None };
                    Ok(Reply { metadata, body: body.boxed_unsync(), early_status })
                }
                Err(e) => {
                    if let Some(reason) = e.refusal {
                        entry.method.metrics.refuse(reason);
                    }
                    let mut entry = entry;
                    entry.finish(e.code, &e.message);
                    Err(e)
                }
            }
        })
    }
}

/// One call being watched: logged and counted once, when it ends — or, if the client gives up
/// before the reply (the call's future is dropped), as CANCELLED when it is dropped.
struct Entry {
    protocol: Protocol,
    method: std::sync::Arc<crate::catalog::MethodRoute>,
    peer: Option<std::net::SocketAddr>,
    started: Instant,
    trace: CallTrace,
    finished: bool,
}

impl Entry {
    fn finish(&mut self, code: Code, message: &str) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.method.metrics.finish(self.protocol, code, self.started.elapsed());
        self.trace.finish(code, message);
        write(self.protocol, self.method.path(), self.peer, code, message, self.started, self.trace.trace_id());
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.finish(Code::Cancelled, "the client went away before the reply");
    }
}

/// Watches the reply go by and logs when it ends or is dropped.
struct LoggedBody {
    inner: Body,
    entry: Entry,
    status: Option<(Code, String)>,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = GatewayError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, GatewayError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    self.status = Some(match tonic::Status::from_header_map(trailers) {
                        Some(status) => (status.code(), status.message().to_owned()),
                        None => (Code::Unknown, "the backend's trailers carry no status".to_owned()),
                    });
                }
            }
            Poll::Ready(Some(Err(e))) => self.status = Some((e.code, e.message.clone())),
            Poll::Ready(None) if self.status.is_none() => {
                self.status = Some((Code::Unknown, "the backend ended the call without a status".to_owned()));
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let (code, message) = self.status.take().unwrap_or((Code::Cancelled, "the client went away".to_owned()));
        self.entry.finish(code, &message);
    }
}
