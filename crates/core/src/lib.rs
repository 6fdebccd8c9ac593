//! The vocabulary every layer shares, with no IO: which SQL dialect is spoken,
//! and [`Identifier`], the only way a table or column name reaches SQL.
//!
//! Invariant: an `Identifier` is lowercase ASCII letters, digits and underscores,
//! starts with a letter or underscore, is at most 63 bytes (PostgreSQL's limit)
//! and is not reserved for Gatehouse; it is always rendered double-quoted.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which SQL dialect a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A table or column name from the declared schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identifier(String);

/// Why a name cannot be an identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidIdentifier(pub String);

impl fmt::Display for InvalidIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidIdentifier {}

/// Prefixes of Gatehouse's own tables and of SQLite's internal ones.
const RESERVED_PREFIXES: &[&str] = &["gatehouse_", "sqlite_", "pg_"];

impl Identifier {
    pub fn new(name: &str) -> Result<Self, InvalidIdentifier> {
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let valid_start = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
        if !(valid_chars && valid_start) || name.len() > 63 {
            return Err(InvalidIdentifier(format!(
                "{name:?} is not a valid name: use 1 to 63 lowercase letters, digits and \
                 underscores, starting with a letter"
            )));
        }
        if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(**p)) {
            return Err(InvalidIdentifier(format!(
                "{name:?} is reserved: names starting with {prefix} belong to the system"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as SQL: double-quoted. The character set above leaves nothing to escape.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Identifier {
    type Error = InvalidIdentifier;

    fn try_from(name: String) -> Result<Self, InvalidIdentifier> {
        Identifier::new(&name)
    }
}

impl From<Identifier> for String {
    fn from(identifier: Identifier) -> String {
        identifier.0
    }
}

/// A string literal for SQL text that cannot take a bound parameter (DDL `DEFAULT`
/// and `CHECK` clauses), built from the operator's declaration, never from a request.
pub fn string_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_lowercase_names() {
        for name in ["orders", "order_items", "_private", "t1", &"a".repeat(63)] {
            assert_eq!(
                Identifier::new(name).unwrap().quoted(),
                format!("\"{name}\"")
            );
        }
    }

    #[test]
    fn refuses_anything_that_could_escape_quoting() {
        for name in [
            "",
            "Orders",
            "1st",
            "a-b",
            "a b",
            "a\"b",
            "a;drop",
            "é",
            "gatehouse_meta",
            "sqlite_master",
            "pg_class",
            &"a".repeat(64),
        ] {
            assert!(Identifier::new(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(string_literal("it's"), "'it''s'");
        assert_eq!(
            string_literal("'); drop table x; --"),
            "'''); drop table x; --'"
        );
    }
}
