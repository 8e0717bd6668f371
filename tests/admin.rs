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
    tokio::time::timeout(Duration::from_secs(10), flipped).await.expect("/readyz answers {status}");
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
    let log = demo.log();
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
    let status = stopping.await.expect("join");
    assert!(status.success(), "{status:?}");
}
