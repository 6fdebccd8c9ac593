//! The data API's logic, without HTTP: a parsed PostgREST request, the declared
//! schema and the caller's row policies become parameterised SQL; results come
//! back as JSON. The edge (`gatehouse-http`) maps [`RestError`] to PostgREST's
//! statuses and codes.
//!
//! Invariants: deny by default (a command without a policy for the caller's role
//! is refused before any SQL is built); every read, update and delete carries the
//! policy's `using` in its WHERE; every insert and update carries its `with check`
//! and is rolled back whole if any row fails it; names come only from the schema.
//! All of it rests on one access decision ([`decide`]), which every statement on
//! a declared table must carry to finish ([`StatementBuilder`]).

mod access;
mod caller;
mod embed;
mod error;
mod openapi;
mod output;
mod read;
mod sight;
mod sql;
mod triggers;
mod values;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use gatehouse_core::Identifier;
use gatehouse_db::{Database, Executor};
use gatehouse_policy::{Command, Policies, Role, TablePolicies};
use gatehouse_schema::{Check, Column, Schema, Table};

pub use access::{Decision, Rows, decide};
pub use caller::{Caller, UnknownRole};
pub use error::RestError;
pub use gatehouse_search::SearchError;
pub use read::{Count, ReadOptions, ReadResult};
pub use sight::{Sight, holds};
pub use sql::{Decided, StatementBuilder, Undecided};
pub use triggers::{AfterWrite, BeforeWrite, Event, Followed, Followers, Pending, RowChange};
pub use values::{from_json as checked_value, text_to_json};
pub use write::{Resolution, WriteOptions, WriteResult};

/// Bounds and switches of the data API.
#[derive(Debug, Clone)]
pub struct RestSettings {
    /// Rows one read returns at most, whatever the request asks.
    pub max_rows: u64,
    /// Rows one embedded resource may bring, across all parents of a page.
    pub max_embedded_rows: usize,
    /// Rows one insert may carry.
    pub max_insert_rows: usize,
    /// Allow PATCH and DELETE without a filter.
    pub allow_unfiltered_writes: bool,
}

impl Default for RestSettings {
    fn default() -> Self {
        Self {
            max_rows: 1000,
            max_embedded_rows: 10_000,
            max_insert_rows: 1000,
            allow_unfiltered_writes: false,
        }
    }
}

/// The compiled data API: schema, policies and settings, shared by all requests.
pub struct Rest {
    schema: Schema,
    policies: Policies,
    settings: RestSettings,
    patterns: HashMap<(Identifier, Identifier), regex::Regex>,
    /// The app's before triggers, set once the functions that run them exist
    /// (they hold this `Rest` in turn, hence weak).
    triggers: std::sync::OnceLock<std::sync::Weak<dyn BeforeWrite>>,
    /// What follows a commit (after triggers, outbound webhooks), set once.
    after_write: std::sync::OnceLock<Arc<dyn AfterWrite>>,
}

/// One table as one caller may use it for one command.
pub(crate) struct Access<'a> {
    pub table: &'a Table,
    pub policies: Option<&'a TablePolicies>,
    pub role: Option<Role>,
    pub caller: &'a Caller,
    command: Command,
    /// The rows the command may see or touch, decided once.
    using: Decision,
}

impl Rest {
    pub fn new(schema: Schema, policies: Policies, settings: RestSettings) -> Self {
        let mut patterns = HashMap::new();
        for table in &schema.tables {
            for column in &table.columns {
                for check in &column.checks {
                    // Patterns were compiled once already when the schema was validated.
                    if let Check::Pattern(pattern) = check
                        && let Ok(regex) = regex::Regex::new(pattern)
                    {
                        patterns.insert((table.name.clone(), column.name.clone()), regex);
                    }
                }
            }
        }
        Self {
            schema,
            policies,
            settings,
            patterns,
            triggers: std::sync::OnceLock::new(),
            after_write: std::sync::OnceLock::new(),
        }
    }

    /// The declared tables' names.
    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.schema.tables.iter().map(|table| table.name.as_str())
    }

    /// Installs the before triggers (once; later calls change nothing).
    pub fn set_triggers(&self, triggers: std::sync::Weak<dyn BeforeWrite>) {
        let _ = self.triggers.set(triggers);
    }

    /// Installs what follows a commit (once; later calls change nothing).
    pub fn set_after_write(&self, after: Arc<dyn AfterWrite>) {
        let _ = self.after_write.set(after);
    }

    /// The app's code around `event` on `table`.
    /// `also_after` names another event the write may turn out to be for the
    /// after-commit work (an upsert that merges is an update).
    pub(crate) fn hooks(
        &self,
        table: &str,
        (event, also_after): (Event, Option<Event>),
    ) -> write::Hooks {
        let before = self
            .triggers
            .get()
            .and_then(std::sync::Weak::upgrade)
            .filter(|triggers| triggers.applies(table, event));
        let after = self
            .after_write
            .get()
            .filter(|after| {
                after.watches(table, event)
                    || also_after.is_some_and(|also| after.watches(table, also))
            })
            .cloned();
        write::Hooks { before, after }
    }

    /// The table, if the caller may run `command` on it at all. A table nobody
    /// may use answers like a forbidden one, so existence is not revealed to
    /// anon callers beyond what PostgREST shows.
    pub(crate) fn access<'a>(
        &'a self,
        name: &str,
        command: Command,
        caller: &'a Caller,
    ) -> Result<Access<'a>, RestError> {
        let table = self
            .schema
            .table(name)
            .ok_or_else(|| RestError::UnknownTable(name.to_owned()))?;
        let role = caller.role().map_err(|_| RestError::UnknownRole)?;
        let policies = self.policies.for_table(name);
        let using = decide(caller, policies, command, Rows::Existing);
        if using.is_closed() {
            return Err(RestError::TableDenied(name.to_owned()));
        }
        Ok(Access {
            table,
            policies,
            role,
            caller,
            command,
            using,
        })
    }

    pub(crate) fn pattern_matches(&self, table: &Table, column: &Column, text: &str) -> bool {
        self.patterns
            .get(&(table.name.clone(), column.name.clone()))
            .is_none_or(|regex| regex.is_match(text))
    }

    pub async fn read(
        &self,
        db: Executor<'_>,
        caller: &Caller,
        table: &str,
        request: &gatehouse_query::Request,
        options: ReadOptions,
    ) -> Result<ReadResult, RestError> {
        read::run(self, db, caller, table, request, options).await
    }

    /// The database's plan for a read, one line per step: for tests and `doctor`.
    pub async fn plan_read(
        &self,
        db: &Database,
        caller: &Caller,
        table: &str,
        request: &gatehouse_query::Request,
    ) -> Result<Vec<String>, RestError> {
        read::plan(self, db, caller, table, request).await
    }
}

impl Access<'_> {
    /// A column the caller may read, by name.
    pub fn readable(&self, name: &str) -> Result<&Column, RestError> {
        let column = self
            .table
            .column(name)
            .ok_or_else(|| RestError::UnknownColumn {
                table: self.table.name.to_string(),
                column: name.to_owned(),
            })?;
        let allowed = match (self.role, self.policies) {
            (Some(role), Some(policies)) => policies
                .readable_columns(role)
                .is_none_or(|columns| columns.contains(&column.name)),
            _ => true,
        };
        if allowed {
            Ok(column)
        } else {
            Err(RestError::ColumnDenied {
                table: self.table.name.to_string(),
                column: name.to_owned(),
            })
        }
    }

    /// The rows the command may see or touch, for this caller.
    pub fn using(&self) -> &Decision {
        &self.using
    }

    /// What a row the command writes must satisfy, for this caller.
    pub fn with_check(&self) -> Decision {
        decide(self.caller, self.policies, self.command, Rows::Written)
    }

    /// Refuses a column the caller's grants do not let it change.
    pub fn writable(&self, column: &Column) -> Result<(), RestError> {
        let allowed = match (self.role, self.policies) {
            (Some(role), Some(policies)) => policies
                .writable_columns(role)
                .is_none_or(|columns| columns.contains(&column.name)),
            _ => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(RestError::ColumnDenied {
                table: self.table.name.to_string(),
                column: column.name.to_string(),
            })
        }
    }

    /// Every column the caller may read, in declared order.
    pub fn readable_columns(&self) -> Vec<&Column> {
        self.table
            .columns
            .iter()
            .filter(|c| self.readable(c.name.as_str()).is_ok())
            .collect()
    }
}
