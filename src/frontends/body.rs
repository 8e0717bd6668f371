//! Reading a whole request body before the call starts (REST and SOAP: JSON and XML must be
//! complete to be parsed), bounded three ways: by bytes (`max_request_body_size`), by memory
//! (chunks are copied into one buffer as they come, so a body sent in a million one-byte frames
//! costs its size, not a million frame buffers), and by time (`server.body_read_timeout`, against
//! clients that trickle).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, EXPECT};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// How much of an oversized body is read and discarded so that the client, still sending, gets
/// the 413 instead of a reset connection. Beyond it the connection is closed.
const DRAIN_LIMIT: u64 = 64 << 20;

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Past the limit, announced by `Content-Length` or found while reading.
    TooLarge { limit: u64 },
    /// Not all there within the timeout.
    TooSlow { timeout: Duration },
    /// The connection broke off.
    Broken(String),
}

impl BodyError {
    /// The HTTP status, the gRPC code and the words that tell the client.
    pub(crate) fn explain(self) -> (http::StatusCode, tonic::Code, String) {
        use http::StatusCode;
        use tonic::Code;
        match self {
            BodyError::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::ResourceExhausted,
                format!("the request body is larger than the limit of {limit} bytes"),
            ),
            BodyError::TooSlow { timeout } => (
                StatusCode::REQUEST_TIMEOUT,
                Code::DeadlineExceeded,
                format!("the request body did not arrive within {timeout:?}"),
            ),
            BodyError::Broken(e) => {
                (StatusCode::BAD_REQUEST, Code::Cancelled, format!("the request body could not be read: {e}"))
            }
        }
    }
}

/// The whole body.
pub(crate) async fn read(
    body: Incoming,
    headers: &HeaderMap,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(timeout, read_all(body, headers, limit)).await {
        Ok(result) => result,
        Err(_) => Err(BodyError::TooSlow { timeout }),
    }
}

async fn read_all(mut body: Incoming, headers: &HeaderMap, limit: u64) -> Result<Bytes, BodyError> {
    let announced = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        // A client waiting for `100 Continue` has sent nothing yet: answer at once.
        let waiting = headers.get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waiting && announced.is_some_and(|n| n <= DRAIN_LIMIT) {
            drain(body).await;
        }
        return Err(BodyError::TooLarge { limit });
    }
    // The first chunk is kept as it is (one chunk is the usual case: no copy); from the second
    // on, chunks are copied into one buffer.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        read += data.len() as u64;
        if read > limit {
            drain(body).await;
            return Err(BodyError::TooLarge { limit });
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            kept => {
                // No reservation from Content-Length: a client announcing 16 MiB and sending 2
                // bytes would hold 16 MiB. The buffer grows with what arrives.
                if let Some(kept) = kept {
                    joined.extend_from_slice(&kept);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// Reads and discards up to [`DRAIN_LIMIT`] bytes of a body.
async fn drain(mut body: Incoming) {
    let mut read = 0u64;
    while read <= DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}
