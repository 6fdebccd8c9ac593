//! GET: select, filter, order and page, with the policy's `using` in the WHERE.

use gatehouse_db::{Database, Statement, Value};
use gatehouse_policy::Command;
use gatehouse_query::{Request, SelectItem};
use gatehouse_schema::Column;
use serde_json::{Map, Value as Json};

use crate::sql::{Scope, Sql};
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

/// The columns a select list names, each with the key it gets in the JSON.
pub(crate) fn selected<'a>(
    access: &'a Access<'_>,
    select: &[SelectItem],
) -> Result<Vec<(&'a Column, String)>, RestError> {
    if select.is_empty() {
        return Ok(access
            .readable_columns()
            .into_iter()
            .map(|c| (c, c.name.to_string()))
            .collect());
    }
    let mut out = Vec::new();
    for item in select {
        match item {
            SelectItem::Star => out.extend(
                access
                    .readable_columns()
                    .into_iter()
                    .map(|c| (c, c.name.to_string())),
            ),
            SelectItem::Column { name, alias } => {
                let column = access.readable(name)?;
                out.push((column, alias.clone().unwrap_or_else(|| name.clone())));
            }
            SelectItem::Embed { relation, .. } => {
                return Err(RestError::Unsupported(format!(
                    "embedding {relation} is not supported yet; select its rows with a second request"
                )));
            }
        }
    }
    Ok(out)
}

/// ` WHERE <filters> AND <policy using>`; returns whether the request filtered.
pub(crate) fn where_clause(
    sql: &mut Sql,
    access: &Access<'_>,
    request: &Request,
    caller: &Caller,
    command: Command,
) -> Result<bool, RestError> {
    sql.push(" WHERE (1 = 1)");
    for filter in &request.filters {
        sql.push(" AND ");
        sql.filter(filter, "t0", &|name| access.readable(name))?;
    }
    if let (Some(role), Some(policies)) = (access.role, access.policies)
        && let Some(using) = policies.using(command, role)
    {
        sql.push(" AND ");
        sql.condition(
            &using,
            caller,
            &mut vec![Scope {
                alias: "t0".into(),
                new_values: None,
            }],
        );
    }
    Ok(!request.filters.is_empty())
}

pub(crate) fn row_object(columns: &[(&Column, String)], values: &[Value]) -> Json {
    let mut object = Map::with_capacity(columns.len());
    for ((column, key), value) in columns.iter().zip(values) {
        object.insert(key.clone(), to_json(column.ty, value));
    }
    Json::Object(object)
}

/// The columns a read returns, each with its JSON key.
type Selected<'a> = Vec<(&'a Column, String)>;

/// The SELECT for a read, with the columns it returns and the offset it starts at.
fn statement<'a>(
    rest: &Rest,
    dialect: gatehouse_core::Dialect,
    access: &'a Access<'_>,
    caller: &Caller,
    request: &Request,
    options: ReadOptions,
) -> Result<(Statement, Selected<'a>, u64), RestError> {
    let columns = selected(access, &request.select)?;
    let name = access.table.name.quoted();
    let mut sql = Sql::new(dialect);
    sql.push("SELECT ");
    for (i, (column, _)) in columns.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.output(Some("t0"), column);
    }
    sql.push(&format!(" FROM {name} AS \"t0\""));
    where_clause(&mut sql, access, request, caller, Command::Select)?;
    if !request.order.is_empty() {
        sql.push(" ORDER BY ");
        for (i, term) in request.order.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            let column = access.readable(&term.column)?;
            sql.column("t0", &column.name);
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
    let limit = [request.limit, range_limit, Some(rest.settings.max_rows)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.settings.max_rows);
    sql.push(" LIMIT ");
    sql.param(
        Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        Some(gatehouse_schema::ColumnType::Bigint),
    );
    sql.push(" OFFSET ");
    sql.param(
        Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX)),
        Some(gatehouse_schema::ColumnType::Bigint),
    );
    Ok((sql.finish(), columns, offset))
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
        caller,
        request,
        ReadOptions::default(),
    )?;
    Ok(db.explain(statement).await?)
}

pub(crate) async fn run(
    rest: &Rest,
    db: &Database,
    caller: &Caller,
    table: &str,
    request: &Request,
    options: ReadOptions,
) -> Result<ReadResult, RestError> {
    let access = rest.access(table, Command::Select, caller)?;
    let (statement, columns, offset) =
        statement(rest, db.dialect(), &access, caller, request, options)?;
    let name = access.table.name.quoted();
    let rows = db.query(statement).await?;

    let total = match options.count {
        None => None,
        Some(Count::Exact) => {
            let mut count = Sql::new(db.dialect());
            count.push(&format!(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM {name} AS \"t0\""
            ));
            where_clause(&mut count, &access, request, caller, Command::Select)?;
            let rows = db.query(count.finish()).await?;
            Some(
                rows.first()
                    .map_or(Ok(0), |row| row.integer(0))?
                    .unsigned_abs(),
            )
        }
    };
    Ok(ReadResult {
        rows: rows
            .iter()
            .map(|row| row_object(&columns, &row.0))
            .collect(),
        offset,
        total,
    })
}
