//! What every socket needs whatever it carries: one writer behind a bounded queue, pings, and the
//! clocks of the keep-alive and the idle timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub(super) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Frames waiting for the writer. Small: a client that reads slowly holds back whoever writes
/// (a call's reply pump, and so its backend through HTTP/2 flow control) instead of letting
/// frames pile up here.
pub(super) const QUEUE: usize = 4;

/// Writes queued frames until the queue closes or a close frame is written: what is queued (up to
/// [`QUEUE`] frames) is written, then flushed once. A frame or a flush that takes longer than
/// `stall` ends the writer (and with it the socket: its session sees the queue close): a client
/// that stops reading cannot hold the socket, and its place under the server's limits, for ever.
/// When the queue closes first, a close the client started is answered (RFC 6455 5.5.1).
pub(super) async fn write(
    mut sink: SplitSink<Socket, Message>,
    mut queue: mpsc::Receiver<Message>,
    clocks: &Clocks,
    stall: Duration,
) {
    let frames = async {
        while let Some(first) = queue.recv().await {
            let (mut next, mut written) = (Some(first), 0);
            while let Some(frame) = next.take() {
                let closing = matches!(frame, Message::Close(_));
                clocks.writing();
                if matches!(frame, Message::Ping(_)) {
                    // Stamped as it goes: its answer may be read before this batch is flushed.
                    clocks.ping_written.store(clocks.now(), Ordering::Relaxed);
                }
                sink.feed(frame).await?;
                if closing {
                    return sink.flush().await;
                }
                written += 1;
                if written < QUEUE {
                    next = queue.try_recv().ok();
                }
            }
            clocks.writing();
            sink.flush().await?;
            clocks.writing_since.store(NOT_WRITING, Ordering::Relaxed);
        }
        clocks.writing();
        sink.close().await
    };
    tokio::select! {
        _ = frames => {}
        () = clocks.stalled(stall) => {}
    }
}

/// After its close frame went out, a socket waits this long for the client's, as RFC 6455 asks
/// (the server closes the TCP connection once the client has answered), then drops it.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Reads and drops whatever comes until the client's close frame (or the end of the connection),
/// at most [`CLOSE_WAIT`].
pub(super) async fn await_close(stream: &mut futures_util::stream::SplitStream<Socket>) {
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
}

const NOT_READING: u64 = u64::MAX;
const NOT_WRITING: u64 = u64::MAX;
const NEVER: u64 = u64::MAX;

/// When the client was last heard from and when a message last passed either way.
pub(super) struct Clocks {
    start: Instant,
    /// Milliseconds after `start`: when the reader last started waiting on the socket.
    reading_since: AtomicU64,
    /// ...when a message last passed, either way.
    message: AtomicU64,
    /// ...when a ping was last written out to the client (`NEVER` before the first).
    ping_written: AtomicU64,
    /// ...when the writer started the frame or flush it is in (one timer per socket watches it,
    /// rather than one per write).
    writing_since: AtomicU64,
}

impl Clocks {
    pub(super) fn new() -> Self {
        Clocks {
            start: Instant::now(),
            reading_since: AtomicU64::new(0),
            message: AtomicU64::new(0),
            writing_since: AtomicU64::new(NOT_WRITING),
            ping_written: AtomicU64::new(NEVER),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The reader starts waiting for the client's next frame: silence counts from now...
    pub(super) fn reading(&self) {
        self.reading_since.store(self.now(), Ordering::Relaxed);
    }

    /// ...and not while the reader waits for a call to take a message (backpressure), when
    /// frames, pongs included, stay unread.
    pub(super) fn paused(&self) {
        self.reading_since.store(NOT_READING, Ordering::Relaxed);
    }

    /// A message passed, either way.
    pub(super) fn message(&self) {
        self.message.store(self.now(), Ordering::Relaxed);
    }

    /// Pings the client every `interval`; resolves when a ping written out to it has had no
    /// answer (nor any other frame) for two intervals. Pings queue behind the frames before them,
    /// and the clock starts when the writer has written one, so a client reading a long backlog
    /// slowly is not taken for a dead one; a client that reads nothing at all is the writer's
    /// stall timer's to find. While the reader waits for a call to take a message (frames, pongs
    /// among them, stay unread) nothing is counted.
    pub(super) async fn keepalive(&self, queue: &mpsc::Sender<Message>, interval: Duration) {
        let limit = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).saturating_mul(2);
        loop {
            tokio::time::sleep(interval).await;
            let heard = self.reading_since.load(Ordering::Relaxed);
            if heard == NOT_READING {
                continue;
            }
            let pinged = self.ping_written.load(Ordering::Relaxed);
            if pinged != NEVER && heard < pinged {
                // A ping is out, unanswered.
                if self.now().saturating_sub(pinged) > limit {
                    return;
                }
                continue;
            }
            // A full queue: the ping waits for the next round.
            let _ = queue.try_send(Message::Ping(bytes::Bytes::new()));
        }
    }

    /// The writer starts a write.
    fn writing(&self) {
        self.writing_since.store(self.now(), Ordering::Relaxed);
    }

    /// Resolves once a write has been in progress for longer than `stall`.
    async fn stalled(&self, stall: Duration) {
        let limit = u64::try_from(stall.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::time::sleep(stall / 2).await;
            let since = self.writing_since.load(Ordering::Relaxed);
            if since != NOT_WRITING && self.now().saturating_sub(since) > limit {
                return;
            }
        }
    }

    /// Resolves once no message has passed either way for `timeout`.
    pub(super) async fn idle(&self, timeout: Duration) {
        loop {
            let last = self.message.load(Ordering::Relaxed);
            let at = self.start.checked_add(Duration::from_millis(last)).and_then(|t| t.checked_add(timeout));
            let Some(at) = at else { return std::future::pending().await };
            tokio::time::sleep_until(at).await;
            if self.message.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}
