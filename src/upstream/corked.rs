//! Small writes to a backend held back for one turn of the worker's event loop, so that what
//! the worker's tasks queue for that backend meanwhile leaves in one syscall (a userspace
//! `TCP_CORK`).
//!
//! Why: h2 opens a stream before it lets its body be sent, so hyper writes a unary request's
//! HEADERS in one syscall and, a task later, its DATA in another — two packets, and two wake-ups
//! of the backend's reader. Held back, they go out together; and the PING ACK a gRPC backend asks
//! for with each reply (grpc-go's BDP probe) usually goes after the reply has been handed to the
//! client's connection instead of before it.
//!
//! A held write goes at the connection task's next poll: when another task wakes it (the request
//! body's DATA, say) or, at the latest, when the scheduler runs deferred tasks (tokio's
//! `yield_now`: once the run queue is empty, or every 61 polls). Writes of `CORK_LIMIT` bytes or
//! more, and the retry of a write the socket could not take, are not held: a big message's frames
//! gain nothing from waiting.

use std::future::Future;
use std::io::IoSlice;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes this big or bigger go at once.
const CORK_LIMIT: usize = 16 << 10;

pub(super) struct Corked<IO> {
    io: IO,
    /// The write now asked for may go: it was held once already, or the socket refused it.
    waited: bool,
}

impl<IO> Corked<IO> {
    pub(super) fn new(io: IO) -> Self {
        Corked { io, waited: false }
    }

    /// Ready when a write of `len` bytes may go: if it is big, or the second time it is asked for.
    fn wait_for_end_of_turn(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<()> {
        if std::mem::take(&mut self.waited) || len >= CORK_LIMIT {
            return Poll::Ready(());
        }
        self.waited = true;
        // Polled once, `yield_now` puts this task's waker on the scheduler's list of deferred
        // wake-ups (tokio 1.54: `context::defer`); dropping the future leaves it there.
        let _ = pin!(tokio::task::yield_now()).poll(cx);
        Poll::Pending
    }
}

/// The socket took less than all of a write (or none yet): the rest goes without being held again.
fn cut_short(written: &Poll<std::io::Result<usize>>, len: usize) -> bool {
    match written {
        Poll::Pending => true,
        Poll::Ready(Ok(n)) => *n < len,
        Poll::Ready(Err(_)) => false,
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Corked<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Corked<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.wait_for_end_of_turn(cx, buf.len()));
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.waited = cut_short(&written, buf.len());
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        std::task::ready!(self.wait_for_end_of_turn(cx, len));
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.waited = cut_short(&written, len);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::DuplexStream;

    use super::*;

    /// Each write that reaches the socket, as it was made.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    struct Recorded {
        io: DuplexStream,
        writes: Writes,
    }

    impl AsyncRead for Recorded {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recorded {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let written = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
            self.writes.0.lock().expect("writes").push(buf[..written].to_vec());
            Poll::Ready(Ok(written))
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// The types of the HTTP/2 frames in one write (whole frames: h2 writes no partial ones here).
    fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
        bytes = bytes.strip_prefix(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap_or(bytes);
        let mut types = Vec::new();
        while bytes.len() >= 9 {
            let length = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            types.push(bytes[3]);
            bytes = &bytes[(9 + length).min(bytes.len())..];
        }
        types
    }

    /// Sends unary-sized requests through hyper's HTTP/2 client, over a socket corked or not, to an
    /// h2 server, and returns the types of the frames in the write that carried the last one's
    /// HEADERS (0x1).
    async fn write_with_the_headers(cork: bool) -> Vec<u8> {
        let (client, server) = tokio::io::duplex(1 << 16);
        let writes = Writes::default();
        let recorded = Recorded { io: client, writes: writes.clone() };
        tokio::spawn(async move {
            let mut connection = h2::server::handshake(server).await.expect("server handshake");
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                tokio::spawn(async move {
                    let mut body = request.into_body();
                    while body.data().await.is_some() {}
                    let _ = respond.send_response(http::Response::new(()), true);
                });
            }
        });
        let executor = TokioExecutor::new();
        let (mut sender, connection) = if cork {
            let io = TokioIo::new(Corked::new(recorded));
            let (sender, connection) = hyper::client::conn::http2::handshake(executor, io).await.expect("handshake");
            (sender, tokio::spawn(async move { drop(connection.await) }))
        } else {
            let io = TokioIo::new(recorded);
            let (sender, connection) = hyper::client::conn::http2::handshake(executor, io).await.expect("handshake");
            (sender, tokio::spawn(async move { drop(connection.await) }))
        };
        // The second call, on a connection whose start (SETTINGS and their ACKs) is over.
        for _ in 0..2 {
            writes.0.lock().expect("writes").clear();
            let request = http::Request::post("http://backend/x.Y/Z")
                .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02\x08\x2a")));
            let response = sender.send_request(request.expect("request")).await.expect("answered");
            assert_eq!(response.status(), 200);
        }
        connection.abort();
        let writes = writes.0.lock().expect("writes").clone();
        writes.iter().map(|write| frame_types(write)).find(|types| types.contains(&1)).expect("HEADERS written")
    }

    #[tokio::test]
    async fn a_requests_headers_and_data_leave_in_one_write() {
        let within = |cork| tokio::time::timeout(std::time::Duration::from_secs(10), write_with_the_headers(cork));
        let types = within(true).await.expect("no hang");
        assert!(types.contains(&0), "DATA (0x0) in the write with the HEADERS: {types:?}");
        // Without the cork they leave apart: the test can tell.
        let types = within(false).await.expect("no hang");
        assert!(!types.contains(&0), "uncorked, hyper writes the HEADERS alone: {types:?}");
    }
}
