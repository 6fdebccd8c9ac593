//! The declaration as written in `gatehouse.toml` under `[tables.<name>]`:
//!
//! ```toml
//! [tables.orders]
//! columns.id = { type = "uuid", primary_key = true }
//! columns.user_id = { type = "uuid", server_set = "auth.uid()" }
//! columns.status = { type = "text", server_set = "'pending'", check = { one_of = ["pending", "paid"] } }
//! columns.total_cents = { type = "integer", not_null = true, default = 0, check = { min = 0 } }
//! indexes = [["user_id", "status"]]
//! ```
//!
//! These types only mirror the file; `Schema::from_declaration` checks them.

use indexmap::IndexMap;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDecl {
    pub columns: IndexMap<String, ColumnDecl>,
    /// Extra indexes, each a list of columns.
    #[serde(default)]
    pub indexes: Vec<Vec<String>>,
    /// Unique constraints over several columns.
    #[serde(default)]
    pub unique: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDecl {
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub primary_key: bool,
    #[serde(default)]
    pub not_null: bool,
    #[serde(default)]
    pub unique: bool,
    /// A literal the client may override.
    pub default: Option<serde_json::Value>,
    /// `auth.uid()`, `now()` or a literal such as `'pending'`: always the server's value.
    pub server_set: Option<String>,
    /// `table` (its primary key) or `table.column`.
    pub references: Option<String>,
    pub on_delete: Option<String>,
    pub check: Option<CheckDecl>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckDecl {
    pub min_length: Option<u32>,
    pub max_length: Option<u32>,
    pub min: Option<serde_json::Number>,
    pub max: Option<serde_json::Number>,
    pub pattern: Option<String>,
    pub one_of: Option<Vec<String>>,
}
