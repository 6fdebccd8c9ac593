//! Row policies as in PostgreSQL row-level security: per table, command and role,
//! `using` and `with check` conditions in a small SQL-like language, parsed and
//! type-checked against the declared schema when the configuration loads, and
//! kept as [`Condition`]s the query compiler renders into every statement.
//!
//! Invariant: deny by default. A command with no policy for a role is not
//! allowed; a policy that does not parse or check stops start-up.

mod ast;
mod check;
mod condition;
mod lexer;
mod parser;

use std::borrow::Cow;
use std::collections::HashMap;

use gatehouse_core::Identifier;
use gatehouse_schema::declaration::{GrantDecl, PolicyDecl, TableDecl};
use gatehouse_schema::{Schema, Table, realtime_messages, storage_objects};
use indexmap::IndexMap;

pub use condition::{CmpOp, Condition, ContextValue, PathPart, Term};

/// A syntax or type error inside one expression, at a byte offset when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

impl ParseError {
    fn at(offset: usize, message: impl Into<String>) -> Self {
        Self {
            offset,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table {table}, policy {policy:?}: {message}")]
pub struct PolicyError {
    pub table: String,
    pub policy: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Select,
    Insert,
    Update,
    Delete,
}

/// The roles policies are written for. The service role bypasses policies and
/// is never named in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Anon,
    Authenticated,
}

/// One policy's conditions for one command.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    using: Option<Condition>,
    with_check: Option<Condition>,
}

/// Column allow-lists of one role.
#[derive(Debug, Clone, Default, PartialEq)]
struct Grant {
    select: Option<Vec<Identifier>>,
    update: Option<Vec<Identifier>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TablePolicies {
    rules: HashMap<(Command, Role), Vec<Rule>>,
    grants: HashMap<Role, Grant>,
}

/// Conditions joined by OR; a policy without one allows every row.
fn any_of<'a>(
    mut conditions: impl ExactSizeIterator<Item = Option<&'a Condition>>,
) -> Cow<'a, Condition> {
    const EVERY_ROW: Condition = Condition::Const(true);
    if conditions.len() == 1 {
        return match conditions.next().flatten() {
            Some(condition) => Cow::Borrowed(condition),
            None => Cow::Owned(EVERY_ROW),
        };
    }
    Cow::Owned(Condition::Or(
        conditions
            .map(|condition| condition.cloned().unwrap_or(EVERY_ROW))
            .collect(),
    ))
}

impl TablePolicies {
    /// Which existing rows `role` may see (select) or touch (update, delete):
    /// the policies' `using` conditions, any of which suffices. `None` when no
    /// policy allows the command. Borrowed when one policy says it all.
    pub fn using(&self, command: Command, role: Role) -> Option<Cow<'_, Condition>> {
        let rules = self.rules.get(&(command, role)).filter(|r| !r.is_empty())?;
        Some(any_of(rules.iter().map(|rule| rule.using.as_ref())))
    }

    /// What a new or changed row must satisfy (insert, update): each policy's
    /// `with check`, or its `using` when it has none, any of which suffices.
    pub fn with_check(&self, command: Command, role: Role) -> Option<Cow<'_, Condition>> {
        let rules = self.rules.get(&(command, role)).filter(|r| !r.is_empty())?;
        Some(any_of(rules.iter().map(|rule| {
            rule.with_check.as_ref().or(rule.using.as_ref())
        })))
    }

    /// The columns `role` may read; `None` means every column.
    pub fn readable_columns(&self, role: Role) -> Option<&[Identifier]> {
        self.grants.get(&role)?.select.as_deref()
    }

    /// The columns `role` may change; `None` means every column.
    pub fn writable_columns(&self, role: Role) -> Option<&[Identifier]> {
        self.grants.get(&role)?.update.as_deref()
    }
}

/// Every table's policies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    tables: HashMap<Identifier, TablePolicies>,
}

fn parse_commands(items: &[&str]) -> Result<Vec<Command>, String> {
    let mut commands = Vec::new();
    for item in items {
        match item.to_ascii_lowercase().as_str() {
            "select" => commands.push(Command::Select),
            "insert" => commands.push(Command::Insert),
            "update" => commands.push(Command::Update),
            "delete" => commands.push(Command::Delete),
            "all" => commands.extend([
                Command::Select,
                Command::Insert,
                Command::Update,
                Command::Delete,
            ]),
            other => {
                return Err(format!(
                    "unknown command {other:?}: use select, insert, update, delete or all"
                ));
            }
        }
    }
    Ok(commands)
}

fn parse_role(name: &str) -> Result<Role, String> {
    match name {
        "anon" => Ok(Role::Anon),
        "authenticated" => Ok(Role::Authenticated),
        "service" | "service_role" => {
            Err("the service role bypasses policies; leave it out".into())
        }
        other => Err(format!("unknown role {other:?}: use anon or authenticated")),
    }
}

impl Policies {
    pub fn for_table(&self, table: &str) -> Option<&TablePolicies> {
        self.tables
            .iter()
            .find(|(name, _)| name.as_str() == table)
            .map(|(_, p)| p)
    }

    pub fn compile(
        declaration: &IndexMap<String, TableDecl>,
        schema: &Schema,
    ) -> Result<Self, PolicyError> {
        let mut tables = HashMap::new();
        for (table_name, decl) in declaration {
            let Some(table) = schema.table(table_name) else {
                continue;
            };
            let mut compiled = compile_rules(table_name, &decl.policies, table, schema)?;
            for (role_name, grant) in &decl.grants {
                let role = parse_role(role_name).map_err(|message| PolicyError {
                    table: table_name.clone(),
                    policy: format!("grants.{role_name}"),
                    message,
                })?;
                compiled
                    .grants
                    .insert(role, grant_of(table_name, role_name, grant, schema)?);
            }
            tables.insert(table.name.clone(), compiled);
        }
        Ok(Self { tables })
    }

    /// The storage policies (`[[storage.policies]]`), over Supabase's
    /// `storage.objects` columns; `exists` may name declared tables.
    pub fn compile_objects(
        policies: &[PolicyDecl],
        schema: &Schema,
    ) -> Result<TablePolicies, PolicyError> {
        compile_rules("storage.objects", policies, &storage_objects(), schema)
    }

    /// The realtime policies (`[[realtime.policies]]`), over Supabase's
    /// `realtime.messages` columns (`topic`, `extension`): `select` lets a
    /// caller join a private channel and hear it, `insert` send or track on it.
    pub fn compile_messages(
        policies: &[PolicyDecl],
        schema: &Schema,
    ) -> Result<TablePolicies, PolicyError> {
        compile_rules("realtime.messages", policies, &realtime_messages(), schema)
    }

    /// Every column some policy reads, with its table: the columns to index so
    /// that policy filters never scan.
    pub fn filtered_columns(&self) -> Vec<(Identifier, Identifier)> {
        let mut out = Vec::new();
        for (table, policies) in &self.tables {
            for rules in policies.rules.values() {
                for rule in rules {
                    for condition in rule.using.iter().chain(&rule.with_check) {
                        condition.columns(&mut vec![table], &mut out);
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// One table's policies, checked against `table` (names in `exists` resolve in
/// `schema`).
fn compile_rules(
    table_name: &str,
    policies: &[PolicyDecl],
    table: &Table,
    schema: &Schema,
) -> Result<TablePolicies, PolicyError> {
    let mut compiled = TablePolicies::default();
    for policy in policies {
        let error = |message: String| PolicyError {
            table: table_name.to_owned(),
            policy: policy.name.clone(),
            message,
        };
        let commands = parse_commands(&policy.commands.items()).map_err(error)?;
        let roles = policy
            .roles
            .items()
            .iter()
            .map(|r| parse_role(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(error)?;
        let expression =
            |label: &str, source: &Option<String>| -> Result<Option<Condition>, PolicyError> {
                source
                    .as_deref()
                    .map(|source| {
                        parser::parse(source)
                            .and_then(|expr| check::check(&expr, schema, table))
                            .map_err(|e| {
                                let near = source
                                    .get(e.offset..)
                                    .unwrap_or("")
                                    .chars()
                                    .take(20)
                                    .collect::<String>();
                                error(format!("{label}: {} (near {near:?})", e.message))
                            })
                    })
                    .transpose()
            };
        let using = expression("using", &policy.using)?;
        let with_check = expression("with_check", &policy.with_check)?;
        for command in &commands {
            let shape_error = match command {
                Command::Insert if using.is_some() && commands.len() == 1 => {
                    Some("an insert policy has with_check only: there is no existing row to test")
                }
                Command::Insert if with_check.is_none() && using.is_none() => {
                    Some("insert needs with_check")
                }
                Command::Select | Command::Delete
                    if with_check.is_some() && commands.len() == 1 =>
                {
                    Some("select and delete policies have using only")
                }
                Command::Select | Command::Update | Command::Delete if using.is_none() => {
                    Some("select, update and delete need using")
                }
                _ => None,
            };
            if let Some(message) = shape_error {
                return Err(error(message.into()));
            }
            let rule = Rule {
                using: if *command == Command::Insert {
                    None
                } else {
                    using.clone()
                },
                // As in PostgreSQL, a policy without WITH CHECK checks new
                // rows with its USING (an `all` policy covers inserts too).
                with_check: match command {
                    Command::Insert | Command::Update => {
                        with_check.clone().or_else(|| using.clone())
                    }
                    _ => None,
                },
            };
            for role in &roles {
                compiled
                    .rules
                    .entry((*command, *role))
                    .or_default()
                    .push(rule.clone());
            }
        }
    }
    Ok(compiled)
}

fn grant_of(
    table: &str,
    role: &str,
    grant: &GrantDecl,
    schema: &Schema,
) -> Result<Grant, PolicyError> {
    let resolve = |list: &Option<Vec<String>>,
                   command: &str|
     -> Result<Option<Vec<Identifier>>, PolicyError> {
        list.as_ref()
            .map(|columns| {
                columns
                    .iter()
                    .map(|column| {
                        schema
                            .table(table)
                            .and_then(|t| t.column(column))
                            .map(|c| c.name.clone())
                            .ok_or_else(|| PolicyError {
                                table: table.to_owned(),
                                policy: format!("grants.{role}.{command}"),
                                message: format!("unknown column {column:?}"),
                            })
                    })
                    .collect()
            })
            .transpose()
    };
    Ok(Grant {
        select: resolve(&grant.select, "select")?,
        update: resolve(&grant.update, "update")?,
    })
}

#[cfg(test)]
mod tests;
