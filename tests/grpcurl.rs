//! The real grpcurl against the gateway, through server reflection only (no protoset given).

mod support;

use support::{TestGateway, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_the_demo_services_health_and_reflection() {
    let gw = TestGateway::start().await;
    let out = gw.grpcurl(&["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    for service in
        dragoman::demo::SERVICES.iter().chain(&["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"])
    {
        assert!(listed.iter().any(|l| l == service), "{service} missing from {listed:?}");
    }
    let methods = gw.grpcurl(&["list", "shop.orders.v1.OrderService"]);
    let methods = stdout(&methods);
    for method in ["CreateOrder", "GetOrder", "WatchOrder", "AddLineItems", "LiveCart"] {
        assert!(methods.contains(&format!("shop.orders.v1.OrderService.{method}")), "{methods}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_services_methods_and_messages() {
    let gw = TestGateway::start().await;
    let service = stdout(&gw.grpcurl(&["describe", "shop.orders.v1.OrderService"]));
    assert!(
        service.contains(
            "rpc WatchOrder ( .shop.orders.v1.WatchOrderRequest ) returns ( stream .shop.orders.v1.OrderEvent )"
        ),
        "{service}"
    );
    assert!(
        service.contains("rpc LiveCart ( stream .shop.orders.v1.CartAction ) returns ( stream .shop.orders.v1.Cart )"),
        "{service}"
    );
    // Comments travel with the descriptors.
    assert!(service.contains("Follows an order from placed to delivered"), "{service}");

    let method = stdout(&gw.grpcurl(&["describe", "shop.users.v1.UserService.GetUser"]));
    assert!(
        method.contains("rpc GetUser ( .shop.users.v1.GetUserRequest ) returns ( .shop.users.v1.User )"),
        "{method}"
    );

    let message = stdout(&gw.grpcurl(&["describe", "shop.products.v1.Product"]));
    assert!(message.contains(".shop.common.v1.Money price = 4;"), "{message}");
    assert!(message.contains("repeated string tags = 7;"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_unary_streaming_and_errors() {
    let gw = TestGateway::start().await;
    let out = gw.grpcurl(&["-d", r#"{"id":"u-1"}"#, "shop.users.v1.UserService/GetUser"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let user: serde_json::Value = serde_json::from_slice(&out.stdout).expect("grpcurl prints JSON");
    assert_eq!(user["displayName"], "Ada Lovelace");

    let created = gw.grpcurl(&[
        "-d",
        r#"{"user_id":"u-1","items":[{"product_id":"p-1","quantity":3}]}"#,
        "shop.orders.v1.OrderService/CreateOrder",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let order: serde_json::Value = serde_json::from_slice(&created.stdout).expect("JSON");
    assert_eq!(order["total"]["units"], "74", "3 x 24.99 EUR: {order}");
    let id = order["id"].as_str().expect("order id").to_owned();

    let watch = gw.grpcurl(&[
        "-d",
        &format!(r#"{{"id":"{id}","interval":"0.01s"}}"#),
        "shop.orders.v1.OrderService/WatchOrder",
    ]);
    assert!(watch.status.success(), "{}", stderr(&watch));
    let events = stdout(&watch);
    let statuses: Vec<&str> =
        ["ORDER_STATUS_PLACED", "ORDER_STATUS_PAID", "ORDER_STATUS_SHIPPED", "ORDER_STATUS_DELIVERED"]
            .into_iter()
            .filter(|s| events.contains(s))
            .collect();
    assert_eq!(statuses.len(), 4, "every status change streams through: {events}");

    let missing = gw.grpcurl(&["-d", r#"{"id":"u-404"}"#, "shop.users.v1.UserService/GetUser"]);
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(err.contains("Code: NotFound") && err.contains(r#"no user with id "u-404""#), "{err}");

    // The whole status: "NOT_SERVING" contains "SERVING" too.
    let health = gw.grpcurl(&["-d", r#"{"service":"shop.users.v1.UserService"}"#, "grpc.health.v1.Health/Check"]);
    assert!(health.status.success(), "{}", stderr(&health));
    let health: serde_json::Value = serde_json::from_slice(&health.stdout).expect("grpcurl prints JSON");
    assert_eq!(health["status"], "SERVING");
}
