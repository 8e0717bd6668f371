//! `services[].balance`: three backends, one of them slow, under concurrent calls — the power of
//! two choices gives the slow one less; round-robin gives each a third.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dragoman::demo::pb::shop::users::v1::{GetUserRequest, User};
use support::{TestGateway, get};

async fn start(delay: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let (address, calls, _) = start_refusing(delay, false).await;
    (address, calls)
}

async fn start_refusing(
    delay: Duration,
    refusing: bool,
) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<std::sync::atomic::AtomicBool>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(std::sync::atomic::AtomicBool::new(refusing));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service({
                // GetUser after `delay` (UNAVAILABLE while `refusing`), counting its calls.
                let (calls, refusing) = (calls.clone(), refusing.clone());
                support::get_user_service(move |request: tonic::Request<GetUserRequest>| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let refused = refusing.load(Ordering::SeqCst);
                    async move {
                        if refused {
                            return Err(tonic::Status::unavailable("going away"));
                        }
                        tokio::time::sleep(delay).await;
                        Ok(tonic::Response::new(User { id: request.into_inner().id, ..Default::default() }))
                    }
                })
            })
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (address, calls, refusing)
}

/// The slow backend's share of 240 calls, 12 at a time, with this `balance`.
async fn slow_share(balance: &str) -> f64 {
    let (slow, slow_calls) = start(Duration::from_millis(100)).await;
    let (fast_a, a_calls) = start(Duration::from_millis(2)).await;
    let (fast_b, b_calls) = start(Duration::from_millis(2)).await;
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.users.v1.UserService\n    backends: [http://{slow}, http://{fast_a}, http://{fast_b}]\n    balance: {balance}\n"
        ))
        .start()
        .await;
    let gw = &gw;
    let clients = (0..12).map(|_| async move {
        for _ in 0..20 {
            assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 200);
        }
    });
    futures_util::future::join_all(clients).await;
    let (slow, a, b) =
        (slow_calls.load(Ordering::SeqCst), a_calls.load(Ordering::SeqCst), b_calls.load(Ordering::SeqCst));
    assert_eq!(slow + a + b, 240);
    println!("{balance}: slow {slow}, fast {a} and {b}");
    slow as f64 / 240.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_power_of_two_choices_gives_a_slow_backend_less_than_round_robin_does() {
    let round_robin = slow_share("round_robin").await;
    let p2c = slow_share("p2c").await;
    assert!((0.28..=0.39).contains(&round_robin), "round-robin: a third each, {round_robin}");
    assert!(p2c < 0.15, "p2c moves calls away from the slow backend: {p2c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_turns_calls_away_is_ejected_then_readmitted() {
    let (bad, bad_calls, refusing) = start_refusing(Duration::ZERO, true).await;
    let (good_a, _) = start(Duration::ZERO).await;
    let (good_b, _) = start(Duration::ZERO).await;
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.users.v1.UserService\n    backends: [http://{bad}, http://{good_a}, http://{good_b}]\n    balance: round_robin\n"
        ))
        .start()
        .await;
    // One call at a time: five turned away in a row eject the backend; then it gets none. (Round
    // robin, so the refusing backend gets its turns: under p2c its latency estimate decides.)
    let mut refused = 0;
    for _ in 0..60 {
        match get(gw.address, "/v1/users/u-1").await.status {
            200 => {}
            503 => refused += 1,
            other => panic!("status {other}"),
        }
    }
    assert_eq!(bad_calls.load(Ordering::SeqCst), 5, "ejected after five");
    assert_eq!(refused, 5, "the clients saw only those five");
    let bad_address = format!("http://{bad}");
    let bad_stats = gw.gateway.backends().endpoint(&bad_address);
    assert_eq!(bad_stats.to_json()["ejected"], true, "{}", bad_stats.to_json());
    // Healthy again: once the ejection (5 s) is over, calls come back to it.
    refusing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(5200)).await;
    for _ in 0..60 {
        assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 200);
    }
    assert!(bad_calls.load(Ordering::SeqCst) > 5 + 5, "readmitted: {}", bad_calls.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_with_the_same_key_stay_with_one_backend_and_keys_spread() {
    use dragoman::demo::pb::shop::users::v1::user_service_client::UserServiceClient;
    let mut backends = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..3 {
        // Records the `x-session` value of every call it serves.
        let sessions = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let recording = sessions.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addresses.push(format!("http://{}", listener.local_addr().expect("address")));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(support::get_user_service(move |request: tonic::Request<GetUserRequest>| {
                    let session = request.metadata().get("x-session").and_then(|v| v.to_str().ok()).unwrap_or("-");
                    recording.lock().expect("sessions").push(session.to_owned());
                    async move { Ok(tonic::Response::new(User { id: request.into_inner().id, ..Default::default() })) }
                }))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        backends.push(sessions);
    }
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.users.v1.UserService\n    backends: [{}]\n    balance: hash\n    hash_on: x-session\n",
            addresses.join(", ")
        ))
        .start()
        .await;
    // 30 sessions, 4 calls each, each call on a connection of its own (any worker).
    for round in 0..4 {
        for session in 0..30 {
            let mut client = UserServiceClient::new(gw.channel().await);
            let mut request = tonic::Request::new(GetUserRequest { id: "u-1".into() });
            request.metadata_mut().insert("x-session", format!("s-{session}").parse().expect("value"));
            client.get_user(request).await.unwrap_or_else(|e| panic!("round {round}, session {session}: {e}"));
        }
    }
    // A call without the key is balanced like any other.
    UserServiceClient::new(gw.channel().await).get_user(GetUserRequest { id: "u-1".into() }).await.expect("unkeyed");
    let seen: Vec<Vec<String>> = backends.iter().map(|b| b.lock().expect("sessions").clone()).collect();
    for session in 0..30 {
        let name = format!("s-{session}");
        let holders: Vec<usize> = (0..3).filter(|b| seen[*b].contains(&name)).collect();
        assert_eq!(holders.len(), 1, "{name} went to one backend only: {holders:?}");
        assert_eq!(seen[holders[0]].iter().filter(|s| **s == name).count(), 4, "{name}: all four calls");
    }
    assert!(seen.iter().all(|s| s.iter().any(|name| name != "-")), "the keys spread over every backend: {seen:?}");
    assert_eq!(seen.iter().map(|s| s.iter().filter(|n| *n == "-").count()).sum::<usize>(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_of_weight_three_gets_three_times_the_calls() {
    let (heavy, heavy_calls) = start(Duration::ZERO).await;
    let (light, light_calls) = start(Duration::ZERO).await;
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.users.v1.UserService\n    backends: [{{address: 'http://{heavy}', weight: 3}}, http://{light}]\n    balance: round_robin\n"
        ))
        .start()
        .await;
    for _ in 0..80 {
        assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 200);
    }
    let (heavy, light) = (heavy_calls.load(Ordering::SeqCst), light_calls.load(Ordering::SeqCst));
    println!("weight 3: {heavy}, weight 1: {light}");
    assert_eq!(heavy + light, 80);
    assert!((52..=68).contains(&heavy), "about 60 of 80: {heavy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_hangs_is_given_little_under_p2c() {
    // One backend answers at once, the other not within any call's deadline (200 ms): each call
    // given up on teaches the balancer how slow it is, though it never answers.
    let (hung, hung_calls) = start(Duration::from_secs(30)).await;
    let (fast, fast_calls) = start(Duration::ZERO).await;
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!("  - match: shop.users.v1.UserService\n    backends: [http://{hung}, http://{fast}]\n"))
        .config("timeouts:\n  - match: shop.users.v1.UserService\n    default: 200ms\n")
        .start()
        .await;
    let mut timed_out = 0;
    for _ in 0..60 {
        match get(gw.address, "/v1/users/u-1").await.status {
            200 => {}
            504 => timed_out += 1,
            other => panic!("status {other}"),
        }
    }
    let (hung, fast) = (hung_calls.load(Ordering::SeqCst), fast_calls.load(Ordering::SeqCst));
    println!("hung backend: {hung} calls, fast: {fast}");
    assert_eq!(hung + fast, 60);
    assert!(timed_out >= hung, "every call the hung backend got timed out: {timed_out} of {hung}");
    // At most one per worker's estimate (and a race or two), not the half a coin toss gives.
    assert!(hung <= 4, "the hung backend is avoided once it cost a deadline: {hung} of 60");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_whose_backend_is_down_go_to_the_next_in_their_order() {
    let (up, up_calls) = start(Duration::ZERO).await;
    let down = support::dead_port();
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.users.v1.UserService\n    backends: [http://127.0.0.1:{down}, http://{up}]\n    balance: hash\n    hash_on: x-session\n"
        ))
        .start()
        .await;
    // About half the keys rank the dead backend first: every call is served all the same.
    for session in 0..20 {
        let header = format!("s-{session}");
        let reply =
            support::http(gw.address, "GET", "/v1/users/u-1", &[("grpc-metadata-x-session", &header)], b"").await;
        assert_eq!(reply.status, 200, "{header}: {}", reply.text());
    }
    assert_eq!(up_calls.load(Ordering::SeqCst), 20);
}
