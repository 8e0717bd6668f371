//! What users coming from grpc-gateway rely on: the standard error details written as JSON
//! objects, repeated fields in path variables, PATCH without an update mask, and a missed
//! deadline that is a 504 whoever noticed it first.

mod support;

use base64::Engine;
use prost::Message as _;
use prost_reflect::{DynamicMessage, Value as V};
use serde_json::json;
use support::{TestGateway, http};

/// googleapis' error details as the gateway builds them in (proto/google/rpc).
fn rpc_pool() -> prost_reflect::DescriptorPool {
    let root = support::root();
    let set =
        dragoman::catalog::compile_set(&[root.join("proto/google/rpc/error_details.proto")], &[root.join("proto")])
            .expect("compiles");
    prost_reflect::DescriptorPool::decode(set.as_slice()).expect("pool")
}

/// `google.rpc.Status`, as carried in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// A detail as an Any, built by field names.
fn detail(pool: &prost_reflect::DescriptorPool, name: &str, fields: &[(&str, V)]) -> prost_types::Any {
    let mut message = DynamicMessage::new(pool.get_message_by_name(name).expect("a google.rpc type"));
    for (field, value) in fields {
        message.set_field_by_name(field, value.clone());
    }
    prost_types::Any { type_url: format!("type.googleapis.com/{name}"), value: message.encode_to_vec() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_error_details_are_json_objects() {
    let pool = rpc_pool();
    let message = |name: &str, fields: &[(&str, V)]| {
        let mut m = DynamicMessage::new(pool.get_message_by_name(name).expect("type"));
        for (field, value) in fields {
            m.set_field_by_name(field, value.clone());
        }
        V::Message(m)
    };
    let s = |v: &str| V::String(v.to_owned());
    let details = vec![
        detail(&pool, "google.rpc.ErrorInfo", &[("reason", s("STOCKOUT")), ("domain", s("shop.example"))]),
        detail(
            &pool,
            "google.rpc.RetryInfo",
            &[("retry_delay", message("google.protobuf.Duration", &[("seconds", V::I64(3))]))],
        ),
        detail(
            &pool,
            "google.rpc.DebugInfo",
            &[("detail", s("at line 7")), ("stack_entries", V::List(vec![s("a"), s("b")]))],
        ),
        detail(
            &pool,
            "google.rpc.QuotaFailure",
            &[(
                "violations",
                V::List(vec![message("google.rpc.QuotaFailure.Violation", &[("subject", s("clientip:1.2.3.4"))])]),
            )],
        ),
        detail(
            &pool,
            "google.rpc.PreconditionFailure",
            &[(
                "violations",
                V::List(vec![message("google.rpc.PreconditionFailure.Violation", &[("type", s("TOS"))])]),
            )],
        ),
        detail(
            &pool,
            "google.rpc.BadRequest",
            &[(
                "field_violations",
                V::List(vec![message("google.rpc.BadRequest.FieldViolation", &[("field", s("items.quantity"))])]),
            )],
        ),
        detail(&pool, "google.rpc.RequestInfo", &[("request_id", s("r-1"))]),
        detail(&pool, "google.rpc.ResourceInfo", &[("resource_name", s("orders/o-1"))]),
        detail(
            &pool,
            "google.rpc.Help",
            &[("links", V::List(vec![message("google.rpc.Help.Link", &[("url", s("https://shop.example/help"))])]))],
        ),
        detail(&pool, "google.rpc.LocalizedMessage", &[("locale", s("fr-FR")), ("message", s("épuisé"))]),
    ];
    let status = RpcStatus { code: 9, message: "out of stock".into(), details };
    let mut headers = http::HeaderMap::new();
    headers.insert("grpc-status", http::HeaderValue::from_static("9"));
    headers.insert("grpc-message", http::HeaderValue::from_static("out%20of%20stock"));
    let bin = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec());
    headers.insert("grpc-status-details-bin", http::HeaderValue::from_str(&bin).expect("base64"));
    let backend = support::start_refusing(headers).await;
    // The demo's descriptors bring no google/rpc file of their own: the gateway's are used.
    let gw = TestGateway::builder().backend("shop.orders.v1.OrderService", &backend.to_string()).start().await;
    let reply = http(gw.address, "GET", "/v1/orders/o-1", &[], b"").await;
    assert_eq!(reply.status, 400, "FAILED_PRECONDITION: {}", reply.text());
    let body = reply.json();
    let details = body["details"].as_array().expect("details");
    assert_eq!(details.len(), 10, "{body}");
    for detail in details {
        assert!(detail.get("value").is_none(), "a JSON object, not base64: {detail}");
    }
    assert_eq!(
        details[0],
        json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "STOCKOUT", "domain": "shop.example"})
    );
    assert_eq!(details[1], json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}));
    assert_eq!(details[2]["stackEntries"], json!(["a", "b"]));
    assert_eq!(details[3]["violations"][0]["subject"], "clientip:1.2.3.4");
    assert_eq!(details[5]["fieldViolations"][0]["field"], "items.quantity");
    assert_eq!(details[9]["message"], "épuisé");
}

#[test]
fn a_set_that_brings_its_own_google_rpc_files_wins() {
    // Their copy of error_details.proto, smaller than ours: theirs is the one loaded.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("google/rpc")).expect("dir");
    std::fs::write(
        dir.path().join("google/rpc/error_details.proto"),
        "syntax = \"proto3\";\npackage google.rpc;\nmessage ErrorInfo { string reason = 1; }\n",
    )
    .expect("write");
    let yaml = format!("descriptors: [{}]\n", dir.path().display());
    let config = dragoman::config::Config::parse(&yaml, std::path::Path::new(".")).expect("config");
    let catalog =
        dragoman::catalog::Catalog::load(&config, &Default::default()).expect("no conflict with the built-in copy");
    let info = catalog.pool().get_message_by_name("google.rpc.ErrorInfo").expect("ErrorInfo");
    assert_eq!(info.fields().count(), 1, "their ErrorInfo, not ours");
    assert!(catalog.pool().get_message_by_name("google.rpc.Status").is_some(), "ours fill the rest");
}

/// A gRPC backend that waits for its deadline (the `grpc-timeout` it is given) and then fails as a
/// Go handler returning its context's error does: UNKNOWN "context deadline exceeded".
async fn start_deadline_keeper() -> std::net::SocketAddr {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                    let timeout = request.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).unwrap_or("1S");
                    let (digits, unit) = timeout.split_at(timeout.len() - 1);
                    let n: u64 = digits.parse().unwrap_or(1);
                    let wait = match unit {
                        "u" => std::time::Duration::from_micros(n),
                        "m" => std::time::Duration::from_millis(n),
                        _ => std::time::Duration::from_secs(n),
                    };
                    let _ = request.into_body().collect().await;
                    // As precise as Go's timers: tokio's round up to the next millisecond, which
                    // would let the gateway's own timer win every race.
                    #[allow(clippy::disallowed_methods, reason = "a blocking thread of its own, for precision")]
                    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(wait)).await;
                    let mut response = http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                    let headers = response.headers_mut();
                    headers.insert("content-type", http::HeaderValue::from_static("application/grpc"));
                    headers.insert("grpc-status", http::HeaderValue::from_static("2"));
                    headers.insert("grpc-message", http::HeaderValue::from_static("context%20deadline%20exceeded"));
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_deadline_is_a_504_whoever_noticed_it_first() {
    let backend = start_deadline_keeper().await;
    let gw = TestGateway::builder().backend("shop.users.v1.UserService", &backend.to_string()).start().await;
    // The backend's own failure at its deadline races the gateway's timer: it must never win.
    for _ in 0..30 {
        let reply = http(gw.address, "GET", "/v1/users/u-1", &[("grpc-timeout", "10m")], b"").await;
        assert_eq!(reply.status, 504, "{}", reply.text());
        assert_eq!(reply.json()["code"], 4);
    }
    for _ in 0..10 {
        let reply = support::raw_unary(
            gw.address,
            "/shop.users.v1.UserService/GetUser",
            &dragoman::demo::pb::shop::users::v1::GetUserRequest { id: "u-1".into() },
            &[("grpc-timeout", "10m")],
        )
        .await;
        assert_eq!(reply.status(), Some(4), "DEADLINE_EXCEEDED over gRPC too");
    }
}

/// The compat service (tests/proto/compat.proto) behind the mirror, which answers with the
/// request it got: what comes back is what the gateway bound.
async fn mirrored(rest: &str) -> TestGateway {
    support::mirrored("compat", rest).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_fields_in_path_variables_take_comma_separated_values() {
    let gw = mirrored("").await;
    // Floats, doubles, 64-bit integers beyond 2^53, booleans, strings, bytes in URL-safe base64,
    // enums by name and number, every integer encoding.
    let path = "/v1/repeated/1.5,-1.5/2.25,NaN/9007199254740993,-1/18446744073709551615,0/-7,7/1,2/3,4/true,false/a,b%20c,%E2%82%AC/_-8,AQID/42,0/RED,2/-8,8/-9,9/-10,10/-11,11";
    let reply = http(gw.address, "GET", path, &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({
            "f": [1.5, -1.5], "d": [2.25, "NaN"], "i64": ["9007199254740993", "-1"], "u64": ["18446744073709551615", "0"],
            "i32": [-7, 7], "f64": ["1", "2"], "f32": [3, 4], "b": [true, false], "s": ["a", "b c", "€"],
            "by": ["/+8=", "AQID"], "u32": [42, 0], "e": ["RED", "GREEN"], "sf32": [-8, 8], "sf64": ["-9", "9"],
            "si32": [-10, 10], "si64": ["-11", "11"]
        })
    );
    // A value that does not fit its kind is a 400 naming the field and the value.
    let bad = path.replace("/true,false/", "/true,maybe/");
    let reply = http(gw.address, "GET", &bad, &[], b"").await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("path variable b") && reply.text().contains("maybe"), "{}", reply.text());
    // The OpenAPI document says how: an array in the `simple` style.
    let doc = http(gw.address, "GET", "/openapi/compat.v1.Compat.json", &[], b"").await.json();
    let operation = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .find(|(p, _)| p.starts_with("/v1/repeated/"))
        .expect("documented")
        .1;
    let parameter = &operation["get"]["parameters"][0];
    assert_eq!(
        (parameter["style"].as_str(), parameter["schema"]["type"].as_str()),
        (Some("simple"), Some("array")),
        "{parameter}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_without_an_update_mask_gets_one_from_its_body() {
    let gw = mirrored("").await;
    let json = [("content-type", "application/json")];
    let body = br#"{"displayName": "x", "address": {"city": "Paris"}, "labels": {"a": "b"}, "tags": ["t"], "updated": "2024-01-01T00:00:00Z"}"#;
    // The mask the backend got, its paths sorted. A FieldMask's JSON form: the paths in
    // lowerCamelCase, comma-separated.
    let patched = |headers: &'static [(&'static str, &'static str)], body: &'static [u8]| async move {
        let reply = http(gw.address, "PATCH", "/v1/things/t-1", headers, body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let echoed = reply.json();
        let mut paths: Vec<String> =
            echoed["updateMask"].as_str().expect("a mask was set").split(',').map(str::to_owned).collect();
        paths.sort_unstable();
        (paths, echoed)
    };
    // Nested message fields as dotted paths; a map, a repeated field, a well-known type: the
    // whole field.
    let (paths, echoed) = patched(&[("content-type", "application/json")], body).await;
    assert_eq!(paths, ["address.city", "displayName", "labels", "tags", "updated"], "{echoed}");
    assert_eq!(echoed["thing"]["id"], "t-1");
    // The same from an XML body (the XML mapping: a map entry per element, repeated elements).
    let xml = &[("content-type", "application/xml"), ("accept", "application/json")];
    let xml_body = b"<Thing><displayName>x</displayName><address><city>Paris</city></address>\
        <labels><key>a</key><value>b</value></labels><tags>t</tags><tags>u</tags><updated>2024-01-01T00:00:00Z</updated></Thing>";
    let (paths, echoed) = patched(xml, xml_body).await;
    assert_eq!(paths, ["address.city", "displayName", "labels", "tags", "updated"], "{echoed}");

    // A mask the client sent is the client's.
    let reply = http(gw.address, "PATCH", "/v1/things/t-1?update_mask=tags", &json, body).await;
    assert_eq!(reply.json()["updateMask"], "tags");
    // Only PATCH fills it.
    let reply = http(gw.address, "PUT", "/v1/things/t-1", &json, body).await;
    assert!(reply.json().get("updateMask").is_none(), "{}", reply.text());

    // And the switch turns it off.
    let off = mirrored("  patch_update_mask_from_body: false\n").await;
    let reply = http(off.address, "PATCH", "/v1/things/t-1", &json, body).await;
    assert!(reply.json().get("updateMask").is_none(), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_mask_in_json_is_its_string_form_only() {
    let gw = support::mirrored("conformance", "").await;
    let json = [("content-type", "application/json")];
    let string = http(gw.address, "PUT", "/v1/kinds/1", &json, br#"{"mask": "displayName,address.city"}"#).await;
    assert_eq!(string.json()["mask"], "displayName,address.city", "{}", string.text());
    let object = http(gw.address, "PUT", "/v1/kinds/1", &json, br#"{"mask": {"paths": ["display_name"]}}"#).await;
    assert_eq!(object.status, 400, "{}", object.text());
    assert!(object.text().contains("mask"), "{}", object.text());
}
