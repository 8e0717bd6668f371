//! The `dragoman` binary: help, check, compile, and serve with a config, driven as a user would.

mod support;

use std::path::Path;
use std::process::Command;

use support::{root, stderr, stdout};

fn dragoman() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dragoman"))
}

#[test]
fn help_documents_every_subcommand() {
    let out = dragoman().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let help = stdout(&out);
    for sub in ["serve", "demo", "check", "compile"] {
        assert!(help.contains(sub), "{sub} missing from:\n{help}");
    }
    let serve = stdout(&dragoman().args(["serve", "--help"]).output().expect("runs"));
    assert!(serve.contains("--config"), "{serve}");
}

#[test]
fn checked_in_descriptors_match_proto_sources() {
    let dir = tempfile::tempdir().expect("tmp");
    let out_file = dir.path().join("shop.binpb");
    let out = dragoman()
        .current_dir(root())
        .args(["compile", "proto/shop", "-I", "proto", "-o"])
        .arg(&out_file)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let compiled = std::fs::read(&out_file).expect("written");
    let checked_in = std::fs::read(root().join("descriptors/shop.binpb")).expect("descriptors/shop.binpb exists");
    assert!(
        compiled == checked_in,
        "descriptors/shop.binpb is stale: run `cargo run -- compile proto/shop -I proto -o descriptors/shop.binpb`"
    );
    assert!(compiled == dragoman::demo::DESCRIPTOR_SET, "build.rs and `dragoman compile` agree");
}

fn write_config(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

#[test]
fn check_lists_services_methods_and_backends() {
    let dir = tempfile::tempdir().expect("tmp");
    let descriptors = root().join("descriptors");
    let config = write_config(
        dir.path(),
        &format!(
            "listen: 127.0.0.1:9999\ndescriptors: [{}]\nservices:\n  - match: shop.users.v1.UserService\n    backends: [http://127.0.0.1:50051]\n  - match: shop.orders.*\n    backends: [https://orders.internal:443]\n",
            descriptors.display()
        ),
    );
    let out = dragoman().arg("check").arg("--config").arg(&config).output().expect("runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("shop.users.v1.UserService  ->  http://127.0.0.1:50051"), "{text}");
    assert!(text.contains("shop.orders.v1.OrderService  ->  https://orders.internal:443"), "{text}");
    assert!(text.contains("LiveCart") && text.contains("bidirectional"), "{text}");
    assert!(text.contains("GET /v1/orders/{id}:watch"), "HTTP bindings listed: {text}");
    assert!(text.contains("shop.payments.v1.PaymentService  ->  (no backend"), "{text}");
}

#[test]
fn check_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().expect("tmp");
    let config =
        write_config(dir.path(), "listen: 127.0.0.1:9999\nservices:\n  - match: shop.*\n    backend: [http://x:1]\n");
    let out = dragoman().arg("check").arg("--config").arg(&config).output().expect("runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("gateway.yaml") && err.contains("backend"), "{err}");

    std::fs::write(dir.path().join("broken.binpb"), b"garbage").expect("write");
    let config = write_config(dir.path(), "descriptors: [broken.binpb]\n");
    let out = dragoman().arg("check").arg("--config").arg(&config).output().expect("runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("broken.binpb") && err.contains("not a FileDescriptorSet"), "{err}");

    let config = write_config(dir.path(), "descriptors: [nowhere/]\n");
    let out = dragoman().arg("check").arg("--config").arg(&config).output().expect("runs");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nowhere"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_a_config_and_stops_cleanly_on_sigterm() {
    let backends = dragoman::demo::Backends::start().await.expect("demo backends");
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(
        dir.path(),
        &format!(
            "listen: 127.0.0.1:0\ndescriptors: [{}]\n{}",
            root().join("descriptors").display(),
            backends.services_yaml()
        ),
    );
    let mut command = dragoman();
    command.args(["serve", "--config"]).arg(&config);
    let mut gateway = support::Running::start(command);
    let address = gateway.address.to_string();
    let out = Command::new(support::grpcurl())
        .args([
            "-plaintext",
            "-d",
            r#"{"category":"garden"}"#,
            &address,
            "shop.products.v1.ProductService/ListProducts",
        ])
        .output()
        .expect("grpcurl");
    assert!(stdout(&out).contains("Garden Difference Engine"), "{}", stderr(&out));

    let status = tokio::task::spawn_blocking(move || {
        let status = gateway.terminate();
        (status, gateway.log())
    });
    let (status, log) = status.await.expect("join");
    assert!(status.success(), "exit on SIGTERM: {status:?}");
    assert!(log.contains("dragoman listening"), "{log}");
    assert!(
        log.contains("dragoman::access")
            && log.contains("/shop.products.v1.ProductService/ListProducts")
            && log.contains("duration_ms"),
        "one access line per call: {log}"
    );
}
