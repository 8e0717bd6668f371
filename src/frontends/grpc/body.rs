//! The bodies of a passthrough call. Frames pass through untouched both ways; on the way, the
//! length prefixes are watched so that no message over `server.max_message_size` gets through
//! ([`SizeGuard`]: a few comparisons per chunk, nothing buffered). The reply always ends with
//! trailers carrying `grpc-status`: an error mid-stream (deadline, lost backend, a message too
//! large either way) becomes that status instead of a reset stream.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tonic::{Code, Status};

use super::super::BoxError;
use crate::call::{Body, status_trailers};
use crate::error::{GatewayError, Origin};
use crate::transcode::framing::SizeGuard;

/// Why the client's request stream was cut off, for the reply to report: the backend only sees
/// the stream reset.
pub(super) type RequestError = Arc<OnceLock<GatewayError>>;

/// The client's request stream on its way to the backend.
pub(super) struct RequestBody {
    inner: Incoming,
    guard: SizeGuard,
    /// Set once a message was too large: the error is yielded after the whole messages before it.
    failed: Option<GatewayError>,
    error: RequestError,
}

impl RequestBody {
    pub(super) fn new(inner: Incoming, limit: u32, error: RequestError) -> Self {
        RequestBody { inner, guard: SizeGuard::new(limit), failed: None, error }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = GatewayError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, GatewayError>>> {
        if let Some(error) = self.failed.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                let message = format!("the client's request stream broke off: {e}");
                return Poll::Ready(Some(Err(GatewayError::new(Code::Cancelled, Origin::Client, message))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let Some(data) = frame.data_ref() else { return Poll::Ready(Some(Ok(frame))) };
        let Err((whole, e)) = self.guard.check(data) else { return Poll::Ready(Some(Ok(frame))) };
        let error = GatewayError::new(Code::ResourceExhausted, Origin::Client, format!("the request: {e}"));
        let _ = self.error.set(error.clone());
        if whole == 0 {
            return Poll::Ready(Some(Err(error)));
        }
        let before = data.slice(..whole);
        self.failed = Some(error);
        Poll::Ready(Some(Ok(Frame::data(before))))
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && self.inner.is_end_stream()
    }

    /// Unknown: the stream may be cut short, so the client's own length must not be announced.
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Where the reply stands.
enum State {
    Streaming,
    /// A message over the limit is next: the whole messages before it were sent, its status
    /// follows.
    Failing(Status),
    /// Trailers were sent; nothing follows.
    Done,
}

pub(super) struct ReplyBody {
    inner: Body,
    state: State,
    guard: SizeGuard,
    request_error: RequestError,
}

impl ReplyBody {
    pub(super) fn new(inner: Body, limit: u32, request_error: RequestError) -> Self {
        ReplyBody { inner, state: State::Streaming, guard: SizeGuard::new(limit), request_error }
    }

    /// The call's final status when it failed: the request's own fault first, if it had one.
    fn failure(&self, status: Status) -> Frame<Bytes> {
        let status = self.request_error.get().map_or(status, GatewayError::to_status);
        Frame::trailers(status_trailers(&status))
    }
}

impl http_body::Body for ReplyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match std::mem::replace(&mut self.state, State::Streaming) {
            State::Done => {
                self.state = State::Done;
                return Poll::Ready(None);
            }
            State::Failing(status) => {
                self.state = State::Done;
                return Poll::Ready(Some(Ok(Frame::trailers(status_trailers(&status)))));
            }
            State::Streaming => {}
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                self.state = State::Done;
                return Poll::Ready(Some(Ok(self.failure(e.to_status()))));
            }
            Poll::Ready(None) => {
                self.state = State::Done;
                let status = Status::internal("the backend ended the call without a status");
                return Poll::Ready(Some(Ok(self.failure(status))));
            }
        };
        if frame.is_trailers() {
            self.state = State::Done;
            let failed = frame
                .trailers_ref()
                .and_then(|t| t.get(&crate::call::GRPC_STATUS))
                .is_some_and(|s| s.as_bytes() != b"0");
            return Poll::Ready(Some(Ok(match (failed, self.request_error.get()) {
                (true, Some(error)) => Frame::trailers(status_trailers(&error.to_status())),
                _ => frame,
            })));
        }
        if let Some(data) = frame.data_ref() {
            if let Err((whole, e)) = self.guard.check(data) {
                let status = Status::resource_exhausted(format!("the backend's response: {e}"));
                if whole == 0 {
                    self.state = State::Done;
                    return Poll::Ready(Some(Ok(Frame::trailers(status_trailers(&status)))));
                }
                let before = data.slice(..whole);
                self.state = State::Failing(status);
                return Poll::Ready(Some(Ok(Frame::data(before))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Unknown: the reply may be cut short (a message too large, a deadline), so the backend's
    /// length must not become a `content-length` the client would hold the gateway to.
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
