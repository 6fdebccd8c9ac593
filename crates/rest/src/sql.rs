//! Builds one statement's text and parameters. Names enter only as quoted
//! [`Identifier`]s from the declared schema; every value, from the request or
//! from a policy, enters as a bound parameter.

use std::collections::HashMap;

use gatehouse_core::{Dialect, Identifier};
use gatehouse_db::{Statement, Value};
use gatehouse_policy::{Condition, ContextValue, Term};
use gatehouse_query::{Filter, Op, Operand};
use gatehouse_schema::{Column, ColumnType, Literal};

use crate::RestError;
use crate::caller::Caller;
use crate::values::from_text;

/// Public for `gatehouse-storage`, whose object policies render exactly as table policies.
pub struct Sql {
    dialect: Dialect,
    text: String,
    params: Vec<Value>,
}

/// How the columns of the table at one policy depth are written: as the values
/// being written (a new row under a `with check`), else through the alias.
pub struct Scope<'a> {
    pub alias: String,
    pub new_values: Option<&'a HashMap<Identifier, Value>>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            text: String::new(),
            params: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub fn finish(self) -> Statement {
        Statement::compiled(self.text, self.params)
    }

    /// A bound value. PostgreSQL infers a parameter's type from its use, so types
    /// SQLite keeps as text are bound as text and cast.
    pub fn param(&mut self, value: Value, ty: Option<ColumnType>) -> &mut Self {
        self.params.push(value);
        let n = self.params.len();
        match self.dialect {
            Dialect::Sqlite => self.text.push_str(&format!("?{n}")),
            Dialect::Postgres => {
                let cast = match ty {
                    Some(ColumnType::Uuid) => "::text::uuid",
                    Some(ColumnType::Timestamptz) => "::text::timestamptz",
                    Some(ColumnType::Date) => "::text::date",
                    Some(ColumnType::Numeric) => "::text::numeric",
                    Some(ColumnType::Jsonb) => "::text::jsonb",
                    Some(ColumnType::Integer) => "::integer",
                    Some(ColumnType::Bigint) => "::bigint",
                    Some(ColumnType::Boolean) => "::boolean",
                    Some(ColumnType::Text) => "::text",
                    Some(ColumnType::Bytea) => "::bytea",
                    None => "::text",
                };
                self.text.push_str(&format!("${n}{cast}"));
            }
        }
        self
    }

    pub fn column(&mut self, alias: &str, name: &Identifier) -> &mut Self {
        self.text
            .push_str(&format!("\"{alias}\".{}", name.quoted()));
        self
    }

    /// A column as it is read back: PostgreSQL's non-JSON-native types as the
    /// text PostgREST shows; SQLite already stores that text.
    pub fn output(&mut self, alias: Option<&str>, column: &Column) -> &mut Self {
        let reference = match alias {
            Some(alias) => format!("\"{alias}\".{}", column.name.quoted()),
            None => column.name.quoted(),
        };
        let expression = match (self.dialect, column.ty) {
            (Dialect::Postgres, ColumnType::Uuid | ColumnType::Numeric | ColumnType::Jsonb) => {
                format!("{reference}::text")
            }
            (Dialect::Postgres, ColumnType::Timestamptz | ColumnType::Date) => {
                format!("to_jsonb({reference}) #>> '{{}}'")
            }
            _ => reference,
        };
        self.text.push_str(&expression);
        self
    }

    fn literal(&mut self, literal: &Literal, ty: Option<ColumnType>) {
        let value = match literal {
            Literal::Bool(flag) => Value::Bool(*flag),
            Literal::Integer(n) => Value::Integer(*n),
            Literal::Number(text) | Literal::Text(text) => Value::Text(text.clone()),
        };
        let ty = ty.or(match literal {
            Literal::Bool(_) => Some(ColumnType::Boolean),
            Literal::Integer(_) => Some(ColumnType::Bigint),
            Literal::Number(_) => Some(ColumnType::Numeric),
            Literal::Text(_) => None,
        });
        self.param(value, ty);
    }

    fn term(
        &mut self,
        term: &Term,
        other: Option<ColumnType>,
        caller: &Caller,
        scopes: &[Scope<'_>],
    ) {
        match term {
            Term::Column { depth, name, ty } => {
                let scope = &scopes[*depth];
                match scope.new_values.and_then(|values| values.get(name)) {
                    Some(value) => self.param(value.clone(), Some(*ty)),
                    None => self.column(&scope.alias, name),
                };
            }
            Term::Value(literal) => self.literal(literal, other),
            Term::Context(context) => {
                let value = match context {
                    ContextValue::Uid => caller.user_id().map(str::to_owned),
                    ContextValue::Role => Some(caller.role_name().to_owned()),
                    ContextValue::Claim(name) => caller.claim(name),
                };
                // A uid that does not parse can match no uuid column: bind NULL.
                let value = match (value, other) {
                    (Some(text), Some(ColumnType::Uuid))
                        if uuid::Uuid::parse_str(&text).is_err() =>
                    {
                        None
                    }
                    (value, _) => value,
                };
                self.param(value.map_or(Value::Null, Value::Text), other);
            }
            Term::Path { part, column } => {
                let mut inner = Sql {
                    dialect: self.dialect,
                    text: String::new(),
                    params: std::mem::take(&mut self.params),
                };
                inner.term(column, None, caller, scopes);
                self.params = inner.params;
                self.text.push_str(&part.sql(&inner.text));
            }
        }
    }

    /// A policy condition. `scopes[0]` is the statement's own table.
    pub fn condition(
        &mut self,
        condition: &Condition,
        caller: &Caller,
        scopes: &mut Vec<Scope<'_>>,
    ) {
        let column_type = |term: &Term| match term {
            Term::Column { ty, .. } => Some(*ty),
            _ => None,
        };
        match condition {
            Condition::Const(true) => {
                self.push("(1 = 1)");
            }
            Condition::Const(false) => {
                self.push("(1 = 0)");
            }
            Condition::And(items) | Condition::Or(items) => {
                let joiner = if matches!(condition, Condition::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                self.push("(");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.push(joiner);
                    }
                    self.condition(item, caller, scopes);
                }
                self.push(")");
            }
            Condition::Not(inner) => {
                self.push("(NOT ");
                self.condition(inner, caller, scopes);
                self.push(")");
            }
            Condition::Compare { left, op, right } => {
                self.push("(");
                self.term(left, column_type(right), caller, scopes);
                self.push(&format!(" {} ", op.sql()));
                self.term(right, column_type(left), caller, scopes);
                self.push(")");
            }
            Condition::In {
                term,
                list,
                negated,
            } => {
                self.push("(");
                self.term(term, None, caller, scopes);
                self.push(if *negated { " NOT IN (" } else { " IN (" });
                for (i, item) in list.iter().enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.term(item, column_type(term), caller, scopes);
                }
                self.push("))");
            }
            Condition::IsNull { term, negated } => {
                self.push("(");
                self.term(term, None, caller, scopes);
                self.push(if *negated {
                    " IS NOT NULL)"
                } else {
                    " IS NULL)"
                });
            }
            Condition::Exists { table, condition } => {
                let alias = format!("p{}", scopes.len());
                self.push(&format!(
                    "EXISTS (SELECT 1 FROM {} AS \"{alias}\" WHERE ",
                    table.quoted()
                ));
                // The exists table is always read as stored, never as new values.
                scopes.push(Scope {
                    alias,
                    new_values: None,
                });
                self.condition(condition, caller, scopes);
                scopes.pop();
                self.push(")");
            }
        }
    }

    /// ` AND <condition>` over the table aliased `alias`, with the columns in
    /// `new_values` read as those values (a row being written); nothing when
    /// there is no condition (the service role).
    pub fn and_policy(
        &mut self,
        condition: Option<Condition>,
        caller: &Caller,
        alias: &str,
        new_values: Option<&HashMap<Identifier, Value>>,
    ) -> &mut Self {
        if let Some(condition) = condition {
            self.push(" AND ");
            let scope = Scope {
                alias: alias.to_owned(),
                new_values,
            };
            self.condition(&condition, caller, &mut vec![scope]);
        }
        self
    }

    /// A request filter on the table aliased `alias`; names resolve by `resolve`,
    /// which also refuses columns the caller may not read.
    pub fn filter<'c>(
        &mut self,
        filter: &Filter,
        alias: &str,
        resolve: &dyn Fn(&str) -> Result<&'c Column, RestError>,
    ) -> Result<(), RestError> {
        match filter {
            Filter::All { negated, items } | Filter::Any { negated, items } => {
                let joiner = if matches!(filter, Filter::All { .. }) {
                    " AND "
                } else {
                    " OR "
                };
                self.push(if *negated { "(NOT (" } else { "((" });
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.push(joiner);
                    }
                    self.filter(item, alias, resolve)?;
                }
                self.push("))");
            }
            Filter::Leaf {
                column,
                negated,
                op,
                operand,
            } => {
                let column = resolve(column)?;
                let invalid = |message: String| RestError::InvalidValue {
                    column: column.name.to_string(),
                    message,
                };
                self.push(if *negated { "(NOT (" } else { "((" });
                match (op, operand) {
                    (Op::Is, Operand::Null) => {
                        self.column(alias, &column.name).push(" IS NULL");
                    }
                    (Op::Is, Operand::True | Operand::False)
                        if column.ty == ColumnType::Boolean =>
                    {
                        let truth = if *operand == Operand::True {
                            " IS TRUE"
                        } else {
                            " IS FALSE"
                        };
                        self.column(alias, &column.name).push(truth);
                    }
                    (Op::Is, _) => {
                        return Err(invalid(
                            "is.true and is.false apply to boolean columns".into(),
                        ));
                    }
                    (Op::In, Operand::List(items)) if items.is_empty() => {
                        self.push("1 = 0");
                    }
                    (Op::In, Operand::List(items)) => {
                        self.column(alias, &column.name).push(" IN (");
                        for (i, item) in items.iter().enumerate() {
                            if i > 0 {
                                self.push(", ");
                            }
                            let value = from_text(column, item).map_err(invalid)?;
                            self.param(value, Some(column.ty));
                        }
                        self.push(")");
                    }
                    (Op::Like | Op::Ilike, Operand::Value(pattern)) => {
                        if column.ty != ColumnType::Text {
                            return Err(invalid("like and ilike apply to text columns".into()));
                        }
                        let pattern = Value::Text(pattern.clone());
                        match (op, self.dialect) {
                            (Op::Like, _) => {
                                self.column(alias, &column.name)
                                    .push(" LIKE ")
                                    .param(pattern, Some(ColumnType::Text));
                            }
                            (_, Dialect::Postgres) => {
                                self.column(alias, &column.name)
                                    .push(" ILIKE ")
                                    .param(pattern, Some(ColumnType::Text));
                            }
                            (_, Dialect::Sqlite) => {
                                self.push("lower(")
                                    .column(alias, &column.name)
                                    .push(") LIKE lower(");
                                self.param(pattern, Some(ColumnType::Text)).push(")");
                            }
                        }
                    }
                    (Op::Cs | Op::Cd, Operand::Value(text)) => {
                        if column.ty != ColumnType::Jsonb {
                            return Err(invalid("cs and cd apply to jsonb columns".into()));
                        }
                        let value = from_text(column, text).map_err(invalid)?;
                        match self.dialect {
                            Dialect::Postgres => {
                                let op = if *op == Op::Cs { " @> " } else { " <@ " };
                                self.column(alias, &column.name)
                                    .push(op)
                                    .param(value, Some(column.ty));
                            }
                            Dialect::Sqlite => {
                                // The same containment, as a registered function (db::json).
                                self.push("gatehouse_json_contains(");
                                if *op == Op::Cs {
                                    self.column(alias, &column.name)
                                        .push(", ")
                                        .param(value, Some(column.ty));
                                } else {
                                    self.param(value, Some(column.ty))
                                        .push(", ")
                                        .column(alias, &column.name);
                                }
                                self.push(")");
                            }
                        }
                    }
                    (op, Operand::Value(text)) => {
                        if matches!(column.ty, ColumnType::Jsonb | ColumnType::Bytea) {
                            return Err(invalid(
                                "jsonb and bytea columns cannot be compared".into(),
                            ));
                        }
                        let sql_op = match op {
                            Op::Eq => " = ",
                            Op::Neq => " <> ",
                            Op::Gt => " > ",
                            Op::Gte => " >= ",
                            Op::Lt => " < ",
                            _ => " <= ",
                        };
                        let value = from_text(column, text).map_err(invalid)?;
                        self.column(alias, &column.name)
                            .push(sql_op)
                            .param(value, Some(column.ty));
                    }
                    (_, _) => {
                        return Err(invalid(
                            "this operator does not take that kind of value".into(),
                        ));
                    }
                }
                self.push("))");
            }
        }
        Ok(())
    }
}
