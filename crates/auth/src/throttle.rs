//! Failed password sign-ins, counted per account and per client address in the
//! database (so a restart or another instance does not reset them). Too many in a
//! window locks the key for a while that doubles with each lock, up to a ceiling,
//! and ends by itself. The account key is the hash of the address typed, existing
//! or not, so a lock says nothing about whether an account exists.

use std::time::Duration;

use gatehouse_db::{Database, Sql, Statement, Value};
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

const LOCKED_UNTIL: Sql = Sql {
    sqlite: "SELECT MAX(locked_until) FROM gatehouse_sign_in_throttle \
             WHERE key IN (?1, ?2) AND locked_until > ?3",
    postgres: "SELECT MAX(locked_until) FROM gatehouse_sign_in_throttle \
               WHERE key IN ($1, $2) AND locked_until > $3",
};

/// Counts one failure, starting a new window when the last one is over.
const FAILED: Sql = Sql {
    sqlite: "INSERT INTO gatehouse_sign_in_throttle (key, failures, window_started_at) VALUES (?1, 1, ?2) \
             ON CONFLICT (key) DO UPDATE SET \
             failures = CASE WHEN window_started_at < ?3 THEN 1 ELSE failures + 1 END, \
             window_started_at = CASE WHEN window_started_at < ?3 THEN ?2 ELSE window_started_at END \
             RETURNING failures, locks",
    postgres: "INSERT INTO gatehouse_sign_in_throttle AS t (key, failures, window_started_at) VALUES ($1, 1, $2) \
               ON CONFLICT (key) DO UPDATE SET \
               failures = CASE WHEN t.window_started_at < $3 THEN 1 ELSE t.failures + 1 END, \
               window_started_at = CASE WHEN t.window_started_at < $3 THEN $2 ELSE t.window_started_at END \
               RETURNING failures, locks",
};

const LOCK: Sql = Sql {
    sqlite: "UPDATE gatehouse_sign_in_throttle SET locked_until = ?2, locks = locks + 1, failures = 0 \
             WHERE key = ?1",
    postgres: "UPDATE gatehouse_sign_in_throttle SET locked_until = $2, locks = locks + 1, failures = 0 \
               WHERE key = $1",
};

const FORGET: Sql = Sql {
    sqlite: "DELETE FROM gatehouse_sign_in_throttle WHERE key = ?1",
    postgres: "DELETE FROM gatehouse_sign_in_throttle WHERE key = $1",
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

    /// Refuses the attempt while either key is locked, before any hashing.
    pub(crate) async fn check(&self, keys: &Keys) -> Result<()> {
        let at = now();
        let address = keys.address.clone().map_or(Value::Null, Value::Text);
        let rows = self
            .db
            .query(Statement::new(
                &LOCKED_UNTIL,
                vec![keys.account.clone().into(), address, timestamp(at).into()],
            ))
            .await?;
        match rows.first().map(|row| row.optional_text(0)).transpose()? {
            Some(Some(until)) => {
                let wait = parse_time(until)? - at;
                Err(AuthError::Throttled(wait.try_into().unwrap_or_default()))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt against both keys; returns how long a key it
    /// locked stays locked.
    pub(crate) async fn failed(&self, keys: &Keys) -> Result<Option<Duration>> {
        let mut locked = None;
        let counted = [
            (Some(&keys.account), self.settings.per_account),
            (keys.address.as_ref(), self.settings.per_address),
        ];
        for (key, threshold) in counted {
            let Some(key) = key else { continue };
            let at = now();
            let window_start = at - self.settings.window;
            let rows = self
                .db
                .transaction(vec![Statement::new(
                    &FAILED,
                    vec![
                        key.clone().into(),
                        timestamp(at).into(),
                        timestamp(window_start).into(),
                    ],
                )])
                .await?;
            let Some(row) = rows.first().and_then(|rows| rows.first()) else {
                continue;
            };
            let (failures, locks) = (row.integer(0)?, row.integer(1)?);
            if failures < i64::from(threshold) {
                continue;
            }
            let doubling = u32::try_from(locks.clamp(0, 16)).unwrap_or(16);
            let lock = self
                .settings
                .first_lock
                .saturating_mul(1 << doubling)
                .min(self.settings.longest_lock);
            self.db
                .transaction(vec![Statement::new(
                    &LOCK,
                    vec![key.clone().into(), timestamp(at + lock).into()],
                )])
                .await?;
            tracing::warn!(
                key = key.split(':').next(),
                ?lock,
                "failed sign-ins locked a key"
            );
            locked = Some(locked.map_or(lock, |other: Duration| other.max(lock)));
        }
        Ok(locked)
    }

    /// A successful sign-in clears the account's count (not the address's).
    pub(crate) async fn succeeded(&self, keys: &Keys) -> Result<()> {
        self.db
            .transaction(vec![Statement::new(
                &FORGET,
                vec![keys.account.clone().into()],
            )])
            .await?;
        Ok(())
    }
}
