//! The opening handshake (RFC 6455 section 4.2): is this request an upgrade, may its page open a
//! socket here (the origin check), which subprotocol do we answer, and what metadata does the
//! request carry for the call.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::config::AllowedOrigins;
use crate::error::{GatewayError, Origin};
use crate::frontends::ResponseBody;

/// How reply messages travel, chosen by the subprotocol the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// `dragoman.json` (or none offered): each reply message is a text frame `{"result": ...}`.
    Json,
    /// `dragoman.proto`: each reply message is a binary frame holding the protobuf encoding.
    Proto,
}

pub(super) const JSON_PROTOCOL: &str = "dragoman.json";
pub(super) const PROTO_PROTOCOL: &str = "dragoman.proto";
/// `new WebSocket(url, ["bearer", token])`: the next value is a bearer token.
pub(super) const BEARER_PROTOCOL: &str = "bearer";

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
static SEC_WEBSOCKET_PROTOCOL: HeaderName = HeaderName::from_static("sec-websocket-protocol");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// True for a request that asks to become a WebSocket (`Upgrade: websocket`): the server hands
/// it to this frontend, which answers it whether or not it is a well-formed handshake.
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.headers().get_all(header::UPGRADE).iter().any(|v| has_token(v, "websocket"))
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A handshake the gateway refuses, with the HTTP status it gets.
pub(super) struct Refused {
    pub status: StatusCode,
    pub error: GatewayError,
}

fn refused(status: StatusCode, message: String) -> Refused {
    let code = match status {
        StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
        _ => tonic::Code::InvalidArgument,
    };
    Refused { status, error: GatewayError::new(code, Origin::Client, message) }
}

/// What a valid handshake asks for.
#[derive(Debug)]
pub(super) struct Accepted {
    pub key: HeaderValue,
    pub mode: Mode,
    /// The subprotocol the answer names: the mode's if the client offered one, else `bearer`
    /// if it sent a token that way (a browser drops a socket whose answer names none it offered).
    pub protocol: Option<&'static str>,
    /// `authorization: Bearer <token>` from the subprotocol list.
    pub bearer: Option<HeaderValue>,
}

/// Checks an upgrade request: method, version and key (RFC 6455 4.2.1), then its origin.
pub(super) fn accept<B>(request: &Request<B>, origins: &AllowedOrigins) -> Result<Accepted, Refused> {
    let headers = request.headers();
    if request.method() != Method::GET || request.version() != http::Version::HTTP_11 {
        let message =
            format!("a WebSocket opens with an HTTP/1.1 GET, not {} {:?}", request.method(), request.version());
        return Err(refused(StatusCode::BAD_REQUEST, message));
    }
    if !headers.get_all(header::CONNECTION).iter().any(|v| has_token(v, "upgrade")) {
        return Err(refused(StatusCode::BAD_REQUEST, "a WebSocket upgrade needs `Connection: Upgrade`".into()));
    }
    if headers.get(&SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        // RFC 6455 4.4: 426 with the versions the server speaks.
        return Err(refused(StatusCode::UPGRADE_REQUIRED, "only WebSocket version 13 is spoken here".into()));
    }
    // RFC 6455 4.1: 16 random bytes, base64-encoded.
    let sixteen_bytes = |key: &HeaderValue| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(key.as_bytes()).is_ok_and(|k| k.len() == 16)
    };
    let key = match headers.get(&SEC_WEBSOCKET_KEY) {
        Some(key) if sixteen_bytes(key) => key.clone(),
        _ => return Err(refused(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing or malformed".into())),
    };
    check_origin(headers, origins)?;
    let offered: Vec<&str> = headers
        .get_all(&SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let bearer_at = offered.iter().position(|p| *p == BEARER_PROTOCOL);
    // The token after `bearer` is not a subprotocol, whatever it spells.
    let protocols =
        || offered.iter().enumerate().filter(|(i, _)| Some(*i) != bearer_at.map(|b| b + 1)).map(|(_, p)| *p);
    let mode = if protocols().any(|p| p == PROTO_PROTOCOL) { Mode::Proto } else { Mode::Json };
    let bearer = match bearer_at {
        Some(at) => {
            let token = offered.get(at + 1).filter(|t| !t.is_empty()).ok_or_else(|| {
                refused(StatusCode::BAD_REQUEST, "the subprotocol `bearer` must be followed by the token".into())
            })?;
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| refused(StatusCode::BAD_REQUEST, "the bearer token is not a header value".into()))?;
            Some(value)
        }
        None => None,
    };
    let protocol = [PROTO_PROTOCOL, JSON_PROTOCOL, BEARER_PROTOCOL].into_iter().find(|p| protocols().any(|o| o == *p));
    Ok(Accepted { key, mode, protocol, bearer })
}

/// Cross-site WebSocket hijacking: a browser sends the user's cookies with an upgrade from any
/// page, and only the `Origin` header tells the pages apart. Requests without one do not come
/// from a page and pass.
fn check_origin(headers: &HeaderMap, allowed: &AllowedOrigins) -> Result<(), Refused> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    let ok = match allowed {
        AllowedOrigins::Any => true,
        AllowedOrigins::Listed(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        AllowedOrigins::SameOrigin => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            host.is_some_and(|host| same_origin(origin, host))
        }
    };
    if ok {
        return Ok(());
    }
    Err(refused(
        StatusCode::FORBIDDEN,
        format!("pages from origin {origin:?} may not open WebSockets here (websocket.allow_origins)"),
    ))
}

/// Whether a page's origin (`http://host[:port]` or `https://...`) names the host the request
/// went to. The scheme's default port may be written or not, on either side; the scheme itself
/// cannot be checked (TLS may end in front of the gateway), but only http and https pages pass.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    host_port(authority, default).is_some_and(|a| host_port(host, default) == Some(a))
}

/// `host[:port]` as its lowercased host and its port (`default` when none is written); None when
/// the port is not a number.
fn host_port(authority: &str, default: u16) -> Option<(String, u16)> {
    // An IPv6 literal keeps its colons inside brackets.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (authority, default),
    };
    Some((host.to_ascii_lowercase(), port))
}

/// `101 Switching Protocols`, answering the handshake.
pub(super) fn switching(accepted: &Accepted) -> Response<ResponseBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(accepted.key.as_bytes())) {
        headers.insert(&SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = accepted.protocol {
        headers.insert(&SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    response
}

/// The answer's headers for a refusal of version: RFC 6455 4.4.
pub(super) fn add_version(response: &mut Response<ResponseBody>) {
    if response.status() == StatusCode::UPGRADE_REQUIRED {
        response.headers_mut().insert(&SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/shop.orders.v1.OrderService/LiveCart")
            .header("host", "gw.example:8080")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn rfc_6455_sample_key_gets_its_accept() {
        let accepted = accept(&upgrade(&[]), &AllowedOrigins::SameOrigin).ok().expect("accepted");
        let response = switching(&accepted);
        assert_eq!(response.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(accepted.mode, Mode::Json);
        assert!(accepted.protocol.is_none());
    }

    #[test]
    fn origins() {
        let same = AllowedOrigins::SameOrigin;
        assert!(accept(&upgrade(&[("origin", "http://gw.example:8080")]), &same).is_ok());
        assert!(accept(&upgrade(&[("origin", "https://evil.example")]), &same).is_err());
        let listed = AllowedOrigins::Listed(vec!["https://app.example".into()]);
        assert!(accept(&upgrade(&[("origin", "https://APP.example")]), &listed).is_ok());
        assert!(accept(&upgrade(&[("origin", "http://gw.example:8080")]), &listed).is_err());
        assert!(accept(&upgrade(&[("origin", "null")]), &AllowedOrigins::Any).is_ok());
        assert!(accept(&upgrade(&[("origin", "null")]), &same).is_err());
        assert!(accept(&upgrade(&[("origin", "ftp://gw.example:8080")]), &same).is_err());
        assert!(accept(&upgrade(&[("origin", "http://gw.example:8080.evil")]), &same).is_err());
        assert!(same_origin("https://gw.example", "gw.example:443"));
        assert!(same_origin("http://GW.example:80", "gw.example"));
        assert!(!same_origin("https://gw.example", "gw.example:80"));
        assert!(!same_origin("http://gw.example:580", "gw.example:5"), "ports compare as numbers");
        assert!(!same_origin("http://127.0.0.1:18081:80", "127.0.0.1:18081"));
        assert!(same_origin("http://[::1]:8080", "[::1]:8080"));
        assert!(same_origin("http://[::1]", "[::1]:80"));
        assert!(accept(&upgrade(&[]), &listed).is_ok(), "no Origin: not a browser page");
    }

    #[test]
    fn subprotocols_choose_the_mode_and_carry_a_token() {
        let a = accept(&upgrade(&[("sec-websocket-protocol", "bearer, abc.def")]), &AllowedOrigins::Any)
            .ok()
            .expect("accepted");
        assert_eq!((a.mode, a.protocol), (Mode::Json, Some("bearer")));
        assert_eq!(a.bearer.expect("bearer"), "Bearer abc.def");
        let a = accept(&upgrade(&[("sec-websocket-protocol", "dragoman.proto, bearer, t")]), &AllowedOrigins::Any)
            .ok()
            .expect("accepted");
        assert_eq!((a.mode, a.protocol), (Mode::Proto, Some("dragoman.proto")));
        assert!(accept(&upgrade(&[("sec-websocket-protocol", "bearer")]), &AllowedOrigins::Any).is_err());
        let a = accept(&upgrade(&[("sec-websocket-protocol", "bearer, dragoman.proto")]), &AllowedOrigins::Any)
            .ok()
            .expect("accepted");
        assert_eq!((a.mode, a.protocol), (Mode::Json, Some("bearer")), "a token is not a subprotocol");
    }

    #[test]
    fn bad_handshakes() {
        let mut wrong_version = upgrade(&[]);
        wrong_version.headers_mut().insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert_eq!(
            accept(&wrong_version, &AllowedOrigins::Any).expect_err("refused").status,
            StatusCode::UPGRADE_REQUIRED
        );
        let mut no_key = upgrade(&[]);
        no_key.headers_mut().remove("sec-websocket-key");
        assert_eq!(accept(&no_key, &AllowedOrigins::Any).expect_err("refused").status, StatusCode::BAD_REQUEST);
    }
}
