use crate::{DbError, Dialect, Result};

/// One SQL text per dialect. Only `'static` texts are accepted, so nothing a
/// request carries can become part of it; values travel separately as parameters.
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Sql {
    /// One text both databases run, its placeholders written `$1`, `$2`…
    /// (SQLite binds them by name; see `sqlite::bind`).
    pub const fn both(text: &'static str) -> Self {
        Self {
            sqlite: text,
            postgres: text,
        }
    }

    fn text(&self, dialect: Dialect) -> &'static str {
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

#[derive(Debug, Clone)]
enum Text {
    Fixed(Sql),
    Compiled(String),
}

/// A statement ready to run: SQL text and its bound parameters.
#[derive(Debug, Clone)]
pub struct Statement {
    text: Text,
    pub(crate) params: Vec<Value>,
}

impl Statement {
    pub fn new(sql: &Sql, params: Vec<Value>) -> Self {
        Self {
            text: Text::Fixed(*sql),
            params,
        }
    }

    /// SQL compiled from the declared schema for the database's dialect: names come
    /// only from `gatehouse_core::Identifier` (quoted), values travel in `params`.
    /// A tidy test keeps the list of modules that call this short.
    pub fn compiled(sql: String, params: Vec<Value>) -> Self {
        Self {
            text: Text::Compiled(sql),
            params,
        }
    }

    /// The same statement under EXPLAIN, to read the plan the database picks.
    pub(crate) fn explained(self, dialect: Dialect) -> Statement {
        let prefix = match dialect {
            Dialect::Sqlite => "EXPLAIN QUERY PLAN ",
            Dialect::Postgres => "EXPLAIN ",
        };
        Statement {
            text: Text::Compiled(format!("{prefix}{}", self.text(dialect))),
            params: self.params,
        }
    }

    pub(crate) fn text(&self, dialect: Dialect) -> &str {
        match &self.text {
            Text::Fixed(sql) => sql.text(dialect),
            Text::Compiled(sql) => sql,
        }
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

    /// Text or NULL.
    pub fn optional_text(&self, column: usize) -> Result<Option<&str>> {
        match self.0.get(column) {
            Some(Value::Null) => Ok(None),
            Some(Value::Text(text)) => Ok(Some(text)),
            _ => Err(DbError::Decode(column)),
        }
    }

    /// A boolean, stored as 0/1 on SQLite and as boolean on PostgreSQL.
    pub fn flag(&self, column: usize) -> Result<bool> {
        match self.0.get(column) {
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(Value::Integer(number)) => Ok(*number != 0),
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
