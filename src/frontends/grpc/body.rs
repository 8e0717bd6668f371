//! The bodies of a passthrough call. Frames pass through untouched both ways; on the way, the
//! length prefixes are watched so that no message over `server.max_message_size` gets through
//! ([`SizeGuard`]: a few comparisons per chunk, nothing buffered). The reply always ends with
//! trailers carrying `grpc-status`: an error mid-stream (deadline, lost backend, a message too
//! large either way) becomes that status instead of a reset stream.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame, SizeHint};
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
    /// The call's trailers are next (a message over the limit was cut off, or the backend's
    /// trailers came while DATA was being gathered); nothing follows them.
    Ending(Frame<Bytes>),
    /// Trailers were sent; nothing follows.
    Done,
}

/// DATA frames the backend has already delivered are passed on as one frame of up to this many
/// bytes: a backend streaming small messages sends a frame each, and passing them on one by one
/// costs the client's connection a frame, a wake-up of its sender and a flow-control turn each.
/// Nothing is waited for: what is not there yet goes in a later frame.
const GATHER_BYTES: usize = 16 * 1024;
/// At most this many frames are gathered into one (empty DATA frames add no bytes).
const GATHER_FRAMES: usize = 256;

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

    /// The next frame for the client, from one frame of the backend's.
    fn poll_one(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        match std::mem::replace(&mut self.state, State::Streaming) {
            State::Done => {
                self.state = State::Done;
                return Poll::Ready(None);
            }
            State::Ending(trailers) => {
                self.state = State::Done;
                return Poll::Ready(Some(trailers));
            }
            State::Streaming => {}
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                self.state = State::Done;
                return Poll::Ready(Some(self.failure(e.to_status())));
            }
            Poll::Ready(None) => {
                self.state = State::Done;
                let status = Status::internal("the backend ended the call without a status");
                return Poll::Ready(Some(self.failure(status)));
            }
        };
        if frame.is_trailers() {
            self.state = State::Done;
            let failed = frame
                .trailers_ref()
                .and_then(|t| t.get(&crate::call::GRPC_STATUS))
                .is_some_and(|s| s.as_bytes() != b"0");
            return Poll::Ready(Some(match (failed, self.request_error.get()) {
                (true, Some(error)) => Frame::trailers(status_trailers(&error.to_status())),
                _ => frame,
            }));
        }
        if let Some(data) = frame.data_ref() {
            if let Err((whole, e)) = self.guard.check(data) {
                let status = Status::resource_exhausted(format!("the backend's response: {e}"));
                let trailers = Frame::trailers(status_trailers(&status));
                if whole == 0 {
                    self.state = State::Done;
                    return Poll::Ready(Some(trailers));
                }
                let before = data.slice(..whole);
                self.state = State::Ending(trailers);
                return Poll::Ready(Some(Frame::data(before)));
            }
        }
        Poll::Ready(Some(frame))
    }
}

impl http_body::Body for ReplyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let first = match std::task::ready!(this.poll_one(cx)) {
            Some(frame) => frame,
            None => return Poll::Ready(None),
        };
        let first = match first.into_data() {
            Ok(data) => data,
            Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
        };
        // A single frame (a unary reply) goes on as it came, uncopied.
        let mut gathered: Option<BytesMut> = None;
        let mut frames = 1;
        while matches!(this.state, State::Streaming)
            && frames < GATHER_FRAMES
            && gathered.as_ref().map_or(first.len(), BytesMut::len) < GATHER_BYTES
        {
            let Poll::Ready(Some(next)) = this.poll_one(cx) else { break };
            frames += 1;
            match next.into_data() {
                Ok(more) => gathered.get_or_insert_with(|| BytesMut::from(&first[..])).extend_from_slice(&more),
                Err(trailers) => this.state = State::Ending(trailers),
            }
        }
        let data = gathered.map_or(first, BytesMut::freeze);
        Poll::Ready(Some(Ok(Frame::data(data))))
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
