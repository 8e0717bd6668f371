//! gRPC message framing (gRPC over HTTP/2, "Length-Prefixed-Message"): a compression flag byte,
//! a 4-byte big-endian length, the message. The transcoding frontends frame what they send into
//! the core and deframe what comes back; native gRPC never needs this.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("the backend sent a compressed message, but none was asked for")]
    Compressed,
    #[error("the stream ended in the middle of a message")]
    Truncated,
    #[error("a message of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: u32, limit: u32 },
}

/// Encodes a message straight into its frame: one buffer, no copy. A message over `limit` is
/// refused before anything is allocated for it.
pub fn encode<M: prost::Message>(message: &M, limit: u32) -> Result<Bytes, FramingError> {
    let len = message.encoded_len();
    if len > limit as usize {
        return Err(FramingError::TooLarge { size: u32::try_from(len).unwrap_or(u32::MAX), limit });
    }
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // `encode` would compute encoded_len again (a second walk of a DynamicMessage) to check the
    // room that was just reserved.
    message.encode_raw(&mut out);
    Ok(out.freeze())
}

/// Frames a message that is already encoded (a protobuf message as a client sent it).
pub fn frame_encoded(message: &[u8], limit: u32) -> Result<Bytes, FramingError> {
    let size = u32::try_from(message.len()).unwrap_or(u32::MAX);
    if message.len() > limit as usize {
        return Err(FramingError::TooLarge { size, limit });
    }
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(size);
    out.put_slice(message);
    Ok(out.freeze())
}

/// Splits a byte stream into messages, whatever the chunking. A length prefix over the limit is
/// an error before any of that message is buffered.
#[derive(Debug)]
pub struct Deframer {
    buffer: BytesMut,
    limit: u32,
}

impl Deframer {
    pub fn new(limit: u32) -> Self {
        Deframer { buffer: BytesMut::new(), limit }
    }

    /// Adds received bytes. A chunk arriving on an empty buffer is taken over without a copy
    /// when nothing else holds it (the common case: one message per HTTP/2 DATA frame).
    pub fn push(&mut self, chunk: Bytes) {
        if self.buffer.is_empty() {
            self.buffer = chunk.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        } else {
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The next complete message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FramingError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        if self.buffer[0] != 0 {
            return Err(FramingError::Compressed);
        }
        let size = u32::from_be_bytes([self.buffer[1], self.buffer[2], self.buffer[3], self.buffer[4]]);
        if size > self.limit {
            return Err(FramingError::TooLarge { size, limit: self.limit });
        }
        let len = size as usize;
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        self.buffer.advance(5);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }

    /// At the end of the stream: leftover bytes are a truncated message.
    pub fn finish(&self) -> Result<(), FramingError> {
        if self.buffer.is_empty() { Ok(()) } else { Err(FramingError::Truncated) }
    }
}

/// Watches gRPC frames go by without buffering them, and finds the first length prefix over the
/// limit: what passthrough uses to bound message sizes at the cost of a few comparisons per
/// chunk.
#[derive(Debug)]
pub struct SizeGuard {
    limit: u32,
    /// The length prefix being read, and how much of it has been seen.
    header: [u8; 5],
    header_seen: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl SizeGuard {
    pub fn new(limit: u32) -> Self {
        SizeGuard { limit, header: [0; 5], header_seen: 0, remaining: 0 }
    }

    /// Follows a chunk of the stream. On a message over the limit, the error and the offset in
    /// this chunk where that message's frame begins (what comes before it is whole messages).
    pub fn check(&mut self, mut chunk: &[u8]) -> Result<(), (usize, FramingError)> {
        let total = chunk.len();
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(chunk.len());
                self.remaining -= n as u64;
                chunk = &chunk[n..];
                continue;
            }
            let start = total - chunk.len();
            let n = (5 - self.header_seen).min(chunk.len());
            self.header[self.header_seen..self.header_seen + n].copy_from_slice(&chunk[..n]);
            self.header_seen += n;
            chunk = &chunk[n..];
            if self.header_seen == 5 {
                self.header_seen = 0;
                let size = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]);
                if size > self.limit {
                    // The frame began in an earlier chunk when its prefix was split: offset 0.
                    let begins = start.saturating_sub(5 - n);
                    return Err((begins, FramingError::TooLarge { size, limit: self.limit }));
                }
                self.remaining = u64::from(size);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(0);
        out.put_u32(u32::try_from(message.len()).expect("small"));
        out.put_slice(message);
        out.freeze()
    }

    #[test]
    fn messages_split_across_chunks_come_out_whole() {
        let mut wire = frame(b"hello").to_vec();
        wire.extend_from_slice(&frame(b""));
        wire.extend_from_slice(&frame(&[7u8; 300]));
        let mut deframer = Deframer::new(u32::MAX);
        let mut out = Vec::new();
        for chunk in wire.chunks(3) {
            deframer.push(Bytes::copy_from_slice(chunk));
            while let Some(message) = deframer.next_message().expect("valid") {
                out.push(message);
            }
        }
        assert_eq!(out.len(), 3);
        assert_eq!(&out[0][..], b"hello");
        assert!(out[1].is_empty());
        assert_eq!(out[2].len(), 300);
        assert!(deframer.finish().is_ok());
    }

    #[test]
    fn compressed_and_truncated_frames_are_errors() {
        let mut deframer = Deframer::new(u32::MAX);
        deframer.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9]));
        assert_eq!(deframer.next_message(), Err(FramingError::Compressed));
        let mut deframer = Deframer::new(u32::MAX);
        deframer.push(Bytes::from_static(&[0, 0, 0, 0, 9, 1]));
        assert_eq!(deframer.next_message(), Ok(None));
        assert_eq!(deframer.finish(), Err(FramingError::Truncated));
    }

    #[test]
    fn oversized_messages_are_refused_from_their_prefix() {
        let mut deframer = Deframer::new(4);
        deframer.push(frame(b"four"));
        assert_eq!(deframer.next_message().map(|m| m.map(|b| b.len())), Ok(Some(4)));
        deframer.push(Bytes::from_static(&[0, 0, 0, 0, 5]));
        assert_eq!(deframer.next_message(), Err(FramingError::TooLarge { size: 5, limit: 4 }));
    }

    #[test]
    fn the_size_guard_finds_the_oversized_frame_whatever_the_chunking() {
        let mut wire = frame(b"ok").to_vec();
        wire.extend_from_slice(&frame(b"also"));
        let big_at = wire.len();
        wire.extend_from_slice(&frame(b"too big"));
        for size in 1..=wire.len() {
            let mut guard = SizeGuard::new(4);
            let mut passed = 0;
            let mut refused = None;
            for chunk in wire.chunks(size) {
                match guard.check(chunk) {
                    Ok(()) => passed += chunk.len(),
                    Err((offset, error)) => {
                        refused = Some((passed + offset, error));
                        break;
                    }
                }
            }
            let (at, error) = refused.expect("refused");
            assert_eq!(error, FramingError::TooLarge { size: 7, limit: 4 });
            // Where the big frame begins, or, when its prefix was split over chunks, the start of
            // the chunk that completes it: never past its prefix, never before it.
            assert!(at >= big_at && at < big_at + 5, "chunks of {size}: at {at}");
        }
        let mut guard = SizeGuard::new(4);
        assert!(guard.check(&wire[..big_at]).is_ok(), "frames within the limit pass");
    }
}

/// Properties over any bytes in any chunks: frames come from clients and backends.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// What a whole stream deframes to: the messages, then an error or the end's verdict.
    type Outcome = (Vec<Bytes>, Result<(), FramingError>);

    fn deframe<'a>(limit: u32, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut deframer = Deframer::new(limit);
        let mut messages = Vec::new();
        for chunk in chunks {
            deframer.push(Bytes::copy_from_slice(chunk));
            loop {
                match deframer.next_message() {
                    Ok(Some(message)) => messages.push(message),
                    Ok(None) => break,
                    Err(e) => return (messages, Err(e)),
                }
            }
        }
        (messages, deframer.finish())
    }

    /// The first frame whose length prefix is over the limit: where it begins, and its size.
    /// The flag byte is not looked at (passthrough carries compressed messages).
    fn first_oversized(wire: &[u8], limit: u32) -> Option<(usize, u32)> {
        let mut at = 0;
        while wire.len() >= at + 5 {
            let size = u32::from_be_bytes([wire[at + 1], wire[at + 2], wire[at + 3], wire[at + 4]]);
            if size > limit {
                return Some((at, size));
            }
            at += 5 + size as usize;
        }
        None
    }

    fn chunks<'a>(wire: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = wire;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).clamp(1, rest.len()));
            out.push(chunk);
            rest = tail;
        }
        out
    }

    /// Well-formed frames (some over a small limit), or any bytes.
    fn wire() -> impl Strategy<Value = Vec<u8>> {
        let frames = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..5).prop_map(|messages| {
            let mut out = Vec::new();
            for message in messages {
                out.push(0);
                out.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(&message);
            }
            out
        });
        let cut = (frames.clone(), any::<prop::sample::Index>()).prop_map(|(wire, at)| {
            let keep = at.index(wire.len() + 1);
            wire[..keep].to_vec()
        });
        prop_oneof![frames, cut, prop::collection::vec(any::<u8>(), 0..48)]
    }

    fn limit() -> impl Strategy<Value = u32> {
        prop_oneof![0..24u32, Just(u32::MAX), any::<u32>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn the_deframer_gives_the_same_messages_whatever_the_chunking(
            wire in wire(),
            limit in limit(),
            sizes in prop::collection::vec(1..12usize, 1..6),
        ) {
            let whole = deframe(limit, [&wire[..]]);
            prop_assert_eq!(deframe(limit, chunks(&wire, &sizes)), whole.clone());
            // The messages are the wire's, in order, each within the limit.
            let mut at = 0;
            for message in &whole.0 {
                prop_assert_eq!(&wire[at + 5..at + 5 + message.len()], &message[..]);
                prop_assert!(message.len() as u64 <= u64::from(limit));
                at += 5 + message.len();
            }
            // Refused from its length prefix alone, before its body arrives.
            if let Err(FramingError::TooLarge { size, .. }) = whole.1 {
                prop_assert_eq!(first_oversized(&wire[at..], limit).map(|(_, size)| size), Some(size));
                prop_assert_eq!(deframe(limit, [&wire[..at + 5]]).1, Err(FramingError::TooLarge { size, limit }));
            }
        }

        #[test]
        fn the_size_guard_gives_the_same_verdict_whatever_the_chunking(
            wire in wire(),
            limit in limit(),
            sizes in prop::collection::vec(1..12usize, 1..6),
        ) {
            let expected = first_oversized(&wire, limit);
            let mut guard = SizeGuard::new(limit);
            let whole = guard.check(&wire);
            prop_assert_eq!(
                whole.clone().err(),
                expected.map(|(at, size)| (at, FramingError::TooLarge { size, limit }))
            );
            let mut guard = SizeGuard::new(limit);
            let mut passed = 0;
            let mut refused = None;
            let chunks = chunks(&wire, &sizes);
            // Where each chunk starts in the stream.
            let starts: Vec<usize> = chunks.iter().scan(0, |at, c| { let start = *at; *at += c.len(); Some(start) }).collect();
            for chunk in chunks {
                match guard.check(chunk) {
                    Ok(()) => passed += chunk.len(),
                    Err((offset, error)) => {
                        refused = Some((passed + offset, error));
                        break;
                    }
                }
            }
            match (refused, expected) {
                (None, None) => {}
                (Some((at, error)), Some((begins, size))) => {
                    prop_assert_eq!(error, FramingError::TooLarge { size, limit });
                    // Where the frame begins or, when its prefix was split, where the chunk that
                    // completes the prefix begins: never before the frame, never past its prefix.
                    let completing = starts.iter().rev().find(|s| **s <= begins + 4).copied().unwrap_or(0);
                    prop_assert_eq!(at, begins.max(completing));
                }
                (refused, expected) => prop_assert!(false, "chunked {:?}, whole {:?}", refused, expected),
            }
        }
    }
}
