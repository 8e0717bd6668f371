//! The `soap:` section: where the SOAP endpoints live, what their WSDL says their address is,
//! and how streaming methods are bounded.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `soap:` section as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoapFile {
    /// Serve SOAP at all. Default true.
    pub enabled: bool,
    /// Where the SOAP endpoints live: `<path_prefix>/<package.Service>`, its WSDL at `?wsdl`, a
    /// listing at `<path_prefix>/`. Default `/soap`.
    pub path_prefix: String,
    /// The base URL the WSDL gives as the services' address (`https://api.example.com`), for a
    /// gateway behind a proxy or TLS terminator. Default: `http://` and the `Host` the client
    /// asked for.
    pub public_url: Option<String>,
    /// Most messages a streaming method's reply may collect into one SOAP response; past it the
    /// call is cancelled and the client gets a fault (RESOURCE_EXHAUSTED). Default 1000.
    pub max_stream_messages: usize,
    /// The deadline of a streaming method's call when the client sets none: a SOAP response
    /// needs the stream to end, and a stream that never does (a watch) ends in a fault
    /// (DEADLINE_EXCEEDED) instead of a hang. Default 30s.
    #[serde(with = "humantime_serde")]
    pub stream_timeout: Duration,
}

impl Default for SoapFile {
    fn default() -> Self {
        SoapFile {
            enabled: true,
            path_prefix: "/soap".into(),
            public_url: None,
            max_stream_messages: 1000,
            stream_timeout: Duration::from_secs(30),
        }
    }
}

/// The `soap:` settings as the frontend reads them.
#[derive(Debug, Clone)]
pub struct SoapOptions {
    pub enabled: bool,
    /// Without a trailing slash.
    pub path_prefix: String,
    /// Without a trailing slash.
    pub public_url: Option<String>,
    pub max_stream_messages: usize,
    pub stream_timeout: Duration,
}

impl SoapOptions {
    pub(super) fn from_file(file: SoapFile) -> Result<Self, String> {
        let at = |key: &str| format!("at `soap.{key}`");
        let prefix = file.path_prefix.trim_end_matches('/');
        if !file.path_prefix.starts_with('/')
            || prefix.is_empty()
            || prefix.contains(['?', '#', ' ', '"', '<', '>', '&', '\''])
        {
            return Err(format!("{}: a path like /soap, got {:?}", at("path_prefix"), file.path_prefix));
        }
        let public_url = match file.public_url {
            None => None,
            Some(url) => {
                let ok = url.parse::<http::Uri>().is_ok_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() && u.query().is_none()
                });
                if !ok || url.contains(['<', '>', '"', '&', '\'']) {
                    return Err(format!(
                        "{}: an http(s) URL like https://api.example.com, got {url:?}",
                        at("public_url")
                    ));
                }
                Some(url.trim_end_matches('/').to_owned())
            }
        };
        if file.max_stream_messages == 0 {
            return Err(format!("{}: must be at least 1", at("max_stream_messages")));
        }
        if file.stream_timeout < Duration::from_millis(1) || file.stream_timeout > Duration::from_secs(24 * 3600) {
            return Err(format!("{}: must be between 1ms and 24h", at("stream_timeout")));
        }
        Ok(SoapOptions {
            enabled: file.enabled,
            path_prefix: prefix.to_owned(),
            public_url,
            max_stream_messages: file.max_stream_messages,
            stream_timeout: file.stream_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(yaml: &str) -> Result<Config, String> {
        Config::parse(yaml, std::path::Path::new("."))
    }

    #[test]
    fn soap_and_admin_settings_are_checked() {
        let ok = parse("soap:\n  path_prefix: /legacy/\n  public_url: https://api.example.com/\nadmin:\n  listen: 127.0.0.1:9901\n")
            .expect("valid");
        assert_eq!(ok.soap.path_prefix, "/legacy");
        assert_eq!(ok.soap.public_url.as_deref(), Some("https://api.example.com"));
        assert_eq!(ok.admin, Some(([127, 0, 0, 1], 9901).into()));
        let refused = [
            ("soap:\n  path_prefix: soap\n", "soap.path_prefix"),
            ("soap:\n  path_prefix: /\n", "soap.path_prefix"),
            ("soap:\n  path_prefix: /a\"b\n", "soap.path_prefix"),
            ("soap:\n  public_url: ftp://example.com\n", "soap.public_url"),
            ("soap:\n  public_url: https://example.com/<x>\n", "soap.public_url"),
            ("soap:\n  max_stream_messages: 0\n", "soap.max_stream_messages"),
            ("soap:\n  stream_timeout: 0s\n", "soap.stream_timeout"),
            ("soap:\n  stream_timeout: 2d\n", "soap.stream_timeout"),
            ("admin:\n  listen: nowhere\n", "admin.listen"),
        ];
        for (yaml, key) in refused {
            let error = parse(yaml).expect_err(yaml);
            assert!(error.contains(&format!("`{key}`")), "{yaml}: {error}");
        }
    }
}
