//! The OpenAPI 3.1 documents: valid (openapi-spec-validator from PyPI, installed by the test
//! command), every operation in them really served, strict about what bodies may hold, and
//! rebuilt on reload. Schemathesis checks the rest against the gateway (tests/schemathesis.rs).

mod support;

use std::process::Command;

use serde_json::Value;
use support::{ORDERS, TestGateway, USERS, get, http, post_json};

/// Runs openapi-spec-validator on a document.
fn validate(document: &[u8]) {
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), document).expect("write");
    let tools = support::root().join("target/tools/py");
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .env("PYTHONPATH", &tools)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "invalid OpenAPI:\n{}{}", support::stdout(&out), support::stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_validate() {
    let gw = TestGateway::start().await;
    let all = get(gw.address, "/openapi.json").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.header("content-type"), Some("application/json"));
    validate(&all.body);
    let one = get(gw.address, "/openapi/shop.orders.v1.OrderService.json").await;
    assert_eq!(one.status, 200);
    validate(&one.body);
    let paths: Vec<String> = one.json()["paths"].as_object().expect("paths").keys().cloned().collect();
    assert!(paths.iter().all(|p| p.starts_with("/v1/orders") || p.starts_with("/v1/cart")), "{paths:?}");

    let doc = all.json();
    let get_user = &doc["paths"]["/v1/users/{id}"]["get"];
    assert_eq!(
        get_user["description"], "Looks a customer up by id. Fails with NOT_FOUND for an unknown id.",
        "comments travel"
    );
    let list = &doc["paths"]["/v1/users"]["get"]["parameters"];
    let names: Vec<&str> = list.as_array().expect("parameters").iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["page_size", "page_token"]);
    // RFC 3339 as the gateway reads it: a pattern (see schema.rs for why not `format: date-time`).
    let create_time = &doc["components"]["schemas"]["shop.users.v1.User"]["properties"]["createTime"];
    assert!(create_time["pattern"].as_str().is_some_and(|p| p.contains("02-29")), "{create_time}");
    assert!(
        doc["paths"]["/v1/orders/{id}:watch"]["get"]["responses"]["200"]["content"]["application/x-ndjson"].is_object()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_say_what_the_gateway_reads() {
    let gw = TestGateway::start().await;
    let doc = get(gw.address, "/openapi.json").await.json();
    let schemas = &doc["components"]["schemas"];
    // Unknown fields are refused, the proto names read too.
    let user = &schemas["shop.users.v1.CreateUserRequest"];
    assert_eq!(user["additionalProperties"], false, "{user}");
    assert!(user["properties"]["displayName"].is_object() && user["patternProperties"]["^display_name$"].is_object());
    let refused = post_json(gw.address, "/v1/users", r#"{"email":"a@b.c","nickname":"x"}"#).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    // int64: a number in range or a decimal string, never "" (schemathesis' first finding).
    let units = &schemas["shop.common.v1.Money"]["properties"]["units"];
    assert_eq!(units["type"], serde_json::json!(["integer", "string", "null"]), "{units}");
    assert_eq!(units["maximum"], i64::MAX);
    let pattern = units["pattern"].as_str().expect("a pattern");
    assert!(pattern.starts_with('^') && pattern.ends_with('$'), "{pattern}");
    // Raw bytes for HttpBody, lines of JSON for a client stream.
    let import = &doc["paths"]["/v1/products:import"]["post"]["requestBody"]["content"];
    assert_eq!(import["*/*"]["schema"]["format"], "binary", "{import}");
    let lines = &doc["paths"]["/v1/orders:addLineItems"]["post"]["requestBody"]["content"];
    assert!(lines["application/x-ndjson"]["schema"]["$ref"].is_string(), "{lines}");
    // A oneof takes one member: two are refused, by the schema and by the gateway.
    assert!(schemas["shop.orders.v1.CartAction"]["not"]["anyOf"].is_array());
    let two = b"{\"clear\":true,\"removeProductId\":\"p-1\"}\n";
    let refused = http(gw.address, "POST", "/v1/cart:live", &[("content-type", "application/x-ndjson")], two).await;
    assert!(refused.text().contains("multiple fields provided for oneof"), "{}", refused.text());

    // With rest.ignore_unknown_fields the document lets unknown fields through, as the gateway does.
    let lenient = TestGateway::builder().rest("  ignore_unknown_fields: true\n").start().await;
    let doc = get(lenient.address, "/openapi.json").await.json();
    validate(&serde_json::to_vec(&doc).expect("json"));
    assert!(doc["components"]["schemas"]["shop.users.v1.CreateUserRequest"].get("additionalProperties").is_none());
    let accepted = post_json(lenient.address, "/v1/users", r#"{"email":"a@b.c","nickname":"x"}"#).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed() {
    let gw = TestGateway::start().await;
    let doc = get(gw.address, "/openapi.json").await.json();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "every demo route: {}", paths.len());
    let mut called = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("operations") {
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            // {variable} → a value its schema allows.
            let mut concrete = path.clone();
            for parameter in parameters.iter().filter(|p| p["in"] == "path") {
                let name = parameter["name"].as_str().expect("name");
                let value = match sample(&parameter["schema"], &doc) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                concrete = concrete.replace(&format!("{{{name}}}"), &value);
            }
            // The first content type the document names, with a body its schema allows.
            let content = operation["requestBody"]["content"].as_object();
            let (content_type, body) = match content.and_then(|c| c.iter().next()) {
                Some((media, _)) if media == "*/*" => ("application/octet-stream".to_owned(), b"x1".to_vec()),
                Some((media, body)) => {
                    let mut text = sample(&body["schema"], &doc).to_string();
                    if media == "application/x-ndjson" {
                        text.push('\n');
                    }
                    (media.clone(), text.into_bytes())
                }
                None => (String::new(), Vec::new()),
            };
            let headers: Vec<(&str, &str)> =
                if content_type.is_empty() { Vec::new() } else { vec![("content-type", content_type.as_str())] };
            let verb = method.to_ascii_uppercase();
            let reply = http(gw.address, &verb, &concrete, &headers, &body).await;
            let message = reply.json()["message"].as_str().unwrap_or_default().to_owned();
            let what = format!("{verb} {concrete} (documented as {path}): {} {}", reply.status, reply.text());
            // The gateway's own refusals; a backend's answer (NOT_FOUND for the sample id, a
            // business rule) means the call was routed and its request accepted.
            assert!(!(reply.status == 404 && message.starts_with("no route for")), "not routed: {what}");
            assert_ne!(reply.status, 405, "{what}");
            assert_ne!(reply.status, 415, "the documented content type: {what}");
            // A request built from the document is one the gateway accepts: a 400 may only be a
            // backend's own (its business rules), never the gateway's reading of the request.
            let gateway_refusal = [
                "malformed JSON",
                "invalid JSON",
                "unknown query parameter",
                "path variable",
                "query parameter",
                "the request",
            ];
            assert!(
                !(reply.status == 400 && gateway_refusal.iter().any(|p| message.starts_with(p))),
                "the gateway refused a documented request: {what}"
            );
            called += 1;
        }
    }
    assert!(called >= 17, "{called}");
}

/// A small value `schema` allows: the first branch, enum value or type, with `$ref`s followed.
/// Every message field is optional, so an object is `{}`.
fn sample(schema: &Value, doc: &Value) -> Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let pointer = reference.trim_start_matches('#');
        return sample(doc.pointer(pointer).expect("the reference resolves"), doc);
    }
    if let Some(first) = schema["anyOf"].as_array().and_then(|a| a.first()) {
        return sample(first, doc);
    }
    if let Some(first) = schema["enum"].as_array().and_then(|a| a.first()) {
        return first.clone();
    }
    let kind = match &schema["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(types) => types.first().and_then(Value::as_str).unwrap_or_default(),
        _ => "",
    };
    match kind {
        "object" => serde_json::json!({}),
        "array" => serde_json::json!([]),
        "integer" => 1.into(),
        "number" => 1.5.into(),
        "boolean" => true.into(),
        "string" => "x1".into(),
        _ => Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_follows_reloads() {
    let gw = TestGateway::builder().sets(vec![("users.binpb", support::demo_set(&[USERS]))]).start().await;
    let before: Value = get(gw.address, "/openapi.json").await.json();
    assert!(before["paths"].get("/v1/orders").is_none());
    let generation = gw.gateway.reloads().borrow().generation;
    std::fs::write(gw.descriptors.join("orders.binpb"), support::demo_set(&[ORDERS])).expect("drop");
    gw.wait_reload(|s| s.generation > generation).await;
    let after: Value = get(gw.address, "/openapi.json").await.json();
    assert!(after["paths"]["/v1/orders"]["post"].is_object(), "{}", after["paths"]);
    assert_eq!(get(gw.address, "/v1/orders/o-1").await.status, 200, "and the route itself answers");
}
