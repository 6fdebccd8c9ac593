//! From syntax to a checked [`Condition`]: names resolve against the declared
//! schema (inner `exists` tables first, then outward), and operand types must fit.

use gatehouse_schema::{ColumnType, Literal, Schema, Table};

use crate::ast::{Expr, Operand};
use crate::condition::{CmpOp, Condition, ContextValue, Term};
use crate::{ParseError, PathPart};

/// The tables in scope, innermost last, each with the name it is known by.
struct Scope<'a> {
    levels: Vec<(&'a Table, String)>,
}

/// What a term can be compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Column(ColumnType),
    TextLiteral,
    NumberLiteral,
    BoolLiteral,
    Uid,
    Text,
}

fn fits(a: Kind, b: Kind) -> bool {
    use ColumnType as C;
    use Kind::*;
    let textual = |t: C| matches!(t, C::Text | C::Uuid | C::Date | C::Timestamptz);
    match (a, b) {
        (Column(C::Jsonb | C::Bytea), _) | (_, Column(C::Jsonb | C::Bytea)) => false,
        (Column(x), Column(y)) => {
            x == y || (x.is_integral() || x == C::Numeric) && (y.is_integral() || y == C::Numeric)
        }
        (Column(t), TextLiteral) | (TextLiteral, Column(t)) => textual(t),
        (Column(t), NumberLiteral) | (NumberLiteral, Column(t)) => {
            t.is_integral() || t == C::Numeric
        }
        (Column(t), BoolLiteral) | (BoolLiteral, Column(t)) => t == C::Boolean,
        (Column(t), Uid) | (Uid, Column(t)) => matches!(t, C::Uuid | C::Text),
        (Column(t), Text) | (Text, Column(t)) => t == C::Text,
        (TextLiteral | Text | Uid, TextLiteral | Text | Uid) => true,
        (x, y) => x == y,
    }
}

pub fn check(expr: &Expr, schema: &Schema, table: &Table) -> Result<Condition, ParseError> {
    let mut scope = Scope {
        levels: vec![(table, table.name.to_string())],
    };
    condition(expr, schema, &mut scope)
}

fn condition<'a>(
    expr: &Expr,
    schema: &'a Schema,
    scope: &mut Scope<'a>,
) -> Result<Condition, ParseError> {
    Ok(match expr {
        Expr::And(a, b) => Condition::And(vec![
            condition(a, schema, scope)?,
            condition(b, schema, scope)?,
        ]),
        Expr::Or(a, b) => Condition::Or(vec![
            condition(a, schema, scope)?,
            condition(b, schema, scope)?,
        ]),
        Expr::Not(inner) => Condition::Not(Box::new(condition(inner, schema, scope)?)),
        Expr::Compare(left, op, right) => {
            if matches!(left, Operand::Null) || matches!(right, Operand::Null) {
                return Err(ParseError::at(
                    0,
                    "comparing with NULL is never true: use IS NULL or IS NOT NULL",
                ));
            }
            let (left, left_kind) = term(left, scope)?;
            let (right, right_kind) = term(right, scope)?;
            if !fits(left_kind, right_kind) {
                return Err(ParseError::at(
                    0,
                    format!("cannot compare {left_kind:?} with {right_kind:?}"),
                ));
            }
            let op = match *op {
                "=" => CmpOp::Eq,
                "<>" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                _ => CmpOp::Ge,
            };
            Condition::Compare { left, op, right }
        }
        Expr::In {
            operand,
            list,
            negated,
        } => {
            let (checked, kind) = term(operand, scope)?;
            let list = list
                .iter()
                .map(|item| {
                    let (item, item_kind) = term(item, scope)?;
                    if fits(kind, item_kind) {
                        Ok(item)
                    } else {
                        Err(ParseError::at(
                            0,
                            format!("IN list holds {item_kind:?}, not comparable with {kind:?}"),
                        ))
                    }
                })
                .collect::<Result<_, _>>()?;
            Condition::In {
                term: checked,
                list,
                negated: *negated,
            }
        }
        Expr::IsNull { operand, negated } => Condition::IsNull {
            term: term(operand, scope)?.0,
            negated: *negated,
        },
        Expr::Truth(Operand::Bool(flag)) => Condition::Const(*flag),
        Expr::Truth(operand) => match term(operand, scope)? {
            (
                column @ Term::Column {
                    ty: ColumnType::Boolean,
                    ..
                },
                _,
            ) => Condition::Compare {
                left: column,
                op: CmpOp::Eq,
                right: Term::Value(Literal::Bool(true)),
            },
            _ => {
                return Err(ParseError::at(
                    0,
                    "a condition is a comparison, IN, IS NULL, EXISTS or a boolean column",
                ));
            }
        },
        Expr::Exists {
            table,
            alias,
            condition: inner,
        } => {
            let target = schema
                .table(table)
                .ok_or_else(|| ParseError::at(0, format!("exists names unknown table {table}")))?;
            scope
                .levels
                .push((target, alias.clone().unwrap_or_else(|| table.clone())));
            let inner = condition(inner, schema, scope);
            scope.levels.pop();
            Condition::Exists {
                table: target.name.clone(),
                condition: Box::new(inner?),
            }
        }
    })
}

fn term(operand: &Operand, scope: &Scope<'_>) -> Result<(Term, Kind), ParseError> {
    Ok(match operand {
        Operand::Column {
            qualifier,
            name,
            at,
        } => {
            let found =
                scope
                    .levels
                    .iter()
                    .enumerate()
                    .rev()
                    .find_map(|(depth, (table, known_as))| {
                        let qualifies = qualifier.as_ref().is_none_or(|q| q == known_as);
                        table
                            .column(name)
                            .filter(|_| qualifies)
                            .map(|column| (depth, column))
                    });
            let (depth, column) = found.ok_or_else(|| {
                let shown = qualifier
                    .as_ref()
                    .map_or(name.clone(), |q| format!("{q}.{name}"));
                ParseError::at(*at, format!("unknown column {shown}"))
            })?;
            (
                Term::Column {
                    depth,
                    name: column.name.clone(),
                    ty: column.ty,
                },
                Kind::Column(column.ty),
            )
        }
        Operand::Text(text) => (Term::Value(Literal::Text(text.clone())), Kind::TextLiteral),
        Operand::Number(number) => match number.parse::<i64>() {
            Ok(integer) => (Term::Value(Literal::Integer(integer)), Kind::NumberLiteral),
            Err(_) => (
                Term::Value(Literal::Number(number.clone())),
                Kind::NumberLiteral,
            ),
        },
        Operand::Bool(flag) => (Term::Value(Literal::Bool(*flag)), Kind::BoolLiteral),
        Operand::Null => return Err(ParseError::at(0, "NULL belongs in IS NULL or IS NOT NULL")),
        Operand::AuthUid => (Term::Context(ContextValue::Uid), Kind::Uid),
        Operand::AuthRole => (Term::Context(ContextValue::Role), Kind::Text),
        Operand::JwtClaim(claim) => (
            Term::Context(ContextValue::Claim(claim.clone())),
            Kind::Text,
        ),
        Operand::Path { part, column } => {
            let (column, kind) = term(column, scope)?;
            if kind != Kind::Column(ColumnType::Text) {
                return Err(ParseError::at(0, "storage functions take a text column"));
            }
            if *part == PathPart::Folder(0) {
                return Err(ParseError::at(
                    0,
                    "storage.foldername(…) is a list: pick a folder, as in storage.foldername(name)[1]",
                ));
            }
            (
                Term::Path {
                    part: *part,
                    column: Box::new(column),
                },
                Kind::Text,
            )
        }
    })
}
