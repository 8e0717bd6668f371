//! `Authenticate<S>`: who is calling (an API key, a JWT bearer token, a verified client
//! certificate), and may they make this call (the rules).
//!
//! It runs for every call of every protocol, the gateway's own services included (reflection
//! discloses the whole schema: a rule decides whether it is public). A call it lets through
//! carries the caller's [`Identity`] in its extensions (for the rate limits below) and in
//! metadata for the backend (`identity_metadata`, `claims_metadata`); those metadata names are
//! removed from what the client sent, so no client can claim an identity by writing the header
//! itself. The credential is removed too unless `forward_credentials` is set.
//!
//! Refusals: no credential, or one that does not verify → UNAUTHENTICATED (401, with a
//! `WWW-Authenticate` challenge); a caller the rule does not admit → PERMISSION_DENIED (403). The
//! message names the rule and what was missing, never a credential.
//!
//! The key sets (API key file, JWKS) are shared by every worker: one [`Auth`] per config.

pub mod api_key;
pub mod jwt;
pub mod rules;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::call::Call;
use crate::error::{Advice, GatewayError, Origin, Refusal};
use api_key::{ApiKeys, ApiKeysFile};
use jwt::{Jwt, JwtFile};
use rules::{Rule, Verdict};

/// The `auth:` section.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// API keys, sent in a header or a query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeysFile>,
    /// JWT bearer tokens (`authorization: Bearer …`), one entry per issuer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt: Vec<JwtFile>,
    /// A client certificate verified by the TLS listener (`tls.client_ca_file`) is an identity,
    /// named by its first URI SAN (a SPIFFE ID), else its first DNS SAN, else its subject.
    #[serde(default)]
    pub client_certificates: bool,
    /// The metadata that tells the backend who called. Default `x-dragoman-identity`.
    #[serde(default = "default_identity_metadata")]
    pub identity_metadata: String,
    /// Token claims passed on to the backend, claim → metadata name, e.g. `{sub: x-user-id}`.
    #[serde(default)]
    pub claims_metadata: std::collections::BTreeMap<String, String>,
    /// Pass the credential (the `authorization` header, the API key) on to the backend too.
    #[serde(default)]
    pub forward_credentials: bool,
    /// Who may call what; see [`rules`]. No rule: every call is open.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

fn default_identity_metadata() -> String {
    "x-dragoman-identity".to_owned()
}

/// Who a caller is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The API key's name, the token's `sub`, or the certificate's name.
    pub name: String,
    pub source: Source,
    /// The key's scopes, or the token's (`scope`, space-separated, or `scp`).
    pub scopes: Vec<String>,
    /// The token's claims (empty for keys and certificates).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// What the backend is told (`identity_metadata`, `claims_metadata`), made once per identity.
    told: Vec<(HeaderName, HeaderValue)>,
}

impl Identity {
    pub fn new(
        name: String,
        source: Source,
        scopes: Vec<String>,
        claims: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        Identity { name, source, scopes, claims, told: Vec::new() }
    }

    /// The same identity, told to the backend by name in `identity_metadata` and by the claims
    /// `claims_metadata` names (claim, metadata name). A value that cannot be metadata is left out.
    pub fn told_as(mut self, identity_metadata: &HeaderName, claims_metadata: &[(String, HeaderName)]) -> Self {
        self.told.push((identity_metadata.clone(), metadata_value(&self.name)));
        for (claim, name) in claims_metadata {
            let value = match self.claims.get(claim) {
                Some(serde_json::Value::String(s)) => metadata_value(s),
                Some(serde_json::Value::Null) | None => continue,
                Some(other) => metadata_value(&other.to_string()),
            };
            self.told.push((name.clone(), value));
        }
        self
    }

    /// Who shares a quota keyed by `identity`: the name within its source (and issuer), so an API
    /// key and a token subject of the same name are two callers.
    pub fn limit_key(&self) -> String {
        match self.source {
            Source::ApiKey => format!("key:{}", self.name),
            Source::Certificate => format!("cert:{}", self.name),
            Source::Jwt => {
                let issuer = self.claims.get("iss").and_then(serde_json::Value::as_str).unwrap_or_default();
                format!("jwt:{issuer}#{}", self.name)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    ApiKey,
    Jwt,
    Certificate,
}

/// Everything `auth:` configures, built once per config and shared by every worker.
pub struct Auth {
    api_keys: Option<ApiKeys>,
    /// Shared with the next config's `Auth` while `jwt:` is unchanged and names only URLs: a
    /// reload keeps the key sets fetched, rather than fetching them again on the next call.
    jwt: Option<Arc<Jwt>>,
    /// `jwt:` as written, to tell whether a reload changed it.
    jwt_written: serde_json::Value,
    client_certificates: bool,
    identity_metadata: HeaderName,
    claims_metadata: Vec<(String, HeaderName)>,
    forward_credentials: bool,
    rules: Vec<Rule>,
    /// Tokens verified already, by their text: a client sends the same token with every call,
    /// and checking an RS256 signature costs more than the rest of a call. An entry serves until
    /// the token's `exp`, for at most [`TOKEN_CACHE_TTL`] seconds.
    verified: quick_cache::sync::Cache<Box<str>, (Arc<Identity>, u64)>,
    /// The headers that carry credentials (`authorization` with `jwt:`, the API key's).
    credentials: Vec<HeaderName>,
    /// The `WWW-Authenticate` challenges of a 401 (RFC 9110 11.6.1), one per scheme configured.
    challenges: Vec<String>,
    /// What a refused caller is told it may send.
    accepted: String,
}

static AUTHORIZATION: HeaderName = http::header::AUTHORIZATION;

/// How long (seconds) a verified token is taken on trust: a key the provider withdraws stops
/// verifying the tokens it signed at the next key-set refresh plus this time.
const TOKEN_CACHE_TTL: u64 = 300;
/// Verified tokens remembered at most.
const TOKEN_CACHE_SIZE: usize = 10_000;

impl Auth {
    /// Builds `auth:`; `previous` (on a config reload) lends its JWT key sets when `jwt:` is
    /// unchanged.
    pub fn new(file: &AuthFile, base: &Path, previous: Option<&Auth>) -> Result<Self, String> {
        let header = |at: &str, name: &str| {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("at `auth.{at}`: not a header name: {name:?}"))
        };
        let identity_metadata = header("identity_metadata", &file.identity_metadata)?;
        let api_keys = file.api_keys.as_ref().map(|k| ApiKeys::new(k, base, &identity_metadata)).transpose()?;
        let jwt_written = serde_json::to_value(&file.jwt).map_err(|e| format!("at `auth.jwt`: {e}"))?;
        for url in file.jwt.iter().filter_map(|j| j.jwks_url.as_deref()).filter(|u| u.starts_with("http://")) {
            tracing::warn!(url, "auth.jwt: a key set fetched over plain HTTP can be replaced on the way; use https://");
        }
        // Only fetched key sets are worth keeping: files (PEM, secret, JWKS, a CA) are read
        // again, so a reload (SIGHUP) picks up a rotated one.
        let fetched_only = file.jwt.iter().all(|j| j.jwks_url.is_some() && j.ca_file.is_none());
        let jwt = match previous.filter(|p| fetched_only && p.jwt_written == jwt_written) {
            Some(previous) => previous.jwt.clone(),
            None if file.jwt.is_empty() => None,
            None => Some(Arc::new(Jwt::new(&file.jwt, base)?)),
        };
        let claims_metadata: Vec<(String, HeaderName)> = file
            .claims_metadata
            .iter()
            .map(|(claim, name)| Ok((claim.clone(), header(&format!("claims_metadata.{claim}"), name)?)))
            .collect::<Result<_, String>>()?;
        rules::check(&file.rules)?;
        let mut credentials = Vec::new();
        if jwt.is_some() {
            credentials.push(AUTHORIZATION.clone());
        }
        credentials.extend(api_keys.as_ref().map(|k| k.header.clone()));
        for name in std::iter::once(&identity_metadata).chain(claims_metadata.iter().map(|(_, n)| n)) {
            if credentials.contains(name) {
                return Err(format!("at `auth`: {name} carries credentials; it cannot be identity or claims metadata"));
            }
            if name.as_str().ends_with("-bin") || name.as_str().starts_with("grpc-") {
                return Err(format!(
                    "at `auth`: {name}: identity and claims metadata are text, not -bin or grpc- names"
                ));
            }
        }
        let mut challenges = Vec::new();
        let mut accepted = Vec::new();
        if jwt.is_some() {
            challenges.push("Bearer realm=\"dragoman\"".to_owned());
            accepted.push("a bearer token in authorization".to_owned());
        }
        if let Some(keys) = &api_keys {
            challenges.push(format!("ApiKey realm=\"dragoman\", header=\"{}\"", keys.header));
            accepted.push(format!("an API key in {}", keys.header));
        }
        if file.client_certificates {
            accepted.push("a client certificate".to_owned());
        }
        if accepted.is_empty() && file.rules.iter().any(|r| !r.anonymous) {
            return Err("at `auth`: rules require callers to be known, but no credential is configured \
                        (api_keys, jwt or client_certificates)"
                .to_owned());
        }
        Ok(Auth {
            api_keys,
            jwt,
            jwt_written,
            client_certificates: file.client_certificates,
            identity_metadata,
            claims_metadata,
            forward_credentials: file.forward_credentials,
            rules: file.rules.clone(),
            verified: quick_cache::sync::Cache::new(TOKEN_CACHE_SIZE),
            credentials,
            challenges,
            accepted: accepted.join(" or "),
        })
    }

    /// The request headers that carry credentials: the frontends carry them into each call for
    /// this layer to see.
    pub fn credential_headers(&self) -> &[HeaderName] {
        &self.credentials
    }

    /// The query parameter that may carry an API key, if one is configured, and its header.
    pub fn key_query_parameter(&self) -> Option<(String, HeaderName)> {
        let keys = self.api_keys.as_ref()?;
        Some((keys.query_parameter.clone()?, keys.header.clone()))
    }

    /// Admits the call, learning who makes it, or says why not.
    pub async fn admit(&self, mut call: Call) -> Result<Call, GatewayError> {
        call.metadata.remove(&self.identity_metadata);
        for (_, name) in &self.claims_metadata {
            call.metadata.remove(name);
        }
        let identity = self.identify(&mut call).await?;
        let service = call.method.descriptor.parent_service().full_name();
        let method = call.method.descriptor.name();
        match (rules::judge(&self.rules, service, method), &identity) {
            (Verdict::Open, _) => {}
            (Verdict::Unlisted, _) => {
                return Err(self.denied(format!(
                    "no rule allows {service}/{method}: the rules for {service} name only other methods"
                )));
            }
            (Verdict::Rule(rule), None) if !rule.anonymous => {
                return Err(self.unauthenticated(
                    format!("{service}/{method} needs credentials (rule `{}`): {}", rule.selector, self.accepted),
                    None,
                ));
            }
            (Verdict::Rule(_), None) => {}
            (Verdict::Rule(rule), Some(identity)) => {
                if let Some(reason) = rule.refuses(identity) {
                    return Err(self.denied(reason));
                }
            }
        }
        if let Some(identity) = identity {
            for (name, value) in &identity.told {
                call.metadata.insert(name.clone(), value.clone());
            }
            call.extensions.insert(identity);
        }
        Ok(call)
    }

    /// The caller's identity from the first credential it sent: a bearer token, an API key, a
    /// client certificate. A credential that does not verify refuses the call, even where
    /// anonymous calls are allowed: a client that meant to authenticate should know it failed.
    /// Every credential header is removed from the call's metadata unless `forward_credentials`,
    /// the ones that did not decide too.
    async fn identify(&self, call: &mut Call) -> Result<Option<Arc<Identity>>, GatewayError> {
        let bearer_value = self.jwt.as_ref().and_then(|_| call.metadata.get(&AUTHORIZATION).cloned());
        let identity = match (&self.jwt, bearer_value) {
            (Some(jwt), Some(value)) => match bearer(&value) {
                Some(token) => self.verify(jwt, token).await.map(Some),
                None => Err(self.unauthenticated("authorization: expected `Bearer <token>`".to_owned(), None)),
            },
            _ => self.key_or_certificate(call),
        };
        if !self.forward_credentials {
            for name in &self.credentials {
                call.metadata.remove(name);
            }
        }
        identity
    }

    /// The caller by API key, else by client certificate.
    fn key_or_certificate(&self, call: &Call) -> Result<Option<Arc<Identity>>, GatewayError> {
        if let Some(keys) = &self.api_keys {
            if let Some(key) = call.metadata.get(&keys.header) {
                let holder = keys.holder(key.as_bytes()).ok_or_else(|| {
                    self.unauthenticated(format!("the API key in {} is not known", keys.header), None)
                })?;
                return Ok(Some(holder));
            }
        }
        if self.client_certificates {
            if let Some(client) = &call.client {
                let name = client.uris.first().or(client.dns_names.first()).unwrap_or(&client.subject);
                let identity = Identity::new(name.clone(), Source::Certificate, Vec::new(), Default::default());
                return Ok(Some(Arc::new(identity.told_as(&self.identity_metadata, &[]))));
            }
        }
        Ok(None)
    }

    /// A bearer token's caller: from the cache of verified tokens, or verified now.
    async fn verify(&self, jwt: &Jwt, token: &str) -> Result<Arc<Identity>, GatewayError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Some((identity, until)) = self.verified.get(token) {
            if now < until {
                return Ok(identity);
            }
            self.verified.remove(token);
        }
        let claims = jwt.verify(token).await.map_err(|rejection| {
            let challenge = format!(
                "Bearer realm=\"dragoman\", error=\"invalid_token\", error_description=\"{}\"",
                rejection.0.replace(['"', '\\'], "'")
            );
            self.unauthenticated(format!("the bearer token was refused: {rejection}"), Some(challenge))
        })?;
        if claims.get("sub").and_then(serde_json::Value::as_str).is_none_or(str::is_empty) {
            let why = "the token names no subject (sub)";
            let challenge = format!("Bearer realm=\"dragoman\", error=\"invalid_token\", error_description=\"{why}\"");
            return Err(self.unauthenticated(format!("the bearer token was refused: {why}"), Some(challenge)));
        }
        let expires = claims.get("exp").and_then(serde_json::Value::as_u64).unwrap_or(now);
        let identity = Arc::new(from_claims(claims).told_as(&self.identity_metadata, &self.claims_metadata));
        let until = expires.min(now + TOKEN_CACHE_TTL);
        if until > now {
            self.verified.insert(token.into(), (identity.clone(), until));
        }
        Ok(identity)
    }

    fn unauthenticated(&self, message: String, challenge: Option<String>) -> GatewayError {
        tracing::debug!(%message, "call refused: unauthenticated");
        let mut advice = Advice::default().reason("UNAUTHENTICATED");
        match challenge {
            Some(challenge) => advice = advice.header(http::header::WWW_AUTHENTICATE, &challenge),
            None => {
                for challenge in &self.challenges {
                    advice = advice.header(http::header::WWW_AUTHENTICATE, challenge);
                }
            }
        }
        GatewayError::new(Code::Unauthenticated, Origin::Client, message)
            .refused(Refusal::Unauthenticated)
            .advised(advice)
    }

    fn denied(&self, message: String) -> GatewayError {
        tracing::debug!(%message, "call refused: permission denied");
        GatewayError::new(Code::PermissionDenied, Origin::Client, message)
            .refused(Refusal::PermissionDenied)
            .advised(Advice::default().reason("PERMISSION_DENIED"))
    }
}

/// Text as a metadata value: control characters, `%` and non-ASCII percent-encoded (UTF-8), so
/// every name and claim can be told, and told one way.
fn metadata_value(text: &str) -> HeaderValue {
    const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    let mut encoded = percent_encoding::utf8_percent_encode(text, ESCAPED).to_string();
    // HTTP/2 refuses a field value with white space at either end (RFC 9113 8.2.1).
    if encoded.starts_with(' ') {
        encoded.replace_range(..1, "%20");
    }
    if encoded.ends_with(' ') {
        encoded.replace_range(encoded.len() - 1.., "%20");
    }
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The token of `Authorization: Bearer <token>` (RFC 6750 2.1; the scheme is case-insensitive).
fn bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A verified token's caller: `sub`, and the scopes of `scope` (RFC 8693 4.2) or `scp`.
fn from_claims(claims: serde_json::Map<String, serde_json::Value>) -> Identity {
    let name = claims.get("sub").and_then(|s| s.as_str()).unwrap_or_default().to_owned();
    let words = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            serde_json::Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        }
    };
    let scopes = claims.get("scope").or_else(|| claims.get("scp")).map(words).unwrap_or_default();
    Identity::new(name, Source::Jwt, scopes, claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_values_are_always_valid_metadata() {
        for (text, told) in [
            ("ada", "ada"),
            ("Müller", "M%C3%BCller"),
            ("a\r\nx-admin: 1", "a%0D%0Ax-admin: 1"),
            ("100%", "100%25"),
            (" padded ", "%20padded%20"),
        ] {
            assert_eq!(metadata_value(text), told, "{text:?}");
        }
    }

    #[test]
    fn credential_and_binary_names_cannot_carry_the_identity() {
        let auth = |yaml: &str| {
            let file: AuthFile = serde_yaml_ng::from_str(yaml).expect("yaml");
            Auth::new(&file, Path::new("."), None).err().unwrap_or_default()
        };
        let keys = "api_keys: {keys: []}\n";
        assert!(auth(&format!("{keys}identity_metadata: x-api-key")).contains("carries credentials"));
        assert!(auth(&format!("{keys}identity_metadata: x-id-bin")).contains("not -bin"));
        assert!(auth(&format!("{keys}claims_metadata: {{sub: grpc-x}}")).contains("not -bin or grpc-"));
        assert!(auth(&format!("{keys}rules: [{{match: '*'}}, {{match: '*'}}]")).contains("earlier rule"));
        assert!(auth("rules: [{match: '*'}]").contains("no credential is configured"));
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Auth>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Auth>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, auth: self.auth.clone() }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S> tower::Service<Call> for Authenticate<S>
where
    S: tower::Service<Call, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, GatewayError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        // The clone that was polled ready serves this call (tower's rule for services moved into
        // a future); the fresh clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let call = auth.admit(call).await?;
            inner.call(call).await
        })
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("rules", &self.rules).finish_non_exhaustive()
    }
}
