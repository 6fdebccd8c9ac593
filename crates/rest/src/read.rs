//! GET: select, filter, order and page, with the policy's `using` in the WHERE.

use std::collections::HashMap;
use std::pin::Pin;

use gatehouse_db::{Database, Executor, Statement, Value};
use gatehouse_policy::Command;
use gatehouse_query::{JsonStep, OrderTerm, Paging, Request, SelectItem};
use gatehouse_schema::{Column, ColumnType, Table};
use serde_json::{Map, Value as Json};

use crate::embed;
use crate::output::{Output, path_type};
use crate::sql::{Decided, StatementBuilder, Undecided};
use crate::values::to_json;
use crate::{Access, Caller, Rest, RestError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// `Prefer: count=exact` (planned and estimated are answered exactly too).
    Exact,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    pub count: Option<Count>,
    /// From a `Range: first-last` header.
    pub range: Option<(u64, Option<u64>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadResult {
    /// One JSON object per row.
    pub rows: Vec<Json>,
    pub offset: u64,
    pub total: Option<u64>,
}

/// What a select list names, each with the key it gets in the JSON.
pub(crate) fn selected<'a>(
    access: &'a Access<'_>,
    select: &[SelectItem],
) -> Result<Vec<Output<'a>>, RestError> {
    if select.is_empty() {
        return Ok(access
            .readable_columns()
            .into_iter()
            .map(Output::column)
            .collect());
    }
    let mut out = Vec::new();
    for item in select {
        match item {
            SelectItem::Star => {
                out.extend(access.readable_columns().into_iter().map(Output::column))
            }
            SelectItem::Column { name, alias, path } => {
                let column = access.readable(name)?;
                out.push(Output::path(column, path, alias.as_deref())?);
            }
            // Embeds are read separately (see `load`).
            SelectItem::Embed { .. } => {}
        }
    }
    Ok(out)
}

/// ` WHERE <filters> AND <the access decision>` on the table aliased `t0`.
pub(crate) fn where_clause(
    mut sql: StatementBuilder<Undecided>,
    access: &Access<'_>,
    request: &Request,
) -> Result<StatementBuilder<Decided>, RestError> {
    sql.push(" WHERE (1 = 1)");
    for filter in &request.filters {
        sql.push(" AND ");
        sql.filter(filter, (&access.table.name, "t0"), &|name| {
            access.readable(name)
        })?;
    }
    Ok(sql.and_decision(access.using(), "t0", None))
}

pub(crate) fn row_object(outputs: &[Output<'_>], values: &[Value]) -> Json {
    let mut object = Map::with_capacity(outputs.len());
    for (output, value) in outputs.iter().zip(values) {
        object.insert(output.key.clone(), to_json(output.ty(), value));
    }
    Json::Object(object)
}

/// What a read returns, each with its JSON key.
type Selected<'a> = Vec<Output<'a>>;

/// The SELECT for a read, with the columns it returns and the offset it starts at.
/// `hidden` columns follow the selected ones (join keys for embeds); `within`
/// restricts the rows to a column's values (an embed's link to its parents).
#[allow(clippy::too_many_arguments)]
fn statement<'a>(
    rest: &Rest,
    dialect: gatehouse_core::Dialect,
    access: &'a Access<'_>,
    request: &Request,
    options: ReadOptions,
    hidden: &[&Column],
    within: Option<(&Column, &[Value])>,
    links: &[embed::Link<'_>],
) -> Result<(Statement, Selected<'a>, u64), RestError> {
    let columns = selected(access, &request.select)?;
    let mut sql = StatementBuilder::new(dialect);
    sql.push("SELECT ");
    let hidden = hidden.iter().map(|column| Output::column(column));
    for (i, output) in columns.iter().cloned().chain(hidden).enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.output_of(Some("t0"), &output)?;
    }
    sql.push(" FROM ")
        .raw(&access.table.name.quoted())
        .push(" AS \"t0\"");
    let mut sql = where_clause(sql, access, request)?;
    if let Some((column, values)) = within {
        sql.push(" AND ").column("t0", &column.name).push(" IN (");
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.param(value.clone(), Some(column.ty));
        }
        sql.push(")");
    }
    if !request.order.is_empty() {
        sql.push(" ORDER BY ");
        for (i, term) in request.order.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            match term.column.split_once('(') {
                None => {
                    let column = access.readable(&term.column)?;
                    orderable(column, &term.path)?;
                    sql.field(Some("t0"), column, &term.path)?;
                }
                Some((relation, inner)) => {
                    let column = inner.strip_suffix(')').ok_or_else(|| {
                        RestError::Relationship(format!("order by an embed is {relation}(column)"))
                    })?;
                    let target = (relation, column, term.path.as_slice());
                    order_by_embedded(&mut sql, rest, access.caller, links, target)?;
                }
            }
            sql.push(if term.descending { " DESC" } else { " ASC" });
            match term.nulls_first {
                Some(true) => sql.push(" NULLS FIRST"),
                Some(false) => sql.push(" NULLS LAST"),
                None => &mut sql,
            };
        }
    }
    let (range_offset, range_limit) = match options.range {
        Some((first, last)) => (Some(first), last.map(|last| last.saturating_sub(first) + 1)),
        None => (None, None),
    };
    let offset = request.offset.or(range_offset).unwrap_or(0);
    // Embedded rows are bounded too; one more than allowed tells that it overflowed.
    let cap = if within.is_some() {
        rest.settings.max_embedded_rows as u64 + 1
    } else {
        rest.settings.max_rows
    };
    let limit = [request.limit, range_limit, Some(cap)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(cap);
    // The limit is written as a number, never bound: SQLite plans with a bound
    // LIMIT's value, so it re-prepared such a statement on every run (a fifth of a
    // point read's time). It is a u64 computed here, never request text.
    sql.push(" LIMIT ").number(limit);
    sql.push(" OFFSET ");
    sql.param(
        Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX)),
        Some(gatehouse_schema::ColumnType::Bigint),
    );
    Ok((sql.finish(), columns, offset))
}

/// The junction's rows for a many-to-many embed, each with the far-side row it
/// leads to embedded as [`embed::FAR_SIDE`] (under that table's own policy);
/// the embed's filters and order apply to the far side.
fn through_junction(link: &mut embed::Link<'_>, target: &Table, to_target: &Column) -> Request {
    let far_side = SelectItem::Embed {
        relation: target.name.to_string(),
        alias: Some(embed::FAR_SIDE.to_owned()),
        hint: Some(to_target.name.to_string()),
        inner: false,
        items: link.items.to_vec(),
    };
    let mut embedded: Vec<(String, Paging)> = std::mem::take(&mut link.filters)
        .into_iter()
        .map(|filter| (embed::FAR_SIDE.to_owned(), Paging::Where(filter)))
        .collect();
    embedded.extend(
        std::mem::take(&mut link.nested)
            .into_iter()
            .map(|(path, paging)| (format!("{}.{path}", embed::FAR_SIDE), paging)),
    );
    let order = std::mem::take(&mut link.order)
        .into_iter()
        .map(|term| OrderTerm {
            column: format!("{}({})", embed::FAR_SIDE, term.column),
            ..term
        })
        .collect();
    Request {
        select: vec![far_side],
        order,
        embedded,
        ..Request::default()
    }
}

/// `order=author(name)`: a to-one embed's column, read through a subquery that
/// carries the embedded table's own select policy, so a hidden row sorts as NULL
/// and its value never leaks through the order.
fn order_by_embedded(
    sql: &mut StatementBuilder<Decided>,
    rest: &Rest,
    caller: &Caller,
    links: &[embed::Link<'_>],
    (relation, column, path): (&str, &str, &[JsonStep]),
) -> Result<(), RestError> {
    let link = links
        .iter()
        .find(|link| link.key == relation && !link.many)
        .ok_or_else(|| {
            RestError::Relationship(format!(
                "'{relation}' is not a to-one embed of this select; only those can order the rows"
            ))
        })?;
    let target = rest.access(link.target.name.as_str(), Command::Select, caller)?;
    let column = target.readable(column)?;
    orderable(column, path)?;
    sql.push("(SELECT ");
    sql.field(Some("o0"), column, path)?
        .push(" FROM ")
        .raw(&link.target.name.quoted())
        .push(" AS \"o0\" WHERE ")
        .column("o0", &link.child_column.name)
        .push(" = ")
        .column("t0", &link.parent_column.name)
        .and_also(target.using(), "o0", None)
        .push(")");
    Ok(())
}

/// Rows order by values both databases order alike: JSON, arrays and bytes
/// sort as text on SQLite but by type on PostgreSQL, so they are refused (a
/// JSON value orders by its text: `order=data->>rank`).
fn orderable(column: &Column, path: &[JsonStep]) -> Result<(), RestError> {
    match path_type(column, path) {
        ColumnType::Jsonb | ColumnType::Array(_) | ColumnType::Bytea => Err(RestError::InvalidValue {
            column: column.name.to_string(),
            message: "JSON, array and bytea values cannot order rows; order by a JSON value's text with ->>".into(),
        }),
        _ => Ok(()),
    }
}

/// The plan the database would follow for this read.
pub(crate) async fn plan(
    rest: &Rest,
    db: &Database,
    caller: &Caller,
    table: &str,
    request: &Request,
) -> Result<Vec<String>, RestError> {
    let access = rest.access(table, Command::Select, caller)?;
    let (statement, _, _) = statement(
        rest,
        db.dialect(),
        &access,
        request,
        ReadOptions::default(),
        &[],
        None,
        &[],
    )?;
    Ok(db.explain(statement).await?)
}

/// One level of a read: its rows as JSON objects (embeds attached), and per row
/// the values of the hidden join columns, the link to the parent last.
struct Level {
    objects: Vec<Map<String, Json>>,
    keys: Vec<Vec<Value>>,
    offset: u64,
    total: Option<u64>,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, RestError>> + Send + 'a>>;

/// Values compare by their debug form: `Value` holds floats, so it is not `Hash`.
fn group_key(value: &Value) -> String {
    format!("{value:?}")
}

fn load<'a>(
    rest: &'a Rest,
    db: Executor<'a>,
    caller: &'a Caller,
    table: &'a str,
    mut request: Request,
    within: Option<(&'a Column, Vec<Value>)>,
    options: ReadOptions,
) -> Boxed<'a, Level> {
    Box::pin(async move {
        let access = rest.access(table, Command::Select, caller)?;
        let mut links = embed::links(&rest.schema, access.table, &request.select)?;
        request.filters = embed::distribute(std::mem::take(&mut request.filters), &mut links)?;
        embed::page(std::mem::take(&mut request.embedded), &mut links)?;
        let mut hidden: Vec<&Column> = links.iter().map(|link| link.parent_column).collect();
        if let Some((column, _)) = &within {
            hidden.push(column);
        }
        let (statement, columns, offset) = statement(
            rest,
            db.dialect(),
            &access,
            &request,
            options,
            &hidden,
            within
                .as_ref()
                .map(|(column, values)| (*column, values.as_slice())),
            &links,
        )?;
        let rows = db.query(statement).await?;
        if within.is_some() && rows.len() > rest.settings.max_embedded_rows {
            return Err(RestError::Body(format!(
                "an embed would return more than {} rows; page the parent rows",
                rest.settings.max_embedded_rows
            )));
        }
        let visible = columns.len();
        let mut objects: Vec<Map<String, Json>> = rows
            .iter()
            .map(|row| match row_object(&columns, &row.0[..visible]) {
                Json::Object(object) => object,
                _ => Map::new(),
            })
            .collect();
        let mut keys: Vec<Vec<Value>> = rows.iter().map(|row| row.0[visible..].to_vec()).collect();
        let mut keep = vec![true; objects.len()];
        for (index, link) in links.iter_mut().enumerate() {
            let mut wanted: Vec<Value> = Vec::new();
            for key in &keys {
                if key[index] != Value::Null && !wanted.contains(&key[index]) {
                    wanted.push(key[index].clone());
                }
            }
            let child = match link.through {
                None => Request {
                    select: link.items.to_vec(),
                    filters: std::mem::take(&mut link.filters),
                    order: std::mem::take(&mut link.order),
                    embedded: std::mem::take(&mut link.nested),
                    ..Request::default()
                },
                Some((target, to_target)) => through_junction(link, target, to_target),
            };
            let children = if wanted.is_empty() {
                Level {
                    objects: vec![],
                    keys: vec![],
                    offset: 0,
                    total: None,
                }
            } else {
                load(
                    rest,
                    db,
                    caller,
                    link.target.name.as_str(),
                    child,
                    Some((link.child_column, wanted)),
                    ReadOptions::default(),
                )
                .await?
            };
            let mut groups: HashMap<String, Vec<Json>> = HashMap::new();
            for (mut object, key) in children.objects.into_iter().zip(children.keys) {
                // Through a junction, the row shown is the one its row leads to
                // (none where that row's policy hides it).
                let shown = match link.through {
                    None => Json::Object(object),
                    Some(_) => match object.remove(embed::FAR_SIDE) {
                        Some(Json::Null) | None => continue,
                        Some(far) => far,
                    },
                };
                if let Some(parent) = key.last() {
                    groups.entry(group_key(parent)).or_default().push(shown);
                }
            }
            // Children arrive in the embed's order, so paging per parent is a slice.
            let skip = usize::try_from(link.offset).unwrap_or(usize::MAX);
            let take = link.limit.map_or(usize::MAX, |limit| {
                usize::try_from(limit).unwrap_or(usize::MAX)
            });
            for group in groups.values_mut() {
                *group = std::mem::take(group)
                    .into_iter()
                    .skip(skip)
                    .take(take)
                    .collect();
            }
            for (row, object) in objects.iter_mut().enumerate() {
                let matched = groups
                    .get(&group_key(&keys[row][index]))
                    .cloned()
                    .unwrap_or_default();
                if link.inner && matched.is_empty() {
                    keep[row] = false;
                }
                let value = if link.many {
                    Json::Array(matched)
                } else {
                    matched.into_iter().next().unwrap_or(Json::Null)
                };
                object.insert(link.key.clone(), value);
            }
        }
        let mut kept = keep.iter();
        objects.retain(|_| *kept.next().unwrap_or(&true));
        let mut kept = keep.iter();
        keys.retain(|_| *kept.next().unwrap_or(&true));

        let total = match (options.count, &within) {
            (Some(Count::Exact), None) => {
                let mut count = StatementBuilder::new(db.dialect());
                count
                    .push("SELECT CAST(COUNT(*) AS BIGINT) FROM ")
                    .raw(&access.table.name.quoted())
                    .push(" AS \"t0\"");
                let count = where_clause(count, &access, &request)?;
                let rows = db.query(count.finish()).await?;
                Some(
                    rows.first()
                        .map_or(Ok(0), |row| row.integer(0))?
                        .unsigned_abs(),
                )
            }
            _ => None,
        };
        Ok(Level {
            objects,
            keys,
            offset,
            total,
        })
    })
}

pub(crate) async fn run(
    rest: &Rest,
    db: Executor<'_>,
    caller: &Caller,
    table: &str,
    request: &Request,
    options: ReadOptions,
) -> Result<ReadResult, RestError> {
    let level = load(rest, db, caller, table, request.clone(), None, options).await?;
    Ok(ReadResult {
        rows: level.objects.into_iter().map(Json::Object).collect(),
        offset: level.offset,
        total: level.total,
    })
}
