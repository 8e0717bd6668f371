//! The reply body as a gRPC client receives it: frames pass through untouched, and the call
//! always ends with trailers carrying `grpc-status` — an error mid-stream (deadline, lost
//! backend) becomes that status instead of a reset stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::Status;

use super::super::BoxError;
use crate::call::{Body, status_trailers};

/// Where the reply stands.
enum State {
    Streaming,
    /// Trailers were sent; nothing follows.
    Done,
}

pub(super) struct ReplyBody {
    inner: Body,
    state: State,
}

impl ReplyBody {
    pub(super) fn new(inner: Body) -> Self {
        ReplyBody { inner, state: State::Streaming }
    }
}

impl http_body::Body for ReplyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let State::Done = self.state {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_trailers() {
                    self.state = State::Done;
                }
                frame
            }
            Poll::Ready(Some(Err(e))) => {
                self.state = State::Done;
                Frame::trailers(status_trailers(&e.to_status()))
            }
            Poll::Ready(None) => {
                self.state = State::Done;
                let status = Status::internal("the backend ended the call without a status");
                Frame::trailers(status_trailers(&status))
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
