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
    jwt: Option<Jwt>,
    client_certificates: bool,
    identity_metadata: HeaderName,
    claims_metadata: Vec<(String, HeaderName)>,
    forward_credentials: bool,
    rules: Vec<Rule>,
    /// The `WWW-Authenticate` challenges of a 401 (RFC 9110 11.6.1), one per scheme configured.
    challenges: Vec<String>,
    /// What a refused caller is told it may send.
    accepted: String,
}

static AUTHORIZATION: HeaderName = http::header::AUTHORIZATION;

impl Auth {
    pub fn new(file: &AuthFile, base: &Path) -> Result<Self, String> {
        let header = |at: &str, name: &str| {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("at `auth.{at}`: not a header name: {name:?}"))
        };
        let api_keys = file.api_keys.as_ref().map(|k| ApiKeys::new(k, base)).transpose()?;
        let jwt = if file.jwt.is_empty() { None } else { Some(Jwt::new(&file.jwt, base)?) };
        let claims_metadata = file
            .claims_metadata
            .iter()
            .map(|(claim, name)| Ok((claim.clone(), header(&format!("claims_metadata.{claim}"), name)?)))
            .collect::<Result<_, String>>()?;
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
            client_certificates: file.client_certificates,
            identity_metadata: header("identity_metadata", &file.identity_metadata)?,
            claims_metadata,
            forward_credentials: file.forward_credentials,
            rules: file.rules.clone(),
            challenges,
            accepted: accepted.join(" or "),
        })
    }

    /// The request headers the frontends must carry into a call for this layer to see them.
    pub fn credential_headers(&self) -> Vec<HeaderName> {
        let mut names = Vec::new();
        if self.jwt.is_some() {
            names.push(AUTHORIZATION.clone());
        }
        names.extend(self.api_keys.as_ref().map(|k| k.header.clone()));
        names
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
            self.tell_backend(&mut call, &identity);
            call.extensions.insert(Arc::new(identity));
        }
        Ok(call)
    }

    /// The caller's identity from the first credential it sent: a bearer token, an API key, a
    /// client certificate. A credential that does not verify refuses the call, even where
    /// anonymous calls are allowed: a client that meant to authenticate should know it failed.
    async fn identify(&self, call: &mut Call) -> Result<Option<Identity>, GatewayError> {
        if let Some(jwt) = &self.jwt {
            if let Some(token) = bearer(call.metadata.get(&AUTHORIZATION)) {
                let claims = jwt.verify(token).await.map_err(|rejection| {
                    let challenge = format!(
                        "Bearer realm=\"dragoman\", error=\"invalid_token\", error_description=\"{}\"",
                        rejection.0.replace(['"', '\\'], "'")
                    );
                    self.unauthenticated(format!("the bearer token was refused: {rejection}"), Some(challenge))
                })?;
                if !self.forward_credentials {
                    call.metadata.remove(&AUTHORIZATION);
                }
                return Ok(Some(from_claims(claims)));
            }
        }
        if let Some(keys) = &self.api_keys {
            let key = call.metadata.get(&keys.header).map(HeaderValue::as_bytes);
            if let Some(key) = key {
                let holder = keys.holder(key).ok_or_else(|| {
                    self.unauthenticated(format!("the API key in {} is not known", keys.header), None)
                })?;
                if !self.forward_credentials {
                    call.metadata.remove(&keys.header);
                }
                let scopes = holder.scopes.clone();
                return Ok(Some(Identity {
                    name: holder.name.clone(),
                    source: Source::ApiKey,
                    scopes,
                    claims: Default::default(),
                }));
            }
        }
        if self.client_certificates {
            if let Some(client) = &call.client {
                let name = client.uris.first().or(client.dns_names.first()).unwrap_or(&client.subject);
                return Ok(Some(Identity {
                    name: name.clone(),
                    source: Source::Certificate,
                    scopes: Vec::new(),
                    claims: Default::default(),
                }));
            }
        }
        Ok(None)
    }

    fn tell_backend(&self, call: &mut Call, identity: &Identity) {
        if let Ok(value) = HeaderValue::from_str(&identity.name) {
            call.metadata.insert(self.identity_metadata.clone(), value);
        }
        for (claim, name) in &self.claims_metadata {
            let value = match identity.claims.get(claim) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => continue,
                Some(other) => other.to_string(),
            };
            if let Ok(value) = HeaderValue::from_str(&value) {
                call.metadata.insert(name.clone(), value);
            }
        }
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

/// The token of `Authorization: Bearer <token>` (RFC 6750 2.1; the scheme is case-insensitive).
fn bearer(value: Option<&HeaderValue>) -> Option<&str> {
    let value = value?.to_str().ok()?;
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
    Identity { name, source: Source::Jwt, scopes, claims }
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
