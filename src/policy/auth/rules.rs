//! Authorization rules: which callers may call which methods.
//!
//! A call is judged by the most specific rule whose `match` covers it. No rule at all: the call
//! is open (auth configured only to learn identities; `match: '*'` covers everything else). Once
//! a rule names a method of a service, only rules naming that service — one of its methods, or
//! the service itself — decide its calls, not a package pattern: a rule written for one method
//! never leaves its neighbours to a broader rule by accident.

use serde::{Deserialize, Serialize};

use super::Identity;
use crate::policy::selector::Selector;

/// One `auth.rules:` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The calls it covers: `pkg.Service/Method`, `pkg.Service`, `pkg.*` or `*`. The most
    /// specific rule covering a call decides it.
    #[serde(rename = "match")]
    pub selector: Selector,
    /// Let calls without credentials through (health checks, a public reflection). A credential
    /// that is sent must still verify.
    #[serde(default)]
    pub anonymous: bool,
    /// Only these identities (API key names, token subjects, certificate names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Scopes the caller must hold, every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Token claims the caller must carry with these values (a claim holding a list must contain
    /// the value).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub claims: std::collections::BTreeMap<String, String>,
}

/// What the rules say about a call.
#[derive(Debug)]
pub enum Verdict<'a> {
    /// No rule covers the call's service.
    Open,
    /// This rule decides.
    Rule(&'a Rule),
    /// Rules name other methods of the service, none this one.
    Unlisted,
}

pub fn judge<'a>(rules: &'a [Rule], service: &str, method: &str) -> Verdict<'a> {
    let listed = rules.iter().any(|r| r.selector.names_a_method_of(service));
    let best = rules
        .iter()
        .filter_map(|r| Some((r.selector.specificity(service, method)?, r)))
        // A service whose methods are listed one by one is decided by its own rules only.
        .filter(|((rank, _), _)| !listed || *rank > 0)
        .max_by_key(|(s, _)| *s);
    match best {
        Some((_, rule)) => Verdict::Rule(rule),
        None if listed => Verdict::Unlisted,
        None => Verdict::Open,
    }
}

/// Refuses rules that cannot be told apart: two with the same `match`.
pub fn check(rules: &[Rule]) -> Result<(), String> {
    for (i, rule) in rules.iter().enumerate() {
        if rules[..i].iter().any(|r| r.selector == rule.selector) {
            return Err(format!("at `auth.rules[{i}].match`: {} is matched by an earlier rule too", rule.selector));
        }
    }
    Ok(())
}

impl Rule {
    /// Why `identity` may not make the call, if it may not. Names what is missing, never a
    /// credential.
    pub fn refuses(&self, identity: &Identity) -> Option<String> {
        if !self.identities.is_empty() && !self.identities.contains(&identity.name) {
            return Some(format!("{:?} is not among the identities rule `{}` allows", identity.name, self.selector));
        }
        if let Some(scope) = self.scopes.iter().find(|s| !identity.scopes.contains(s)) {
            return Some(format!(
                "rule `{}` requires the scope {scope:?}, which {:?} lacks",
                self.selector, identity.name
            ));
        }
        for (claim, wanted) in &self.claims {
            let held = match identity.claims.get(claim) {
                Some(serde_json::Value::Array(values)) => values.iter().any(|v| claim_text(v) == *wanted),
                Some(value) => claim_text(value) == *wanted,
                None => false,
            };
            if !held {
                return Some(format!("rule `{}` requires the claim {claim:?} to be {wanted:?}", self.selector));
            }
        }
        None
    }
}

/// A claim's value as the config compares it: strings as they are, numbers and booleans written.
fn claim_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Rule {
        serde_yaml_ng::from_str(yaml).expect("test set-up")
    }

    #[test]
    fn a_rule_for_one_method_closes_the_others_and_the_most_specific_decides() {
        let rules = vec![
            rule("match: shop.v1.Orders/Create\nscopes: [orders.write]"),
            rule("match: grpc.health.v1.Health\nanonymous: true"),
        ];
        assert!(matches!(judge(&rules, "shop.v1.Orders", "Create"), Verdict::Rule(r) if r.scopes.len() == 1));
        assert!(matches!(judge(&rules, "shop.v1.Orders", "Get"), Verdict::Unlisted));
        assert!(matches!(judge(&rules, "shop.v1.Users", "Get"), Verdict::Open));
        assert!(matches!(judge(&rules, "grpc.health.v1.Health", "Check"), Verdict::Rule(r) if r.anonymous));
        // A broader pattern does not open the methods a service lists one by one...
        let mut broader = rules.clone();
        broader.push(rule("match: '*'\nanonymous: true"));
        assert!(matches!(judge(&broader, "shop.v1.Orders", "Delete"), Verdict::Unlisted));
        assert!(matches!(judge(&broader, "shop.v1.Users", "Get"), Verdict::Rule(r) if r.anonymous));
        // ...the service's own rule does.
        broader.push(rule("match: shop.v1.Orders"));
        assert!(matches!(judge(&broader, "shop.v1.Orders", "Delete"), Verdict::Rule(r) if !r.anonymous));
        assert!(check(&broader).is_ok());
        broader.push(rule("match: '*'"));
        assert!(check(&broader).expect_err("a duplicate").contains("auth.rules[4].match"));
    }

    #[test]
    fn scopes_claims_and_identities_are_checked_and_the_reason_named() {
        let mut claims = serde_json::Map::new();
        claims.insert("role".into(), serde_json::json!(["reader", "admin"]));
        claims.insert("tier".into(), serde_json::json!(2));
        let identity = Identity::new("ada".into(), super::super::Source::Jwt, vec!["orders.read".into()], claims);
        assert!(rule("match: '*'\nclaims: {role: admin, tier: '2'}").refuses(&identity).is_none());
        let missing = rule("match: '*'\nscopes: [orders.read, orders.write]").refuses(&identity).expect("test set-up");
        assert!(missing.contains("\"orders.write\""), "{missing}");
        assert!(rule("match: '*'\nclaims: {role: owner}").refuses(&identity).is_some());
        assert!(rule("match: '*'\nidentities: [bob]").refuses(&identity).is_some());
        assert!(rule("match: '*'\nidentities: [ada]").refuses(&identity).is_none());
    }
}
