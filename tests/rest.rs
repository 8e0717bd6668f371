//! REST/JSON through the gateway to the demo backends: routing by google.api.http, binding,
//! errors, HttpBody, headers and CORS. Streaming has its own file (rest_streaming.rs).

mod support;

use support::{TestGateway, get, http, post_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_routes_reach_their_methods() {
    let gw = TestGateway::start().await;
    let a = gw.address;

    // GET with a path variable.
    let user = get(a, "/v1/users/u-1").await;
    assert_eq!(user.status, 200, "{}", user.text());
    assert_eq!(user.header("content-type"), Some("application/json"));
    assert_eq!(user.json()["displayName"], "Ada Lovelace");

    // GET with query parameters.
    let books = get(a, "/v1/products?category=books").await.json();
    assert_eq!(books["products"].as_array().map(Vec::len), Some(1), "{books}");

    // additional_bindings with response_body: the bare list.
    let garden = get(a, "/v1/categories/garden/products").await;
    assert_eq!(garden.status, 200, "{}", garden.text());
    assert_eq!(garden.json()[0]["name"], "Garden Difference Engine", "{}", garden.text());

    // POST with body "*", JSON names and proto names alike.
    let order = post_json(a, "/v1/orders", r#"{"userId":"u-1","items":[{"product_id":"p-2","quantity":2}]}"#).await;
    assert_eq!(order.status, 200, "{}", order.text());
    let order = order.json();
    assert_eq!(order["total"], serde_json::json!({"currencyCode":"EUR","units":"9","nanos":980000000}));
    assert_eq!(order["status"], "ORDER_STATUS_PLACED", "enums print by name");

    // POST with body "product": the body is that field.
    let product = post_json(a, "/v1/products", r#"{"name":"Cog","price":{"currencyCode":"EUR","units":"2"}}"#).await;
    assert_eq!(product.status, 200, "{}", product.text());
    assert_eq!(product.json()["id"], "p-5");

    // A custom verb after the path, with body "*": a payment made just now is refunded...
    let paid = post_json(
        a,
        "/v1/payments",
        r#"{"orderId":"o-1","amount":{"currencyCode":"EUR","units":"5"},"cardToken":"tok_visa"}"#,
    )
    .await;
    assert_eq!(paid.status, 200, "{}", paid.text());
    let paid = paid.json()["id"].as_str().expect("a payment id").to_owned();
    let refund = post_json(a, &format!("/v1/payments/{paid}:refund"), r#"{"reason":"broken"}"#).await;
    assert_eq!(refund.status, 200, "{}", refund.text());
    assert_eq!(
        (refund.json()["id"].as_str(), refund.json()["state"].as_str()),
        (Some(paid.as_str()), Some("PAYMENT_STATE_REFUNDED"))
    );
    // ...and an unknown one is the backend's NOT_FOUND, not the gateway's "no route for" 404.
    let unknown = post_json(a, "/v1/payments/pay-404:refund", r#"{"reason":"broken"}"#).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(unknown.json()["message"], r#"no payment with id "pay-404""#, "Refund answered");

    // Every method, annotated or not, at its gRPC path with a JSON body.
    let auto = post_json(a, "/shop.users.v1.UserService/GetUser", r#"{"id":"u-1"}"#).await;
    assert_eq!(auto.json()["email"], "ada@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_are_json_errors() {
    let gw = TestGateway::start().await;
    let missing = get(gw.address, "/v2/nothing/here").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], 5);
    assert!(missing.json()["message"].as_str().is_some_and(|m| m.contains("/v2/nothing/here")));

    let wrong = http(gw.address, "DELETE", "/v1/users/u-1", &[], b"").await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET"));
    assert_eq!(wrong.json()["code"], 12);

    // A declared custom verb names its own path: GET there is not GetPayment("p-1:refund").
    let verb = http(gw.address, "GET", "/v1/payments/p-1:refund", &[], b"").await;
    assert_eq!(verb.status, 405, "{}", verb.text());
    assert_eq!(verb.header("allow"), Some("POST"));
    let options = http(gw.address, "OPTIONS", "/v1/payments/p-1:refund", &[], b"").await;
    assert_eq!(options.header("allow"), Some("POST, OPTIONS"));
    // Any other colon is data.
    let colon = get(gw.address, "/v1/users/u-1:x").await;
    assert!(colon.json()["message"].as_str().is_some_and(|m| m.contains("u-1:x")), "{}", colon.text());

    let both = http(gw.address, "PUT", "/v1/products", &[], b"").await;
    assert_eq!(both.status, 405);
    assert_eq!(both.header("allow"), Some("GET, POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_that_says_what_and_where() {
    let gw = TestGateway::start().await;
    let a = gw.address;
    let cases = [
        (r#"{"email": "a@b.c", "displayName": 5}"#, "at field displayName"),
        (r#"{"email": "a@b.c", "displayName": "x",}"#, "column"),
        (r#"{"email": "a@b.c", "nickname": "x"}"#, "nickname"),
        (r#"{"email": "a@b.c""#, "malformed JSON"),
        (r#"["not", "an", "object"]"#, "invalid JSON"),
    ];
    for (body, says) in cases {
        let reply = post_json(a, "/v1/users", body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        let json = reply.json();
        assert_eq!(json["code"], 3);
        assert!(json["message"].as_str().is_some_and(|m| m.contains(says)), "{body}: {json}");
    }

    let number = get(a, "/v1/users?page_size=lots").await;
    assert_eq!(number.status, 400);
    assert!(number.text().contains("page_size"), "{}", number.text());

    let range = get(a, "/v1/users?page_size=99999999999").await;
    assert_eq!(range.status, 400, "out of range for int32: {}", range.text());

    let unknown = get(a, "/v1/users?colour=red").await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.text().contains("colour"), "{}", unknown.text());

    // Types that are neither JSON nor XML are refused; XML is read by the XML mapping (an empty
    // user reaches the backend, which wants an email); anything else is read as JSON.
    for content_type in ["application/soap+xml", "multipart/form-data; boundary=x"] {
        let reply = http(a, "POST", "/v1/users", &[("content-type", content_type)], b"<user/>").await;
        assert_eq!(reply.status, 415, "{content_type}: {}", reply.text());
        assert_eq!(reply.json()["code"], 3);
        assert!(reply.text().contains("send application/json or application/xml"), "{}", reply.text());
    }
    for content_type in ["application/xml", "text/xml; charset=utf-8"] {
        let reply = http(a, "POST", "/v1/users", &[("content-type", content_type)], b"<user/>").await;
        assert_eq!(reply.status, 400, "{content_type}: {}", reply.text());
        assert!(reply.text().contains("is not an email address"), "{}", reply.text());
    }
    let form = http(a, "POST", "/v1/users", &[("content-type", "application/x-www-form-urlencoded")], b"email=a").await;
    assert_eq!(form.status, 400, "a form body is read as JSON, and is not: {}", form.text());
    assert!(form.text().contains("malformed JSON"), "{}", form.text());

    // The backend's own validation comes back with its code.
    let taken = post_json(a, "/v1/users", r#"{"email":"ada@example.com"}"#).await;
    assert_eq!(taken.status, 409, "{}", taken.text());
    assert_eq!(taken.json()["code"], 6);

    // curl -d sends a form type; the body is JSON all the same (grpc-gateway and Envoy read it).
    let types = [&[("content-type", "application/x-www-form-urlencoded")][..], &[("content-type", "text/plain")], &[]];
    for (n, headers) in types.into_iter().enumerate() {
        let email = format!("curl{n}@example.com");
        let body = format!(r#"{{"email":"{email}"}}"#);
        let created = http(a, "POST", "/v1/users", headers, body.as_bytes()).await;
        assert_eq!(created.status, 200, "{headers:?}: {}", created.text());
        assert_eq!(created.json()["email"], email.as_str());
    }

    // After all that, everything else still works.
    assert_eq!(get(a, "/v1/users/u-1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_can_be_ignored() {
    let gw = TestGateway::builder().rest("  ignore_unknown_query_parameters: true\n").start().await;
    let reply = get(gw.address, "/v1/users?colour=red&page_size=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["users"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits_are_413_and_large_bodies_within_them_pass() {
    let gw = TestGateway::builder()
        .rest("  max_request_body_size: 33554432\n")
        .server("  max_message_size: 33554432\n")
        .start()
        .await;
    let description = "x".repeat(24 << 20);
    let body =
        format!(r#"{{"name":"Big","description":"{description}","price":{{"currencyCode":"EUR","units":"1"}}}}"#);
    let created = post_json(gw.address, "/v1/products", &body).await;
    assert_eq!(created.status, 200, "24 MiB passes under a 32 MiB limit");
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let fetched = get(gw.address, &format!("/v1/products/{id}")).await;
    assert_eq!(fetched.json()["description"].as_str().map(str::len), Some(24 << 20));

    let too_big = format!(r#"{{"name":"Huge","description":"{}"}}"#, "x".repeat(33 << 20));
    let refused = post_json(gw.address, "/v1/products", &too_big).await;
    assert_eq!(refused.status, 413);
    assert_eq!(refused.json()["code"], 8);
    assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 200, "and the next request is served");

    // Chunked, with no Content-Length to announce it: found while reading.
    use http_body_util::BodyExt;
    let chunks = (0..40)
        .map(|_| Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(vec![b' '; 1 << 20]))));
    let body = http_body_util::StreamBody::new(tokio_stream::iter(chunks)).boxed();
    let response =
        support::http_stream(gw.address, "POST", "/v1/products", &[("content-type", "application/json")], body, false)
            .await;
    assert_eq!(response.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_map_to_http_statuses() {
    let port = support::dead_port();
    let gw =
        TestGateway::builder().backend("shop.payments.v1.PaymentService", &format!("127.0.0.1:{port}")).start().await;
    let missing = get(gw.address, "/v1/users/u-404").await;
    assert_eq!((missing.status, missing.json()["code"].as_i64()), (404, Some(5)));
    assert_eq!(missing.json()["message"], r#"no user with id "u-404""#);

    let down = post_json(gw.address, "/v1/payments", r#"{"orderId":"o-1"}"#).await;
    assert_eq!((down.status, down.json()["code"].as_i64()), (503, Some(14)));
    assert!(down.text().contains("shop.payments.v1.PaymentService"), "{}", down.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_from_headers() {
    let gw = TestGateway::start().await;
    let charge = r#"{"orderId":"o-1","amount":{"currencyCode":"EUR","units":"5"},"cardToken":"tok_slow"}"#;
    let charges = gw.backends.shop.charges();
    let reply = http(
        gw.address,
        "POST",
        "/v1/payments",
        &[("content-type", "application/json"), ("x-timeout-ms", "300")],
        charge.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.json()["code"], 4);
    // At the deadline, not when the 3 s charge finished: it had not, and the backend gave it up.
    let when_answered = *charges.borrow();
    assert_eq!(when_answered.finished, 0, "the slow charge was still under way: {when_answered:?}");
    support::wait_for(charges, "the backend sees the charge cancelled", |c| c.cancelled == 1 && c.in_progress == 0)
        .await;

    let bad = http(gw.address, "GET", "/v1/users/u-1", &[("x-timeout-ms", "soon")], b"").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("x-timeout-ms"), "{}", bad.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_body_in_and_out() {
    let gw = TestGateway::start().await;
    let image = get(gw.address, "/v1/products/p-1/image").await;
    assert_eq!(image.status, 200);
    assert_eq!(image.header("content-type"), Some("image/svg+xml"));
    assert!(image.text().starts_with("<svg") && image.text().contains("The Analytical Engine"), "{}", image.text());

    let csv = "Sprocket,hobby,3,10\nFlywheel,hobby,12,4\n";
    let imported =
        http(gw.address, "POST", "/v1/products:import", &[("content-type", "text/csv")], csv.as_bytes()).await;
    assert_eq!(imported.status, 200, "{}", imported.text());
    let json = imported.json();
    let names: Vec<&str> =
        json["products"].as_array().expect("list").iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["Sprocket", "Flywheel"]);

    let bad =
        http(gw.address, "POST", "/v1/products:import", &[("content-type", "text/csv")], b"just one field\n").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_become_metadata_and_metadata_comes_back_as_headers() {
    let echo = support::start_echo().await;
    let gw = TestGateway::builder()
        .sets(vec![("users.binpb", support::demo_set(&[support::USERS]))])
        .without_demo_rules()
        .rules(&format!("  - match: shop.users.v1.UserService\n    backends: [http://{echo}]\n"))
        .rest("  response_headers_unprefixed: [x-served-by]\n  forward_headers: [authorization, connection, te]\n")
        .start()
        .await;
    let reply = http(
        gw.address,
        "GET",
        "/v1/users/u-7",
        &[
            ("grpc-metadata-x-request-id", "abc-123"),
            ("authorization", "Bearer t0k3n"),
            ("x-forwarded-for", "10.1.1.1"),
            ("grpc-metadata-x-trace-bin", "AQID"),
            // Framing headers a client must not set for the backend, by either way in: the config's
            // list and the metadata prefix. A Content-Length passed on would break the request.
            ("connection", "x-custom"),
            ("x-custom", "1"),
            ("te", "gzip"),
            ("grpc-metadata-connection", "close"),
            ("grpc-metadata-content-type", "text/evil"),
            ("grpc-metadata-content-length", "99999"),
            ("grpc-metadata-te", "gzip"),
            ("grpc-metadata-grpc-timeout", "1n"),
        ],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json()["displayName"].as_str().expect("echo").to_owned();
    assert!(seen.contains("request-id=abc-123"), "{seen}");
    assert!(seen.contains("authorization=Bearer t0k3n"), "{seen}");
    assert!(seen.contains("connection=-"), "hop-by-hop headers stay: {seen}");
    assert!(seen.contains("content-type=application/grpc "), "the gateway's content type wins: {seen}");
    assert!(seen.contains("te=trailers"), "{seen}");
    assert!(seen.contains("grpc-timeout=-"), "no grpc- metadata from a client's prefixed header: {seen}");
    assert!(seen.contains("x-forwarded-for=10.1.1.1, 127.0.0.1"), "{seen}");

    // A -bin value is base64 or the request is refused, naming it.
    let bad = http(gw.address, "GET", "/v1/users/u-7", &[("grpc-metadata-x-trace-bin", "not base64!")], b"").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("x-trace-bin"), "{}", bad.text());
    assert_eq!(reply.header("x-served-by"), Some("echo"), "allow-listed metadata comes back bare");
    assert_eq!(reply.header("grpc-metadata-x-echo"), Some("yes"), "other metadata is prefixed");

    let failed = get(gw.address, "/v1/users/fail").await;
    assert_eq!(failed.status, 409, "ABORTED: {}", failed.text());
    assert_eq!(failed.json()["message"], "echo refuses");
    assert_eq!(failed.header("grpc-trailer-x-error-detail"), Some("in the trailers"), "errors keep their metadata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_and_cors_preflight_are_answered_for_every_route() {
    let gw = TestGateway::builder().rest("  cors:\n    allow_origins: [\"https://shop.example\"]\n").start().await;
    let preflight = http(
        gw.address,
        "OPTIONS",
        "/v1/orders/o-1",
        &[
            ("origin", "https://shop.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "content-type, x-timeout-ms, x-evil"),
        ],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("https://shop.example"));
    assert_eq!(preflight.header("access-control-allow-methods"), Some("GET, OPTIONS"));
    assert_eq!(preflight.header("access-control-allow-headers"), Some("content-type, x-timeout-ms"));

    let actual = http(gw.address, "GET", "/v1/users/u-1", &[("origin", "https://shop.example")], b"").await;
    assert_eq!(actual.header("access-control-allow-origin"), Some("https://shop.example"));
    let foreign = http(gw.address, "GET", "/v1/users/u-1", &[("origin", "https://evil.example")], b"").await;
    assert_eq!(foreign.header("access-control-allow-origin"), None);

    let unknown = http(gw.address, "OPTIONS", "/v9/none", &[("origin", "https://shop.example")], b"").await;
    assert_eq!(unknown.status, 404);
}
