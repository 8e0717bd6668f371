//! A quiet call on the multiplexed socket costs no CPU: the socket's idle timer, re-armed while
//! calls are open, sleeps instead of spinning. Alone in its test binary, so that the process's
//! CPU time is this gateway's.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::TestGateway;
use tokio_tungstenite::tungstenite::Message;

/// User plus system CPU time of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command's closing parenthesis: state is the first, utime the 12th.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[tokio::test]
async fn a_quiet_call_keeps_the_multiplexed_socket_open_without_spinning() {
    let gw = TestGateway::builder().websocket("  idle_timeout: 100ms\n").start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.address)).await.expect("opens");
    let frame = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| -> Message {
        tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame").expect("open").expect("ok")
    };
    let json_of = |message: Message| -> Value { serde_json::from_str(message.to_text().expect("text")).expect("json") };
    let call = json!({"id": 1, "call": "/shop.orders.v1.OrderService/LiveCart"});
    ws.send(Message::text(call.to_string())).await.expect("send");
    assert!(json_of(frame(&mut ws).await)["headers"].is_object());

    let before = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(1)).await; // ten idle timeouts
    let used = cpu_ticks() - before;
    assert!(used < 50, "the process used {used} of 100 clock ticks while a call sat quiet: the idle timer spins");

    // The call is still open: it answers. Once it ends, the idle socket is closed.
    let add = json!({"id": 1, "message": {"add": {"productId": "p-2", "quantity": 1}}});
    ws.send(Message::text(add.to_string())).await.expect("send");
    assert_eq!(json_of(frame(&mut ws).await)["result"]["revision"], 1);
    ws.send(Message::text(json!({"id": 1, "end": true}).to_string())).await.expect("send");
    assert_eq!(json_of(frame(&mut ws).await)["status"]["code"], 0);
    match frame(&mut ws).await {
        Message::Close(Some(close)) => assert_eq!(u16::from(close.code), 1000),
        other => panic!("expected the idle close, got {other:?}"),
    }
}
