//! JSON paths after a column name: `data->tags->0`, `address->>city`.

use crate::{MAX_NESTING, QueryError, filter::unquote, invalid};

/// One step into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStep {
    pub key: JsonKey,
    /// `->>`: the value as text (only the last step), rather than as JSON (`->`).
    pub as_text: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonKey {
    /// An object's member.
    Field(String),
    /// An array's element; negative counts from the end.
    Index(i64),
}

impl JsonKey {
    /// The name PostgREST gives a path's value in the output: its last key.
    pub fn name(&self) -> String {
        match self {
            JsonKey::Field(name) => name.clone(),
            JsonKey::Index(index) => index.to_string(),
        }
    }
}

/// Splits `column->a->>b` into the column and its steps.
pub(crate) fn field(param: &str, text: &str) -> Result<(String, Vec<JsonStep>), QueryError> {
    let at = text.find("->").unwrap_or(text.len());
    Ok((unquote(text[..at].trim()), steps(param, &text[at..])?))
}

/// The steps of `->a->>b->0`. Keys may be double-quoted; a whole number is an
/// array index, as in PostgreSQL; `->>` (text) ends a path.
pub(crate) fn steps(param: &str, text: &str) -> Result<Vec<JsonStep>, QueryError> {
    let mut path: Vec<JsonStep> = Vec::new();
    for part in text.split("->").skip(1) {
        if path.last().is_some_and(|step| step.as_text) {
            return Err(invalid(
                param,
                "->> gives text, so it must be the last step",
            ));
        }
        let (as_text, key) = match part.strip_prefix('>') {
            Some(key) => (true, key),
            None => (false, part),
        };
        if key.is_empty() {
            return Err(invalid(
                param,
                format!("a JSON path step in {text:?} has no key"),
            ));
        }
        let key = match key.parse::<i64>() {
            // PostgreSQL's array index is an integer.
            Ok(index) if i32::try_from(index).is_ok() => JsonKey::Index(index),
            Ok(_) => {
                return Err(invalid(
                    param,
                    format!("the array index {key} is too large"),
                ));
            }
            Err(_) => JsonKey::Field(unquote(key)),
        };
        if let JsonKey::Field(name) = &key
            && name.contains('\0')
        {
            return Err(invalid(param, "a JSON key cannot hold the NUL character"));
        }
        path.push(JsonStep { key, as_text });
        if path.len() > MAX_NESTING {
            return Err(invalid(param, "the JSON path is too deep"));
        }
    }
    Ok(path)
}
