//! `Deadline<S>`: every call ends by its deadline, whatever the backend does.
//!
//! The deadline is the client's (`grpc-timeout`, set by the frontend) or, when the client set
//! none, the service's configured `timeout`. Waiting for the reply's headers and streaming its
//! body both stop at the deadline with `DEADLINE_EXCEEDED`; dropping the backend's stream then
//! resets it there. Backends also get the remainder as `grpc-timeout` from the upstream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use crate::call::{Body, Call, Reply, status_trailers};
use crate::error::GatewayError;

#[derive(Debug, Clone, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S> tower::Service<Call> for Deadline<S>
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
        let configured = call.method.rule.as_ref().and_then(|r| r.default_timeout);
        if call.deadline.is_none() {
            call.deadline = configured.map(|t| Instant::now() + t);
        }
        let Some(deadline) = call.deadline else {
            return Box::pin(self.inner.call(call));
        };
        let reply = self.inner.call(call);
        Box::pin(async move {
            let Reply { metadata, body, early_status } =
                tokio::time::timeout_at(deadline, reply).await.map_err(|_| GatewayError::deadline_exceeded())??;
            let body =
                DeadlineBody { inner: body, sleep: Box::pin(tokio::time::sleep_until(deadline)), expired: false };
            Ok(Reply { metadata, body: body.boxed_unsync(), early_status })
        })
    }
}

/// A reply body that fails with `DEADLINE_EXCEEDED` once the deadline passes.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    expired: bool,
}

impl DeadlineBody {
    /// A backend that gives up at the deadline may call it CANCELLED (tonic servers do); past
    /// the deadline, the call's outcome is DEADLINE_EXCEEDED whoever noticed first.
    fn past_deadline(&self, frame: Frame<Bytes>) -> Frame<Bytes> {
        let cancelled =
            frame.trailers_ref().and_then(|t| t.get(&crate::call::GRPC_STATUS)).is_some_and(|s| s.as_bytes() == b"1");
        if cancelled && Instant::now() >= self.sleep.deadline() {
            return Frame::trailers(status_trailers(&GatewayError::deadline_exceeded().to_status()));
        }
        frame
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = GatewayError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, GatewayError>>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map(|f| self.past_deadline(f))));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired = true;
                Poll::Ready(Some(Err(GatewayError::deadline_exceeded())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
