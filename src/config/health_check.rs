//! `services[].health_check`: active health checks of a rule's backends, as written and checked.
//!
//! Only settings here: the checks themselves (`grpc.health.v1.Health/Check` on a connection of
//! their own) run in `upstream::health`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the gateway checks each backend of a rule, as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckFile {
    /// How often each backend is checked, from 10ms to 1h. Default 5s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long a check (a dial, when the check's connection is down, and the call) may take
    /// before it counts as failed; less than `interval`. Default 1s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Failed checks in a row that mark a healthy backend unhealthy: the balancer then gives it
    /// no call. Default 3.
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that mark an unhealthy backend healthy again. Default 2.
    pub healthy_threshold: u32,
    /// The service name sent in `HealthCheckRequest`; `""` (the default) asks about the whole
    /// server.
    pub service: String,
}

impl Default for HealthCheckFile {
    fn default() -> Self {
        HealthCheckFile {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            service: String::new(),
        }
    }
}

/// The most checks in a row a threshold may ask for.
const MAX_THRESHOLD: u32 = 1000;

/// `services[].health_check`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub service: String,
}

impl HealthCheck {
    /// Checks `file`; `at` names a key of it in an error (`at \`services[0].health_check.interval\``).
    pub(super) fn from_file(file: HealthCheckFile, at: impl Fn(&str) -> String) -> Result<Self, String> {
        if file.interval < Duration::from_millis(10) || file.interval > Duration::from_secs(3600) {
            return Err(format!("{}: must be between 10ms and 1h", at("interval")));
        }
        if file.timeout.is_zero() || file.timeout >= file.interval {
            return Err(format!(
                "{}: must be more than 0s and less than `interval` ({})",
                at("timeout"),
                humantime::format_duration(file.interval)
            ));
        }
        for (key, value) in
            [("unhealthy_threshold", file.unhealthy_threshold), ("healthy_threshold", file.healthy_threshold)]
        {
            if !(1..=MAX_THRESHOLD).contains(&value) {
                return Err(format!("{}: must be between 1 and {MAX_THRESHOLD}, got {value}", at(key)));
            }
        }
        Ok(HealthCheck {
            interval: file.interval,
            timeout: file.timeout,
            unhealthy_threshold: file.unhealthy_threshold,
            healthy_threshold: file.healthy_threshold,
            service: file.service,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn rule(health_check: &str) -> Result<Config, String> {
        let yaml =
            format!("services:\n  - match: x.Y\n    backends: [http://127.0.0.1:1]\n    health_check:\n{health_check}");
        Config::parse(&yaml, Path::new("."))
    }

    #[test]
    fn defaults_are_filled_in_and_shown() {
        let config = rule("      service: x.Y\n").expect("valid");
        let check = config.services[0].health_check.clone().expect("checked");
        assert_eq!((check.interval.as_secs(), check.timeout.as_secs()), (5, 1));
        assert_eq!((check.unhealthy_threshold, check.healthy_threshold, check.service.as_str()), (3, 2, "x.Y"));
        let shown = &config.effective()["services"][0]["health_check"];
        assert_eq!((shown["interval"].as_str(), shown["timeout"].as_str()), (Some("5s"), Some("1s")), "{shown}");
        let unchecked = Config::parse("services:\n  - match: x.Y\n    backends: [http://a:1]\n", Path::new("."));
        assert!(unchecked.expect("valid").services[0].health_check.is_none(), "off unless given");
    }

    #[test]
    fn errors_name_the_key() {
        for (yaml, key, says) in [
            ("      interval: 0s\n", "services[0].health_check.interval", "between 10ms and 1h"),
            ("      interval: 2h\n", "services[0].health_check.interval", "between 10ms and 1h"),
            ("      interval: soon\n", "services[0].health_check.interval", ""),
            ("      timeout: 0s\n", "services[0].health_check.timeout", "less than `interval` (5s)"),
            ("      interval: 1s\n      timeout: 1s\n", "services[0].health_check.timeout", "less than `interval`"),
            ("      timeout: 6s\n", "services[0].health_check.timeout", "less than `interval`"),
            ("      unhealthy_threshold: 0\n", "services[0].health_check.unhealthy_threshold", "between 1 and"),
            ("      healthy_threshold: 0\n", "services[0].health_check.healthy_threshold", "between 1 and"),
            ("      healthy_threshold: 5000\n", "services[0].health_check.healthy_threshold", "between 1 and"),
            ("      path: /health\n", "services[0].health_check", "unknown field `path`"),
        ] {
            let err = rule(yaml).expect_err(yaml);
            assert!(err.contains(key) && err.contains(says), "{yaml}: {err}");
        }
    }
}
