//! The security audit log: who did what, from where, with what outcome. The
//! application only appends; nothing in Gatehouse updates or deletes an entry.
//! Entries carry ids, addresses and action names, never a password, token, code
//! or email body.

use gatehouse_db::{Database, Sql, Statement, Value};
use serde_json::{Value as Json, json};

use crate::{Result, now, timestamp};

/// Where a request came from, as the edge established it.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// One event worth keeping.
#[derive(Debug, Clone)]
pub struct Event {
    /// The user (or `service`, `cli`) who acted, when known.
    pub actor: Option<String>,
    /// A stable name such as `sign_in` or `admin_user_deleted`.
    pub action: &'static str,
    /// `success`, `failure` or `denied`.
    pub outcome: &'static str,
    /// Non-secret specifics: the target user, the error code, the key id.
    pub detail: Json,
}

impl Event {
    pub fn new(action: &'static str, outcome: &'static str) -> Self {
        Self {
            actor: None,
            action,
            outcome,
            detail: json!({}),
        }
    }

    pub fn by(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn with(mut self, detail: Json) -> Self {
        self.detail = detail;
        self
    }
}

/// One entry as it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: i64,
    pub at: String,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub action: String,
    pub outcome: String,
    pub request_id: Option<String>,
    pub detail: Json,
}

/// What to read back: newest first, filtered.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub action: Option<String>,
    pub actor: Option<String>,
    /// Only entries with an id below this (the previous page's last id).
    pub before: Option<i64>,
    pub limit: u32,
}

const APPEND: Sql = Sql::both(
    "INSERT INTO gatehouse_audit_log (at, actor, ip, user_agent, action, outcome, request_id, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
);

const PAGE: Sql = Sql {
    sqlite: "SELECT id, at, actor, ip, user_agent, action, outcome, request_id, detail FROM gatehouse_audit_log \
             WHERE (?1 IS NULL OR action = ?1) AND (?2 IS NULL OR actor = ?2) AND (?3 IS NULL OR id < ?3) \
             ORDER BY id DESC LIMIT ?4",
    postgres: "SELECT id, at, actor, ip, user_agent, action, outcome, request_id, detail FROM gatehouse_audit_log \
               WHERE ($1::text IS NULL OR action = $1) AND ($2::text IS NULL OR actor = $2) \
               AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
};

const PRUNE: Sql = Sql::both("DELETE FROM gatehouse_audit_log WHERE at < $1");

/// The most entries one read returns.
pub const MAX_PAGE: u32 = 1000;

#[derive(Clone)]
pub struct AuditLog {
    db: Database,
}

fn text(value: Option<&str>) -> Value {
    value.map_or(Value::Null, |text| Value::Text(text.to_owned()))
}

impl AuditLog {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Appends one entry, durably. A failure is logged and returned: callers
    /// that already acted still answer, and the log line keeps the event.
    pub async fn record(&self, origin: &Origin, event: Event) -> Result<()> {
        let statement = Statement::new(
            &APPEND,
            vec![
                timestamp(now()).into(),
                text(event.actor.as_deref()),
                text(origin.ip.as_deref()),
                text(origin.user_agent.as_deref()),
                event.action.into(),
                event.outcome.into(),
                text(origin.request_id.as_deref()),
                event.detail.to_string().into(),
            ],
        );
        if let Err(error) = self.db.transaction(vec![statement]).await {
            tracing::error!(%error, action = event.action, outcome = event.outcome, actor = ?event.actor, "audit entry not written");
            return Err(error.into());
        }
        Ok(())
    }

    /// Deletes entries older than `keep`.
    pub async fn prune(&self, keep: std::time::Duration) -> Result<()> {
        let before = timestamp(now() - keep);
        self.db
            .transaction(vec![Statement::new(&PRUNE, vec![before.into()])])
            .await?;
        Ok(())
    }

    /// Entries newest first.
    pub async fn read(&self, query: &Query) -> Result<Vec<Entry>> {
        let rows = self
            .db
            .query(Statement::new(
                &PAGE,
                vec![
                    text(query.action.as_deref()),
                    text(query.actor.as_deref()),
                    query.before.map_or(Value::Null, Value::Integer),
                    Value::Integer(i64::from(query.limit.clamp(1, MAX_PAGE))),
                ],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let optional =
                    |column: usize| row.optional_text(column).map(|v| v.map(str::to_owned));
                Ok(Entry {
                    id: row.integer(0)?,
                    at: row.text(1)?.to_owned(),
                    actor: optional(2)?,
                    ip: optional(3)?,
                    user_agent: optional(4)?,
                    action: row.text(5)?.to_owned(),
                    outcome: row.text(6)?.to_owned(),
                    request_id: optional(7)?,
                    detail: serde_json::from_str::<Json>(row.text(8)?).unwrap_or(Json::Null),
                })
            })
            .collect()
    }
}
