//! Request metadata as every frontend builds it: the client's headers that may become gRPC
//! metadata, checked, and this hop added to `X-Forwarded-For` and `Forwarded` — the same way
//! whichever protocol the call came in on.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Code;

use crate::call::is_framing_header;
use crate::error::{GatewayError, Origin};

/// A metadata entry a client may send: no framing header, no `grpc-` name (reserved by gRPC for
/// the transport: `grpc-timeout` becomes the deadline), and a `-bin` value that is base64, as
/// gRPC over HTTP/2 requires.
pub(crate) fn check(name: &HeaderName, value: &HeaderValue) -> Result<bool, GatewayError> {
    let name = name.as_str();
    if is_framing_header(name) || name.starts_with("grpc-") {
        return Ok(false);
    }
    if name.ends_with("-bin") && !is_base64(value.as_bytes()) {
        return Err(GatewayError::new(
            Code::InvalidArgument,
            Origin::Client,
            format!("metadata {name}: a -bin value must be base64"),
        ));
    }
    Ok(true)
}

/// Standard or URL-safe base64, padded or not (gRPC accepts either for `-bin` values).
fn is_base64(value: &[u8]) -> bool {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = value.strip_suffix(b"==").or_else(|| value.strip_suffix(b"=")).unwrap_or(value);
    STANDARD_NO_PAD.decode(trimmed).is_ok() || URL_SAFE_NO_PAD.decode(trimmed).is_ok()
}

/// Adds this hop (the client's address) to `X-Forwarded-For` and `Forwarded` (RFC 7239), after
/// whatever the client's own proxies wrote in `headers`.
pub(crate) fn add_forwarded(headers: &HeaderMap, out: &mut HeaderMap, peer: Option<SocketAddr>) {
    let Some(peer) = peer else { return };
    let ip = peer.ip().to_string();
    let append = |name: &str, node: &str| {
        let chain = match headers.get(name).and_then(|v| v.to_str().ok()) {
            Some(prior) => HeaderValue::from_str(&format!("{prior}, {node}")),
            None => HeaderValue::from_str(node),
        };
        chain.ok()
    };
    if let Some(value) = append("x-forwarded-for", &ip) {
        out.insert("x-forwarded-for", value);
    }
    // RFC 7239: IPv6 addresses are quoted and bracketed.
    let node = if peer.is_ipv6() { format!("for=\"[{ip}]\"") } else { format!("for={ip}") };
    if let Some(value) = append("forwarded", &node) {
        out.insert("forwarded", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_reserved_names_are_not_metadata() {
        let ok = HeaderValue::from_static("x");
        for name in ["content-type", "content-length", "te", "connection", "host", "grpc-timeout", "grpc-status"] {
            assert_eq!(check(&HeaderName::from_static(name), &ok).ok(), Some(false), "{name}");
        }
        assert_eq!(check(&HeaderName::from_static("x-request-id"), &ok).ok(), Some(true));
    }

    #[test]
    fn binary_values_must_be_base64() {
        let name = HeaderName::from_static("x-trace-bin");
        for good in ["AQID", "AQIDBA==", "AQIDBA", "-_-_"] {
            assert_eq!(check(&name, &HeaderValue::from_static(good)).ok(), Some(true), "{good}");
        }
        for bad in ["not base64!", "A"] {
            assert!(check(&name, &HeaderValue::from_static(bad)).is_err(), "{bad}");
        }
    }
}
