//! A verification key as the gateway holds it: the `jsonwebtoken` key, its `kid`, and the
//! algorithms it may verify. Those algorithms come from the configuration (a PEM key or secret) or
//! from the JWK (its `alg`, else its key type), never from a token: that is what makes algorithm
//! confusion (an HS256 token "signed" with an RSA public key's bytes) impossible.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

const RSA: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];
const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Every algorithm a key may be configured with.
pub(super) const ALL: &[Algorithm] = &[
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Clone)]
pub(super) struct Key {
    /// The JWK's `kid`, or the one configured beside a PEM key or secret.
    kid: Option<String>,
    /// A configured PEM key or secret without `kid`: the issuer's only key, whatever kid its
    /// tokens carry. JWKS keys never answer a kid other than their own.
    any_kid: bool,
    algorithms: Vec<Algorithm>,
    pub(super) decoding: DecodingKey,
}

impl Key {
    /// A public key PEM (SPKI, or PKCS#1 for RSA) for `algorithm`, which must fit the key.
    pub(super) fn from_pem(pem: &[u8], algorithm: Algorithm, kid: Option<String>) -> Result<Key, String> {
        let decoding = if RSA.contains(&algorithm) {
            DecodingKey::from_rsa_pem(pem).map_err(|e| format!("not an RSA public key PEM: {e}"))?
        } else if algorithm == Algorithm::EdDSA {
            DecodingKey::from_ed_pem(pem).map_err(|e| format!("not an Ed25519 public key PEM: {e}"))?
        } else if matches!(algorithm, Algorithm::ES256 | Algorithm::ES384) {
            DecodingKey::from_ec_pem(pem).map_err(|e| format!("not an EC public key PEM: {e}"))?
        } else {
            return Err(format!("{algorithm:?} is an HMAC algorithm: its key is a `secret_file`, not a `pem_file`"));
        };
        Ok(Key { any_kid: kid.is_none(), kid, algorithms: vec![algorithm], decoding })
    }

    /// A shared HMAC secret for `algorithm`, at least as long as its hash (RFC 7518 §3.2).
    pub(super) fn from_secret(secret: &[u8], algorithm: Algorithm, kid: Option<String>) -> Result<Key, String> {
        if !HMAC.contains(&algorithm) {
            return Err(format!(
                "{algorithm:?} is not an HMAC algorithm: its key is a `pem_file`, not a `secret_file`"
            ));
        }
        hmac_secret_long_enough(secret.len(), algorithm)?;
        let decoding = DecodingKey::from_secret(secret);
        Ok(Key { any_kid: kid.is_none(), kid, algorithms: vec![algorithm], decoding })
    }

    /// A JWK, with the algorithms its `alg` names or, without one, those its key type allows.
    pub(super) fn from_jwk(jwk: &Jwk) -> Result<Key, String> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return Err("an encryption key (`use: enc`)".into());
        }
        if let Some(ops) = &jwk.common.key_operations {
            if !ops.contains(&KeyOperations::Verify) {
                return Err("its `key_ops` do not include `verify`".into());
            }
        }
        let by_type = algorithms_of_type(&jwk.algorithm)?;
        let algorithms = match jwk.common.key_algorithm {
            None => by_type.to_vec(),
            Some(named) => {
                let alg =
                    signing_algorithm(named).ok_or_else(|| format!("`alg` {named:?} is not a signature algorithm"))?;
                if !by_type.contains(&alg) {
                    return Err(format!("`alg` {alg:?} does not fit its key type"));
                }
                vec![alg]
            }
        };
        if let AlgorithmParameters::OctetKey(oct) = &jwk.algorithm {
            let secret = URL_SAFE_NO_PAD.decode(&oct.value).map_err(|_| "`k` is not base64url")?;
            for alg in &algorithms {
                hmac_secret_long_enough(secret.len(), *alg)?;
            }
        }
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
        Ok(Key { kid: jwk.common.key_id.clone(), any_kid: false, algorithms, decoding })
    }

    /// Whether a token carrying `kid` is to be checked with this key.
    pub(super) fn answers(&self, kid: &str) -> bool {
        self.any_kid || self.kid.as_deref() == Some(kid)
    }

    pub(super) fn allows(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }
}

/// What a JWK's type and curve permit; the coordinates' lengths are checked here because
/// `jsonwebtoken` takes any bytes and a wrong-sized point would only fail every signature later.
fn algorithms_of_type(parameters: &AlgorithmParameters) -> Result<&'static [Algorithm], String> {
    let coordinate = |name: &str, value: &str, len: usize| match URL_SAFE_NO_PAD.decode(value) {
        Ok(bytes) if bytes.len() == len => Ok(()),
        _ => Err(format!("`{name}` is not a base64url {len}-byte coordinate")),
    };
    match parameters {
        AlgorithmParameters::RSA(_) => Ok(RSA),
        AlgorithmParameters::OctetKey(_) => Ok(HMAC),
        AlgorithmParameters::EllipticCurve(ec) => {
            let (len, algorithms): (usize, &'static [Algorithm]) = match ec.curve {
                EllipticCurve::P256 => (32, &[Algorithm::ES256]),
                EllipticCurve::P384 => (48, &[Algorithm::ES384]),
                ref other => return Err(format!("EC curve {other:?} is not supported")),
            };
            coordinate("x", &ec.x, len)?;
            coordinate("y", &ec.y, len)?;
            Ok(algorithms)
        }
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => {
                coordinate("x", &okp.x, 32)?;
                Ok(&[Algorithm::EdDSA])
            }
            ref other => Err(format!("OKP curve {other:?} is not supported")),
        },
    }
}

fn signing_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        KeyAlgorithm::RSA1_5 | KeyAlgorithm::RSA_OAEP | KeyAlgorithm::RSA_OAEP_256 => return None,
    })
}

/// RFC 7518 §3.2: "A key of the same size as the hash output or larger MUST be used".
fn hmac_secret_long_enough(len: usize, algorithm: Algorithm) -> Result<(), String> {
    let needed = match algorithm {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    };
    if len < needed {
        return Err(format!(
            "an {algorithm:?} secret must be at least {needed} bytes (RFC 7518 §3.2), this one has {len}"
        ));
    }
    Ok(())
}

/// The keys of a JWKS document, each JWK read on its own so that one the gateway cannot use (an
/// encryption key, an unknown curve) is skipped with its reason instead of failing the set.
pub(super) fn keys_from_jwks(document: &[u8]) -> Result<(Vec<Key>, Vec<String>), String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(document).map_err(|e| format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
    let mut keys = Vec::with_capacity(document.keys.len());
    let mut skipped = Vec::new();
    for (i, value) in document.keys.into_iter().enumerate() {
        let kid = value.get("kid").and_then(|k| k.as_str()).unwrap_or("").to_owned();
        match serde_json::from_value::<Jwk>(value)
            .map_err(|e| format!("not a JWK: {e}"))
            .and_then(|jwk| Key::from_jwk(&jwk))
        {
            Ok(key) => keys.push(key),
            Err(why) => skipped.push(format!("keys[{i}] (kid {kid:?}): {why}")),
        }
    }
    Ok((keys, skipped))
}
