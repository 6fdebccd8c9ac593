//! Filters: `col=not.eq.5`, `col=in.(1,2,"a,b")`, `or=(a.eq.1,and(b.gt.2,c.is.null))`.

use crate::path::{JsonStep, field};
use crate::{MAX_ITEMS, MAX_NESTING, QueryError, invalid};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    Is,
    In,
    /// Contains (`@>`), for jsonb.
    Cs,
    /// Contained in (`<@`), for jsonb.
    Cd,
    /// Overlaps (`&&`): an element in common, for arrays.
    Ov,
    /// Full-text search: `fts` (`to_tsquery`), `plfts` (`plainto_tsquery`),
    /// `phfts` (`phraseto_tsquery`), `wfts` (`websearch_to_tsquery`).
    Fts,
    Plfts,
    Phfts,
    Wfts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// As written; typed against the column later. In `like` and `ilike`, `*` is
    /// already turned into `%`.
    Value(String),
    List(Vec<String>),
    Null,
    True,
    False,
    /// A full-text query, with the language in `fts(english).…` if given.
    Search {
        language: Option<String>,
        query: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Leaf {
        column: String,
        /// Into a JSON column: `address->>city=eq.Paris`.
        path: Vec<JsonStep>,
        negated: bool,
        op: Op,
        operand: Operand,
    },
    All {
        negated: bool,
        items: Vec<Filter>,
    },
    Any {
        negated: bool,
        items: Vec<Filter>,
    },
}

fn op(name: &str) -> Option<Op> {
    Some(match name {
        "eq" => Op::Eq,
        "neq" => Op::Neq,
        "gt" => Op::Gt,
        "gte" => Op::Gte,
        "lt" => Op::Lt,
        "lte" => Op::Lte,
        "like" => Op::Like,
        "ilike" => Op::Ilike,
        "is" => Op::Is,
        "in" => Op::In,
        "cs" => Op::Cs,
        "cd" => Op::Cd,
        "ov" => Op::Ov,
        "fts" => Op::Fts,
        "plfts" => Op::Plfts,
        "phfts" => Op::Phfts,
        "wfts" => Op::Wfts,
        _ => return None,
    })
}

/// `[not.]op.value` for `column`.
pub fn leaf(column: &str, expression: &str) -> Result<Filter, QueryError> {
    if column.is_empty() {
        return Err(invalid("filter", "a filter needs a column name"));
    }
    let (negated, rest) = match expression.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, expression),
    };
    let (name, value) = rest
        .split_once('.')
        .ok_or_else(|| invalid(column, "expected operator.value, such as eq.5"))?;
    // `fts(english)`: the search language travels with the operator.
    let (name, language) = match name.split_once('(') {
        Some((name, rest)) => {
            let language = rest
                .strip_suffix(')')
                .filter(|language| !language.is_empty())
                .ok_or_else(|| invalid(column, "expected a language: fts(english).query"))?;
            (name, Some(language.to_owned()))
        }
        None => (name, None),
    };
    let op = op(name).ok_or_else(|| invalid(column, format!("unknown operator {name:?}")))?;
    let searching = matches!(op, Op::Fts | Op::Plfts | Op::Phfts | Op::Wfts);
    if language.is_some() && !searching {
        return Err(invalid(column, format!("{name} takes no language")));
    }
    let operand = match op {
        _ if searching => Operand::Search {
            language,
            query: value.to_owned(),
        },
        Op::Is => match value.to_ascii_lowercase().as_str() {
            "null" => Operand::Null,
            "true" => Operand::True,
            "false" => Operand::False,
            _ => return Err(invalid(column, "is takes null, true or false")),
        },
        Op::In => {
            let inner = value
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| invalid(column, "in takes a list: in.(a,b)"))?;
            let list = split_top_level(inner, column)?
                .into_iter()
                .map(|item| unquote(item.trim()))
                .collect::<Vec<_>>();
            if list.len() > MAX_ITEMS {
                return Err(invalid(column, "the in list is too long"));
            }
            Operand::List(list)
        }
        Op::Like | Op::Ilike => Operand::Value(value.replace('*', "%")),
        _ => Operand::Value(unquote(value)),
    };
    let (column, path) = field(column, column)?;
    Ok(Filter::Leaf {
        column,
        path,
        negated,
        op,
        operand,
    })
}

/// `or=(…)`, `and=(…)`, `not.or=(…)`, `not.and=(…)`.
pub fn logical(key: &str, value: &str) -> Result<Filter, QueryError> {
    group(key, value, 0)
}

fn group(key: &str, value: &str, depth: usize) -> Result<Filter, QueryError> {
    if depth > MAX_NESTING {
        return Err(invalid(key, "conditions nest too deeply"));
    }
    let (negated, kind) = match key.strip_prefix("not.") {
        Some(kind) => (true, kind),
        None => (false, key),
    };
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| invalid(key, "expected a parenthesised list: or=(a.eq.1,b.eq.2)"))?;
    let parts = split_top_level(inner, key)?;
    if parts.len() > MAX_ITEMS {
        return Err(invalid(key, "too many conditions"));
    }
    let items = parts
        .into_iter()
        .map(|part| {
            let part = part.trim();
            for nested in ["and", "or", "not.and", "not.or"] {
                if let Some(rest) = part.strip_prefix(nested)
                    && rest.starts_with('(')
                {
                    return group(nested, rest, depth + 1);
                }
            }
            let (negated, rest) = match part.strip_prefix("not.") {
                Some(rest) => (true, rest),
                None => (false, part),
            };
            let (column, expression) = rest.split_once('.').ok_or_else(|| {
                invalid(key, format!("expected column.operator.value, not {part:?}"))
            })?;
            let expression = if negated {
                format!("not.{expression}")
            } else {
                expression.to_owned()
            };
            leaf(column, &expression)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match kind {
        "or" => Filter::Any { negated, items },
        _ => Filter::All { negated, items },
    })
}

/// Splits on commas outside parentheses and double quotes.
fn split_top_level<'a>(text: &'a str, param: &str) -> Result<Vec<&'a str>, QueryError> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut start) = (0usize, false, false, 0);
    for (at, ch) in text.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| invalid(param, "unbalanced parentheses"))?
            }
            ',' if !quoted && depth == 0 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth != 0 || quoted {
        return Err(invalid(param, "unbalanced parentheses or quotes"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// `"a,b"` → `a,b`, with `\"` and `\\` unescaped; bare values stay as they are.
pub(crate) fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(ch) = chars.next() {
                if ch == '\\' {
                    out.extend(chars.next());
                } else {
                    out.push(ch);
                }
            }
            out
        }
        None => value.to_owned(),
    }
}
