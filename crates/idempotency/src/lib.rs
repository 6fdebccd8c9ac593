//! `Idempotency-Key` records, without HTTP: the first answer to a write is kept
//! per caller and key for 24 hours and given back to retries; the same key with
//! another request is refused; a retry while the first still runs is told to
//! wait, so a write never runs twice. Kept in the database
//! (`gatehouse_idempotency`), so it holds across restarts and instances. The
//! edge (`gatehouse-http`) decides which routes take a key, whose namespace a
//! caller is, and how an answer goes on the wire.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use gatehouse_db::{Database, DbError, Row, Sql, Statement, Value};

/// How long an answer is kept for replay.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// The largest answer body kept; a larger one is kept as its status alone.
pub const LARGEST_KEPT: usize = 8 << 20;

const CLAIM: Sql = Sql {
    sqlite: "INSERT INTO gatehouse_idempotency (caller, key, fingerprint, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (caller, key) DO UPDATE SET fingerprint = excluded.fingerprint, status = NULL, \
             headers = NULL, body = NULL, created_at = excluded.created_at \
             WHERE created_at < $5 OR (status IS NULL AND created_at < $6) \
             RETURNING 1",
    postgres: "INSERT INTO gatehouse_idempotency AS i (caller, key, fingerprint, created_at) VALUES ($1, $2, $3, $4) \
               ON CONFLICT (caller, key) DO UPDATE SET fingerprint = excluded.fingerprint, status = NULL, \
               headers = NULL, body = NULL, created_at = excluded.created_at \
               WHERE i.created_at < $5 OR (i.status IS NULL AND i.created_at < $6) \
               RETURNING 1",
};

const STORED: Sql = Sql::both(
    "SELECT fingerprint, status, headers, body FROM gatehouse_idempotency WHERE caller = $1 AND key = $2",
);

const COMPLETE: Sql = Sql::both(
    "UPDATE gatehouse_idempotency SET status = $3, headers = $4, body = $5 WHERE caller = $1 AND key = $2",
);

const RELEASE: Sql = Sql::both("DELETE FROM gatehouse_idempotency WHERE caller = $1 AND key = $2");

const PRUNE: Sql = Sql::both("DELETE FROM gatehouse_idempotency WHERE created_at < $1");

/// The first answer to a request: status, the headers that describe it, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a claim on a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's: run it, then [`Records::keep`] or
    /// [`Records::release`].
    Ours,
    /// The request that holds the key has not answered yet.
    InFlight,
    /// The key was used for a different request.
    Reused,
    /// The request already ran: its answer, to give back.
    Answered(Answer),
}

/// The records, over one database.
#[derive(Clone)]
pub struct Records {
    db: Database,
    /// After this a claim that never answered counts as abandoned.
    abandoned_after: Duration,
}

/// A request's identity for its key: a digest of what it asks.
pub fn fingerprint(method: &str, target: &str, body: &[u8]) -> String {
    let mut input = Vec::with_capacity(body.len() + target.len() + 16);
    input.extend_from_slice(method.as_bytes());
    input.push(b' ');
    input.extend_from_slice(target.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(body);
    hex_digest(&input)
}

/// SHA-256 of `bytes` in hex: how secrets such as a session cookie name a
/// caller's namespace without being stored.
pub fn hex_digest(bytes: &[u8]) -> String {
    digest(&SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn ago(duration: Duration) -> String {
    gatehouse_db::timestamp(time::OffsetDateTime::now_utc() - duration)
}

impl Records {
    pub fn new(db: Database, abandoned_after: Duration) -> Self {
        Self {
            db,
            abandoned_after,
        }
    }

    /// Takes `key` for `caller`'s request, or says who has it: a record past
    /// its time, or abandoned by a request that never answered, is taken over.
    pub async fn claim(
        &self,
        caller: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<Claim, DbError> {
        let now = gatehouse_db::timestamp(time::OffsetDateTime::now_utc());
        let claimed = self
            .db
            .transaction(vec![Statement::new(
                &CLAIM,
                vec![
                    caller.into(),
                    key.into(),
                    fingerprint.into(),
                    now.into(),
                    ago(KEPT_FOR).into(),
                    ago(self.abandoned_after).into(),
                ],
            )])
            .await?;
        if claimed.first().is_some_and(|rows| !rows.is_empty()) {
            return Ok(Claim::Ours);
        }
        let rows = self
            .db
            .query(Statement::new(&STORED, vec![caller.into(), key.into()]))
            .await?;
        // Released between the claim and this read: the client may simply retry.
        let Some(Row(values)) = rows.into_iter().next() else {
            return Ok(Claim::InFlight);
        };
        let mut values = values.into_iter();
        let (stored, status, headers, body) =
            (values.next(), values.next(), values.next(), values.next());
        if !matches!(stored, Some(Value::Text(ref text)) if text == fingerprint) {
            return Ok(Claim::Reused);
        }
        let Some(Value::Integer(status)) = status else {
            return Ok(Claim::InFlight);
        };
        let headers = match headers {
            Some(Value::Text(text)) => {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(name, value)| Some((name, value.as_str()?.to_owned())))
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(Claim::Answered(Answer {
            status: u16::try_from(status).unwrap_or(200),
            headers,
            body: match body {
                Some(Value::Blob(bytes)) => bytes,
                _ => Vec::new(),
            },
        }))
    }

    /// Keeps the answer of the request that claimed `key`. A body larger than
    /// [`LARGEST_KEPT`] is dropped: the status alone still tells a retry how
    /// the write ended, and it never runs twice.
    pub async fn keep(&self, caller: &str, key: &str, answer: Answer) -> Result<(), DbError> {
        let body = if answer.body.len() <= LARGEST_KEPT {
            answer.body
        } else {
            tracing::warn!(
                bytes = answer.body.len(),
                "answer too large to replay; keeping its status only"
            );
            Vec::new()
        };
        let headers: serde_json::Map<String, serde_json::Value> = answer
            .headers
            .into_iter()
            .map(|(name, value)| (name, value.into()))
            .collect();
        self.db
            .transaction(vec![Statement::new(
                &COMPLETE,
                vec![
                    caller.into(),
                    key.into(),
                    Value::Integer(i64::from(answer.status)),
                    serde_json::Value::Object(headers).to_string().into(),
                    Value::Blob(body),
                ],
            )])
            .await
            .map(drop)
    }

    /// Gives `key` up (the request failed on the server's side), so a retry
    /// runs again.
    pub async fn release(&self, caller: &str, key: &str) -> Result<(), DbError> {
        self.db
            .transaction(vec![Statement::new(
                &RELEASE,
                vec![caller.into(), key.into()],
            )])
            .await
            .map(drop)
    }

    /// Drops records past their 24 hours; the server calls it periodically.
    pub async fn prune(&self) -> Result<(), DbError> {
        self.db
            .transaction(vec![Statement::new(&PRUNE, vec![ago(KEPT_FOR).into()])])
            .await
            .map(drop)
    }
}
