//! Overload protection: a service at its `max_calls_in_flight` sheds the next call at once.

mod support;

use std::time::Duration;

use support::{TestGateway, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_at_its_calls_in_flight_sheds_the_next_call_at_once() {
    use bytes::Bytes;
    let (held, frames) = support::start_held().await;
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.users.v1.UserService\n    backends: [http://{held}]\n    max_calls_in_flight: 1\n"
        ))
        .start()
        .await;
    // The first call takes the only place and waits for the backend.
    let first = tokio::spawn({
        let address = gw.address;
        async move { get(address, "/v1/users/u-1").await }
    });
    // Once it is in flight (the backend has it: the gateway's figures say so), the next is shed.
    let in_flight = async {
        loop {
            let mut figures = String::new();
            gw.gateway.backends().render(&mut figures, false);
            if figures.lines().any(|l| l.starts_with("dragoman_backend_calls_in_flight") && l.ends_with(" 1")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), in_flight).await.expect("the first call reaches the backend");
    let started = std::time::Instant::now();
    let shed = get(gw.address, "/v1/users/u-2").await;
    assert_eq!(shed.status, 503, "{}", shed.text());
    assert!(started.elapsed() < Duration::from_secs(1), "shed at once, not queued: {:?}", started.elapsed());
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert!(shed.text().contains("at its limit of calls in flight"), "{}", shed.text());
    // The first call is answered, and frees its place.
    let user = b"\x00\x00\x00\x00\x05\x0a\x03u-1";
    frames.send(Ok(http_body::Frame::data(Bytes::from_static(user)))).await.expect("send");
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    frames.send(Ok(http_body::Frame::trailers(trailers))).await.expect("send");
    let first = first.await.expect("joined");
    assert_eq!(first.status, 200, "{}", first.text());
    let after = get(gw.address, "/v1/users/u-3").await;
    assert!(!after.text().contains("at its limit"), "the place was freed: {}", after.text());
}
