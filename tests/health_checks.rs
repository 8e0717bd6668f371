//! `services[].health_check`: backends that say NOT_SERVING to `grpc.health.v1.Health/Check`, or
//! do not answer it in time, are given no calls until they pass again; with every backend
//! unhealthy a call fails at once; `/admin/backends` and `/metrics` say where each stands; a
//! config reload that drops the checks stops them; TLS backends are checked over TLS.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dragoman::demo::pb::shop::users::v1::user_service_client::UserServiceClient;
use dragoman::demo::pb::shop::users::v1::user_service_server::{UserService, UserServiceServer};
use dragoman::demo::pb::shop::users::v1::{GetUserRequest, User};
use support::{TestGateway, get};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;

/// A UserService answering GetUser, and the count of its calls.
fn counted() -> (UserServiceServer<impl UserService>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = support::get_user_service(move |request: tonic::Request<GetUserRequest>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok(tonic::Response::new(User { id: request.into_inner().id, ..Default::default() })) }
    });
    (service, calls)
}

/// A health service that takes every Check and never answers it (a hung health endpoint).
struct Hung;

#[tonic::async_trait]
impl Health for Hung {
    async fn check(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        std::future::pending().await
    }
    type WatchStream = futures_util::stream::Empty<Result<HealthCheckResponse, tonic::Status>>;
    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("Check only"))
    }
}

/// A backend: the UserService and a health service the test flips.
struct Backend {
    address: SocketAddr,
    calls: Arc<AtomicUsize>,
    health: HealthReporter,
}

impl Backend {
    /// As the gateway names it.
    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn set(&self, status: ServingStatus) {
        self.health.set_service_status("", status).await;
    }
}

async fn start_backend(status: ServingStatus) -> Backend {
    let (health, service) = tonic_health::server::health_reporter();
    health.set_service_status("", status).await;
    let (users, calls) = counted();
    let address = serve(tonic::transport::Server::builder().add_service(service).add_service(users)).await;
    Backend { address, calls, health }
}

/// A backend whose UserService answers but whose health check never does.
async fn start_hung_backend() -> Backend {
    let (users, calls) = counted();
    let address =
        serve(tonic::transport::Server::builder().add_service(HealthServer::new(Hung)).add_service(users)).await;
    Backend { address, calls, health: tonic_health::server::health_reporter().0 }
}

async fn serve(router: tonic::transport::server::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    address
}

/// The UserService rule over `backends`, checked every 250 ms, a check failing after 200 ms (a
/// loaded test machine must not fail a sound backend's check).
fn rule(backends: &[String], thresholds: (u32, u32), extra: &str) -> String {
    format!(
        "  - match: shop.users.v1.UserService\n    backends: [{}]\n{extra}    health_check:\n      interval: 250ms\n      timeout: 200ms\n      unhealthy_threshold: {}\n      healthy_threshold: {}\n",
        backends.join(", "),
        thresholds.0,
        thresholds.1,
    )
}

/// An admin listener for `gateway`, as tests/admin.rs starts one.
fn admin(gateway: &TestGateway) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(dragoman::admin::serve(listener, gateway.gateway.clone(), std::future::pending()));
    address
}

/// The backend at `url` as `/admin/backends` shows it.
async fn shown(admin: SocketAddr, url: &str) -> serde_json::Value {
    let backends = get(admin, "/admin/backends").await.json();
    let found = backends["backends"].as_array().and_then(|all| all.iter().find(|b| b["address"] == url)).cloned();
    found.unwrap_or_else(|| panic!("{url} is not in /admin/backends: {backends}"))
}

/// Polls `/admin/backends` until the backend at `url` has `health` (10 s at most); returns it.
async fn wait_health(admin: SocketAddr, url: &str, health: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let backend = shown(admin, url).await;
        if backend["health"] == health {
            return backend;
        }
        assert!(Instant::now() < deadline, "{url} is not {health} within 10 s: {backend}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `calls` GetUser calls, one at a time; each must succeed.
async fn call(gateway: &TestGateway, calls: usize) {
    let mut client = UserServiceClient::new(gateway.channel().await);
    for _ in 0..calls {
        client.get_user(GetUserRequest { id: "u-1".into() }).await.expect("served");
    }
}

/// The `dragoman_backend_healthy` line of `url`, if the exposition has one.
async fn healthy_gauge(admin: SocketAddr, url: &str) -> Option<String> {
    let text = get(admin, "/metrics").await.text();
    let prefix = format!("dragoman_backend_healthy{{backend=\"{url}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_serving_backend_gets_no_calls_until_it_serves_again() {
    let backends = [
        start_backend(ServingStatus::Serving).await,
        start_backend(ServingStatus::Serving).await,
        start_backend(ServingStatus::Serving).await,
    ];
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    // Round robin: the healthy two share the calls evenly whatever their latencies.
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&rule(&urls, (2, 2), "    balance: round_robin\n"))
        .start()
        .await;
    let admin = admin(&gw);
    for url in &urls {
        wait_health(admin, url, "serving").await;
    }
    assert_eq!(healthy_gauge(admin, &urls[0]).await.as_deref(), Some("1"));

    backends[0].set(ServingStatus::NotServing).await;
    let flipped = wait_health(admin, &urls[0], "not_serving").await;
    assert!(flipped["last_check_error"].as_str().is_some_and(|e| e.contains("NOT_SERVING")), "{flipped}");
    assert!(flipped["checks_failed"].as_u64() >= Some(1) && flipped["checks_passed"].as_u64() >= Some(1));
    assert_eq!(healthy_gauge(admin, &urls[0]).await.as_deref(), Some("0"));
    let before: Vec<usize> = backends.iter().map(Backend::calls).collect();
    call(&gw, 60).await;
    let served: Vec<usize> = backends.iter().zip(&before).map(|(b, before)| b.calls() - before).collect();
    assert_eq!(served[0], 0, "the NOT_SERVING backend is given no call: {served:?}");
    assert!(served[1] >= 10 && served[2] >= 10 && served[1] + served[2] == 60, "the others share: {served:?}");

    backends[0].set(ServingStatus::Serving).await;
    wait_health(admin, &urls[0], "serving").await;
    assert_eq!(healthy_gauge(admin, &urls[0]).await.as_deref(), Some("1"));
    let before = backends[0].calls();
    call(&gw, 60).await;
    assert!(backends[0].calls() - before >= 5, "serving again, it gets calls: {}", backends[0].calls() - before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_not_serving_calls_fail_at_once() {
    let backends = [start_backend(ServingStatus::NotServing).await, start_backend(ServingStatus::NotServing).await];
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    let patient = "    connect_timeout: 10s\n    queue_timeout: 10s\n";
    let gw = TestGateway::builder().without_demo_rules().rules(&rule(&urls, (1, 1), patient)).start().await;
    let admin = admin(&gw);
    for url in &urls {
        wait_health(admin, url, "not_serving").await;
    }
    let mut client = UserServiceClient::new(gw.channel().await);
    for _ in 0..5 {
        let mut request = tonic::Request::new(GetUserRequest { id: "u-1".into() });
        request.set_timeout(Duration::from_secs(30));
        let started = Instant::now();
        let status = client.get_user(request).await.expect_err("no backend is healthy");
        assert!(started.elapsed() < Duration::from_secs(1), "at once, not after a timeout: {:?}", started.elapsed());
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "shop.users.v1.UserService is unavailable: no backend is healthy");
    }
    assert_eq!(backends[0].calls() + backends[1].calls(), 0, "no call reached a backend");
    // REST clients get 503, as for any UNAVAILABLE.
    assert_eq!(get(gw.address, "/v1/users/u-1").await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_silent_calls_fail_at_once_not_after_the_connect_timeout() {
    // Listeners the kernel accepts connections for and nobody reads: a dial to them waits for
    // an HTTP/2 answer that never comes, the whole connect_timeout.
    let silent = [
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
    ];
    let urls: Vec<String> = silent.iter().map(|l| format!("http://{}", l.local_addr().expect("address"))).collect();
    let patient = "    connect_timeout: 10s\n    queue_timeout: 10s\n";
    let gw = TestGateway::builder().without_demo_rules().rules(&rule(&urls, (1, 1), patient)).start().await;
    let admin = admin(&gw);
    for url in &urls {
        let backend = wait_health(admin, url, "not_serving").await;
        assert!(
            backend["last_check_error"].as_str().is_some_and(|e| e.contains("no answer within 200ms")),
            "{backend}"
        );
    }
    let mut client = UserServiceClient::new(gw.channel().await);
    let mut request = tonic::Request::new(GetUserRequest { id: "u-1".into() });
    request.set_timeout(Duration::from_secs(30));
    let started = Instant::now();
    let status = client.get_user(request).await.expect_err("no backend is healthy");
    assert!(started.elapsed() < Duration::from_secs(1), "at once, not after connect_timeout: {:?}", started.elapsed());
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "shop.users.v1.UserService is unavailable: no backend is healthy")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_check_hangs_is_marked_unhealthy_by_the_timeout() {
    let hung = start_hung_backend().await;
    let sound = start_backend(ServingStatus::Serving).await;
    // Its UserService answers: only its health check is stuck.
    let channel = tonic::transport::Endpoint::from_shared(hung.url()).expect("url").connect().await.expect("connect");
    let mut direct = UserServiceClient::new(channel);
    direct.get_user(GetUserRequest { id: "u-1".into() }).await.expect("the hung backend serves calls");

    let urls = [hung.url(), sound.url()];
    let gw = TestGateway::builder().without_demo_rules().rules(&rule(&urls, (2, 2), "")).start().await;
    let admin = admin(&gw);
    let marked = wait_health(admin, &urls[0], "not_serving").await;
    assert!(marked["last_check_error"].as_str().is_some_and(|e| e.contains("no answer within 200ms")), "{marked}");
    wait_health(admin, &urls[1], "serving").await;
    let before = (hung.calls(), sound.calls());
    call(&gw, 30).await;
    assert_eq!((hung.calls() - before.0, sound.calls() - before.1), (0, 30), "every call to the sound backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_without_health_check_stops_the_checks() {
    let backends = [start_backend(ServingStatus::NotServing).await, start_backend(ServingStatus::Serving).await];
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    let gw = TestGateway::builder().without_demo_rules().rules(&rule(&urls, (1, 1), "")).start().await;
    let admin = admin(&gw);
    wait_health(admin, &urls[0], "not_serving").await;

    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("gateway.yaml");
    let unchecked = format!(
        "listen: 127.0.0.1:0\ndescriptors: [{}]\nservices:\n  - match: shop.users.v1.UserService\n    backends: [{}]\n",
        gw.descriptors.display(),
        urls.join(", ")
    );
    std::fs::write(&path, unchecked).expect("write");
    let gateway = gw.gateway.clone();
    let reloaded = tokio::task::spawn_blocking(move || gateway.reload_config(&path, false)).await.expect("join");
    assert_eq!(reloaded, Ok(true));
    // The checker aborted, nothing checks it: unchecked, out of the gauge, and given calls again.
    let backend = wait_health(admin, &urls[0], "unchecked").await;
    assert!(backend["checks_failed"].as_u64() >= Some(1), "its counts stay: {backend}");
    assert_eq!(healthy_gauge(admin, &urls[0]).await, None);
    let before = backends[0].calls();
    call(&gw, 40).await;
    assert!(backends[0].calls() > before, "served again once unchecked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_backend_is_checked_over_tls() {
    let (health, service) = tonic_health::server::health_reporter();
    let (port, pem) = support::start_tls_backend(tonic::service::Routes::new(service)).await;
    let ca = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(ca.path(), pem).expect("write ca");
    let url = format!("https://localhost:{port}");
    let tls = format!("    tls: {{ ca_file: {} }}\n", ca.path().display());
    let gw = TestGateway::builder()
        .without_demo_rules()
        .rules(&rule(std::slice::from_ref(&url), (1, 1), &tls))
        .start()
        .await;
    let admin = admin(&gw);
    // SERVING can only come from the backend's answer: the TLS dial and the call went through.
    wait_health(admin, &url, "serving").await;
    health.set_service_status("", ServingStatus::NotServing).await;
    let flipped = wait_health(admin, &url, "not_serving").await;
    assert!(flipped["last_check_error"].as_str().is_some_and(|e| e.contains("NOT_SERVING")), "{flipped}");
}
