//! The one error type of the request path. Every error knows where it came from (the client, the
//! gateway, a backend) and whether retrying the call could help; it becomes a gRPC status in one
//! place ([`GatewayError::to_status`]) and each frontend maps that status to its own protocol.
//! A refusal's [`Advice`] (when to come back, how to authenticate, the limits in force) travels
//! with it: as `google.rpc` details in the status, and as HTTP headers where HTTP is spoken.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Code;

/// Where an error was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The request itself was wrong (unknown method, malformed input, deadline too short).
    Client,
    /// The gateway refused or failed (no backend configured, limits).
    Gateway,
    /// A backend could not be reached or failed mid-call.
    Upstream,
}

/// Why the gateway itself turned a call away (not a backend's answer): the `reason` of
/// `dragoman_refusals_total`. A layer that refuses calls names its reason here — one variant,
/// one name — and tags its error with [`GatewayError::refused`]: the access log counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The call's deadline passed before its reply.
    Deadline,
    /// No backend is configured, or none could be reached.
    NoBackend,
    /// The active health checks mark every backend of the service unhealthy.
    NoHealthyBackend,
    /// Every connection to the backends was at their stream limit for longer than the call could wait.
    BackendsBusy,
    /// The gateway was at `server.max_calls_in_flight`.
    CallsInFlight,
    /// The service's backends were at their `max_calls_in_flight`.
    ServiceCallsInFlight,
    /// The gateway was at `server.max_connections` (counted per connection, not per call).
    Connections,
    /// The call carried no credential, or one that did not verify.
    Unauthenticated,
    /// The caller is known, but no rule lets it call the method.
    PermissionDenied,
    /// A rate limit was reached.
    RateLimited,
    /// A shared limit's store (Redis) could not be asked, and the limit fails closed.
    LimitUnavailable,
}

impl Refusal {
    pub const ALL: [Refusal; 11] = [
        Refusal::Deadline,
        Refusal::NoBackend,
        Refusal::NoHealthyBackend,
        Refusal::BackendsBusy,
        Refusal::CallsInFlight,
        Refusal::ServiceCallsInFlight,
        Refusal::Connections,
        Refusal::Unauthenticated,
        Refusal::PermissionDenied,
        Refusal::RateLimited,
        Refusal::LimitUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Deadline => "deadline",
            Refusal::NoBackend => "no_backend",
            Refusal::NoHealthyBackend => "no_healthy_backend",
            Refusal::BackendsBusy => "backends_busy",
            Refusal::CallsInFlight => "calls_in_flight",
            Refusal::ServiceCallsInFlight => "service_calls_in_flight",
            Refusal::Connections => "connections",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::PermissionDenied => "permission_denied",
            Refusal::RateLimited => "rate_limited",
            Refusal::LimitUnavailable => "limit_unavailable",
        }
    }
}

/// An error on the request path, with the gRPC code it maps to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub code: Code,
    pub message: String,
    pub origin: Origin,
    /// True when the call never reached a backend, so sending it again is safe.
    pub retryable: bool,
    /// Why the gateway refused the call, when it did.
    pub refusal: Option<Refusal>,
    /// What the refusal tells the client beyond its code; boxed, as few errors carry it.
    pub advice: Option<Box<Advice>>,
}

/// What a refusal tells the client beyond its code and message: as `google.rpc.RetryInfo` and
/// `google.rpc.ErrorInfo` details in the status (gRPC, and the JSON or XML status of REST,
/// WebSocket and SOAP), and for REST and SOAP also as HTTP headers (`Retry-After`,
/// `WWW-Authenticate`, `RateLimit-Policy`, `RateLimit`).
#[derive(Debug, Clone, Default)]
pub struct Advice {
    /// When the call may succeed if sent again.
    pub retry_after: Option<Duration>,
    /// `ErrorInfo.reason`: a constant in UPPER_SNAKE_CASE a program can branch on.
    pub reason: Option<&'static str>,
    /// `ErrorInfo.metadata`: which rule or limit said no (never a secret).
    pub metadata: Vec<(String, String)>,
    /// Headers for the HTTP protocols' answers.
    pub headers: HeaderMap,
}

/// A duration in whole seconds, rounded up: how HTTP's fields count time (`Retry-After`,
/// `RateLimit`'s `t`), so a client that waits as told is not early.
pub fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// `ErrorInfo.domain`: who decided.
pub const ERROR_DOMAIN: &str = "dragoman";

impl Advice {
    /// Come back in `after`: RetryInfo, and `Retry-After` in whole seconds, rounded up (RFC 9110
    /// 10.2.3), so a client that waits as told is not refused again.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.headers.insert(http::header::RETRY_AFTER, HeaderValue::from(whole_seconds(after)));
        self.retry_after = Some(after);
        self
    }

    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.push((key.to_owned(), value.into()));
        self
    }

    /// A header for the HTTP protocols; a value that is not a valid header is left out.
    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.append(name, value);
        }
        self
    }
}

impl GatewayError {
    pub fn new(code: Code, origin: Origin, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), origin, retryable: false, refusal: None, advice: None }
    }

    /// The same error, counted as a refusal for `reason`.
    pub fn refused(self, reason: Refusal) -> Self {
        Self { refusal: Some(reason), ..self }
    }

    /// The same error, telling the client more.
    pub fn advised(self, advice: Advice) -> Self {
        Self { advice: Some(Box::new(advice)), ..self }
    }

    /// The headers an HTTP answer to this error carries, if any.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.advice.as_deref().map(|advice| &advice.headers)
    }

    /// A backend could not be reached: nothing was sent, so a retry elsewhere is safe.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self { retryable: true, ..Self::new(Code::Unavailable, Origin::Upstream, message) }
    }

    pub fn deadline_exceeded() -> Self {
        Self::new(Code::DeadlineExceeded, Origin::Gateway, "deadline exceeded: the call did not finish in time")
            .refused(Refusal::Deadline)
    }

    /// The status a client sees, with the advice's details.
    pub fn to_status(&self) -> tonic::Status {
        let Some(advice) = self.advice.as_deref() else {
            return tonic::Status::new(self.code, self.message.clone());
        };
        use tonic_types::{ErrorDetails, StatusExt};
        let mut details = ErrorDetails::new();
        if let Some(after) = advice.retry_after {
            details.set_retry_info(Some(after));
        }
        if let Some(reason) = advice.reason {
            details.set_error_info(
                reason,
                ERROR_DOMAIN,
                advice.metadata.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
            );
        }
        tonic::Status::with_error_details(self.code, self.message.clone(), details)
    }
}
