//! Password sign-in attempts, counted per account and per client address in the
//! database (so a restart or another instance does not reset them). Each attempt
//! is counted before its password is hashed, so guesses sent in parallel cannot
//! outrun the count; a success starts the account's count over. Reaching the count
//! with a failure locks the key for a while that doubles with each lock, up to a
//! ceiling, and ends by itself. The account key is the hash of the address typed,
//! existing or not, so a lock says nothing about whether an account exists.

use std::time::Duration;

use gatehouse_db::{Database, Sql, Statement};
use time::OffsetDateTime;

use crate::{AuthError, Result, now, timestamp};

/// When failed sign-ins lock a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures of one account within `window` that lock it.
    pub per_account: u32,
    /// Failures from one address within `window` that lock it.
    pub per_address: u32,
    pub window: Duration,
    /// The first lock; each further one doubles, up to `longest_lock`.
    pub first_lock: Duration,
    pub longest_lock: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            per_account: 10,
            per_address: 100,
            window: Duration::from_secs(15 * 60),
            first_lock: Duration::from_secs(5 * 60),
            longest_lock: Duration::from_secs(60 * 60),
        }
    }
}

/// Counts one attempt, starting a new window when the last one is over; attempts
/// refused by a lock are not counted (they cost nothing, and counting them would
/// turn the wrong passwords hashed before the lock into lock answers too).
const COUNT: Sql = Sql {
    sqlite: "INSERT INTO gatehouse_sign_in_throttle (key, failures, window_started_at) VALUES (?1, 1, ?2) \
             ON CONFLICT (key) DO UPDATE SET \
             failures = CASE WHEN locked_until > ?2 THEN failures \
             WHEN window_started_at < ?3 THEN 1 ELSE failures + 1 END, \
             window_started_at = CASE WHEN window_started_at < ?3 THEN ?2 ELSE window_started_at END \
             RETURNING failures, locks, locked_until",
    postgres: "INSERT INTO gatehouse_sign_in_throttle AS t (key, failures, window_started_at) VALUES ($1, 1, $2) \
               ON CONFLICT (key) DO UPDATE SET \
               failures = CASE WHEN t.locked_until > $2 THEN t.failures \
               WHEN t.window_started_at < $3 THEN 1 ELSE t.failures + 1 END, \
               window_started_at = CASE WHEN t.window_started_at < $3 THEN $2 ELSE t.window_started_at END \
               RETURNING failures, locks, locked_until",
};

/// Locks a key that is not locked already (racing attempts lock it once).
const LOCK: Sql = Sql {
    sqlite: "UPDATE gatehouse_sign_in_throttle SET locked_until = ?2, locks = locks + 1, failures = 0 \
             WHERE key = ?1 AND (locked_until IS NULL OR locked_until <= ?3) RETURNING locks",
    postgres: "UPDATE gatehouse_sign_in_throttle SET locked_until = $2, locks = locks + 1, failures = 0 \
               WHERE key = $1 AND (locked_until IS NULL OR locked_until <= $3) RETURNING locks",
};

/// A success takes its own attempt back off the address's count: only failures
/// should add up there.
const UNCOUNT: Sql = Sql {
    sqlite: "UPDATE gatehouse_sign_in_throttle SET failures = MAX(failures - 1, 0) WHERE key = ?1",
    postgres: "UPDATE gatehouse_sign_in_throttle SET failures = GREATEST(failures - 1, 0) WHERE key = $1",
};

/// A success starts the count over, and leaves a lock an in-flight guess met alone.
const SUCCEEDED: Sql = Sql {
    sqlite: "UPDATE gatehouse_sign_in_throttle SET failures = 0, locks = 0 \
             WHERE key = ?1 AND (locked_until IS NULL OR locked_until <= ?2)",
    postgres: "UPDATE gatehouse_sign_in_throttle SET failures = 0, locks = 0 \
               WHERE key = $1 AND (locked_until IS NULL OR locked_until <= $2)",
};

/// Keys whose window and lock are over: what they counted no longer matters.
const STATE: Sql = Sql {
    sqlite: "SELECT failures, locks FROM gatehouse_sign_in_throttle WHERE key = ?1",
    postgres: "SELECT failures, locks FROM gatehouse_sign_in_throttle WHERE key = $1",
};

const PRUNE: Sql = Sql {
    sqlite: "DELETE FROM gatehouse_sign_in_throttle WHERE window_started_at < ?1 \
             AND (locked_until IS NULL OR locked_until < ?2)",
    postgres: "DELETE FROM gatehouse_sign_in_throttle WHERE window_started_at < $1 \
               AND (locked_until IS NULL OR locked_until < $2)",
};

/// The keys one sign-in attempt counts against.
pub(crate) struct Keys {
    account: String,
    address: Option<String>,
}

impl Keys {
    pub(crate) fn new(email: &str, ip: Option<&str>) -> Self {
        Self {
            account: format!(
                "account:{}",
                crate::token_hash(&email.trim().to_lowercase())
            ),
            address: ip.map(|ip| format!("ip:{ip}")),
        }
    }
}

pub(crate) struct Throttle {
    db: Database,
    settings: ThrottleSettings,
}

fn parse_time(text: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|error| AuthError::Internal(error.to_string()))
}

impl Throttle {
    pub(crate) fn new(db: Database, settings: ThrottleSettings) -> Self {
        Self { db, settings }
    }

    fn counted(&self, keys: &Keys) -> [(Option<String>, u32); 2] {
        [
            (Some(keys.account.clone()), self.settings.per_account),
            (keys.address.clone(), self.settings.per_address),
        ]
    }

    /// Counts the attempt against both keys before any hashing. Refused while a
    /// key is locked, or when the attempt goes past a key's count (then it locks).
    pub(crate) async fn begin(&self, keys: &Keys) -> Result<()> {
        for (key, threshold) in self.counted(keys) {
            let Some(key) = key else { continue };
            let at = now();
            let rows = self
                .db
                .transaction(vec![Statement::new(
                    &COUNT,
                    vec![
                        key.clone().into(),
                        timestamp(at).into(),
                        timestamp(at - self.settings.window).into(),
                    ],
                )])
                .await?;
            let Some(row) = rows.first().and_then(|rows| rows.first()) else {
                continue;
            };
            if let Some(until) = row.optional_text(2)? {
                let wait = parse_time(until)? - at;
                if wait.is_positive() {
                    return Err(AuthError::Throttled(wait.try_into().unwrap_or_default()));
                }
            }
            if row.integer(0)? > i64::from(threshold) {
                // Locked now, by this attempt or a racing one.
                let lock = self.lock(&key, row.integer(1)?).await?;
                return Err(AuthError::Throttled(
                    lock.unwrap_or(self.settings.first_lock),
                ));
            }
        }
        Ok(())
    }

    /// The attempt's password was wrong: a key whose count it reached is locked;
    /// returns how long.
    pub(crate) async fn failed(&self, keys: &Keys) -> Result<Option<Duration>> {
        let mut locked = None;
        for (key, threshold) in self.counted(keys) {
            let Some(key) = key else { continue };
            let rows = self
                .db
                .query(Statement::new(&STATE, vec![key.clone().into()]))
                .await?;
            let Some(row) = rows.first() else { continue };
            if row.integer(0)? >= i64::from(threshold)
                && let Some(lock) = self.lock(&key, row.integer(1)?).await?
            {
                locked = Some(locked.map_or(lock, |other: Duration| other.max(lock)));
            }
        }
        Ok(locked)
    }

    /// Locks `key` unless it is locked already; returns how long, when it did.
    async fn lock(&self, key: &str, locks: i64) -> Result<Option<Duration>> {
        let at = now();
        let doubling = u32::try_from(locks.clamp(0, 16)).unwrap_or(16);
        let lock = self
            .settings
            .first_lock
            .saturating_mul(1 << doubling)
            .min(self.settings.longest_lock);
        let rows = self
            .db
            .transaction(vec![Statement::new(
                &LOCK,
                vec![
                    key.to_owned().into(),
                    timestamp(at + lock).into(),
                    timestamp(at).into(),
                ],
            )])
            .await?;
        if rows.first().is_none_or(Vec::is_empty) {
            return Ok(None);
        }
        tracing::warn!(
            key = key.split(':').next(),
            ?lock,
            "sign-in attempts locked a key"
        );
        Ok(Some(lock))
    }

    /// A successful sign-in starts the account's count over and takes its attempt
    /// back off the address's count (many people sign in from one address).
    pub(crate) async fn succeeded(&self, keys: &Keys) -> Result<()> {
        let mut statements = vec![Statement::new(
            &SUCCEEDED,
            vec![keys.account.clone().into(), timestamp(now()).into()],
        )];
        if let Some(address) = &keys.address {
            statements.push(Statement::new(&UNCOUNT, vec![address.clone().into()]));
        }
        self.db.transaction(statements).await?;
        Ok(())
    }

    /// Drops keys whose window and lock are over; the server calls it periodically.
    pub(crate) async fn prune(&self) -> Result<()> {
        let at = now();
        self.db
            .transaction(vec![Statement::new(
                &PRUNE,
                vec![
                    timestamp(at - self.settings.window).into(),
                    timestamp(at).into(),
                ],
            )])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use gatehouse_db::testing::TestDatabase;

    use super::*;

    /// A throttle on a fresh SQLite database (kept alive by the first value).
    async fn throttle(settings: ThrottleSettings) -> (TestDatabase, Throttle) {
        let database = TestDatabase::sqlite();
        let db = Database::open(&database.location(), Default::default())
            .await
            .unwrap();
        (database, Throttle::new(db, settings))
    }

    /// Attempts are counted before any hash: with a count of 3, a fourth attempt
    /// is refused at `begin` even while the first three are still being hashed,
    /// which is what keeps parallel guesses from outrunning the lock.
    #[tokio::test]
    async fn attempts_past_the_count_are_refused_before_hashing() {
        let (_database, throttle) = throttle(ThrottleSettings {
            per_account: 3,
            ..ThrottleSettings::default()
        })
        .await;
        let keys = Keys::new("sam@example.com", Some("198.51.100.7"));
        for _ in 0..3 {
            throttle.begin(&keys).await.unwrap();
        }
        let refused = throttle.begin(&keys).await;
        assert!(
            matches!(refused, Err(AuthError::Throttled(_))),
            "{refused:?}"
        );
        // The lock holds for the right password as well, and an in-flight success
        // does not lift it.
        throttle.succeeded(&keys).await.unwrap();
        assert!(matches!(
            throttle.begin(&keys).await,
            Err(AuthError::Throttled(_))
        ));
        // Another account from the same address is not locked.
        throttle
            .begin(&Keys::new("kai@example.com", Some("198.51.100.7")))
            .await
            .unwrap();
    }

    /// Successful sign-ins do not add up against their address: a hundred people
    /// behind one address sign in over and over without a lock.
    #[tokio::test]
    async fn successes_do_not_count_against_the_address() {
        let (_database, throttle) = throttle(ThrottleSettings {
            per_address: 5,
            ..ThrottleSettings::default()
        })
        .await;
        for i in 0..20 {
            let keys = Keys::new(&format!("user{i}@example.com"), Some("203.0.113.9"));
            throttle.begin(&keys).await.unwrap();
            throttle.succeeded(&keys).await.unwrap();
        }
    }
}
