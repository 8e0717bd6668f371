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
use crate::frontends::offload;
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

/// A big line being framed off the worker.
type Framing = Pin<Box<dyn Future<Output = Result<Bytes, GatewayError>> + Send>>;

/// What `poll_frame` answers.
type Polled = Poll<Option<Result<Frame<Bytes>, GatewayError>>>;

pub(super) struct RequestStream {
    body: Incoming,
    lines: Lines,
    route: Arc<Route>,
    bound: Vec<(usize, String)>,
    options: Arc<RestOptions>,
    progress: Arc<Progress>,
    /// A line too big to parse on the worker, on its way through the blocking pool.
    framing: Option<Framing>,
    /// The client's body has ended (its last line may still be framing).
    drained: bool,
    /// A line failed: nothing more is sent.
    failed: bool,
}

impl RequestStream {
    pub(super) fn new(
        body: Incoming,
        route: Arc<Route>,
        bound: Vec<(usize, String)>,
        options: Arc<RestOptions>,
        progress: Arc<Progress>,
    ) -> Self {
        RequestStream {
            body,
            lines: Lines::default(),
            route,
            bound,
            options,
            progress,
            framing: None,
            drained: false,
            failed: false,
        }
    }

    /// Frames a line here, or starts framing it off the worker when it is big (then `None`).
    fn take(&mut self, number: usize, line: Bytes) -> Option<Polled> {
        let numbered = move |mut e: GatewayError| {
            e.message = format!("line {number} of the request stream: {}", e.message);
            e
        };
        if line.len() as u64 > self.options.max_request_body_size {
            return Some(self.too_long());
        }
        if !offload::is_big(line.len()) {
            let framed = frame(&self.route, &self.bound, &line, &self.options).map_err(numbered);
            return Some(self.deliver(framed));
        }
        let (route, bound, options) = (self.route.clone(), self.bound.clone(), self.options.clone());
        let work = offload::run(move || frame(&route, &bound, &line, &options));
        self.framing = Some(Box::pin(async move { work.await.and_then(|framed| framed).map_err(numbered) }));
        None
    }

    fn deliver(&mut self, framed: Result<Bytes, GatewayError>) -> Polled {
        match framed {
            Ok(frame) => {
                self.progress.begin();
                Poll::Ready(Some(Ok(Frame::data(frame))))
            }
            Err(error) => self.fail(error),
        }
    }

    /// A line over `max_request_body_size`, whole or still arriving.
    fn too_long(&mut self) -> Polled {
        let message =
            format!("a line of the request stream is longer than {} bytes", self.options.max_request_body_size);
        self.fail(GatewayError::new(Code::ResourceExhausted, Origin::Client, message))
    }

    fn fail(&mut self, error: GatewayError) -> Polled {
        self.failed = true;
        self.progress.fail(error.clone());
        Poll::Ready(Some(Err(error)))
    }
}

/// One line as the message it holds, framed.
fn frame(route: &Route, bound: &[(usize, String)], line: &[u8], options: &RestOptions) -> Result<Bytes, GatewayError> {
    let message = request::stream_message(route, bound, line, options)?;
    framing::encode(&message, options.max_message_size)
        .map_err(|e| GatewayError::new(Code::ResourceExhausted, Origin::Client, e.to_string()))
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

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        loop {
            if let Some(framing) = self.framing.as_mut() {
                let framed = std::task::ready!(framing.as_mut().poll(cx));
                self.framing = None;
                return self.deliver(framed);
            }
            if self.failed {
                return Poll::Ready(None);
            }
            if let Some((number, line)) = self.lines.next_line() {
                match self.take(number, line) {
                    Some(delivered) => return delivered,
                    None => continue,
                }
            }
            if self.drained {
                // The rest after the last newline is a last line.
                let Some((number, line)) = self.lines.finish() else {
                    self.progress.begin();
                    return Poll::Ready(None);
                };
                match self.take(number, line) {
                    Some(delivered) => return delivered,
                    None => continue,
                }
            }
            if self.lines.pending() as u64 > self.options.max_request_body_size {
                return self.too_long();
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
                Poll::Ready(None) => self.drained = true,
            }
        }
    }
}
