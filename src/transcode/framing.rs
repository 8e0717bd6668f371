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
}

/// Encodes a message straight into its frame: one buffer, no copy.
pub fn encode<M: prost::Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // `encode` would compute encoded_len again (a second walk of a DynamicMessage) to check the
    // room that was just reserved.
    message.encode_raw(&mut out);
    out.freeze()
}

/// Splits a byte stream into messages, whatever the chunking.
#[derive(Debug, Default)]
pub struct Deframer {
    buffer: BytesMut,
}

impl Deframer {
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
        let len = u32::from_be_bytes([self.buffer[1], self.buffer[2], self.buffer[3], self.buffer[4]]) as usize;
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
        let mut deframer = Deframer::default();
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
        let mut deframer = Deframer::default();
        deframer.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9]));
        assert_eq!(deframer.next_message(), Err(FramingError::Compressed));
        let mut deframer = Deframer::default();
        deframer.push(Bytes::from_static(&[0, 0, 0, 0, 9, 1]));
        assert_eq!(deframer.next_message(), Ok(None));
        assert_eq!(deframer.finish(), Err(FramingError::Truncated));
    }
}
