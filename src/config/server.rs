//! The `server:` section: limits on the listener and on what one call may carry, applied at the
//! edge (`server.rs`) before any frontend, because they are about sockets and bytes, not about
//! which method is called. The defaults are what a production deployment would pick; each can be
//! raised or lowered, none can be switched off (an unbounded listener is a denial of service
//! waiting for its client).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `server:` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerLimits {
    /// Most client connections open at once, over all workers. A connection past it is closed as
    /// soon as it is accepted. Default 10000.
    pub max_connections: usize,
    /// Most requests in flight at once, over all workers and connections (a streaming call counts
    /// until its response ends). Past it a request is answered at once with UNAVAILABLE (gRPC) or
    /// 503 (HTTP). Default 10000.
    pub max_calls_in_flight: usize,
    /// How long a client has to start: to send a connection's first bytes, then its first
    /// request (slowloris), and each HTTP/1.1 request head — so an HTTP/1.1 keep-alive connection
    /// quiet for this long is closed too. Default 10s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An HTTP/2 connection with no request in flight for this long is closed (GOAWAY, so clients
    /// reconnect cleanly). Checked lazily: closed between one and two periods after its last
    /// request ended. Default 5m.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a client has to send a whole request body that the gateway reads before calling
    /// (REST unary and server-streaming calls): a body trickled in slower is answered 408.
    /// Default 60s.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// HTTP/2 PING sent to a quiet client connection this often... Default 60s.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// ...which is closed when the PING is not answered within this. Default 20s.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    /// TCP keep-alive probes after this long without traffic, so the kernel finds dead peers.
    /// Default 60s.
    #[serde(with = "humantime_serde")]
    pub tcp_keepalive: Duration,
    /// Largest request head, in bytes: HTTP/1.1 request line and headers, HTTP/2 header list.
    /// At least 8192. Default 65536.
    pub max_header_size: u32,
    /// HTTP/2 streams one client connection may have open at once: with `max_calls_in_flight`, how
    /// many connections it takes to fill the gateway (per-client limits are rate limiting's job).
    /// Default 100.
    pub max_concurrent_streams: u32,
    /// Largest gRPC message, in bytes, in either direction (from clients and from backends), as
    /// tonic's default: a larger one ends its call with RESOURCE_EXHAUSTED. Default 4 MiB.
    pub max_message_size: u32,
    /// How long calls in flight get to finish after shutdown begins. Default 10s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// On SIGTERM, how long the gateway goes on accepting after `/readyz` turns false, so that a
    /// load balancer polling it stops sending before the listener closes (Kubernetes: a little
    /// more than the readiness probe's period). Default 0s.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 10_000,
            max_calls_in_flight: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            body_read_timeout: Duration::from_secs(60),
            http2_keepalive_interval: Duration::from_secs(60),
            http2_keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Duration::from_secs(60),
            max_header_size: 64 << 10,
            max_concurrent_streams: 100,
            max_message_size: 4 << 20,
            drain_timeout: Duration::from_secs(10),
            shutdown_delay: Duration::ZERO,
        }
    }
}

impl ServerLimits {
    /// Checks what serde cannot: zero where zero would mean "never", and hyper's own bounds.
    pub(super) fn validate(&self) -> Result<(), String> {
        let at = |key: &str| format!("at `server.{key}`");
        let counts = [
            ("max_connections", self.max_connections),
            ("max_calls_in_flight", self.max_calls_in_flight),
            ("max_concurrent_streams", self.max_concurrent_streams as usize),
            ("max_message_size", self.max_message_size as usize),
        ];
        for (key, value) in counts {
            if value == 0 {
                return Err(format!("{}: must be at least 1", at(key)));
            }
        }
        let durations = [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("http2_keepalive_interval", self.http2_keepalive_interval),
            ("http2_keepalive_timeout", self.http2_keepalive_timeout),
            ("tcp_keepalive", self.tcp_keepalive),
        ];
        for (key, value) in durations {
            if value.is_zero() {
                return Err(format!("{}: must be longer than zero", at(key)));
            }
        }
        if self.max_header_size < 8192 {
            return Err(format!(
                "{}: must be at least 8192 bytes, got {}",
                at("max_header_size"),
                self.max_header_size
            ));
        }
        Ok(())
    }
}
