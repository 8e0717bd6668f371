//! What goes wrong, and how the gateway says so: cancellation, deadlines, dead backends, unknown
//! services and methods. After each, the gateway keeps serving.

mod support;

use std::time::Duration;

use dragoman::demo::pb::shop::common::v1::Money;
use dragoman::demo::pb::shop::orders::v1::order_service_client::OrderServiceClient;
use dragoman::demo::pb::shop::orders::v1::{CreateOrderRequest, LineItem, OrderStatus, WatchOrderRequest};
use dragoman::demo::pb::shop::payments::v1::ChargeRequest;
use dragoman::demo::pb::shop::payments::v1::payment_service_client::PaymentServiceClient;
use dragoman::demo::pb::shop::users::v1::GetUserRequest;
use dragoman::demo::pb::shop::users::v1::user_service_client::UserServiceClient;
use support::{TestGateway, dead_port, wait_for};
use tonic::{Code, Request};

async fn place_order(gw: &TestGateway) -> String {
    let mut orders = OrderServiceClient::new(gw.channel().await);
    let items = vec![LineItem { product_id: "p-1".into(), quantity: 1, unit_price: None }];
    orders.create_order(CreateOrderRequest { user_id: "u-1".into(), items }).await.expect("CreateOrder").into_inner().id
}

const WATCH_ORDER: &str = "/shop.orders.v1.OrderService/WatchOrder";

fn slow_charge(order_id: &str) -> ChargeRequest {
    ChargeRequest {
        order_id: order_id.into(),
        amount: Some(Money { currency_code: "EUR".into(), units: 5, nanos: 0 }),
        card_token: "tok_slow".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cancellation_reaches_the_backend() {
    let gw = TestGateway::start().await;
    let id = place_order(&gw).await;
    let watches = gw.backends.shop.watches();
    let mut orders = OrderServiceClient::new(gw.channel().await);
    let interval = Some(prost_types::Duration { seconds: 10, nanos: 0 });
    let mut events = orders.watch_order(WatchOrderRequest { id, interval }).await.expect("WatchOrder").into_inner();
    events.message().await.expect("first event").expect("an event");
    assert_eq!(*watches.borrow(), 1, "the backend is streaming");
    drop(events); // RST_STREAM from the client
    wait_for(watches, "the backend's stream is cancelled, not left running", |open| *open == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_drop_cancels_the_backend_call() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let gw = TestGateway::start().await;
    let id = place_order(&gw).await;
    let watches = gw.backends.shop.watches();
    // A bare HTTP/2 connection, so that the test decides what goes away: the connection alone,
    // with no RST_STREAM for the call before it (dropping a tonic stream would send one).
    let tcp = tokio::net::TcpStream::connect(gw.address).await.expect("connect");
    let socket = socket2::SockRef::from(&tcp).try_clone().expect("the same socket, for closing it");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2");
    tokio::spawn(connection);
    let interval = Some(prost_types::Duration { seconds: 10, nanos: 0 });
    let request = support::grpc_request(gw.address, WATCH_ORDER, &WatchOrderRequest { id, interval });
    let mut events = sender.send_request(request).await.expect("WatchOrder").into_body();
    assert!(support::next_chunk(&mut events).await.is_some(), "first event");
    assert_eq!(*watches.borrow(), 1, "the backend is streaming");
    // The connection closes under the open stream, as when the client's process exits.
    socket.shutdown(std::net::Shutdown::Both).expect("shutdown");
    wait_for(watches, "the backend's stream ends with the client's connection", |open| *open == 0).await;
    drop(events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_end_calls_on_time() {
    let gw = TestGateway::start().await;
    let id = place_order(&gw).await;

    // Unary: the processor takes 3 s, the client allows 300 ms.
    let charges = gw.backends.shop.charges();
    let reply = support::raw_unary(
        gw.address,
        "/shop.payments.v1.PaymentService/Charge",
        &slow_charge(&id),
        &[("grpc-timeout", "300m")],
    )
    .await;
    assert_eq!(reply.status(), Some(Code::DeadlineExceeded as i32), "{:?} {:?}", reply.headers, reply.trailers);
    // Answered at the deadline, not when the backend finished: the charge had not finished when
    // the client was answered, and the backend then gave it up.
    let when_answered = *charges.borrow();
    assert_eq!(when_answered.finished, 0, "the slow charge was still under way: {when_answered:?}");
    wait_for(charges, "the backend sees the charge cancelled", |c| c.cancelled == 1 && c.in_progress == 0).await;

    // Server streaming: the first event comes, then the deadline ends the stream before the
    // backend's next event (5 s later), and the backend's stream is cancelled.
    let watches = gw.backends.shop.watches();
    let mut orders = OrderServiceClient::new(gw.channel().await);
    let interval = Some(prost_types::Duration { seconds: 5, nanos: 0 });
    let mut request = Request::new(WatchOrderRequest { id: id.clone(), interval });
    request.metadata_mut().insert("grpc-timeout", "400m".parse().expect("ascii"));
    let mut events = orders.watch_order(request).await.expect("stream starts").into_inner();
    events.message().await.expect("first event").expect("an event");
    let err = events.message().await.expect_err("deadline mid-stream");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(gw.backends.shop.order_status(&id), Some(OrderStatus::Placed as i32), "no second event was due yet");
    wait_for(watches, "the backend's stream is cancelled at the deadline", |open| *open == 0).await;

    // A malformed grpc-timeout is the client's error.
    let mut request = Request::new(GetUserRequest { id: "u-1".into() });
    request.metadata_mut().insert("grpc-timeout", "soon".parse().expect("ascii"));
    let err = UserServiceClient::new(gw.channel().await).get_user(request).await.expect_err("bad timeout");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("grpc-timeout"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_timeout_applies_when_the_client_sets_none() {
    let gw = TestGateway::start().await;
    // The demo rules have no timeout; a second gateway routes payments with one.
    let payments_backend = gw.backends.addresses[3];
    let timed = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!("  - match: shop.payments.v1.PaymentService\n    backends: [http://{payments_backend}]\n    timeout: 200ms\n"))
        .start()
        .await;
    let id = place_order(&gw).await;
    let charges = gw.backends.shop.charges();
    let err = PaymentServiceClient::new(timed.channel().await).charge(slow_charge(&id)).await.expect_err("timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let when_answered = *charges.borrow();
    assert_eq!(when_answered.finished, 0, "answered before the slow charge finished: {when_answered:?}");
    wait_for(charges, "the backend sees the charge cancelled", |c| c.cancelled == 1 && c.in_progress == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_is_unavailable_promptly_and_others_keep_serving() {
    let backends = dragoman::demo::Backends::start().await.expect("demo backends");
    let users = backends.addresses[0];
    let port = dead_port();
    // Timers of a minute: a call that waited for either would trip the hang guard below.
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.users.v1.UserService\n    backends: [http://{users}]\n  - match: shop.payments.v1.PaymentService\n    backends: [http://127.0.0.1:{port}]\n    connect_timeout: 60s\n    queue_timeout: 60s\n"
        ))
        .start()
        .await;
    let mut payments = PaymentServiceClient::new(gw.channel().await);
    let call = payments.charge(slow_charge("o-1"));
    let err = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("a refused connection fails the call at once, not after connect_timeout or queue_timeout")
        .expect_err("nothing listens");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("shop.payments.v1.PaymentService"), "names the service: {}", err.message());

    let user = UserServiceClient::new(gw.channel().await).get_user(GetUserRequest { id: "u-1".into() }).await;
    assert!(user.is_ok(), "the other services keep answering: {user:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_and_methods_are_unimplemented() {
    let gw = TestGateway::start().await;
    let mut grpc = tonic::client::Grpc::new(gw.channel().await);
    let mut call = async |path: &'static str| {
        grpc.ready().await.expect("ready");
        let codec = tonic_prost::ProstCodec::<GetUserRequest, GetUserRequest>::default();
        grpc.unary(Request::new(GetUserRequest::default()), http::uri::PathAndQuery::from_static(path), codec).await
    };
    let err = call("/shop.users.v1.UserService/Delete").await.expect_err("no such method");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("Delete") && err.message().contains("shop.users.v1.UserService"),
        "{}",
        err.message()
    );

    let err = call("/shop.spare.v1.PartsService/Get").await.expect_err("no such service");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("shop.spare.v1.PartsService"), "{}", err.message());

    let ok = UserServiceClient::new(gw.channel().await).get_user(GetUserRequest { id: "u-1".into() }).await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loaded_service_without_backend_is_unavailable() {
    let gw = TestGateway::builder().without_demo_rules().start().await;
    let err = UserServiceClient::new(gw.channel().await)
        .get_user(GetUserRequest { id: "u-1".into() })
        .await
        .expect_err("no backend configured");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("no backend is configured for shop.users.v1.UserService"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_http1_is_refused_with_a_status() {
    let gw = TestGateway::start().await;
    let reply = support::http(
        gw.address,
        "POST",
        "/shop.users.v1.UserService/GetUser",
        &[("content-type", "application/grpc"), ("te", "trailers")],
        &[0, 0, 0, 0, 0],
    )
    .await;
    assert_eq!(reply.header("grpc-status"), Some("12"), "{:?}", reply.headers);
    assert!(reply.header("grpc-message").is_some_and(|m| m.contains("needs%20HTTP/2")), "{:?}", reply.headers);
}
