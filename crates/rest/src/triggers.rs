//! Before-write triggers: the app's own code (declared functions, which the
//! `functions` crate runs) sees each row a write is about to make or remove,
//! inside the write's transaction, and may change the new row or refuse the
//! write. Rest knows them only through [`BeforeWrite`], so it runs no code of
//! its own here; the row policies, grants aside, and the column checks apply to
//! what the triggers leave, as PostgreSQL applies them after BEFORE triggers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use gatehouse_core::Identifier;
use gatehouse_db::{Row, Transaction, Value};
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
