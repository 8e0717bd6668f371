//! The OpenAPI 3.1 documents: valid (openapi-spec-validator from PyPI, installed by the test
//! command), in step with the routes the gateway really serves, and rebuilt on reload.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{ORDERS, TestGateway, USERS, get, http};

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
    assert_eq!(doc["components"]["schemas"]["shop.users.v1.User"]["properties"]["createTime"]["format"], "date-time");
    assert!(
        doc["paths"]["/v1/orders/{id}:watch"]["get"]["responses"]["200"]["content"]["application/x-ndjson"].is_object()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_a_real_route() {
    let gw = TestGateway::start().await;
    let doc = get(gw.address, "/openapi.json").await.json();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "every demo route: {}", paths.len());
    for (path, item) in paths {
        // {variable} → a sample value.
        let concrete: String = path
            .split('{')
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part.to_owned()
                } else {
                    format!("x1{}", part.split_once('}').map_or("", |(_, rest)| rest))
                }
            })
            .collect();
        let allowed = http(gw.address, "OPTIONS", &concrete, &[], b"").await;
        assert_eq!(allowed.status, 204, "{path} → {concrete}: {}", allowed.text());
        let allow = allowed.header("allow").unwrap_or_default().to_owned();
        for method in item.as_object().expect("operations").keys() {
            assert!(allow.contains(&method.to_ascii_uppercase()), "{path}: {method} not in Allow: {allow}");
        }
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
