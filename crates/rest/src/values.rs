//! Values at the edge of the database: text from query strings and JSON from
//! bodies become typed [`Value`]s after validation against the column (type and
//! checks); values read back become JSON. SQLite keeps uuids, times, decimals and
//! JSON as canonical text, so both dialects compare and sort them alike.

use gatehouse_db::Value;
use gatehouse_schema::{Check, Column, ColumnType, Element};
use serde_json::Value as Json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

type Checked = Result<Value, String>;

/// `2026-11-27T03:36:12.5+00:00`: PostgreSQL's JSON form of a UTC timestamp,
/// trailing zeros of the fraction trimmed. It sorts chronologically as text.
pub(crate) fn canonical_time(at: OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    );
    let micros = utc.microsecond();
    if micros > 0 {
        let fraction = format!("{micros:06}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push_str("+00:00");
    text
}

fn parse_time(text: &str) -> Result<String, String> {
    let normalised = text.trim().replacen(' ', "T", 1);
    let with_zone = if normalised.ends_with("+00") || normalised.ends_with("-00") {
        format!("{normalised}:00")
    } else {
        normalised
    };
    OffsetDateTime::parse(&with_zone, &Rfc3339)
        .map(canonical_time)
        .map_err(|_| {
            format!("{text:?} is not a timestamp with a time zone, such as 2026-01-31T12:00:00Z")
        })
}

fn parse_date(text: &str) -> Result<String, String> {
    let invalid = || format!("{text:?} is not a date such as 2026-01-31");
    let mut parts = text.trim().splitn(3, '-');
    let mut next = |width: usize| {
        parts
            .next()
            .filter(|p| p.len() == width && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<i32>().ok())
    };
    let (year, month, day) = (next(4), next(2), next(2));
    let (Some(year), Some(month), Some(day)) = (year, month, day) else {
        return Err(invalid());
    };
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(invalid)?;
    let day = u8::try_from(day).map_err(|_| invalid())?;
    time::Date::from_calendar_date(year, month, day).map_err(|_| invalid())?;
    Ok(format!("{year:04}-{:02}-{day:02}", u8::from(month)))
}

fn parse_decimal(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    let digits = trimmed.strip_prefix('-').unwrap_or(trimmed);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let valid = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && trimmed.len() <= 100;
    if valid {
        Ok(trimmed.to_owned())
    } else {
        Err(format!("{text:?} is not a decimal number"))
    }
}

fn parse_integer(text: &str, ty: ColumnType) -> Checked {
    let number: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    fit_integer(number, ty)
}

fn fit_integer(number: i64, ty: ColumnType) -> Checked {
    if ty == ColumnType::Integer && i32::try_from(number).is_err() {
        return Err(format!("{number} is out of range for an integer column"));
    }
    Ok(Value::Integer(number))
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let hex = text
        .strip_prefix("\\x")
        .ok_or_else(|| "bytea values are hex strings starting with \\x".to_owned())?;
    // Checked first so that the byte slicing below stays on character boundaries.
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not a hex digit".into());
    }
    if hex.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| {
            u8::from_str_radix(&hex[at..at + 2], 16).map_err(|_| "not a hex digit".to_owned())
        })
        .collect()
}

/// A value written in a query string (`id=eq.5`), typed as `ty`.
/// Text as both databases keep it: PostgreSQL refuses the NUL character in
/// text and in JSON strings, so it is refused everywhere (and alike on SQLite).
fn storable(text: &str) -> Result<&str, String> {
    if text.contains('\0') {
        return Err("text cannot hold the NUL character".into());
    }
    Ok(text)
}

/// JSON whose strings and keys are all [`storable`].
fn storable_json(json: &Json) -> Result<&Json, String> {
    match json {
        Json::String(text) => {
            storable(text)?;
        }
        Json::Array(items) => {
            for item in items {
                storable_json(item)?;
            }
        }
        Json::Object(members) => {
            for (key, value) in members {
                storable(key)?;
                storable_json(value)?;
            }
        }
        _ => {}
    }
    Ok(json)
}

pub(crate) fn from_text(ty: ColumnType, text: &str) -> Checked {
    Ok(match ty {
        ColumnType::Text => Value::Text(storable(text)?.to_owned()),
        ColumnType::Integer | ColumnType::Bigint => parse_integer(text, ty)?,
        ColumnType::Numeric => Value::Text(parse_decimal(text)?),
        ColumnType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "t" => Value::Bool(true),
            "false" | "f" => Value::Bool(false),
            _ => return Err(format!("{text:?} is not true or false")),
        },
        ColumnType::Timestamptz => Value::Text(parse_time(text)?),
        ColumnType::Date => Value::Text(parse_date(text)?),
        ColumnType::Uuid => Value::Text(
            uuid::Uuid::parse_str(text.trim())
                .map_err(|_| format!("{text:?} is not a uuid"))?
                .hyphenated()
                .to_string(),
        ),
        ColumnType::Jsonb => {
            let parsed: Json =
                serde_json::from_str(text).map_err(|_| format!("{text:?} is not JSON"))?;
            Value::Text(storable_json(&parsed)?.to_string())
        }
        ColumnType::Bytea => Value::Blob(parse_hex(text)?),
        ColumnType::Array(element) => array_from_literal(element, text)?,
    })
}

/// `{a,"b c",NULL}`, PostgreSQL's array literal (as supabase-js writes arrays
/// in filters), as the JSON array text arrays travel as.
fn array_from_literal(element: Element, text: &str) -> Checked {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| format!("{text:?} is not an array such as {{a,b}}"))?;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let (item, quoted) = if chars.peek() == Some(&'"') {
            chars.next();
            let mut item = String::new();
            loop {
                match chars.next() {
                    Some('\\') => item.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(format!("{text:?} has an unterminated quote")),
                }
            }
            (item, true)
        } else {
            let item: String = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
            (item.trim().to_owned(), false)
        };
        items.push(if !quoted && item.eq_ignore_ascii_case("null") {
            Json::Null
        } else {
            element_json(element, &Json::String(item))?
        });
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(other) => return Err(format!("{text:?} has {other:?} after an element")),
        }
    }
    Ok(Value::Text(Json::Array(items).to_string()))
}

/// One element of an array column, from JSON (a string may carry a number or a
/// uuid), in its canonical JSON form.
fn element_json(element: Element, json: &Json) -> Result<Json, String> {
    let value = match (element, json) {
        (_, Json::Null) => return Ok(Json::Null),
        (Element::Text, Json::String(text)) => return Ok(Json::String(storable(text)?.to_owned())),
        (Element::Integer | Element::Bigint, Json::Number(n)) => fit_integer(
            n.as_i64()
                .ok_or_else(|| format!("{n} is not a whole number"))?,
            element.ty(),
        )?,
        (_, Json::String(text)) => from_text(element.ty(), text)?,
        (_, other) => {
            return Err(format!("{other} is not a valid {element:?} element").to_lowercase());
        }
    };
    Ok(match value {
        Value::Integer(n) => Json::from(n),
        Value::Text(text) => Json::String(text),
        _ => Json::Null,
    })
}

/// A value from a JSON body, typed for the column and checked against its
/// declared constraints. JSON null is SQL NULL, refused for not-null columns.
/// A JSON value for `column` as the column takes it (its type and checks;
/// `patterns` decides its `pattern` checks), or why not.
pub fn from_json(column: &Column, json: &Json, patterns: &dyn Fn(&str) -> bool) -> Checked {
    let value = match (column.ty, json) {
        (_, Json::Null) if column.not_null => return Err("the column is not null".into()),
        (_, Json::Null) => return Ok(Value::Null),
        (ColumnType::Text, Json::String(text)) => Value::Text(storable(text)?.to_owned()),
        (ColumnType::Integer | ColumnType::Bigint, Json::Number(n)) => fit_integer(
            n.as_i64()
                .ok_or_else(|| format!("{n} is not a whole number"))?,
            column.ty,
        )?,
        (ColumnType::Numeric, Json::Number(n)) => Value::Text(parse_decimal(&n.to_string())?),
        (ColumnType::Boolean, Json::Bool(flag)) => Value::Bool(*flag),
        (ColumnType::Jsonb, json) => Value::Text(storable_json(json)?.to_string()),
        (ColumnType::Array(element), Json::Array(items)) => Value::Text(
            Json::Array(
                items
                    .iter()
                    .map(|item| element_json(element, item))
                    .collect::<Result<_, _>>()?,
            )
            .to_string(),
        ),
        (
            ColumnType::Integer
            | ColumnType::Bigint
            | ColumnType::Numeric
            | ColumnType::Timestamptz
            | ColumnType::Date
            | ColumnType::Uuid
            | ColumnType::Bytea,
            Json::String(text),
        ) => from_text(column.ty, text)?,
        (ty, other) => return Err(format!("{other} is not a valid {ty:?} value").to_lowercase()),
    };
    check(column, &value, patterns)?;
    Ok(value)
}

fn check(column: &Column, value: &Value, patterns: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let number = |value: &Value| match value {
        Value::Integer(n) => Some(*n as f64),
        Value::Text(text) => text.parse::<f64>().ok(),
        _ => None,
    };
    for rule in &column.checks {
        let passes = match (rule, value) {
            (Check::MinLength(min), Value::Text(text)) => text.chars().count() >= *min as usize,
            (Check::MaxLength(max), Value::Text(text)) => text.chars().count() <= *max as usize,
            (Check::Min(min), value) => number(value)
                .zip(min.parse::<f64>().ok())
                .is_none_or(|(v, m)| v >= m),
            (Check::Max(max), value) => number(value)
                .zip(max.parse::<f64>().ok())
                .is_none_or(|(v, m)| v <= m),
            (Check::Pattern(_), Value::Text(text)) => patterns(text),
            (Check::OneOf(options), Value::Text(text)) => options.iter().any(|o| o == text),
            _ => true,
        };
        if !passes {
            let what = match rule {
                Check::MinLength(n) => format!("needs at least {n} characters"),
                Check::MaxLength(n) => format!("allows at most {n} characters"),
                Check::Min(n) => format!("must be at least {n}"),
                Check::Max(n) => format!("must be at most {n}"),
                Check::Pattern(p) => format!("must match {p}"),
                Check::OneOf(options) => format!("must be one of {}", options.join(", ")),
            };
            return Err(what);
        }
    }
    Ok(())
}

/// A value read back, as PostgREST shows it in JSON.
/// A value written as text in a query string, as the JSON the column's type
/// reads as (`42` a number, `true` a flag, `{a,b}` an array…), or why not.
pub fn text_to_json(ty: ColumnType, text: &str) -> Result<Json, String> {
    from_text(ty, text).map(|value| to_json(ty, &value))
}

pub(crate) fn to_json(ty: ColumnType, value: &Value) -> Json {
    match (ty, value) {
        (_, Value::Null) => Json::Null,
        (ColumnType::Boolean, Value::Integer(n)) => Json::Bool(*n != 0),
        (_, Value::Bool(flag)) => Json::Bool(*flag),
        (_, Value::Integer(n)) => Json::from(*n),
        (_, Value::Real(n)) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        (ColumnType::Numeric, Value::Text(text)) => {
            serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.clone()))
        }
        (ColumnType::Jsonb | ColumnType::Array(_), Value::Text(text)) => {
            serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.clone()))
        }
        (_, Value::Text(text)) => Json::String(text.clone()),
        (_, Value::Blob(bytes)) => {
            let mut hex = String::with_capacity(2 + bytes.len() * 2);
            hex.push_str("\\x");
            for byte in bytes {
                hex.push_str(&format!("{byte:02x}"));
            }
            Json::String(hex)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::Identifier;

    fn column(ty: ColumnType, checks: Vec<Check>) -> Column {
        Column {
            name: Identifier::new("c").unwrap(),
            ty,
            primary_key: false,
            not_null: false,
            default: None,
            server_set: None,
            references: None,
            checks,
            searchable: false,
        }
    }

    fn accept(_: &str) -> bool {
        true
    }

    #[test]
    fn times_become_canonical_utc() {
        let c = column(ColumnType::Timestamptz, vec![]);
        for (input, expected) in [
            ("2026-01-31T12:00:00Z", "2026-01-31T12:00:00+00:00"),
            (
                "2026-01-31T13:30:00.250+01:30",
                "2026-01-31T12:00:00.25+00:00",
            ),
            (
                "2026-01-31 12:00:00.000001+00",
                "2026-01-31T12:00:00.000001+00:00",
            ),
        ] {
            assert_eq!(
                from_text(c.ty, input),
                Ok(Value::Text(expected.into())),
                "{input}"
            );
        }
        assert!(from_text(c.ty, "yesterday").is_err());
        assert!(
            from_text(c.ty, "2026-01-31T12:00:00").is_err(),
            "a zone is required"
        );
    }

    #[test]
    fn typed_values_are_validated() {
        let uuid = column(ColumnType::Uuid, vec![]);
        assert_eq!(
            from_text(uuid.ty, "0190C2A4-7E5B-7000-8000-000000000001"),
            Ok(Value::Text("0190c2a4-7e5b-7000-8000-000000000001".into()))
        );
        assert!(from_text(uuid.ty, "1; drop table").is_err());
        let int = column(ColumnType::Integer, vec![]);
        assert!(from_text(int.ty, "2147483648").is_err());
        assert_eq!(
            from_json(&int, &serde_json::json!(7), &accept),
            Ok(Value::Integer(7))
        );
        assert!(from_json(&int, &serde_json::json!(7.5), &accept).is_err());
        assert!(from_json(&int, &serde_json::json!("x"), &accept).is_err());
        let text = column(
            ColumnType::Text,
            vec![
                Check::MaxLength(3),
                Check::OneOf(vec!["ab".into(), "abcd".into()]),
            ],
        );
        assert!(
            from_json(&text, &serde_json::json!(5), &accept).is_err(),
            "no silent coercion to text"
        );
        assert!(
            from_json(&text, &serde_json::json!("abcd"), &accept)
                .unwrap_err()
                .contains("at most 3")
        );
        assert!(
            from_json(&text, &serde_json::json!("xy"), &accept)
                .unwrap_err()
                .contains("one of")
        );
        assert_eq!(
            from_json(&text, &serde_json::json!("ab"), &accept),
            Ok(Value::Text("ab".into()))
        );
        let numeric = column(ColumnType::Numeric, vec![Check::Min("0".into())]);
        assert!(
            from_json(&numeric, &serde_json::json!(-1.5), &accept)
                .unwrap_err()
                .contains("at least 0")
        );
        let bytes = column(ColumnType::Bytea, vec![]);
        assert_eq!(
            from_text(bytes.ty, "\\x0aff"),
            Ok(Value::Blob(vec![10, 255]))
        );
        // "\\xaé1" has an even byte length with a character across a byte pair.
        for bad in ["\\xaé1", "\\xé1", "\\xzz", "\\x0", "0aff"] {
            assert!(from_text(bytes.ty, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_read_back_as_postgrest_shows_them() {
        assert_eq!(
            to_json(ColumnType::Boolean, &Value::Integer(1)),
            Json::Bool(true)
        );
        assert_eq!(
            to_json(ColumnType::Numeric, &Value::Text("12.50".into())),
            serde_json::json!(12.5)
        );
        assert_eq!(
            to_json(ColumnType::Jsonb, &Value::Text("{\"a\":1}".into())),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            to_json(ColumnType::Bytea, &Value::Blob(vec![1, 171])),
            serde_json::json!("\\x01ab")
        );
    }
}
