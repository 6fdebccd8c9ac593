//! Failed attempts at a secret (a password at sign-in, an emailed code), counted
//! in the database so a restart or another instance does not reset them. Only
//! failures count: a success never moves a key toward a lock. Parallel guesses
//! cannot outrun the count all the same, because each key admits at most as many
//! attempts in flight (on this instance) as it has failures left; more wait their
//! turn. Reaching the count locks the key for a while that doubles with each lock,
//! up to a ceiling, and ends by itself.
//!
//! Password sign-in counts three keys: the account from this client address
//! (tight: one place guessing), the account from anywhere (loose: a distributed
//! guess), and the address across accounts (credential stuffing). A lock of the
//! account as a whole does not apply at addresses where it signed in with its
//! password lately, so strangers' failures cannot lock the owner's usual device
//! out. The account key is the hash of the address typed, existing or not, so a
//! lock says nothing about whether an account exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_db::{Database, Sql, Statement, Value};
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{AuthError, Result, now, timestamp, token_hash};

/// When failed attempts lock a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures of one account from one client address within `window` that lock
    /// the account there.
    pub per_account_address: u32,
    /// Failures of one account from all addresses within `window` that lock it,
    /// except where it signed in lately.
    pub per_account: u32,
    /// Failures from one address within `window`, across accounts, that lock it.
    pub per_address: u32,
    /// Wrong codes for one email within `window` that spend its codes and lock it.
    pub per_code: u32,
    /// Wrong codes for one second factor within `window` that lock it.
    pub per_factor: u32,
    pub window: Duration,
    /// The first lock; each further one doubles, up to `longest_lock`.
    pub first_lock: Duration,
    pub longest_lock: Duration,
    /// How long a password sign-in makes its address familiar to the account.
    pub familiar_for: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            per_account_address: 10,
            per_account: 100,
            per_address: 100,
            per_code: 5,
            per_factor: 5,
            window: Duration::from_secs(15 * 60),
            first_lock: Duration::from_secs(5 * 60),
            longest_lock: Duration::from_secs(60 * 60),
            familiar_for: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Counts one failure, starting a new window when the last one is over; failures
/// during a lock are not counted (only the attempts hashed before it can fail then).
const COUNT: Sql = Sql {
    sqlite: "INSERT INTO gatehouse_sign_in_throttle (key, failures, window_started_at) VALUES (?1, 1, ?2) \
             ON CONFLICT (key) DO UPDATE SET \
             failures = CASE WHEN locked_until > ?2 THEN failures \
             WHEN window_started_at < ?3 THEN 1 ELSE failures + 1 END, \
             window_started_at = CASE WHEN window_started_at < ?3 THEN ?2 ELSE window_started_at END \
             RETURNING failures, locks",
    postgres: "INSERT INTO gatehouse_sign_in_throttle AS t (key, failures, window_started_at) VALUES ($1, 1, $2) \
               ON CONFLICT (key) DO UPDATE SET \
               failures = CASE WHEN t.locked_until > $2 THEN t.failures \
               WHEN t.window_started_at < $3 THEN 1 ELSE t.failures + 1 END, \
               window_started_at = CASE WHEN t.window_started_at < $3 THEN $2 ELSE t.window_started_at END \
               RETURNING failures, locks",
};

/// Locks a key that is not locked already (racing attempts lock it once).
const LOCK: Sql = Sql::both(
    "UPDATE gatehouse_sign_in_throttle SET locked_until = $2, locks = locks + 1, failures = 0 \
     WHERE key = $1 AND (locked_until IS NULL OR locked_until <= $3) RETURNING locks",
);

/// A key's failures in its current window (0 once it is over) and its lock.
const STATE: Sql = Sql::both(
    "SELECT CASE WHEN window_started_at < $2 THEN 0 ELSE failures END, locked_until \
     FROM gatehouse_sign_in_throttle WHERE key = $1",
);

/// A success starts a key over, and leaves a lock an in-flight guess met alone.
const RESET: Sql = Sql::both(
    "UPDATE gatehouse_sign_in_throttle SET failures = 0, locks = 0 \
     WHERE key = $1 AND (locked_until IS NULL OR locked_until <= $2)",
);

/// Keys whose window and lock are over: what they counted no longer matters.
const PRUNE: Sql = Sql::both(
    "DELETE FROM gatehouse_sign_in_throttle WHERE window_started_at < $1 \
     AND (locked_until IS NULL OR locked_until < $2)",
);

const REMEMBER: Sql = Sql::both(
    "INSERT INTO gatehouse_sign_in_known (key, last_success_at) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET last_success_at = excluded.last_success_at",
);

const KNOWN: Sql =
    Sql::both("SELECT 1 FROM gatehouse_sign_in_known WHERE key = $1 AND last_success_at > $2");

const FORGET_KNOWN: Sql =
    Sql::both("DELETE FROM gatehouse_sign_in_known WHERE last_success_at < $1");

/// How long an attempt waits for a turn on a busy key before it is turned away
/// (429, no lock): a burst of the owner's own sign-ins queues rather than fails.
const TURN_WAIT: Duration = Duration::from_secs(10);

/// One counted key and the failures that lock it.
#[derive(Debug, Clone)]
pub(crate) struct Counter {
    key: String,
    most: u32,
}

/// The keys one password sign-in attempt counts against.
pub(crate) struct SignInKeys {
    pair: Counter,
    account: Counter,
    address: Option<Counter>,
}

/// The address part of a key: IPv6 clients are counted by their /64, which one
/// subscriber usually holds whole.
fn address_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or_else(|| ip.to_owned(), |v4| v4.to_string()),
        _ => ip.to_owned(),
    }
}

impl SignInKeys {
    pub(crate) fn new(email: &str, ip: Option<&str>, settings: &ThrottleSettings) -> Self {
        let account = email_key(email);
        let address = ip.map(address_key);
        Self {
            pair: Counter {
                key: format!("pair:{account}:{}", address.as_deref().unwrap_or("-")),
                most: settings.per_account_address,
            },
            account: Counter {
                key: format!("account:{account}"),
                most: settings.per_account,
            },
            address: address.map(|address| Counter {
                key: format!("ip:{address}"),
                most: settings.per_address,
            }),
        }
    }

    /// Where the account signed in before: the pair's key, remembered apart.
    fn familiarity(&self) -> &str {
        &self.pair.key
    }

    fn all(&self) -> Vec<&Counter> {
        let mut all = vec![&self.pair, &self.account];
        all.extend(&self.address);
        all
    }
}

/// An address as counters name it: hashed, so the table holds no addresses.
fn email_key(email: &str) -> String {
    token_hash(&email.trim().to_lowercase())
}

/// The key for emailed codes to one address.
pub(crate) fn code_counter(email: &str, settings: &ThrottleSettings) -> Counter {
    Counter {
        key: format!("code:{}", email_key(email)),
        most: settings.per_code,
    }
}

/// The key for codes of one second factor: a guess at it is a guess at the
/// account, wherever it comes from.
pub(crate) fn factor_counter(factor_id: &str, settings: &ThrottleSettings) -> Counter {
    Counter {
        key: format!("factor:{factor_id}"),
        most: settings.per_factor,
    }
}

/// Attempts in flight per key on this instance. An entry lives while someone
/// holds or waits for a turn, so the map is bounded by the requests in flight.
#[derive(Default)]
struct InFlight {
    keys: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A turn on a key; dropping it gives the turn back.
pub(crate) struct Turn {
    permit: Option<OwnedSemaphorePermit>,
    key: String,
    in_flight: Arc<InFlight>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.permit.take());
        if let Ok(mut keys) = self.in_flight.keys.lock()
            && keys
                .get(&self.key)
                .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            keys.remove(&self.key);
        }
    }
}

impl InFlight {
    /// Waits for one of `most` turns on `key`; returns it and how many are taken
    /// (this one included).
    async fn enter(self: &Arc<Self>, key: &str, most: u32) -> Option<(Turn, u32)> {
        let semaphore = {
            let mut keys = self.keys.lock().ok()?;
            keys.entry(key.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(most.max(1) as usize)))
                .clone()
        };
        let acquired = tokio::time::timeout(TURN_WAIT, semaphore.clone().acquire_owned()).await;
        let permit = acquired.ok()?.ok()?;
        let taken = most.max(1) - u32::try_from(semaphore.available_permits()).unwrap_or(0);
        Some((
            Turn {
                permit: Some(permit),
                key: key.to_owned(),
                in_flight: self.clone(),
            },
            taken,
        ))
    }
}

pub(crate) struct Throttle {
    db: Database,
    settings: ThrottleSettings,
    in_flight: Arc<InFlight>,
}

fn parse_time(text: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|error| AuthError::Internal(error.to_string()))
}

/// A short wait for an attempt turned away without a lock.
const BUSY: Duration = Duration::from_secs(1);

impl Throttle {
    pub(crate) fn new(db: Database, settings: ThrottleSettings) -> Self {
        Self {
            db,
            settings,
            in_flight: Arc::default(),
        }
    }

    pub(crate) fn settings(&self) -> &ThrottleSettings {
        &self.settings
    }

    /// Admits a password sign-in attempt before its password is hashed: refused
    /// while the pair or the address is locked, or the account is and this
    /// address is not one it signed in from lately. The turns must be held until
    /// the outcome is recorded.
    pub(crate) async fn begin_sign_in(&self, keys: &SignInKeys) -> Result<Vec<Turn>> {
        let familiar = self.familiar(keys).await?;
        let mut checked = vec![&keys.pair];
        if !familiar {
            checked.push(&keys.account);
        }
        checked.extend(&keys.address);
        self.begin(&checked).await
    }

    /// Admits an attempt at the given keys: refused while one is locked, or when
    /// its failures and the attempts in flight on it would pass its count.
    pub(crate) async fn begin(&self, counters: &[&Counter]) -> Result<Vec<Turn>> {
        let mut turns = Vec::with_capacity(counters.len());
        for counter in counters {
            let (turn, taken) = self
                .in_flight
                .enter(&counter.key, counter.most)
                .await
                .ok_or(AuthError::Throttled(BUSY))?;
            turns.push(turn);
            let at = now();
            let rows = self
                .db
                .query(Statement::new(
                    &STATE,
                    vec![
                        counter.key.clone().into(),
                        timestamp(at - self.settings.window).into(),
                    ],
                ))
                .await?;
            let Some(row) = rows.first() else { continue };
            if let Some(until) = row.optional_text(1)? {
                let wait = parse_time(until)? - at;
                if wait.is_positive() {
                    return Err(AuthError::Throttled(wait.try_into().unwrap_or_default()));
                }
            }
            let failures = u32::try_from(row.integer(0)?).unwrap_or(u32::MAX);
            if failures.saturating_add(taken) > counter.most {
                return Err(AuthError::Throttled(BUSY));
            }
        }
        Ok(turns)
    }

    /// A password sign-in failed: every key counts it.
    pub(crate) async fn failed_sign_in(&self, keys: &SignInKeys) -> Result<Option<Duration>> {
        self.failed(&keys.all()).await
    }

    /// The attempt failed: each key counts it, and a key whose count it reaches is
    /// locked; returns how long the longest lock it made lasts.
    pub(crate) async fn failed(&self, counters: &[&Counter]) -> Result<Option<Duration>> {
        let mut locked = None;
        for counter in counters {
            let at = now();
            let rows = self
                .db
                .transaction(vec![Statement::new(
                    &COUNT,
                    vec![
                        counter.key.clone().into(),
                        timestamp(at).into(),
                        timestamp(at - self.settings.window).into(),
                    ],
                )])
                .await?;
            let Some(row) = rows.first().and_then(|rows| rows.first()) else {
                continue;
            };
            if row.integer(0)? >= i64::from(counter.most)
                && let Some(lock) = self.lock(&counter.key, row.integer(1)?).await?
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
            "failed attempts locked a key"
        );
        Ok(Some(lock))
    }

    /// A password sign-in succeeded: the pair starts over and the address becomes
    /// familiar to the account. The account's own count is left alone: the owner
    /// signing in says nothing about a stranger guessing elsewhere.
    pub(crate) async fn succeeded_sign_in(&self, keys: &SignInKeys) -> Result<()> {
        let at = timestamp(now());
        self.db
            .transaction(vec![
                Statement::new(
                    &RESET,
                    vec![keys.pair.key.clone().into(), at.clone().into()],
                ),
                Statement::new(
                    &REMEMBER,
                    vec![keys.familiarity().to_owned().into(), at.into()],
                ),
            ])
            .await?;
        Ok(())
    }

    /// A success at `counter` starts it over.
    pub(crate) async fn succeeded(&self, counter: &Counter) -> Result<()> {
        self.db
            .transaction(vec![Statement::new(
                &RESET,
                vec![counter.key.clone().into(), timestamp(now()).into()],
            )])
            .await?;
        Ok(())
    }

    async fn familiar(&self, keys: &SignInKeys) -> Result<bool> {
        let since = now() - self.settings.familiar_for;
        let rows = self
            .db
            .query(Statement::new(
                &KNOWN,
                vec![
                    Value::Text(keys.familiarity().to_owned()),
                    timestamp(since).into(),
                ],
            ))
            .await?;
        Ok(!rows.is_empty())
    }

    /// Drops keys whose window and lock are over and familiar addresses not seen
    /// for `familiar_for`; the server calls it periodically.
    pub(crate) async fn prune(&self) -> Result<()> {
        let at = now();
        self.db
            .transaction(vec![
                Statement::new(
                    &PRUNE,
                    vec![
                        timestamp(at - self.settings.window).into(),
                        timestamp(at).into(),
                    ],
                ),
                Statement::new(
                    &FORGET_KNOWN,
                    vec![timestamp(at - self.settings.familiar_for).into()],
                ),
            ])
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
    async fn throttle(settings: ThrottleSettings) -> (TestDatabase, Arc<Throttle>) {
        let database = TestDatabase::sqlite();
        let db = Database::open(&database.location(), Default::default())
            .await
            .unwrap();
        (database, Arc::new(Throttle::new(db, settings)))
    }

    /// With three failures left, at most three attempts are in flight on a key:
    /// a fourth waits for a turn, and is admitted only if the others succeeded.
    #[tokio::test]
    async fn attempts_in_flight_never_pass_the_failures_left() {
        let (_database, throttle) = throttle(ThrottleSettings {
            per_account_address: 3,
            ..ThrottleSettings::default()
        })
        .await;
        let keys = SignInKeys::new("sam@example.com", Some("198.51.100.7"), throttle.settings());
        let held: Vec<_> = hold_turns(&throttle, &keys, 3).await;
        let fourth =
            tokio::time::timeout(Duration::from_millis(200), throttle.begin_sign_in(&keys)).await;
        assert!(fourth.is_err(), "a fourth attempt waits for a turn");
        // The three fail: the pair locks, and the waiting attempt is refused.
        for _ in &held {
            throttle.failed_sign_in(&keys).await.unwrap();
        }
        drop(held);
        assert!(matches!(
            throttle.begin_sign_in(&keys).await,
            Err(AuthError::Throttled(_))
        ));
        // Another account from the same address is not locked.
        let other = SignInKeys::new("kai@example.com", Some("198.51.100.7"), throttle.settings());
        throttle.begin_sign_in(&other).await.unwrap();
    }

    async fn hold_turns(throttle: &Throttle, keys: &SignInKeys, n: usize) -> Vec<Vec<Turn>> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(throttle.begin_sign_in(keys).await.unwrap());
        }
        held
    }

    /// Successes count toward nothing: many sign-ins through one address and
    /// one account, one after another, never lock.
    #[tokio::test]
    async fn successes_never_count_toward_a_lock() {
        let (_database, throttle) = throttle(ThrottleSettings {
            per_account_address: 2,
            per_account: 2,
            per_address: 2,
            ..ThrottleSettings::default()
        })
        .await;
        for i in 0..20 {
            let keys = SignInKeys::new(
                &format!("user{}@example.com", i % 2),
                Some("203.0.113.9"),
                throttle.settings(),
            );
            let turns = throttle.begin_sign_in(&keys).await.unwrap();
            throttle.succeeded_sign_in(&keys).await.unwrap();
            drop(turns);
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(address_key("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::/64");
        assert_eq!(address_key("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(address_key("198.51.100.7"), "198.51.100.7");
    }
}
