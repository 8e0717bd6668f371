//! The WebSocket frontend with a real client (tokio-tungstenite) against the demo backends: every
//! kind of method, in JSON text frames and protobuf binary frames; half-close, errors from the
//! backend and from the client's frames, cancellation, limits, the handshake's checks, and many
//! calls on the multiplexed socket.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use support::{TestGateway, dead_port, wait_for};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const GET_USER: &str = "/shop.users.v1.UserService/GetUser";
const WATCH_ORDER: &str = "/shop.orders.v1.OrderService/WatchOrder";
const ADD_LINE_ITEMS: &str = "/shop.orders.v1.OrderService/AddLineItems";
const LIVE_CART: &str = "/shop.orders.v1.OrderService/LiveCart";

/// Opens a socket at `path` with extra handshake headers; the handshake's answer comes back too.
async fn try_open(
    gw: &TestGateway,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, http::Response<Option<Vec<u8>>>), WsError> {
    let mut request = format!("ws://{}{path}", gw.address).into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    tokio_tungstenite::connect_async(request).await
}

async fn open(gw: &TestGateway, path: &str) -> Ws {
    try_open(gw, path, &[]).await.expect("the socket opens").0
}

/// The handshake's refusal: HTTP status and JSON body.
async fn refused(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    match try_open(gw, path, headers).await {
        Ok(_) => panic!("{path} opened"),
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json =
                serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
            (response.status().as_u16(), json)
        }
        Err(e) => panic!("{e}"),
    }
}

async fn send(ws: &mut Ws, json: Value) {
    ws.send(Message::text(json.to_string())).await.expect("send");
}

/// The empty text frame: the client's side of the call is done.
async fn half_close(ws: &mut Ws) {
    ws.send(Message::text("")).await.expect("half-close");
}

/// What the gateway sends next: a text frame as JSON, a binary frame, or the close.
#[derive(Debug)]
enum Got {
    Json(Value),
    Binary(bytes::Bytes),
    Close(Option<CloseFrame>),
}

async fn next(ws: &mut Ws) -> Got {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        match frame {
            Message::Text(text) => {
                return Got::Json(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")));
            }
            Message::Binary(bytes) => return Got::Binary(bytes),
            Message::Close(close) => return Got::Close(close),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

async fn json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Got::Json(value) => value,
        other => panic!("expected a JSON frame, got {other:?}"),
    }
}

/// Reads to the close: the JSON frames before it, and the close's code and reason.
async fn to_close(ws: &mut Ws) -> (Vec<Value>, u16, String) {
    let mut frames = Vec::new();
    loop {
        match next(ws).await {
            Got::Json(value) => frames.push(value),
            Got::Binary(bytes) => panic!("unexpected binary frame {bytes:?}"),
            Got::Close(close) => {
                let close = close.expect("a close code");
                return (frames, u16::from(close.code), close.reason.to_string());
            }
        }
    }
}

fn status_of(frames: &[Value]) -> &Value {
    let last = frames.last().expect("frames");
    assert!(last.get("status").is_some(), "the last frame is the status: {frames:?}");
    &last["status"]
}

#[tokio::test]
async fn a_unary_call_at_the_methods_path_and_at_its_http_path() {
    let gw = TestGateway::start().await;
    let mut ws = open(&gw, GET_USER).await;
    send(&mut ws, json!({"id": "u-1"})).await;
    let (frames, close, _) = to_close(&mut ws).await;
    assert!(frames[0]["headers"].is_object(), "response headers come first: {frames:?}");
    assert_eq!(frames[1]["result"]["displayName"], "Ada Lovelace", "{frames:?}");
    assert_eq!(status_of(&frames)["code"], 0);
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(close, 1000, "a call that succeeded closes normally");

    // `get: "/v1/users/{id}"`: the path's variables are set in the message.
    let mut ws = open(&gw, "/v1/users/u-1").await;
    send(&mut ws, json!({})).await;
    let (frames, close, _) = to_close(&mut ws).await;
    assert_eq!(frames[1]["result"]["id"], "u-1", "{frames:?}");
    assert_eq!(close, 1000);
}

#[tokio::test]
async fn a_server_stream_arrives_message_by_message() {
    let gw = TestGateway::start().await;
    let mut ws = open(&gw, "/v1/orders/o-1:watch").await;
    send(&mut ws, json!({"interval": "0.01s"})).await;
    let (frames, close, _) = to_close(&mut ws).await;
    let statuses: Vec<&Value> = frames.iter().filter_map(|f| f.get("result")).map(|r| &r["status"]).collect();
    let expected = ["ORDER_STATUS_PLACED", "ORDER_STATUS_PAID", "ORDER_STATUS_SHIPPED", "ORDER_STATUS_DELIVERED"];
    assert_eq!(statuses, expected.iter().collect::<Vec<_>>(), "{frames:?}");
    assert_eq!(status_of(&frames)["code"], 0);
    assert_eq!(close, 1000);
}

#[tokio::test]
async fn a_client_stream_ends_with_the_half_close() {
    let gw = TestGateway::start().await;
    let mut ws = open(&gw, ADD_LINE_ITEMS).await;
    send(&mut ws, json!({"orderId": "o-1", "item": {"productId": "p-2", "quantity": 1}})).await;
    send(&mut ws, json!({"orderId": "o-1", "item": {"productId": "p-3", "quantity": 2}})).await;
    half_close(&mut ws).await;
    let (frames, close, _) = to_close(&mut ws).await;
    let items: Vec<&Value> =
        frames[1]["result"]["items"].as_array().expect("items").iter().map(|i| &i["productId"]).collect();
    assert_eq!(items, [&json!("p-1"), &json!("p-2"), &json!("p-3")], "{frames:?}");
    assert_eq!(status_of(&frames)["code"], 0);
    assert_eq!(close, 1000);
}

#[tokio::test]
async fn a_bidirectional_stream_answers_each_message_as_it_comes() {
    let gw = TestGateway::start().await;
    let mut ws = open(&gw, LIVE_CART).await;
    assert!(json(&mut ws).await["headers"].is_object(), "headers arrive before any message");
    send(&mut ws, json!({"add": {"productId": "p-2", "quantity": 1}})).await;
    let cart = json(&mut ws).await;
    assert_eq!(cart["result"]["revision"], 1, "{cart}");
    // The second message goes out only after the first answer came back: a real conversation.
    send(&mut ws, json!({"add": {"productId": "p-3", "quantity": 2}})).await;
    let cart = json(&mut ws).await;
    assert_eq!(cart["result"]["revision"], 2, "{cart}");
    assert_eq!(cart["result"]["items"].as_array().map(Vec::len), Some(2), "{cart}");
    half_close(&mut ws).await;
    let (frames, close, _) = to_close(&mut ws).await;
    assert_eq!(frames.len(), 1, "only the status after the half-close: {frames:?}");
    assert_eq!(status_of(&frames)["code"], 0);
    assert_eq!(close, 1000);
}

#[tokio::test]
async fn binary_frames_carry_protobuf_both_ways() {
    use dragoman::demo::pb::shop::orders::v1::{Cart, WatchOrderRequest};
    use dragoman::demo::pb::shop::orders::v1::{CartAction, LineItem, cart_action};
    use dragoman::demo::pb::shop::users::v1::{GetUserRequest, User};
    let gw = TestGateway::start().await;
    let proto = [("sec-websocket-protocol", "dragoman.proto")];

    let (mut ws, answer) = try_open(&gw, GET_USER, &proto).await.expect("opens");
    assert_eq!(answer.headers()["sec-websocket-protocol"], "dragoman.proto", "the subprotocol is echoed");
    ws.send(Message::binary(GetUserRequest { id: "u-1".into() }.encode_to_vec())).await.expect("send");
    assert!(matches!(next(&mut ws).await, Got::Json(v) if v["headers"].is_object()));
    let Got::Binary(reply) = next(&mut ws).await else { panic!("a binary reply") };
    assert_eq!(User::decode(reply).expect("a User").display_name, "Ada Lovelace");
    let (frames, close, _) = to_close(&mut ws).await;
    assert_eq!((status_of(&frames)["code"].clone(), close), (json!(0), 1000));

    // A server stream, with the message's id bound from the annotated path.
    let (mut ws, _) = try_open(&gw, "/v1/orders/o-1:watch", &proto).await.expect("opens");
    let request = WatchOrderRequest {
        id: String::new(),
        interval: Some(prost_types::Duration { seconds: 0, nanos: 10_000_000 }),
    };
    ws.send(Message::binary(request.encode_to_vec())).await.expect("send");
    let mut events = 0;
    loop {
        match next(&mut ws).await {
            Got::Binary(bytes) => {
                let event = dragoman::demo::pb::shop::orders::v1::OrderEvent::decode(bytes).expect("an OrderEvent");
                assert_eq!(event.order_id, "o-1");
                events += 1;
            }
            Got::Json(v) if v["status"].is_object() => {
                assert_eq!(v["status"]["code"], 0, "{v}");
                break;
            }
            Got::Json(_) => {}
            Got::Close(close) => panic!("closed before the status: {close:?}"),
        }
    }
    assert_eq!(events, 4);

    // Bidi: binary in, binary out.
    let (mut ws, _) = try_open(&gw, LIVE_CART, &proto).await.expect("opens");
    let add = CartAction {
        action: Some(cart_action::Action::Add(LineItem { product_id: "p-4".into(), quantity: 3, unit_price: None })),
    };
    ws.send(Message::binary(add.encode_to_vec())).await.expect("send");
    let _headers = next(&mut ws).await;
    let Got::Binary(reply) = next(&mut ws).await else { panic!("a binary reply") };
    let cart = Cart::decode(reply).expect("a Cart");
    assert_eq!((cart.revision, cart.items[0].quantity), (1, 3));

    // A binary frame that is not the method's message, where the path binds a variable.
    let (mut ws, _) = try_open(&gw, "/v1/orders/o-1:watch", &proto).await.expect("opens");
    ws.send(Message::binary(vec![0xff, 0xff, 0xff])).await.expect("send");
    let (frames, close, _) = to_close(&mut ws).await;
    assert_eq!(status_of(&frames)["code"], 3, "{frames:?}");
    assert_eq!(close, 4003);
}

#[tokio::test]
async fn a_backend_error_mid_stream_ends_the_call_with_its_status() {
    let gw = TestGateway::start().await;
    let mut ws = open(&gw, LIVE_CART).await;
    send(&mut ws, json!({"add": {"productId": "p-2", "quantity": 1}})).await;
    send(&mut ws, json!({})).await; // no action: the demo answers INVALID_ARGUMENT
    let (frames, close, reason) = to_close(&mut ws).await;
    assert_eq!(frames.iter().filter(|f| f.get("result").is_some()).count(), 1, "{frames:?}");
    let status = status_of(&frames);
    assert_eq!(status["code"], 3);
    assert_eq!(status["message"], "a cart action needs one of add, remove_product_id, clear");
    assert_eq!(close, 4003, "4000 + the gRPC code");
    assert_eq!(reason, "a cart action needs one of add, remove_product_id, clear");

    // An error with trailers and no message: the status carries them.
    let echo = support::start_echo().await;
    let gw = TestGateway::builder().backend("shop.users.v1.UserService", &echo.to_string()).start().await;
    let mut ws = open(&gw, GET_USER).await;
    send(&mut ws, json!({"id": "fail"})).await;
    let (frames, close, _) = to_close(&mut ws).await;
    assert_eq!(frames.len(), 1, "no headers for a call refused at once: {frames:?}");
    assert_eq!(frames[0]["status"]["code"], 10);
    assert_eq!(frames[0]["status"]["message"], "echo refuses");
    assert_eq!(frames[0]["trailers"]["x-error-detail"], "in the trailers", "{frames:?}");
    assert_eq!(close, 4010);
}

#[tokio::test]
async fn closing_the_socket_cancels_the_backends_call() {
    let gw = TestGateway::start().await;
    let watches = gw.backends.shop.watches();
    let mut ws = open(&gw, WATCH_ORDER).await;
    send(&mut ws, json!({"id": "o-1", "interval": "60s"})).await;
    let _headers = json(&mut ws).await;
    let first = json(&mut ws).await;
    assert_eq!(first["result"]["status"], "ORDER_STATUS_PLACED");
    assert_eq!(*watches.borrow(), 1, "the backend is streaming");
    ws.close(None).await.expect("close");
    wait_for(watches.clone(), "the backend's stream is cancelled", |open| *open == 0).await;

    // A connection dropped without a close frame: the same.
    let mut ws = open(&gw, WATCH_ORDER).await;
    send(&mut ws, json!({"id": "o-1", "interval": "60s"})).await;
    let _headers = json(&mut ws).await;
    let _first = json(&mut ws).await;
    assert_eq!(*watches.borrow(), 1);
    drop(ws);
    wait_for(watches, "the backend's stream is cancelled", |open| *open == 0).await;
}

#[tokio::test]
async fn a_bad_frame_ends_its_call_with_invalid_argument_and_nothing_else() {
    let gw = TestGateway::start().await;
    // A conversation on another socket, which must not notice.
    let mut bystander = open(&gw, LIVE_CART).await;
    send(&mut bystander, json!({"add": {"productId": "p-2", "quantity": 1}})).await;
    let _headers = json(&mut bystander).await;
    assert_eq!(json(&mut bystander).await["result"]["revision"], 1);

    let cases = [
        (LIVE_CART, "{\"add\": ", "JSON"),
        (WATCH_ORDER, "{\"id\": \"o-1\", \"interval\": 5}", "interval"),
        (GET_USER, "{\"id\": \"u-1\", \"nickname\": \"x\"}", "nickname"),
    ];
    for (path, frame, names) in cases {
        let mut ws = open(&gw, path).await;
        ws.send(Message::text(frame)).await.expect("send");
        let (frames, close, _) = to_close(&mut ws).await;
        let status = status_of(&frames);
        assert_eq!(status["code"], 3, "{frame}: {frames:?}");
        let message = status["message"].as_str().expect("message");
        assert!(message.contains(names), "{frame}: the message says what was wrong: {message}");
        assert_eq!(close, 4003);
    }

    // A second message to a one-message method, while its stream is still going.
    let mut ws = open(&gw, WATCH_ORDER).await;
    send(&mut ws, json!({"id": "o-1", "interval": "60s"})).await;
    send(&mut ws, json!({"id": "o-1", "interval": "60s"})).await;
    let (frames, close, _) = to_close(&mut ws).await;
    assert_eq!(status_of(&frames)["code"], 3, "{frames:?}");
    assert_eq!(status_of(&frames)["message"], "this method takes one request message; the socket sent another");
    assert_eq!(close, 4003);

    send(&mut bystander, json!({"add": {"productId": "p-3", "quantity": 1}})).await;
    assert_eq!(json(&mut bystander).await["result"]["revision"], 2, "the other socket is still served");
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_the_gateway_keeps_serving() {
    let gw = TestGateway::builder().websocket("  max_message_size: 1024\n").start().await;
    let mut ws = open(&gw, LIVE_CART).await;
    let big = json!({"add": {"productId": "p".repeat(2000), "quantity": 1}});
    let _ = ws.send(Message::text(big.to_string())).await;
    let (frames, close, _) = to_close(&mut ws).await;
    let status = status_of(&frames);
    assert_eq!(status["code"], 8, "{frames:?}");
    assert!(status["message"].as_str().is_some_and(|m| m.contains("max_message_size")), "{status}");
    assert_eq!(close, 4008);

    let mut ws = open(&gw, GET_USER).await;
    send(&mut ws, json!({"id": "u-1"})).await;
    let (frames, close, _) = to_close(&mut ws).await;
    assert_eq!((status_of(&frames)["code"].clone(), close), (json!(0), 1000));
}

#[tokio::test]
async fn the_handshake_checks_origin_path_and_version() {
    let gw = TestGateway::builder().websocket("  allow_origins: [\"https://app.example\"]\n").start().await;
    let (status, body) = refused(&gw, LIVE_CART, &[("origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], 7);
    assert!(body["message"].as_str().is_some_and(|m| m.contains("evil.example")), "{body}");
    assert!(try_open(&gw, LIVE_CART, &[("origin", "https://app.example")]).await.is_ok());
    assert!(try_open(&gw, LIVE_CART, &[]).await.is_ok(), "no Origin: not a page");

    let (status, body) = refused(&gw, "/shop.users.v1.UserService/Nope", &[]).await;
    assert_eq!((status, body["code"].clone()), (404, json!(5)));

    // Same origin only, by default.
    let gw = TestGateway::start().await;
    let own = format!("http://{}", gw.address);
    assert!(try_open(&gw, LIVE_CART, &[("origin", own.as_str())]).await.is_ok());
    let (status, _) = refused(&gw, LIVE_CART, &[("origin", "http://localhost:1")]).await;
    assert_eq!(status, 403);

    // A version the gateway does not speak: 426 naming the one it does (RFC 6455 4.4).
    let mut tcp = TcpStream::connect(gw.address).await.expect("connect");
    let head = format!(
        "GET {LIVE_CART} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        gw.address
    );
    tokio::io::AsyncWriteExt::write_all(&mut tcp, head.as_bytes()).await.expect("write");
    let mut answer = vec![0; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).to_lowercase();
    assert!(answer.starts_with("http/1.1 426"), "{answer}");
    assert!(answer.contains("sec-websocket-version: 13"), "{answer}");
}

#[tokio::test]
async fn metadata_comes_from_headers_query_and_the_bearer_subprotocol() {
    let echo = support::start_echo().await;
    let gw = TestGateway::builder().backend("shop.users.v1.UserService", &echo.to_string()).start().await;
    let path = format!("{GET_USER}?metadata.x-request-id=r%2D7");
    let offered = [("sec-websocket-protocol", "dragoman.json, bearer, abc.def")];
    let (mut ws, answer) = try_open(&gw, &path, &offered).await.expect("opens");
    assert_eq!(answer.headers()["sec-websocket-protocol"], "dragoman.json", "one offered subprotocol is echoed");
    send(&mut ws, json!({"id": "u-1"})).await;
    let (frames, _, _) = to_close(&mut ws).await;
    assert_eq!(frames[0]["headers"]["x-served-by"], "echo", "response headers: {frames:?}");
    let seen = frames[1]["result"]["displayName"].as_str().expect("echo's report").to_owned();
    assert!(seen.contains("authorization=Bearer abc.def"), "{seen}");
    assert!(seen.contains("x-request-id=r-7"), "{seen}");
    assert!(seen.contains("x-forwarded-for=127.0.0.1"), "{seen}");

    // What a browser sends for `new WebSocket(url, ["bearer", token])`: `bearer` is echoed.
    let (_ws, answer) = try_open(&gw, GET_USER, &[("sec-websocket-protocol", "bearer, t0k3n")]).await.expect("opens");
    assert_eq!(answer.headers()["sec-websocket-protocol"], "bearer");
}

#[tokio::test]
async fn a_dead_backend_ends_the_call_with_unavailable() {
    let dead = format!("127.0.0.1:{}", dead_port());
    let gw = TestGateway::builder().backend("shop.users.v1.UserService", &dead).start().await;
    let mut ws = open(&gw, GET_USER).await;
    send(&mut ws, json!({"id": "u-1"})).await;
    let (frames, close, _) = to_close(&mut ws).await;
    assert_eq!(status_of(&frames)["code"], 14, "{frames:?}");
    assert_eq!(close, 4014);
}

#[tokio::test]
async fn a_quiet_socket_is_closed_after_the_idle_timeout() {
    let gw = TestGateway::builder().websocket("  idle_timeout: 300ms\n").start().await;
    let mut ws = open(&gw, LIVE_CART).await;
    let (frames, close, _) = to_close(&mut ws).await;
    let status = status_of(&frames);
    assert_eq!(status["code"], 4, "{frames:?}");
    assert!(status["message"].as_str().is_some_and(|m| m.contains("idle_timeout")), "{status}");
    assert_eq!(close, 4004);
}

/// The frames of the multiplexed socket until `id`'s status, by call id.
async fn until_status(ws: &mut Ws, id: &Value, seen: &mut Vec<Value>) -> Value {
    loop {
        let frame = json(ws).await;
        seen.push(frame.clone());
        if frame["id"] == *id && frame.get("status").is_some() {
            return frame["status"].clone();
        }
    }
}

#[tokio::test]
async fn many_calls_share_the_multiplexed_socket() {
    let gw = TestGateway::start().await;
    let watches = gw.backends.shop.watches();
    let mut ws = open(&gw, "/ws").await;
    let mut seen = Vec::new();

    // A bidi call stays open while a unary one comes and goes.
    send(&mut ws, json!({"id": 1, "call": LIVE_CART, "message": {"add": {"productId": "p-2", "quantity": 1}}})).await;
    send(&mut ws, json!({"id": "u", "call": GET_USER, "message": {"id": "u-1"}})).await;
    let status = until_status(&mut ws, &json!("u"), &mut seen).await;
    assert_eq!(status["code"], 0);
    let user = seen.iter().find(|f| f["id"] == "u" && f.get("result").is_some()).expect("the user");
    assert_eq!(user["result"]["displayName"], "Ada Lovelace");
    send(&mut ws, json!({"id": 1, "message": {"add": {"productId": "p-3", "quantity": 1}}})).await;
    loop {
        let frame = json(&mut ws).await;
        if frame["id"] == 1 && frame["result"]["revision"] == 2 {
            break;
        }
    }
    send(&mut ws, json!({"id": 1, "end": true})).await;
    let mut seen = Vec::new();
    assert_eq!(until_status(&mut ws, &json!(1), &mut seen).await["code"], 0);

    // Cancelling one call ends its backend's stream; the socket goes on.
    send(&mut ws, json!({"id": "w", "call": WATCH_ORDER, "message": {"id": "o-1", "interval": "60s"}})).await;
    wait_for(watches.clone(), "the backend streams", |open| *open == 1).await;
    send(&mut ws, json!({"id": "w", "cancel": true})).await;
    let mut seen = Vec::new();
    assert_eq!(until_status(&mut ws, &json!("w"), &mut seen).await["code"], 1);
    wait_for(watches, "the backend's stream is cancelled", |open| *open == 0).await;

    // Bad envelopes get a status without an id; bad calls a status with theirs.
    send(&mut ws, json!({"id": 9, "cal": GET_USER})).await;
    let frame = json(&mut ws).await;
    assert!(frame.get("id").is_none() && frame["status"]["code"] == 3, "{frame}");
    assert!(frame["status"]["message"].as_str().is_some_and(|m| m.contains("cal")), "{frame}");
    ws.send(Message::text("not json")).await.expect("send");
    assert_eq!(json(&mut ws).await["status"]["code"], 3);
    send(&mut ws, json!({"id": 2, "call": "/shop.users.v1.UserService/Nope"})).await;
    let frame = json(&mut ws).await;
    assert_eq!((frame["id"].clone(), frame["status"]["code"].clone()), (json!(2), json!(12)), "{frame}");
    send(&mut ws, json!({"id": 3, "call": GET_USER, "message": {"id": 7}})).await;
    let frame = json(&mut ws).await;
    assert_eq!((frame["id"].clone(), frame["status"]["code"].clone()), (json!(3), json!(3)), "{frame}");

    // An id in use ends the call that had it; messages for it are then dropped.
    send(&mut ws, json!({"id": 5, "call": LIVE_CART})).await;
    assert!(json(&mut ws).await["headers"].is_object());
    send(&mut ws, json!({"id": 5, "call": LIVE_CART})).await;
    let frame = json(&mut ws).await;
    assert_eq!((frame["id"].clone(), frame["status"]["code"].clone()), (json!(5), json!(3)), "{frame}");
    send(&mut ws, json!({"id": 5, "message": {"clear": true}})).await;

    // Still serving, and nothing more about call 5.
    send(&mut ws, json!({"id": 4, "call": "/v1/users/u-1", "message": {}})).await;
    let mut seen = Vec::new();
    assert_eq!(until_status(&mut ws, &json!(4), &mut seen).await["code"], 0);
    assert!(seen.iter().any(|f| f["result"]["id"] == "u-1"), "{seen:?}");
    assert!(seen.iter().all(|f| f["id"] == 4), "{seen:?}");
}

#[tokio::test]
async fn the_multiplexed_socket_limits_its_calls() {
    let gw = TestGateway::builder().websocket("  max_calls_per_socket: 2\n").start().await;
    let mut ws = open(&gw, "/ws").await;
    for id in 1..=3 {
        send(&mut ws, json!({"id": id, "call": LIVE_CART})).await;
    }
    let frame = loop {
        let frame = json(&mut ws).await;
        if frame.get("status").is_some() {
            break frame;
        }
    };
    assert_eq!(frame["id"], 3, "{frame}");
    assert_eq!(frame["status"]["code"], 8, "{frame}");
    assert!(frame["status"]["message"].as_str().is_some_and(|m| m.contains("max_calls_per_socket")), "{frame}");
}

/// An OrderService whose WatchOrder never ends (1 KiB events as fast as the stream is read, or
/// small ones at the request's interval), counted as the backend hands them to its transport; its
/// LiveCart never answers nor ends.
struct Endless(std::sync::Arc<std::sync::atomic::AtomicU64>);

#[tonic::async_trait]
impl dragoman::demo::pb::shop::orders::v1::order_service_server::OrderService for Endless {
    async fn create_order(
        &self,
        _: tonic::Request<dragoman::demo::pb::shop::orders::v1::CreateOrderRequest>,
    ) -> Result<tonic::Response<dragoman::demo::pb::shop::orders::v1::Order>, tonic::Status> {
        Err(tonic::Status::unimplemented("endless only watches"))
    }
    async fn get_order(
        &self,
        _: tonic::Request<dragoman::demo::pb::shop::orders::v1::GetOrderRequest>,
    ) -> Result<tonic::Response<dragoman::demo::pb::shop::orders::v1::Order>, tonic::Status> {
        Err(tonic::Status::unimplemented("endless only watches"))
    }
    type WatchOrderStream = std::pin::Pin<
        Box<
            dyn futures_util::Stream<Item = Result<dragoman::demo::pb::shop::orders::v1::OrderEvent, tonic::Status>>
                + Send,
        >,
    >;
    /// As fast as it is read (1 KiB events, 256 KiB for the id "big"), or one small event per
    /// `interval` when the request sets one.
    async fn watch_order(
        &self,
        request: tonic::Request<dragoman::demo::pb::shop::orders::v1::WatchOrderRequest>,
    ) -> Result<tonic::Response<Self::WatchOrderStream>, tonic::Status> {
        let produced = self.0.clone();
        let interval = request.get_ref().interval.and_then(|d| Duration::try_from(d).ok());
        let size = match (interval, request.get_ref().id.as_str()) {
            (Some(_), _) => 8,
            (None, "big") => 256 << 10,
            (None, _) => 1024,
        };
        let events = futures_util::stream::unfold(produced, move |produced| async move {
            if let Some(interval) = interval {
                tokio::time::sleep(interval).await;
            }
            produced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let event =
                dragoman::demo::pb::shop::orders::v1::OrderEvent { order_id: "o".repeat(size), ..Default::default() };
            Some((Ok(event), produced))
        });
        Ok(tonic::Response::new(Box::pin(events)))
    }
    async fn add_line_items(
        &self,
        _: tonic::Request<tonic::Streaming<dragoman::demo::pb::shop::orders::v1::AddLineItemRequest>>,
    ) -> Result<tonic::Response<dragoman::demo::pb::shop::orders::v1::Order>, tonic::Status> {
        Err(tonic::Status::unimplemented("endless only watches"))
    }
    type LiveCartStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<dragoman::demo::pb::shop::orders::v1::Cart, tonic::Status>> + Send>,
    >;
    /// Answers nothing and never ends, whatever the client sends or half-closes.
    async fn live_cart(
        &self,
        _: tonic::Request<tonic::Streaming<dragoman::demo::pb::shop::orders::v1::CartAction>>,
    ) -> Result<tonic::Response<Self::LiveCartStream>, tonic::Status> {
        Ok(tonic::Response::new(Box::pin(futures_util::stream::pending())))
    }
}

/// A gateway whose orders service is [`Endless`], with extra `server:` and `websocket:` lines.
async fn endless_gateway(server: &str, websocket: &str) -> (TestGateway, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let (endless, produced) = start_endless().await;
    let gw = TestGateway::builder()
        .backend("shop.orders.v1.OrderService", &endless.to_string())
        .server(server)
        .websocket(websocket)
        .start()
        .await;
    (gw, produced)
}

async fn start_endless() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use dragoman::demo::pb::shop::orders::v1::order_service_server::OrderServiceServer;
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OrderServiceServer::new(Endless(produced.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (address, produced)
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_the_backend_back() {
    use std::sync::atomic::Ordering::Relaxed;
    let (gw, produced) = endless_gateway("", "").await;
    let mut ws = open(&gw, WATCH_ORDER).await;
    send(&mut ws, json!({"id": "o-1"})).await;
    let _headers = json(&mut ws).await;
    assert!(json(&mut ws).await["result"]["orderId"].is_string());
    // The client reads no more: the backend must stall once the buffers on the way are full
    // (HTTP/2 windows, the socket's queue of four frames, the kernel's TCP buffers).
    let last = wait_for_stall(&produced).await;
    assert!(last < 100_000, "{last} events of 1 KiB went somewhere: more than the buffers on the way hold");
    // Reading again lets it go on.
    for _ in 0..(last + 100) {
        let _ = json(&mut ws).await;
    }
    assert!(produced.load(Relaxed) > last, "the stream went on once the client read again");
}

#[tokio::test]
async fn a_message_after_the_half_close_ends_the_call() {
    let (gw, _) = endless_gateway("", "").await;
    let mut ws = open(&gw, LIVE_CART).await;
    send(&mut ws, json!({"clear": true})).await;
    half_close(&mut ws).await;
    send(&mut ws, json!({"clear": true})).await;
    let (frames, close, _) = to_close(&mut ws).await;
    assert_eq!(status_of(&frames)["code"], 3, "{frames:?}");
    assert_eq!(status_of(&frames)["message"], "a message came after the half-close (the empty text frame)");
    assert_eq!(close, 4003);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_frees_its_connection() {
    let (gw, produced) = endless_gateway("  max_connections: 1\n", "  ping_interval: 200ms\n").await;
    let mut ws = open(&gw, WATCH_ORDER).await;
    send(&mut ws, json!({"id": "o-1"})).await;
    let _headers = json(&mut ws).await;
    // It reads no more (and so answers no ping): its socket holds the one connection allowed.
    wait_for_stall(&produced).await;
    tokio::time::timeout(Duration::from_secs(10), served(gw.address))
        .await
        .expect("the stuck socket is dropped and its connection slot serves another client");
    drop(ws);
}

/// Waits until the backend has stopped producing (the buffers on the way are full).
async fn wait_for_stall(produced: &std::sync::atomic::AtomicU64) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    let mut last = produced.load(Relaxed);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = produced.load(Relaxed);
        if now == last && now > 0 {
            return now;
        }
        last = now;
    }
    panic!("the backend kept producing while nobody read: {last} events");
}

#[tokio::test]
async fn a_client_that_reads_slowly_but_steadily_is_not_dropped() {
    let (gw, _) = endless_gateway("", "  ping_interval: 500ms\n").await;
    let mut ws = open(&gw, WATCH_ORDER).await;
    send(&mut ws, json!({"id": "big"})).await;
    // 256 KiB frames, one read every 20 ms: slower than the gateway can write, so the buffers on
    // the way stay full and every write waits on the client, for three times the two ping
    // intervals a silent or stuck client is given. It is reading: it stays. (A ping waits
    // behind the buffered frames, ~300 ms here; its answer may take two intervals.)
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut read = 0;
    while tokio::time::Instant::now() < until {
        match next(&mut ws).await {
            Got::Json(frame) if frame.get("result").is_some() || frame.get("headers").is_some() => read += 1,
            other => panic!("after {read} frames the socket ended: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(read > 50, "{read} frames read in 3 s");
}

#[tokio::test]
async fn a_client_that_vanishes_is_dropped_though_replies_still_trickle_out() {
    let (gw, produced) = endless_gateway("", "  ping_interval: 200ms\n").await;
    let mut ws = open(&gw, WATCH_ORDER).await;
    send(&mut ws, json!({"id": "o-1", "interval": "0.05s"})).await;
    let _headers = json(&mut ws).await;
    // From here on the client neither reads nor answers pings: small replies still go out (the
    // kernel takes them), but the pings that go with them get no answer. The backend's stream
    // stops once the socket is dropped.
    wait_for_stall(&produced).await;
    drop(ws);
}

#[tokio::test]
async fn a_multiplexed_socket_whose_client_stops_reading_is_dropped_though_it_sends_pings() {
    let (gw, produced) = endless_gateway("  max_connections: 1\n", "  ping_interval: 200ms\n").await;
    let mut ws = open(&gw, "/ws").await;
    send(&mut ws, json!({"id": 1, "call": WATCH_ORDER, "message": {"id": "o-1"}})).await;
    wait_for_stall(&produced).await;
    // The client never reads again but keeps sending pings, so it never looks silent: the stalled
    // writer must end the socket.
    let pinging = tokio::spawn(async move {
        for _ in 0..200 {
            if ws.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::timeout(Duration::from_secs(10), served(gw.address))
        .await
        .expect("the stuck socket is dropped and its connection slot serves another client");
    pinging.abort();
}

/// Resolves once a plain REST call on a new connection is answered 200.
async fn served(address: std::net::SocketAddr) {
    loop {
        if let Ok(Ok(mut tcp)) = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(address)).await {
            let request = "GET /v1/users/u-1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
            let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes()).await;
            let mut answer = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut answer).await;
            if answer.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped_and_its_call_cancelled() {
    let gw = TestGateway::builder().websocket("  ping_interval: 500ms\n").start().await;
    let watches = gw.backends.shop.watches();
    let mut ws = open(&gw, WATCH_ORDER).await;
    send(&mut ws, json!({"id": "o-1", "interval": "60s"})).await;
    let _headers = json(&mut ws).await;
    let _first = json(&mut ws).await;
    // Pings get answered only while the client reads (tungstenite answers as it reads): from
    // here on it is a client that has gone without closing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*watches.borrow(), 1, "no ping has gone unanswered yet: still there");
    wait_for(watches, "the silent client is dropped and the backend's stream cancelled", |open| *open == 0).await;
    drop(ws);
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close() {
    let gw = TestGateway::start().await;
    for path in [LIVE_CART, "/ws"] {
        let mut ws = open(&gw, path).await;
        ws.close(None).await.expect("close");
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer within 5 s");
        assert!(matches!(reply, Some(Ok(Message::Close(_)))), "{path}: the close is answered, not cut: {reply:?}");
    }
}

#[tokio::test]
async fn stopping_the_gateway_ends_open_sockets_with_unavailable() {
    let mut gw = TestGateway::start().await;
    let mut single = open(&gw, LIVE_CART).await;
    let mut mux = open(&gw, "/ws").await;
    send(&mut mux, json!({"id": 1, "call": LIVE_CART})).await;
    assert!(json(&mut mux).await["headers"].is_object());
    gw.stop();
    let (frames, close, _) = to_close(&mut single).await;
    assert_eq!((status_of(&frames)["code"].clone(), close), (json!(14), 4014), "{frames:?}");
    let (frames, close, _) = to_close(&mut mux).await;
    assert_eq!(
        frames,
        [
            json!({"id": 1, "status": {"code": 14, "message": "the socket is closing: the gateway is shutting down", "details": []}, "trailers": {}})
        ]
    );
    assert_eq!(close, 1001, "going away");
}

#[tokio::test]
async fn metadata_from_the_url_or_an_envelope_cannot_pose_as_headers() {
    let gw = TestGateway::start().await;
    for query in [
        "metadata.x-forwarded-for=10.9.9.9",
        "metadata.forwarded=for%3D10.9.9.9",
        "metadata.x-forwarded-host=evil.example",
        "metadata.x-real-ip=10.9.9.9",
        "metadata.x-a=1&metadata.x-a=2",
    ] {
        let (status, body) = refused(&gw, &format!("{GET_USER}?{query}"), &[]).await;
        assert_eq!((status, body["code"].clone()), (400, json!(3)), "{query}: {body}");
    }
    let (status, body) =
        refused(&gw, &format!("{GET_USER}?metadata.authorization=x"), &[("authorization", "Bearer h")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("already set")), "{body}");
    let (status, _) = refused(&gw, "/ws", &[("sec-websocket-protocol", "dragoman.proto")]).await;
    assert_eq!(status, 400, "the multiplexed socket speaks JSON only");

    let mut ws = open(&gw, "/ws").await;
    send(
        &mut ws,
        json!({"id": 1, "call": GET_USER, "metadata": {"x-forwarded-for": "10.9.9.9"}, "message": {"id": "u-1"}}),
    )
    .await;
    let frame = json(&mut ws).await;
    assert_eq!((frame["id"].clone(), frame["status"]["code"].clone()), (json!(1), json!(3)), "{frame}");
    // A call's metadata may not replace the socket's token either.
    let (mut ws, _) = try_open(&gw, "/ws", &[("sec-websocket-protocol", "bearer, t0k3n")]).await.expect("opens");
    let call =
        json!({"id": 1, "call": GET_USER, "metadata": {"authorization": "Bearer other"}, "message": {"id": "u-1"}});
    send(&mut ws, call).await;
    let frame = json(&mut ws).await;
    assert_eq!((frame["id"].clone(), frame["status"]["code"].clone()), (json!(1), json!(3)), "{frame}");
    assert!(frame["status"]["message"].as_str().is_some_and(|m| m.contains("already set")), "{frame}");
}

#[tokio::test]
async fn each_multiplexed_call_counts_under_max_calls_in_flight() {
    let gw = TestGateway::builder().server("  max_calls_in_flight: 2\n").start().await;
    let mut ws = open(&gw, "/ws").await; // the socket itself: one
    send(&mut ws, json!({"id": 1, "call": LIVE_CART})).await; // two
    assert!(json(&mut ws).await["headers"].is_object());
    send(&mut ws, json!({"id": 2, "call": LIVE_CART})).await;
    let frame = json(&mut ws).await;
    assert_eq!((frame["id"].clone(), frame["status"]["code"].clone()), (json!(2), json!(14)), "{frame}");
    send(&mut ws, json!({"id": 1, "end": true})).await;
    let mut seen = Vec::new();
    assert_eq!(until_status(&mut ws, &json!(1), &mut seen).await["code"], 0);
    send(&mut ws, json!({"id": 3, "call": GET_USER, "message": {"id": "u-1"}})).await;
    assert_eq!(until_status(&mut ws, &json!(3), &mut seen).await["code"], 0, "a slot was freed: {seen:?}");
    // A cancelled call frees its slot too; a closed socket frees all of its.
    send(&mut ws, json!({"id": 4, "call": LIVE_CART})).await;
    assert!(json(&mut ws).await["headers"].is_object());
    send(&mut ws, json!({"id": 4, "cancel": true})).await;
    assert_eq!(until_status(&mut ws, &json!(4), &mut seen).await["code"], 1);
    send(&mut ws, json!({"id": 5, "call": LIVE_CART})).await;
    assert!(json(&mut ws).await["headers"].is_object(), "the cancelled call's slot serves the next");
    drop(ws);
    let admitted = async {
        loop {
            if let Ok((mut ws, _)) = try_open(&gw, "/ws", &[]).await {
                send(&mut ws, json!({"id": 1, "call": LIVE_CART})).await;
                if json(&mut ws).await.get("headers").is_some() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), admitted).await.expect("the closed socket's slots are freed");
}

#[tokio::test]
async fn a_multiplexed_socket_held_up_by_a_call_that_reads_nothing_closes_when_idle() {
    let (gw, _) = endless_gateway("  max_connections: 1\n", "  idle_timeout: 500ms\n").await;
    let mut ws = open(&gw, "/ws").await;
    // The backend's LiveCart reads nothing: once its windows are full the socket stops reading,
    // so it cannot hear the client; the client then says nothing more.
    send(&mut ws, json!({"id": 1, "call": LIVE_CART})).await;
    let big = json!({"id": 1, "message": {"add": {"productId": "p".repeat(60_000), "quantity": 1}}}).to_string();
    for _ in 0..100 {
        if tokio::time::timeout(Duration::from_millis(500), ws.send(Message::text(big.clone()))).await.is_err() {
            break; // the socket has stopped reading
        }
    }
    tokio::time::timeout(Duration::from_secs(10), served(gw.address))
        .await
        .expect("after an idle period the held-up socket closes and frees its connection");
    drop(ws);
}

#[tokio::test]
async fn an_open_socket_holds_its_place_under_max_connections() {
    let gw = TestGateway::builder().server("  max_connections: 1\n").start().await;
    let ws = open(&gw, LIVE_CART).await;
    // The upgrade's HTTP exchange is over, but the socket still holds the one connection allowed.
    let refused = tokio::time::timeout(Duration::from_millis(1500), served(gw.address)).await;
    assert!(refused.is_err(), "another client was served while the socket was open");
    drop(ws);
    tokio::time::timeout(Duration::from_secs(10), served(gw.address))
        .await
        .expect("once the socket closes, its place serves another client");
}

#[tokio::test]
async fn a_multiplexed_call_ends_at_its_timeout() {
    let gw = TestGateway::start().await;
    let watches = gw.backends.shop.watches();
    let mut ws = open(&gw, "/ws").await;
    let call = json!({"id": 1, "call": WATCH_ORDER, "timeout_ms": 300, "message": {"id": "o-1", "interval": "60s"}});
    send(&mut ws, call).await;
    let mut seen = Vec::new();
    let status = until_status(&mut ws, &json!(1), &mut seen).await;
    assert_eq!(status["code"], 4, "DEADLINE_EXCEEDED: {seen:?}");
    wait_for(watches, "the backend's stream ends with the deadline", |open| *open == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiplexed_sockets_later_calls_follow_a_config_reload() {
    let echo = support::start_echo().await;
    let gw = TestGateway::start().await;
    let mut ws = open(&gw, "/ws").await;
    let shown_name = |seen: &[Value]| {
        seen.iter().find_map(|f| f["result"]["displayName"].as_str().map(str::to_owned)).unwrap_or_default()
    };
    send(&mut ws, json!({"id": 1, "call": "/v1/users/u-1", "message": {}})).await;
    let mut seen = Vec::new();
    assert_eq!(until_status(&mut ws, &json!(1), &mut seen).await["code"], 0, "{seen:?}");
    assert!(!shown_name(&seen).contains("x-forwarded-for="), "the demo's UserService first: {seen:?}");

    // A new config: a rule in front of the others (every rule's position moves) and UserService
    // at the echo backend. The socket stays open.
    let mut yaml = format!(
        "listen: 127.0.0.1:0\ndescriptors: [{}]\nservices:\n  - match: other.v1.Nothing\n    backends: [http://127.0.0.1:1]\n  - match: shop.users.v1.UserService\n    backends: [http://{echo}]\n",
        gw.descriptors.display()
    );
    for (name, address) in dragoman::demo::SERVICES.iter().zip(gw.backends.addresses).skip(1) {
        yaml.push_str(&format!("  - match: {name}\n    backends: [http://{address}]\n"));
    }
    let file = gw.descriptors.with_file_name("reloaded.yaml");
    std::fs::write(&file, yaml).expect("write");
    let gateway = gw.gateway.clone();
    let reloaded = tokio::task::spawn_blocking(move || gateway.reload_config(&file, false)).await.expect("join");
    assert_eq!(reloaded, Ok(true));

    // The same socket's next call goes where the new config says.
    send(&mut ws, json!({"id": 2, "call": "/v1/users/u-1", "message": {}})).await;
    let mut seen = Vec::new();
    assert_eq!(until_status(&mut ws, &json!(2), &mut seen).await["code"], 0, "{seen:?}");
    assert!(shown_name(&seen).contains("x-forwarded-for="), "the echo backend now: {seen:?}");
}
