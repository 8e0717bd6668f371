//! grpc-gateway's own example protos (Debian's golang-github-grpc-ecosystem-grpc-gateway-dev, its
//! `examples/proto`), compiled as a user would with `dragoman compile`, in front of grpc-gateway's
//! own example gRPC server built from the same package (the test command builds it into
//! `target/tools/grpc-gateway-example`). The whole set is served, and what grpc-gateway's users
//! rely on works: repeated path values, error details as JSON, a missed deadline as a 504, PATCH
//! that does not blank what it does not name.

mod support;

use std::process::{Child, Command, Stdio};

use serde_json::json;
use support::{TestGateway, http, stderr, stdout};

const GRPC_GATEWAY: &str = "/usr/share/gocode/src/github.com/grpc-ecosystem/grpc-gateway";

/// The example protos as one set, compiled with the gateway's own `compile`.
fn example_set(dir: &std::path::Path) -> Vec<u8> {
    let out = dir.join("examples.binpb");
    let compiled = Command::new(env!("CARGO_BIN_EXE_dragoman"))
        .arg("compile")
        .arg(format!("{GRPC_GATEWAY}/examples/proto/examplepb"))
        .args(["-I", GRPC_GATEWAY, "-I", &format!("{GRPC_GATEWAY}/third_party/googleapis"), "-o"])
        .arg(&out)
        .output()
        .expect("dragoman compile runs");
    assert!(compiled.status.success(), "{}", stderr(&compiled));
    std::fs::read(out).expect("the set was written")
}

/// grpc-gateway's example server; killed on drop.
struct ExampleServer {
    child: Child,
    address: String,
}

impl Drop for ExampleServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_example_server() -> ExampleServer {
    let binary = support::root().join("target/tools/grpc-gateway-example");
    assert!(binary.exists(), "run scripts/install-test-tools.sh (the test command does)");
    let address = format!("127.0.0.1:{}", support::dead_port());
    let child = Command::new(binary)
        .args(["-addr", &address, "-logtostderr"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example server starts");
    // It says nothing when it is ready: ready is when it accepts.
    let listening = async {
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), listening).await.expect("the example server listens");
    ExampleServer { child, address }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gateways_example_set_is_served_in_front_of_its_example_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let set = example_set(dir.path());
    let server = start_example_server().await;
    let gw = TestGateway::builder()
        .sets(vec![("examples.binpb", set)])
        .without_demo_rules()
        .rules(&format!("  - match: grpc.gateway.*\n    backends: [http://{}]\n", server.address))
        .start()
        .await;
    // The one clash of the set (two FlowCombination methods bind the same paths) is a warning;
    // GetRepeatedQuery's repeated path variables are not.
    let warnings = gw.gateway.snapshot().warnings().to_vec();
    assert!(
        warnings.iter().all(|w| w.starts_with("grpc.gateway.examples.examplepb.FlowCombination.")),
        "{warnings:#?}"
    );
    let json = [("content-type", "application/json")];

    let body = br#"{"int32Value": 7, "stringValue": "before", "floatValue": 1.5}"#;
    let created = http(gw.address, "POST", "/v1/example/a_bit_of_everything", &json, body).await;
    assert_eq!(created.status, 200, "{}", created.text());
    let created = created.json();
    let uuid = created["uuid"].as_str().expect("uuid").to_owned();

    // Repeated fields in the path, comma-separated, echoed back by GetRepeatedQuery.
    let path = "/v1/example/a_bit_of_everything_repeated/1.5,-1.5/2.5/9007199254740993,-1/2,3/-4,5/6/7/true,false/a,b/AQID,_-8/9/ONE,ZERO/-1/2/-3/4";
    let reply = http(gw.address, "GET", path, &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echoed = reply.json();
    assert_eq!(echoed["pathRepeatedFloatValue"], json!([1.5, -1.5]));
    assert_eq!(echoed["pathRepeatedInt64Value"], json!(["9007199254740993", "-1"]));
    assert_eq!(echoed["pathRepeatedBoolValue"], json!([true, false]));
    assert_eq!(echoed["pathRepeatedStringValue"], json!(["a", "b"]));
    assert_eq!(echoed["pathRepeatedBytesValue"], json!(["AQID", "/+8="]));
    assert_eq!(echoed["pathRepeatedEnumValue"], json!(["ONE", "ZERO"]));

    // ErrorWithDetails: UNKNOWN with a google.rpc.DebugInfo, written as JSON.
    let reply = http(gw.address, "GET", "/v2/example/errorwithdetails", &[], b"").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    let detail = &reply.json()["details"][0];
    assert_eq!(detail["@type"], "type.googleapis.com/google.rpc.DebugInfo", "{detail}");
    assert_eq!((&detail["stackEntries"], &detail["detail"]), (&json!(["foo:1"]), &json!("error debug details")));

    // Timeout waits for its context and returns the context's error: a 504, every time.
    for _ in 0..15 {
        let reply = http(gw.address, "GET", "/v2/example/timeout", &[("grpc-timeout", "10m")], b"").await;
        assert_eq!(reply.status, 504, "{}", reply.text());
    }

    // UpdateV2 by PATCH without a mask: the gateway sends one naming the body's keys, so the
    // server applies that and blanks nothing else. (This 1.6.4 server resolves mask paths as Go
    // field names, where the FieldMask standard, grpc-gateway v2 and Dragoman use proto names:
    // it finds no field to change, which shows the mask arrived: without one it would have
    // replaced the whole message.)
    let patch = http(
        gw.address,
        "PATCH",
        &format!("/v2/example/a_bit_of_everything/{uuid}"),
        &json,
        br#"{"stringValue": "after"}"#,
    )
    .await;
    assert_eq!(patch.status, 200, "{}", patch.text());
    let after = http(gw.address, "GET", &format!("/v1/example/a_bit_of_everything/{uuid}"), &[], b"").await.json();
    assert_eq!(after["int32Value"], 7, "not blanked: {after}");
    assert_eq!(after["floatValue"], 1.5, "not blanked: {after}");

    // And grpcurl sees the whole set through reflection.
    let list = gw.grpcurl(&["list"]);
    for service in
        ["grpc.gateway.examples.examplepb.ABitOfEverythingService", "grpc.gateway.examples.examplepb.EchoService"]
    {
        assert!(stdout(&list).contains(service), "{service}: {}", stdout(&list));
    }
}
