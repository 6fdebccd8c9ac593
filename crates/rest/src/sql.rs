//! Builds one statement's text and parameters. Names enter only as quoted
//! [`Identifier`]s from the declared schema; every value, from the request or
//! from a policy, enters as a bound parameter; and a statement finishes only
//! once it carries its access decision (or is named bookkeeping).

use std::collections::HashMap;
use std::fmt::Write;
use std::marker::PhantomData;

use gatehouse_core::{Dialect, Identifier};
use gatehouse_db::{Statement, Value};
use gatehouse_policy::{Condition, Term};
use gatehouse_query::{Filter, JsonKey, JsonStep, Op, Operand};
use gatehouse_schema::{Column, ColumnType, Element, Literal, search_table};
use gatehouse_search::{Language, Query, Syntax};

use crate::RestError;
use crate::access::{Decision, Verdict};
use crate::output::{Output, json_path_applies, path_type};
use crate::values::from_text;

/// A statement under construction. Text from outside this crate is only ever
/// `&'static str`; values go in as parameters; and `finish` exists only once
/// the statement is [`Decided`]:
///
/// ```
/// use gatehouse_core::Dialect;
/// use gatehouse_policy::Command;
/// use gatehouse_rest::{Caller, Rows, StatementBuilder, decide};
///
/// let decision = decide(&Caller::anon(), None, Command::Select, Rows::Existing);
/// let mut sql = StatementBuilder::new(Dialect::Sqlite);
/// sql.push("SELECT 1 FROM \"orders\" AS \"o\" WHERE (1 = 1)");
/// let statement = sql.and_decision(&decision, "o", None).finish();
/// ```
///
/// A statement on a user table without its decision does not compile (no
/// `finish` on an undecided statement):
///
/// ```compile_fail,E0599
/// use gatehouse_core::Dialect;
/// use gatehouse_rest::StatementBuilder;
///
/// let mut sql = StatementBuilder::new(Dialect::Sqlite);
/// sql.push("SELECT 1 FROM \"orders\" AS \"o\" WHERE (1 = 1)");
/// let statement = sql.finish();
/// ```
///
/// Nor does text made at run time (it does not live for `'static`):
///
/// ```compile_fail,E0716
/// use gatehouse_core::Dialect;
/// use gatehouse_rest::StatementBuilder;
///
/// let table = String::from("orders");
/// let mut sql = StatementBuilder::without_policy(Dialect::Sqlite, "a test");
/// sql.push(&format!("SELECT 1 FROM {table}"));
/// ```
pub struct StatementBuilder<State = Undecided> {
    dialect: Dialect,
    text: String,
    params: Vec<Value>,
    state: PhantomData<State>,
}

/// A statement without its access decision yet: it cannot finish.
pub enum Undecided {}

/// A statement that carries its access decision, or that was named
/// bookkeeping by [`StatementBuilder::without_policy`].
pub enum Decided {}

/// How the columns of the table at one policy depth are written: as the values
/// being written (a new row under a `with check`), else through the alias.
struct Scope<'a> {
    alias: String,
    new_values: Option<&'a HashMap<Identifier, Value>>,
}

impl StatementBuilder<Undecided> {
    pub fn new(dialect: Dialect) -> Self {
        Self::empty(dialect)
    }
}

impl StatementBuilder<Undecided> {
    /// `SELECT` of one column per decision: 1 where it holds for the row
    /// `values` (every column of the decision's table, read as those values
    /// rather than through `alias`), else 0.
    pub(crate) fn deciding_each(
        mut self,
        decisions: &[&Decision],
        alias: &str,
        values: &HashMap<Identifier, Value>,
    ) -> Statement {
        self.push("SELECT ");
        for (at, decision) in decisions.iter().enumerate() {
            if at > 0 {
                self.push(", ");
            }
            self.push("CASE WHEN (1 = 1");
            self.policy(decision, alias, Some(values));
            self.push(") THEN 1 ELSE 0 END");
        }
        Statement::compiled(self.text, self.params)
    }
}

impl StatementBuilder<Decided> {
    /// A statement that runs without any caller's policy: Gatehouse's own
    /// bookkeeping (upload records, sweeps, its own tables) or a capability
    /// already checked (a public bucket, a signed URL). `why` says which, for
    /// the reviewer: `grep -rn without_policy crates` lists every such statement.
    pub fn without_policy(dialect: Dialect, why: &'static str) -> Self {
        let _ = why;
        Self::empty(dialect)
    }

    /// A further decision in a statement that already carries its own: a
    /// subquery on another table, a `with check` after a `using`.
    pub fn and_also(
        &mut self,
        decision: &Decision,
        alias: &'static str,
        new_values: Option<&HashMap<Identifier, Value>>,
    ) -> &mut Self {
        self.policy(decision, alias, new_values);
        self
    }

    pub fn finish(self) -> Statement {
        Statement::compiled(self.text, self.params)
    }
}

impl<S> StatementBuilder<S> {
    fn empty(dialect: Dialect) -> Self {
        Self {
            dialect,
            text: String::new(),
            params: Vec::new(),
            state: PhantomData,
        }
    }

    pub fn push(&mut self, text: &'static str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// ` AND <the decision>` over the table aliased `alias`, with the columns
    /// in `new_values` read as those values (a row being written): nothing when
    /// open, no row when closed.
    pub fn and_decision(
        mut self,
        decision: &Decision,
        alias: &'static str,
        new_values: Option<&HashMap<Identifier, Value>>,
    ) -> StatementBuilder<Decided> {
        self.policy(decision, alias, new_values);
        StatementBuilder {
            dialect: self.dialect,
            text: self.text,
            params: self.params,
            state: PhantomData,
        }
    }

    fn policy(
        &mut self,
        decision: &Decision,
        alias: &str,
        new_values: Option<&HashMap<Identifier, Value>>,
    ) {
        match &decision.0 {
            Verdict::Open => {}
            Verdict::Only(condition) => {
                self.push(" AND ");
                let scope = Scope {
                    alias: alias.to_owned(),
                    new_values,
                };
                self.condition(condition, &mut vec![scope]);
            }
            Verdict::Closed => {
                self.push(" AND (1 = 0)");
            }
        }
    }

    /// A count Gatehouse computed (a LIMIT), written into the text: SQLite
    /// plans with a bound LIMIT's value, so it would re-prepare the statement
    /// on every run.
    pub fn number(&mut self, number: u64) -> &mut Self {
        let _ = write!(self.text, "{number}");
        self
    }

    /// Text made in this crate from the schema's quoted names and numbers it
    /// computed, never from a request.
    pub(crate) fn raw(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// A bound value. PostgreSQL infers a parameter's type from its use, so types
    /// SQLite keeps as text are bound as text and cast.
    pub fn param(&mut self, value: Value, ty: Option<ColumnType>) -> &mut Self {
        // Arrays travel as JSON array text; PostgreSQL takes its own literal.
        let value = match (self.dialect, ty, value) {
            (Dialect::Postgres, Some(ColumnType::Array(_)), Value::Text(json)) => {
                Value::Text(postgres_array(&json))
            }
            (_, _, value) => value,
        };
        self.params.push(value);
        let n = self.params.len();
        match self.dialect {
            Dialect::Sqlite => {
                let _ = write!(self.text, "?{n}");
            }
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
                    Some(ColumnType::Array(Element::Text)) => "::text::text[]",
                    Some(ColumnType::Array(Element::Integer)) => "::text::integer[]",
                    Some(ColumnType::Array(Element::Bigint)) => "::text::bigint[]",
                    Some(ColumnType::Array(Element::Uuid)) => "::text::uuid[]",
                    None => "::text",
                };
                let _ = write!(self.text, "${n}{cast}");
            }
        }
        self
    }

    pub(crate) fn column(&mut self, alias: &str, name: &Identifier) -> &mut Self {
        // `"alias"."name"`: an identifier's characters need no escaping.
        self.text.push('"');
        self.text.push_str(alias);
        self.text.push_str("\".\"");
        self.text.push_str(name.as_str());
        self.text.push('"');
        self
    }

    /// A column as it is read back: PostgreSQL's non-JSON-native types as the
    /// text PostgREST shows; SQLite already stores that text.
    pub(crate) fn output(&mut self, alias: Option<&str>, column: &Column) -> &mut Self {
        let (before, after) = match (self.dialect, column.ty) {
            (Dialect::Postgres, ColumnType::Uuid | ColumnType::Numeric | ColumnType::Jsonb) => {
                ("", "::text")
            }
            (Dialect::Postgres, ColumnType::Timestamptz | ColumnType::Date) => {
                ("to_jsonb(", ") #>> '{}'")
            }
            (Dialect::Postgres, ColumnType::Array(_)) => ("to_jsonb(", ")::text"),
            _ => ("", ""),
        };
        self.text.push_str(before);
        self.named(alias, &column.name);
        self.text.push_str(after);
        self
    }

    /// `"alias"."name"`, or `"name"` alone (RETURNING has no alias).
    fn named(&mut self, alias: Option<&str>, name: &Identifier) -> &mut Self {
        match alias {
            Some(alias) => self.column(alias, name),
            None => self.raw(&name.quoted()),
        }
    }

    /// A column, or a path into a JSON column, with each key bound:
    /// `("t0"."data" -> $1 ->> $2)`. On SQLite every step is `->`, and a last
    /// `->>` takes the value's text as PostgreSQL gives it (`gatehouse_json_text`),
    /// so both databases give the same text.
    pub(crate) fn field(
        &mut self,
        alias: Option<&str>,
        column: &Column,
        path: &[JsonStep],
    ) -> Result<&mut Self, RestError> {
        let Some(last) = path.last() else {
            return Ok(self.named(alias, &column.name));
        };
        json_path_applies(column, path)?;
        let text = self.dialect == Dialect::Sqlite && last.as_text;
        self.push(if text { "gatehouse_json_text((" } else { "(" });
        self.named(alias, &column.name);
        for step in path {
            let arrow = match (self.dialect, step.as_text) {
                (Dialect::Postgres, true) => " ->> ",
                _ => " -> ",
            };
            self.push(arrow);
            self.json_key(&step.key);
        }
        self.push(if text { "))" } else { ")" });
        Ok(self)
    }

    /// A path key as a bound value: a member's name or an array index. SQLite
    /// reads a text key as a path, so a name is always written as a quoted path
    /// label (`$."a \"b\""`, escaped as SQLite reads it), and a negative index
    /// as `$[#-n]`.
    fn json_key(&mut self, key: &JsonKey) {
        let value = match (self.dialect, key) {
            (Dialect::Postgres, JsonKey::Field(name)) => Value::Text(name.clone()),
            (Dialect::Postgres, JsonKey::Index(index)) => Value::Integer(*index),
            (Dialect::Sqlite, JsonKey::Index(index)) if *index >= 0 => Value::Integer(*index),
            (Dialect::Sqlite, JsonKey::Index(index)) => Value::Text(format!("$[#{index}]")),
            (Dialect::Sqlite, JsonKey::Field(name)) => {
                Value::Text(format!("$.{}", backslash_quoted(name)))
            }
        };
        let ty = match value {
            Value::Integer(_) => ColumnType::Integer,
            _ => ColumnType::Text,
        };
        self.param(value, Some(ty));
    }

    /// An output value: a column (see [`Self::output`]) or a JSON path, whose
    /// JSON PostgreSQL sends as text.
    pub(crate) fn output_of(
        &mut self,
        alias: Option<&str>,
        output: &Output<'_>,
    ) -> Result<&mut Self, RestError> {
        if output.path.is_empty() {
            return Ok(self.output(alias, output.column));
        }
        self.field(alias, output.column, &output.path)?;
        if self.dialect == Dialect::Postgres && output.ty() == ColumnType::Jsonb {
            self.push("::text");
        }
        Ok(self)
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

    fn term(&mut self, term: &Term, other: Option<ColumnType>, scopes: &[Scope<'_>]) {
        match term {
            Term::Column { depth, name, ty } => {
                let scope = &scopes[*depth];
                match scope.new_values.and_then(|values| values.get(name)) {
                    Some(value) => self.param(value.clone(), Some(*ty)),
                    None => self.column(&scope.alias, name),
                };
            }
            Term::Value(literal) => self.literal(literal, other),
            Term::Bound(value) => {
                // A uid that does not parse can match no uuid column: bind NULL.
                let value = match (value, other) {
                    (Some(text), Some(ColumnType::Uuid))
                        if uuid::Uuid::parse_str(text).is_err() =>
                    {
                        None
                    }
                    (value, _) => value.clone(),
                };
                self.param(value.map_or(Value::Null, Value::Text), other);
            }
            // Bound by the decision before it gets here; unbound reads nothing.
            Term::Context(_) => {
                self.param(Value::Null, other);
            }
            Term::Path { part, column } => {
                let mut inner = Self::empty(self.dialect);
                inner.params = std::mem::take(&mut self.params);
                inner.term(column, None, scopes);
                self.params = inner.params;
                self.text.push_str(&part.sql(&inner.text));
            }
        }
    }

    /// A policy condition. `scopes[0]` is the statement's own table.
    fn condition(&mut self, condition: &Condition, scopes: &mut Vec<Scope<'_>>) {
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
                    self.condition(item, scopes);
                }
                self.push(")");
            }
            Condition::Not(inner) => {
                self.push("(NOT ");
                self.condition(inner, scopes);
                self.push(")");
            }
            Condition::Compare { left, op, right } => {
                self.push("(");
                self.term(left, column_type(right), scopes);
                self.push(" ").push(op.sql()).push(" ");
                self.term(right, column_type(left), scopes);
                self.push(")");
            }
            Condition::In {
                term,
                list,
                negated,
            } => {
                self.push("(");
                self.term(term, None, scopes);
                self.push(if *negated { " NOT IN (" } else { " IN (" });
                for (i, item) in list.iter().enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.term(item, column_type(term), scopes);
                }
                self.push("))");
            }
            Condition::IsNull { term, negated } => {
                self.push("(");
                self.term(term, None, scopes);
                self.push(if *negated {
                    " IS NOT NULL)"
                } else {
                    " IS NULL)"
                });
            }
            Condition::Exists { table, condition } => {
                let alias = format!("p{}", scopes.len());
                self.push("EXISTS (SELECT 1 FROM ")
                    .raw(&table.quoted())
                    .raw(&format!(" AS \"{alias}\" WHERE "));
                // The exists table is always read as stored, never as new values.
                scopes.push(Scope {
                    alias,
                    new_values: None,
                });
                self.condition(condition, scopes);
                scopes.pop();
                self.push(")");
            }
        }
    }

    /// A request filter on `table`, aliased `alias`; names resolve by `resolve`,
    /// which also refuses columns the caller may not read.
    pub(crate) fn filter<'c>(
        &mut self,
        filter: &Filter,
        (table, alias): (&Identifier, &str),
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
                    self.filter(item, (table, alias), resolve)?;
                }
                self.push("))");
            }
            Filter::Leaf {
                column,
                path,
                negated,
                op,
                operand,
            } => {
                let column = resolve(column)?;
                json_path_applies(column, path)?;
                // A path compares what it reaches: JSON for `->`, text for `->>`.
                let ty = path_type(column, path);
                let field = Some(alias);
                let invalid = |message: String| RestError::InvalidValue {
                    column: column.name.to_string(),
                    message,
                };
                self.push(if *negated { "(NOT (" } else { "((" });
                match (op, operand) {
                    (Op::Is, Operand::Null) => {
                        self.field(field, column, path)?.push(" IS NULL");
                    }
                    (Op::Is, Operand::True | Operand::False) if ty == ColumnType::Boolean => {
                        let truth = if *operand == Operand::True {
                            " IS TRUE"
                        } else {
                            " IS FALSE"
                        };
                        self.field(field, column, path)?.push(truth);
                    }
                    (Op::Is, _) => {
                        return Err(invalid(
                            "is.true and is.false apply to boolean columns".into(),
                        ));
                    }
                    (Op::In, Operand::List(items)) if items.is_empty() => {
                        self.push("1 = 0");
                    }
                    (Op::In, Operand::List(_)) if ty == ColumnType::Jsonb => {
                        return Err(invalid(
                            "in takes a value's text after ->>, not JSON after ->".into(),
                        ));
                    }
                    (Op::In, Operand::List(items)) => {
                        self.field(field, column, path)?.push(" IN (");
                        for (i, item) in items.iter().enumerate() {
                            if i > 0 {
                                self.push(", ");
                            }
                            let value = from_text(ty, item).map_err(invalid)?;
                            self.param(value, Some(ty));
                        }
                        self.push(")");
                    }
                    (Op::Like | Op::Ilike, Operand::Value(pattern)) => {
                        if ty != ColumnType::Text {
                            return Err(invalid("like and ilike apply to text columns".into()));
                        }
                        let pattern = from_text(ColumnType::Text, pattern).map_err(invalid)?;
                        match (op, self.dialect) {
                            (Op::Like, _) => {
                                self.field(field, column, path)?
                                    .push(" LIKE ")
                                    .param(pattern, Some(ColumnType::Text));
                            }
                            (_, Dialect::Postgres) => {
                                self.field(field, column, path)?
                                    .push(" ILIKE ")
                                    .param(pattern, Some(ColumnType::Text));
                            }
                            (_, Dialect::Sqlite) => {
                                self.push("lower(");
                                self.field(field, column, path)?.push(") LIKE lower(");
                                self.param(pattern, Some(ColumnType::Text)).push(")");
                            }
                        }
                    }
                    (Op::Ov, Operand::Value(text)) => {
                        if !matches!(ty, ColumnType::Array(_)) {
                            return Err(invalid("ov applies to array columns".into()));
                        }
                        let value = from_text(ty, text).map_err(invalid)?;
                        match self.dialect {
                            Dialect::Postgres => {
                                self.field(field, column, path)?
                                    .push(" && ")
                                    .param(value, Some(ty));
                            }
                            Dialect::Sqlite => {
                                // The same overlap, as a registered function (db::json).
                                self.push("gatehouse_json_overlaps(");
                                self.field(field, column, path)?.push(", ");
                                self.param(value, Some(ty)).push(")");
                            }
                        }
                    }
                    (
                        Op::Fts | Op::Plfts | Op::Phfts | Op::Wfts,
                        Operand::Search { language, query },
                    ) => {
                        if !column.searchable || !path.is_empty() {
                            return Err(invalid(
                                "full-text search applies to columns declared searchable".into(),
                            ));
                        }
                        let syntax = match op {
                            Op::Fts => Syntax::Operators,
                            Op::Plfts => Syntax::Plain,
                            Op::Phfts => Syntax::Phrase,
                            _ => Syntax::WebSearch,
                        };
                        let language = language
                            .as_deref()
                            .map(Language::from_name)
                            .transpose()?
                            .unwrap_or(Language::DEFAULT);
                        let text = from_text(ColumnType::Text, query).map_err(invalid)?;
                        let parsed = Query::parse(syntax, language, query)?;
                        self.search((table, alias), column, syntax, language, text, &parsed);
                    }
                    (Op::Cs | Op::Cd, Operand::Value(text)) => {
                        if !matches!(ty, ColumnType::Jsonb | ColumnType::Array(_)) {
                            return Err(invalid(
                                "cs and cd apply to jsonb and array columns".into(),
                            ));
                        }
                        let value = from_text(ty, text).map_err(invalid)?;
                        match self.dialect {
                            Dialect::Postgres => {
                                let op = if *op == Op::Cs { " @> " } else { " <@ " };
                                self.field(field, column, path)?
                                    .push(op)
                                    .param(value, Some(ty));
                            }
                            Dialect::Sqlite => {
                                // The same containment, as a registered function
                                // (db::json): jsonb's, or an array's, where NULL
                                // is no element.
                                self.push(match ty {
                                    ColumnType::Array(_) => "gatehouse_array_contains(",
                                    _ => "gatehouse_json_contains(",
                                });
                                if *op == Op::Cs {
                                    self.field(field, column, path)?
                                        .push(", ")
                                        .param(value, Some(ty));
                                } else {
                                    self.param(value, Some(ty)).push(", ");
                                    self.field(field, column, path)?;
                                }
                                self.push(")");
                            }
                        }
                    }
                    (op, Operand::Value(text)) => {
                        // A JSON value a path reaches may equal another; ordering
                        // JSON (or comparing whole jsonb or bytea columns) is refused.
                        let equality = matches!(op, Op::Eq | Op::Neq);
                        let json_equality = ty == ColumnType::Jsonb && !path.is_empty() && equality;
                        if matches!(ty, ColumnType::Array(_)) && !equality {
                            return Err(invalid(
                                "arrays compare with eq, neq, cs, cd and ov".into(),
                            ));
                        }
                        if matches!(ty, ColumnType::Jsonb | ColumnType::Bytea) && !json_equality {
                            return Err(invalid(
                                "jsonb and bytea values compare only by eq or neq after ->, \
                                 or as text after ->>"
                                    .into(),
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
                        let value = from_text(ty, text).map_err(invalid)?;
                        if json_equality && self.dialect == Dialect::Sqlite {
                            // Equal as jsonb is on PostgreSQL: members in any
                            // order, numbers by value (db::json::same).
                            self.push(if *op == Op::Eq { "" } else { "NOT " });
                            self.push("gatehouse_json_same(");
                            self.field(field, column, path)?.push(", ");
                            self.param(value, Some(ty)).push(")");
                        } else {
                            self.field(field, column, path)?
                                .push(sql_op)
                                .param(value, Some(ty));
                        }
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

impl<S> StatementBuilder<S> {
    /// `column @@ query`: PostgreSQL's own functions, in the language named by
    /// this crate (so the default's GIN index applies); on SQLite the rows the
    /// column's FTS5 table finds for the query's required lexemes, each then
    /// decided as PostgreSQL would (gatehouse-search, through db). The caller
    /// parsed the query, so both databases refuse the same malformed ones.
    fn search(
        &mut self,
        (table, alias): (&Identifier, &str),
        column: &Column,
        syntax: Syntax,
        language: Language,
        text: Value,
        parsed: &Query,
    ) {
        match self.dialect {
            Dialect::Postgres => {
                let config = match language {
                    Language::English => "'english'::regconfig",
                    Language::Simple => "'simple'::regconfig",
                };
                self.push("to_tsvector(").push(config).push(", ");
                self.column(alias, &column.name).push(") @@ ");
                self.push(syntax.function())
                    .push("(")
                    .push(config)
                    .push(", ");
                self.param(text, Some(ColumnType::Text)).push(")");
            }
            Dialect::Sqlite => {
                if let Some(required) = parsed.prefilter() {
                    let index = search_table(table, &column.name);
                    self.push("\"")
                        .raw(alias)
                        .push("\".rowid IN (SELECT rowid FROM ");
                    self.raw(&index).push(" WHERE ").raw(&index).push(" MATCH ");
                    let in_language = format!("{{{}}} : {required}", language.name());
                    self.param(Value::Text(in_language), Some(ColumnType::Text));
                    self.push(") AND ");
                }
                self.push("gatehouse_text_search(");
                for part in [syntax.code(), language.name()] {
                    self.param(Value::Text(part.to_owned()), Some(ColumnType::Text))
                        .push(", ");
                }
                self.param(text, Some(ColumnType::Text)).push(", ");
                self.column(alias, &column.name).push(")");
            }
        }
    }
}

/// A JSON array (as arrays travel) as PostgreSQL's array literal:
/// `["a", "b \"c\"", null]` → `{"a","b \"c\"",NULL}`. Every element is quoted.
fn postgres_array(json: &str) -> String {
    let items = match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let elements: Vec<String> = items
        .iter()
        .map(|item| match item {
            serde_json::Value::Null => "NULL".to_owned(),
            serde_json::Value::String(text) => backslash_quoted(text),
            other => backslash_quoted(&other.to_string()),
        })
        .collect();
    format!("{{{}}}", elements.join(","))
}

/// `text` in double quotes with `"` and `\` escaped by a backslash: how both
/// SQLite's JSON path labels and PostgreSQL's array elements quote text.
fn backslash_quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
