//! `dns:`: which nameservers the gateway asks for the addresses of backends named by DNS
//! (`services[].backends` whose host is a name), as written and checked.
//!
//! Only settings here: the resolution itself (on a schedule, `services[].resolve_interval`) runs
//! in `upstream::dns`.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The `dns:` section as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// Nameservers to ask instead of the system's (`/etc/resolv.conf`): `ip:port`, or an IP for
    /// port 53 — e.g. Consul's DNS at `127.0.0.1:8600`. Asked over UDP (TCP for a truncated
    /// answer). `/etc/hosts` is read first either way.
    #[serde(default)]
    pub nameservers: Vec<String>,
}

/// `dns:`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    /// Empty: the system's configuration.
    pub nameservers: Vec<SocketAddr>,
}

impl Dns {
    pub(super) fn from_file(file: &DnsFile) -> Result<Self, String> {
        if file.nameservers.is_empty() {
            return Err(
                "at `dns.nameservers`: expected at least one ip:port (leave `dns:` out for the system's resolv.conf)"
                    .to_owned(),
            );
        }
        let nameservers = file
            .nameservers
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<SocketAddr>()
                    .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        format!("at `dns.nameservers[{i}]`: expected an ip:port or an IP (port 53), got {text:?}")
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Dns { nameservers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(nameservers: &[&str]) -> Result<Dns, String> {
        Dns::from_file(&DnsFile { nameservers: nameservers.iter().map(|s| (*s).to_owned()).collect() })
    }

    #[test]
    fn nameservers_are_addresses_port_53_by_default() {
        let dns = parsed(&["127.0.0.1:8600", "10.0.0.2", "[::1]:5353"]).expect("valid");
        let shown: Vec<String> = dns.nameservers.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["127.0.0.1:8600", "10.0.0.2:53", "[::1]:5353"]);
        let err = parsed(&["127.0.0.1:8600", "consul.local:8600"]).expect_err("a name");
        assert!(err.contains("dns.nameservers[1]") && err.contains("consul.local"), "{err}");
        assert!(parsed(&[]).expect_err("empty").contains("dns.nameservers"));
    }
}
