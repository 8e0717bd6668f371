//! API keys: a client sends its key in a header (or a query parameter); the gateway keeps only
//! each key's SHA-256, with the key's name (the identity) and scopes.
//!
//! Keys come from the config and from a key file, which is read again when it changes: the first
//! call after a change (checked at most once a second, by its modification time) loads it, and a
//! broken file keeps the keys it had, with a warning. Plain SHA-256 is enough: API keys are long
//! random strings, not passwords, so there is nothing for a slow hash to protect.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderName;
use serde::{Deserialize, Serialize};

use super::{Identity, Source};

/// One key as written in `auth.api_keys.keys` or in the key file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Who holds the key: the identity the backend is told and rules name.
    pub name: String,
    /// The key's SHA-256, hex (`printf %s "$KEY" | sha256sum`). The key itself is never stored.
    pub sha256: String,
    /// What the key may do: rules' `scopes` are checked against these.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The `auth.api_keys:` section.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    /// The request header that carries the key. Default `x-api-key`.
    #[serde(default = "default_header")]
    pub header: String,
    /// A query parameter that may carry the key instead (REST, SOAP and WebSocket URLs); none by
    /// default, as URLs end up in logs.
    #[serde(default)]
    pub query_parameter: Option<String>,
    /// Keys in the config itself.
    #[serde(default)]
    pub keys: Vec<KeyFile>,
    /// A YAML file holding a list of keys (the same fields as `keys`), read again when it changes.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

fn default_header() -> String {
    "x-api-key".to_owned()
}

type Digest = [u8; 32];

/// The keys, looked up by digest: the config's and the key file's.
pub struct ApiKeys {
    pub header: http::HeaderName,
    pub query_parameter: Option<String>,
    inline: Keys,
    file: Option<KeyFileState>,
}

/// The key file, its keys as last read, and when it was last looked at.
struct KeyFileState {
    path: PathBuf,
    keys: ArcSwap<Keys>,
    /// The metadata naming a key's holder to the backend.
    identity_metadata: HeaderName,
    modified: ArcSwap<Option<SystemTime>>,
    /// Milliseconds since `epoch` of the last look; one caller at a time looks.
    checked: AtomicU64,
    epoch: std::time::Instant,
}

/// How often the key file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(1);

impl ApiKeys {
    /// The keys; each holder's identity tells the backend its name in `identity_metadata`.
    pub fn new(file: &ApiKeysFile, base: &Path, identity_metadata: &HeaderName) -> Result<Self, String> {
        let header = http::HeaderName::from_bytes(file.header.as_bytes())
            .map_err(|_| format!("at `auth.api_keys.header`: not a header name: {:?}", file.header))?;
        let inline = digests(&file.keys, identity_metadata).map_err(|e| format!("at `auth.api_keys.keys`: {e}"))?;
        let query_parameter = file.query_parameter.clone();
        let file = match &file.file {
            None => None,
            Some(path) => {
                let path = if path.is_absolute() { path.clone() } else { base.join(path) };
                let (keys, modified) =
                    read(&path, identity_metadata).map_err(|e| format!("at `auth.api_keys.file`: {e}"))?;
                Some(KeyFileState {
                    path,
                    keys: ArcSwap::from_pointee(keys),
                    modified: ArcSwap::from_pointee(modified),
                    identity_metadata: identity_metadata.clone(),
                    checked: AtomicU64::new(0),
                    epoch: std::time::Instant::now(),
                })
            }
        };
        Ok(ApiKeys { header, query_parameter, inline, file })
    }

    /// Who holds `key`, if it is known.
    pub fn holder(&self, key: &[u8]) -> Option<Arc<Identity>> {
        let digest = sha256(key);
        if let Some(holder) = self.inline.get(&digest) {
            return Some(holder.clone());
        }
        let file = self.file.as_ref()?;
        file.refresh();
        file.keys.load().get(&digest).cloned()
    }
}

impl KeyFileState {
    /// Reads the file again if it changed, at most once per [`RECHECK`], one caller at a time.
    fn refresh(&self) {
        self.refresh_at(self.epoch.elapsed().as_millis() as u64);
    }

    /// [`KeyFileState::refresh`] at `now`, in milliseconds since `epoch`.
    fn refresh_at(&self, now: u64) {
        let checked = self.checked.load(Ordering::Relaxed);
        if now.saturating_sub(checked) < RECHECK.as_millis() as u64
            || self.checked.compare_exchange(checked, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return;
        }
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified == **self.modified.load() {
            return;
        }
        match read(&self.path, &self.identity_metadata) {
            Ok((keys, modified)) => {
                tracing::info!(file = %self.path.display(), keys = keys.len(), "API key file reloaded");
                self.keys.store(Arc::new(keys));
                self.modified.store(Arc::new(modified));
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "API key file not reloaded; its previous keys stay")
            }
        }
    }
}

type Keys = HashMap<Digest, Arc<Identity>>;

fn read(path: &Path, identity_metadata: &HeaderName) -> Result<(Keys, Option<SystemTime>), String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let keys: Vec<KeyFile> = serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((digests(&keys, identity_metadata).map_err(|e| format!("{}: {e}", path.display()))?, modified))
}

fn digests(keys: &[KeyFile], identity_metadata: &HeaderName) -> Result<Keys, String> {
    let mut out = HashMap::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let digest =
            parse_hex(&key.sha256).ok_or_else(|| format!("key {i} ({}): sha256 must be 64 hex digits", key.name))?;
        let holder = Identity::new(key.name.clone(), Source::ApiKey, key.scopes.clone(), Default::default())
            .told_as(identity_metadata, &[]);
        let holder = Arc::new(holder);
        if out.insert(digest, holder).is_some() {
            return Err(format!("key {i} ({}): the same key is listed twice", key.name));
        }
    }
    Ok(out)
}

fn parse_hex(hex: &str) -> Option<Digest> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

fn sha256(key: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, key).as_ref());
    out
}

/// SHA-256 of a key, hex: what the config stores.
pub fn hash_hex(key: &str) -> String {
    sha256(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    static NAME: HeaderName = HeaderName::from_static("x-identity");

    fn file(keys: Vec<KeyFile>, path: Option<PathBuf>) -> ApiKeysFile {
        ApiKeysFile { header: default_header(), query_parameter: None, keys, file: path }
    }

    #[test]
    fn a_key_is_known_by_its_hash_only() {
        let keys = vec![KeyFile { name: "billing".into(), sha256: hash_hex("s3cret"), scopes: vec!["a".into()] }];
        let api_keys = ApiKeys::new(&file(keys, None), Path::new("."), &NAME).expect("test set-up");
        assert_eq!(api_keys.holder(b"s3cret").expect("test set-up").name, "billing");
        assert!(api_keys.holder(b"s3cret ").is_none());
        assert!(api_keys.holder(b"").is_none());
        let bad = vec![KeyFile { name: "x".into(), sha256: "zz".into(), scopes: vec![] }];
        let Err(error) = ApiKeys::new(&file(bad, None), Path::new("."), &NAME) else {
            panic!("a bad digest was accepted")
        };
        assert!(error.contains("64 hex digits"), "{error}");
    }

    #[test]
    fn the_key_file_is_read_again_when_it_changes_and_a_broken_one_keeps_the_old_keys() {
        let dir = tempfile::tempdir().expect("test set-up");
        let path = dir.path().join("keys.yaml");
        let write = |key: &str| {
            std::fs::write(&path, format!("- name: {key}-holder\n  sha256: {}\n", hash_hex(key))).expect("test set-up");
        };
        write("one");
        let api_keys = ApiKeys::new(&file(vec![], Some("keys.yaml".into())), dir.path(), &NAME).expect("test set-up");
        assert_eq!(api_keys.holder(b"one").expect("test set-up").name, "one-holder");
        // A change is seen at the next look (at most one per RECHECK).
        write("two");
        let state = api_keys.file.as_ref().expect("test set-up");
        let set_modified = |secs: u64| {
            let f = std::fs::File::options().write(true).open(&path).expect("test set-up");
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).expect("test set-up");
        };
        set_modified(1_000);
        state.refresh_at(10_000);
        assert_eq!(api_keys.holder(b"two").expect("test set-up").name, "two-holder");
        assert!(api_keys.holder(b"one").is_none());
        std::fs::write(&path, "- name: [not a string\n").expect("test set-up");
        set_modified(2_000);
        state.refresh_at(20_000);
        assert_eq!(api_keys.holder(b"two").expect("test set-up").name, "two-holder", "the broken file changed nothing");
    }
}
