//! The listener's limits (`server:`), each against the client it guards against: silent and
//! slow clients (slowloris), idle ones, a flood of connections, too many calls at once, heads
//! too large, bodies trickled in, peers that stopped answering. Each test also checks that the
//! gateway keeps serving everyone else.
//!
//! Waiting is on what the client observes (the connection closing, an answer arriving); the only
//! clocks are the hang guards that turn a limit that never acts into a failure.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use support::{TestGateway, get, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the gateway closes the connection, returning what it sent; fails the test if it
/// is still open after 10 s.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let reading = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading).await.expect("the gateway closes the connection");
    received
}

/// The types of the HTTP/2 frames in what a server sent.
fn frame_types(received: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= received.len() {
        let length = u32::from_be_bytes([0, received[at], received[at + 1], received[at + 2]]) as usize;
        types.push(received[at + 3]);
        at += 9 + length;
    }
    types
}

async fn connect(address: SocketAddr) -> TcpStream {
    TcpStream::connect(address).await.expect("connect")
}

/// A gateway with these `server:` settings (two-space indented lines).
async fn gateway(server: &str) -> TestGateway {
    TestGateway::builder().server(server).start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_are_closed_after_header_read_timeout() {
    let gw = gateway("  header_read_timeout: 300ms\n").await;
    let mut silent = connect(gw.address).await;
    let mut half_head = connect(gw.address).await;
    half_head.write_all(b"GET /v1/users/u-1 HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let mut half_preface = connect(gw.address).await;
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    // While they stall, everyone else is served.
    assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 200);
    for (name, stream) in
        [("silent", &mut silent), ("half a head", &mut half_head), ("half a preface", &mut half_preface)]
    {
        let got = until_closed(stream).await;
        assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{name}: {}", String::from_utf8_lossy(&got));
    }
    assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    let gw = gateway("  idle_timeout: 300ms\n").await;
    // HTTP/1.1 keep-alive: one request, then nothing.
    let mut h1 = connect(gw.address).await;
    h1.write_all(b"GET /v1/users/u-1 HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let answer = String::from_utf8_lossy(&until_closed(&mut h1).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "answered before being closed: {answer}");

    // HTTP/2: the connection ends (GOAWAY) once idle.
    let tcp = connect(gw.address).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2");
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/v1/users/u-1", gw.address))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    assert_eq!(sender.send_request(request).await.expect("response").status(), 200);
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the idle HTTP/2 connection is closed")
        .expect("task")
        .expect("closed gracefully");

    // A stream that outlives several idle periods keeps its connection: after it ends whole, the
    // same connection serves the next request.
    let mut sender = support::h2_client(gw.address).await;
    let get_on = |path: &str| {
        http::Request::get(format!("http://{}{path}", gw.address))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    let watch = sender.send_request(get_on("/v1/orders/o-1:watch?interval=0.25s")).await.expect("response");
    let text =
        String::from_utf8_lossy(&watch.into_body().collect().await.expect("whole stream").to_bytes()).into_owned();
    assert!(text.lines().count() >= 4, "{text}");
    assert!(text.lines().last().is_some_and(|l| l.contains("ORDER_STATUS_DELIVERED")), "{text}");
    // Part of an idle period later (the end of the stream counts as activity: the period starts
    // there, not at the stream's start).
    tokio::time::sleep(Duration::from_millis(180)).await;
    let next = sender.send_request(get_on("/v1/users/u-1")).await.expect("the connection is still open");
    assert_eq!(next.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_that_starts_no_request_is_closed_after_header_read_timeout() {
    let gw = gateway(
        "  header_read_timeout: 300ms
  idle_timeout: 1h
",
    )
    .await;
    let mut stream = connect(gw.address).await;
    // A whole preface and SETTINGS, then silence, and no answer to the gateway's PING either.
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.expect("write");
    let received = until_closed(&mut stream).await;
    assert!(frame_types(&received).contains(&0x7), "a GOAWAY came first");
    assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed_as_accepted() {
    let gw = gateway("  max_connections: 2\n").await;
    let request = b"GET /v1/users/u-1 HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(gw.address).await;
        stream.write_all(request).await.expect("write");
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.expect("answered");
        assert_eq!(&buf, b"HTTP/1.1 200");
        open.push(stream);
    }
    let mut third = connect(gw.address).await;
    let _ = third.write_all(request).await;
    assert!(until_closed(&mut third).await.is_empty(), "the third connection gets no answer");

    // A slot frees when a connection closes; the server notices the close on its own time.
    drop(open.pop());
    let served = async {
        loop {
            let mut stream = connect(gw.address).await;
            let _ = stream.write_all(request).await;
            let mut buf = [0u8; 12];
            if stream.read_exact(&mut buf).await.is_ok() {
                return buf;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), served).await.expect("a freed slot is reused");
    assert_eq!(&buf, b"HTTP/1.1 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_max_calls_in_flight_are_refused_at_once() {
    let gw = gateway("  max_calls_in_flight: 2\n").await;
    // Two streams held open (one event, then a minute until the next).
    let mut held = Vec::new();
    for _ in 0..2 {
        let response = support::http_stream(
            gw.address,
            "GET",
            "/v1/orders/o-1:watch?interval=60s",
            &[],
            support::no_body(),
            false,
        )
        .await;
        let mut body = response.into_body();
        assert!(support::next_chunk(&mut body).await.is_some_and(|c| c.contains("result")));
        held.push(body);
    }
    let refused = get(gw.address, "/v1/users/u-1").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json()["code"], 14);
    assert!(refused.text().contains("calls in flight"), "{}", refused.text());
    let grpc = support::raw_unary(
        gw.address,
        "/shop.users.v1.UserService/GetUser",
        &dragoman::demo::pb::shop::users::v1::GetUserRequest { id: "u-1".into() },
        &[],
    )
    .await;
    assert_eq!(grpc.status(), Some(14), "UNAVAILABLE over gRPC");
    let envelope = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><GetUser xmlns="urn:dragoman:shop.users.v1"><id>u-1</id></GetUser></e:Body></e:Envelope>"#;
    let soap = [("content-type", "application/soap+xml")];
    let fault = support::http(gw.address, "POST", "/soap/shop.users.v1.UserService", &soap, envelope.as_bytes()).await;
    assert_eq!((fault.status, fault.header("content-type")), (500, Some("application/soap+xml; charset=utf-8")));
    assert!(
        fault.text().contains(">grpc:UNAVAILABLE</") && fault.text().contains("calls in flight"),
        "{}",
        fault.text()
    );

    // Once the streams end, calls are admitted again.
    drop(held);
    let admitted = async {
        loop {
            if get(gw.address, "/v1/users/u-1").await.status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), admitted).await.expect("admitted once the streams are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_larger_than_max_header_size_are_refused() {
    use http_body_util::BodyExt;
    let gw = gateway("  max_header_size: 8192\n").await;
    let big = "x".repeat(10_000);
    let h1 = http(gw.address, "GET", "/v1/users/u-1", &[("x-big", &big)], b"").await;
    assert_eq!(h1.status, 431, "HTTP/1.1: {}", h1.text());
    let small = "x".repeat(4_000);
    assert_eq!(http(gw.address, "GET", "/v1/users/u-1", &[("x-small", &small)], b"").await.status, 200);
    // HTTP/2: the stream is refused, the connection and the gateway go on.
    let mut sender = support::h2_client(gw.address).await;
    let get_user = dragoman::demo::pb::shop::users::v1::GetUserRequest { id: "u-1".into() };
    let mut request = support::grpc_request(gw.address, "/shop.users.v1.UserService/GetUser", &get_user);
    request.headers_mut().insert("x-big", big.parse().expect("ascii"));
    let refused = sender.send_request(request).await.expect("an answer");
    assert_eq!(refused.status(), 431, "HTTP/2: {refused:?}");
    let served = sender
        .send_request(support::grpc_request(gw.address, "/shop.users.v1.UserService/GetUser", &get_user))
        .await
        .expect("the same connection takes the next call");
    let trailers = served.into_body().collect().await.expect("body").trailers().cloned().unwrap_or_default();
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]), "and serves it: {trailers:?}");
    assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_slower_than_body_read_timeout_is_408() {
    let gw = gateway("  body_read_timeout: 300ms\n").await;
    let mut stream = connect(gw.address).await;
    stream
        .write_all(b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\"")
        .await
        .expect("write");
    let answer = String::from_utf8_lossy(&until_closed(&mut stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_stops_answering_pings_is_closed() {
    let gw = gateway("  http2_keepalive_interval: 200ms\n  http2_keepalive_timeout: 200ms\n  idle_timeout: 1h\n").await;
    let mut stream = connect(gw.address).await;
    // The preface and an empty SETTINGS frame; then read everything and answer nothing.
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.expect("write");
    let types = frame_types(&until_closed(&mut stream).await);
    assert!(types.contains(&0x6), "the gateway pinged before closing: frame types {types:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sockets_have_tcp_keepalive() {
    let gw = gateway("  tcp_keepalive: 30s\n").await;
    let mut stream = connect(gw.address).await;
    stream.write_all(b"GET /v1/users/u-1 HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut buf = [0u8; 12];
    stream.read_exact(&mut buf).await.expect("answered");
    // The gateway's side of this connection, as the kernel reports it.
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", "sport", "=", &format!(":{}", gw.address.port())])
        .output()
        .expect("ss (iproute2) runs");
    let sockets = String::from_utf8_lossy(&out.stdout).into_owned();
    let client = stream.local_addr().expect("address").to_string();
    let line = sockets.lines().find(|l| l.contains(&client)).unwrap_or_else(|| panic!("{client} in:\n{sockets}"));
    // timer:(keepalive,29sec,0): the first probe within the configured 30 s (the default is 60).
    let timer = line.split("timer:(keepalive,").nth(1).unwrap_or_else(|| panic!("keep-alive on: {line}"));
    let seconds: u32 = timer.split("sec").next().and_then(|s| s.parse().ok()).unwrap_or(u32::MAX);
    assert!(seconds <= 30, "{line}");
}

/// An encoded `conformance.v1.Message` whose `name` is `n` bytes long.
fn message_named(n: usize) -> Vec<u8> {
    let mut out = vec![0x0a];
    let mut len = n;
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend(std::iter::repeat_n(b'x', n));
    out
}

/// The conformance service behind `backend`, with `max_message_size: 1024`.
async fn small_messages(backend: SocketAddr) -> TestGateway {
    let proto = std::fs::read(support::root().join("tests/proto/conformance.proto")).expect("test proto");
    TestGateway::builder()
        .sets(vec![("conformance.proto", proto)])
        .include_repo_protos()
        .without_demo_rules()
        .rules(&format!("  - match: conformance.*\n    backends: [http://{backend}]\n"))
        .server("  max_message_size: 1024\n")
        .start()
        .await
}

/// A raw gRPC call whose request is one message of `name_len` bytes of name.
async fn call_named(gw: &TestGateway, path: &str, name_len: usize) -> support::RawReply {
    support::raw_unary(gw.address, path, &RawMessage(message_named(name_len)), &[]).await
}

/// Bytes that are already an encoded message.
#[derive(Clone, PartialEq)]
struct RawMessage(Vec<u8>);

impl prost::Message for RawMessage {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        _: u32,
        _: prost::encoding::WireType,
        _: &mut impl bytes::Buf,
        _: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        Ok(())
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

impl std::fmt::Debug for RawMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawMessage({} bytes)", self.0.len())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_max_message_size_end_their_call_both_ways() {
    // Passthrough, client to backend: the mirror would echo it, but it never gets there whole.
    let mirror = support::start_mirror().await;
    let gw = small_messages(mirror).await;
    let fits = call_named(&gw, "/conformance.v1.Messaging/GetMessage", 1000).await;
    assert_eq!(fits.status(), Some(0));
    let big = call_named(&gw, "/conformance.v1.Messaging/GetMessage", 2000).await;
    assert_eq!(big.status(), Some(8), "RESOURCE_EXHAUSTED: {:?}", big.headers);
    let message = big.trailers.as_ref().unwrap_or(&big.headers).get("grpc-message").cloned();
    let message = percent_encoding::percent_decode(message.as_ref().map_or(&b""[..], |v| v.as_bytes()))
        .decode_utf8_lossy()
        .into_owned();
    assert!(message.contains("the request: a message of 2003 bytes is larger than the limit of 1024"), "{message}");
    // REST: the JSON body makes a message too large to send.
    let rest = support::post_json(
        gw.address,
        "/conformance.v1.Messaging/GetMessage",
        &format!(r#"{{"name":"{}"}}"#, "x".repeat(2000)),
    )
    .await;
    assert_eq!(rest.status, 413, "{}", rest.text());
    assert!(rest.text().contains("larger than the limit of 1024"), "{}", rest.text());

    // Backend to client: one fitting message, then one too large.
    let backend = support::start_answering(vec![message_named(10), message_named(2000)]).await;
    let gw = small_messages(backend).await;
    let stream = call_named(&gw, "/conformance.v1.Messaging/Watch", 1).await;
    assert_eq!(stream.status(), Some(8), "RESOURCE_EXHAUSTED");
    assert_eq!(stream.body.len(), 5 + 12, "the fitting message came through, the large one did not");
    let lines = support::get(gw.address, "/v1/messages:watch").await;
    let text = lines.text();
    assert!(text.starts_with("{\"result\":{\"name\":\"xxxxxxxxxx\"}}\n"), "{text}");
    assert!(text.contains("\"error\"") && text.contains("larger than the limit of 1024"), "{text}");
    // The gateway keeps serving.
    let fine =
        support::raw_unary(gw.address, "/conformance.v1.Messaging/GetMessage", &RawMessage(message_named(1)), &[])
            .await;
    assert_eq!(fine.status(), Some(8), "that backend always answers too large");
    assert_eq!(get(gw.address, "/openapi.json").await.status, 200);
}
