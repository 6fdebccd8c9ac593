//! PostgREST's query grammar over the rows a function returned
//! (`/rest/v1/rpc/<name>?select=…&col=eq.…&order=…&limit=…`), as PostgREST
//! applies it to a set-returning function. The rows are JSON objects without
//! declared types, so each comparison goes by the row value's own JSON type:
//! a number compares as a number, a string as text (byte order, as the C
//! collation), a boolean as a boolean; a missing or null value is SQL's
//! unknown, which no filter passes and `not` does not turn into true.

use std::cmp::Ordering;

use gatehouse_query::{Filter, JsonKey, JsonStep, Op, Operand, OrderTerm, Request, SelectItem};
use gatehouse_search::{Document, Language, Query, Syntax};
use serde_json::{Map, Value as Json};

/// Why the grammar cannot apply to these rows: the client's to fix (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(String);

/// The rows a call gives back after the request's filters, order, paging and
/// select list, and how many passed the filters before paging.
#[derive(Debug, Clone, PartialEq)]
pub struct Shaped {
    pub rows: Vec<Json>,
    pub total: usize,
    pub offset: usize,
}

/// Whether the request asks anything of the rows at all: a function whose
/// result is not a set of rows may only be called without.
pub fn asks_anything(request: &Request) -> bool {
    !(request.select.is_empty()
        && request.filters.is_empty()
        && request.order.is_empty()
        && request.limit.is_none()
        && request.offset.is_none())
}

/// Applies `request` to a function's result, which must then be an array of
/// objects.
pub fn shape(result: Json, request: &Request) -> Result<Shaped, ShapeError> {
    if let Some((path, _)) = request.embedded.first() {
        return Err(ShapeError(format!(
            "'{path}' modifies an embedded resource; a function's rows have none"
        )));
    }
    let Json::Array(rows) = result else {
        return Err(ShapeError(
            "filters, order, paging and select apply only to a function returning a list of objects"
                .into(),
        ));
    };
    let mut objects = Vec::with_capacity(rows.len());
    for row in rows {
        match row {
            Json::Object(object) => objects.push(object),
            _ => {
                return Err(ShapeError(
                    "the function returned a list whose items are not all objects".into(),
                ));
            }
        }
    }
    let mut kept = Vec::with_capacity(objects.len());
    for object in objects {
        if passes_all(&request.filters, &object)? {
            kept.push(object);
        }
    }
    if !request.order.is_empty() {
        let mut failed = None;
        kept.sort_by(|a, b| {
            order(&request.order, a, b).unwrap_or_else(|error| {
                failed.get_or_insert(error);
                Ordering::Equal
            })
        });
        if let Some(error) = failed {
            return Err(error);
        }
    }
    let total = kept.len();
    let offset = request
        .offset
        .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let limit = request
        .limit
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let rows = kept
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|object| selected(&request.select, object))
        .collect::<Result<_, _>>()?;
    Ok(Shaped {
        rows,
        total,
        offset,
    })
}

/// The select list applied to one row: `*`, columns, aliases and JSON paths.
fn selected(items: &[SelectItem], object: Map<String, Json>) -> Result<Json, ShapeError> {
    if items.is_empty() || items == [SelectItem::Star] {
        return Ok(Json::Object(object));
    }
    let mut out = Map::with_capacity(items.len());
    for item in items {
        match item {
            SelectItem::Star => out.extend(object.clone()),
            SelectItem::Column { name, alias, path } => {
                let key = alias.clone().unwrap_or_else(|| {
                    path.last()
                        .map_or_else(|| name.clone(), |step| step.key.name())
                });
                out.insert(key, value(&object, name, path).unwrap_or(Json::Null));
            }
            SelectItem::Embed { relation, .. } => {
                return Err(ShapeError(format!(
                    "'{relation}' cannot be embedded: a function's rows have no relations"
                )));
            }
        }
    }
    Ok(Json::Object(out))
}

/// The value a column (and path) names in a row; `None` when absent.
fn value(object: &Map<String, Json>, column: &str, path: &[JsonStep]) -> Option<Json> {
    let mut at = object.get(column)?;
    for step in path {
        at = match (&step.key, at) {
            (JsonKey::Field(key), Json::Object(members)) => members.get(key)?,
            (JsonKey::Index(index), Json::Array(items)) => {
                let len = i64::try_from(items.len()).ok()?;
                let index = if *index < 0 { len + index } else { *index };
                items.get(usize::try_from(index).ok()?)?
            }
            _ => return None,
        };
    }
    let as_text = path.last().is_some_and(|step| step.as_text);
    Some(match at {
        Json::String(_) | Json::Null => at.clone(),
        other if as_text => Json::String(other.to_string()),
        other => other.clone(),
    })
}

fn passes_all(filters: &[Filter], object: &Map<String, Json>) -> Result<bool, ShapeError> {
    for filter in filters {
        if truth(filter, object)? != Some(true) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A filter's three-valued truth on one row, as SQL's.
fn truth(filter: &Filter, object: &Map<String, Json>) -> Result<Option<bool>, ShapeError> {
    let (outcome, negated) = match filter {
        Filter::Leaf {
            column,
            path,
            negated,
            op,
            operand,
        } => (leaf(value(object, column, path), *op, operand)?, *negated),
        Filter::All { negated, items } => {
            let mut all = Some(true);
            for item in items {
                all = match (all, truth(item, object)?) {
                    (_, Some(false)) | (Some(false), _) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                };
            }
            (all, *negated)
        }
        Filter::Any { negated, items } => {
            let mut any = Some(false);
            for item in items {
                any = match (any, truth(item, object)?) {
                    (_, Some(true)) | (Some(true), _) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                };
            }
            (any, *negated)
        }
    };
    Ok(if negated {
        outcome.map(|b| !b)
    } else {
        outcome
    })
}

fn leaf(value: Option<Json>, op: Op, operand: &Operand) -> Result<Option<bool>, ShapeError> {
    let value = value.unwrap_or(Json::Null);
    if op == Op::Is {
        return Ok(Some(match operand {
            Operand::Null => value.is_null(),
            Operand::True => value == Json::Bool(true),
            Operand::False => value == Json::Bool(false),
            _ => return Err(ShapeError("is takes null, true or false".into())),
        }));
    }
    if value.is_null() {
        return Ok(None);
    }
    let composite = value.is_array() || value.is_object();
    if composite && matches!(op, Op::Gt | Op::Gte | Op::Lt | Op::Lte) {
        return Err(ShapeError(
            "lists and objects compare only for equality".into(),
        ));
    }
    let text = |operand: &Operand| match operand {
        Operand::Value(text) => Ok(text.clone()),
        _ => Err(ShapeError(format!("{op:?} takes a value").to_lowercase())),
    };
    Ok(Some(match op {
        Op::Eq => compare(&value, &text(operand)?)? == Ordering::Equal,
        Op::Neq => compare(&value, &text(operand)?)? != Ordering::Equal,
        Op::Gt => compare(&value, &text(operand)?)? == Ordering::Greater,
        Op::Gte => compare(&value, &text(operand)?)? != Ordering::Less,
        Op::Lt => compare(&value, &text(operand)?)? == Ordering::Less,
        Op::Lte => compare(&value, &text(operand)?)? != Ordering::Greater,
        Op::Like | Op::Ilike => {
            let Json::String(subject) = &value else {
                return Err(ShapeError("like and ilike compare text values".into()));
            };
            let pattern = text(operand)?;
            if op == Op::Ilike {
                like(&subject.to_lowercase(), &pattern.to_lowercase())
            } else {
                like(subject, &pattern)
            }
        }
        Op::In => {
            let Operand::List(items) = operand else {
                return Err(ShapeError("in takes a list: in.(a,b)".into()));
            };
            let mut found = false;
            for item in items {
                found |= compare(&value, item)? == Ordering::Equal;
            }
            found
        }
        Op::Cs | Op::Cd | Op::Ov => {
            let other = collection(&text(operand)?)?;
            match op {
                Op::Cs => gatehouse_db::json::contains(&value, &other),
                Op::Cd => gatehouse_db::json::contains(&other, &value),
                _ => gatehouse_db::json::overlaps(&value, &other),
            }
        }
        Op::Fts | Op::Plfts | Op::Phfts | Op::Wfts => {
            let Operand::Search { language, query } = operand else {
                return Err(ShapeError("a text search takes a query".into()));
            };
            let Json::String(subject) = &value else {
                return Err(ShapeError("a text search applies to text values".into()));
            };
            let language = match language {
                Some(name) => {
                    Language::from_name(name).map_err(|error| ShapeError(error.to_string()))?
                }
                None => Language::DEFAULT,
            };
            let syntax = match op {
                Op::Fts => Syntax::Operators,
                Op::Plfts => Syntax::Plain,
                Op::Phfts => Syntax::Phrase,
                _ => Syntax::WebSearch,
            };
            let query = Query::parse(syntax, language, query)
                .map_err(|error| ShapeError(error.to_string()))?;
            query.matches(&Document::new(language, subject))
        }
        Op::Is => unreachable!("answered above"),
    }))
}

/// A row's value against a filter's text, by the value's type.
fn compare(value: &Json, operand: &str) -> Result<Ordering, ShapeError> {
    match value {
        Json::Number(number) => {
            let given: f64 = operand.trim().parse().map_err(|_| {
                ShapeError(format!(
                    "invalid input syntax for type numeric: \"{operand}\""
                ))
            })?;
            let have = number.as_f64().unwrap_or(f64::NAN);
            have.partial_cmp(&given)
                .ok_or_else(|| ShapeError("numbers that do not compare".into()))
        }
        Json::String(text) => Ok(text.as_str().cmp(operand)),
        Json::Bool(flag) => match operand {
            "true" | "t" => Ok(flag.cmp(&true)),
            "false" | "f" => Ok(flag.cmp(&false)),
            _ => Err(ShapeError(format!(
                "invalid input syntax for type boolean: \"{operand}\""
            ))),
        },
        // An array or object: equal or not (`ordered` refused these above).
        other => {
            let given: Json = serde_json::from_str(operand).map_err(|_| {
                ShapeError(format!("invalid input syntax for type json: \"{operand}\""))
            })?;
            Ok(if gatehouse_db::json::same(other, &given) {
                Ordering::Equal
            } else {
                Ordering::Less
            })
        }
    }
}

/// `cs`/`cd`/`ov`'s operand: JSON, or an array literal `{a,b}` of texts.
fn collection(text: &str) -> Result<Json, ShapeError> {
    if let Ok(json) = serde_json::from_str::<Json>(text) {
        return Ok(json);
    }
    let inner = text
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| ShapeError(format!("not JSON or an array literal: \"{text}\"")))?;
    let items = if inner.is_empty() {
        Vec::new()
    } else {
        inner
            .split(',')
            .map(|item| {
                let item = item.trim().trim_matches('"');
                // A number in the literal compares as a number.
                serde_json::from_str::<serde_json::Number>(item)
                    .map_or_else(|_| Json::String(item.to_owned()), Json::Number)
            })
            .collect()
    };
    Ok(Json::Array(items))
}

/// SQL's LIKE: `%` any run, `_` any one character, `\` escapes the next.
fn like(subject: &str, pattern: &str) -> bool {
    let subject: Vec<char> = subject.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    // Positions to resume from at the last `%`, for linear backtracking.
    let (mut s, mut p) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while s < subject.len() {
        match pattern.get(p) {
            Some('%') => {
                resume = Some((p + 1, s));
                p += 1;
            }
            Some('\\') if pattern.get(p + 1) == Some(&subject[s]) => {
                s += 1;
                p += 2;
            }
            Some('_') => {
                s += 1;
                p += 1;
            }
            Some(c) if *c != '\\' && *c == subject[s] => {
                s += 1;
                p += 1;
            }
            _ => match resume {
                Some((after, from)) => {
                    p = after;
                    s = from + 1;
                    resume = Some((after, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '%')
}

/// Two rows by the order terms: nulls last ascending and first descending,
/// as PostgreSQL has it unless told.
fn order(
    terms: &[OrderTerm],
    a: &Map<String, Json>,
    b: &Map<String, Json>,
) -> Result<Ordering, ShapeError> {
    for term in terms {
        let (x, y) = (
            value(a, &term.column, &term.path).unwrap_or(Json::Null),
            value(b, &term.column, &term.path).unwrap_or(Json::Null),
        );
        let nulls_first = term.nulls_first.unwrap_or(term.descending);
        let ordering = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let ordering = rank(&x, &y)?;
                if term.descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            }
        };
        if ordering != Ordering::Equal {
            return Ok(ordering);
        }
    }
    Ok(Ordering::Equal)
}

fn rank(x: &Json, y: &Json) -> Result<Ordering, ShapeError> {
    match (x, y) {
        (Json::Number(a), Json::Number(b)) => Ok(a
            .as_f64()
            .unwrap_or(f64::NAN)
            .partial_cmp(&b.as_f64().unwrap_or(f64::NAN))
            .unwrap_or(Ordering::Equal)),
        (Json::String(a), Json::String(b)) => Ok(a.cmp(b)),
        (Json::Bool(a), Json::Bool(b)) => Ok(a.cmp(b)),
        _ => Err(ShapeError(
            "rows order only by numbers, text or booleans of one type per column".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(query: &str, rows: Json) -> Result<Shaped, ShapeError> {
        let request = gatehouse_query::parse(&gatehouse_query::written_pairs(query)).unwrap();
        shape(rows, &request)
    }

    fn rows() -> Json {
        json!([
            {"id": 1, "name": "tea", "price": 450, "tags": ["hot", "drink"], "note": null},
            {"id": 2, "name": "cake", "price": 325, "tags": ["sweet"], "note": "new"},
            {"id": 3, "name": "Teapot", "price": 1999, "tags": [], "note": "the big one"},
        ])
    }

    #[test]
    fn filters_compare_by_the_value_s_own_type() {
        let ids = |query: &str| -> Vec<Json> {
            apply(query, rows())
                .unwrap()
                .rows
                .iter()
                .map(|row| row["id"].clone())
                .collect()
        };
        assert_eq!(ids("price=gt.400"), [json!(1), json!(3)]);
        assert_eq!(ids("price=lte.450&name=neq.tea"), [json!(2)]);
        assert_eq!(ids("name=like.t*"), [json!(1)]);
        assert_eq!(ids("name=ilike.t*"), [json!(1), json!(3)]);
        assert_eq!(ids("id=in.(1,3)"), [json!(1), json!(3)]);
        assert_eq!(ids("tags=cs.{hot}"), [json!(1)]);
        assert_eq!(ids("tags=ov.{sweet,hot}"), [json!(1), json!(2)]);
        assert_eq!(ids("note=is.null"), [json!(1)]);
        // NULL is unknown: neither a match nor, negated, a non-match.
        assert_eq!(ids("note=not.eq.new"), [json!(3)]);
        assert_eq!(ids("or=(price.lt.400,name.eq.tea)"), [json!(1), json!(2)]);
        assert_eq!(ids("note=fts.big"), [json!(3)]);
        assert!(apply("price=gt.cheap", rows()).is_err());
    }

    #[test]
    fn order_paging_count_and_select_as_a_table_read() {
        let shaped = apply(
            "select=id,label:name&order=price.desc&limit=2&offset=1",
            rows(),
        )
        .unwrap();
        assert_eq!(
            shaped.rows,
            [
                json!({"id": 1, "label": "tea"}),
                json!({"id": 2, "label": "cake"})
            ]
        );
        assert_eq!((shaped.total, shaped.offset), (3, 1));
        let nulls = apply("select=id&order=note.asc", rows()).unwrap();
        assert_eq!(
            nulls.rows,
            [json!({"id": 2}), json!({"id": 3}), json!({"id": 1})]
        );
        assert!(apply("select=id,items(*)", rows()).is_err());
        assert!(apply("id=eq.1", json!({"id": 1})).is_err());
    }

    #[test]
    fn like_matches_as_sql_does() {
        assert!(like("teapot", "tea%"));
        assert!(like("teapot", "%p_t"));
        assert!(like("50%", "50\\%"));
        assert!(!like("500", "50\\%"));
        assert!(like("", "%"));
        assert!(!like("tea", "t_"));
        assert!(like("aXbXc", "%X%X%"));
    }
}
