//! Schemathesis (PyPI, installed by the test command into target/tools/schemathesis) against the
//! gateway, driven by the gateway's own `/openapi.json`: no 5xx, responses as documented, what
//! the document allows is accepted and what it forbids is refused. A failure here is a place
//! where the document and the gateway disagree.
//!
//! Two targets. The demo shop, whose backends have business rules of their own (a required
//! field, a known id): the hooks (tests/support/schemathesis_hooks.py) exempt exactly those
//! refusals from `positive_data_acceptance`, and a backend's refusal of data the gateway should
//! have refused still hides that mismatch. And the conformance service behind the mirror backend,
//! which answers every call with its request: nothing there refuses but the gateway, over a
//! message with every scalar kind, enums, maps and the well-known types.

mod support;

use std::path::PathBuf;

use support::TestGateway;

/// The checks that say whether the document tells the truth about the gateway.
const CHECKS: &str = "not_a_server_error,status_code_conformance,response_schema_conformance,negative_data_rejection";

/// Runs schemathesis against `gateway`'s document; fails the test with its report when it finds
/// anything. The seed is fixed so that a run is repeatable; `SCHEMATHESIS_SEED` picks another.
async fn run(gateway: &TestGateway, positive_check: &str, max_examples: u32, extra: &[&str]) {
    let binary = support::root().join("target/tools/schemathesis/bin/schemathesis");
    assert!(binary.exists(), "schemathesis missing: run scripts/install-test-tools.sh (the test command does)");
    let hooks: PathBuf = support::root().join("tests/support/schemathesis_hooks.py");
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261126".to_owned());
    // Its own folder for what schemathesis and Hypothesis leave behind.
    let scratch = tempfile::tempdir().expect("temp dir");
    let url = format!("{}/openapi.json", gateway.url());
    let mut args = vec![
        "run".to_owned(),
        url,
        format!("--checks={CHECKS},{positive_check}"),
        format!("--max-examples={max_examples}"),
        format!("--seed={seed}"),
        "--workers=1".to_owned(),
        "--request-timeout=10".to_owned(),
        "--generation-database=none".to_owned(),
        "--no-color".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let out = tokio::process::Command::new(&binary)
        .args(&args)
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .current_dir(scratch.path())
        .output()
        .await
        .expect("schemathesis runs");
    let stdout = support::stdout(&out);
    let summary = stdout.find("= SUMMARY =").map_or(stdout.as_str(), |i| &stdout[i..]);
    println!("schemathesis {}\n{summary}", args.join(" "));
    assert!(out.status.success(), "schemathesis found a disagreement:\n{stdout}{}", support::stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shop_is_as_documented() {
    let gw = TestGateway::start().await;
    run(&gw, "positive_data_acceptance_but_business_rules", 25, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_field_is_as_documented() {
    let mirror = support::start_mirror().await;
    let proto = std::fs::read(support::root().join("tests/proto/conformance.proto")).expect("test proto");
    let gw = TestGateway::builder()
        .without_demo_rules()
        .sets(vec![("conformance.proto", proto)])
        .include_repo_protos()
        .rules(&format!("  - match: conformance.*\n    backends: [http://{mirror}]\n"))
        .start()
        .await;
    let exclude = [
        // The variables covering several segments (`{name=messages/*}`): a path parameter holds
        // no `/` for an OpenAPI client (the document's Limitations), so no value fits.
        "--exclude-path-regex=^/v1/\\{(name|book_name)\\}$",
        // PUT /v1/kinds/{i32} reads the same body; the coverage phase spends a minute on each.
        "--exclude-operation-id=Messaging_PostKinds",
        // No stateful phase: the mirror keeps nothing between calls.
        "--phases=coverage,fuzzing",
    ];
    run(&gw, "positive_data_acceptance", 25, &exclude).await;
}
