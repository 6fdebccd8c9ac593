//! What a subscriber may see of a table's changes: the data API's `select`
//! decision and column grants, made once per subscriber ([`Sight`]) and
//! applied to each changed row ([`Rest::seen_by`]) by the database, against
//! the row as it was written or removed rather than as the table holds it now.
//! A change reaches a subscriber only where a read by that subscriber would
//! have returned the row.

use std::collections::HashMap;

use gatehouse_core::Identifier;
use gatehouse_db::{Database, Value};
use gatehouse_policy::Command;
use gatehouse_schema::ColumnType;
use serde_json::{Map, Value as Json};

use crate::access::{Decision, Verdict};
use crate::sql::StatementBuilder;
use crate::values::from_json;
use crate::{Caller, Rest, RestError};

/// One subscriber's view of one table: which rows (its `select` decision,
/// its id and claims bound in) and which columns (its grants).
#[derive(Debug, Clone)]
pub struct Sight {
    decision: Decision,
    /// The columns it may read, with their types.
    columns: Vec<(Identifier, ColumnType)>,
    /// The table's primary key.
    primary_key: Vec<Identifier>,
    /// The decision's text, so that subscribers deciding alike are asked once.
    key: String,
}

/// Conditions one statement decides at most (each binds a few parameters).
const CONDITIONS_PER_STATEMENT: usize = 200;

impl Rest {
    /// What `caller` may see of `table`'s changes; refused as a read of the
    /// table would be.
    pub fn sight(&self, caller: &Caller, table: &str) -> Result<Sight, RestError> {
        let access = self.access(table, Command::Select, caller)?;
        let decision = access.using().clone();
        Ok(Sight {
            key: decision.key(),
            columns: access
                .readable_columns()
                .into_iter()
                .map(|column| (column.name.clone(), column.ty))
                .collect(),
            primary_key: access
                .table
                .key_columns()
                .into_iter()
                .map(|column| column.name.clone())
                .collect(),
            decision,
        })
    }

    /// For each of `sights` (all on `table`), whether it sees `row` (every
    /// column, as JSON).
    pub async fn seen_by(
        &self,
        db: &Database,
        table: &str,
        row: &Map<String, Json>,
        sights: &[&Sight],
    ) -> Result<Vec<bool>, RestError> {
        let values = self.row_values(table, row)?;
        let decisions: Vec<&Decision> = sights.iter().map(|sight| &sight.decision).collect();
        let keys: Vec<&str> = sights.iter().map(|sight| sight.key.as_str()).collect();
        holds(db, (&decisions, &keys), &values).await
    }

    /// `row` as the database takes each of `table`'s columns.
    fn row_values(
        &self,
        table: &str,
        row: &Map<String, Json>,
    ) -> Result<HashMap<Identifier, Value>, RestError> {
        let table = self
            .schema
            .table(table)
            .ok_or_else(|| RestError::UnknownTable(table.to_owned()))?;
        table
            .columns
            .iter()
            .map(|column| {
                let json = row.get(column.name.as_str()).unwrap_or(&Json::Null);
                // The row is in the table already: its checks were met there.
                let value = match json {
                    Json::Null => Value::Null,
                    json => from_json(column, json, &|_| true).map_err(|message| {
                        RestError::InvalidValue {
                            column: column.name.to_string(),
                            message,
                        }
                    })?,
                };
                Ok((column.name.clone(), value))
            })
            .collect()
    }
}

/// For each of `decisions`, whether it holds for the row `values` (every
/// column of the decision's table): one statement decides every distinct
/// condition that needs the database (`keys` tell which are alike); the
/// others are known already.
pub async fn holds(
    db: &Database,
    (decisions, keys): (&[&Decision], &[&str]),
    values: &HashMap<Identifier, Value>,
) -> Result<Vec<bool>, RestError> {
    let mut verdicts: Vec<Option<bool>> = decisions
        .iter()
        .map(|decision| match &decision.0 {
            Verdict::Open => Some(true),
            Verdict::Closed => Some(false),
            Verdict::Only(gatehouse_policy::Condition::Const(known)) => Some(*known),
            Verdict::Only(_) => None,
        })
        .collect();
    let mut distinct: Vec<&Decision> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let asks: Vec<Option<usize>> = decisions
        .iter()
        .zip(keys)
        .zip(&verdicts)
        .map(|((decision, key), known)| {
            known.is_none().then(|| {
                *index.entry(key).or_insert_with(|| {
                    distinct.push(decision);
                    distinct.len() - 1
                })
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(distinct.len());
    for chunk in distinct.chunks(CONDITIONS_PER_STATEMENT) {
        let statement = StatementBuilder::new(db.dialect()).deciding_each(chunk, "seen", values);
        let rows = db.query(statement).await?;
        let row = rows.into_iter().next().map(|row| row.0).unwrap_or_default();
        answers.extend((0..chunk.len()).map(|at| matches!(row.get(at), Some(Value::Integer(1)))));
    }
    for (verdict, ask) in verdicts.iter_mut().zip(asks) {
        if let Some(at) = ask {
            *verdict = answers.get(at).copied();
        }
    }
    Ok(verdicts
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

impl Sight {
    /// `row` with only the columns this subscriber may read; with `key_only`,
    /// only those of the primary key among them.
    pub fn trim(&self, row: &Map<String, Json>, key_only: bool) -> Map<String, Json> {
        row.iter()
            .filter(|(name, _)| self.type_of(name).is_some())
            .filter(|(name, _)| {
                !key_only || self.primary_key.iter().any(|key| key.as_str() == *name)
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }

    /// The type of `column`, if the subscriber may read it.
    pub fn type_of(&self, column: &str) -> Option<ColumnType> {
        self.columns
            .iter()
            .find(|(name, _)| name.as_str() == column)
            .map(|(_, ty)| *ty)
    }

    /// The columns the subscriber may read, with their types, in declared order.
    pub fn columns(&self) -> impl Iterator<Item = (&str, ColumnType)> {
        self.columns.iter().map(|(name, ty)| (name.as_str(), *ty))
    }
}
