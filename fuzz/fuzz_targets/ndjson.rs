//! NDJSON request streams: the first byte chooses a chunk size; the lines that come out of the
//! chunked stream must be those of splitting the whole input, each byte examined once.

#![no_main]

use dragoman::transcode::ndjson::Lines;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [size, input @ ..] = data else { return };
    let mut lines = Lines::default();
    let mut out = Vec::new();
    for chunk in input.chunks(usize::from(*size).max(1)) {
        lines.push(chunk);
        while let Some((n, line)) = lines.next_line() {
            out.push((n, line));
        }
    }
    assert_eq!(lines.examined(), input.len() as u64, "linear");
    out.extend(lines.finish());
    let whole = input
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(i, line)| (i + 1, line));
    assert!(out.iter().map(|(n, line)| (*n, &line[..])).eq(whole));
});
