//! Backends that misbehave: one that swallows connections (black-holed), one at its limit of
//! concurrent streams. Calls must neither queue behind a dial nor wait without bound.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use support::TestGateway;
use tokio::sync::Semaphore;

/// A loopback address whose connects hang: its listen backlog is full and nothing accepts, so
/// the kernel drops further SYNs. Keep the returned socket and fillers alive.
fn black_hole() -> (SocketAddr, Vec<std::net::TcpStream>, socket2::Socket) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("address").into()).expect("bind");
    socket.listen(0).expect("listen");
    let address = socket.local_addr().expect("address").as_socket().expect("inet");
    // Fill the backlog (Linux admits backlog + 1) with connections nobody accepts.
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(stream) = std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
            fillers.push(stream);
        }
    }
    (address, fillers, socket)
}

fn charge() -> dragoman::demo::pb::shop::payments::v1::ChargeRequest {
    dragoman::demo::pb::shop::payments::v1::ChargeRequest {
        order_id: "o-1".into(),
        amount: Some(dragoman::demo::pb::shop::common::v1::Money { currency_code: "EUR".into(), units: 1, nanos: 0 }),
        card_token: "tok_visa".into(),
    }
}

const CHARGE: &str = "/shop.payments.v1.PaymentService/Charge";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_backend_costs_one_shared_dial() {
    let logs = support::logs();
    let (hole, _fillers, _socket) = black_hole();
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.payments.v1.PaymentService\n    backends: [http://{hole}]\n    connect_timeout: 1s\n"
        ))
        .start()
        .await;
    let dials =
        || logs.text().lines().filter(|l| l.contains("backend unreachable") && l.contains(&hole.to_string())).count();

    // Calls arriving together share the dial under way: at most one per worker.
    let request = charge();
    let calls = (0..6).map(|_| support::raw_unary(gw.address, CHARGE, &request, &[]));
    let replies = futures_util::future::join_all(calls).await;
    for reply in &replies {
        assert_eq!(reply.status(), Some(14), "UNAVAILABLE");
    }
    let dials = dials();
    assert!((1..=2).contains(&dials), "one dial per worker, not one per call: {dials}");
    let message = replies[0].headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let message = percent_encoding::percent_decode_str(message).decode_utf8_lossy();
    assert!(message.contains("shop.payments.v1.PaymentService is unavailable"), "{message}");
    assert!(!message.contains(&hole.port().to_string()), "the address stays in the log: {message}");

    // (The back-off that follows is tested in virtual time: upstream::connection's unit tests.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_beside_a_live_backend_delays_no_call() {
    let (hole, _fillers, _socket) = black_hole();
    let backends = dragoman::demo::Backends::start().await.expect("demo backends");
    let live = backends.addresses[3];
    // Were any call to wait for the black hole, it would wait 30 s and trip the guard below.
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.payments.v1.PaymentService\n    backends: [http://{hole}, http://{live}]\n    connect_timeout: 30s\n"
        ))
        .start()
        .await;
    let calls = async {
        for _ in 0..10 {
            assert_eq!(support::raw_unary(gw.address, CHARGE, &charge(), &[]).await.status(), Some(0));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), calls).await.expect("no call waited for the black hole");
}

/// A gRPC backend that allows one stream at a time and answers each call (with its request) only
/// when the test lets it (`gate`); `arrived` gets a permit for each call that reached it.
async fn start_gated() -> (SocketAddr, Arc<Semaphore>, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let arrived = Arc::new(Semaphore::new(0));
    let arrivals = arrived.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let opened = gate.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (gate, arrivals) = (opened.clone(), arrivals.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (gate, arrivals) = (gate.clone(), arrivals.clone());
                    async move {
                        arrivals.add_permits(1);
                        let body = request.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        if let Ok(permit) = gate.acquire().await {
                            permit.forget();
                        }
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let body =
                            http_body_util::Full::new(body).with_trailers(std::future::ready(Some(Ok(trailers))));
                        let mut response = http::Response::new(body);
                        response
                            .headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("application/grpc"));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .max_concurrent_streams(1)
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (address, gate, arrived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_at_its_stream_limit_makes_calls_wait_bounded_then_fail_fast() {
    let (backend, gate, arrived) = start_gated().await;
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.payments.v1.PaymentService\n    backends: [http://{backend}]\n    queue_timeout: 300ms\n"
        ))
        .start()
        .await;
    // One client connection: every call lands on the same worker, so on the same backend
    // connection, which the backend allows one stream.
    let sender = support::h2_client(gw.address).await;
    let call = |mut sender: hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>| async move {
        use prost::Message as _;
        let payload = charge().encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
        frame.extend_from_slice(&payload);
        let request = http::Request::post(format!("http://gateway{CHARGE}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(Bytes::from(frame)))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let headers = response.headers().clone();
        let collected = response.into_body().collect().await.expect("body");
        let trailers = collected.trailers().cloned().unwrap_or(headers);
        let status = trailers.get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<i32>().ok());
        let message = trailers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        (status, percent_encoding::percent_decode_str(&message).decode_utf8_lossy().into_owned())
    };
    // The first call takes the backend's only stream and is held there.
    let first = tokio::spawn(call(sender.clone()));
    arrived.acquire().await.expect("the first call reaches the backend").forget();
    // The second finds no stream: it waits its queue_timeout, then fails fast with the reason,
    // instead of queueing inside the HTTP/2 client.
    let (status, second) = call(sender.clone()).await;
    assert_eq!(status, Some(14), "UNAVAILABLE: {second}");
    assert!(second.contains("at their limit of 1 concurrent calls"), "{second}");
    // Opened: the held call completes, and calls go through again.
    gate.add_permits(100);
    assert_eq!(first.await.expect("first call").0, Some(0));
    assert_eq!(call(sender.clone()).await.0, Some(0));
}

/// A TCP server that accepts connections and counts them, then closes each at once (`close`) or
/// keeps it open and says nothing: a backend that is up in TCP only.
async fn start_mute(close: bool) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if !close {
                held.push(tcp);
            }
        }
    });
    (address, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_accepts_and_closes_is_a_failed_dial_that_backs_off() {
    let (backend, accepted) = start_mute(true).await;
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!("  - match: shop.payments.v1.PaymentService\n    backends: [http://{backend}]\n"))
        .start()
        .await;
    for _ in 0..20 {
        assert_eq!(support::raw_unary(gw.address, CHARGE, &charge(), &[]).await.status(), Some(14));
    }
    // One dial per worker, and perhaps one more each when a back-off ends: not one per call.
    let dials = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=4).contains(&dials), "{dials} connections for 20 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_accepts_and_says_nothing_fails_at_connect_timeout() {
    let (backend, _accepted) = start_mute(false).await;
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.payments.v1.PaymentService\n    backends: [http://{backend}]\n    connect_timeout: 300ms\n"
        ))
        .start()
        .await;
    // No deadline on the call: only the dial's own timeout can end it (before, it hung until the
    // backend connection's keep-alive gave up, 40 s).
    let reply = tokio::time::timeout(Duration::from_secs(10), support::raw_unary(gw.address, CHARGE, &charge(), &[]))
        .await
        .expect("the call fails at connect_timeout, not later");
    assert_eq!(reply.status(), Some(14));
}
