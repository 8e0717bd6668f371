//! gRPC passthrough with tonic clients: all four method kinds, large messages, metadata and
//! trailers both ways, compressed frames, and reflection v1.

mod support;

use std::time::Duration;

use dragoman::demo::pb::shop::common::v1::Money;
use dragoman::demo::pb::shop::orders::v1::order_service_client::OrderServiceClient;
use dragoman::demo::pb::shop::orders::v1::{
    AddLineItemRequest, CartAction, CreateOrderRequest, LineItem, OrderStatus, WatchOrderRequest, cart_action,
};
use dragoman::demo::pb::shop::products::v1::product_service_client::ProductServiceClient;
use dragoman::demo::pb::shop::products::v1::{CreateProductRequest, GetProductRequest, Product};
use dragoman::demo::pb::shop::users::v1::GetUserRequest;
use dragoman::demo::pb::shop::users::v1::user_service_client::UserServiceClient;
use support::{TestGateway, USERS};
use tokio_stream::StreamExt;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request};

fn item(product: &str, quantity: i32) -> LineItem {
    LineItem { product_id: product.into(), quantity, unit_price: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_server_streaming() {
    let gw = TestGateway::start().await;
    let mut users = UserServiceClient::new(gw.channel().await);
    let user = users.get_user(GetUserRequest { id: "u-1".into() }).await.expect("GetUser").into_inner();
    assert_eq!(user.email, "ada@example.com");

    let mut orders = OrderServiceClient::new(gw.channel().await);
    let order = orders
        .create_order(CreateOrderRequest { user_id: "u-1".into(), items: vec![item("p-3", 1)] })
        .await
        .expect("CreateOrder")
        .into_inner();
    let interval = Some(prost_types::Duration { seconds: 0, nanos: 20_000_000 });
    let mut events = orders
        .watch_order(WatchOrderRequest { id: order.id.clone(), interval })
        .await
        .expect("WatchOrder")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(event) = events.message().await.expect("stream ends cleanly") {
        seen.push(event.status);
    }
    let expected =
        [OrderStatus::Placed, OrderStatus::Paid, OrderStatus::Shipped, OrderStatus::Delivered].map(|s| s as i32);
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming() {
    let gw = TestGateway::start().await;
    let mut orders = OrderServiceClient::new(gw.channel().await);
    let order = orders
        .create_order(CreateOrderRequest { user_id: "u-1".into(), items: vec![item("p-1", 1)] })
        .await
        .expect("CreateOrder")
        .into_inner();
    let batch: Vec<AddLineItemRequest> = (0..50)
        .map(|i| AddLineItemRequest {
            order_id: order.id.clone(),
            item: Some(item(if i % 2 == 0 { "p-2" } else { "p-3" }, 1)),
        })
        .collect();
    let updated = orders.add_line_items(tokio_stream::iter(batch)).await.expect("AddLineItems").into_inner();
    assert_eq!(updated.items.len(), 51);
    // 24.99 + 25 x 4.99 + 25 x 39.99 = 1149.49
    assert_eq!(updated.total, Some(Money { currency_code: "EUR".into(), units: 1149, nanos: 490_000_000 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_streams_answer_as_they_go() {
    let gw = TestGateway::start().await;
    let mut orders = OrderServiceClient::new(gw.channel().await);
    let (actions, rx) = tokio::sync::mpsc::channel(4);
    let mut carts =
        orders.live_cart(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("LiveCart").into_inner();
    // Each answer arrives before the next action is sent: nothing waits for the end of the stream.
    let add = |p: &str, q| CartAction { action: Some(cart_action::Action::Add(item(p, q))) };
    actions.send(add("p-1", 2)).await.expect("send");
    let cart = carts.message().await.expect("answer").expect("a cart");
    assert_eq!((cart.revision, cart.items.len()), (1, 1));
    actions.send(add("p-2", 1)).await.expect("send");
    let cart = carts.message().await.expect("answer").expect("a cart");
    assert_eq!((cart.revision, cart.items.len()), (2, 2));
    actions.send(CartAction { action: Some(cart_action::Action::RemoveProductId("p-1".into())) }).await.expect("send");
    let cart = carts.message().await.expect("answer").expect("a cart");
    assert_eq!(cart.total, Some(Money { currency_code: "EUR".into(), units: 4, nanos: 990_000_000 }));
    drop(actions);
    assert!(carts.message().await.expect("clean end").is_none(), "half-close ends the backend's stream too");

    // An error mid-stream reaches the client as the backend's status.
    let (actions, rx) = tokio::sync::mpsc::channel(1);
    let mut carts =
        orders.live_cart(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("LiveCart").into_inner();
    actions.send(add("p-404", 1)).await.expect("send");
    let err = carts.message().await.expect_err("unknown product");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("p-404"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mebibyte_messages_pass_both_ways_when_the_limit_allows() {
    let description: String = "0123456789abcdef".repeat(4 << 16); // 4 MiB
    let request = |description: &str| CreateProductRequest {
        product: Some(Product {
            name: "Huge Manual".into(),
            description: description.to_owned(),
            price: Some(Money { currency_code: "EUR".into(), units: 1, nanos: 0 }),
            ..Default::default()
        }),
    };
    // The default limit is tonic's, 4 MiB: a message just over it is refused with its size.
    let gw = TestGateway::start().await;
    let mut products = ProductServiceClient::new(gw.channel().await).max_encoding_message_size(64 << 20);
    let err = products.create_product(request(&description)).await.expect_err("over 4 MiB");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("larger than the limit of 4194304 bytes"), "{}", err.message());

    let gw = TestGateway::builder().server("  max_message_size: 8388608\n").start().await;
    let mut products = ProductServiceClient::new(gw.channel().await)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let created = products.create_product(request(&description)).await.expect("4 MiB up").into_inner();
    let fetched = products.get_product(GetProductRequest { id: created.id }).await.expect("4 MiB down").into_inner();
    assert_eq!(fetched.description.len(), 4 << 20);
    assert!(fetched.description == description, "the bytes arrive unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_trailers_deadlines_and_compression_pass_through() {
    let echo = support::start_echo().await;
    let gw = TestGateway::builder()
        .sets(vec![("users.binpb", support::demo_set(&[USERS]))])
        .without_demo_rules()
        .rules(&format!("  - match: shop.users.v1.UserService\n    backends: [http://{echo}]\n"))
        .start()
        .await;
    let mut users = UserServiceClient::new(gw.channel().await)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);

    let mut request = Request::new(GetUserRequest { id: "u-7".into() });
    request.metadata_mut().insert("x-request-id", "abc-123".parse().expect("ascii"));
    request.metadata_mut().insert("x-forwarded-for", "10.1.1.1".parse().expect("ascii"));
    request.set_timeout(Duration::from_secs(30));
    let response = users.get_user(request).await.expect("echo answers");
    assert_eq!(response.metadata().get("x-served-by").and_then(|v| v.to_str().ok()), Some("echo"));
    assert_eq!(
        response.metadata().get("grpc-encoding").and_then(|v| v.to_str().ok()),
        Some("gzip"),
        "compressed frames come back as they are"
    );
    let user = response.into_inner();
    assert!(user.display_name.contains("request-id=abc-123"), "{}", user.display_name);
    // This hop is added to X-Forwarded-For, as on REST.
    assert!(user.display_name.contains("x-forwarded-for=10.1.1.1, 127.0.0.1"), "{}", user.display_name);
    let timeout = user.display_name.split(' ').find_map(|kv| kv.strip_prefix("grpc-timeout=")).unwrap_or("-");
    assert_ne!(timeout, "-", "the backend gets the remaining deadline as grpc-timeout: {}", user.display_name);

    let err = users.get_user(GetUserRequest { id: "fail".into() }).await.expect_err("echo refuses");
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(err.message(), "echo refuses");
    assert_eq!(err.details(), b"\x01\x02detail", "grpc-status-details-bin passes through");
    assert_eq!(err.metadata().get("x-error-detail").and_then(|v| v.to_str().ok()), Some("in the trailers"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_answers_from_the_catalog() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let gw = TestGateway::start().await;
    let mut client = ServerReflectionClient::new(gw.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers =
        client.server_reflection_info(tokio_stream::iter([request])).await.expect("reflection v1").into_inner();
    let answer = answers.next().await.expect("one answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "shop.payments.v1.PaymentService"), "{names:?}");
    assert!(names.iter().any(|n| n == "grpc.health.v1.Health"), "{names:?}");
}

/// A backend streaming many small messages to a client that reads slowly: they wait in the
/// gateway's HTTP/2 buffers, one DATA frame each. h2 counts the unread small frames on a
/// connection against a budget (half the connection window) and closes the connection when it
/// runs out — which with a 4 MiB window took one such client, and every call on that backend
/// connection with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_of_many_small_messages_gets_them_all() {
    const MESSAGES: usize = 60_000;
    let (backend, sent) = start_small_message_backend(MESSAGES).await;
    let gw = TestGateway::builder().backend("shop.orders.v1.OrderService", &backend.to_string()).start().await;
    // A small window, so that the messages wait in the gateway rather than in this client.
    let channel = tonic::transport::Endpoint::from_shared(gw.url())
        .expect("url")
        .initial_stream_window_size(64 << 10)
        .connect()
        .await
        .expect("connect");
    let mut orders = OrderServiceClient::new(channel);
    let mut events = orders
        .watch_order(WatchOrderRequest { id: "o-1".into(), interval: None })
        .await
        .expect("WatchOrder")
        .into_inner();
    // Read nothing until the gateway holds more small frames than h2's budget allowed with a
    // 4 MiB window (~10,000 of 52 bytes); the backend stops at the 1 MiB stream window (~20,000).
    for _ in 0..100 {
        if sent.load(std::sync::atomic::Ordering::Relaxed) >= 15_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let piled = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(piled >= 15_000, "only {piled} messages were sent before reading");
    let mut received = 0;
    while let Some(event) =
        events.message().await.unwrap_or_else(|e| panic!("cut off after {piled} messages had piled up: {e}"))
    {
        assert_eq!(event.order_id, order_id(received), "in order");
        received += 1;
    }
    assert_eq!(received, MESSAGES);
}

/// A backend whose every call is a server stream of `messages` 52-byte messages, each its own
/// DATA frame, as fast as the gateway takes them, then an OK status; the count says how many left.
/// Message `i` is for order [`order_id`]`(i)`.
async fn start_small_message_backend(
    messages: usize,
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use http_body_util::StreamBody;
    use prost::Message as _;

    let message = |i: usize| {
        let event = dragoman::demo::pb::shop::orders::v1::OrderEvent {
            order_id: order_id(i),
            status: OrderStatus::Paid as i32,
            time: None,
        };
        let mut message = vec![0, 0, 0, 0, event.encoded_len() as u8];
        event.encode(&mut message).expect("encode");
        bytes::Bytes::from(message)
    };
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counter = counter.clone();
            let service = hyper::service::service_fn(move |_: http::Request<hyper::body::Incoming>| {
                let counter = counter.clone();
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                let frames = (0..messages)
                    .map(message)
                    .inspect(move |_| {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    })
                    .map(hyper::body::Frame::data)
                    .chain([hyper::body::Frame::trailers(trailers)])
                    .map(Ok::<_, std::convert::Infallible>);
                let mut response = http::Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/grpc"));
                std::future::ready(Ok::<_, std::convert::Infallible>(response))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    (backend, sent)
}

/// The order a small-message backend's message `i` is for: the same length for every `i`.
fn order_id(i: usize) -> String {
    format!("order-{i:010}-of-a-stream-of-small-ones")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_that_arrive_together_leave_in_fewer_frames_intact() {
    use http_body_util::BodyExt;
    use prost::Message as _;
    const MESSAGES: usize = 20_000;
    let (backend, _) = start_small_message_backend(MESSAGES).await;
    let gw = TestGateway::builder().backend("shop.orders.v1.OrderService", &backend.to_string()).start().await;
    let mut sender = support::h2_client(gw.address).await;
    let request = support::grpc_request(
        gw.address,
        "/shop.orders.v1.OrderService/WatchOrder",
        &WatchOrderRequest { id: "o-1".into(), interval: None },
    );
    let mut body = sender.send_request(request).await.expect("response").into_body();
    // hyper hands over each DATA frame as it came.
    let (mut frames, mut bytes, mut trailers) = (0, bytes::BytesMut::new(), None);
    let read = async {
        while let Some(frame) = body.frame().await {
            match frame.expect("frame").into_data() {
                Ok(data) => {
                    frames += 1;
                    bytes.extend_from_slice(&data);
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("the stream ends");
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]), "{trailers:?}");
    // Every message whole and in order, however the frames were cut.
    let mut messages = bytes.freeze();
    let mut count = 0;
    while !messages.is_empty() {
        assert!(messages.len() >= 5 && messages[0] == 0, "message {count}: no uncompressed length prefix");
        let len = u32::from_be_bytes([messages[1], messages[2], messages[3], messages[4]]) as usize;
        assert!(messages.len() >= 5 + len, "message {count}: cut short");
        let event =
            dragoman::demo::pb::shop::orders::v1::OrderEvent::decode(messages.slice(5..5 + len)).expect("decode");
        assert_eq!(event.order_id, order_id(count), "in order");
        messages = messages.slice(5 + len..);
        count += 1;
    }
    assert_eq!(count, MESSAGES);
    // The backend writes them as fast as it can: the gateway reads many at a time and passes
    // them on gathered, not one frame per message (how they are cut: the unit tests in
    // `src/frontends/grpc/body.rs`).
    assert!(frames * 4 <= MESSAGES, "{frames} DATA frames for {MESSAGES} messages");
}
