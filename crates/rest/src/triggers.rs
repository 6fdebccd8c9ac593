//! The app's code around a write, which rest knows only through two traits
//! and so runs none of here.
//!
//! [`BeforeWrite`]: before triggers (declared functions, which the `functions`
//! crate runs) see each row a write is about to make or remove, inside the
//! write's transaction, and may change the new row or refuse the write; the
//! row policies, grants aside, and the column checks apply to what the
//! triggers leave, as PostgreSQL applies them after BEFORE triggers.
//!
//! [`AfterWrite`]: after triggers and outbound webhooks are handed every row a
//! write made or removed, in full, and answer with the statements that record
//! the work to do (jobs, in the `jobs` crate); rest runs them in the write's
//! own transaction, so the work exists exactly when the write commits.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Identifier;
use gatehouse_db::{Row, Statement, Transaction, Value};
use gatehouse_schema::Table;
use serde_json::{Map, Value as Json};

use crate::values::to_json;
use crate::{Caller, RestError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Insert,
    Update,
    Delete,
}

impl Event {
    /// As a declaration writes it: `insert`, `update` or `delete`.
    pub fn declared(name: &str) -> Option<Self> {
        match name {
            "insert" => Some(Event::Insert),
            "update" => Some(Event::Update),
            "delete" => Some(Event::Delete),
            _ => None,
        }
    }

    /// As PostgreSQL's `TG_OP` names it.
    pub fn name(self) -> &'static str {
        match self {
            Event::Insert => "INSERT",
            Event::Update => "UPDATE",
            Event::Delete => "DELETE",
        }
    }
}

/// One row a write is about to make or remove, every column of it.
#[derive(Debug, Clone)]
pub struct RowChange<'a> {
    pub table: &'a str,
    pub event: Event,
    /// The row as it would be written (insert, update).
    pub new: Option<Map<String, Json>>,
    /// The row as it is (update, delete).
    pub old: Option<Map<String, Json>>,
}

/// What the triggers make of one row: the row to write instead (`None`: as
/// it was), or the refusal.
pub type Pending<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Map<String, Json>>, RestError>> + Send + 'a>>;

/// The before triggers, as the data API runs them.
pub trait BeforeWrite: Send + Sync {
    /// Whether `table` has before triggers for `event`: writes without take
    /// the plain path.
    fn applies(&self, table: &str, event: Event) -> bool;

    /// How long a transaction the data API opens for triggers may hold its
    /// writes (see `gatehouse_db::Transaction`).
    fn write_limit(&self) -> Duration;

    /// Runs the table's before triggers for one row, as `caller`, inside
    /// `transaction`.
    fn before<'a>(
        &'a self,
        transaction: &'a Transaction,
        caller: &'a Caller,
        change: RowChange<'a>,
    ) -> Pending<'a>;
}

/// What follows one write's changes: the statements recording the work to do,
/// run in the write's transaction, and what is done once it commits (never
/// if it rolls back).
#[derive(Default)]
pub struct Followed {
    pub statements: Vec<Statement>,
    pub on_commit: Vec<Box<dyn FnOnce() + Send>>,
}

/// What is done after a table's changes commit, as the data API hands them on.
pub trait AfterWrite: Send + Sync {
    /// Whether anything follows `event` on `table`: writes without take the
    /// plain path.
    fn watches(&self, table: &str, event: Event) -> bool;

    /// What follows `changes` (every row one write made or removed, every
    /// column).
    fn after(&self, changes: &[RowChange<'_>]) -> Result<Followed, RestError>;
}

/// Several followers of the same writes (after triggers and webhooks,
/// realtime), each handed what it watches.
pub struct Followers(pub Vec<Arc<dyn AfterWrite>>);

impl AfterWrite for Followers {
    fn watches(&self, table: &str, event: Event) -> bool {
        self.0.iter().any(|follower| follower.watches(table, event))
    }

    fn after(&self, changes: &[RowChange<'_>]) -> Result<Followed, RestError> {
        let mut all = Followed::default();
        for follower in &self.0 {
            let watched: Vec<RowChange<'_>> = changes
                .iter()
                .filter(|change| follower.watches(change.table, change.event))
                .cloned()
                .collect();
            if watched.is_empty() {
                continue;
            }
            let followed = follower.after(&watched)?;
            all.statements.extend(followed.statements);
            all.on_commit.extend(followed.on_commit);
        }
        Ok(all)
    }
}

/// A row as the triggers see it: every column, by name, as JSON.
pub(crate) fn row_json(table: &Table, row: &HashMap<Identifier, Value>) -> Map<String, Json> {
    table
        .columns
        .iter()
        .map(|column| {
            let value = row.get(&column.name).unwrap_or(&Value::Null);
            (column.name.to_string(), to_json(column.ty, value))
        })
        .collect()
}

/// A row read with every column in the table's order, by column.
pub(crate) fn by_column(table: &Table, row: Row) -> HashMap<Identifier, Value> {
    table
        .columns
        .iter()
        .map(|column| column.name.clone())
        .zip(row.0)
        .collect()
}

/// The row at the end of a write's RETURNING list, every column of it (see
/// `Rest::returning`), as the after-commit work sees it.
pub(crate) fn returned_row(table: &Table, row: &Row) -> Map<String, Json> {
    let start = row.0.len().saturating_sub(table.columns.len());
    table
        .columns
        .iter()
        .zip(&row.0[start..])
        .map(|(column, value)| (column.name.to_string(), to_json(column.ty, value)))
        .collect()
}
