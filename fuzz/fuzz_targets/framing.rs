//! gRPC framing: the first byte chooses a chunk size, the next four the size limit (big-endian);
//! the rest is the stream. Chunked or whole, the deframer gives the same messages and the same
//! verdict, and the size guard refuses the same frame.

#![no_main]

use bytes::Bytes;
use dragoman::transcode::framing::{Deframer, FramingError, SizeGuard};
use libfuzzer_sys::fuzz_target;

fn deframe<'a>(limit: u32, chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Bytes>, Result<(), FramingError>) {
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

fn guard<'a>(limit: u32, chunks: impl Iterator<Item = &'a [u8]>) -> Option<(usize, FramingError)> {
    let mut guard = SizeGuard::new(limit);
    let mut passed = 0;
    for chunk in chunks {
        match guard.check(chunk) {
            Ok(()) => passed += chunk.len(),
            Err((offset, error)) => return Some((passed + offset, error)),
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let [size, a, b, c, d, wire @ ..] = data else { return };
    let size = usize::from(*size).max(1);
    // Small limits mostly, so that some frames are over them.
    let limit = u32::from_be_bytes([*a, *b, *c, *d]) % 64;
    let whole = deframe(limit, std::iter::once(wire));
    assert_eq!(deframe(limit, wire.chunks(size)), whole);
    assert!(whole.0.iter().all(|m| m.len() <= limit as usize));

    let exact = guard(limit, std::iter::once(wire));
    match (guard(limit, wire.chunks(size)), &exact) {
        (None, None) => {}
        (Some((at, error)), Some((begins, expected))) => {
            assert_eq!(&error, expected);
            assert!(at >= *begins && at < begins + 5, "at {at}, frame at {begins}");
        }
        (chunked, whole) => panic!("chunked {chunked:?}, whole {whole:?}"),
    }
    // Where the guard refuses, a deframer refuses too (unless a compressed frame stops it first).
    if let Some((_, FramingError::TooLarge { .. })) = exact {
        assert!(whole.1.is_err());
    }
});
