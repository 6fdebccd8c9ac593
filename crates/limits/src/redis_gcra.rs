//! Limits shared through Redis: GCRA in one Lua script, so reading and advancing a
//! key's theoretical arrival time (TAT) is atomic across instances, and timed by
//! Redis's clock, so instances with skewed clocks still agree.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};

use crate::{Decision, LimitError, Policy};

/// Returns {admitted (0/1), remaining, microseconds until reset or retry}.
const GCRA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local tolerance = interval * (limit - 1)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local allowed_from = tat - tolerance
if now < allowed_from then
  return {0, 0, allowed_from - now}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil((next_tat - now) / 1000) + 1)
local remaining = math.floor((now + tolerance + interval - next_tat) / interval)
if remaining < 0 then remaining = 0 end
return {1, remaining, next_tat - now}
";

/// How long one limit check may wait for Redis before the local limiter answers.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);

pub(crate) struct Shared {
    connection: ConnectionManager,
    script: redis::Script,
}

impl Shared {
    pub(crate) async fn connect(url: &SecretString) -> Result<Self, LimitError> {
        let client = redis::Client::open(url.expose_secret())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            connection,
            script: redis::Script::new(GCRA),
        })
    }

    pub(crate) async fn check(&self, policy: &Policy, key: &str) -> Result<Decision, LimitError> {
        let interval = u64::try_from(policy.interval().as_micros()).unwrap_or(u64::MAX);
        let mut connection = self.connection.clone();
        let (admitted, remaining, micros): (i64, i64, i64) = self
            .script
            .key(format!("gatehouse:ratelimit:{}:{key}", policy.name))
            .arg(interval.max(1))
            .arg(policy.limit.max(1))
            .invoke_async(&mut connection)
            .await?;
        let wait = Duration::from_micros(micros.unsigned_abs());
        Ok(if admitted == 1 {
            Decision::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(0),
                reset: wait,
            }
        } else {
            Decision::Limited { retry_after: wait }
        })
    }
}
