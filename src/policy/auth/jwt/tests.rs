//! Tokens signed with `jsonwebtoken::encode` against keys from rcgen (EC, Ed25519) and one fixed
//! RSA key (rcgen cannot make RSA keys with ring); JWKS served from files and a local HTTP server.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::*;

const ISS: &str = "https://issuer.test/";
const AUD: &str = "dragoman";

/// A 2048-bit RSA key (ring verifies nothing smaller), made once with openssl for these tests.
const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDEWsStbe309C1w
Esettzh5c1S8Yb1K7bYJ3YHyi6Lfkyk7bYKPWf0YdYDElxg2BJguA6wFU2IBWMEJ
wITmHSWUAlwoL9AIKE4RiBmGjGFt+0CzLltJIRsVdDe/uFkXH3nhXdQ8RDiUFjqe
hdr+9PXwXgZHqbzbXYg8SEqDZ/LsrFevKd5CH+rkRHTGTE5UtcjUMW9+SbukBEH7
lpfDD7r4g/J6RxqVDv1tDcdyWq00M8oYuSqjK5bvVT+pzS3RhpkTDgnhZ1g3geJe
D9At2dFn8YZKyRgtcMPXp698AcoLU2MwDMK8AmfytY2R2fJCUGnFoHsa4sCI1EWA
/GfCimo7AgMBAAECggEAGhiOJxaDF5kUKN72FspRASMo0diTlc+979W2nYudW+Vt
B27oeTDWiFelg3spRpSZvRPT2ulYDyHClg82GncpNWCS6uxf05W3unDCI7WohTtt
P+MbUr7JoLJPbnWLsZ0HT8JuoIvYkSXbKJJVpqjbvtRgNUoDxYvKvWhGLuyzxmxt
nwDMwKzZ2bmNIReOPZ3OAwL4MRI+fAKAW1ViAxfKwvfTwNkxmqlnYqJR5bfL17zd
qtosGkcNPaqaRMwwo2+zL/znXB1QfI7MFWWrz1gJRfr7hKac1SW2td+V85JbmHFZ
Dkir1+puYvZ5ZR+c9zXvIOWjdCwd/Xr2bcXmy7wsAQKBgQDpHtOQ+3B+zx3LSD/j
kxjwS/C+k8Za3hWrqlOp8h7Sntiraa8/p6xq3Sx1Z07qsHXi8Ot3tKcW+0LlssSh
Hfh7Yjam2INq+e2aH8jG9WT1Q8QPICg5v1u+7kQIgrTe5UOZOiaWSzQL9IuzHuXo
7pLhpX/Pn7qnwPQZgCCWZWOtAQKBgQDXoDI3XZBAct5khWBR6lkUd4eMSwWne06v
xnt/WVLJHTkKf5tAVQx0Opg80kVDNE4derE4TBDyUvO6NdvkH2l50Bx53xNn3ZuN
bNdBCNjF3LCgCA9lZyExAtVnCu0gcPt2+EIqTqUkwS4iSy+y1UWLr9Rb9AbwO3lN
5kduy6KLOwKBgQCgt03ogFCYPDYwNYlGXd0tnU1GNh7j+oQ6K10upuu1DSoXUu8t
FW365qyF7Ekt56X+ZVYQ2wzu/R6ruUlyQnVSqu0+rbo8gD3cqdkDwZ5usN90Bhl1
ZoXb5ewlaedEXA70jnCX4RTqwRemz8B1jDTbN/wbqeVHTfF7uye8R/4mAQKBgCRW
FqBF4B08PkXqRAUJ3OEaE3mM2vMSUHxGkmEviEfj6MzgHCWHL4YWqbj2Jj3g/pjx
KBQ4nVJ4sCHdGaUjtf6VF3diJD8IlUIL6WpIN1+AhTMyqIWKD4nW1Gd86+DfqUCv
LVc70ZCUDVYyHWOhlQqpIrwsL08kdpiuCbOeFVIpAoGAAidI8Jiapfe6JGlnzBYF
HboYUr8Pely6KOQbdNZf1djD9/LvuY6WlZZzblguMcQKJvDrDYgj7mA0M1nUm3VC
KW7BThbmLTT4SlZ2+ECrf7wHigxKHNiedje3EwOc4wrW3NrGQB30zPgtGG8QDSv9
hDCSVcHkMm751wsdog4giGo=
-----END PRIVATE KEY-----
";
const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxFrErW3t9PQtcBLHrbc4
eXNUvGG9Su22Cd2B8oui35MpO22Cj1n9GHWAxJcYNgSYLgOsBVNiAVjBCcCE5h0l
lAJcKC/QCChOEYgZhoxhbftAsy5bSSEbFXQ3v7hZFx954V3UPEQ4lBY6noXa/vT1
8F4GR6m8212IPEhKg2fy7KxXryneQh/q5ER0xkxOVLXI1DFvfkm7pARB+5aXww+6
+IPyekcalQ79bQ3HclqtNDPKGLkqoyuW71U/qc0t0YaZEw4J4WdYN4HiXg/QLdnR
Z/GGSskYLXDD16evfAHKC1NjMAzCvAJn8rWNkdnyQlBpxaB7GuLAiNRFgPxnwopq
OwIDAQAB
-----END PUBLIC KEY-----
";
const RSA_N: &str = "xFrErW3t9PQtcBLHrbc4eXNUvGG9Su22Cd2B8oui35MpO22Cj1n9GHWAxJcYNgSYLgOsBVNiAVjBCcCE5h0llAJcKC_QCChOEYgZhoxhbftAsy5bSSEbFXQ3v7hZFx954V3UPEQ4lBY6noXa_vT18F4GR6m8212IPEhKg2fy7KxXryneQh_q5ER0xkxOVLXI1DFvfkm7pARB-5aXww-6-IPyekcalQ79bQ3HclqtNDPKGLkqoyuW71U_qc0t0YaZEw4J4WdYN4HiXg_QLdnRZ_GGSskYLXDD16evfAHKC1NjMAzCvAJn8rWNkdnyQlBpxaB7GuLAiNRFgPxnwopqOw";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims valid for an hour, for `ISS` and `AUD`.
fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 3600})
}

/// A signing key and its public JWK.
struct Signer {
    encoding: EncodingKey,
    alg: Algorithm,
    jwk: Value,
}

impl Signer {
    fn ec(kid: &str, alg: Algorithm) -> Signer {
        let (rcgen_alg, crv, len) = match alg {
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32),
            _ => (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48),
        };
        let pair = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
        let raw = pair.public_key_raw(); // 0x04 || x || y
        let jwk = json!({"kty": "EC", "crv": crv, "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..1 + len]), "y": URL_SAFE_NO_PAD.encode(&raw[1 + len..])});
        Signer { encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(), alg, jwk }
    }

    fn ed(kid: &str) -> Signer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let jwk =
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw())});
        Signer {
            encoding: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
            alg: Algorithm::EdDSA,
            jwk,
        }
    }

    fn rsa(kid: &str, alg: Algorithm) -> Signer {
        let jwk = json!({"kty": "RSA", "kid": kid, "n": RSA_N, "e": "AQAB"});
        Signer { encoding: EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(), alg, jwk }
    }

    fn kid(&self) -> String {
        self.jwk["kid"].as_str().unwrap().to_owned()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(Some(&self.kid()), claims)
    }

    fn sign_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// An entry as the config file would hold it (so defaults and humantime go through serde).
fn entry(fields: Value) -> JwtFile {
    let mut object = json!({"issuer": ISS, "audiences": [AUD]});
    for (k, v) in fields.as_object().unwrap() {
        object[k] = v.clone();
    }
    serde_json::from_value(object).unwrap()
}

/// A `Jwt` over a JWKS file in a fresh folder (kept alive by the returned guard).
fn with_jwks_file(signers: &[&Signer], fields: Value) -> (Jwt, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks(signers)).unwrap();
    let mut fields = fields;
    fields["jwks_file"] = json!("jwks.json");
    (Jwt::new(&[entry(fields)], dir.path()).unwrap(), dir)
}

fn refused(result: Result<Map<String, Value>, JwtRejection>) -> String {
    result.unwrap_err().0
}

#[tokio::test]
async fn valid_es256_token_from_a_jwks_file_returns_its_claims() {
    let key = Signer::ec("k1", Algorithm::ES256);
    let (jwt, _dir) = with_jwks_file(&[&key], json!({}));
    let claims = jwt.verify(&key.sign(&claims())).await.unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["iss"], ISS);
}

#[tokio::test]
async fn every_key_type_verifies_its_algorithms() {
    let es384 = Signer::ec("p384", Algorithm::ES384);
    let ed = Signer::ed("ed");
    let ps256 = Signer::rsa("rsa", Algorithm::PS256);
    let rs512 = Signer::rsa("rsa", Algorithm::RS512);
    let (jwt, _dir) = with_jwks_file(&[&es384, &ed, &ps256], json!({}));
    for signer in [&es384, &ed, &ps256, &rs512] {
        jwt.verify(&signer.sign(&claims())).await.unwrap_or_else(|e| panic!("{:?}: {e}", signer.alg));
    }
}

#[tokio::test]
async fn a_jwk_alg_restricts_the_key_to_it() {
    let mut pinned = Signer::rsa("rsa", Algorithm::PS256);
    pinned.jwk["alg"] = json!("PS256");
    let (jwt, _dir) = with_jwks_file(&[&pinned], json!({}));
    jwt.verify(&pinned.sign(&claims())).await.unwrap();
    let rs256 = Signer::rsa("rsa", Algorithm::RS256);
    assert_eq!(refused(jwt.verify(&rs256.sign(&claims())).await), ALGORITHM);
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let key = Signer::ec("k1", Algorithm::ES256);
    let (jwt, _dir) = with_jwks_file(&[&key], json!({}));
    let mut expired = claims();
    expired["exp"] = json!(now() - 120);
    assert_eq!(refused(jwt.verify(&key.sign(&expired)).await), EXPIRED);
    let mut early = claims();
    early["nbf"] = json!(now() + 120);
    assert_eq!(refused(jwt.verify(&key.sign(&early)).await), NOT_YET_VALID);
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(refused(jwt.verify(&key.sign(&no_exp)).await), NO_EXPIRY);
}

#[tokio::test]
async fn leeway_is_honoured() {
    let key = Signer::ec("k1", Algorithm::ES256);
    let mut late = claims();
    late["exp"] = json!(now() - 10);
    let mut early = claims();
    early["nbf"] = json!(now() + 10);
    // The default, 30s, covers ten seconds either way.
    let (jwt, _dir) = with_jwks_file(&[&key], json!({}));
    jwt.verify(&key.sign(&late)).await.unwrap();
    jwt.verify(&key.sign(&early)).await.unwrap();
    let (strict, _dir) = with_jwks_file(&[&key], json!({"leeway": "2s"}));
    assert_eq!(refused(strict.verify(&key.sign(&late)).await), EXPIRED);
    assert_eq!(refused(strict.verify(&key.sign(&early)).await), NOT_YET_VALID);
}

#[tokio::test]
async fn audience_must_contain_a_configured_one() {
    let key = Signer::ec("k1", Algorithm::ES256);
    let (jwt, _dir) = with_jwks_file(&[&key], json!({"audiences": ["other", AUD]}));
    let mut token = claims();
    token["aud"] = json!(["someone", AUD]);
    jwt.verify(&key.sign(&token)).await.unwrap();
    token["aud"] = json!("someone");
    assert_eq!(refused(jwt.verify(&key.sign(&token)).await), AUDIENCE);
    token["aud"] = json!(["someone", "else"]);
    assert_eq!(refused(jwt.verify(&key.sign(&token)).await), AUDIENCE);
    token.as_object_mut().unwrap().remove("aud");
    assert_eq!(refused(jwt.verify(&key.sign(&token)).await), AUDIENCE);
}

#[tokio::test]
async fn unknown_issuer_and_unknown_kid_are_refused() {
    let key = Signer::ec("k1", Algorithm::ES256);
    let (jwt, _dir) = with_jwks_file(&[&key], json!({}));
    let mut other = claims();
    other["iss"] = json!("https://elsewhere.test/");
    assert_eq!(refused(jwt.verify(&key.sign(&other)).await), ISSUER);
    other.as_object_mut().unwrap().remove("iss");
    assert_eq!(refused(jwt.verify(&key.sign(&other)).await), ISSUER);
    assert_eq!(refused(jwt.verify(&key.sign_as(Some("k2"), &claims())).await), UNKNOWN_KID);
    // Without a kid, the keys allowing the algorithm are tried.
    jwt.verify(&key.sign_as(None, &claims())).await.unwrap();
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rsa.pem"), RSA_PUBLIC).unwrap();
    let rsa = Jwt::new(&[entry(json!({"pem_file": "rsa.pem", "algorithm": "RS256"}))], dir.path()).unwrap();
    let genuine = Signer::rsa("any", Algorithm::RS256);
    rsa.verify(&genuine.sign(&claims())).await.unwrap();
    let forger = Signer {
        encoding: EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        alg: Algorithm::HS256,
        jwk: json!({"kid": "any"}),
    };
    assert_eq!(refused(rsa.verify(&forger.sign(&claims())).await), ALGORITHM);
    assert_eq!(refused(rsa.verify(&forger.sign_as(None, &claims())).await), ALGORITHM);

    // The same against an EC JWK, with its coordinates as the "secret".
    let ec = Signer::ec("k1", Algorithm::ES256);
    let (jwt, _dir) = with_jwks_file(&[&ec], json!({}));
    let secret = ec.jwk.to_string();
    let forger =
        Signer { encoding: EncodingKey::from_secret(secret.as_bytes()), alg: Algorithm::HS256, jwk: ec.jwk.clone() };
    assert_eq!(refused(jwt.verify(&forger.sign(&claims())).await), ALGORITHM);
    assert_eq!(refused(jwt.verify(&forger.sign_as(None, &claims())).await), ALGORITHM);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let key = Signer::ec("k1", Algorithm::ES256);
    let (jwt, _dir) = with_jwks_file(&[&key], json!({}));
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    for header in [json!({"alg": "none"}), json!({"alg": "none", "kid": "k1"}), json!({"alg": "None", "kid": "k1"})] {
        let token = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(header.to_string()));
        assert_eq!(refused(jwt.verify(&token).await), ALGORITHM, "{header}");
    }
}

#[tokio::test]
async fn tampered_tokens_are_refused() {
    let key = Signer::ec("k1", Algorithm::ES256);
    let (jwt, _dir) = with_jwks_file(&[&key], json!({}));
    let token = key.sign(&claims());
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut forged = URL_SAFE_NO_PAD.decode(signature).unwrap();
    forged[10] ^= 1;
    let token_bad_sig = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&forged));
    assert_eq!(refused(jwt.verify(&token_bad_sig).await), SIGNATURE);
    let (header, _) = signed.split_once('.').unwrap();
    let mut admin = claims();
    admin["sub"] = json!("admin");
    let token_bad_payload = format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode(admin.to_string()));
    assert_eq!(refused(jwt.verify(&token_bad_payload).await), SIGNATURE);
    // Signed by another key under the same kid.
    let impostor = Signer::ec("k1", Algorithm::ES256);
    assert_eq!(refused(jwt.verify(&impostor.sign(&claims())).await), SIGNATURE);
}

#[tokio::test]
async fn malformed_input_is_refused_without_panicking() {
    let key = Signer::ec("k1", Algorithm::ES256);
    let (jwt, _dir) = with_jwks_file(&[&key], json!({}));
    let b64 = |v: &str| URL_SAFE_NO_PAD.encode(v);
    let header = b64(r#"{"alg":"ES256","kid":"k1"}"#);
    let payload = b64(&claims().to_string());
    let cases = [
        String::new(),
        "a.b".into(),
        "a.b.c.d".into(),
        "!!!.***.###".into(),
        format!("{header}.{payload}.!!"),
        format!("{}.{payload}.c2ln", b64("[1,2]")),
        format!("{}.{payload}.c2ln", b64("\"ES256\"")),
        format!("{}.{payload}.c2ln", b64(r#"{"kid":"k1"}"#)),
        format!("{}.{payload}.c2ln", b64(r#"{"alg":"ES256","crit":["exp"],"exp":1}"#)),
        format!("{header}.{}.c2ln", b64("[]")),
        format!("{header}.{}.c2ln", b64("not json")),
        format!("{header}=.{payload}.c2ln"),
    ];
    for token in &cases {
        let why = refused(jwt.verify(token).await);
        assert!([MALFORMED, SIGNATURE].contains(&why.as_str()), "{token:?}: {why}");
    }
    let huge = format!("{header}.{}.c2ln", "A".repeat(MAX_TOKEN));
    assert_eq!(refused(jwt.verify(&huge).await), TOO_LARGE);
    // An `iss` that is no string picks no issuer.
    let token = format!("{header}.{}.c2ln", b64(r#"{"iss":["x"]}"#));
    assert_eq!(refused(jwt.verify(&token).await), ISSUER);
}

#[tokio::test]
async fn secret_file_is_read_with_its_trailing_newline_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "0123456789abcdef0123456789abcdef";
    std::fs::write(dir.path().join("secret"), format!("{secret}\n")).unwrap();
    let file = entry(json!({"secret_file": "secret", "algorithm": "HS256"}));
    let jwt = Jwt::new(&[file], dir.path()).unwrap();
    let signer =
        Signer { encoding: EncodingKey::from_secret(secret.as_bytes()), alg: Algorithm::HS256, jwk: json!({}) };
    jwt.verify(&signer.sign_as(None, &claims())).await.unwrap();
    let hs512 = Signer { alg: Algorithm::HS512, ..signer };
    assert_eq!(refused(jwt.verify(&hs512.sign_as(None, &claims())).await), ALGORITHM);
}

#[test]
fn config_errors_name_the_entry_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::write(base.join("short"), "too short").unwrap();
    std::fs::write(base.join("rsa.pem"), RSA_PUBLIC).unwrap();
    let error = |fields: Value| Jwt::new(&[entry(fields)], base).unwrap_err();
    assert!(error(json!({"jwks_file": "missing.json"})).starts_with("auth.jwt[0].jwks_file: cannot read "));
    assert!(error(json!({})).starts_with("auth.jwt[0]: exactly one of"));
    assert!(error(json!({"jwks_file": "a", "pem_file": "b"})).starts_with("auth.jwt[0]: exactly one of"));
    assert!(error(json!({"pem_file": "rsa.pem"})).starts_with("auth.jwt[0].algorithm: "));
    assert!(error(json!({"pem_file": "rsa.pem", "algorithm": "HS256"})).starts_with("auth.jwt[0].pem_file: "));
    assert!(error(json!({"pem_file": "rsa.pem", "algorithm": "ES256"})).starts_with("auth.jwt[0].pem_file: "));
    assert!(error(json!({"secret_file": "short", "algorithm": "HS256"})).contains("at least 32 bytes"));
    assert!(error(json!({"jwks_url": "ftp://x/jwks"})).starts_with("auth.jwt[0].jwks_url: "));
    assert!(error(json!({"jwks_url": "http://x/jwks", "algorithm": "RS256"})).starts_with("auth.jwt[0].algorithm: "));
    assert!(error(json!({"jwks_url": "http://x/jwks", "ca_file": "ca.pem"})).starts_with("auth.jwt[0].ca_file: "));
    assert!(
        error(json!({"pem_file": "rsa.pem", "algorithm": "RS256", "leeway": "2h"})).starts_with("auth.jwt[0].leeway")
    );
    let ok = entry(json!({"pem_file": "rsa.pem", "algorithm": "RS256"}));
    let twice = Jwt::new(&[ok.clone(), ok], base).unwrap_err();
    assert!(twice.starts_with("auth.jwt[1].issuer: "), "{twice}");
    let unknown = serde_json::from_value::<JwtFile>(json!({"issuer": ISS, "jwks": "x"})).unwrap_err().to_string();
    assert!(unknown.contains("unknown field"), "{unknown}");
    let defaults = entry(json!({"jwks_url": "http://x/jwks"}));
    assert_eq!(
        (defaults.leeway, defaults.refresh_interval, defaults.min_refetch_interval, defaults.fetch_timeout),
        (Duration::from_secs(30), Duration::from_secs(600), Duration::from_secs(30), Duration::from_secs(5))
    );
}

#[tokio::test]
async fn unusable_jwks_keys_are_skipped_not_fatal() {
    let good = Signer::ec("good", Algorithm::ES256);
    let mut enc = Signer::rsa("enc", Algorithm::RS256);
    enc.jwk["use"] = json!("enc");
    let mut misfit = Signer::ec("misfit", Algorithm::ES256);
    misfit.jwk["alg"] = json!("HS256");
    let mut short = Signer::ec("short", Algorithm::ES256);
    short.jwk["x"] = json!("AAAA");
    let weird =
        Signer { jwk: json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}), ..Signer::ed("x") };
    let (jwt, _dir) = with_jwks_file(&[&enc, &misfit, &short, &weird, &good], json!({}));
    jwt.verify(&good.sign(&claims())).await.unwrap();
    assert_eq!(refused(jwt.verify(&enc.sign(&claims())).await), UNKNOWN_KID);
    assert_eq!(refused(jwt.verify(&misfit.sign(&claims())).await), UNKNOWN_KID);
}

#[tokio::test]
async fn a_rotated_jwks_file_is_read_again() {
    let old = Signer::ec("old", Algorithm::ES256);
    let new = Signer::ec("new", Algorithm::ES256);
    let (jwt, dir) = with_jwks_file(&[&old], json!({"min_refetch_interval": "1ms"}));
    jwt.verify(&old.sign(&claims())).await.unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&old, &new])).unwrap();
    // Coarse file-system clocks could leave the time as it was: move it on explicitly.
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(5)).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await; // past min_refetch_interval
    jwt.verify(&new.sign(&claims())).await.unwrap();
    jwt.verify(&old.sign(&claims())).await.unwrap();
}

/// A JWKS provider on 127.0.0.1:0 answering every GET with `answer`, counting requests.
struct Provider {
    url: String,
    requests: AtomicUsize,
    answer: std::sync::Mutex<(u16, String)>,
}

impl Provider {
    async fn start(body: String, tls: Option<tokio_rustls::TlsAcceptor>) -> Arc<Provider> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}/keys"),
            None => format!("http://127.0.0.1:{port}/keys"),
        };
        let provider = Arc::new(Provider { url, requests: AtomicUsize::new(0), answer: (200, body).into() });
        let serving = Arc::clone(&provider);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (serving, tls) = (Arc::clone(&serving), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => serving.answer(acceptor.accept(tcp).await.unwrap()).await,
                        None => serving.answer(tcp).await,
                    }
                });
            }
        });
        provider
    }

    async fn answer(&self, mut stream: impl AsyncRead + AsyncWrite + Unpin) {
        let mut request = Vec::new();
        let mut buf = [0; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            request.extend_from_slice(&buf[..n]);
        }
        self.requests.fetch_add(1, Ordering::SeqCst);
        let (status, body) = self.answer.lock().unwrap().clone();
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        stream.shutdown().await.ok();
    }

    fn serve(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn with_url(url: &str, fields: Value) -> Jwt {
    let mut fields = fields;
    fields["jwks_url"] = json!(url);
    Jwt::new(&[entry(fields)], std::path::Path::new("/")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_fetches_are_single_flight_and_pick_up_rotation() {
    let old = Signer::ec("old", Algorithm::ES256);
    let provider = Provider::start(jwks(&[&old]), None).await;
    let jwt = Arc::new(with_url(&provider.url, json!({"min_refetch_interval": "300ms"})));
    assert_eq!(provider.requests(), 0, "config loading opens no socket");

    // First use: fifty concurrent calls wait for one fetch.
    let token = old.sign(&claims());
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (jwt, token) = (Arc::clone(&jwt), token.clone());
            tokio::spawn(async move { jwt.verify(&token).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(provider.requests(), 1);

    // Fifty made-up kids, once min_refetch_interval has passed: at most one more fetch.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let (jwt, token) = (Arc::clone(&jwt), old.sign_as(Some(&format!("random-{i}")), &claims()));
            tokio::spawn(async move { jwt.verify(&token).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap_err().0, UNKNOWN_KID);
    }
    assert!(provider.requests() <= 2, "{} fetches", provider.requests());
    let after_burst = provider.requests();
    assert_eq!(refused(jwt.verify(&old.sign_as(Some("again"), &claims())).await), UNKNOWN_KID);
    assert_eq!(provider.requests(), after_burst, "a miss within min_refetch_interval fetches nothing");

    // The provider rotates: the new kid is accepted after one re-fetch.
    let new = Signer::ec("new", Algorithm::ES256);
    provider.serve(200, jwks(&[&old, &new]));
    tokio::time::sleep(Duration::from_millis(350)).await;
    jwt.verify(&new.sign(&claims())).await.unwrap();
    assert_eq!(provider.requests(), after_burst + 1);
}

#[tokio::test]
async fn stale_keys_serve_while_one_background_refresh_runs() {
    let old = Signer::ec("old", Algorithm::ES256);
    let provider = Provider::start(jwks(&[&old]), None).await;
    // An hour between miss re-fetches: only the scheduled refresh can bring the new key.
    let jwt = with_url(&provider.url, json!({"refresh_interval": "300ms", "min_refetch_interval": "1h"}));
    jwt.verify(&old.sign(&claims())).await.unwrap();
    let new = Signer::ec("new", Algorithm::ES256);
    provider.serve(200, jwks(&[&old, &new]));
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Stale keys answer at once; the refresh runs beside.
    jwt.verify(&old.sign(&claims())).await.unwrap();
    jwt.verify(&old.sign(&claims())).await.unwrap();
    for _ in 0..200 {
        if jwt.verify(&new.sign(&claims())).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    jwt.verify(&new.sign(&claims())).await.unwrap();
    assert_eq!(provider.requests(), 2, "one background refresh");
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_previous_keys() {
    let old = Signer::ec("old", Algorithm::ES256);
    let provider = Provider::start(jwks(&[&old]), None).await;
    let jwt = with_url(&provider.url, json!({"min_refetch_interval": "1ms", "refresh_interval": "1ms"}));
    jwt.verify(&old.sign(&claims())).await.unwrap();
    provider.serve(500, "oops".into());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(refused(jwt.verify(&old.sign_as(Some("other"), &claims())).await), UNKNOWN_KID);
    assert!(provider.requests() >= 2);
    jwt.verify(&old.sign(&claims())).await.unwrap();
    provider.serve(200, "{\"not\": \"a jwks\"}".into());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(refused(jwt.verify(&old.sign_as(Some("other"), &claims())).await), UNKNOWN_KID);
    jwt.verify(&old.sign(&claims())).await.unwrap();
}

#[tokio::test]
async fn a_silent_provider_delays_a_call_no_longer_than_the_fetch_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            held.push(listener.accept().await.unwrap());
        }
    });
    let jwt = with_url(&url, json!({"fetch_timeout": "200ms"}));
    let key = Signer::ec("k1", Algorithm::ES256);
    let started = std::time::Instant::now();
    assert_eq!(refused(jwt.verify(&key.sign(&claims())).await), UNKNOWN_KID);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(2), "{waited:?}");
    silent.abort();
}

#[tokio::test]
async fn https_jwks_url_is_trusted_through_ca_file() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let signer = Signer::ec("k1", Algorithm::ES256);
    let provider = Provider::start(jwks(&[&signer]), Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))).await;
    let file = entry(json!({"jwks_url": provider.url, "ca_file": "ca.pem"}));
    let jwt = Jwt::new(&[file], dir.path()).unwrap();
    jwt.verify(&signer.sign(&claims())).await.unwrap();
    assert_eq!(provider.requests(), 1);
}

#[test]
fn jwt_is_shareable_and_its_verify_future_is_send() {
    fn shareable<T: Send + Sync + 'static>(_: &T) {}
    fn send<F: std::future::Future + Send>(_: F) {}
    let jwt = Jwt::new(&[], std::path::Path::new("/")).unwrap();
    shareable(&jwt);
    send(jwt.verify("a.b.c"));
}
