//! The load generator of `bench/websocket.sh`: LiveCart (the demo's bidirectional method) over
//! WebSockets and over native gRPC, so the two are compared in one run.
//!
//! ```text
//! websocket_bench hold ws|mux|grpc <address> <streams> <seconds>   open streams, each with one
//!     exchange done, print `held`, keep them open for <seconds>
//! websocket_bench pingpong ws|mux|grpc <address> <concurrency> <seconds>   round trips on one stream
//!     per worker: send an action, wait for its cart; prints messages/s and latency percentiles
//! ```
//! `ws` opens a socket at the method's path, `mux` a call on a socket of its own at `/ws`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dragoman::demo::pb::shop::orders::v1::order_service_client::OrderServiceClient;
use dragoman::demo::pb::shop::orders::v1::{CartAction, LineItem, cart_action};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const PATH: &str = "/shop.orders.v1.OrderService/LiveCart";

/// Alternately adds a product and clears the cart, so replies keep one size.
fn action(n: u64) -> CartAction {
    let action = if n % 2 == 0 {
        cart_action::Action::Add(LineItem { product_id: "p-1".into(), quantity: 1, unit_price: None })
    } else {
        cart_action::Action::Clear(true)
    };
    CartAction { action: Some(action) }
}

fn action_json(n: u64) -> &'static str {
    if n % 2 == 0 { r#"{"add":{"productId":"p-1","quantity":1}}"# } else { r#"{"clear":true}"# }
}

/// One bidirectional stream: a round trip at a time.
enum Stream {
    Mux(tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>),
    Ws(tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>),
    Grpc(mpsc::Sender<CartAction>, tonic::Streaming<dragoman::demo::pb::shop::orders::v1::Cart>),
}

impl Stream {
    async fn open(kind: &str, address: &str, channel: Option<tonic::transport::Channel>) -> anyhow::Result<Self> {
        if kind == "ws" {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{address}{PATH}")).await?;
            return Ok(Stream::Ws(ws));
        }
        if kind == "mux" {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{address}/ws")).await?;
            ws.send(Message::text(format!(r#"{{"id":1,"call":"{PATH}"}}"#))).await?;
            return Ok(Stream::Mux(ws));
        }
        let channel = match channel {
            Some(channel) => channel,
            None => tonic::transport::Endpoint::from_shared(format!("http://{address}"))?.connect().await?,
        };
        let (sender, receiver) = mpsc::channel(4);
        let replies =
            OrderServiceClient::new(channel).live_cart(tokio_stream::wrappers::ReceiverStream::new(receiver)).await?;
        Ok(Stream::Grpc(sender, replies.into_inner()))
    }

    /// Sends action `n` and waits for its cart.
    async fn round_trip(&mut self, n: u64) -> anyhow::Result<()> {
        match self {
            Stream::Ws(ws) => {
                ws.send(Message::text(action_json(n))).await?;
                loop {
                    match ws.next().await.ok_or_else(|| anyhow::anyhow!("socket closed"))?? {
                        Message::Text(text) if text.starts_with("{\"result\"") => return Ok(()),
                        Message::Text(text) if text.starts_with("{\"status\"") => anyhow::bail!("call ended: {text}"),
                        _ => {}
                    }
                }
            }
            Stream::Mux(ws) => {
                ws.send(Message::text(format!(r#"{{"id":1,"message":{}}}"#, action_json(n)))).await?;
                loop {
                    match ws.next().await.ok_or_else(|| anyhow::anyhow!("socket closed"))?? {
                        Message::Text(text) if text.starts_with("{\"id\":1,\"result\"") => return Ok(()),
                        Message::Text(text) if text.contains("\"status\"") => anyhow::bail!("call ended: {text}"),
                        _ => {}
                    }
                }
            }
            Stream::Grpc(sender, replies) => {
                sender.send(action(n)).await?;
                replies.message().await?.ok_or_else(|| anyhow::anyhow!("stream ended"))?;
                Ok(())
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, kind, address, count, seconds] = <[String; 5]>::try_from(args)
        .map_err(|_| anyhow::anyhow!("usage: websocket_bench hold|pingpong ws|grpc <address> <n> <seconds>"))?;
    let (count, seconds): (usize, u64) = (count.parse()?, seconds.parse()?);
    match mode.as_str() {
        "hold" => hold(&kind, &address, count, Duration::from_secs(seconds)).await,
        "pingpong" => pingpong(&kind, &address, count, Duration::from_secs(seconds)).await,
        _ => anyhow::bail!("unknown mode {mode}"),
    }
}

/// Opens `count` streams (gRPC: 100 per HTTP/2 connection), 200 at a time.
async fn hold(kind: &str, address: &str, count: usize, seconds: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut channels = Vec::new();
    if kind == "grpc" {
        for _ in 0..count.div_ceil(100) {
            channels.push(tonic::transport::Endpoint::from_shared(format!("http://{address}"))?.connect().await?);
        }
    }
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..count {
        let (kind, address, gate) = (kind.to_owned(), address.to_owned(), gate.clone());
        let channel = channels.get(i / 100).cloned();
        opening.spawn(async move {
            let _permit = gate.acquire().await?;
            let mut stream = Stream::open(&kind, &address, channel).await?;
            stream.round_trip(0).await?;
            anyhow::Ok(stream)
        });
    }
    let mut streams = Vec::with_capacity(count);
    while let Some(opened) = opening.join_next().await {
        streams.push(opened??);
    }
    println!("held {} {kind} streams, opened in {:.1} s", streams.len(), started.elapsed().as_secs_f64());
    tokio::time::sleep(seconds).await;
    // Every stream still answers.
    for stream in &mut streams {
        stream.round_trip(1).await?;
    }
    println!("all {} streams still answered", streams.len());
    Ok(())
}

/// `concurrency` workers, each doing round trips on its own stream for `seconds`.
async fn pingpong(kind: &str, address: &str, concurrency: usize, seconds: Duration) -> anyhow::Result<()> {
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (kind, address) = (kind.to_owned(), address.to_owned());
        workers.spawn(async move {
            let mut stream = Stream::open(&kind, &address, None).await?;
            stream.round_trip(0).await?; // warm
            let mut latencies = Vec::new();
            let end = Instant::now() + seconds;
            let mut n = 1;
            while Instant::now() < end {
                let sent = Instant::now();
                stream.round_trip(n).await?;
                latencies.push(sent.elapsed());
                n += 1;
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies.extend(done??);
    }
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_micros();
    let rate = latencies.len() as f64 / seconds.as_secs_f64();
    println!(
        "{kind:<5} concurrency {concurrency:<3} {rate:>9.0} msgs/s  p50 {:>6} us  p99 {:>6} us",
        at(0.50),
        at(0.99)
    );
    Ok(())
}
