//! Newline-delimited JSON (one message per line), split as bytes arrive in chunks of any size.
//!
//! Each byte is looked at once, however the line is chunked: the search for the next `\n`
//! resumes where the last one stopped. (Rescanning the buffer on every chunk made a long line
//! sent in small frames cost quadratic time, stalling every connection on the worker.)

use bytes::{Buf, Bytes, BytesMut};

/// Splits a byte stream into lines, skipping blank ones.
#[derive(Debug, Default)]
pub struct Lines {
    buffer: BytesMut,
    /// `buffer[..searched]` holds no `\n`.
    searched: usize,
    /// Lines taken so far, blank ones included: the number of the line last returned.
    line_number: usize,
    /// Bytes examined for a `\n` so far: the cost, for tests to check it stays linear.
    examined: u64,
}

impl Lines {
    /// Adds received bytes (copied: a chunk of one byte must not pin a read buffer).
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete, non-blank line without its `\n`, and its 1-based number.
    pub fn next_line(&mut self) -> Option<(usize, Bytes)> {
        loop {
            let found = self.buffer[self.searched..].iter().position(|b| *b == b'\n');
            let Some(offset) = found else {
                self.examined += (self.buffer.len() - self.searched) as u64;
                self.searched = self.buffer.len();
                return None;
            };
            self.examined += offset as u64 + 1;
            let line = self.buffer.split_to(self.searched + offset).freeze();
            self.buffer.advance(1);
            self.searched = 0;
            self.line_number += 1;
            if !is_blank(&line) {
                return Some((self.line_number, line));
            }
        }
    }

    /// At the end of the stream: what is left, as a last line, if it is not blank.
    pub fn finish(&mut self) -> Option<(usize, Bytes)> {
        let rest = self.buffer.split().freeze();
        self.searched = 0;
        if is_blank(&rest) {
            return None;
        }
        self.line_number += 1;
        Some((self.line_number, rest))
    }

    /// Bytes of the line being received: what a line-length limit applies to.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes examined for a line end so far.
    pub fn examined(&self) -> u64 {
        self.examined
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_out_whole_whatever_the_chunking() {
        let input = b"{\"a\":1}\n\n  \n{\"b\":2}\r\n{\"c\":3}";
        for size in 1..input.len() {
            let mut lines = Lines::default();
            let mut out = Vec::new();
            for chunk in input.chunks(size) {
                lines.push(chunk);
                while let Some(line) = lines.next_line() {
                    out.push(line);
                }
            }
            out.extend(lines.finish());
            let text: Vec<(usize, &str)> =
                out.iter().map(|(n, l)| (*n, std::str::from_utf8(l).expect("utf8"))).collect();
            assert_eq!(text, [(1, "{\"a\":1}"), (4, "{\"b\":2}\r"), (5, "{\"c\":3}")], "chunks of {size}");
        }
    }

    #[test]
    fn a_long_line_in_one_byte_chunks_is_examined_once() {
        let mut lines = Lines::default();
        let n = 100_000;
        for _ in 0..n {
            lines.push(b"x");
            assert!(lines.next_line().is_none());
        }
        lines.push(b"\n");
        assert_eq!(lines.next_line().map(|(_, l)| l.len()), Some(n));
        assert_eq!(lines.examined(), n as u64 + 1, "linear, not quadratic");
        assert_eq!(lines.pending(), 0);
    }
}

/// Properties over any bytes in any chunks: the stream comes from a client.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Bytes rich in line ends and blanks, or any bytes.
    fn input() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(prop::sample::select(b"\n\n \r\t{}a\x0b\x0c\xff".to_vec()), 0..64),
            prop::collection::vec(any::<u8>(), 0..64),
        ]
    }

    /// Cuts `input` into chunks of the given sizes (cycled), empty chunks included.
    fn chunks<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = input;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            out.push(chunk);
            rest = tail;
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn the_same_lines_come_out_whatever_the_chunking(
            input in input(),
            sizes in prop::collection::vec(0..10usize, 1..8),
        ) {
            prop_assume!(sizes.iter().any(|s| *s > 0));
            let mut lines = Lines::default();
            let mut out = Vec::new();
            for chunk in chunks(&input, &sizes) {
                lines.push(chunk);
                while let Some((n, line)) = lines.next_line() {
                    out.push((n, line.to_vec()));
                }
            }
            // Each byte examined once, however it came; what follows the last '\n' is pending.
            prop_assert_eq!(lines.examined(), input.len() as u64);
            let after_last_newline = input.iter().rev().take_while(|b| **b != b'\n').count();
            prop_assert_eq!(lines.pending(), after_last_newline);
            out.extend(lines.finish().map(|(n, line)| (n, line.to_vec())));
            prop_assert_eq!(lines.pending(), 0);

            let whole: Vec<(usize, Vec<u8>)> = input
                .split(|b| *b == b'\n')
                .enumerate()
                .map(|(i, line)| (i + 1, line.to_vec()))
                .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
                .collect();
            prop_assert_eq!(out, whole);
        }
    }
}
