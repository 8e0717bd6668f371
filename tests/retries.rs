//! `retries:`: calls the backends turn away (UNAVAILABLE, unreachable) are sent again, at most
//! `attempts` times, within the budget; a backend counts what reaches it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dragoman::demo::pb::shop::users::v1::user_service_server::{UserService, UserServiceServer};
use dragoman::demo::pb::shop::users::v1::{
    CreateUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse, User,
};
use support::{TestGateway, get};

/// A UserService that answers UNAVAILABLE to its first `failures` calls, then serves.
#[derive(Clone)]
struct Flaky {
    calls: Arc<AtomicUsize>,
    failures: usize,
}

#[tonic::async_trait]
impl UserService for Flaky {
    async fn get_user(&self, request: tonic::Request<GetUserRequest>) -> Result<tonic::Response<User>, tonic::Status> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(tonic::Status::unavailable("going away"));
        }
        Ok(tonic::Response::new(User { id: request.into_inner().id, ..Default::default() }))
    }
    async fn create_user(&self, _: tonic::Request<CreateUserRequest>) -> Result<tonic::Response<User>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(tonic::Status::unavailable("going away"))
    }
    async fn list_users(
        &self,
        _: tonic::Request<ListUsersRequest>,
    ) -> Result<tonic::Response<ListUsersResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(tonic::Status::internal("broken"))
    }
}

async fn gateway(failures: usize, config: &str) -> (TestGateway, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let backend = Flaky { calls: calls.clone(), failures };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(UserServiceServer::new(backend))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let gw =
        TestGateway::builder().backend("shop.users.v1.UserService", &address.to_string()).config(config).start().await;
    (gw, calls)
}

#[tokio::test]
async fn a_call_turned_away_is_sent_again_up_to_its_attempts() {
    let (gw, calls) = gateway(2, "retries: {attempts: 3, unavailable: always}\n").await;
    let reply = get(gw.address, "/v1/users/u-1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two refusals, then served");
    // Every attempt refused: the client gets the last refusal, after exactly three tries.
    let reply = support::http(gw.address, "POST", "/v1/users", &[], b"{}").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    // Another code is the backend's answer, not a refusal: not sent again.
    let reply = get(gw.address, "/v1/users").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 7);
}

#[tokio::test]
async fn by_default_only_methods_marked_idempotent_are_sent_again_on_unavailable() {
    // The demo's GetUser is marked NO_SIDE_EFFECTS: refused once, then served.
    let (gw, calls) = gateway(1, "retries: {attempts: 3}\n").await;
    assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // CreateUser is not marked: a backend may have started on it, so its refusal is the answer.
    let reply = support::http(gw.address, "POST", "/v1/users", &[], b"{}").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idempotent_methods_are_sent_again_on_the_codes_configured_for_them() {
    // ListUsers (NO_SIDE_EFFECTS) answers INTERNAL: sent again when `internal` is listed...
    let config = "retries: {attempts: 3, idempotent_codes: [internal], backoff: 1ms, max_backoff: 2ms}\n";
    let (gw, calls) = gateway(0, config).await;
    let reply = get(gw.address, "/v1/users").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 3, "three tries of the idempotent call");
    // ...but a method not marked idempotent is not, on UNAVAILABLE either.
    let reply = support::http(gw.address, "POST", "/v1/users", &[], b"{}").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Without the code listed, INTERNAL is the backend's answer.
    let (gw, calls) = gateway(0, "retries: {attempts: 3}\n").await;
    assert_eq!(get(gw.address, "/v1/users").await.status, 500);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_code_that_is_not_one_is_refused_at_load() {
    let file: dragoman::policy::retry::RetriesFile =
        serde_yaml_ng::from_str("idempotent_codes: [internal, not_a_code]").expect("yaml");
    let error = dragoman::policy::retry::Retries::new(&file, 1024).expect_err("refused");
    assert!(error.contains("\"not_a_code\" is not a gRPC status code"), "{error}");
    let file: dragoman::policy::retry::RetriesFile = serde_yaml_ng::from_str("idempotent_codes: [ok]").expect("yaml");
    assert!(dragoman::policy::retry::Retries::new(&file, 1024).is_err(), "OK is no failure to retry");
}

#[tokio::test]
async fn without_retries_a_refusal_is_the_answer() {
    let (gw, calls) = gateway(1, "").await;
    assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 503);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn in_a_full_outage_the_budget_caps_the_retries() {
    // Every call refused; retries may add 10 % of the calls and none for free.
    let (gw, calls) = gateway(
        usize::MAX,
        "retries: {attempts: 3, budget_ratio: 0.1, budget_min_per_second: 0, unavailable: always}\n",
    )
    .await;
    for _ in 0..100 {
        assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 503);
    }
    let sent = calls.load(Ordering::SeqCst);
    assert!((100..=112).contains(&sent), "100 calls and about 10 retries, not 200 more: {sent}");
    assert!(sent > 100, "the budget allows some retries: {sent}");
    // The retries the budget refused are counted (the counter is the process's: other tests add
    // a few, none of them refused by a budget).
    let mut metrics = String::new();
    dragoman::policy::retry::render(&mut metrics, false);
    let over_budget: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dragoman_retries_total{result=\"over_budget\"} "))
        .and_then(|v| v.parse().ok())
        .expect("the counter is exposed");
    assert!(over_budget >= 88, "the refused retries are counted: {over_budget}\n{metrics}");
}

#[tokio::test]
async fn a_unary_call_kept_to_be_sent_again_holds_one_message_at_most() {
    use http_body_util::BodyExt;
    // max_message_size 1 KiB: one framed message of it at most is kept, more is refused.
    let (gw, calls) = gateway(0, "retries: {attempts: 3}\nserver:\n  max_message_size: 1024\n").await;
    let message = prost::Message::encode_to_vec(&GetUserRequest { id: "u".repeat(1000) });
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&message);
    let twice = [frame.clone(), frame].concat();
    let mut request =
        support::grpc_request(gw.address, "/shop.users.v1.UserService/GetUser", &GetUserRequest::default());
    *request.body_mut() = http_body_util::Full::new(bytes::Bytes::from(twice));
    let mut sender = support::h2_client(gw.address).await;
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let trailers = body.collect().await.expect("body").trailers().cloned().unwrap_or_default();
    let status = trailers.get("grpc-status").or(parts.headers.get("grpc-status")).cloned();
    assert_eq!(status.as_ref().map(|s| s.as_bytes()), Some(&b"8"[..]), "{parts:?} {trailers:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing reached the backend");
}

#[tokio::test]
async fn a_retry_goes_to_another_backend_than_the_one_that_refused() {
    // Two backends, the first always refusing: each call's second try goes to the other.
    let start = |failures: usize| async move {
        let calls = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(UserServiceServer::new(Flaky { calls: calls.clone(), failures }))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (address, calls)
    };
    let (refusing, refused) = start(usize::MAX).await;
    let (serving, served) = start(0).await;
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&format!("  - match: shop.users.v1.UserService\n    backends: [http://{refusing}, http://{serving}]\n"))
        .config("retries: {attempts: 2, unavailable: always}\n")
        .start()
        .await;
    for _ in 0..20 {
        let reply = get(gw.address, "/v1/users/u-1").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(served.load(Ordering::SeqCst), 20);
    assert!(refused.load(Ordering::SeqCst) <= 5, "ejected after five: {}", refused.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_call_is_not_sent_again_once_a_message_came_back() {
    // GetUser is idempotent and `unavailable` retried — but only while the backend has answered
    // nothing but a status: once a message came back, its UNAVAILABLE is the client's.
    let start = |with_message: bool| async move {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let backend = support::start_grpc_backend(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut status = http::HeaderMap::new();
            status.insert("grpc-status", http::HeaderValue::from_static("14"));
            status.insert("grpc-message", http::HeaderValue::from_static("going away"));
            if with_message {
                let user = prost::Message::encode_to_vec(&User { id: "u-1".into(), ..Default::default() });
                let mut frame = vec![0u8];
                frame.extend_from_slice(&u32::try_from(user.len()).expect("small").to_be_bytes());
                frame.extend_from_slice(&user);
                (http::HeaderMap::new(), bytes::Bytes::from(frame), Some(status))
            } else {
                // Trailers-Only: the status in the head, nothing else.
                (status, bytes::Bytes::new(), None)
            }
        })
        .await;
        let gw = TestGateway::builder()
            .backend("shop.users.v1.UserService", &backend.to_string())
            .config("retries: {attempts: 3, backoff: 1ms, max_backoff: 2ms}\n")
            .start()
            .await;
        let status = get(gw.address, "/v1/users/u-1").await.status;
        (status, calls.load(Ordering::SeqCst))
    };
    let (status, calls) = start(false).await;
    assert_eq!((status, calls), (503, 3), "nothing but a status: sent three times");
    let (status, calls) = start(true).await;
    assert_ne!(status, 200);
    assert_eq!(calls, 1, "a message came back: not sent again");
}
