//! The backend's limit on concurrent streams, read off the wire.
//!
//! hyper's HTTP/2 client queues requests without bound once a connection reaches the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS`, and does not say what that limit is; nor does its handshake
//! wait for the server to speak at all. So the connection's reads are watched: frame headers are
//! followed (payloads skipped, a few comparisons per frame), every SETTINGS frame's limit is
//! published for the endpoint to count streams against, and the first one — which RFC 9113, 3.4,
//! requires as the server's first frame — tells the dial that the backend really is an HTTP/2
//! server that answers.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, oneshot};

/// Unlimited, RFC 9113's initial value, until the server says otherwise.
pub(super) const UNLIMITED: u32 = u32::MAX;

/// SETTINGS frame type and the MAX_CONCURRENT_STREAMS identifier (RFC 9113, 6.5).
const SETTINGS: u8 = 0x4;
const ACK: u8 = 0x1;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// GOAWAY frame type (RFC 9113, 6.8).
const GOAWAY: u8 = 0x7;

/// A SETTINGS payload larger than this is not believed (h2 refuses frames over its maximum frame
/// size anyway); the parser then stops following the connection.
const MAX_SETTINGS_PAYLOAD: usize = 64 << 10;

/// Follows frames as they go by.
#[derive(Debug, Default)]
struct Parser {
    /// The frame header being read.
    header: Vec<u8>,
    /// The SETTINGS payload being read.
    settings: Vec<u8>,
    /// Payload bytes still to come of the current frame.
    remaining: usize,
    /// The current frame is a SETTINGS frame whose payload is collected.
    collecting: bool,
    /// The server has sent GOAWAY: it takes no new streams on this connection.
    goaway: bool,
    lost: bool,
}

impl Parser {
    /// Follows received bytes. When a SETTINGS frame completes in them: `Some` of the limit it
    /// sets, if it sets one (the last such frame's, when several complete).
    fn feed(&mut self, mut bytes: &[u8]) -> Option<Option<u32>> {
        let mut found = None;
        while !self.lost && !bytes.is_empty() {
            if self.remaining == 0 && self.header.len() < 9 {
                let n = (9 - self.header.len()).min(bytes.len());
                self.header.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.header.len() < 9 {
                    break;
                }
                let length = u32::from_be_bytes([0, self.header[0], self.header[1], self.header[2]]) as usize;
                self.collecting = self.header[3] == SETTINGS && self.header[4] & ACK == 0;
                self.goaway |= self.header[3] == GOAWAY;
                if self.collecting && length > MAX_SETTINGS_PAYLOAD {
                    self.lost = true;
                    break;
                }
                self.remaining = length;
                if length > 0 {
                    continue;
                }
            } else {
                let n = self.remaining.min(bytes.len());
                if self.collecting {
                    self.settings.extend_from_slice(&bytes[..n]);
                }
                self.remaining -= n;
                bytes = &bytes[n..];
                if self.remaining > 0 {
                    continue;
                }
            }
            // A frame is complete.
            if self.collecting {
                let limit = self
                    .settings
                    .chunks_exact(6)
                    .filter(|s| u16::from_be_bytes([s[0], s[1]]) == MAX_CONCURRENT_STREAMS)
                    .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
                    .next_back();
                // A later frame that does not mention the limit leaves an earlier one's standing.
                if limit.is_some() || found.is_none() {
                    found = Some(limit);
                }
                self.settings.clear();
                self.collecting = false;
            }
            self.header.clear();
        }
        found
    }
}

/// What the frames have told about a connection, shared with its endpoint.
#[derive(Debug)]
pub(super) struct Heard {
    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub(super) limit: AtomicU32,
    /// The server sent GOAWAY: the connection only finishes the streams it has.
    pub(super) draining: AtomicBool,
    /// Told when the limit rises (streams waiting for room may go).
    pub(super) roomier: Arc<Notify>,
}

impl Heard {
    pub(super) fn new(roomier: Arc<Notify>) -> Self {
        Heard { limit: AtomicU32::new(UNLIMITED), draining: AtomicBool::new(false), roomier }
    }
}

/// A backend connection whose reads are watched for the server's SETTINGS and GOAWAY.
pub(super) struct Sniffed<IO> {
    io: IO,
    parser: Parser,
    heard: Arc<Heard>,
    /// Told when the server's first SETTINGS frame has arrived.
    spoke: Option<oneshot::Sender<()>>,
}

impl<IO> Sniffed<IO> {
    pub(super) fn new(io: IO, heard: Arc<Heard>, spoke: oneshot::Sender<()>) -> Self {
        Sniffed { io, parser: Parser::default(), heard, spoke: Some(spoke) }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Sniffed<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let this = &mut *self;
        if let Some(limit) = this.parser.feed(&buf.filled()[before..]) {
            // A SETTINGS frame that does not mention the limit leaves it as it was.
            if let Some(limit) = limit {
                let old = this.heard.limit.swap(limit, Ordering::Relaxed);
                if limit > old {
                    this.heard.roomier.notify_waiters();
                }
            }
            if let Some(spoke) = this.spoke.take() {
                let _ = spoke.send(());
            }
        }
        if this.parser.goaway && !this.heard.draining.swap(true, Ordering::Relaxed) {
            // Calls waiting for room look elsewhere (the endpoint dials anew).
            this.heard.roomier.notify_waiters();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Sniffed<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
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
    use super::*;

    fn settings(entries: &[(u16, u32)], flags: u8) -> Vec<u8> {
        let len = entries.len() * 6;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, SETTINGS, flags, 0, 0, 0, 0];
        for (id, value) in entries {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&value.to_be_bytes());
        }
        out
    }

    #[test]
    fn the_limit_is_read_whatever_the_chunking() {
        let mut wire = settings(&[(0x4, 65535), (MAX_CONCURRENT_STREAMS, 2)], 0);
        wire.extend_from_slice(&settings(&[], ACK));
        // A DATA frame with a payload that looks like SETTINGS, then a change of the limit.
        wire.extend_from_slice(&[0, 0, 9, 0x0, 0, 0, 0, 0, 1]);
        wire.extend_from_slice(&settings(&[(MAX_CONCURRENT_STREAMS, 9)], 0)[..9]);
        wire.extend_from_slice(&settings(&[(MAX_CONCURRENT_STREAMS, 7)], 0));
        for size in 1..wire.len() {
            let mut parser = Parser::default();
            let found: Vec<Option<u32>> = wire.chunks(size).filter_map(|c| parser.feed(c)).collect();
            assert_eq!(found, [Some(2), Some(7)], "chunks of {size}");
        }
    }

    #[test]
    fn a_later_frame_without_the_limit_leaves_it_standing() {
        let mut wire = settings(&[(MAX_CONCURRENT_STREAMS, 2)], 0);
        wire.extend_from_slice(&settings(&[(0x4, 65535)], 0));
        assert_eq!(Parser::default().feed(&wire), Some(Some(2)), "both frames in one read");
    }

    #[test]
    fn goaway_is_noticed() {
        let mut parser = Parser::default();
        parser.feed(&settings(&[], 0));
        assert!(!parser.goaway);
        parser.feed(&[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert!(parser.goaway);
    }

    #[test]
    fn settings_without_the_limit_leave_it_alone() {
        let mut parser = Parser::default();
        assert_eq!(parser.feed(&settings(&[(0x4, 65535)], 0)), Some(None));
        assert_eq!(parser.feed(&settings(&[(MAX_CONCURRENT_STREAMS, 0)], 0)), Some(Some(0)));
    }

    #[test]
    fn an_oversized_settings_frame_is_not_believed() {
        let mut parser = Parser::default();
        let header = [0xff, 0xff, 0xff, SETTINGS, 0, 0, 0, 0, 0];
        assert_eq!(parser.feed(&header), None);
        assert_eq!(parser.feed(&settings(&[(MAX_CONCURRENT_STREAMS, 1)], 0)), None, "stopped following");
    }
}

/// Properties over any bytes in any chunks: what a backend sends first is not trusted.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Frames of any type, flags and settings (SETTINGS likelier), then anything; or any bytes.
    fn wire() -> impl Strategy<Value = Vec<u8>> {
        let entry = (prop_oneof![Just(MAX_CONCURRENT_STREAMS), any::<u16>()], any::<u32>());
        let frame = (
            prop_oneof![Just(SETTINGS), any::<u8>()],
            prop_oneof![Just(0u8), Just(ACK), any::<u8>()],
            prop::collection::vec(entry, 0..4),
            0..3usize,
        )
            .prop_map(|(kind, flags, entries, extra)| {
                // `extra` payload bytes that are no whole entry: ignored.
                let len = entries.len() * 6 + extra;
                let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags, 0, 0, 0, 0];
                for (id, value) in entries {
                    out.extend_from_slice(&id.to_be_bytes());
                    out.extend_from_slice(&value.to_be_bytes());
                }
                out.extend(std::iter::repeat_n(0xee, extra));
                out
            });
        let framed = (prop::collection::vec(frame, 1..5), prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(frames, rest)| frames.into_iter().flatten().chain(rest).collect());
        prop_oneof![framed, prop::collection::vec(any::<u8>(), 0..40)]
    }

    /// What the frames say, read independently of the parser: whether a SETTINGS frame came,
    /// and the limit the last of them to mention one set.
    fn expected(wire: &[u8]) -> (bool, u32) {
        let (mut spoke, mut limit) = (false, UNLIMITED);
        let mut at = 0;
        while let Some(header) = wire.get(at..at + 9) {
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let settings = header[3] == SETTINGS && header[4] & ACK == 0;
            if settings && len > MAX_SETTINGS_PAYLOAD {
                break;
            }
            let Some(payload) = wire.get(at + 9..at + 9 + len) else { break };
            if settings {
                spoke = true;
                // The last MAX_CONCURRENT_STREAMS wins (RFC 9113, 6.5: processed in order).
                for setting in payload.chunks_exact(6) {
                    if setting[..2] == MAX_CONCURRENT_STREAMS.to_be_bytes() {
                        limit = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                    }
                }
            }
            at += 9 + len;
        }
        (spoke, limit)
    }

    /// Feeds the chunks as a connection would, applying what each read says.
    fn follow<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (bool, u32) {
        let mut parser = Parser::default();
        let (mut spoke, mut limit) = (false, UNLIMITED);
        for chunk in chunks {
            if let Some(found) = parser.feed(chunk) {
                spoke = true;
                limit = found.unwrap_or(limit);
            }
        }
        (spoke, limit)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn the_same_limit_whatever_the_chunking(wire in wire(), sizes in prop::collection::vec(1..12usize, 1..6)) {
            prop_assert_eq!(follow(std::iter::once(&wire[..])), expected(&wire));
            let mut chunks = Vec::new();
            let mut rest = &wire[..];
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*size).min(rest.len()));
                chunks.push(chunk);
                rest = tail;
            }
            prop_assert_eq!(follow(chunks.into_iter()), expected(&wire));
        }
    }
}
