//! The PostgREST query grammar, parsed into a typed [`Request`]. Names are left
//! as written; the rest service resolves them against the declared schema and
//! the caller's policies, so this crate needs neither.
//!
//! Invariant: parsing is total and bounded. Every input gives a `Request` or a
//! [`QueryError`]; nesting depth, list lengths and value sizes are capped.

mod filter;
mod path;
mod select;

pub use filter::{Filter, Op, Operand};
pub use path::{JsonKey, JsonStep};
pub use select::SelectItem;

/// Limits on what one query string may ask for.
pub const MAX_NESTING: usize = 16;
pub const MAX_ITEMS: usize = 256;
/// The largest `limit` or `offset`: the largest integer every JSON parser reads
/// exactly (2^53 - 1); beyond it a number is a mistake, not a page.
pub const MAX_ROW_NUMBER: u64 = 9_007_199_254_740_991;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("\"{param}\": {message}")]
    Invalid { param: String, message: String },
}

fn invalid(param: &str, message: impl Into<String>) -> QueryError {
    QueryError::Invalid {
        param: param.to_owned(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerm {
    pub column: String,
    /// Into a JSON column: `order=data->>name`.
    pub path: Vec<JsonStep>,
    pub descending: bool,
    /// `None`: the database's default for the direction.
    pub nulls_first: Option<bool>,
}

/// A parsed query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Empty means `*`.
    pub select: Vec<SelectItem>,
    /// All must hold.
    pub filters: Vec<Filter>,
    pub order: Vec<OrderTerm>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    /// `on_conflict=col1,col2` for upserts.
    pub on_conflict: Vec<String>,
    /// `columns=a,b` limiting which body keys an insert uses.
    pub columns: Option<Vec<String>>,
    /// `items.order=…`, `items.limit=…`, `items.offset=…`: paging of embedded
    /// resources, by the embed's path.
    pub embedded: Vec<(String, Paging)>,
}

/// Ordering, paging or a condition applied to one embedded resource, per parent row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    Order(Vec<OrderTerm>),
    Limit(u64),
    Offset(u64),
    /// `items.or=(…)`, `items.and=(…)`: which embedded rows are shown.
    Where(Filter),
}

/// A query string written out by hand (`note=eq.first&order=id`), as the
/// decoded pairs [`parse`] takes: split on `&` and the first `=`, nothing
/// decoded. For fixtures and tests; requests arrive decoded by the edge.
pub fn written_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// Parses decoded query pairs. Unknown parameter names are filters on columns,
/// as in PostgREST.
pub fn parse(pairs: &[(String, String)]) -> Result<Request, QueryError> {
    if pairs.len() > MAX_ITEMS {
        return Err(invalid(
            "query",
            format!("more than {MAX_ITEMS} parameters"),
        ));
    }
    let mut request = Request::default();
    const SINGLE: [&str; 6] = [
        "select",
        "order",
        "limit",
        "offset",
        "on_conflict",
        "columns",
    ];
    for (at, (key, _)) in pairs.iter().enumerate() {
        if SINGLE.contains(&key.as_str()) && pairs[..at].iter().any(|(seen, _)| seen == key) {
            return Err(invalid(key, "given more than once"));
        }
    }
    for (key, value) in pairs {
        match key.as_str() {
            "select" => request.select = select::parse(value)?,
            "order" => request.order = order(value)?,
            "limit" => request.limit = Some(number(key, value)?),
            "offset" => request.offset = Some(number(key, value)?),
            "on_conflict" => request.on_conflict = names(key, value)?,
            "columns" => request.columns = Some(names(key, value)?),
            "or" | "and" | "not.or" | "not.and" => {
                request.filters.push(filter::logical(key, value)?)
            }
            key if key.ends_with(".order")
                || key.ends_with(".limit")
                || key.ends_with(".offset") =>
            {
                let (path, kind) = key.rsplit_once('.').unwrap_or((key, ""));
                let paging = match kind {
                    "order" => Paging::Order(order(value)?),
                    "limit" => Paging::Limit(number(key, value)?),
                    _ => Paging::Offset(number(key, value)?),
                };
                if request.embedded.len() >= MAX_ITEMS {
                    return Err(invalid(key, "too many embedded modifiers"));
                }
                request.embedded.push((path.to_owned(), paging));
            }
            key if key.contains('.') && (key.ends_with(".or") || key.ends_with(".and")) => {
                // `items.or=(…)`, `items.not.and=(…)`: a condition on an embed.
                let (path, kind) = key.rsplit_once('.').unwrap_or((key, ""));
                let (path, kind) = match path.strip_suffix(".not") {
                    Some(path) => (path, format!("not.{kind}")),
                    None => (path, kind.to_owned()),
                };
                if request.embedded.len() >= MAX_ITEMS {
                    return Err(invalid(key, "too many embedded modifiers"));
                }
                let condition = filter::logical(&kind, value)?;
                request
                    .embedded
                    .push((path.to_owned(), Paging::Where(condition)));
            }
            column => request.filters.push(filter::leaf(column, value)?),
        }
    }
    Ok(request)
}

fn number(param: &str, value: &str) -> Result<u64, QueryError> {
    value
        .trim()
        .parse()
        .ok()
        .filter(|number| *number <= MAX_ROW_NUMBER)
        .ok_or_else(|| {
            invalid(
                param,
                format!("{value:?} is not a whole number from 0 to {MAX_ROW_NUMBER}"),
            )
        })
}

fn names(param: &str, value: &str) -> Result<Vec<String>, QueryError> {
    let list: Vec<String> = value
        .split(',')
        .map(|n| filter::unquote(n.trim()))
        .collect();
    if list.len() > MAX_ITEMS || list.iter().any(String::is_empty) {
        return Err(invalid(
            param,
            "expected a comma-separated list of column names",
        ));
    }
    Ok(list)
}

fn order(value: &str) -> Result<Vec<OrderTerm>, QueryError> {
    let terms: Vec<&str> = value.split(',').collect();
    if terms.len() > MAX_ITEMS {
        return Err(invalid("order", "too many terms"));
    }
    terms
        .into_iter()
        .map(|term| {
            let mut parts = term.trim().split('.');
            let (column, path) = path::field("order", parts.next().unwrap_or_default())?;
            if column.is_empty() {
                return Err(invalid(
                    "order",
                    "expected column[.asc|.desc][.nullsfirst|.nullslast]",
                ));
            }
            let mut term = OrderTerm {
                column,
                path,
                descending: false,
                nulls_first: None,
            };
            for modifier in parts {
                match modifier {
                    "asc" => term.descending = false,
                    "desc" => term.descending = true,
                    "nullsfirst" => term.nulls_first = Some(true),
                    "nullslast" => term.nulls_first = Some(false),
                    other => return Err(invalid("order", format!("unknown modifier {other:?}"))),
                }
            }
            Ok(term)
        })
        .collect()
}

#[cfg(test)]
mod tests;
