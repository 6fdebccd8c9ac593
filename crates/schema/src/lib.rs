//! The declared schema: what tables exist, their columns, keys, constraints and
//! indexes. This crate parses the declaration into a validated [`Schema`], writes
//! its DDL for either dialect, and plans the migration from one declaration to
//! the next. Pure: no IO, no async.
//!
//! Invariant: every name in a `Schema` is a [`gatehouse_core::Identifier`], and
//! every literal in its DDL came from the operator's declaration, quoted.

mod ddl;
pub mod declaration;
mod fixed_tables;
mod model;
mod plan;

pub use ddl::{create_statements, search_table};
pub use fixed_tables::{realtime_messages, storage_objects};
pub use model::{
    Check, Column, ColumnType, Element, ForeignKey, Index, Literal, OnDelete, Schema, ServerValue,
    Table,
};
pub use plan::{Plan, Step, plan};

/// A declaration that cannot become a schema, or a change that cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("table {table}: {message}")]
    Table { table: String, message: String },
    #[error("table {table}, column {column}: {message}")]
    Column {
        table: String,
        column: String,
        message: String,
    },
    #[error("{0}")]
    Unsupported(String),
}
