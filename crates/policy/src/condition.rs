//! Checked conditions: every column resolved against the declared schema, every
//! comparison between compatible types. This is what the query compiler renders,
//! with context values (the caller's id, role and claims) as bound parameters.

use gatehouse_core::Identifier;
use gatehouse_schema::{ColumnType, Literal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A value known only per request, always bound as a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextValue {
    /// `auth.uid()`: the caller's user id; NULL for anon.
    Uid,
    /// `auth.role()`: `anon` or `authenticated`.
    Role,
    /// `auth.jwt() ->> 'claim'`: a claim of the verified token as text, or NULL.
    Claim(String),
}

/// A part of an object path such as `a/b/c.png`, as Supabase's `storage.foldername`,
/// `storage.filename` and `storage.extension` give it; NULL where there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathPart {
    /// The n-th folder, counted from 1 (`a`, then `b`).
    Folder(u16),
    /// The last segment (`c.png`).
    Filename,
    /// What follows the file name's last dot (`png`).
    Extension,
}

impl PathPart {
    /// The SQL function computing this part of `path`, the same on both databases
    /// (registered on SQLite, created by a migration on PostgreSQL).
    pub fn sql(self, path: &str) -> String {
        match self {
            PathPart::Folder(n) => format!("gatehouse_foldername({path}, {n})"),
            PathPart::Filename => format!("gatehouse_filename({path})"),
            PathPart::Extension => format!("gatehouse_extension({path})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// A column of the table at `depth`: 0 is the policy's table, 1 the table of
    /// the first `exists`, and so on.
    Column {
        depth: usize,
        name: Identifier,
        ty: ColumnType,
    },
    Value(Literal),
    Context(ContextValue),
    /// A context value resolved for one caller: its text, or NULL when the
    /// caller has none (see [`Condition::binding`]).
    Bound(Option<String>),
    /// A part of the path held in a text column (the column is a `Term::Column`).
    Path {
        part: PathPart,
        column: Box<Term>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Const(bool),
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
    Compare {
        left: Term,
        op: CmpOp,
        right: Term,
    },
    In {
        term: Term,
        list: Vec<Term>,
        negated: bool,
    },
    IsNull {
        term: Term,
        negated: bool,
    },
    /// `exists (select 1 from table where condition)`; inside, depth grows by one.
    Exists {
        table: Identifier,
        condition: Box<Condition>,
    },
}

impl Condition {
    /// The condition with every comparison that reads a term `touches` decided
    /// in advance: where it counts towards the condition holding (not under an
    /// odd number of NOTs) it becomes `assume`, elsewhere its opposite. With
    /// `assume = true` the result holds wherever the condition could, whatever
    /// those terms turn out to be (a precheck before they are known); with
    /// `false` only where it holds whatever they are (when they cannot be known).
    pub fn deciding(&self, touches: &impl Fn(&Term) -> bool, assume: bool) -> Condition {
        let reads = |terms: &[&Term]| terms.iter().any(|term| touches(term));
        match self {
            Condition::Const(_) => self.clone(),
            Condition::And(items) => {
                Condition::And(items.iter().map(|c| c.deciding(touches, assume)).collect())
            }
            Condition::Or(items) => {
                Condition::Or(items.iter().map(|c| c.deciding(touches, assume)).collect())
            }
            Condition::Not(inner) => Condition::Not(Box::new(inner.deciding(touches, !assume))),
            Condition::Compare { left, right, .. } if reads(&[left, right]) => {
                Condition::Const(assume)
            }
            Condition::In { term, list, .. } if touches(term) || list.iter().any(touches) => {
                Condition::Const(assume)
            }
            Condition::IsNull { term, .. } if touches(term) => Condition::Const(assume),
            Condition::Exists { table, condition } => Condition::Exists {
                table: table.clone(),
                condition: Box::new(condition.deciding(touches, assume)),
            },
            other => other.clone(),
        }
    }

    /// The condition as it applies to one caller: every context value replaced
    /// by what `resolve` gives for it, and the parts that no longer read a row
    /// worked out (`auth.role() = 'authenticated'`, `auth.uid() is null`), so
    /// the statement carries only what the database must decide. Comparisons
    /// with a missing value stay, as NULL, which no row satisfies.
    pub fn binding(&self, resolve: &impl Fn(&ContextValue) -> Option<String>) -> Condition {
        let bind = |term: &Term| match term {
            Term::Context(context) => Term::Bound(resolve(context)),
            other => other.clone(),
        };
        match self {
            Condition::Const(_) => self.clone(),
            Condition::And(items) => all_of(items.iter().map(|c| c.binding(resolve)).collect()),
            Condition::Or(items) => either(items.iter().map(|c| c.binding(resolve)).collect()),
            Condition::Not(inner) => match inner.binding(resolve) {
                Condition::Const(value) => Condition::Const(!value),
                other => Condition::Not(Box::new(other)),
            },
            Condition::Compare { left, op, right } => {
                let (left, right) = (bind(left), bind(right));
                match (&left, op, &right) {
                    (
                        Term::Bound(Some(a)),
                        CmpOp::Eq | CmpOp::Ne,
                        Term::Value(Literal::Text(b)),
                    )
                    | (
                        Term::Value(Literal::Text(b)),
                        CmpOp::Eq | CmpOp::Ne,
                        Term::Bound(Some(a)),
                    ) => Condition::Const((a == b) == (*op == CmpOp::Eq)),
                    _ => Condition::Compare {
                        left,
                        op: *op,
                        right,
                    },
                }
            }
            Condition::In {
                term,
                list,
                negated,
            } => Condition::In {
                term: bind(term),
                list: list.iter().map(bind).collect(),
                negated: *negated,
            },
            Condition::IsNull { term, negated } => match bind(term) {
                Term::Bound(value) => Condition::Const(value.is_none() != *negated),
                term => Condition::IsNull {
                    term,
                    negated: *negated,
                },
            },
            Condition::Exists { table, condition } => match condition.binding(resolve) {
                Condition::Const(false) => Condition::Const(false),
                condition => Condition::Exists {
                    table: table.clone(),
                    condition: Box::new(condition),
                },
            },
        }
    }

    /// Every column the condition reads, with the table it belongs to.
    pub fn columns<'a>(
        &'a self,
        tables: &mut Vec<&'a Identifier>,
        out: &mut Vec<(Identifier, Identifier)>,
    ) {
        let mut term = |term: &Term, tables: &Vec<&Identifier>| {
            let term = match term {
                Term::Path { column, .. } => column,
                other => other,
            };
            if let Term::Column { depth, name, .. } = term
                && let Some(table) = tables.get(*depth)
            {
                out.push(((*table).clone(), name.clone()));
            }
        };
        match self {
            Condition::Const(_) => {}
            Condition::And(items) | Condition::Or(items) => {
                for item in items {
                    item.columns(tables, out);
                }
            }
            Condition::Not(inner) => inner.columns(tables, out),
            Condition::Compare { left, right, .. } => {
                term(left, tables);
                term(right, tables);
            }
            Condition::In { term: t, list, .. } => {
                term(t, tables);
                for item in list {
                    term(item, tables);
                }
            }
            Condition::IsNull { term: t, .. } => term(t, tables),
            Condition::Exists { table, condition } => {
                tables.push(table);
                condition.columns(tables, out);
                tables.pop();
            }
        }
    }
}

/// `items` joined by AND, constants worked out: false if any is false, the
/// true ones dropped.
fn all_of(items: Vec<Condition>) -> Condition {
    joined(items, false, Condition::And)
}

/// `items` joined by OR, constants worked out: true if any is true, the false
/// ones dropped.
fn either(items: Vec<Condition>) -> Condition {
    joined(items, true, Condition::Or)
}

/// `deciding` is the constant that settles the join (false for AND, true for
/// OR); its opposite adds nothing and is dropped.
fn joined(
    items: Vec<Condition>,
    deciding: bool,
    join: fn(Vec<Condition>) -> Condition,
) -> Condition {
    if items.contains(&Condition::Const(deciding)) {
        return Condition::Const(deciding);
    }
    let mut rest: Vec<Condition> = items
        .into_iter()
        .filter(|item| *item != Condition::Const(!deciding))
        .collect();
    match rest.len() {
        0 => Condition::Const(!deciding),
        1 => rest.remove(0),
        _ => join(rest),
    }
}
