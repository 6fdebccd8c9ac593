use crate::{DbError, Dialect, Result};

/// One SQL text per dialect. Only `'static` texts are accepted, so nothing a
/// request carries can become part of it; values travel separately as parameters.
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Sql {
    pub(crate) fn text(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

/// A value bound to a parameter or read from a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Value::Integer(number)
    }
}

/// A statement ready to run: fixed SQL and its bound parameters.
#[derive(Debug, Clone)]
pub struct Statement {
    pub(crate) sql: Sql,
    pub(crate) params: Vec<Value>,
}

impl Statement {
    pub fn new(sql: &Sql, params: Vec<Value>) -> Self {
        Self { sql: *sql, params }
    }
}

/// One result row, columns in the order the statement selected them.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn text(&self, column: usize) -> Result<&str> {
        match self.0.get(column) {
            Some(Value::Text(text)) => Ok(text),
            _ => Err(DbError::Decode(column)),
        }
    }

    pub fn integer(&self, column: usize) -> Result<i64> {
        match self.0.get(column) {
            Some(Value::Integer(number)) => Ok(*number),
            _ => Err(DbError::Decode(column)),
        }
    }
}
