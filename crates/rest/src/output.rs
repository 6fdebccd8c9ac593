//! What a read returns: columns, or paths into JSON columns (`address->city`,
//! `data->>name`), each under the key it gets in the JSON.

use gatehouse_query::JsonStep;
use gatehouse_schema::{Column, ColumnType};

use crate::RestError;

/// One value of each returned row.
#[derive(Debug, Clone)]
pub(crate) struct Output<'a> {
    pub column: &'a Column,
    pub path: Vec<JsonStep>,
    pub key: String,
}

impl<'a> Output<'a> {
    pub fn column(column: &'a Column) -> Self {
        Self {
            column,
            path: Vec::new(),
            key: column.name.to_string(),
        }
    }

    /// `column->…`, named by `alias`, else by the path's last key (as PostgREST).
    pub fn path(
        column: &'a Column,
        path: &[JsonStep],
        alias: Option<&str>,
    ) -> Result<Self, RestError> {
        let key = match (alias, path.last()) {
            (Some(alias), _) => alias.to_owned(),
            (None, Some(step)) => step.key.name(),
            (None, None) => column.name.to_string(),
        };
        json_path_applies(column, path)?;
        Ok(Self {
            column,
            path: path.to_vec(),
            key,
        })
    }

    /// The type of the value: the column's, or JSON for `->`, text for `->>`.
    pub fn ty(&self) -> ColumnType {
        path_type(self.column, &self.path)
    }
}

/// The type a path into `column` gives.
pub(crate) fn path_type(column: &Column, path: &[JsonStep]) -> ColumnType {
    match path.last() {
        None => column.ty,
        Some(step) if step.as_text => ColumnType::Text,
        Some(_) => ColumnType::Jsonb,
    }
}

/// Paths go only into JSON columns.
pub(crate) fn json_path_applies(column: &Column, path: &[JsonStep]) -> Result<(), RestError> {
    if path.is_empty() || column.ty == ColumnType::Jsonb {
        return Ok(());
    }
    Err(RestError::InvalidValue {
        column: column.name.to_string(),
        message: "JSON paths (-> and ->>) apply to jsonb columns".into(),
    })
}
