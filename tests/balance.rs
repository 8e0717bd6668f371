//! `services[].balance`: three backends, one of them slow, under concurrent calls — the power of
//! two choices gives the slow one less; round-robin gives each a third.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dragoman::demo::pb::shop::users::v1::user_service_server::{UserService, UserServiceServer};
use dragoman::demo::pb::shop::users::v1::{
    CreateUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse, User,
};
use support::{TestGateway, get};

/// A UserService answering GetUser after `delay`, counting its calls.
#[derive(Clone)]
struct Timed {
    calls: Arc<AtomicUsize>,
    delay: Duration,
}

#[tonic::async_trait]
impl UserService for Timed {
    async fn get_user(&self, request: tonic::Request<GetUserRequest>) -> Result<tonic::Response<User>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        Ok(tonic::Response::new(User { id: request.into_inner().id, ..Default::default() }))
    }
    async fn create_user(&self, _: tonic::Request<CreateUserRequest>) -> Result<tonic::Response<User>, tonic::Status> {
        Err(tonic::Status::unimplemented("GetUser only"))
    }
    async fn list_users(
        &self,
        _: tonic::Request<ListUsersRequest>,
    ) -> Result<tonic::Response<ListUsersResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("GetUser only"))
    }
}

async fn start(delay: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(UserServiceServer::new(Timed { calls: calls.clone(), delay }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (address, calls)
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
