//! The upstream side: sends a [`Call`] to a backend of its service over HTTP/2 and hands back the
//! [`Reply`] as it streams in. Frames go out as they came in — no decode, no re-encode — with the
//! call's metadata, the remaining deadline as `grpc-timeout`, and the compression flags untouched.
//!
//! It knows nothing about JSON, XML or WebSocket, nor about which frontend a call came from.
//! Dropping the reply (the client went away) drops the HTTP/2 stream, which resets it at the
//! backend: cancellation needs no extra signalling. A backend named by DNS is one endpoint per
//! address its name resolves to (`dns`).

mod connection;
mod corked;
mod dns;
mod health;
mod pool;
mod settings;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, TE};
use http::{Method, Request, Uri};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tonic::Code;

use crate::call::{Call, Reply};
use crate::catalog::MethodRoute;
use crate::config::Config;
use crate::error::{GatewayError, Origin, Refusal};
use crate::observe::backends::Backends;
use connection::{Answer, Stream};
pub use dns::{Address, Resolved, Resolvers, carry_over};
pub use health::HealthChecks;
use pool::{NoStream, Pool};

/// One pool per config rule, in the config's order.
#[derive(Clone)]
pub struct Upstream {
    pools: Arc<[Pool]>,
}

impl Upstream {
    /// The pools of `config`'s rules, recording into `backends`.
    pub fn new(config: &Config, backends: &Arc<Backends>) -> Self {
        Upstream { pools: config.services.iter().map(|rule| Pool::new(rule, backends)).collect() }
    }

    async fn send(self, call: Call) -> Result<Reply, GatewayError> {
        // Named only when something fails: no allocation on the way through.
        let method = call.method.clone();
        let service = || method.descriptor.parent_service().full_name().to_owned();
        let rule = call.method.rule.as_ref().ok_or_else(|| {
            GatewayError::new(Code::Unavailable, Origin::Gateway, format!("no backend is configured for {}", service()))
                .refused(Refusal::NoBackend)
        })?;
        // A call waits for a free stream no longer than its rule says, nor than its deadline.
        let left = call.deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let patience = left.map_or(rule.queue_timeout, |left| left.min(rule.queue_timeout));
        // The client learns which service is unavailable, not where its backends live: that,
        // and why, goes to the log.
        // A call routed by a config other than the one these pools were built for (a reload in
        // between) is refused rather than sent by another rule's backends.
        let pool = self.pools.get(rule.index).filter(|pool| Arc::ptr_eq(pool.rule(), rule)).ok_or_else(|| {
            // Not for the gateway's own retry: this call carries the old config's rule to the end.
            GatewayError::new(
                Code::Unavailable,
                Origin::Gateway,
                format!("{} is unavailable: the config changed; retry", service()),
            )
        })?;
        let tried = call.extensions.get::<crate::call::TriedBackends>().cloned();
        let avoid = tried.as_ref().map(crate::call::TriedBackends::list).unwrap_or_default();
        let affinity =
            rule.hash_on.as_ref().and_then(|name| call.metadata.get(name)).map(|v| pool::fnv1a(v.as_bytes()));
        let (mut stream, endpoint) =
            pool.stream(patience, &avoid, affinity).await.map_err(|refusal| match refusal {
                NoStream::Unreachable(why) => {
                    tracing::warn!(service = %service(), error = %why, "no backend could be reached");
                    GatewayError::unreachable(format!("{} is unavailable: no backend could be reached", service()))
                        .refused(Refusal::NoBackend)
                }
                NoStream::Unhealthy => {
                    tracing::warn!(service = %service(), "every backend is unhealthy by its health checks");
                    // Not for the gateway's own retry: nothing changes until the next checks.
                    GatewayError::new(
                        Code::Unavailable,
                        Origin::Gateway,
                        format!("{} is unavailable: no backend is healthy", service()),
                    )
                    .refused(Refusal::NoHealthyBackend)
                }
                NoStream::Full { limit } => {
                    tracing::warn!(service = %service(), limit, "backends at their stream limit");
                    // Not for the gateway's own retry: the call already waited its queue_timeout, and
                    // a retry would only add load where there is too much.
                    GatewayError::new(
                        Code::Unavailable,
                        Origin::Upstream,
                        format!(
                            "{} is unavailable: its backends are at their limit of {limit} concurrent calls",
                            service()
                        ),
                    )
                    .refused(Refusal::BackendsBusy)
                }
            })?;
        if let Some(tried) = &tried {
            tried.add(&endpoint.backend.authority);
        }
        let descriptor = &call.method.descriptor;
        if !descriptor.is_client_streaming() && !descriptor.is_server_streaming() {
            stream.timed();
        }
        let mut sender = stream.sender();

        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if endpoint.backend.tls { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP });
        parts.authority = Some(endpoint.backend.uri_authority.clone());
        parts.path_and_query = Some(call.method.path_and_query.clone());
        let uri = Uri::from_parts(parts)
            .map_err(|e| GatewayError::new(Code::Internal, Origin::Gateway, format!("bad backend URI: {e}")))?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(call.body)
            .map_err(|e| GatewayError::new(Code::Internal, Origin::Gateway, format!("bad backend request: {e}")))?;
        let headers = request.headers_mut();
        *headers = call.metadata;
        // The frontend's gRPC content type (`application/grpc+proto`...) names the encoding and
        // stays; anything else is the gateway's to set.
        let grpc = headers.get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        }
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if let Some(deadline) = call.deadline {
            headers.insert(crate::call::GRPC_TIMEOUT.clone(), grpc_timeout(deadline)?);
        }

        let response = sender.send_request(request).await.map_err(|e| {
            stream.failed();
            tracing::warn!(service = %service(), backend = %endpoint.backend, error = %e, "backend call failed");
            GatewayError::new(
                Code::Unavailable,
                Origin::Upstream,
                format!("{} is unavailable: the backend failed", service()),
            )
        })?;
        reply(response, method, stream)
    }
}

impl tower::Service<Call> for Upstream {
    type Response = Reply;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, GatewayError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        Box::pin(self.clone().send(call))
    }
}

/// The remaining time as a `grpc-timeout` value (gRPC over HTTP/2: at most 8 digits and a unit).
fn grpc_timeout(deadline: Instant) -> Result<HeaderValue, GatewayError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(GatewayError::deadline_exceeded());
    }
    // Rounded up: the backend's deadline then never falls before the gateway's, so a failure it
    // reports at its deadline is past ours (see policy::deadline).
    let micros = left.as_nanos().div_ceil(1000);
    let value =
        if micros < 100_000_000 { format!("{micros}u") } else { format!("{}m", micros.div_ceil(1000).min(99_999_999)) };
    HeaderValue::from_str(&value).map_err(|_| GatewayError::deadline_exceeded())
}

/// Turns the backend's HTTP response into a [`Reply`] whose status always travels in trailers,
/// whether the backend sent a Trailers-Only response or not.
fn reply(
    response: http::Response<hyper::body::Incoming>,
    method: Arc<MethodRoute>,
    mut stream: Stream,
) -> Result<Reply, GatewayError> {
    let service = || method.descriptor.parent_service().full_name().to_owned();
    let (parts, body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        stream.failed();
        // gRPC over HTTP/2: a non-200 status maps to a code by the HTTP-to-gRPC table.
        let code = match parts.status.as_u16() {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        };
        return Err(GatewayError::new(
            code,
            Origin::Upstream,
            format!("{}: backend answered HTTP {}", service(), parts.status),
        ));
    }
    // The backend's framing is not the client's (the gateway may end a reply early, so a
    // Content-Length passed on would be a lie): Reply::from_grpc leaves it behind.
    // The balancer and outlier detection hear the answer: UNAVAILABLE with nothing but a status
    // turns the call away; INTERNAL, UNKNOWN or DATA_LOSS so fail it; anything else (a status in
    // the trailers included) is the backend answering.
    let answer = match parts.headers.get(&crate::call::GRPC_STATUS).map(|s| s.as_bytes()) {
        Some(b"14") => Answer::TurnedAway,
        Some(b"2" | b"13" | b"15") => Answer::Failed,
        _ => Answer::Served,
    };
    stream.answered(answer);
    let body = ReplyStream { inner: body, method, stream }.boxed_unsync();
    Ok(Reply::from_grpc(parts.headers, body))
}

/// A backend's reply streaming in; it holds its HTTP/2 stream, counted against the backend's
/// limit, until it ends or is dropped.
struct ReplyStream {
    inner: hyper::body::Incoming,
    method: Arc<MethodRoute>,
    stream: Stream,
}

impl http_body::Body for ReplyStream {
    type Data = Bytes;
    type Error = GatewayError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, GatewayError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.stream.failed();
        }
        polled.map_err(|e| stream_error(&self.method, e))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A backend stream that broke off: a reset by the backend keeps its code, anything else is a
/// lost backend. The client is told which; the details go to the log.
fn stream_error(method: &MethodRoute, e: hyper::Error) -> GatewayError {
    let service = method.descriptor.parent_service().full_name();
    use std::error::Error as _;
    let reason = e.source().and_then(|s| s.downcast_ref::<h2::Error>()).and_then(h2::Error::reason);
    let code = match reason {
        Some(h2::Reason::CANCEL) => Code::Cancelled,
        Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        _ => Code::Unavailable,
    };
    tracing::debug!(service, error = %e, "the backend stream broke off");
    GatewayError::new(code, Origin::Upstream, format!("{service}: the backend stream broke off"))
}
