//! A client-streaming request body: newline-delimited JSON, one message per line, framed and
//! passed on as each line arrives — the backend sees the first message before the client has
//! sent the last. A plain single JSON object (no newline at the end) is one message. The end of
//! the body half-closes the call; responses keep streaming.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use tonic::Code;

use super::request;
use super::routes::Route;
use crate::config::RestOptions;
use crate::error::{GatewayError, Origin};
use crate::transcode::framing;
use crate::transcode::ndjson::Lines;

/// How far a request stream has got, for the response to follow: its first bad line (the call
/// itself is only reset by it), and whether the first line was read at all.
#[derive(Debug, Default)]
pub(super) struct Progress {
    error: OnceLock<GatewayError>,
    begun: AtomicBool,
    changed: tokio::sync::Notify,
}

impl Progress {
    /// The stream's error, if a line was bad (or the body broke off).
    pub(super) fn error(&self) -> Option<&GatewayError> {
        self.error.get()
    }

    /// Waits until the first line was read, or the stream ended or failed before it: so that a
    /// bad first line gets its own HTTP status rather than a 200 and an error in the stream.
    pub(super) async fn begun(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.begun.load(Ordering::Acquire) {
                return;
            }
            changed.await;
        }
    }

    fn begin(&self) {
        if !self.begun.swap(true, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
    }

    fn fail(&self, error: GatewayError) {
        let _ = self.error.set(error);
        self.begin();
    }
}

pub(super) struct RequestStream {
    body: Incoming,
    lines: Lines,
    route: Arc<Route>,
    bound: Vec<(usize, String)>,
    options: Arc<RestOptions>,
    progress: Arc<Progress>,
    ended: bool,
}

impl RequestStream {
    pub(super) fn new(
        body: Incoming,
        route: Arc<Route>,
        bound: Vec<(usize, String)>,
        options: Arc<RestOptions>,
        progress: Arc<Progress>,
    ) -> Self {
        RequestStream { body, lines: Lines::default(), route, bound, options, progress, ended: false }
    }

    /// Frames the next complete line (or, at the end, the rest), skipping blank ones.
    fn next_line(&mut self, at_end: bool) -> Option<Result<Bytes, GatewayError>> {
        let (number, line) = if at_end { self.lines.finish()? } else { self.lines.next_line()? };
        Some(self.frame(&line).map_err(|mut e| {
            e.message = format!("line {number} of the request stream: {}", e.message);
            e
        }))
    }

    fn frame(&self, line: &[u8]) -> Result<Bytes, GatewayError> {
        let message = request::stream_message(&self.route, &self.bound, line, &self.options)?;
        framing::encode(&message, self.options.max_message_size)
            .map_err(|e| GatewayError::new(Code::ResourceExhausted, Origin::Client, e.to_string()))
    }

    fn fail(&mut self, error: GatewayError) -> Poll<Option<Result<Frame<Bytes>, GatewayError>>> {
        self.ended = true;
        self.progress.fail(error.clone());
        Poll::Ready(Some(Err(error)))
    }
}

/// A stream dropped unread (the backend answered without reading it) has begun all it will.
impl Drop for RequestStream {
    fn drop(&mut self) {
        self.progress.begin();
    }
}

impl http_body::Body for RequestStream {
    type Data = Bytes;
    type Error = GatewayError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, GatewayError>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            match self.next_line(false) {
                Some(Ok(frame)) => {
                    self.progress.begin();
                    return Poll::Ready(Some(Ok(Frame::data(frame))));
                }
                Some(Err(e)) => return self.fail(e),
                None => {}
            }
            if self.lines.pending() as u64 > self.options.max_request_body_size {
                let message =
                    format!("a line of the request stream is longer than {} bytes", self.options.max_request_body_size);
                return self.fail(GatewayError::new(Code::ResourceExhausted, Origin::Client, message));
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let message = format!("the request stream broke off: {e}");
                    return self.fail(GatewayError::new(Code::Cancelled, Origin::Client, message));
                }
                Poll::Ready(None) => {
                    let last = self.next_line(true);
                    self.ended = true;
                    if let Some(Err(e)) = last {
                        return self.fail(e);
                    }
                    self.progress.begin();
                    return Poll::Ready(last.map(|frame| frame.map(Frame::data)));
                }
            }
        }
    }
}
