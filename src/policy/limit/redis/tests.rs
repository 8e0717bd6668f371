//! Against a real redis-server per test (`scripts/install-test-tools.sh` installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{RedisLimiter, RedisUnavailable};
use crate::policy::limit::{Decision, Quota};

const TIMEOUT: Duration = Duration::from_millis(500);
/// Room for a loaded two-core machine on top of a bound.
const SLACK: Duration = Duration::from_millis(300);

/// A redis-server on a free loopback port, killed on `Drop` (tests/support/redis.rs for the
/// integration tests; unit tests cannot import it).
struct Redis {
    url: String,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
            if let Some(child) = spawn(port) {
                return Redis { url: format!("redis://127.0.0.1:{port}/0"), port, child: Some(child) };
            }
        }
        panic!("redis-server does not start (is it installed? scripts/install-test-tools.sh)");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(self.port).expect("redis-server restarts on its port"));
    }

    fn limiter(&self) -> RedisLimiter {
        RedisLimiter::new(&self.url, TIMEOUT).expect("valid URL")
    }

    async fn pttl(&self, key: &str) -> i64 {
        let client = redis::Client::open(self.url.as_str()).expect("url");
        let mut connection = client.get_multiplexed_async_connection().await.expect("connects");
        redis::cmd("PTTL").arg(key).query_async(&mut connection).await.expect("PTTL")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts redis-server on `port`, ready once it logs so and answers PING; None if it exits.
fn spawn(port: u16) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs");
    let mut log = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    while !line.contains("Ready to accept connections") {
        line.clear();
        if log.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("accepts");
    stream.write_all(b"PING\r\n").expect("PING");
    let mut pong = [0; 7];
    stream.read_exact(&mut pong).expect("PONG");
    assert_eq!(&pong, b"+PONG\r\n");
    Some(child)
}

fn quota(limit: u32, period: Duration) -> Quota {
    Quota { limit, period }
}

#[test]
fn a_check_can_cross_threads() {
    fn send<T: Send>(_: &T) {}
    let limiter = RedisLimiter::new("redis://127.0.0.1:1/0", TIMEOUT).expect("valid URL");
    send(&limiter.check("k", quota(1, Duration::from_secs(1))));
    fn shared<T: Send + Sync>() {}
    shared::<RedisLimiter>();
}

#[tokio::test]
async fn a_burst_of_limit_calls_then_a_refusal() {
    let redis = Redis::start();
    let limiter = redis.limiter();
    let quota = quota(5, Duration::from_secs(10));
    for remaining in [4, 3, 2, 1, 0] {
        let decision = limiter.check("dragoman:test:burst", quota).await.expect("redis answers");
        assert!(decision.allowed, "{decision:?}");
        assert_eq!(decision.remaining, remaining, "{decision:?}");
        assert_eq!(decision.retry_after, Duration::ZERO);
        if remaining == 0 {
            let reset = decision.reset_after;
            assert!(reset <= Duration::from_secs(10) && reset > Duration::from_millis(9_900), "{decision:?}");
        }
    }
    let refused = limiter.check("dragoman:test:burst", quota).await.expect("redis answers");
    assert!(!refused.allowed, "{refused:?}");
    assert_eq!(refused.remaining, 0);
    let retry = refused.retry_after;
    assert!(retry <= Duration::from_secs(2) && retry > Duration::from_millis(1_900), "{refused:?}");
    assert!(refused.reset_after > Duration::from_millis(9_900), "{refused:?}");
    // Another key has its own quota.
    let other = limiter.check("dragoman:test:other", quota).await.expect("redis answers");
    assert!(other.allowed && other.remaining == 4, "{other:?}");
}

#[tokio::test]
async fn one_more_call_after_the_emission_interval() {
    let redis = Redis::start();
    let limiter = redis.limiter();
    let quota = quota(2, Duration::from_millis(200));
    for _ in 0..2 {
        assert!(limiter.check("k", quota).await.expect("answers").allowed);
    }
    let refused = limiter.check("k", quota).await.expect("answers");
    assert!(!refused.allowed);
    assert!(refused.retry_after <= Duration::from_millis(100), "{refused:?}");
    tokio::time::sleep(refused.retry_after).await;
    let again = limiter.check("k", quota).await.expect("answers");
    assert!(again.allowed && again.remaining == 0, "{again:?}");
    let refused = limiter.check("k", quota).await.expect("answers");
    assert!(!refused.allowed, "one call per interval, not a new burst: {refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_quota() {
    let redis = Redis::start();
    let replicas = [Arc::new(redis.limiter()), Arc::new(redis.limiter())];
    let quota = quota(5, Duration::from_secs(10));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..20 {
        let replica = replicas[i % 2].clone();
        calls.spawn(async move { replica.check("dragoman:shared:client", quota).await });
    }
    let decisions: Vec<Decision> = calls.join_all().await.into_iter().map(|d| d.expect("answers")).collect();
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 5, "{decisions:?}");
    let mut remaining: Vec<u32> = decisions.iter().filter(|d| d.allowed).map(|d| d.remaining).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn keys_expire_when_the_quota_is_whole() {
    let redis = Redis::start();
    let limiter = redis.limiter();
    let quota = quota(5, Duration::from_secs(10));
    limiter.check("k", quota).await.expect("answers");
    let pttl = redis.pttl("k").await;
    assert!(pttl > 1_900 && pttl <= 2_000, "one interval: {pttl}");
    for _ in 0..5 {
        limiter.check("k", quota).await.expect("answers");
    }
    let pttl = redis.pttl("k").await;
    assert!(pttl > 9_800 && pttl <= 10_000, "at most a period: {pttl}");
    // The TAT is stored as an integer of microseconds, not Lua's %.14g rounding of it.
    let client = redis::Client::open(redis.url.as_str()).expect("url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connects");
    let tat: String = redis::cmd("GET").arg("k").query_async(&mut connection).await.expect("GET");
    assert!(tat.len() >= 16 && tat.bytes().all(|b| b.is_ascii_digit()), "{tat}");

    let short = limiter.check("short", self::quota(1, Duration::from_millis(50))).await.expect("answers");
    tokio::time::sleep(short.reset_after + Duration::from_millis(20)).await;
    assert_eq!(redis.pttl("short").await, -2, "gone");
}

#[tokio::test]
async fn calls_waiting_for_the_first_connection_share_it() {
    let redis = Redis::start();
    let limiter = redis.limiter();
    let quota = quota(100, Duration::from_secs(10));
    let checks = (0..10).map(|_| limiter.check("k", quota));
    for decision in futures_util::future::join_all(checks).await {
        assert!(decision.expect("every call waits for the one connect").allowed);
    }
}

#[tokio::test]
async fn redis_down_fails_fast_then_comes_back() {
    let mut redis = Redis::start();
    let limiter = redis.limiter();
    let quota = quota(5, Duration::from_secs(10));
    assert!(limiter.check("k", quota).await.expect("up").allowed);

    redis.kill();
    let failed_at = Instant::now();
    let error = limiter.check("k", quota).await.expect_err("redis is down");
    assert!(failed_at.elapsed() < TIMEOUT + SLACK, "{:?}", failed_at.elapsed());
    assert_eq!(error.url, redis.url);
    for _ in 0..5 {
        let start = Instant::now();
        limiter.check("k", quota).await.expect_err("in back-off");
        assert!(start.elapsed() < TIMEOUT / 5, "answered at once: {:?}", start.elapsed());
    }

    redis.restart();
    let error: RedisUnavailable = limiter.check("k", quota).await.expect_err("still in back-off");
    assert!(failed_at.elapsed() < Duration::from_secs(1), "{error}");
    let back = loop {
        match limiter.check("k", quota).await {
            Ok(decision) => break decision,
            Err(_) if failed_at.elapsed() < Duration::from_secs(1) + TIMEOUT + SLACK => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("redis is back, but: {e}"),
        }
    };
    assert!(back.allowed && back.remaining == 4, "an empty redis: {back:?}");
}

#[tokio::test]
async fn a_silent_server_is_bounded_by_the_timeout() {
    // Accepts connections (the kernel does) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("redis://{}/0", silent.local_addr().expect("address"));
    let limiter = RedisLimiter::new(&url, TIMEOUT).expect("valid URL");
    let quota = quota(5, Duration::from_secs(10));
    let start = Instant::now();
    let error = limiter.check("k", quota).await.expect_err("no answer");
    assert!(start.elapsed() >= TIMEOUT && start.elapsed() < TIMEOUT + SLACK, "{:?}: {error}", start.elapsed());
    let start = Instant::now();
    limiter.check("k", quota).await.expect_err("in back-off");
    assert!(start.elapsed() < TIMEOUT / 5, "{:?}", start.elapsed());
}

#[tokio::test]
async fn new_opens_nothing_and_errors_hide_the_password() {
    assert!(RedisLimiter::new("http://example.com", TIMEOUT).is_err());
    // Nothing listens on port 1: new succeeds all the same, the check fails.
    let limiter = RedisLimiter::new("redis://:hunter2@127.0.0.1:1/3", TIMEOUT).expect("valid URL");
    let error = limiter.check("k", quota(1, Duration::from_secs(1))).await.expect_err("refused");
    assert_eq!(error.url, "redis://127.0.0.1:1/3");
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[tokio::test]
async fn a_quota_of_zero_admits_nothing() {
    let limiter = RedisLimiter::new("redis://127.0.0.1:1/0", TIMEOUT).expect("valid URL");
    let decision = limiter.check("k", quota(0, Duration::from_secs(1))).await.expect("no redis needed");
    assert!(!decision.allowed);
    assert_eq!(decision.retry_after, Duration::from_secs(1));
}
