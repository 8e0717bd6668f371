//! The `websocket:` section: who may open WebSockets, where the multiplexed socket lives, and
//! how long a quiet socket lives.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `websocket:` section as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketFile {
    /// Origins whose pages may open WebSockets here (`https://app.example.com`), or `"*"` for any.
    /// Browsers send any page's cookies with a WebSocket upgrade, so an unchecked origin lets any
    /// site act as the user (cross-site WebSocket hijacking). Default: none listed, which allows
    /// only the gateway's own origin (the `Origin`'s host and port are the request's `Host`).
    /// A request without `Origin` does not come from a browser page and is always allowed.
    pub allow_origins: Vec<String>,
    /// Path of the multiplexed socket, which carries many calls with an id on every message.
    /// Default `/ws`.
    pub multiplex_path: String,
    /// The gateway pings each socket this often; a socket that has sent nothing, not even the
    /// pong, for two intervals is dropped. Default 30s.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A socket with no message either way for this long is closed: a call with DEADLINE_EXCEEDED,
    /// the multiplexed socket when it has no call open. Default 5m.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest message on a socket either way, in bytes: a client's frame, a backend's reply.
    /// Default: `server.max_message_size`.
    pub max_message_size: Option<u32>,
    /// Most calls open at once on one multiplexed socket. Default 100.
    pub max_calls_per_socket: usize,
}

impl Default for WebSocketFile {
    fn default() -> Self {
        WebSocketFile {
            allow_origins: Vec::new(),
            multiplex_path: "/ws".into(),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            max_message_size: None,
            max_calls_per_socket: 100,
        }
    }
}

/// The longest `ping_interval` or `idle_timeout`: a day (longer ones are mistakes, and would
/// overflow the clocks).
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The shortest: the clocks count milliseconds.
const MIN_DURATION: Duration = Duration::from_millis(10);

/// Which page origins may open a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// The gateway's own origin only.
    SameOrigin,
    Any,
    /// These, compared without regard to ASCII case.
    Listed(Vec<String>),
}

/// The `websocket:` settings as the frontend reads them.
#[derive(Debug, Clone)]
pub struct WebSocketOptions {
    pub allow_origins: AllowedOrigins,
    pub multiplex_path: String,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub max_message_size: u32,
    pub max_calls_per_socket: usize,
}

impl WebSocketOptions {
    /// How long a write to a client may make no progress before the socket is dropped: as long
    /// as a silent client is given (two ping intervals).
    pub fn stall(&self) -> Duration {
        self.ping_interval.saturating_mul(2)
    }

    pub(super) fn from_file(file: WebSocketFile, server: &super::ServerLimits) -> Result<Self, String> {
        let at = |key: &str| format!("at `websocket.{key}`");
        let allow_origins = if file.allow_origins.iter().any(|o| o == "*") {
            AllowedOrigins::Any
        } else if file.allow_origins.is_empty() {
            AllowedOrigins::SameOrigin
        } else {
            for origin in &file.allow_origins {
                let ok = origin.parse::<http::Uri>().is_ok_and(|u| {
                    u.scheme().is_some() && u.host().is_some() && u.path_and_query().is_none_or(|p| p.as_str() == "/")
                });
                if !ok || origin.ends_with('/') {
                    return Err(format!(
                        "{}: {origin:?} is not an origin; write scheme://host[:port], e.g. https://app.example.com",
                        at("allow_origins")
                    ));
                }
            }
            AllowedOrigins::Listed(file.allow_origins)
        };
        if !file.multiplex_path.starts_with('/') {
            return Err(format!("{}: must start with /, got {:?}", at("multiplex_path"), file.multiplex_path));
        }
        for (key, value) in [("ping_interval", file.ping_interval), ("idle_timeout", file.idle_timeout)] {
            if value < MIN_DURATION || value > MAX_DURATION {
                return Err(format!("{}: must be between 10ms and 24h", at(key)));
            }
        }
        let max_message_size = file.max_message_size.unwrap_or(server.max_message_size);
        if max_message_size == 0 || file.max_calls_per_socket == 0 {
            let key = if max_message_size == 0 { "max_message_size" } else { "max_calls_per_socket" };
            return Err(format!("{}: must be at least 1", at(key)));
        }
        Ok(WebSocketOptions {
            allow_origins,
            multiplex_path: file.multiplex_path,
            ping_interval: file.ping_interval,
            idle_timeout: file.idle_timeout,
            max_message_size,
            max_calls_per_socket: file.max_calls_per_socket,
        })
    }
}
