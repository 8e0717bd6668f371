//! Descriptors dropped in while the gateway runs: new services appear in reflection and routing
//! without a restart, calls in flight keep going, and a broken file changes nothing.

mod support;

use std::time::Duration;

use dragoman::demo::pb::shop::orders::v1::order_service_client::OrderServiceClient;
use dragoman::demo::pb::shop::orders::v1::{CartAction, LineItem, cart_action};
use dragoman::demo::pb::shop::payments::v1::GetPaymentRequest;
use dragoman::demo::pb::shop::payments::v1::payment_service_client::PaymentServiceClient;
use dragoman::demo::pb::shop::users::v1::GetUserRequest;
use dragoman::demo::pb::shop::users::v1::user_service_client::UserServiceClient;
use support::{ORDERS, PAYMENTS, PRODUCTS, TestGateway, USERS, stdout};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_descriptors_are_served_while_a_stream_keeps_going() {
    let gw =
        TestGateway::builder().sets(vec![("shop.binpb", support::demo_set(&[USERS, PRODUCTS, ORDERS]))]).start().await;
    assert!(!stdout(&gw.grpcurl(&["list"])).contains("shop.payments.v1.PaymentService"));
    let before =
        PaymentServiceClient::new(gw.channel().await).get_payment(GetPaymentRequest { id: "pay-1".into() }).await;
    assert_eq!(before.expect_err("not loaded yet").code(), Code::Unimplemented);

    // A stream opened on the old catalog, paced by the test: a bidirectional one stays open until
    // the test ends it, however long the reload takes.
    let mut orders = OrderServiceClient::new(gw.channel().await);
    let (actions, rx) = tokio::sync::mpsc::channel(1);
    let mut carts =
        orders.live_cart(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("LiveCart").into_inner();
    let add = |product: &str| CartAction {
        action: Some(cart_action::Action::Add(LineItem { product_id: product.into(), quantity: 1, unit_price: None })),
    };
    actions.send(add("p-1")).await.expect("send");
    assert_eq!(carts.message().await.expect("answer").map(|c| c.revision), Some(1));

    // Drop a compiled set in, as an operator would.
    let generation = gw.gateway.reloads().borrow().generation;
    std::fs::write(gw.descriptors.join("payments.binpb"), support::demo_set(&[PAYMENTS])).expect("drop file");
    let status = gw.wait_reload(|s| s.generation > generation).await;
    assert!(status.last_error.is_none(), "{status:?}");

    assert!(stdout(&gw.grpcurl(&["list"])).contains("shop.payments.v1.PaymentService"), "reflection shows it");
    let after =
        PaymentServiceClient::new(gw.channel().await).get_payment(GetPaymentRequest { id: "pay-404".into() }).await;
    let err = after.expect_err("routed to the payments backend now");
    assert_eq!(err.code(), Code::NotFound, "the backend answered: {err:?}");

    // The stream opened before the reload goes on: it answers an action sent after the reload,
    // then ends cleanly.
    actions.send(add("p-2")).await.expect("send");
    let cart = tokio::time::timeout(Duration::from_secs(10), carts.message()).await.expect("no stall");
    assert_eq!(cart.expect("answer").map(|c| (c.revision, c.items.len())), Some((2, 2)));
    drop(actions);
    assert!(carts.message().await.expect("clean end").is_none(), "the stream ends when the client's side does");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto_sources_dropped_in_are_compiled() {
    let gw = TestGateway::builder().sets(vec![("users.binpb", support::demo_set(&[USERS]))]).start().await;
    let generation = gw.gateway.reloads().borrow().generation;
    let source = "syntax = \"proto3\";\npackage shop.inventory.v1;\n// Stock levels.\nservice StockService {\n  rpc Count(CountRequest) returns (CountReply);\n}\nmessage CountRequest { string sku = 1; }\nmessage CountReply { int64 units = 1; }\n";
    std::fs::write(gw.descriptors.join("inventory.proto"), source).expect("drop proto");
    gw.wait_reload(|s| s.generation > generation).await;
    let described = stdout(&gw.grpcurl(&["describe", "shop.inventory.v1.StockService"]));
    assert!(
        described.contains("rpc Count ( .shop.inventory.v1.CountRequest ) returns ( .shop.inventory.v1.CountReply )"),
        "{described}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_old_catalog_serving() {
    let gw = TestGateway::start().await;
    let failures = gw.gateway.reloads().borrow().failures;
    std::fs::write(gw.descriptors.join("broken.binpb"), b"this is not a descriptor set").expect("drop file");
    let status = gw.wait_reload(|s| s.failures > failures).await;
    let error = status.last_error.expect("the failure is reported");
    assert!(error.contains("broken.binpb"), "names the file: {error}");

    let user = UserServiceClient::new(gw.channel().await).get_user(GetUserRequest { id: "u-1".into() }).await;
    assert!(user.is_ok(), "old services keep answering: {user:?}");
    assert!(stdout(&gw.grpcurl(&["list"])).contains("shop.orders.v1.OrderService"));

    // Removing the file recovers.
    let generation = gw.gateway.reloads().borrow().generation;
    std::fs::remove_file(gw.descriptors.join("broken.binpb")).expect("remove");
    let status = gw.wait_reload(|s| s.generation > generation).await;
    assert!(status.last_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_file_is_rejected_naming_both_files() {
    let gw = TestGateway::start().await;
    let failures = gw.gateway.reloads().borrow().failures;
    // Same file name as the demo's users.proto, different contents.
    let other = "syntax = \"proto3\";\npackage shop.users.v1;\nmessage User { string id = 1; }\n";
    let dir = gw.descriptors.join("other");
    std::fs::create_dir_all(dir.join("shop/users/v1")).expect("dir");
    std::fs::write(dir.join("shop/users/v1/users.proto"), other).expect("drop proto");
    let status = gw.wait_reload(|s| s.failures > failures).await;
    let error = status.last_error.expect("reported");
    assert!(
        error.contains("shop/users/v1/users.proto") && error.contains("shop.binpb") && error.contains("other"),
        "{error}"
    );
    let user = UserServiceClient::new(gw.channel().await).get_user(GetUserRequest { id: "u-1".into() }).await;
    assert!(user.is_ok(), "{user:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_removed_by_a_reload_stop_reporting_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let gw = TestGateway::builder()
        .sets(vec![("users.binpb", support::demo_set(&[USERS])), ("payments.binpb", support::demo_set(&[PAYMENTS]))])
        .start()
        .await;
    let check = |service: &str| {
        let request = HealthCheckRequest { service: service.to_owned() };
        let channel = gw.channel();
        async move { HealthClient::new(channel.await).check(request).await }
    };
    let serving = check("shop.payments.v1.PaymentService").await.expect("known").into_inner();
    assert_eq!(serving.status, 1, "SERVING");

    let generation = gw.gateway.reloads().borrow().generation;
    std::fs::remove_file(gw.descriptors.join("payments.binpb")).expect("remove");
    gw.wait_reload(|s| s.generation > generation).await;
    let gone = check("shop.payments.v1.PaymentService").await.expect_err("no longer known");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    assert_eq!(check("shop.users.v1.UserService").await.expect("still there").into_inner().status, 1);
}

/// `dragoman serve` reading `config`; the admin listener's address from its log.
async fn serve_file(config: &std::path::Path) -> (support::Running, std::net::SocketAddr) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dragoman"));
    command.args(["serve", "--config"]).arg(config);
    let gateway = tokio::task::spawn_blocking(move || support::Running::start(command)).await.expect("join");
    let line = gateway.wait_for_log(|l| l.contains("admin listening")).await;
    let admin = line.split_whitespace().find_map(|w| w.strip_prefix("address=")).expect("address");
    let admin = admin.parse().expect("admin address");
    (gateway, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_is_reloaded_when_it_changes_and_a_broken_one_changes_nothing() {
    let demo = dragoman::demo::Backends::start().await.expect("demo backends");
    let echo = support::start_echo().await;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("gateway.yaml");
    let config = |backend: std::net::SocketAddr, extra: &str| {
        format!(
            "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\ndescriptors: [{}]\n{extra}services:\n  - match: shop.users.v1.UserService\n    backends: [http://{backend}]\n",
            support::root().join("descriptors").display()
        )
    };
    std::fs::write(&path, config(demo.addresses[0], "")).expect("write");
    let (gateway, admin) = serve_file(&path).await;
    let served_by_echo = || async {
        let reply = support::get(gateway.address, "/v1/users/u-1").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["displayName"].as_str().unwrap_or_default().contains("x-forwarded-for=")
    };
    assert!(!served_by_echo().await, "the demo's UserService answers first");

    // Written whole at once (a rename), as deploy tools do: an in-place write can be read half-done.
    let replace = |text: String| {
        let staged = path.with_extension("new");
        std::fs::write(&staged, text).expect("write");
        std::fs::rename(&staged, &path).expect("rename");
    };
    // The backend moves: the next calls go to the new one, without a restart.
    replace(config(echo, ""));
    let moved = async {
        while !served_by_echo().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), moved).await.expect("the new backend serves");
    gateway.wait_for_log(|l| l.contains("config reloaded")).await;
    let shown = support::get(admin, "/admin/config").await.json();
    assert_eq!(shown["services"][0]["backends"][0], format!("http://{echo}"), "{shown}");
    // The backend no config names any more leaves the figures once its connections are closed:
    // every worker rebuilt its pools at the reload, whether or not a request reached it.
    let old = format!("http://{}", demo.addresses[0]);
    let gone = async {
        loop {
            let backends = support::get(admin, "/admin/backends").await.text();
            if !backends.contains(&old) && backends.contains(&format!("http://{echo}")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone).await.expect("the old backend leaves /admin/backends");

    // A broken file, and an empty one (a write in progress): said so, and the config before
    // them keeps serving.
    replace("services: [\n".to_owned());
    let failed = gateway.wait_for_log(|l| l.contains("config reload failed")).await;
    assert!(failed.contains("gateway.yaml"), "the error names the file: {failed}");
    replace(String::new());
    let empty = gateway.wait_for_log(|l| l.contains("config reload failed") && l.contains("empty")).await;
    assert!(empty.contains("gateway.yaml"), "{empty}");
    assert!(served_by_echo().await, "the last good config serves on");
    let metrics = support::get(admin, "/metrics").await.text();
    assert!(metrics.contains("dragoman_config_reloads_total{result=\"success\"} 1"), "{metrics}");
    assert!(metrics.contains("dragoman_config_reloads_total{result=\"failure\"} 2"), "{metrics}");

    // What only a restart can change is kept — /admin/config shows what runs — with a warning
    // naming it; the rest applies.
    replace(config(demo.addresses[0], "workers: 3\n"));
    let warning = gateway.wait_for_log(|l| l.contains("change only on restart")).await;
    assert!(warning.contains("workers"), "{warning}");
    let back = async {
        while served_by_echo().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), back).await.expect("the demo's backend serves again");
    let shown = support::get(admin, "/admin/config").await.json();
    assert_eq!(shown["workers"], 0, "the running thread count, not the file's: {shown}");
    assert_eq!(shown["services"][0]["backends"][0], format!("http://{}", demo.addresses[0]), "{shown}");

    // SIGHUP rebuilds from the file even when it is unchanged (the files it names are read again).
    let reloads = gateway.log().matches("config reloaded").count();
    gateway.signal("HUP");
    gateway.wait_for_log(|l| l.contains("SIGHUP: reloading")).await;
    let rebuilt = async {
        while gateway.log().matches("config reloaded").count() == reloads {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), rebuilt).await.expect("SIGHUP reloads the config");
    assert!(!served_by_echo().await, "still serving the demo's backend after SIGHUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_named_relative_to_the_working_folder_is_reloaded_too() {
    let demo = dragoman::demo::Backends::start().await.expect("demo backends");
    let echo = support::start_echo().await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = |backend: std::net::SocketAddr| {
        format!(
            "listen: 127.0.0.1:0\ndescriptors: [{}]\nservices:\n  - match: shop.users.v1.UserService\n    backends: [http://{backend}]\n",
            support::root().join("descriptors").display()
        )
    };
    std::fs::write(dir.path().join("gateway.yaml"), config(demo.addresses[0])).expect("write");
    // `dragoman serve --config gateway.yaml`, run from the config's folder.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dragoman"));
    command.args(["serve", "--config", "gateway.yaml"]).current_dir(dir.path());
    let gateway = tokio::task::spawn_blocking(move || support::Running::start(command)).await.expect("join");
    std::fs::write(dir.path().join("gateway.new"), config(echo)).expect("write");
    std::fs::rename(dir.path().join("gateway.new"), dir.path().join("gateway.yaml")).expect("rename");
    let line = gateway.wait_for_log(|l| l.contains("config reloaded") || l.contains("config reload failed")).await;
    assert!(line.contains("config reloaded"), "{line}");
    let reply = support::get(gateway.address, "/v1/users/u-1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.json()["displayName"].as_str().unwrap_or_default().contains("x-forwarded-for="),
        "the echo backend answers"
    );
}
