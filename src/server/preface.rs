//! The first bytes of a connection, read under a deadline before the connection is handed to
//! hyper, then given back to it unread.
//!
//! hyper bounds the time an HTTP/1.1 client takes to send its request head, but nothing bounds
//! how long a client may take to send its first bytes (the version is only known from them), so
//! a connection that sends nothing, or half the HTTP/2 preface, would be held open for ever
//! (slowloris). As Go's HTTP/2 server does with its preface timeout, the gateway gives each
//! connection `header_read_timeout` to show which protocol it speaks.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// HTTP/2's connection preface (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the connection's first bytes within `timeout`: the whole HTTP/2 preface, or as soon as
/// the bytes cannot be it (HTTP/1.1: hyper times the rest of the head). None when the client
/// sends nothing in time or closes first.
pub(super) async fn read<S: AsyncRead + Unpin>(mut stream: S, timeout: Duration) -> Option<Prefixed<S>> {
    let mut first = Vec::with_capacity(PREFACE.len());
    let reading = async {
        loop {
            let mut chunk = [0u8; PREFACE.len()];
            let wanted = PREFACE.len() - first.len();
            let n = stream.read(&mut chunk[..wanted]).await.ok()?;
            if n == 0 {
                return None;
            }
            first.extend_from_slice(&chunk[..n]);
            if first.len() == PREFACE.len() || !PREFACE.starts_with(&first) {
                return Some(());
            }
        }
    };
    tokio::time::timeout(timeout, reading).await.ok()??;
    Some(Prefixed { first, offset: 0, stream })
}

impl<S> Prefixed<S> {
    /// Whether the client opened with HTTP/2's preface (h2c, or h2 over TLS).
    pub(super) fn is_http2(&self) -> bool {
        self.first == PREFACE
    }
}

/// A connection whose first bytes were already read: they are read again first.
pub(super) struct Prefixed<S> {
    first: Vec<u8>,
    offset: usize,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.offset < self.first.len() {
            let n = buf.remaining().min(self.first.len() - self.offset);
            let start = self.offset;
            buf.put_slice(&self.first[start..start + n]);
            self.offset += n;
            if self.offset == self.first.len() {
                self.first = Vec::new();
                self.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
