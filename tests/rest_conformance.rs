//! Conformance tables for REST transcoding, end to end: a `.proto` dropped in as source
//! (tests/proto/conformance.proto, the examples of google/api/http.proto and a message with every
//! kind of field), a mirror backend that answers with the request it got, and the gateway
//! between. What comes back is exactly what the gateway bound.

mod support;

use serde_json::{Value, json};
use support::{TestGateway, http};

async fn gateway() -> TestGateway {
    gateway_with("").await
}

/// The conformance service behind the mirror, with these `rest:` settings.
async fn gateway_with(rest: &str) -> TestGateway {
    support::mirrored("conformance", rest).await
}

/// Each case: HTTP method, path and query, JSON body, and the request message the backend gets.
const ROUTING: &[(&str, &str, &str, &str)] = &[
    // http.proto: "GET /v1/messages/123456" -> GetMessage(name: "messages/123456")
    ("GET", "/v1/messages/123456", "", r#"{"name":"messages/123456"}"#),
    // Sub-fields in the query: GET /v1/messages/123456?revision=2&sub.subfield=foo
    (
        "GET",
        "/v1/messages/123456?sub.subfield=foo&sub.tags=a&sub.tags=b",
        "",
        r#"{"name":"messages/123456","sub":{"subfield":"foo","tags":["a","b"]}}"#,
    ),
    // Two variables.
    ("GET", "/v1/users/alice/messages/123456", "", r#"{"messageId":"123456","userId":"alice"}"#),
    // A literal beats a variable, whatever the declaration order.
    ("GET", "/v1/users/me/messages/7", "", r#"{"messageId":"7"}"#),
    // additional_bindings, with a verb.
    ("GET", "/v1/messages/123456:byUser?user_id=bob", "", r#"{"messageId":"123456","userId":"bob"}"#),
    // body: "sub" — the body is that field; the rest from path and query.
    (
        "PATCH",
        "/v1/messages/123456?text=hi",
        r#"{"subfield":"s"}"#,
        r#"{"messageId":"123456","sub":{"subfield":"s"},"text":"hi"}"#,
    ),
    // body: "*" — the path wins over the body by default.
    ("PUT", "/v1/messages/123456", r#"{"messageId":"999","text":"hi"}"#, r#"{"messageId":"123456","text":"hi"}"#),
    // A nested field path with a multi-segment pattern.
    ("GET", "/v1/shelves/1/books/2", "", r#"{"book":{"name":"shelves/1/books/2"}}"#),
    // ** takes the rest of the path; %2F stays encoded in a multi-segment variable.
    ("GET", "/v1/files/a/b%2Fc/d.txt", "", r#"{"name":"files/a/b%2Fc/d.txt"}"#),
    // A single-segment variable decodes everything; {name=messages/*} covers two segments.
    ("GET", "/v1/users/a%2Fb%20c/messages/7", "", r#"{"messageId":"7","userId":"a/b c"}"#),
    ("GET", "/v1/messages/a%2Fb", "", r#"{"name":"messages/a%2Fb"}"#),
    // A custom verb.
    ("SEARCH", "/v1/messages?text=needle", "", r#"{"text":"needle"}"#),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rule_routing_table() {
    let gw = gateway().await;
    for (method, path, body, expected) in ROUTING {
        let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[("content-type", "application/json")] };
        let reply = http(gw.address, method, path, headers, body.as_bytes()).await;
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
        let expected: Value = serde_json::from_str(expected).expect("expected JSON");
        assert_eq!(reply.json(), expected, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_body_sends_one_field() {
    let gw = gateway().await;
    let reply = http(
        gw.address,
        "POST",
        "/v1/messages:echo",
        &[("content-type", "application/json")],
        br#"{"text":"just this"}"#,
    )
    .await;
    assert_eq!(reply.text(), r#""just this""#);
}

/// Query strings and what they bind on `Kinds`.
const QUERY: &[(&str, &str)] = &[
    (
        "i32=-5&i64=9007199254740993&u64=18446744073709551615",
        r#"{"i32":-5,"i64":"9007199254740993","u64":"18446744073709551615"}"#,
    ),
    ("flag=true&ratio=0.25&f=1.5", r#"{"flag":true,"ratio":0.25,"f":1.5}"#),
    ("data=aGk%3D", r#"{"data":"aGk="}"#),
    ("data=-_8", r#"{"data":"+/8="}"#),
    ("colour=GREEN", r#"{"colour":"GREEN"}"#),
    ("colour=1", r#"{"colour":"RED"}"#),
    ("ids=1&ids=2&ids=3", r#"{"ids":["1","2","3"]}"#),
    ("colours=RED&colours=2", r#"{"colours":["RED","GREEN"]}"#),
    ("nested.a=x&nested.inner.c=7", r#"{"nested":{"a":"x","inner":{"c":7}}}"#),
    ("at=2026-11-23T10:00:00.5Z", r#"{"at":"2026-11-23T10:00:00.500Z"}"#),
    ("wait=1.5s", r#"{"wait":"1.500s"}"#),
    ("mask=name,nested.inner", r#"{"mask":"name,nested.inner"}"#),
    ("big=9007199254740993&maybe=false&label=hi", r#"{"big":"9007199254740993","maybe":false,"label":"hi"}"#),
    ("customName=x", r#"{"customName":"x"}"#),
    ("json_named=y", r#"{"customName":"y"}"#),
    ("s64=-3&f32=4&dbl=2.5&raw=AQI%3D", r#"{"s64":"-3","f32":4,"dbl":2.5,"raw":"AQI="}"#),
    ("label=a%2Bb+c", r#"{"label":"a+b+c"}"#),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_binding_table() {
    let gw = gateway().await;
    for (query, expected) in QUERY {
        let reply = http(gw.address, "GET", &format!("/v1/kinds?{query}"), &[], b"").await;
        assert_eq!(reply.status, 200, "?{query}: {}", reply.text());
        let expected: Value = serde_json::from_str(expected).expect("expected JSON");
        assert_eq!(reply.json(), expected, "?{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_binding_errors_name_the_parameter() {
    let gw = gateway().await;
    let cases = [
        ("i32=2147483648", "i32"),
        ("i64=1.5", "i64"),
        ("flag=yes", "flag"),
        ("colour=PURPLE", "colour"),
        ("at=yesterday", "at"),
        ("nested.b=1", "nested.b"),
        ("nested=1", "nested"),
        ("meta=x", "meta"),
        ("counts=1", "counts"),
        ("nope=1", "nope"),
    ];
    for (query, names) in cases {
        let reply = http(gw.address, "GET", &format!("/v1/kinds?{query}"), &[], b"").await;
        assert_eq!(reply.status, 400, "?{query}: {}", reply.text());
        let message = reply.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(names), "?{query}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_well_known_type_round_trips_as_json() {
    let gw = gateway().await;
    let body = json!({
        "i64": "-9007199254740993",
        "u64": "18446744073709551615",
        "data": "AAEC/w==",
        "colour": "GREEN",
        "at": "1972-01-01T10:00:20.021Z",
        "wait": "-0.000000001s",
        "mask": "a,b.cD",
        "big": "123",
        "maybe": true,
        "label": "",
        "ratio": "NaN",
        "f": "-Infinity",
        "meta": {"k": [1.5, "two", null, {"x": false}]},
        "anyValue": 3.5,
        "list": [2.5, "a"],
        "payload": {"@type": "type.googleapis.com/conformance.v1.Book", "name": "b", "title": "T"},
        "nothing": {},
        "customName": "c",
        "counts": {"a": 1, "b": 2},
        "dbl": 0.5,
        "raw": "AQ=="
    });
    let reply =
        http(gw.address, "POST", "/v1/kinds", &[("content-type", "application/json")], body.to_string().as_bytes())
            .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), body);

    // Wrapper and well-known payloads inside Any, too.
    let wrapped = json!({"payload": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "2s"}});
    let reply =
        http(gw.address, "POST", "/v1/kinds", &[("content-type", "application/json")], wrapped.to_string().as_bytes())
            .await;
    assert_eq!(reply.json(), wrapped, "{}", reply.text());

    let unknown = json!({"payload": {"@type": "type.googleapis.com/nowhere.Thing"}});
    let reply =
        http(gw.address, "POST", "/v1/kinds", &[("content-type", "application/json")], unknown.to_string().as_bytes())
            .await;
    assert_eq!(reply.status, 400, "an Any of a type the catalog lacks: {}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_options_change_the_output() {
    let gw = gateway_with("  print_options:\n    always_print_primitive_fields: true\n    always_print_enums_as_ints: true\n    preserve_proto_field_names: true\n    add_whitespace: true\n").await;
    let reply = http(gw.address, "GET", "/v1/kinds?colour=GREEN&json_named=x", &[], b"").await;
    let text = reply.text();
    assert!(text.contains("\n  \""), "indented: {text}");
    let json = reply.json();
    assert_eq!(json["colour"], 2);
    assert_eq!(json["json_named"], "x");
    assert_eq!(json["i32"], 0, "defaults printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_body_conflict_can_be_rejected() {
    let gw = gateway_with("  path_body_conflict: reject\n").await;
    let reply =
        http(gw.address, "PUT", "/v1/messages/1", &[("content-type", "application/json")], br#"{"messageId":"2"}"#)
            .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("message_id"), "{}", reply.text());
    let same =
        http(gw.address, "PUT", "/v1/messages/1", &[("content-type", "application/json")], br#"{"messageId":"1"}"#)
            .await;
    assert_eq!(same.status, 200, "agreeing values are fine: {}", same.text());
    // Agreement is by value, whatever the field's type.
    let number = http(gw.address, "PUT", "/v1/kinds/5", &[("content-type", "application/json")], br#"{"i32":5}"#).await;
    assert_eq!(number.status, 200, "5 in the path is 5 in the body: {}", number.text());
    let other = http(gw.address, "PUT", "/v1/kinds/5", &[("content-type", "application/json")], br#"{"i32":6}"#).await;
    assert_eq!(other.status, 400, "{}", other.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_are_http_trailers_only_when_asked_for() {
    use http_body_util::BodyExt;
    let gw = gateway().await;
    let plain = http(gw.address, "GET", "/v1/messages/1", &[], b"").await;
    assert_eq!(
        plain.header("grpc-trailer-x-mirror-trailer"),
        Some("done"),
        "as a header when trailers were not asked for"
    );

    let response =
        support::http_stream(gw.address, "GET", "/v1/messages/1", &[("te", "trailers")], support::no_body(), true)
            .await;
    assert_eq!(response.headers().get("grpc-trailer-x-mirror-trailer"), None);
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    assert_eq!(trailers.get("grpc-trailer-x-mirror-trailer").and_then(|v| v.to_str().ok()), Some("done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_empty_messages_is_still_a_stream() {
    // An all-default message encodes to zero bytes; it is a message all the same.
    let gw = gateway().await;
    let empty = http(gw.address, "GET", "/v1/messages:watch", &[], b"").await;
    assert_eq!((empty.status, empty.text().as_str()), (200, "{\"result\":{}}\n"));
    let one = http(gw.address, "GET", "/v1/messages:watch?text=hi", &[], b"").await;
    assert_eq!(one.text(), "{\"result\":{\"text\":\"hi\"}}\n");
}

/// The conformance descriptors, compiled as the gateway compiles them.
fn conformance_pool() -> prost_reflect::DescriptorPool {
    let root = support::root();
    let set = dragoman::catalog::compile_set(
        &[root.join("tests/proto/conformance.proto")],
        &[root.join("tests/proto"), root.join("proto")],
    )
    .expect("compiles");
    prost_reflect::DescriptorPool::decode(set.as_slice()).expect("pool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_without_a_json_form_are_errors_not_truncated_json() {
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, Value as V};
    let pool = conformance_pool();
    let kinds = pool.get_message_by_name("conformance.v1.Kinds").expect("Kinds");
    let with = |field: &str, value: DynamicMessage| {
        let mut message = DynamicMessage::new(kinds.clone());
        message.set_field_by_name("i32", V::I32(7));
        message.set_field_by_name(field, V::Message(value));
        message.encode_to_vec()
    };
    let wkt = |name: &str, fields: &[(&str, V)]| {
        let mut message = DynamicMessage::new(pool.get_message_by_name(name).expect("well-known type"));
        for (field, value) in fields {
            message.set_field_by_name(field, value.clone());
        }
        message
    };
    let cases = [
        // Year 10000: past the RFC 3339 range the JSON mapping allows.
        with("at", wkt("google.protobuf.Timestamp", &[("seconds", V::I64(253_402_300_800))])),
        with("wait", wkt("google.protobuf.Duration", &[("seconds", V::I64(400_000_000_000))])),
        with("any_value", wkt("google.protobuf.Value", &[("number_value", V::F64(f64::NAN))])),
        with(
            "payload",
            wkt(
                "google.protobuf.Any",
                &[
                    ("type_url", V::String("type.googleapis.com/not.in.the.Catalog".into())),
                    ("value", V::Bytes(bytes::Bytes::from_static(b"\x08\x01"))),
                ],
            ),
        ),
        // Anys in Anys, 3000 deep (135 KB): each opened afresh when written, they overflowed the
        // stack and aborted the process.
        with("payload", {
            let mut any =
                prost_types::Any { type_url: "type.googleapis.com/google.protobuf.Empty".into(), value: vec![] };
            for _ in 0..3000 {
                let value = any.encode_to_vec();
                any = prost_types::Any { type_url: "type.googleapis.com/google.protobuf.Any".into(), value };
            }
            wkt(
                "google.protobuf.Any",
                &[("type_url", V::String(any.type_url.clone())), ("value", V::Bytes(any.value.into()))],
            )
        }),
    ];
    for reply in cases {
        let backend = support::start_answering(vec![reply.clone()]).await;
        let gw = TestGateway::builder()
            .sets(vec![(
                "conformance.proto",
                std::fs::read(support::root().join("tests/proto/conformance.proto")).expect("proto"),
            )])
            .include_repo_protos()
            .without_demo_rules()
            .rules(&format!("  - match: conformance.*\n    backends: [http://{backend}]\n"))
            .start()
            .await;
        let unary = http(gw.address, "GET", "/v1/kinds", &[], b"").await;
        assert_eq!(unary.status, 500, "{}", unary.text());
        let json = unary.json();
        assert_eq!(json["code"], 13, "{json}");
        assert!(json["message"].as_str().is_some_and(|m| m.contains("cannot be written as JSON")), "{json}");
        // In a stream, the messages before it stand and the error ends the stream.
        let stream = http(gw.address, "GET", "/v1/kinds:watch", &[], b"").await;
        assert_eq!(stream.status, 200);
        let lines: Vec<Value> =
            stream.text().lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
        assert_eq!(lines.len(), 1, "{}", stream.text());
        assert_eq!(lines[0]["error"]["code"], 13, "{}", stream.text());
        // The gateway keeps serving.
        let fine = http(gw.address, "GET", "/openapi.json", &[], b"").await;
        assert_eq!(fine.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_keys_are_bounded_in_depth_and_number() {
    let gw = gateway().await;
    let at_depth = |depth: usize| format!("/v1/tree?{}name=x", "child.".repeat(depth - 1));
    // 32 names deep is fine (the mirror echoes the tree back)...
    let ok = http(gw.address, "GET", &at_depth(32), &[], b"").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.text().matches("child").count(), 31);
    // ...deeper is refused before any message is built: a recursive type nested thousands deep
    // overflowed the worker's stack.
    for depth in [33, 5000] {
        let deep = http(gw.address, "GET", &at_depth(depth), &[], b"").await;
        assert_eq!(deep.status, 400, "{depth}: {}", deep.text());
        assert!(deep.text().contains("more than 32 deep"), "{}", deep.text());
    }
    let many = format!("/v1/messages:watch?{}", vec!["text=a"; 1001].join("&"));
    let reply = http(gw.address, "GET", &many, &[], b"").await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("more than 1000 parameters"), "{}", reply.text());
    // The gateway kept serving.
    assert_eq!(http(gw.address, "GET", "/v1/messages/1", &[], b"").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_no_json_form_is_a_500_that_says_why() {
    let gw = gateway().await;
    // An Any naming no loaded message (set through the query here; a backend can send one too)
    // has no JSON form: the reply says so instead of breaking off.
    let reply = http(gw.address, "GET", "/v1/kinds?payload.type_url=example.com/no.Such", &[], b"").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.text().contains("no JSON form"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_lines_big_and_too_big() {
    let gw = gateway_with("  max_request_body_size: 300000\n").await;
    let ndjson = [("content-type", "application/x-ndjson")];
    // A line past the offload threshold (64 KiB) is parsed off the worker, in its turn.
    let big = "x".repeat(200_000);
    let body = format!("{{\"name\":\"a\"}}\n{{\"name\":\"{big}\"}}\n{{\"name\":\"c\"}}\n");
    let reply = http(gw.address, "POST", "/v1/messages:chat", &ndjson, body.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", &reply.text()[..reply.text().len().min(300)]);
    let names: Vec<String> = reply
        .text()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("JSON line")["result"]["name"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!((names[0].as_str(), names[1].len(), names[2].as_str()), ("a", 200_000, "c"));
    // A line longer than max_request_body_size is refused, naming the limit.
    let huge = format!("{{\"name\":\"{}\"}}\n", "x".repeat(400_000));
    let reply = http(gw.address, "POST", "/v1/messages:chat", &ndjson, huge.as_bytes()).await;
    let text = reply.text();
    assert_eq!(reply.status, 429, "RESOURCE_EXHAUSTED: {}", &text[..text.len().min(300)]);
    assert!(text.contains("longer than 300000 bytes"), "{}", &text[..text.len().min(300)]);
}
