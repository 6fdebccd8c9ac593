use gatehouse_db::{DbError, Row};
use serde_json::{Value as Json, json};

/// A user as stored; `to_json` gives Supabase Auth's user object.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
    pub email_confirmed_at: Option<String>,
    pub is_anonymous: bool,
    pub banned_until: Option<String>,
    pub user_metadata: Json,
    pub app_metadata: Json,
    pub created_at: String,
    pub updated_at: String,
    pub last_sign_in_at: Option<String>,
    /// Second factors, verified or not (filled by `Auth::user`).
    pub factors: Vec<crate::Factor>,
    /// Accounts at other providers linked to this one (filled by `Auth::user`).
    pub identities: Vec<crate::Identity>,
}

impl User {
    /// A row of `store::user_columns!`, and the password hash that comes last.
    pub(crate) fn from_row(row: &Row) -> Result<(User, Option<String>), DbError> {
        let text = |i| row.optional_text(i).map(|v| v.map(str::to_owned));
        let json = |i| {
            row.text(i)
                .map(|t| serde_json::from_str(t).unwrap_or_else(|_| json!({})))
        };
        Ok((
            User {
                id: row.text(0)?.to_owned(),
                email: text(1)?,
                email_confirmed_at: text(2)?,
                is_anonymous: row.flag(3)?,
                banned_until: text(4)?,
                user_metadata: json(5)?,
                app_metadata: json(6)?,
                created_at: row.text(7)?.to_owned(),
                updated_at: row.text(8)?.to_owned(),
                last_sign_in_at: text(9)?,
                factors: Vec::new(),
                identities: Vec::new(),
            },
            text(10)?,
        ))
    }

    pub fn is_banned(&self, now: &str) -> bool {
        self.banned_until
            .as_deref()
            .is_some_and(|until| until > now)
    }
}
