//! JWT bearer tokens: checks a compact JWS against the issuers the config names (`auth.jwt:`) and
//! hands back its claims, for the auth layer to decide on.
//!
//! Each entry is one issuer with one key source: a JWKS file or URL (kept fresh by [`jwks`]), a
//! public key PEM or an HMAC secret. The token's unverified `iss` picks the issuer, its `kid` the
//! key; the algorithm is the key's — configured, or from the JWK — and the header's `alg` is only
//! checked against it, never trusted (RFC 8725 §3.1, §3.2). `jsonwebtoken` then checks the
//! signature, `exp` (required), `nbf`, `iss` and `aud` with the configured leeway.
//!
//! It deliberately does not: decrypt JWE, follow `jku`/`x5u`/`jwk` header parameters (a token
//! must not pick its own key), honour `crit` extensions (such tokens are refused), check `sub`,
//! scopes or any other claim (the auth layer's business), discover keys through OpenID Connect
//! discovery, or log refusals (the caller decides and logs; this module only warns about key
//! sources).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod jwks;
mod key;
#[cfg(test)]
mod tests;

use jwks::{Jwks, Schedule};
use key::Key;

/// Tokens longer than this are refused before any decoding (real ones are well under 4 KiB).
const MAX_TOKEN: usize = 16 * 1024;
/// A token without `kid` is tried against at most this many keys allowing its algorithm.
const MAX_CANDIDATES: usize = 4;
/// The most leeway a config may grant: more would make `exp` meaningless.
const MAX_LEEWAY: Duration = Duration::from_secs(3600);

const EXPIRED: &str = "the token has expired";
const NOT_YET_VALID: &str = "the token is not valid yet";
const NO_EXPIRY: &str = "the token has no expiry time (exp)";
const AUDIENCE: &str = "the token's audience is not accepted";
const ISSUER: &str = "the token's issuer is not accepted";
const SIGNATURE: &str = "the token's signature is invalid";
const UNKNOWN_KID: &str = "the token's key id is unknown";
const ALGORITHM: &str = "the token's algorithm is not allowed for its key";
const NO_KEY: &str = "no key is available to check the token";
const MALFORMED: &str = "the token is malformed";
const TOO_LARGE: &str = "the token is too large";

/// One `auth.jwt:` entry of the config file: an issuer whose tokens are accepted, and where its
/// keys are. Exactly one of `jwks_file`, `jwks_url`, `pem_file`, `secret_file` is given.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtFile {
    /// The `iss` claim this entry's tokens carry, compared exactly (e.g.
    /// `https://login.example.com/`). It picks the entry for a token; two entries may not share it.
    pub issuer: String,
    /// Accepted `aud` values: a token's `aud` (a string or an array) must contain one of them.
    /// Default: empty, and then `aud` is not checked — but a token that has one is refused, as
    /// RFC 7519 §4.1.3 asks of a recipient that does not identify itself.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// A JWKS file (`{"keys": [...]}`), relative to the config file's folder. Read again, when its
    /// modification time changed, on the `jwks_url` schedule. Each key's algorithms come from its
    /// `alg`, or else from its type: RSA → RS*/PS*, EC P-256 → ES256, P-384 → ES384, OKP Ed25519
    /// → EdDSA, oct → HS*. Keys marked `use: enc` and unsupported types are skipped.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (`http://` or `https://`), fetched on first use and refreshed as set below.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A public key PEM (RSA, EC or Ed25519; SPKI, or PKCS#1 for RSA), relative to the config
    /// file's folder. Needs `algorithm`.
    #[serde(default)]
    pub pem_file: Option<PathBuf>,
    /// A file holding an HMAC secret: its bytes, one trailing newline trimmed; at least as long as
    /// the hash (32 bytes for HS256, 48 for HS384, 64 for HS512). Needs `algorithm`.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// With `pem_file` or `secret_file`, the only algorithm its tokens may use: `RS256`, `RS384`,
    /// `RS512`, `PS256`, `PS384`, `PS512`, `ES256`, `ES384`, `EdDSA` (with `pem_file`), `HS256`,
    /// `HS384`, `HS512` (with `secret_file`).
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    /// With `pem_file` or `secret_file`: the `kid` tokens must carry. Default: none, and the key
    /// checks every token of the issuer whatever its `kid`.
    #[serde(default)]
    pub kid: Option<String>,
    /// With an `https` `jwks_url`: a PEM file of the CAs the provider's certificate must chain to.
    /// Default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Clock skew allowed on `exp` and `nbf` (e.g. `30s`; at most `1h`).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// How old JWKS keys may grow before they are read again in the background (the old keys keep
    /// serving meanwhile).
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// A token whose `kid` no key has triggers one JWKS read (a key rotation), at most once per
    /// this interval: tokens with made-up kids cannot flood the identity provider.
    #[serde(default = "default_min_refetch_interval", with = "humantime_serde")]
    pub min_refetch_interval: Duration,
    /// How long a JWKS fetch may take; a call waiting for the first fetch waits no longer.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(600)
}

fn default_min_refetch_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Why a token was refused, in words safe to show the client (never a key, never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwtRejection(pub String);

impl JwtRejection {
    fn new(why: &str) -> Self {
        JwtRejection(why.to_owned())
    }
}

/// Every configured issuer; built once per config, shared (behind an `Arc`) by every call.
pub struct Jwt {
    providers: HashMap<String, Provider>,
}

/// One issuer: its keys and the checks its tokens get.
struct Provider {
    keys: Keys,
    /// One `Validation` per algorithm, built once: a call only looks its algorithm up.
    validations: Vec<(Algorithm, Validation)>,
}

enum Keys {
    Fixed(Arc<[Key]>),
    Jwks(Arc<Jwks>),
}

impl Jwt {
    /// Reads the files the entries name (PEM keys, secrets, JWKS files); opens no socket. `base` is
    /// the config file's folder: relative paths are relative to it.
    pub fn new(files: &[JwtFile], base: &Path) -> Result<Jwt, String> {
        let mut providers = HashMap::with_capacity(files.len());
        let mut issuers: HashMap<&str, usize> = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            if let Some(first) = issuers.insert(file.issuer.as_str(), i) {
                return Err(format!("auth.jwt[{i}].issuer: {:?} is already auth.jwt[{first}]'s", file.issuer));
            }
            let provider = Provider::new(file, base).map_err(|(key, why)| match key {
                Some(key) => format!("auth.jwt[{i}].{key}: {why}"),
                None => format!("auth.jwt[{i}]: {why}"),
            })?;
            providers.insert(file.issuer.clone(), provider);
        }
        Ok(Jwt { providers })
    }

    /// Verifies a compact JWS token and returns its claims. The provider is picked by the token's
    /// `iss` (read from the unverified payload, then verified with that provider's keys).
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, JwtRejection> {
        let unverified = Unverified::read(token)?;
        let provider = self.providers.get(unverified.iss.as_str()).ok_or_else(|| JwtRejection::new(ISSUER))?;
        provider.verify(token, &unverified).await
    }
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt").field("issuers", &self.providers.keys().collect::<Vec<_>>()).finish()
    }
}

/// A config error: the key it is about (`None`: the entry) and what is wrong.
type EntryError = (Option<&'static str>, String);

impl Provider {
    fn new(file: &JwtFile, base: &Path) -> Result<Provider, EntryError> {
        let sources =
            [file.jwks_file.is_some(), file.jwks_url.is_some(), file.pem_file.is_some(), file.secret_file.is_some()];
        let count = sources.iter().filter(|s| **s).count();
        if count != 1 {
            let why = format!("exactly one of jwks_file, jwks_url, pem_file, secret_file is needed, {count} given");
            return Err((None, why));
        }
        if file.issuer.is_empty() {
            return Err((Some("issuer"), "must not be empty".into()));
        }
        if file.leeway > MAX_LEEWAY {
            return Err((Some("leeway"), format!("at most {}", humantime::format_duration(MAX_LEEWAY))));
        }
        if file.fetch_timeout.is_zero() {
            return Err((Some("fetch_timeout"), "must be more than 0s".into()));
        }
        let static_key = file.pem_file.is_some() || file.secret_file.is_some();
        if !static_key && file.algorithm.is_some() {
            return Err((
                Some("algorithm"),
                "only with pem_file or secret_file: a JWK's algorithm comes from the JWK".into(),
            ));
        }
        if !static_key && file.kid.is_some() {
            return Err((Some("kid"), "only with pem_file or secret_file: a JWK carries its own kid".into()));
        }
        if file.ca_file.is_some() && !file.jwks_url.as_deref().is_some_and(|u| u.starts_with("https://")) {
            return Err((Some("ca_file"), "only with an https jwks_url".into()));
        }
        let keys = Keys::new(file, base)?;
        Ok(Provider { keys, validations: validations(file) })
    }

    async fn verify(&self, token: &str, unverified: &Unverified) -> Result<Map<String, Value>, JwtRejection> {
        let kid = unverified.kid.as_deref();
        // An unknown name is as good as `none`: no key allows it.
        let alg = Algorithm::from_str(&unverified.alg).ok();
        match &self.keys {
            Keys::Fixed(keys) => self.check(token, select(keys, kid, alg)?),
            Keys::Jwks(jwks) => {
                let mut snapshot = jwks.current().await;
                if let Err(Miss::Key) = select_or_miss(&snapshot.keys, kid, alg) {
                    snapshot = jwks.after_miss(snapshot).await;
                }
                self.check(token, select(&snapshot.keys, kid, alg)?)
            }
        }
    }

    /// Checks the token with each chosen key in turn (more than one only for a token without
    /// `kid`); the first key that verifies it wins.
    fn check(&self, token: &str, (alg, keys): (Algorithm, Vec<&Key>)) -> Result<Map<String, Value>, JwtRejection> {
        let validation = self.validations.iter().find(|(a, _)| *a == alg).map(|(_, v)| v);
        let validation = validation.ok_or_else(|| JwtRejection::new(ALGORITHM))?;
        let mut refusal = JwtRejection::new(SIGNATURE);
        for key in keys {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => {
                    refusal = rejection(e.kind());
                    break;
                }
            }
        }
        Err(refusal)
    }
}

impl Keys {
    fn new(file: &JwtFile, base: &Path) -> Result<Keys, EntryError> {
        let schedule = Schedule {
            refresh_interval: file.refresh_interval,
            min_refetch_interval: file.min_refetch_interval,
            fetch_timeout: file.fetch_timeout,
        };
        if let Some(path) = &file.jwks_file {
            let jwks = Jwks::file(base.join(path), schedule).map_err(|e| (Some("jwks_file"), e))?;
            return Ok(Keys::Jwks(Arc::new(jwks)));
        }
        if let Some(url) = &file.jwks_url {
            let bad = |why: &str| (Some("jwks_url"), format!("{url:?}: {why}"));
            let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
            if uri.host().is_none() {
                return Err(bad("has no host"));
            }
            let tls = match uri.scheme_str() {
                Some("http") => None,
                Some("https") => Some(
                    jwks::tls_connector(file.ca_file.as_deref().map(|p| base.join(p)).as_deref())
                        .map_err(|e| (Some("ca_file"), e))?,
                ),
                _ => return Err(bad("expected an http:// or https:// URL")),
            };
            return Ok(Keys::Jwks(Arc::new(Jwks::url(uri, tls, schedule))));
        }
        let algorithm = file
            .algorithm
            .ok_or_else(|| (Some("algorithm"), "needed beside pem_file or secret_file (e.g. RS256, HS256)".into()))?;
        let read = |key: &'static str, path: &Path| {
            let path = base.join(path);
            std::fs::read(&path).map_err(|e| (Some(key), format!("cannot read {}: {e}", path.display())))
        };
        let key = match (&file.pem_file, &file.secret_file) {
            (Some(path), _) => {
                let pem = read("pem_file", path)?;
                Key::from_pem(&pem, algorithm, file.kid.clone()).map_err(|e| (Some("pem_file"), e))?
            }
            (None, Some(path)) => {
                let secret = read("secret_file", path)?;
                let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
                let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
                Key::from_secret(secret, algorithm, file.kid.clone()).map_err(|e| (Some("secret_file"), e))?
            }
            (None, None) => return Err((None, "no key source".into())),
        };
        Ok(Keys::Fixed(Arc::new([key])))
    }
}

/// The checks for each algorithm: `exp` required, `nbf` checked if present, the issuer's `iss`,
/// one of its audiences, the leeway.
fn validations(file: &JwtFile) -> Vec<(Algorithm, Validation)> {
    key::ALL
        .iter()
        .map(|&alg| {
            let mut validation = Validation::new(alg);
            validation.leeway = file.leeway.as_secs();
            validation.validate_nbf = true;
            validation.set_issuer(&[&file.issuer]);
            if file.audiences.is_empty() {
                validation.set_required_spec_claims(&["exp", "iss"]);
            } else {
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.set_audience(&file.audiences);
            }
            (alg, validation)
        })
        .collect()
}

/// Why no key could be chosen.
enum Miss {
    /// No key has the token's `kid` (or, without one, there are no keys): a rotation, perhaps.
    Key,
    /// The key exists but does not allow the token's `alg`.
    Algorithm,
}

/// The keys to try: those with the token's `kid` or, without one, those allowing its algorithm.
/// The algorithm is checked after the key is found, against the key's own list.
fn select_or_miss<'k>(
    keys: &'k [Key],
    kid: Option<&str>,
    alg: Option<Algorithm>,
) -> Result<(Algorithm, Vec<&'k Key>), Miss> {
    let named: Vec<&Key> = match kid {
        Some(kid) => keys.iter().filter(|k| k.answers(kid)).collect(),
        None => keys.iter().collect(),
    };
    if named.is_empty() {
        return Err(Miss::Key);
    }
    let alg = alg.ok_or(Miss::Algorithm)?;
    let allowed: Vec<&Key> = named.into_iter().filter(|k| k.allows(alg)).take(MAX_CANDIDATES).collect();
    if allowed.is_empty() {
        return Err(Miss::Algorithm);
    }
    Ok((alg, allowed))
}

fn select<'k>(
    keys: &'k [Key],
    kid: Option<&str>,
    alg: Option<Algorithm>,
) -> Result<(Algorithm, Vec<&'k Key>), JwtRejection> {
    select_or_miss(keys, kid, alg).map_err(|miss| match miss {
        Miss::Key if kid.is_some() => JwtRejection::new(UNKNOWN_KID),
        Miss::Key => JwtRejection::new(NO_KEY),
        Miss::Algorithm => JwtRejection::new(ALGORITHM),
    })
}

/// What is read from a token before its signature is checked: enough to pick the issuer and key.
struct Unverified {
    alg: String,
    kid: Option<String>,
    iss: String,
}

impl Unverified {
    fn read(token: &str) -> Result<Unverified, JwtRejection> {
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            #[serde(default)]
            kid: Option<String>,
            #[serde(default)]
            crit: Option<Value>,
        }
        #[derive(Deserialize)]
        struct Payload {
            #[serde(default)]
            iss: Option<Value>,
        }
        if token.len() > MAX_TOKEN {
            return Err(JwtRejection::new(TOO_LARGE));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtRejection::new(MALFORMED));
        };
        let header: Header = json_part(header)?;
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; this gateway knows none.
        if header.crit.is_some() {
            return Err(JwtRejection::new(MALFORMED));
        }
        let payload: Payload = json_part(payload)?;
        let Some(Value::String(iss)) = payload.iss else {
            return Err(JwtRejection::new(ISSUER));
        };
        Ok(Unverified { alg: header.alg, kid: header.kid, iss })
    }
}

/// A base64url JSON object (a token's header or payload).
fn json_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, JwtRejection> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtRejection::new(MALFORMED))?;
    if !bytes.trim_ascii_start().starts_with(b"{") {
        return Err(JwtRejection::new(MALFORMED));
    }
    serde_json::from_slice(&bytes).map_err(|_| JwtRejection::new(MALFORMED))
}

fn rejection(kind: &ErrorKind) -> JwtRejection {
    JwtRejection::new(match kind {
        ErrorKind::ExpiredSignature => EXPIRED,
        ErrorKind::ImmatureSignature => NOT_YET_VALID,
        ErrorKind::InvalidAudience => AUDIENCE,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AUDIENCE,
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => NO_EXPIRY,
        ErrorKind::InvalidIssuer | ErrorKind::MissingRequiredClaim(_) => ISSUER,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Crypto(_) => SIGNATURE,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => ALGORITHM,
        _ => MALFORMED,
    })
}
