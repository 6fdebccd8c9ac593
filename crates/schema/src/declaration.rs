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

/// Reads the `[tables.*]` sections of a TOML document (for tools and tests; the
/// server reads them as part of `gatehouse.toml`).
pub fn parse(text: &str) -> Result<IndexMap<String, TableDecl>, String> {
    #[derive(Deserialize)]
    struct Document {
        #[serde(default)]
        tables: IndexMap<String, TableDecl>,
    }
    toml::from_str::<Document>(text)
        .map(|document| document.tables)
        .map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDecl {
    pub columns: IndexMap<String, ColumnDecl>,
    /// A key of several columns, `primary_key = ["user_id", "team_id"]` (one
    /// column is marked `primary_key = true` on the column instead).
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Extra indexes, each a list of columns.
    #[serde(default)]
    pub indexes: Vec<Vec<String>>,
    /// Unique constraints over several columns.
    #[serde(default)]
    pub unique: Vec<Vec<String>>,
    /// Row policies; compiled by the policy crate.
    #[serde(default)]
    pub policies: Vec<PolicyDecl>,
    /// Column allow-lists per role and command, e.g. `grants.anon.select = ["id", "name"]`.
    #[serde(default)]
    pub grants: IndexMap<String, GrantDecl>,
    /// The app's own code run on the table's writes; no part of the schema
    /// (no DDL), read and run by the functions crate.
    #[serde(default)]
    pub triggers: Vec<TriggerDecl>,
    /// What realtime subscribers see of an updated or deleted row's old
    /// version: its primary key (`default`) or every column they may read
    /// (`full`), as PostgreSQL's `REPLICA IDENTITY` decides for Supabase.
    #[serde(default)]
    pub replica_identity: ReplicaIdentity,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaIdentity {
    #[default]
    Default,
    Full,
}

/// `[[tables.<name>.triggers]]`: a declared function run on each row a write
/// makes, as `CREATE TRIGGER … BEFORE INSERT OR UPDATE … FOR EACH ROW`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerDecl {
    /// `before` (inside the write's transaction) or `after` (after the commit).
    pub when: String,
    /// `insert`, `update` or `delete`; one or a list.
    pub events: OneOrMany,
    /// The declared function to run.
    pub function: String,
}

/// `[[tables.<name>.policies]]`: as `CREATE POLICY … FOR … TO … USING … WITH CHECK …`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDecl {
    pub name: String,
    /// `select`, `insert`, `update`, `delete` or `all`; one or a list.
    #[serde(rename = "for")]
    pub commands: OneOrMany,
    /// `anon`, `authenticated`; one or a list.
    #[serde(rename = "to")]
    pub roles: OneOrMany,
    pub using: Option<String>,
    pub with_check: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(item) => vec![item.as_str()],
            OneOrMany::Many(items) => items.iter().map(String::as_str).collect(),
        }
    }
}

/// The columns one role may read and write in a table; absent means all of them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantDecl {
    pub select: Option<Vec<String>>,
    pub update: Option<Vec<String>>,
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
    /// Full-text search on this text column (`fts`, `plfts`, `phfts`, `wfts`).
    #[serde(default)]
    pub searchable: bool,
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
