//! The policy language's syntax tree before names and types are checked.

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Operand, &'static str, Operand),
    In {
        operand: Operand,
        list: Vec<Operand>,
        negated: bool,
    },
    IsNull {
        operand: Operand,
        negated: bool,
    },
    Exists {
        table: String,
        alias: Option<String>,
        condition: Box<Expr>,
    },
    /// A bare operand used as a condition: a boolean column or literal.
    Truth(Operand),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Column {
        qualifier: Option<String>,
        name: String,
        at: usize,
    },
    Text(String),
    Number(String),
    Bool(bool),
    Null,
    AuthUid,
    AuthRole,
    JwtClaim(String),
    /// `storage.foldername(col)[n]`, `storage.filename(col)`, `storage.extension(col)`.
    Path {
        part: crate::PathPart,
        column: Box<Operand>,
    },
}
