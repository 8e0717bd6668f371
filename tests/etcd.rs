//! A real API set behind the gateway, as a new user would bring it: etcd 3.4's own `rpc.proto`
//! compiled with protoc (`--include_imports`), in front of a real etcd server. Its rules clash
//! (`Hash` and `HashKV` share `POST /v3/maintenance/hash`): the set loads all the same, with a
//! warning, and REST, NDJSON streams and grpcurl all reach etcd. The test command installs etcd,
//! its protos and protoc (scripts/install-test-tools.sh).

mod support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use support::{TestGateway, http, stderr, stdout};

const GOCODE: &str = "/usr/share/gocode/src";

/// etcd's rpc.proto as a set, compiled as etcd's own build does.
fn etcd_set(dir: &std::path::Path) -> Vec<u8> {
    let out = dir.join("etcd.binpb");
    let includes = [
        format!("{GOCODE}/go.etcd.io"),
        format!("{GOCODE}/github.com/gogo/protobuf"),
        format!("{GOCODE}/github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis"),
        "/usr/include".to_owned(),
    ];
    let mut protoc = Command::new("protoc");
    for include in &includes {
        protoc.arg("-I").arg(include);
    }
    let result = protoc
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg(format!("{GOCODE}/go.etcd.io/etcd/etcdserver/etcdserverpb/rpc.proto"))
        .output()
        .expect("protoc runs (the test command installs protobuf-compiler)");
    assert!(result.status.success(), "protoc: {}", stderr(&result));
    std::fs::read(out).expect("the set was written")
}

/// A running etcd; killed on drop.
struct Etcd {
    child: Child,
    client: String,
    _data: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts etcd on free loopback ports and waits for its "ready to serve client requests" log.
fn start_etcd() -> Etcd {
    let data = tempfile::tempdir().expect("tmp");
    let client = format!("127.0.0.1:{}", support::dead_port());
    let peer = format!("http://127.0.0.1:{}", support::dead_port());
    let mut child = Command::new("etcd")
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--listen-client-urls",
            &format!("http://{client}"),
            "--advertise-client-urls",
            &format!("http://{client}"),
        ])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("default={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcd starts (the test command installs etcd-server)");
    let stderr = child.stderr.take().expect("stderr");
    let (ready, waiting) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ready to serve client requests") {
                let _ = ready.send(());
            }
        }
    });
    waiting.recv_timeout(Duration::from_secs(30)).expect("etcd is ready within 30 s");
    Etcd { child, client, _data: data }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_own_descriptor_set_serves_in_front_of_etcd() {
    let dir = tempfile::tempdir().expect("tmp");
    let set = etcd_set(dir.path());
    let etcd = start_etcd();
    let gw = TestGateway::builder()
        .sets(vec![("etcd.binpb", set)])
        .without_demo_rules()
        .rules(&format!("  - match: etcdserverpb.*\n    backends: [http://{}]\n", etcd.client))
        .start()
        .await;
    let warnings = gw.gateway.snapshot().warnings().to_vec();
    // The warning is about the loser: HashKV, declared after Hash.
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("etcdserverpb.Maintenance.HashKV:") && w.contains("/v3/maintenance/hash")),
        "the clash is a warning: {warnings:#?}"
    );

    // REST, as curl -d sends it (a form content type): put, then range.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let put = format!(r#"{{"key":"{}","value":"{}"}}"#, b64("greeting"), b64("hello"));
    let reply = http(gw.address, "POST", "/v3/kv/put", &form, put.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let range = format!(r#"{{"key":"{}"}}"#, b64("greeting"));
    let reply = http(gw.address, "POST", "/v3/kv/range", &form, range.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["kvs"][0]["value"], b64("hello"), "{}", reply.text());

    // The first of the clashing rules serves the path; the other method is at its gRPC path.
    let hash = http(gw.address, "POST", "/v3/maintenance/hash", &form, b"{}").await;
    assert_eq!(hash.status, 200, "{}", hash.text());
    // HashKV's answer has a hash too; only its own has compactRevision.
    assert!(hash.json()["hash"].is_number(), "Hash answered: {}", hash.text());
    assert!(hash.json().get("compactRevision").is_none(), "Hash, not HashKV, answered: {}", hash.text());
    let hash_kv = http(gw.address, "POST", "/etcdserverpb.Maintenance/HashKV", &form, b"{}").await;
    assert_eq!(hash_kv.status, 200, "{}", hash_kv.text());
    assert!(hash_kv.json()["compactRevision"].is_string(), "HashKV answered: {}", hash_kv.text());

    // Watch is bidirectional: one NDJSON line in, the watch's creation comes back.
    let create = format!("{{\"createRequest\":{{\"key\":\"{}\"}}}}\n", b64("greeting"));
    let body = http_body_util::BodyExt::boxed(http_body_util::Full::new(bytes::Bytes::from(create)));
    let response =
        support::http_stream(gw.address, "POST", "/v3/watch", &[("content-type", "application/x-ndjson")], body, true)
            .await;
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();
    let first = support::next_chunk(&mut stream).await.expect("a first event");
    assert!(first.contains("\"created\":true"), "{first}");

    // grpcurl, through reflection.
    let out = gw.grpcurl(&["-d", &range, "etcdserverpb.KV/Range"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&b64("hello")), "{}", stdout(&out));
}
