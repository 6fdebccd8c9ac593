//! The vocabulary every layer shares, with no IO: which SQL dialect is spoken,
//! and [`Identifier`], the only way a table or column name reaches SQL.
//!
//! Invariant: an `Identifier` is letters (any script, any case), digits,
//! underscores, `$` and inner spaces, starts with a letter or underscore, is at
//! most 63 bytes (PostgreSQL's limit) and is not reserved for Gatehouse; it holds
//! no quote, so it is always rendered double-quoted with nothing to escape.

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
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | ' '));
        let valid_start = name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_');
        let trimmed = !name.ends_with(' ') && !name.contains("  ");
        if !(valid_chars && valid_start && trimmed) || name.len() > 63 {
            return Err(InvalidIdentifier(format!(
                "{name:?} is not a valid name: use up to 63 bytes of letters, digits, \
                 underscores, $ and single inner spaces, starting with a letter"
            )));
        }
        let lowered = name.to_lowercase();
        if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| lowered.starts_with(**p)) {
            return Err(InvalidIdentifier(format!(
                "{name:?} is reserved: names starting with {prefix} belong to the system"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as SQLite compares it (ASCII letters without case): two names
    /// equal this way would be one table or column there.
    pub fn folded(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as SQL: double-quoted. The characters above leave nothing to escape.
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
        for name in [
            "orders",
            "order_items",
            "_private",
            "t1",
            &"a".repeat(63),
            "Orders",
            "createdAt",
            "my table",
            "Order Items",
            "prénom",
            "価格",
            "amount$",
        ] {
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
            "1st",
            "a-b",
            " a",
            "a ",
            "a  b",
            "a\tb",
            "a\"b",
            "a;drop",
            "a.b",
            "a,b",
            "a(b)",
            "a:b",
            "a!b",
            "gatehouse_meta",
            "Gatehouse_Meta",
            "sqlite_master",
            "SQLITE_x",
            "pg_class",
            &"a".repeat(64),
            &"é".repeat(32),
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
