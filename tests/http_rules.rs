//! HTTP rules the gateway cannot honour as written: two bindings that match the same requests,
//! an unparsable template, a body field that does not exist. Each is dropped with a warning, the
//! rest of the catalog serves, and the method stays reachable at its gRPC path.

mod support;

use std::process::Command;

use support::{TestGateway, http, post_json, stderr, stdout};

/// A service whose rules clash (`ById` declared after `ByName` on the same shape of path) or
/// cannot be used at all (`Broken`, `NoSuchBody`), behind the mirror backend.
const CLASHING: &str = r#"syntax = "proto3";
package clash.v1;
import "google/api/annotations.proto";
message M { string name = 1; string id = 2; }
service S {
  rpc ByName(M) returns (M) { option (google.api.http) = { get: "/v1/{name=things/*}" }; }
  rpc ById(M) returns (M) {
    option (google.api.http) = { get: "/v1/things/{id}" additional_bindings { get: "/v1/items/{id}" } };
  }
  rpc Broken(M) returns (M) { option (google.api.http) = { get: "/v1/{name" }; }
  rpc NoSuchBody(M) returns (M) { option (google.api.http) = { post: "/v1/things" body: "nope" }; }
}
"#;

async fn gateway() -> TestGateway {
    let mirror = support::start_mirror().await;
    TestGateway::builder()
        .sets(vec![("clash.proto", CLASHING.as_bytes().to_vec())])
        .include_repo_protos()
        .without_demo_rules()
        .rules(&format!("  - match: clash.*\n    backends: [http://{mirror}]\n"))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_of_two_clashing_rules_wins_and_the_other_stays_reachable() {
    let gw = gateway().await;
    // The mirror answers with the request: `name` set means ByName's binding served it.
    let reply = http(gw.address, "GET", "/v1/things/t-1", &[], b"").await;
    assert_eq!((reply.status, reply.json()), (200, serde_json::json!({"name": "things/t-1"})));
    // ById keeps its other binding, and its gRPC path.
    let reply = http(gw.address, "GET", "/v1/items/i-1", &[], b"").await;
    assert_eq!((reply.status, reply.json()), (200, serde_json::json!({"id": "i-1"})));
    let reply = post_json(gw.address, "/clash.v1.S/ById", r#"{"id":"i-2"}"#).await;
    assert_eq!((reply.status, reply.json()), (200, serde_json::json!({"id": "i-2"})));
    // The unusable rules cost their binding only.
    let reply = post_json(gw.address, "/clash.v1.S/Broken", r#"{"name":"b"}"#).await;
    assert_eq!((reply.status, reply.json()), (200, serde_json::json!({"name": "b"})));
    let reply = post_json(gw.address, "/v1/things", r#"{"name":"b"}"#).await;
    assert_eq!(reply.status, 404, "NoSuchBody's binding is not served: {}", reply.text());

    let warnings = gw.gateway.snapshot().warnings().to_vec();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    let clash = warnings.iter().find(|w| w.contains("/v1/things/{id}")).expect("the clash is reported");
    assert!(clash.contains("clash.v1.S.ByName") && clash.contains("clash.v1.S.ById"), "{clash}");
    assert!(clash.contains("POST /clash.v1.S/ById"), "says where the loser is reachable: {clash}");
    assert!(warnings.iter().any(|w| w.contains("clash.v1.S.Broken") && w.contains("/v1/{name")), "{warnings:#?}");
    assert!(warnings.iter().any(|w| w.contains("clash.v1.S.NoSuchBody") && w.contains("nope")), "{warnings:#?}");

    // OpenAPI documents what is served: the winner, not the dropped binding.
    let doc = http(gw.address, "GET", "/openapi.json", &[], b"").await.json();
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(paths["/v1/{name}"]["get"]["operationId"], "S_ByName", "the winner: {paths:?}");
    assert!(!paths.contains_key("/v1/things/{id}"), "the dropped binding is not documented: {paths:?}");
    assert_eq!(paths["/v1/items/{id}"]["get"]["operationId"], "S_ById", "{paths:?}");
    assert!(paths.contains_key("/clash.v1.S/Broken"), "a method without bindings is documented at its gRPC path");
}

#[test]
fn check_lists_dropped_bindings_as_warnings_and_strict_fails_on_them() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("clash.proto"), CLASHING).expect("write");
    let config = dir.path().join("gateway.yaml");
    let yaml = format!(
        "descriptors: [{}]\nproto_include: [{}]\nservices:\n  - match: clash.*\n    backends: [http://127.0.0.1:1]\n",
        dir.path().display(),
        support::root().join("proto").display()
    );
    std::fs::write(&config, yaml).expect("write");
    let run = |strict: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dragoman"));
        command.env("RUST_LOG", "off").arg("check").arg("--config").arg(&config);
        if strict {
            command.arg("--strict");
        }
        command.output().expect("runs")
    };
    let out = run(false);
    assert!(out.status.success(), "warnings alone pass: {}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("warning: ").count(), 3, "{text}");
    assert!(text.contains("clash.v1.S.ByName") && text.contains("GET /v1/{name=things/*}"), "{text}");
    let strict = run(true);
    assert!(!strict.status.success(), "--strict fails on warnings");
    assert!(stderr(&strict).contains("3 warning(s)"), "{}", stderr(&strict));
}
