//! `match:` values of the auth rules and rate limits: which calls a rule covers. A method
//! (`pkg.Service/Method`), a service (`pkg.Service`) or a package pattern (`pkg.*`, `*`), the most
//! specific winning — the same patterns `services:` routes by.

use crate::config::ServicePattern;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One method of one service.
    Method { service: String, method: String },
    /// A service or a package pattern.
    Services(ServicePattern),
}

impl Selector {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((service, method)) => {
                let valid = !method.is_empty() && method.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                match ServicePattern::parse(service) {
                    Ok(ServicePattern::Exact(service)) if valid => {
                        Ok(Selector::Method { service, method: method.to_owned() })
                    }
                    _ => Err(format!("expected pkg.Service/Method, pkg.Service or pkg.*, got {s:?}")),
                }
            }
            None => ServicePattern::parse(s).map(Selector::Services),
        }
    }

    /// How specific the match is, or None when the call is not covered: a method before its
    /// service, a service before a pattern, a longer pattern before a shorter one.
    pub fn specificity(&self, service: &str, method: &str) -> Option<(u8, usize)> {
        match self {
            Selector::Method { service: s, method: m } => (s == service && m == method).then_some((2, 0)),
            Selector::Services(ServicePattern::Exact(s)) => (s == service).then_some((1, 0)),
            Selector::Services(pattern) => pattern.specificity(service).map(|length| (0, length)),
        }
    }

    /// True when this names one method of `service`.
    pub fn names_a_method_of(&self, service: &str) -> bool {
        matches!(self, Selector::Method { service: s, .. } if s == service)
    }

    /// Whether the call `/service/method` is covered (at any specificity).
    pub fn covers(&self, service: &str, method: &str) -> bool {
        self.specificity(service, method).is_some()
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Method { service, method } => write!(f, "{service}/{method}"),
            Selector::Services(pattern) => pattern.fmt(f),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_selector_wins_and_bad_ones_are_named() {
        let method = Selector::parse("shop.v1.Orders/Create").expect("test set-up");
        let service = Selector::parse("shop.v1.Orders").expect("test set-up");
        let package = Selector::parse("shop.*").expect("test set-up");
        let all = Selector::parse("*").expect("test set-up");
        let at = |s: &Selector| s.specificity("shop.v1.Orders", "Create");
        assert!(at(&method) > at(&service) && at(&service) > at(&package) && at(&package) > at(&all));
        assert_eq!(method.specificity("shop.v1.Orders", "Get"), None);
        assert!(method.names_a_method_of("shop.v1.Orders"));
        assert_eq!(method.to_string(), "shop.v1.Orders/Create");
        for bad in ["shop.*/Create", "shop.v1.Orders/", "/Create", "shop..x", "shop.v1.Orders/Cre-ate"] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
