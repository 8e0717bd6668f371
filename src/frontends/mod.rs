//! Frontends: one per client protocol. Each finds the target method, turns the client's request
//! into a [`crate::call::Call`], hands it to the policy stack, and turns the
//! [`crate::call::Reply`] back into its protocol. Frontends never talk to backends.

pub(crate) mod body;
pub mod grpc;
mod metadata;
pub(crate) mod offload;
pub mod rest;
pub mod soap;
pub mod websocket;

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::combinators::UnsyncBoxBody;
use tonic::Code;

use crate::config::RestOptions;
use crate::error::{GatewayError, Origin};
pub use metadata::Peer;

/// Error type of response bodies handed to the HTTP server.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the gateway sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// `grpc-timeout`: at most 8 digits and a unit, H M S m u n (gRPC over HTTP/2). Read by every
/// frontend, since any client may send it.
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Result<Option<Duration>, GatewayError> {
    let Some(value) = headers.get(&crate::call::GRPC_TIMEOUT) else { return Ok(None) };
    let bad = || GatewayError::new(Code::InvalidArgument, Origin::Client, format!("malformed grpc-timeout {value:?}"));
    let text = value.to_str().map_err(|_| bad())?;
    if text.len() < 2 || text.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let duration = match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    };
    Ok(Some(duration))
}

/// The call's deadline for the frontends that speak HTTP to people (REST, WebSocket, SOAP):
/// `grpc-timeout`, else `rest.timeout_header` in milliseconds.
pub(crate) fn deadline(headers: &HeaderMap, options: &RestOptions) -> Result<Option<Duration>, GatewayError> {
    if let Some(timeout) = grpc_timeout(headers)? {
        return Ok(Some(timeout));
    }
    let Some(value) = headers.get(&options.timeout_header) else { return Ok(None) };
    let ms: u64 = value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
        GatewayError::new(
            Code::InvalidArgument,
            Origin::Client,
            format!("{}: expected a whole number of milliseconds, got {value:?}", options.timeout_header),
        )
    })?;
    Ok(Some(Duration::from_millis(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn grpc_timeout_units() {
        let parse = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        assert_eq!(parse("100m").ok().flatten(), Some(Duration::from_millis(100)));
        assert_eq!(parse("2S").ok().flatten(), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H").ok().flatten(), Some(Duration::from_secs(3600)));
        assert_eq!(parse("99999999n").ok().flatten(), Some(Duration::from_nanos(99_999_999)));
        assert!(parse("123456789m").is_err(), "more than 8 digits");
        assert!(parse("10x").is_err());
        assert!(parse("m").is_err());
    }
}
