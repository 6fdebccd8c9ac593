//! Rate limits: the generic cell rate algorithm (GCRA), per policy and key, held in
//! this process by default (governor) or shared by every instance through Redis
//! (one atomic Lua script, timed by Redis's own clock), behind one interface.
//!
//! A policy admits `limit` requests at once and gives one back every
//! `window / limit`, so no key ever gets more than `limit` plus what refilled in
//! any window. When Redis fails, each instance falls back to its own limiter:
//! limits loosen to one budget per instance, but never vanish.

mod local;
mod redis_gcra;

use std::time::Duration;

use secrecy::SecretString;

/// `limit` requests per `window`, for one class of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    /// The name clients see in the `RateLimit-Policy` header.
    pub name: &'static str,
    pub limit: u32,
    pub window: Duration,
}

impl Policy {
    /// The time after which one more request is admitted.
    fn interval(&self) -> Duration {
        self.window / self.limit.max(1)
    }
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; `remaining` more could come at once, and the full budget is back
    /// after `reset`.
    Allowed { remaining: u32, reset: Duration },
    /// Refused; the next request is admitted after `retry_after`.
    Limited { retry_after: Duration },
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Policy(String),
}

/// The limiter for every policy. Cheap to share behind an `Arc`.
pub struct Limiter {
    local: local::Local,
    shared: Option<redis_gcra::Shared>,
}

impl Limiter {
    /// Limits held in this process: right for one instance.
    pub fn in_process(policies: &[Policy]) -> Result<Self, LimitError> {
        Ok(Self {
            local: local::Local::new(policies)?,
            shared: None,
        })
    }

    /// Limits shared through Redis by every instance using the same server.
    pub async fn shared(policies: &[Policy], url: &SecretString) -> Result<Self, LimitError> {
        Ok(Self {
            local: local::Local::new(policies)?,
            shared: Some(redis_gcra::Shared::connect(url).await?),
        })
    }

    /// Counts one request by `key` against `policy`.
    pub async fn check(&self, policy: &Policy, key: &str) -> Decision {
        if let Some(shared) = &self.shared {
            match shared.check(policy, key).await {
                Ok(decision) => return decision,
                Err(error) => {
                    tracing::warn!(%error, policy = policy.name, "shared rate limit unavailable; limiting in this instance");
                }
            }
        }
        self.local.check(policy, key)
    }

    /// Forgets keys whose budget has refilled, bounding memory; call periodically.
    pub fn forget_idle(&self) {
        self.local.forget_idle();
    }
}
