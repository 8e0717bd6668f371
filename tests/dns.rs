//! Backends named by DNS: `http://backends.test:P` stands for every address the name resolves to,
//! re-resolved every `resolve_interval` from the nameservers `dns:` names. A DNS server in the
//! test answers for the name, and the test changes its answer while calls flow: new addresses get
//! calls, removed ones stop getting them, a call in flight on a removed address completes, and a
//! DNS that fails or answers nothing leaves the last addresses serving. The backends listen on
//! 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all loopback on Linux) on one port, so the answer alone
//! says which serve.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dragoman::demo::pb::shop::users::v1::user_service_client::UserServiceClient;
use dragoman::demo::pb::shop::users::v1::user_service_server::{UserService, UserServiceServer};
use dragoman::demo::pb::shop::users::v1::{GetUserRequest, User};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use support::{TestGateway, get};
use tonic_health::ServingStatus;

/// What the test's DNS server says of `backends.test.`.
#[derive(Debug, Clone)]
enum Answer {
    Addresses(Vec<Ipv4Addr>),
    ServFail,
    /// NOERROR with no record.
    Empty,
    /// No reply at all.
    Silent,
}

fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

struct DnsState {
    answer: Answer,
    /// A queries for the name answered (or dropped, when silent) since the answer was set.
    asked: usize,
}

/// A DNS server on a UDP port of 127.0.0.1 that answers A queries for `backends.test.` as the
/// test says, NOERROR without records for anything else.
struct Dns {
    address: SocketAddr,
    state: Arc<Mutex<DnsState>>,
}

impl Dns {
    async fn start(answer: Answer) -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let address = socket.local_addr().expect("address");
        let state = Arc::new(Mutex::new(DnsState { answer, asked: 0 }));
        let serving = state.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buffer).await else { return };
                let Ok(query) = Message::from_vec(&buffer[..n]) else { continue };
                if let Some(reply) = reply(&query, &serving) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Dns { address, state }
    }

    fn set(&self, answer: Answer) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.answer = answer;
        state.asked = 0;
    }

    fn asked(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).asked
    }

    /// Waits until the gateway has asked for the name `n` times since the answer was set: the
    /// resolver asks again only once it has dealt with the previous answer, so two mean the
    /// current answer has been taken in.
    async fn wait_asked(&self, n: usize) {
        wait_until(&format!("the gateway asks the DNS {n} times"), || self.asked() >= n).await;
    }
}

/// The reply to `query` as the current answer says (None: silence).
fn reply(query: &Message, state: &Mutex<DnsState>) -> Option<Vec<u8>> {
    let question = query.queries().first()?.clone();
    let ours = question.name().to_ascii().trim_end_matches('.').eq_ignore_ascii_case("backends.test");
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .add_query(question.clone());
    if ours && question.query_type() == RecordType::A {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.asked += 1;
        match &state.answer {
            Answer::Addresses(ips) => {
                // TTL 0: nothing to cache.
                let records = ips.iter().map(|ip| Record::from_rdata(question.name().clone(), 0, RData::A(A(*ip))));
                reply.add_answers(records);
            }
            Answer::ServFail => {
                reply.set_response_code(ResponseCode::ServFail);
            }
            Answer::Empty => {}
            Answer::Silent => return None,
        }
    }
    reply.to_vec().ok()
}

/// A UserService that counts its calls and says who it is (`display_name`: its IP); GetUser
/// `slow` answers after two seconds.
#[derive(Clone)]
struct Instance {
    ip: Ipv4Addr,
    calls: Arc<AtomicUsize>,
    slow_started: Arc<AtomicBool>,
}

impl Instance {
    /// Its UserService: GetUser counts, says who answers, and `slow` takes [`SLOW`].
    fn service(&self) -> UserServiceServer<impl UserService> {
        let instance = self.clone();
        support::get_user_service(move |request: tonic::Request<GetUserRequest>| {
            let instance = instance.clone();
            async move {
                instance.calls.fetch_add(1, Ordering::SeqCst);
                let id = request.into_inner().id;
                if id == "slow" {
                    instance.slow_started.store(true, Ordering::SeqCst);
                    tokio::time::sleep(SLOW).await;
                }
                Ok(tonic::Response::new(User { id, display_name: instance.ip.to_string(), ..Default::default() }))
            }
        })
    }
}

/// How long GetUser `slow` takes.
const SLOW: Duration = Duration::from_secs(6);

impl Instance {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Three instances, on 127.0.0.1, .2 and .3, on one port; with a health service each.
async fn start_instances() -> (u16, Vec<Instance>, Vec<tonic_health::server::HealthReporter>) {
    let listeners = bind_three().await;
    let port = listeners[0].local_addr().expect("address").port();
    let mut instances = Vec::new();
    let mut reporters = Vec::new();
    for (last, listener) in (1..=3).zip(listeners) {
        let instance =
            Instance { ip: loopback(last), calls: Arc::default(), slow_started: Arc::new(AtomicBool::new(false)) };
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status("", ServingStatus::Serving).await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(instance.service())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        instances.push(instance);
        reporters.push(reporter);
    }
    (port, instances, reporters)
}

/// Listeners on 127.0.0.1:P, 127.0.0.2:P and 127.0.0.3:P for some port P.
async fn bind_three() -> Vec<tokio::net::TcpListener> {
    for _ in 0..20 {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = first.local_addr().expect("address").port();
        let (Ok(second), Ok(third)) = (
            tokio::net::TcpListener::bind((loopback(2), port)).await,
            tokio::net::TcpListener::bind((loopback(3), port)).await,
        ) else {
            continue;
        };
        return vec![first, second, third];
    }
    panic!("no port free on 127.0.0.1, .2 and .3 at once")
}

/// A gateway whose UserService backend is `http://backends.test:{port}`, resolved every 200 ms
/// from `dns`; `extra` holds more lines of the rule.
async fn gateway(dns: &Dns, scheme_port: &str, extra: &str) -> TestGateway {
    TestGateway::builder()
        .without_demo_rules()
        .rules(&format!(
            "  - match: shop.users.v1.UserService\n    backends: [{scheme_port}]\n    resolve_interval: 200ms\n{extra}"
        ))
        .config(&format!("dns:\n  nameservers: [\"{}\"]\n", dns.address))
        .start()
        .await
}

/// An admin listener for `gateway`, as tests/admin.rs starts one.
fn admin(gateway: &TestGateway) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(dragoman::admin::serve(listener, gateway.gateway.clone(), std::future::pending()));
    address
}

/// Polls `done` every 10 ms, failing after 10 s.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `/admin/backends` lists an endpoint for each of `addresses` (URLs), each named
/// `name`; returns them as shown.
async fn wait_listed(admin: SocketAddr, name: &str, addresses: &[String]) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = get(admin, "/admin/backends").await.json();
        let all = shown["backends"].as_array().cloned().unwrap_or_default();
        let found: Vec<serde_json::Value> = addresses
            .iter()
            .filter_map(|address| all.iter().find(|b| b["address"] == address.as_str() && b["name"] == name).cloned())
            .collect();
        if found.len() == addresses.len() {
            return found;
        }
        assert!(Instant::now() < deadline, "{addresses:?} of {name} not listed within 10 s: {shown}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GetUser calls from `clients` clients, each on a connection of its own, one call after another
/// until stopped (at most a minute); every failure is kept.
struct Load {
    stop: Arc<AtomicBool>,
    /// Calls each client has completed.
    done: Vec<Arc<AtomicUsize>>,
    failures: Arc<Mutex<Vec<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(gateway: &TestGateway, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut done = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let mut client = UserServiceClient::new(gateway.channel().await);
            let (stop, failures, count) = (stop.clone(), failures.clone(), Arc::new(AtomicUsize::new(0)));
            done.push(count.clone());
            tasks.push(tokio::spawn(async move {
                let until = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    let mut request = tonic::Request::new(GetUserRequest { id: "u-1".into() });
                    request.set_timeout(Duration::from_secs(5));
                    if let Err(status) = client.get_user(request).await {
                        failures.lock().unwrap_or_else(PoisonError::into_inner).push(format!("{status:?}"));
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
        Load { stop, done, failures, clients: tasks }
    }

    /// Waits until every client has completed `n` more calls than now: the last of them began
    /// after this call.
    async fn wait_each(&self, n: usize) {
        let from: Vec<usize> = self.done.iter().map(|d| d.load(Ordering::SeqCst)).collect();
        let done = || self.done.iter().zip(&from).all(|(d, from)| d.load(Ordering::SeqCst) >= from + n);
        wait_until(&format!("each client completes {n} calls"), done).await;
    }

    /// Stops the clients; the failures they saw.
    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.expect("client");
        }
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn url(last: u8, port: u16) -> String {
    format!("http://127.0.0.{last}:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_follow_the_answer_as_addresses_come_and_go_and_none_fails() {
    let dns = Dns::start(Answer::Addresses(vec![loopback(1), loopback(2)])).await;
    let (port, instances, _health) = start_instances().await;
    let name = format!("http://backends.test:{port}");
    // Round-robin, so that both addresses are sure to get calls; p2c may leave one aside for a
    // while after a slow first answer.
    let gw = gateway(&dns, &name, "    balance: round_robin\n").await;
    let admin = admin(&gw);
    wait_listed(admin, &name, &[url(1, port), url(2, port)]).await;

    let load = Load::start(&gw, 4).await;
    wait_until("100 calls served", || instances[0].calls() + instances[1].calls() >= 100).await;
    let shares: Vec<usize> = instances.iter().map(Instance::calls).collect();
    assert!(shares[0] >= 10 && shares[1] >= 10 && shares[2] == 0, "shared by .1 and .2 only: {shares:?}");

    // A third instance appears in the answer: it gets calls within a few intervals.
    dns.set(Answer::Addresses(vec![loopback(1), loopback(2), loopback(3)]));
    let added = Instant::now();
    wait_until("127.0.0.3 gets calls", || instances[2].calls() > 0).await;
    assert!(added.elapsed() < Duration::from_secs(10), "within some resolve intervals: {:?}", added.elapsed());
    wait_listed(admin, &name, &[url(3, port)]).await;

    // Only the third is left: once the gateway has the answer, .1 and .2 get no more calls.
    dns.set(Answer::Addresses(vec![loopback(3)]));
    dns.wait_asked(3).await;
    load.wait_each(2).await;
    let gone = (instances[0].calls(), instances[1].calls());
    let third = instances[2].calls();
    wait_until("127.0.0.3 takes 200 more calls", || instances[2].calls() >= third + 200).await;
    assert_eq!((instances[0].calls(), instances[1].calls()), gone, "no call for the addresses that went");

    let failures = load.stop().await;
    assert!(failures.is_empty(), "no call failed while the addresses changed: {failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_on_an_address_removed_from_the_answer_completes() {
    let dns = Dns::start(Answer::Addresses(vec![loopback(1)])).await;
    let (port, instances, _health) = start_instances().await;
    let name = format!("http://backends.test:{port}");
    let gw = gateway(&dns, &name, "").await;
    let admin = admin(&gw);
    wait_listed(admin, &name, &[url(1, port)]).await;

    // One connection to the gateway, so one worker's pool serves every call below.
    let channel = gw.channel().await;
    let mut slow_client = UserServiceClient::new(channel.clone());
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let reply = slow_client.get_user(GetUserRequest { id: "slow".into() }).await;
        (reply, started.elapsed())
    });
    wait_until("the slow call reaches 127.0.0.1", || instances[0].slow_started.load(Ordering::SeqCst)).await;

    dns.set(Answer::Addresses(vec![loopback(2)]));
    dns.wait_asked(3).await;
    let mut client = UserServiceClient::new(channel);
    for _ in 0..10 {
        let user = client.get_user(GetUserRequest { id: "u-1".into() }).await.expect("served");
        assert_eq!(user.into_inner().display_name, "127.0.0.2", "the pool has dropped 127.0.0.1");
    }
    assert!(!slow.is_finished(), "the slow call was still in flight when its address left the pool");

    let (reply, took) = slow.await.expect("join");
    let user = reply.expect("the call in flight completes normally").into_inner();
    assert_eq!((user.id.as_str(), user.display_name.as_str()), ("slow", "127.0.0.1"));
    assert!(took >= SLOW, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_name_stops_resolving_the_last_addresses_keep_serving() {
    let logs = support::logs();
    let dns = Dns::start(Answer::Addresses(vec![loopback(1), loopback(2)])).await;
    let (port, instances, _health) = start_instances().await;
    let name = format!("http://backends.test:{port}");
    let gw = gateway(&dns, &name, "").await;
    let admin = admin(&gw);
    wait_listed(admin, &name, &[url(1, port), url(2, port)]).await;
    let mut client = UserServiceClient::new(gw.channel().await);

    for (answer, asked) in [(Answer::ServFail, 3), (Answer::Empty, 3), (Answer::Silent, 1)] {
        dns.set(answer.clone());
        dns.wait_asked(asked).await;
        let before: Vec<usize> = instances.iter().map(Instance::calls).collect();
        for _ in 0..40 {
            client.get_user(GetUserRequest { id: "u-1".into() }).await.unwrap_or_else(|s| panic!("{answer:?}: {s:?}"));
        }
        let served: Vec<usize> = instances.iter().zip(&before).map(|(i, before)| i.calls() - before).collect();
        assert_eq!(served[0] + served[1], 40, "{answer:?}: the last addresses serve: {served:?}");
        wait_listed(admin, &name, &[url(1, port), url(2, port)]).await;
    }
    let text = logs.text();
    let kept = text.lines().filter(|l| l.contains(&name) && l.contains("keeping its last addresses")).count();
    assert!(kept >= 1, "the failure is logged: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_starts_from_the_addresses_the_name_had() {
    let dns = Dns::start(Answer::Addresses(vec![loopback(1)])).await;
    let (port, instances, _health) = start_instances().await;
    let name = format!("http://backends.test:{port}");
    let gw = gateway(&dns, &name, "").await;
    let admin = admin(&gw);
    wait_listed(admin, &name, &[url(1, port)]).await;
    // The name no longer resolves: the reloaded config's pools have only the old answer to go by
    // (the system's resolver does not know the name either).
    dns.set(Answer::ServFail);
    dns.wait_asked(2).await;

    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("gateway.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:0\ndescriptors: [{}]\nservices:\n  - match: shop.users.v1.UserService\n    backends: [{name}]\n    resolve_interval: 200ms\n    timeout: 30s\ndns:\n  nameservers: [\"{}\"]\n",
        gw.descriptors.display(),
        dns.address
    );
    std::fs::write(&path, yaml).expect("write");
    let gateway = gw.gateway.clone();
    let reloaded = tokio::task::spawn_blocking(move || gateway.reload_config(&path, false)).await.expect("join");
    assert_eq!(reloaded, Ok(true));
    assert_eq!(gw.gateway.config().services[0].default_timeout, Some(Duration::from_secs(30)), "the new config serves");
    let mut client = UserServiceClient::new(gw.channel().await);
    for _ in 0..10 {
        let user = client.get_user(GetUserRequest { id: "u-1".into() }).await.expect("served by the old answer");
        assert_eq!(user.into_inner().display_name, "127.0.0.1");
    }
    assert!(instances[0].calls() >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_address_is_health_checked_and_an_unhealthy_one_gets_no_calls() {
    let dns = Dns::start(Answer::Addresses(vec![loopback(1), loopback(2)])).await;
    let (port, instances, health) = start_instances().await;
    let name = format!("http://backends.test:{port}");
    let checks = "    health_check:\n      interval: 100ms\n      timeout: 90ms\n      unhealthy_threshold: 1\n      healthy_threshold: 1\n";
    let gw = gateway(&dns, &name, checks).await;
    let admin = admin(&gw);
    health[0].set_service_status("", ServingStatus::NotServing).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = wait_listed(admin, &name, &[url(1, port), url(2, port)]).await;
        if shown[0]["health"] == "not_serving" && shown[1]["health"] == "serving" {
            break;
        }
        assert!(Instant::now() < deadline, "each address checked: {shown:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = UserServiceClient::new(gw.channel().await);
    let before = instances[0].calls();
    for _ in 0..20 {
        let user = client.get_user(GetUserRequest { id: "u-1".into() }).await.expect("served");
        assert_eq!(user.into_inner().display_name, "127.0.0.2");
    }
    assert_eq!(instances[0].calls(), before, "the unhealthy address is given no call");

    // A new address is checked too; one that goes stops being checked.
    dns.set(Answer::Addresses(vec![loopback(2), loopback(3)]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = wait_listed(admin, &name, &[url(3, port)]).await;
        if shown[0]["health"] == "serving" {
            break;
        }
        assert!(Instant::now() < deadline, "the new address checked: {shown:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_backend_named_by_dns_is_verified_and_addressed_by_its_name() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let dns = Dns::start(Answer::Addresses(vec![loopback(1)])).await;
    // A certificate for the name alone: no IP address in it.
    let (acceptor, pem) = support::tls_acceptor("backends.test");
    let ca = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(ca.path(), pem).expect("write ca");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let instance = Instance { ip: loopback(1), calls: Arc::default(), slow_started: Arc::default() };
    let routes = tonic::service::Routes::new(instance.service());
    let authorities = Arc::new(Mutex::new(Vec::new()));
    let seen = authorities.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, routes, seen) = (acceptor.clone(), routes.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let authority = request.uri().authority().map(ToString::to_string);
                    seen.lock().unwrap_or_else(PoisonError::into_inner).push(authority);
                    let mut routes = routes.clone();
                    async move { tower::Service::call(&mut routes, request).await }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });

    let name = format!("https://backends.test:{port}");
    let tls = format!("    tls: {{ ca_file: {} }}\n", ca.path().display());
    let gw = gateway(&dns, &name, &tls).await;
    let admin = admin(&gw);
    wait_listed(admin, &name, &[format!("https://127.0.0.1:{port}")]).await;
    let user = UserServiceClient::new(gw.channel().await)
        .get_user(GetUserRequest { id: "u-1".into() })
        .await
        .expect("over TLS, verified against backends.test");
    assert_eq!(user.into_inner().display_name, "127.0.0.1");
    let seen = authorities.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert_eq!(seen, [Some(format!("backends.test:{port}"))], "the backend is addressed by its name");
}

#[test]
fn resolve_interval_and_dns_nameservers_are_checked_at_load() {
    let parse = |yaml: &str| dragoman::config::Config::parse(yaml, std::path::Path::new("."));
    let rule = |extra: &str| {
        format!(
            "services:\n  - match: x.Y\n    backends: [http://10.0.0.1:1, http://localhost:2, http://backends.test:3, 'http://[::1]:4']\n{extra}"
        )
    };
    let config = parse(&format!("{}dns:\n  nameservers: [127.0.0.1:8600, 10.0.0.2]\n", rule(""))).expect("valid");
    let named: Vec<bool> = config.services[0].backends.iter().map(|b| b.resolves).collect();
    assert_eq!(named, [false, false, true, false], "only a DNS name is resolved (not an IP, nor localhost)");
    assert_eq!(config.services[0].resolve_interval, Duration::from_secs(30), "the default");
    let nameservers: Vec<String> = config.dns.nameservers.iter().map(ToString::to_string).collect();
    assert_eq!(nameservers, ["127.0.0.1:8600", "10.0.0.2:53"]);
    let config = parse(&rule("    resolve_interval: 200ms\n")).expect("valid");
    assert_eq!(config.services[0].resolve_interval, Duration::from_millis(200));
    assert!(config.dns.nameservers.is_empty(), "the system's resolv.conf by default");

    for (yaml, key) in [
        (rule("    resolve_interval: 10ms\n"), "services[0].resolve_interval"),
        (rule("    resolve_interval: 2h\n"), "services[0].resolve_interval"),
        (rule("    resolve_interval: soon\n"), "services[0].resolve_interval"),
        (format!("{}dns:\n  nameservers: [consul.local:8600]\n", rule("")), "dns.nameservers[0]"),
        (format!("{}dns:\n  nameservers: []\n", rule("")), "dns.nameservers"),
        (format!("{}dns:\n  servers: [127.0.0.1]\n", rule("")), "servers"),
    ] {
        let err = parse(&yaml).expect_err(&yaml);
        assert!(err.contains(key), "{yaml}: {err}");
    }
}
