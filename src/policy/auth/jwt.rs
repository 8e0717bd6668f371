//! JWT bearer tokens (stub until the jwt branch merges: every token is refused).

use std::path::Path;

/// One `auth.jwt:` entry.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtFile {
    pub issuer: String,
}

pub struct Jwt;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct JwtRejection(pub String);

impl Jwt {
    pub fn new(_files: &[JwtFile], _base: &Path) -> Result<Jwt, String> {
        Ok(Jwt)
    }

    pub async fn verify(&self, _token: &str) -> Result<serde_json::Map<String, serde_json::Value>, JwtRejection> {
        Err(JwtRejection("not built yet".into()))
    }
}
