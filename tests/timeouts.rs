//! `timeouts:`: per-method default and maximum deadlines, seen where they matter — at the backend
//! (`grpc-timeout`) and in the client's answer when one passes.

mod support;

use std::time::Duration;

use support::{TestGateway, get};

/// The `grpc-timeout` the echo backend was sent, in milliseconds (None when it was sent none).
fn sent_timeout(display_name: &str) -> Option<u64> {
    let value = display_name.split(' ').find_map(|kv| kv.strip_prefix("grpc-timeout="))?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => n * 3_600_000,
        "M" => n * 60_000,
        "S" => n * 1_000,
        "m" => n,
        "u" => n / 1_000,
        "n" => n / 1_000_000,
        _ => return None,
    })
}

async fn echo_gateway(timeouts: &str) -> TestGateway {
    let echo = support::start_echo().await;
    TestGateway::builder().backend("shop.users.v1.UserService", &echo.to_string()).config(timeouts).start().await
}

#[tokio::test]
async fn a_methods_default_and_maximum_reach_the_backend() {
    let gw = echo_gateway(
        "timeouts:
  - {match: shop.users.v1.UserService/GetUser, default: 3s, max: 10s}
  - {match: 'shop.*', max: 20s}
",
    )
    .await;
    let seen = |reply: support::HttpReply| {
        assert_eq!(reply.status, 200, "{}", reply.text());
        sent_timeout(reply.json()["displayName"].as_str().unwrap_or_default())
    };
    // No deadline from the client: the method's default.
    let ms = seen(get(gw.address, "/v1/users/u-1").await).expect("a deadline");
    assert!((2_500..=3_000).contains(&ms), "{ms} ms");
    // A client's longer deadline is cut to the method's max; a shorter one stands.
    let long = [("x-timeout-ms", "3600000")];
    let ms = seen(support::http(gw.address, "GET", "/v1/users/u-1", &long, b"").await).expect("a deadline");
    assert!((9_500..=10_000).contains(&ms), "{ms} ms");
    let short = [("x-timeout-ms", "1500")];
    let ms = seen(support::http(gw.address, "GET", "/v1/users/u-1", &short, b"").await).expect("a deadline");
    assert!((1_000..=1_500).contains(&ms), "{ms} ms");
    // gRPC clients the same: an hour asked, ten seconds given.
    let user = support::raw_unary(
        gw.address,
        "/shop.users.v1.UserService/GetUser",
        &dragoman::demo::pb::shop::users::v1::GetUserRequest { id: "u-1".into() },
        &[("grpc-timeout", "1H")],
    )
    .await;
    assert_eq!(user.status(), Some(0));
    let message = user.body.get(5..).expect("one gRPC-framed message");
    let user = <dragoman::demo::pb::shop::users::v1::User as prost::Message>::decode(message).expect("a User");
    let ms = sent_timeout(&user.display_name).expect("a deadline");
    assert!((9_500..=10_000).contains(&ms), "{ms} ms");
}

#[tokio::test]
async fn a_method_without_an_entry_keeps_the_services_default_or_none() {
    let gw = echo_gateway("timeouts:\n  - {match: shop.users.v1.UserService/CreateUser, default: 1s}\n").await;
    let reply = get(gw.address, "/v1/users/u-1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(sent_timeout(reply.json()["displayName"].as_str().unwrap_or_default()), None, "{}", reply.text());
}

#[tokio::test]
async fn a_default_that_passes_ends_the_call_with_deadline_exceeded() {
    let (held, _frames) = support::start_held().await;
    let gw = TestGateway::builder()
        .backend("shop.users.v1.UserService", &held.to_string())
        .config("timeouts:\n  - {match: shop.users.v1.UserService/GetUser, default: 300ms}\n")
        .start()
        .await;
    let started = std::time::Instant::now();
    let reply = get(gw.address, "/v1/users/u-1").await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}

#[test]
fn timeouts_are_checked_at_load() {
    for (yaml, expected) in [
        ("timeouts: [{match: '*', default: 2s, max: 1s}]", "default is longer than max"),
        ("timeouts: [{match: '*', max: 1s}, {match: '*', default: 1s}]", "timeouts[1].match"),
        ("timeouts: [{match: '*', max: 0s}]", "0s"),
        ("timeouts: [{match: 'shop.*/Get', max: 1s}]", "timeouts[0].match"),
    ] {
        let error = dragoman::config::Config::parse(&format!("services: []\n{yaml}\n"), std::path::Path::new("."))
            .expect_err(yaml);
        assert!(error.contains(expected), "{yaml}: {error}");
    }
}
