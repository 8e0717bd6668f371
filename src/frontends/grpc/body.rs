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

/// After a reply's first DATA frame, the frames the backend has already delivered are passed on
/// as one of up to this many bytes: a backend streaming small messages sends a frame each, and
/// passing them on one by one costs the client's connection a frame, a wake-up of its sender and
/// a flow-control turn each. Nothing is waited for: what is not there yet goes in a later frame.
/// A frame that would take the gathered one past this size starts the next (uncopied if it is
/// this size or more).
const GATHER_BYTES: usize = 16 * 1024;
/// At most this many frames are gathered into one (empty DATA frames add no bytes).
const GATHER_FRAMES: usize = 256;

pub(super) struct ReplyBody {
    inner: Body,
    state: State,
    guard: SizeGuard,
    request_error: RequestError,
    /// A DATA frame taken while gathering that did not fit: it goes first next time.
    held: Option<Bytes>,
    /// A DATA frame went on already: a unary reply's only one goes at once, with no look for more.
    streaming: bool,
}

impl ReplyBody {
    pub(super) fn new(inner: Body, limit: u32, request_error: RequestError) -> Self {
        ReplyBody {
            inner,
            state: State::Streaming,
            guard: SizeGuard::new(limit),
            request_error,
            held: None,
            streaming: false,
        }
    }

    /// The call's final status when it failed: the request's own fault first, if it had one.
    fn failure(&self, status: Status) -> Frame<Bytes> {
        let status = self.request_error.get().map_or(status, GatewayError::to_status);
        Frame::trailers(status_trailers(&status))
    }

    /// The next frame for the client, from one frame of the backend's.
    fn poll_one(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        if let Some(data) = self.held.take() {
            return Poll::Ready(Some(Frame::data(data)));
        }
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
        if !std::mem::replace(&mut this.streaming, true) {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        // Copied only when a second frame is there to join.
        let mut gathered: Option<BytesMut> = None;
        let mut frames = 1;
        while matches!(this.state, State::Streaming)
            && this.held.is_none()
            && frames < GATHER_FRAMES
            && gathered.as_ref().map_or(first.len(), BytesMut::len) < GATHER_BYTES
        {
            let Poll::Ready(Some(next)) = this.poll_one(cx) else { break };
            frames += 1;
            match next.into_data() {
                Ok(more) => {
                    let joined = gathered.as_ref().map_or(first.len(), BytesMut::len);
                    if joined + more.len() > GATHER_BYTES {
                        this.held = Some(more);
                    } else {
                        gathered
                            .get_or_insert_with(|| {
                                let mut buffer = BytesMut::with_capacity(first.len() + more.len());
                                buffer.extend_from_slice(&first);
                                buffer
                            })
                            .extend_from_slice(&more);
                    }
                }
                Err(trailers) => this.state = State::Ending(trailers),
            }
        }
        let data = gathered.map_or(first, BytesMut::freeze);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) && self.held.is_none()
    }

    /// Unknown: the reply may be cut short (a message too large, a deadline), so the backend's
    /// length must not become a `content-length` the client would hold the gateway to.
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::*;

    /// A backend's reply as a script: `None` is one `Pending` (with a wake-up) between frames.
    struct Scripted(VecDeque<Option<Result<Frame<Bytes>, GatewayError>>>);

    impl http_body::Body for Scripted {
        type Data = Bytes;
        type Error = GatewayError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, GatewayError>>> {
            match self.0.pop_front() {
                Some(Some(frame)) => Poll::Ready(Some(frame)),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None => Poll::Ready(None),
            }
        }
    }

    fn data(bytes: &[u8]) -> Option<Result<Frame<Bytes>, GatewayError>> {
        Some(Ok(Frame::data(Bytes::copy_from_slice(bytes))))
    }

    fn ok() -> Option<Result<Frame<Bytes>, GatewayError>> {
        Some(Ok(Frame::trailers(status_trailers(&Status::ok("")))))
    }

    /// What the client is sent: each DATA frame's bytes, then the trailers' `grpc-status`.
    fn replay(script: Vec<Option<Result<Frame<Bytes>, GatewayError>>>, limit: u32) -> (Vec<Bytes>, Option<String>) {
        let inner = Scripted(script.into()).boxed_unsync();
        let mut body = ReplyBody::new(inner, limit, RequestError::default());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (mut frames, mut status) = (Vec::new(), None);
        for _ in 0..1000 {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Pending => continue,
                Poll::Ready(None) => break,
                Poll::Ready(Some(frame)) => match frame.expect("frame").into_data() {
                    Ok(data) => frames.push(data),
                    Err(frame) => {
                        assert!(status.is_none(), "one set of trailers");
                        let trailers = frame.into_trailers().expect("trailers");
                        status = trailers.get("grpc-status").map(|v| v.to_str().expect("ascii").to_owned());
                    }
                },
            }
        }
        assert!(body.is_end_stream(), "the reply ends");
        (frames, status)
    }

    /// A gRPC message of `len` bytes of `fill`.
    fn message(fill: u8, len: usize) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&u32::try_from(len).expect("small").to_be_bytes());
        framed.resize(5 + len, fill);
        framed
    }

    #[test]
    fn frames_there_together_go_as_one_after_the_first_which_goes_at_once() {
        let (a, b, c, d) = (message(1, 3), message(2, 4), message(3, 5), message(4, 6));
        let script = vec![data(&a), data(&b), data(&c), None, data(&d), ok()];
        let (frames, status) = replay(script, 1024);
        assert_eq!(frames, vec![Bytes::from(a), Bytes::from([b, c].concat()), Bytes::from(d)]);
        assert_eq!(status.as_deref(), Some("0"));
    }

    #[test]
    fn a_frame_that_would_pass_the_size_goes_next_uncopied() {
        let (a, b, c) = (message(1, 1), message(2, 10_000), message(3, 10_000));
        let big = Bytes::from(message(4, 64 << 10));
        let script = vec![data(&a), data(&b), data(&c), Some(Ok(Frame::data(big.clone()))), ok()];
        let (frames, status) = replay(script, 1 << 20);
        let sizes: Vec<usize> = frames.iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![a.len(), b.len(), c.len(), big.len()]);
        assert_eq!(frames.concat(), [a, b, c, big.to_vec()].concat(), "in order");
        assert_eq!(frames[3].as_ptr(), big.as_ptr(), "the big frame is passed on, not copied");
        assert_eq!(status.as_deref(), Some("0"));
    }

    #[test]
    fn a_held_frame_goes_before_the_status_of_a_message_over_the_limit_behind_it() {
        let (a, b, c, too_big) = (message(1, 3), message(2, 10_000), message(3, 10_000), message(4, 20_000));
        let script = vec![data(&a), data(&b), data(&[c.clone(), too_big].concat()), ok()];
        let (frames, status) = replay(script, 12_000);
        // `c` is cut from the frame that carries the message over the limit, does not fit beside
        // `b`, and is held: it still goes before the status.
        let sizes: Vec<usize> = frames.iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![a.len(), b.len(), c.len()]);
        assert_eq!(frames.concat(), [a, b, c].concat());
        assert_eq!(status.as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
    }

    #[test]
    fn gathering_stops_at_its_size() {
        let messages: Vec<Vec<u8>> = (0..100).map(|i| message(i, 995)).collect();
        let script = messages.iter().map(|m| data(m)).chain([ok()]).collect();
        let (frames, _) = replay(script, 1024);
        assert!(
            frames.iter().all(|f| f.len() <= GATHER_BYTES),
            "{:?}",
            frames.iter().map(Bytes::len).collect::<Vec<_>>()
        );
        assert_eq!(frames.len(), 1 + 99usize.div_ceil(GATHER_BYTES / 1000), "16 of 1,000 bytes a frame");
        assert_eq!(frames.concat(), messages.concat());
    }

    #[test]
    fn an_error_after_gathered_frames_is_the_status_after_them() {
        let (a, b, c) = (message(1, 3), message(2, 3), message(3, 3));
        let broke = GatewayError::new(Code::Unavailable, Origin::Upstream, "the backend went away");
        let script = vec![data(&a), data(&b), data(&c), Some(Err(broke))];
        let (frames, status) = replay(script, 1024);
        assert_eq!(frames, vec![Bytes::from(a), Bytes::from([b, c].concat())]);
        assert_eq!(status.as_deref(), Some("14"));
    }

    #[test]
    fn a_message_over_the_limit_among_gathered_ones_ends_the_call_after_the_whole_ones() {
        let (a, b, c, too_big) = (message(1, 3), message(2, 3), message(3, 3), message(4, 100));
        let script = vec![data(&a), data(&b), data(&[c.clone(), too_big].concat()), data(&message(5, 3)), ok()];
        let (frames, status) = replay(script, 64);
        assert_eq!(frames, vec![Bytes::from(a), Bytes::from([b, c].concat())]);
        assert_eq!(status.as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
    }
}
