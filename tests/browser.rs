//! A real browser as the user: headless Chromium loads a page from another origin, and the page
//! calls the gateway's REST API with fetch() — CORS preflight, JSON, an error, and a server
//! stream read line by line as it arrives. A page from an origin the config does not allow is
//! refused by the browser itself. A page also drives a bidirectional stream over a WebSocket.

mod support;

use std::net::SocketAddr;

use support::TestGateway;

/// The page: runs the calls and writes what it saw into <pre id="out">.
fn page(gateway: SocketAddr) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="out">pending</pre><script>
const api = "http://{gateway}";
async function run() {{
  const seen = {{}};
  try {{
    const user = await (await fetch(api + "/v1/users/u-1")).json();
    seen.user = user.displayName;
    const order = await fetch(api + "/v1/orders", {{
      method: "POST",
      headers: {{"content-type": "application/json", "x-timeout-ms": "5000"}},
      body: JSON.stringify({{userId: "u-1", items: [{{productId: "p-2", quantity: 2}}]}}),
    }});
    seen.orderStatus = order.status;
    seen.orderTotal = (await order.json()).total.units;
    const missing = await fetch(api + "/v1/users/u-404");
    seen.missing = [missing.status, (await missing.json()).code];
    const stream = await fetch(api + "/v1/orders/o-1:watch?interval=0.05s");
    const reader = stream.body.pipeThrough(new TextDecoderStream()).getReader();
    let text = "", chunks = 0;
    for (;;) {{ const {{value, done}} = await reader.read(); if (done) break; chunks++; text += value; }}
    seen.events = text.trim().split("\n").map(l => JSON.parse(l).result.status);
    seen.chunks = chunks;
  }} catch (e) {{
    seen.error = String(e);
  }}
  document.getElementById("out").textContent = JSON.stringify(seen);
  await fetch("/report", {{method: "POST", body: JSON.stringify(seen)}});
}}
run();
</script></body></html>"#
    )
}

/// Serves the page on a bound listener (an origin of its own), and hands over what the page
/// reports to `/report` when its calls are done.
fn serve_page(listener: tokio::net::TcpListener, html: String) -> tokio::sync::mpsc::Receiver<String> {
    use http_body_util::BodyExt;
    let (reports, received) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (html, reports) = (html.clone(), reports.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (html, reports) = (html.clone(), reports.clone());
                    async move {
                        if request.uri().path() == "/report" {
                            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let _ = reports.send(String::from_utf8_lossy(&body).into_owned()).await;
                            return Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::new(),
                            )));
                        }
                        let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(html)));
                        response.headers_mut().insert("content-type", http::HeaderValue::from_static("text/html"));
                        Ok(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    received
}

/// A page origin of its own: a bound listener and its URL.
async fn origin() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    (listener, url)
}

/// Opens a page in headless Chromium and waits for the page's report.
async fn browse(url: &str, reports: &mut tokio::sync::mpsc::Receiver<String>) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut chromium = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium runs (the test command installs it)");
    let report = tokio::time::timeout(std::time::Duration::from_secs(60), reports.recv()).await;
    let _ = chromium.kill().await;
    report.expect("the page reports within 60 s").expect("a report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_on_another_origin_calls_the_api() {
    // Two page origins, one of them allowed by the gateway's CORS config.
    let ((allowed, allowed_url), (foreign, foreign_url)) = (origin().await, origin().await);
    let gw = TestGateway::builder().rest(&format!("  cors:\n    allow_origins: [\"{allowed_url}\"]\n")).start().await;
    let mut allowed_reports = serve_page(allowed, page(gw.address));
    let mut foreign_reports = serve_page(foreign, page(gw.address));

    let seen = browse(&format!("{allowed_url}/"), &mut allowed_reports).await;
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap_or_else(|e| panic!("{e}: {seen}"));
    assert_eq!(seen["error"], serde_json::Value::Null, "{seen}");
    assert_eq!(seen["user"], "Ada Lovelace");
    assert_eq!(seen["orderStatus"], 200, "the preflight for JSON with a custom header passed");
    assert_eq!(seen["orderTotal"], "9");
    assert_eq!(seen["missing"], serde_json::json!([404, 5]));
    let statuses = ["ORDER_STATUS_PLACED", "ORDER_STATUS_PAID", "ORDER_STATUS_SHIPPED", "ORDER_STATUS_DELIVERED"];
    assert_eq!(seen["events"], serde_json::json!(statuses), "the stream, read as it arrived: {seen}");

    // The other origin: the browser itself refuses to hand the page the answers.
    let seen = browse(&format!("{foreign_url}/"), &mut foreign_reports).await;
    assert!(seen.contains("Failed to fetch"), "CORS blocked it: {seen}");
}

/// A page that talks to the demo's bidirectional LiveCart over a WebSocket: two actions, each
/// answered before the next, then the half-close; it reports the carts, the status and the close.
fn cart_page(gateway: SocketAddr) -> String {
    format!(
        r##"<!doctype html><html><body><ul id="carts"></ul><pre id="out">pending</pre><script>
const seen = {{carts: [], frames: 0}};
const ws = new WebSocket("ws://{gateway}/shop.orders.v1.OrderService/LiveCart", ["bearer", "page-token"]);
const actions = [{{add: {{productId: "p-2", quantity: 2}}}}, {{add: {{productId: "p-3", quantity: 1}}}}];
ws.onopen = () => {{ seen.protocol = ws.protocol; ws.send(JSON.stringify(actions.shift())); }};
ws.onmessage = (event) => {{
  seen.frames++;
  const frame = JSON.parse(event.data);
  if (frame.result) {{
    const li = document.createElement("li");
    li.textContent = frame.result.revision + ": " + frame.result.items.map(i => i.productId + " x" + i.quantity).join(", ");
    document.getElementById("carts").appendChild(li);
    seen.carts.push(li.textContent);
    if (actions.length) ws.send(JSON.stringify(actions.shift())); else ws.send("");
  }}
  if (frame.status) seen.status = frame.status.code;
}};
ws.onclose = async (event) => {{
  seen.close = event.code;
  seen.rendered = [...document.querySelectorAll("#carts li")].map(li => li.textContent);
  document.getElementById("out").textContent = JSON.stringify(seen);
  await fetch("/report", {{method: "POST", body: JSON.stringify(seen)}});
}};
</script></body></html>"##
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_drives_a_bidirectional_stream_over_a_websocket() {
    let ((allowed, allowed_url), (foreign, foreign_url)) = (origin().await, origin().await);
    let gw = TestGateway::builder().websocket(&format!("  allow_origins: [\"{allowed_url}\"]\n")).start().await;
    let mut allowed_reports = serve_page(allowed, cart_page(gw.address));
    let mut foreign_reports = serve_page(foreign, cart_page(gw.address));

    let seen = browse(&format!("{allowed_url}/"), &mut allowed_reports).await;
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap_or_else(|e| panic!("{e}: {seen}"));
    assert_eq!(seen["protocol"], "bearer", "the browser kept the socket: the gateway echoed its subprotocol");
    let carts = serde_json::json!(["1: p-2 x2", "2: p-2 x2, p-3 x1"]);
    assert_eq!(seen["rendered"], carts, "the page rendered each reply: {seen}");
    assert_eq!(seen["status"], 0, "{seen}");
    assert_eq!(seen["close"], 1000, "{seen}");

    // A page from an origin the gateway does not allow: the upgrade is refused (403, checked
    // here with the page's own Origin), and the browser reports an abnormal close.
    let upgrade = [
        ("origin", foreign_url.as_str()),
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let refused = support::http(gw.address, "GET", "/shop.orders.v1.OrderService/LiveCart", &upgrade, b"").await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let seen = browse(&format!("{foreign_url}/"), &mut foreign_reports).await;
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap_or_else(|e| panic!("{e}: {seen}"));
    assert_eq!(seen["close"], 1006, "{seen}");
    assert_eq!(seen["frames"], 0, "{seen}");
}
