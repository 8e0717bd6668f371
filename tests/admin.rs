//! The admin listener: probes and the catalog, in process and on the real binary, where
//! readiness must turn false on SIGTERM while calls in flight finish.

mod support;

use std::time::Duration;

use support::{Running, TestGateway, get, root};

/// An admin listener for `gateway`, on a port of its own, until the test ends.
async fn admin(gateway: &TestGateway) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let serving = gateway.gateway.clone();
    tokio::spawn(dragoman::admin::serve(listener, serving, std::future::pending()));
    address
}

/// Polls `/readyz` until it answers `status` (a stopping gateway flips it as soon as it can).
async fn wait_ready(admin: std::net::SocketAddr, status: u16) {
    let flipped = async {
        while get(admin, "/readyz").await.status != status {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let waited = tokio::time::timeout(Duration::from_secs(10), flipped).await;
    assert!(waited.is_ok(), "/readyz did not answer {status} within 10 s");
}

/// The exposition, once it satisfies `holds`: a call is counted as it ends, which may be just
/// after its client has the answer (and a removed method leaves once no catalog holds it).
async fn metrics_when(admin: std::net::SocketAddr, what: &str, holds: impl Fn(&str) -> bool) -> String {
    let polled = async {
        loop {
            let text = get(admin, "/metrics").await.text();
            if holds(&text) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), polled).await.unwrap_or_else(|_| panic!("not within 10 s: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_the_catalog() {
    let mut gateway = TestGateway::start().await;
    let admin = admin(&gateway).await;
    let health = get(admin, "/healthz").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let ready = get(admin, "/readyz").await;
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));

    let catalog = get(admin, "/admin/catalog").await.json();
    assert_eq!(catalog["generation"], 1);
    assert!(catalog["last_reload_error"].is_null(), "{catalog}");
    let services = catalog["services"].as_array().expect("services");
    let names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
    let mut demo = dragoman::demo::SERVICES;
    demo.sort_unstable();
    assert_eq!(names, demo, "every demo service, in name order");
    let orders = services.iter().find(|s| s["name"] == "shop.orders.v1.OrderService").expect("orders");
    assert!(orders["backends"][0].as_str().is_some_and(|b| b.starts_with("http://127.0.0.1:")), "{orders}");
    let get_order =
        orders["methods"].as_array().and_then(|m| m.iter().find(|m| m["name"] == "GetOrder")).expect("GetOrder");
    assert_eq!(get_order["path"], "/shop.orders.v1.OrderService/GetOrder");
    assert_eq!(get_order["http"][0], "GET /v1/orders/{id}");
    let live_cart =
        orders["methods"].as_array().and_then(|m| m.iter().find(|m| m["name"] == "LiveCart")).expect("LiveCart");
    assert_eq!(
        (live_cart["client_streaming"].as_bool(), live_cart["server_streaming"].as_bool()),
        (Some(true), Some(true))
    );

    // The config in effect, defaults filled in.
    let config = get(admin, "/admin/config").await.json();
    assert_eq!(config["server"]["max_connections"], 10000, "{config}");
    assert_eq!(config["server"]["drain_timeout"], "10s", "{config}");
    assert_eq!(config["rest"]["max_request_body_size"], 16 << 20, "{config}");
    assert_eq!(config["soap"]["path_prefix"], "/soap", "{config}");
    assert!(config["traces"]["otlp_endpoint"].is_null(), "traces are off by default: {config}");
    assert_eq!(config["traces"]["sampling_ratio"], 1.0, "{config}");
    assert_eq!(config["traces"]["service_name"], "dragoman", "{config}");
    assert_eq!(config["traces"]["export_interval"], "5s", "{config}");
    assert_eq!(config["services"][0]["match"], "shop.users.v1.UserService", "{config}");
    assert!(config["admin"]["listen"].is_null(), "{config}");

    // The API's port does not serve the admin routes, nor the admin port the API.
    assert_eq!(get(gateway.address, "/readyz").await.status, 404);
    assert_eq!(get(admin, "/v1/users/u-1").await.status, 404);

    // Once the gateway stops, it is not ready; the admin listener still answers.
    gateway.stop();
    wait_ready(admin, 503).await;
    assert_eq!(get(admin, "/readyz").await.text(), "draining\n");
    assert_eq!(get(admin, "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_turns_unready_on_sigterm_while_a_call_finishes() {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dragoman"));
    command.current_dir(root()).args(["demo", "--listen", "127.0.0.1:0"]);
    let demo = tokio::task::spawn_blocking(move || Running::start(command)).await.expect("join");
    // Logged after the API's listener, which `Running` waited for: wait for it too.
    let log = demo.wait_for_log(|l| l.contains("admin listening")).await;
    let address =
        regex::Regex::new(r"admin listening address=(\S+)").expect("regex").captures(&log).map(|c| c[1].to_owned());
    let admin: std::net::SocketAddr = address.expect("the demo starts an admin listener").parse().expect("address");
    wait_ready(admin, 200).await;

    // A watch keeps a call in flight (an event now, the next in a minute).
    let response =
        support::http_stream(demo.address, "GET", "/v1/orders/o-1:watch?interval=60s", &[], support::no_body(), false)
            .await;
    let mut watch = response.into_body();
    assert!(support::next_chunk(&mut watch).await.is_some_and(|c| c.contains("result")));

    let mut demo = demo;
    let stopping = tokio::task::spawn_blocking(move || demo.terminate());
    wait_ready(admin, 503).await;
    assert!(!stopping.is_finished(), "the call in flight holds the drain");
    drop(watch);
    let status = tokio::time::timeout(Duration::from_secs(30), stopping).await.expect("the demo exits").expect("join");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_shutdown_delay_new_calls_are_served_after_readiness_turns_false() {
    let backends = dragoman::demo::Backends::start().await.expect("demo backends");
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("gateway.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nserver:\n  shutdown_delay: 3s\ndescriptors: [{}]\n{}",
        root().join("descriptors").display(),
        backends.services_yaml()
    );
    std::fs::write(&config, yaml).expect("config");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dragoman"));
    command.args(["serve", "--config"]).arg(&config);
    let mut gateway = tokio::task::spawn_blocking(move || Running::start(command)).await.expect("join");
    let line = gateway.wait_for_log(|l| l.contains("admin listening")).await;
    let admin = line.split_whitespace().find_map(|w| w.strip_prefix("address=")).expect("address");
    let admin: std::net::SocketAddr = admin.parse().expect("admin address");
    wait_ready(admin, 200).await;

    gateway.signal("TERM");
    wait_ready(admin, 503).await;
    // Not ready, yet still taking new connections and calls a second later: the load balancer
    // has time to notice. (Without the delay the port is closed by then.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reply = get(gateway.address, "/v1/users/u-1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // gRPC health says so too, for load balancers that ask it instead.
    let address = gateway.address.to_string();
    let health = std::process::Command::new(support::grpcurl())
        .args(["-plaintext", &address, "grpc.health.v1.Health/Check"])
        .output()
        .expect("grpcurl runs");
    assert!(support::stdout(&health).contains("NOT_SERVING"), "{}", support::stdout(&health));
    let status = tokio::task::spawn_blocking(move || gateway.terminate()).await.expect("join");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_calls_of_every_protocol() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let gateway = TestGateway::start().await;
    let admin = admin(&gateway).await;
    // GetUser once over each protocol, and once more over REST for a user who does not exist.
    let request = dragoman::demo::pb::shop::users::v1::GetUserRequest { id: "u-1".into() };
    let grpc = support::raw_unary(gateway.address, "/shop.users.v1.UserService/GetUser", &request, &[]).await;
    assert_eq!(grpc.status(), Some(0));
    assert_eq!(get(gateway.address, "/v1/users/u-1").await.status, 200);
    assert_eq!(get(gateway.address, "/v1/users/u-404").await.status, 404);
    let envelope = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><GetUser xmlns="urn:dragoman:shop.users.v1"><id>u-1</id></GetUser></s:Body></s:Envelope>"#;
    let soap = [("content-type", "text/xml"), ("soapaction", "")];
    let reply =
        support::http(gateway.address, "POST", "/soap/shop.users.v1.UserService", &soap, envelope.as_bytes()).await;
    assert_eq!(reply.status, 200);
    let url = format!("ws://{}/shop.users.v1.UserService/GetUser", gateway.address);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("upgrade");
    // An open socket is an open connection by its protocol (other tests' sockets count too: the
    // figure is the process's).
    let open =
        regex::Regex::new(r#"dragoman_open_connections\{protocol="websocket",tls="any"\} (\d+)"#).expect("regex");
    let text = metrics_when(admin, "the open socket", |text| {
        open.captures(text).is_some_and(|c| c[1].parse::<u64>().is_ok_and(|n| n >= 1))
    })
    .await;
    assert!(text.contains("dragoman_open_connections{protocol=\"http1\",tls=\"false\"}"), "{text}");
    socket.send(Message::text(r#"{"id": "u-1"}"#)).await.expect("send");
    while let Some(Ok(frame)) = socket.next().await {
        if frame.is_close() {
            break;
        }
    }

    let four = r#"grpc_server_handled_total{grpc_type="unary",grpc_service="shop.users.v1.UserService",grpc_method="GetUser",grpc_code="OK"} 4
"#;
    let text = metrics_when(admin, "four OK GetUsers counted", |text| text.contains(four)).await;
    let user = r#"grpc_type="unary",grpc_service="shop.users.v1.UserService",grpc_method="GetUser""#;
    assert!(text.contains(&format!("grpc_server_handled_total{{{user},grpc_code=\"NOT_FOUND\"}} 1\n")), "{text}");
    assert!(text.contains(&format!("grpc_server_started_total{{{user}}} 5\n")), "{text}");
    assert!(text.contains(&format!("grpc_server_handling_seconds_count{{{user}}} 5\n")), "{text}");
    assert!(text.contains(&format!("grpc_server_handling_seconds_bucket{{{user},le=\"1.0\"}} 5\n")), "{text}");
    for protocol in ["grpc", "rest", "soap", "websocket"] {
        let series = format!(
            r#"rpc_server_call_duration_seconds_count{{rpc_system_name="grpc",rpc_method="shop.users.v1.UserService/GetUser",rpc_response_status_code="OK",protocol="{protocol}"}} 1
"#
        );
        assert!(text.contains(&series), "{series}\n{text}");
    }
    let not_found =
        "rpc_response_status_code=\"NOT_FOUND\",error_type=\"NOT_FOUND\",protocol=\"rest\",le=\"+Inf\"} 1\n";
    assert!(text.contains(not_found), "{text}");
    // Only what counted: no series for a method nobody called.
    assert!(!text.contains("CreateUser"), "{text}");
    // Prometheus's own linter reads it without a complaint.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/install-test-tools.sh installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), text.as_bytes()).expect("write");
    let checked = promtool.wait_with_output().expect("promtool ends");
    assert!(checked.status.success(), "{}{}", support::stdout(&checked), support::stderr(&checked));

    // OpenMetrics when asked for.
    let open =
        support::http(admin, "GET", "/metrics", &[("accept", "application/openmetrics-text; version=1.0.0")], b"")
            .await;
    assert_eq!(open.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    let text = open.text();
    assert!(text.ends_with("# EOF\n") && text.contains("# TYPE grpc_server_handled counter\n"), "{text}");
}

/// A call whose client gives up before the backend answers is counted, as CANCELLED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_abandoned_before_its_reply_is_counted_as_cancelled() {
    // A backend that takes calls and never answers them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let never = hyper::service::service_fn(|_request: http::Request<hyper::body::Incoming>| {
                std::future::pending::<
                    Result<http::Response<http_body_util::Empty<bytes::Bytes>>, std::convert::Infallible>,
                >()
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), never),
            );
        }
    });
    let gateway = TestGateway::builder().backend("shop.users.v1.UserService", &silent.to_string()).start().await;
    let admin = admin(&gateway).await;
    let gave_up = tokio::time::timeout(Duration::from_millis(300), get(gateway.address, "/v1/users/u-1")).await;
    assert!(gave_up.is_err(), "the backend never answers");
    let user = r#"grpc_type="unary",grpc_service="shop.users.v1.UserService",grpc_method="GetUser""#;
    let cancelled = format!("grpc_server_handled_total{{{user},grpc_code=\"CANCELLED\"}} 1\n");
    let text = metrics_when(admin, "the abandoned call is counted", |text| text.contains(&cancelled)).await;
    assert!(text.contains(&format!("grpc_server_started_total{{{user}}} 1\n")), "{text}");
}

/// A real Prometheus (Debian's, installed by the test command) scrapes the admin listener — in
/// OpenMetrics, which it asks for first — and its query API finds the calls the test made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_server_scrapes_the_counts() {
    let gateway = TestGateway::start().await;
    let admin = admin(&gateway).await;
    for _ in 0..3 {
        assert_eq!(get(gateway.address, "/v1/users/u-1").await.status, 200);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    let yaml = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: dragoman\n    static_configs:\n      - targets: ['{admin}']\n"
    );
    std::fs::write(&config, yaml).expect("write config");
    let port = support::dead_port();
    let mut prometheus = tokio::process::Command::new("prometheus");
    prometheus
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let _prometheus = prometheus.spawn().expect("prometheus starts (scripts/install-test-tools.sh installs it)");
    let server: std::net::SocketAddr = ([127, 0, 0, 1], port).into();

    let query = |promql: &'static str| async move {
        let path = format!(
            "/api/v1/query?query={}",
            percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC)
        );
        // Prometheus may not listen yet: `get` would panic on a refused connection.
        drop(tokio::net::TcpStream::connect(server).await.ok()?);
        let reply = get(server, &path).await;
        let json = serde_json::from_slice::<serde_json::Value>(&reply.body).ok()?;
        json["data"]["result"][0]["value"][1].as_str().map(str::to_owned)
    };
    let scraped = async {
        loop {
            let handled = query(r#"sum(grpc_server_handled_total{grpc_method="GetUser",grpc_code="OK"})"#).await;
            if handled.as_deref() == Some("3") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), scraped).await.expect("Prometheus reads the three calls");
    let rest = query(
        r#"sum(rpc_server_call_duration_seconds_count{rpc_method="shop.users.v1.UserService/GetUser",protocol="rest"})"#,
    );
    assert_eq!(rest.await.as_deref(), Some("3"));
    assert_eq!(query("dragoman_catalog_generation").await.as_deref(), Some("1"));
    assert_eq!(query(r#"up{job="dragoman"}"#).await.as_deref(), Some("1"), "the scrape is healthy");
}

/// Counts survive a reload; a method the reload removed leaves the exposition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_reloads_and_removed_methods_leave() {
    let sets = vec![
        ("users.binpb", support::demo_set(&[support::USERS])),
        ("payments.binpb", support::demo_set(&[support::PAYMENTS])),
    ];
    let gateway = TestGateway::builder().sets(sets).start().await;
    let admin = admin(&gateway).await;
    assert_eq!(get(gateway.address, "/v1/users/u-1").await.status, 200);
    assert_eq!(get(gateway.address, "/v1/payments/pay-404").await.status, 404);
    let user = r#"grpc_server_handled_total{grpc_type="unary",grpc_service="shop.users.v1.UserService",grpc_method="GetUser",grpc_code="OK"} 1"#;
    metrics_when(admin, "both calls counted", |text| text.contains(user) && text.contains("GetPayment")).await;

    let generation = gateway.gateway.reloads().borrow().generation;
    std::fs::remove_file(gateway.descriptors.join("payments.binpb")).expect("remove");
    gateway.wait_reload(|s| s.generation > generation).await;
    // Gone once nothing holds the old catalog (a request on it may still be finishing).
    let text = metrics_when(admin, "the removed service's series go", |text| !text.contains("PaymentService")).await;
    assert!(text.contains(&format!("{user}\n")), "the count survives the reload: {text}");
}

/// A call a frontend refuses before the stack — a malformed body, a malformed deadline — counts
/// for its method, with its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_a_known_method_are_counted() {
    let gateway = TestGateway::start().await;
    let admin = admin(&gateway).await;
    let bad = support::post_json(gateway.address, "/v1/users", r#"{"email": "#).await;
    assert_eq!(bad.status, 400);
    let request = dragoman::demo::pb::shop::users::v1::GetUserRequest { id: "u-1".into() };
    let grpc = support::raw_unary(
        gateway.address,
        "/shop.users.v1.UserService/GetUser",
        &request,
        &[("grpc-timeout", "soon")],
    )
    .await;
    assert_eq!(grpc.status(), Some(3), "INVALID_ARGUMENT");
    let text = get(admin, "/metrics").await.text();
    for (method, protocol) in [("CreateUser", "rest"), ("GetUser", "grpc")] {
        let series = format!(
            r#"rpc_server_call_duration_seconds_count{{rpc_system_name="grpc",rpc_method="shop.users.v1.UserService/{method}",rpc_response_status_code="INVALID_ARGUMENT",error_type="INVALID_ARGUMENT",protocol="{protocol}"}} 1
"#
        );
        assert!(text.contains(&series), "{series}{text}");
        let started = format!(
            "grpc_server_started_total{{grpc_type=\"unary\",grpc_service=\"shop.users.v1.UserService\",grpc_method=\"{method}\"}} 1\n"
        );
        assert!(text.contains(&started), "{started}{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_are_shown_counted_and_gate_readiness() {
    // PaymentService's backend is down: nothing listens at its port (yet).
    let port = support::dead_port();
    let dead = format!("127.0.0.1:{port}");
    let gateway = TestGateway::builder().backend("shop.payments.v1.PaymentService", &dead).start().await;
    let admin = admin(&gateway).await;
    let users = format!("http://{}", gateway.backends.addresses[0]);

    let ready = get(admin, "/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.text(), "no backend in reach for shop.payments.v1.PaymentService\n");

    for _ in 0..3 {
        assert_eq!(get(gateway.address, "/v1/users/u-1").await.status, 200);
    }
    assert_eq!(get(gateway.address, "/v1/payments/pay-1").await.status, 503);
    let shown = get(admin, "/admin/backends").await.json();
    let entry = |address: &str| {
        let all = shown["backends"].as_array().expect("backends");
        all.iter().find(|b| b["address"] == address).cloned().unwrap_or_else(|| panic!("{address} in {shown}"))
    };
    let up = entry(&users);
    assert_eq!(up["state"], "up", "{up}");
    assert_eq!(up["services"], serde_json::json!(["shop.users.v1.UserService"]));
    assert_eq!(up["calls"], 3, "{up}");
    assert_eq!(up["failures"], 0, "{up}");
    assert!(up["connections"].as_i64() >= Some(1), "{up}");
    let down = entry(&format!("http://{dead}"));
    assert_eq!(down["state"], "down", "{down}");
    assert!(down["connect_failures"].as_u64() >= Some(1), "{down}");
    assert!(down["last_error"].as_str().is_some_and(|e| e.contains("refused")), "{down}");
    assert_eq!(down["services"], serde_json::json!(["shop.payments.v1.PaymentService"]));

    let text = metrics_when(admin, "the backends' figures", |text| {
        text.contains(&format!("dragoman_backend_calls_total{{backend=\"{users}\"}} 3\n"))
    })
    .await;
    assert!(
        text.contains(&format!("dragoman_backend_call_duration_seconds_count{{backend=\"{users}\"}} 3\n")),
        "{text}"
    );
    assert!(text.contains(&format!("dragoman_backend_calls_in_flight{{backend=\"{users}\"}} 0\n")), "{text}");
    assert!(text.contains(&format!("dragoman_backend_connect_failures_total{{backend=\"http://{dead}\"}} ")), "{text}");
    // The call the gateway could not place is a refusal, with its reason and method; a path no
    // method has is counted too, under one bounded label value, never the raw path.
    let refused =
        "dragoman_refusals_total{reason=\"no_backend\",rpc_method=\"shop.payments.v1.PaymentService/GetPayment\"} 1\n";
    assert!(text.contains(refused), "{text}");
    assert_eq!(get(gateway.address, "/no/such/route").await.status, 404);
    let text = metrics_when(admin, "the unknown path", |text| {
        text.contains(
            "rpc_method=\"_OTHER\",rpc_response_status_code=\"NOT_FOUND\",error_type=\"NOT_FOUND\",protocol=\"rest\"",
        )
    })
    .await;
    assert!(!text.contains("/no/such/route"), "{text}");

    // Something listens there now: ready, once the last probe's answer (kept a second) is stale.
    let _listening = std::net::TcpListener::bind(&dead).expect("the port is free again");
    wait_ready(admin, 200).await;
}
