//! Limits shared by every gateway replica through Redis (stub until the redis branch merges).

use std::time::Duration;

pub struct RedisLimiter {
    url: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("redis at {url}: {reason}")]
pub struct RedisUnavailable {
    pub url: String,
    pub reason: String,
}

impl RedisLimiter {
    pub fn new(url: &str, _timeout: Duration) -> Result<RedisLimiter, String> {
        Ok(RedisLimiter { url: url.to_owned() })
    }

    pub async fn check(&self, _key: &str, _quota: super::Quota) -> Result<super::Decision, RedisUnavailable> {
        Err(RedisUnavailable { url: self.url.clone(), reason: "not built yet".into() })
    }
}
