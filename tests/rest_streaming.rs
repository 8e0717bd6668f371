//! Streaming over REST: server streams written as the backend sends them (NDJSON with
//! `{"result"}` lines, bare lines, one array, SSE), errors before and in the middle of a stream,
//! NDJSON request streams, bidirectional streams over HTTP/2, and cancellation.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use support::{TestGateway, get, http, http_stream, next_chunk, no_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stream_as_result_lines_by_default() {
    let gw = TestGateway::start().await;
    let reply = get(gw.address, "/v1/orders/o-1:watch?interval=0.01s").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    let text = reply.text();
    assert!(text.ends_with('\n'), "ends with the delimiter: {text:?}");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["result"]["status"].as_str()).collect();
    assert_eq!(
        statuses,
        ["ORDER_STATUS_PLACED", "ORDER_STATUS_PAID", "ORDER_STATUS_SHIPPED", "ORDER_STATUS_DELIVERED"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_message_arrives_before_the_last_is_sent() {
    let gw = TestGateway::start().await;
    // A minute between events: a gateway that held the first line back for more would trip the
    // hang guard in next_chunk.
    let response = http_stream(gw.address, "GET", "/v1/orders/o-1:watch?interval=60s", &[], no_body(), false).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = next_chunk(&mut body).await.expect("a first line");
    assert!(first.contains("ORDER_STATUS_PLACED"), "{first}");
    // The backend has sent one event of four: the order is still only placed.
    assert_eq!(gw.backends.shop.order_status("o-1"), Some(1), "nothing was buffered until the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_chooses_sse_lines_or_an_array() {
    let gw = TestGateway::start().await;
    let watch = |accept: &'static str| {
        let address = gw.address;
        async move { http(address, "GET", "/v1/orders/o-1:watch?interval=0s", &[("accept", accept)], b"").await }
    };
    let sse = watch("text/event-stream").await;
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    let events: Vec<&str> = sse.text().leak().split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(!events.is_empty() && events.iter().all(|e| e.starts_with("data: {\"orderId\":\"o-1\"")), "{events:?}");

    let lines = watch("application/x-ndjson").await;
    let first: serde_json::Value = serde_json::from_str(lines.text().lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["orderId"], "o-1", "bare messages, no result wrapper");

    let array = watch("application/json").await;
    let parsed: serde_json::Value = serde_json::from_slice(&array.body).expect("one JSON document");
    assert!(parsed.as_array().is_some_and(|a| !a.is_empty() && a[0]["orderId"] == "o-1"), "{parsed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_first_gets_the_error_status() {
    let gw = TestGateway::start().await;
    let missing = get(gw.address, "/v1/orders/o-404:watch").await;
    assert_eq!(missing.status, 404, "not a 200 with an error inside: {}", missing.text());
    assert_eq!(missing.json()["code"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_mid_stream_is_the_last_line() {
    let gw = TestGateway::start().await;
    let reply = http(gw.address, "GET", "/v1/orders/o-1:watch?interval=5s", &[("x-timeout-ms", "300")], b"").await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["result"]["status"], "ORDER_STATUS_PLACED");
    assert_eq!(lines[1]["error"]["code"], 4, "{text}");
    assert!(text.ends_with('\n'));

    let sse = http(
        gw.address,
        "GET",
        "/v1/orders/o-1:watch?interval=5s",
        &[("x-timeout-ms", "300"), ("accept", "text/event-stream")],
        b"",
    )
    .await;
    assert!(sse.text().contains("event: error\ndata: {\"code\":4"), "{}", sse.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_stream_upload_as_ndjson() {
    let gw = TestGateway::start().await;
    let lines = "{\"orderId\":\"o-1\",\"item\":{\"productId\":\"p-2\",\"quantity\":1}}\n\n{\"orderId\":\"o-1\",\"item\":{\"productId\":\"p-3\",\"quantity\":2}}\n";
    let reply = http(
        gw.address,
        "POST",
        "/v1/orders:addLineItems",
        &[("content-type", "application/x-ndjson")],
        lines.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["items"].as_array().map(Vec::len), Some(3));

    // A single JSON object without a newline is one message.
    let one = "{\"orderId\":\"o-1\",\"item\":{\"productId\":\"p-4\",\"quantity\":1}}";
    let reply =
        http(gw.address, "POST", "/v1/orders:addLineItems", &[("content-type", "application/json")], one.as_bytes())
            .await;
    assert_eq!(reply.json()["items"].as_array().map(Vec::len), Some(4), "{}", reply.text());

    // A type that clearly is not JSON is refused, as for a whole JSON body; others are read as JSON.
    let reply =
        http(gw.address, "POST", "/v1/orders:addLineItems", &[("content-type", "application/xml")], one.as_bytes())
            .await;
    assert_eq!(reply.status, 415, "{}", reply.text());
    let reply =
        http(gw.address, "POST", "/v1/orders:addLineItems", &[("content-type", "text/plain")], one.as_bytes()).await;
    assert_eq!(reply.json()["items"].as_array().map(Vec::len), Some(5), "{}", reply.text());

    // A bad line is the client's error, and nothing of the batch is kept.
    let bad = "{\"orderId\":\"o-1\",\"item\":{\"productId\":\"p-2\",\"quantity\":1}}\n{\"orderId\": oops}\n";
    let reply = http(
        gw.address,
        "POST",
        "/v1/orders:addLineItems",
        &[("content-type", "application/x-ndjson")],
        bad.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("line 2 of the request stream: malformed JSON"), "{}", reply.text());
    let order = get(gw.address, "/v1/orders/o-1").await.json();
    assert_eq!(order["items"].as_array().map(Vec::len), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_over_http2_answers_each_line_as_it_comes() {
    let gw = TestGateway::start().await;
    let (lines, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::convert::Infallible>>(4);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    let send = |line: &str| http_body::Frame::data(Bytes::from(format!("{line}\n")));
    lines.send(Ok(send(r#"{"add":{"productId":"p-1","quantity":2}}"#))).await.expect("send");
    let response =
        http_stream(gw.address, "POST", "/v1/cart:live", &[("content-type", "application/x-ndjson")], body, true).await;
    assert_eq!(response.status(), 200);
    let mut carts = response.into_body();
    let first = next_chunk(&mut carts).await.expect("first cart");
    assert!(first.contains("\"revision\":1"), "{first}");
    // The second action is sent only after the first answer arrived.
    lines.send(Ok(send(r#"{"removeProductId":"p-1"}"#))).await.expect("send");
    let second = next_chunk(&mut carts).await.expect("second cart");
    assert!(second.contains("\"revision\":2") && !second.contains("p-1"), "{second}");
    drop(lines);
    assert_eq!(next_chunk(&mut carts).await, None, "the end of the body half-closes; the stream ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_going_away_cancels_the_backend_call() {
    let gw = TestGateway::start().await;
    let response = http_stream(gw.address, "GET", "/v1/orders/o-1:watch?interval=10s", &[], no_body(), false).await;
    let mut body = response.into_body();
    next_chunk(&mut body).await.expect("first line");
    let watches = gw.backends.shop.watches();
    assert_eq!(*watches.borrow(), 1, "the backend is streaming");
    drop(body);
    support::wait_for(watches, "the backend's stream is cancelled", |open| *open == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_headers_are_sent_before_the_first_message() {
    let (backend, frames) = support::start_held().await;
    let proto = std::fs::read(support::root().join("tests/proto/conformance.proto")).expect("test proto");
    let gw = TestGateway::builder()
        .sets(vec![("conformance.proto", proto)])
        .include_repo_protos()
        .without_demo_rules()
        .rules(&format!("  - match: conformance.*\n    backends: [http://{backend}]\n"))
        .start()
        .await;
    // The backend has answered with headers and no message: the client sees the stream open.
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        support::http_stream(gw.address, "GET", "/v1/messages:watch", &[], support::no_body(), false),
    )
    .await
    .expect("the headers come before any message");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/x-ndjson"));
    // Then each message as it comes.
    let mut body = response.into_body();
    frames.send(Ok(http_body::Frame::data(Bytes::from_static(b"\x00\x00\x00\x00\x04\x0a\x02hi")))).await.expect("send");
    assert_eq!(support::next_chunk(&mut body).await.as_deref(), Some("{\"result\":{\"name\":\"hi\"}}\n"));
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    frames.send(Ok(http_body::Frame::trailers(trailers))).await.expect("send");
    assert_eq!(support::next_chunk(&mut body).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_stream_answers_a_bad_first_line_with_its_status() {
    let gw = TestGateway::start().await;
    let ndjson = [("content-type", "application/x-ndjson")];
    let bad_first = http(gw.address, "POST", "/v1/cart:live", &ndjson, b"{\"add\": oops}\n").await;
    assert_eq!(bad_first.status, 400, "{}", bad_first.text());
    assert!(bad_first.text().contains("line 1 of the request stream"), "{}", bad_first.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_speaks_first_on_a_bidirectional_stream_is_heard_before_the_client_speaks() {
    let (backend, frames) = support::start_held().await;
    let proto = std::fs::read(support::root().join("tests/proto/conformance.proto")).expect("test proto");
    let gw = TestGateway::builder()
        .sets(vec![("conformance.proto", proto)])
        .include_repo_protos()
        .without_demo_rules()
        .rules(&format!("  - match: conformance.*\n    backends: [http://{backend}]\n"))
        .start()
        .await;
    // The client opens the stream over HTTP/2 and sends nothing yet.
    let (lines, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::convert::Infallible>>(4);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    let headers = [("content-type", "application/x-ndjson")];
    let opening = http_stream(gw.address, "POST", "/v1/messages:chat", &headers, body, true);
    // The backend speaks first: its greeting reaches the client, who has said nothing.
    frames.send(Ok(http_body::Frame::data(Bytes::from_static(b"\x00\x00\x00\x00\x04\x0a\x02hi")))).await.expect("send");
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), opening).await.expect("answered first");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    assert_eq!(next_chunk(&mut body).await.as_deref(), Some("{\"result\":{\"name\":\"hi\"}}\n"));
    drop(lines);
}
