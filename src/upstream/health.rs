//! Active health checks (`services[].health_check`): one checker per rule and backend address
//! asks the backend `grpc.health.v1.Health/Check` every `interval`, and publishes its verdict in
//! the endpoint's shared figures ([`EndpointStats`]), where every worker's balancer reads it.
//!
//! - A check passes only on SERVING within `timeout`; NOT_SERVING, SERVICE_UNKNOWN, an error
//!   status, a broken connection, a failed dial or no answer in time fail it.
//! - The first check of an endpoint nobody checked before decides at once (until then it is
//!   served as healthy); after that `unhealthy_threshold` failures in a row mark it unhealthy
//!   and `healthy_threshold` passes in a row healthy again. Each transition is logged.
//! - Each checker keeps one HTTP/2 connection of its own (h2c, or TLS as the rule's backends
//!   have it) and dials it again when it breaks or a check times out; its calls never take a
//!   stream of the pools' connections, nor count in their figures.
//!
//! Checkers run on the gateway's runtime, not per server worker: one set per config, started
//! when the config becomes current and aborted when it is replaced ([`HealthChecks`]). A backend
//! named by DNS is checked at each address it resolves to, by checkers its resolver (`dns`)
//! starts and stops as the addresses come and go; until its name first resolves, nothing checks
//! it.
//!
//! Not here: what the balancer does with the verdict (`pool`), and passive outlier detection
//! ([`EndpointStats::answered`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::{Backend, Config, HealthCheck, ServiceRule};
use crate::observe::backends::{Backends, Checking, EndpointStats, Health};

/// The health checkers of one config. Dropping it aborts them.
#[derive(Default)]
pub struct HealthChecks {
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecks").field("checkers", &self.tasks.len()).finish()
    }
}

impl HealthChecks {
    /// Starts, on `runtime`, a checker for each backend of each rule of `config` that has a
    /// `health_check`, publishing into `backends`' figures. Backends named by DNS are left to
    /// their resolvers.
    pub fn start(config: &Config, backends: &Backends, runtime: &tokio::runtime::Handle) -> Self {
        let mut tasks = JoinSet::new();
        for rule in &config.services {
            let Some(settings) = &rule.health_check else { continue };
            for backend in rule.backends.iter().filter(|b| !b.resolves) {
                let stats = backends.endpoint(&backend.to_string());
                tasks.spawn_on(checker(rule, settings, backend.clone(), stats), runtime);
            }
        }
        HealthChecks { tasks }
    }
}

/// The checks of `backend` (an address) by `rule`'s `settings`, until the future is dropped. The
/// endpoint counts as checked ([`EndpointStats::checker`]) from this call on, not from the first
/// poll: a checker replacing another keeps the verdict.
pub(super) fn checker(
    rule: &Arc<ServiceRule>,
    settings: &HealthCheck,
    backend: Backend,
    stats: Arc<EndpointStats>,
) -> impl Future<Output = ()> + Send + 'static {
    let checker = Checker {
        backend,
        rule: rule.clone(),
        settings: settings.clone(),
        _checking: stats.checker(),
        stats,
        connection: None,
        streak: Streak::default(),
    };
    checker.run()
}

/// Checks one backend of one rule.
struct Checker {
    backend: Backend,
    /// Its TLS settings, and its pattern for the log.
    rule: Arc<ServiceRule>,
    settings: HealthCheck,
    stats: Arc<EndpointStats>,
    /// Counts the checker for the endpoint while it runs.
    _checking: Checking,
    /// The checks' own connection, while it is open.
    connection: Option<SendRequest<tonic::body::Body>>,
    streak: Streak,
}

impl Checker {
    async fn run(mut self) {
        // The first tick is at once: a fresh gateway learns where its backends stand.
        let mut ticks = tokio::time::interval(self.settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let timeout = self.settings.timeout;
            let outcome = match tokio::time::timeout(timeout, self.check()).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    // A connection whose answer is overdue is not trusted with the next check.
                    self.connection = None;
                    Err(format!("no answer within {}", humantime::format_duration(timeout)))
                }
            };
            self.stats.checked(&outcome);
            let before = self.stats.health();
            let after = self.streak.verdict(before, outcome.is_ok(), &self.settings);
            if after != before {
                self.stats.set_health(after);
                self.log(before, after, outcome.err());
            }
        }
    }

    /// One check: SERVING passes, anything else fails with the reason.
    async fn check(&mut self) -> Result<(), String> {
        let sender = match self.connection.as_ref().filter(|c| !c.is_closed()) {
            Some(sender) => sender.clone(),
            None => {
                self.connection = None;
                let sender = self.dial().await?;
                self.connection = Some(sender.clone());
                sender
            }
        };
        // The configured authority, also when the address is one a name resolved to.
        let origin = format!("{}://{}", if self.backend.tls { "https" } else { "http" }, self.backend.uri_authority);
        let origin = origin.parse().map_err(|e| format!("bad backend URI: {e}"))?;
        let mut client = HealthClient::with_origin(Connection(sender), origin);
        let mut request = tonic::Request::new(HealthCheckRequest { service: self.settings.service.clone() });
        request.set_timeout(self.settings.timeout);
        let status = match client.check(request).await {
            Ok(response) => response.into_inner().status(),
            Err(status) => {
                return Err(format!("the check failed: {:?}: {}", status.code(), status.message()));
            }
        };
        match status {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("the backend answered {}", other.as_str_name())),
        }
    }

    /// A connection for the checks, h2c or TLS as the rule's pools dial it.
    async fn dial(&self) -> Result<SendRequest<tonic::body::Body>, String> {
        let tcp = TcpStream::connect(&self.backend.authority).await.map_err(|e| format!("the dial failed: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.rule.tls {
            None => handshake(tcp).await,
            Some(config) => handshake(super::connection::tls(config, &self.rule, &self.backend, tcp).await?).await,
        }
    }

    fn log(&self, before: Health, after: Health, error: Option<String>) {
        let (backend, service) = (&self.backend, &self.rule.pattern);
        match after {
            Health::NotServing => {
                let error = error.unwrap_or_default();
                tracing::warn!(%backend, %service, %error, "backend unhealthy: its health checks fail; it is given no calls");
            }
            Health::Serving if before == Health::NotServing => {
                tracing::warn!(%backend, %service, "backend healthy again: its health checks pass");
            }
            _ => tracing::debug!(%backend, %service, health = after.as_str(), "backend health checked"),
        }
    }
}

async fn handshake<I>(io: I) -> Result<SendRequest<tonic::body::Body>, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "health check connection closed");
        }
    });
    Ok(sender)
}

/// The checks' connection as the service tonic's client calls.
#[derive(Clone)]
struct Connection(SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// Checks in a row that passed, or failed: what the thresholds count.
#[derive(Debug, Default)]
struct Streak {
    passed: u32,
    failed: u32,
}

impl Streak {
    /// The verdict after a check that `passed` (or not), the endpoint standing at `before`.
    fn verdict(&mut self, before: Health, passed: bool, settings: &HealthCheck) -> Health {
        if passed {
            (self.passed, self.failed) = (self.passed.saturating_add(1), 0);
        } else {
            (self.passed, self.failed) = (0, self.failed.saturating_add(1));
        }
        match before {
            // No verdict yet (or another checker of the address just stopped): the first check
            // decides, so a backend down at start is given no calls after one check.
            Health::Unknown | Health::Unchecked => {
                if passed {
                    Health::Serving
                } else {
                    Health::NotServing
                }
            }
            Health::Serving if self.failed >= settings.unhealthy_threshold => Health::NotServing,
            Health::NotServing if self.passed >= settings.healthy_threshold => Health::Serving,
            standing => standing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(unhealthy_threshold: u32, healthy_threshold: u32) -> HealthCheck {
        HealthCheck {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_threshold,
            healthy_threshold,
            service: String::new(),
        }
    }

    /// The verdicts after each check of `checks` (true: passed), from `Unknown`.
    fn verdicts(settings: &HealthCheck, checks: &[bool]) -> Vec<&'static str> {
        let (mut streak, mut health) = (Streak::default(), Health::Unknown);
        checks
            .iter()
            .map(|passed| {
                health = streak.verdict(health, *passed, settings);
                health.as_str()
            })
            .collect()
    }

    #[test]
    fn the_first_check_decides_then_the_thresholds_do() {
        let s = settings(3, 2);
        let (up, down) = ("serving", "not_serving");
        assert_eq!(verdicts(&s, &[true, false, false, true, false, false, false]), [up, up, up, up, up, up, down]);
        assert_eq!(verdicts(&s, &[false, true, false, true, true, false]), [down, down, down, down, up, up]);
        assert_eq!(verdicts(&settings(1, 1), &[true, false, true, false]), [up, down, up, down]);
    }

    #[test]
    fn a_checker_taking_over_keeps_the_verdict() {
        // A reload's new checker starts with no streak but the endpoint's standing verdict.
        let mut streak = Streak::default();
        assert_eq!(streak.verdict(Health::NotServing, true, &settings(3, 2)), Health::NotServing);
        assert_eq!(streak.verdict(Health::NotServing, true, &settings(3, 2)), Health::Serving);
    }

    /// A gRPC server on loopback whose health service says `status` for `""`.
    async fn backend(status: tonic_health::ServingStatus) -> std::net::SocketAddr {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", status).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _keep = reporter;
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        address
    }

    fn checked_config(addresses: &[String]) -> Config {
        let yaml = format!(
            "services:\n  - match: x.Y\n    backends: [{}]\n    health_check:\n      interval: 50ms\n      timeout: 40ms\n",
            addresses.join(", ")
        );
        Config::parse(&yaml, std::path::Path::new(".")).expect("config")
    }

    async fn wait_for(stats: &EndpointStats, health: Health) {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while stats.health() != health {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(waited.await.is_ok(), "{} is not {health:?} within 5 s: {}", stats.address, stats.to_json());
    }

    #[tokio::test]
    async fn checkers_publish_their_verdict_and_leave_it_unchecked_when_stopped() {
        let serving = format!("http://{}", backend(tonic_health::ServingStatus::Serving).await);
        let not_serving = format!("http://{}", backend(tonic_health::ServingStatus::NotServing).await);
        let backends = Backends::default();
        let checks = HealthChecks::start(
            &checked_config(&[serving.clone(), not_serving.clone()]),
            &backends,
            &tokio::runtime::Handle::current(),
        );
        assert_eq!(checks.tasks.len(), 2, "one per backend");
        let (up, down) = (backends.endpoint(&serving), backends.endpoint(&not_serving));
        wait_for(&up, Health::Serving).await;
        wait_for(&down, Health::NotServing).await;
        assert!(down.to_json()["last_check_error"].as_str().is_some_and(|e| e.contains("NOT_SERVING")));
        drop(checks);
        wait_for(&up, Health::Unchecked).await;
        wait_for(&down, Health::Unchecked).await;
    }
}
