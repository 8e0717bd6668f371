//! Request metadata as every frontend builds it: the client's headers that may become gRPC
//! metadata, checked, this hop added to `X-Forwarded-For` and `Forwarded`, and the client's
//! verified certificate in `X-Forwarded-Client-Cert` — the same way whichever protocol the call
//! came in on.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Code;

use crate::call::{ClientIdentity, is_framing_header};
use crate::config::RestOptions;
use crate::error::{GatewayError, Origin};
use crate::observe::trace::{TRACEPARENT, TRACESTATE};

/// A metadata entry a client may send: no framing header, no `grpc-` name (reserved by gRPC for
/// the transport: `grpc-timeout` becomes the deadline), and a `-bin` value that is base64, as
/// gRPC over HTTP/2 requires.
pub(crate) fn check(name: &HeaderName, value: &HeaderValue) -> Result<bool, GatewayError> {
    if is_framing_header(name) {
        return Ok(false);
    }
    let name = name.as_str();
    if name.starts_with("grpc-") {
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

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Envoy's header for the client certificate a proxy verified, which backends behind Envoy
/// already read. Only the gateway writes it: a client's own is always dropped.
pub(crate) static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The client at the other end of a connection, with what this hop adds to the forwarding
/// headers formatted once per connection rather than per call.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: SocketAddr,
    /// `X-Forwarded-For` and `Forwarded` (RFC 7239: IPv6 quoted and bracketed) for this hop.
    ip: String,
    node: String,
    xff: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
    /// The client's verified certificate (mutual TLS), and its `X-Forwarded-Client-Cert` value.
    pub client: Option<Arc<ClientIdentity>>,
    client_cert: Option<HeaderValue>,
}

impl Peer {
    pub fn new(address: SocketAddr) -> Self {
        let ip = address.ip().to_string();
        let node = if address.is_ipv6() { format!("for=\"[{ip}]\"") } else { format!("for={ip}") };
        let xff = HeaderValue::from_str(&ip).ok();
        let forwarded = HeaderValue::from_str(&node).ok();
        Peer { address, ip, node, xff, forwarded, client: None, client_cert: None }
    }

    /// The same peer, known by the certificate it showed.
    pub fn with_client(mut self, client: Option<Arc<ClientIdentity>>) -> Self {
        self.client_cert = client.as_deref().and_then(|c| HeaderValue::from_str(&client_cert(c)).ok());
        self.client = client;
        self
    }
}

/// Envoy's `X-Forwarded-Client-Cert` element for one certificate: `Hash=…;Subject="…";URI=…;DNS=…`.
/// The subject is always quoted, other values when they hold `,;="\`; inside quotes `"` and `\`
/// are escaped with `\`, and any byte that is not printable ASCII is written `\XX` (RFC 4514's
/// form), so a certificate's contents can neither end a value early nor make the header invalid.
fn client_cert(client: &ClientIdentity) -> String {
    let escaped = |v: &str| {
        let mut out = String::with_capacity(v.len() + 2);
        out.push('"');
        for byte in v.bytes() {
            match byte {
                b'"' | b'\\' => {
                    out.push('\\');
                    out.push(byte as char);
                }
                b' '..=b'~' => out.push(byte as char),
                _ => out.push_str(&format!("\\{byte:02X}")),
            }
        }
        out.push('"');
        out
    };
    let value = |v: &str| {
        let plain = v.bytes().all(|b| b.is_ascii_graphic() && !b",;=\"\\".contains(&b));
        if plain { v.to_owned() } else { escaped(v) }
    };
    let mut out = format!("Hash={}", client.hash);
    if !client.subject.is_empty() {
        out.push_str(&format!(";Subject={}", escaped(&client.subject)));
    }
    for uri in &client.uris {
        out.push_str(&format!(";URI={}", value(uri)));
    }
    for dns in &client.dns_names {
        out.push_str(&format!(";DNS={}", value(dns)));
    }
    out
}

/// The first value of `name` in a query string, percent-decoded.
pub(crate) fn query_value(query: &str, name: &str) -> Option<String> {
    let value = query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    percent_encoding::percent_decode_str(value).decode_utf8().ok().map(|v| v.into_owned())
}

/// Adds this hop to `X-Forwarded-For` and `Forwarded` (RFC 7239), after whatever the client's own
/// proxies wrote in `headers` (every line of them, joined); sets `X-Forwarded-Client-Cert` to the
/// client's verified certificate, or removes it.
pub(crate) fn add_forwarded(headers: &HeaderMap, out: &mut HeaderMap, peer: &Peer) {
    out.remove(&X_FORWARDED_CLIENT_CERT);
    if let Some(value) = &peer.client_cert {
        out.insert(X_FORWARDED_CLIENT_CERT.clone(), value.clone());
    }
    let chain = |name: &HeaderName, this: &str, alone: &Option<HeaderValue>| -> Option<HeaderValue> {
        let prior: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        if prior.is_empty() {
            return alone.clone();
        }
        HeaderValue::from_str(&format!("{}, {this}", prior.join(", "))).ok()
    };
    if let Some(value) = chain(&X_FORWARDED_FOR, &peer.ip, &peer.xff) {
        out.insert(X_FORWARDED_FOR.clone(), value);
    }
    if let Some(value) = chain(&http::header::FORWARDED, &peer.node, &peer.forwarded) {
        out.insert(http::header::FORWARDED, value);
    }
}

/// The request headers that become gRPC metadata, as `rest:` configures them for REST, WebSocket
/// and SOAP alike: the forwarded ones, those with the metadata prefix (without it), W3C Trace
/// Context's `traceparent` and `tracestate` always (a trace crosses every hop, whatever the
/// config forwards), and `X-Forwarded-For`/`Forwarded` with this hop added. Framing headers and
/// `grpc-` names never do, whatever the config says; a `-bin` value must be base64. An API key
/// in the URL's `auth.api_keys.query_parameter` becomes its header, unless the header is sent.
pub(crate) fn from_headers(
    headers: &HeaderMap,
    query: Option<&str>,
    options: &RestOptions,
    peer: &Peer,
) -> Result<HeaderMap, GatewayError> {
    let mut out = HeaderMap::new();
    if let (Some((parameter, header)), Some(query)) = (&options.key_query_parameter, query) {
        if !headers.contains_key(header) {
            if let Some(key) = query_value(query, parameter).and_then(|v| HeaderValue::from_str(&v).ok()) {
                out.insert(header.clone(), key);
            }
        }
    }
    for name in [&TRACEPARENT, &TRACESTATE] {
        if options.forward_headers.contains(name) {
            continue;
        }
        for value in headers.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    for name in &options.forward_headers {
        for value in headers.get_all(name) {
            if check(name, value)? {
                out.append(name.clone(), value.clone());
            }
        }
    }
    for (name, value) in headers {
        let Some(stripped) = name.as_str().strip_prefix(options.metadata_header_prefix.as_str()) else { continue };
        let Ok(name) = HeaderName::from_bytes(stripped.as_bytes()) else { continue };
        if check(&name, value)? {
            out.append(name, value.clone());
        }
    }
    add_forwarded(headers, &mut out, peer);
    Ok(out)
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
    fn this_hop_is_added_after_every_forwarding_line() {
        let peer = Peer::new("10.0.0.9:5000".parse().expect("address"));
        let mut headers = HeaderMap::new();
        let mut out = HeaderMap::new();
        add_forwarded(&headers, &mut out, &peer);
        assert_eq!(out["x-forwarded-for"], "10.0.0.9");
        assert_eq!(out["forwarded"], "for=10.0.0.9");
        headers.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2, 3.3.3.3"));
        add_forwarded(&headers, &mut out, &peer);
        assert_eq!(out["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9");
        let v6 = Peer::new("[::1]:5000".parse().expect("address"));
        add_forwarded(&HeaderMap::new(), &mut out, &v6);
        assert_eq!(out["forwarded"], "for=\"[::1]\"");
    }

    #[test]
    fn only_a_verified_certificate_is_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-client-cert", HeaderValue::from_static("Hash=forged"));
        let mut out = headers.clone();
        add_forwarded(&headers, &mut out, &Peer::new("10.0.0.9:5000".parse().expect("address")));
        assert!(!out.contains_key("x-forwarded-client-cert"), "a client's own is dropped");
        let client = ClientIdentity {
            subject: "CN=billing,O=Example \"Ltd\"".into(),
            dns_names: vec!["billing.internal".into()],
            uris: vec!["spiffe://example.org/billing".into()],
            hash: "ab12".into(),
        };
        let peer = Peer::new("10.0.0.9:5000".parse().expect("address")).with_client(Some(Arc::new(client)));
        add_forwarded(&headers, &mut out, &peer);
        assert_eq!(
            out["x-forwarded-client-cert"],
            r#"Hash=ab12;Subject="CN=billing,O=Example \"Ltd\"";URI=spiffe://example.org/billing;DNS=billing.internal"#
        );
        // A subject crafted to close its quotes and add a URI stays one quoted value; one that is
        // not ASCII still makes a valid header.
        let crafted = ClientIdentity {
            subject: r#"CN=a\",URI=spiffe://prod/admin"#.into(),
            dns_names: vec![],
            uris: vec![],
            hash: "cd34".into(),
        };
        let peer = Peer::new("10.0.0.9:5000".parse().expect("address")).with_client(Some(Arc::new(crafted)));
        add_forwarded(&headers, &mut out, &peer);
        assert_eq!(out["x-forwarded-client-cert"], r#"Hash=cd34;Subject="CN=a\\\",URI=spiffe://prod/admin""#);
        let accented =
            ClientIdentity { subject: "CN=Müller".into(), dns_names: vec![], uris: vec![], hash: "ef56".into() };
        let peer = Peer::new("10.0.0.9:5000".parse().expect("address")).with_client(Some(Arc::new(accented)));
        add_forwarded(&headers, &mut out, &peer);
        assert_eq!(out["x-forwarded-client-cert"], r#"Hash=ef56;Subject="CN=M\C3\BCller""#);
    }

    #[test]
    fn trace_context_always_becomes_metadata() {
        let peer = Peer::new("10.0.0.9:5000".parse().expect("address"));
        let mut headers = HeaderMap::new();
        headers
            .insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        headers.insert("tracestate", HeaderValue::from_static("vendor=x"));
        headers.insert("x-not-forwarded", HeaderValue::from_static("y"));
        let config = crate::config::Config::parse("{}", std::path::Path::new(".")).expect("empty config");
        let mut options = (*config.rest).clone();
        for forward in [vec![], vec![TRACEPARENT.clone()]] {
            options.forward_headers = forward;
            let out = from_headers(&headers, None, &options, &peer).expect("valid");
            assert_eq!(out.get_all("traceparent").iter().count(), 1);
            assert_eq!(out["traceparent"], headers["traceparent"]);
            assert_eq!(out["tracestate"], "vendor=x");
            assert!(!out.contains_key("x-not-forwarded"));
        }
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
