//! The OpenAPI 3 description of the data API as one caller may use it: only
//! the tables, commands and columns their role reaches appear.

use gatehouse_policy::Command;
use gatehouse_schema::{Check, Column, ColumnType};
use serde_json::{Map, Value as Json, json};

use crate::{Caller, Rest};

fn column_schema(column: &Column) -> Json {
    let mut schema = match column.ty {
        ColumnType::Text => json!({"type": "string"}),
        ColumnType::Integer => json!({"type": "integer", "format": "int32"}),
        ColumnType::Bigint => json!({"type": "integer", "format": "int64"}),
        ColumnType::Numeric => json!({"type": "number"}),
        ColumnType::Boolean => json!({"type": "boolean"}),
        ColumnType::Timestamptz => json!({"type": "string", "format": "date-time"}),
        ColumnType::Date => json!({"type": "string", "format": "date"}),
        ColumnType::Uuid => json!({"type": "string", "format": "uuid"}),
        ColumnType::Jsonb => json!({}),
        ColumnType::Bytea => json!({"type": "string", "description": "hex, starting with \\\\x"}),
    };
    for check in &column.checks {
        let (key, value) = match check {
            Check::MinLength(n) => ("minLength", json!(n)),
            Check::MaxLength(n) => ("maxLength", json!(n)),
            Check::Min(n) => ("minimum", serde_json::from_str(n).unwrap_or(Json::Null)),
            Check::Max(n) => ("maximum", serde_json::from_str(n).unwrap_or(Json::Null)),
            Check::Pattern(p) => ("pattern", json!(p)),
            Check::OneOf(values) => ("enum", json!(values)),
        };
        schema[key] = value;
    }
    if column.server_set.is_some() || column.primary_key {
        schema["readOnly"] = json!(column.server_set.is_some());
    }
    if !column.not_null {
        schema["nullable"] = json!(true);
    }
    schema
}

fn parameter(name: &str, description: &str) -> Json {
    json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}, "description": description})
}

impl Rest {
    pub fn openapi(&self, caller: &Caller) -> Json {
        let mut paths = Map::new();
        let mut schemas = Map::new();
        for table in &self.schema.tables {
            let name = table.name.as_str();
            let reachable = |command| self.access(name, command, caller).is_ok();
            let commands: Vec<Command> = [
                Command::Select,
                Command::Insert,
                Command::Update,
                Command::Delete,
            ]
            .into_iter()
            .filter(|command| reachable(*command))
            .collect();
            let Some(first) = commands.first() else {
                continue;
            };
            let Ok(access) = self.access(name, *first, caller) else {
                continue;
            };
            let columns = access.readable_columns();
            let properties: Map<String, Json> = columns
                .iter()
                .map(|c| (c.name.to_string(), column_schema(c)))
                .collect();
            let required: Vec<&str> = columns
                .iter()
                .filter(|c| {
                    c.not_null && c.default.is_none() && c.server_set.is_none() && !c.primary_key
                })
                .map(|c| c.name.as_str())
                .collect();
            schemas.insert(
                name.to_owned(),
                json!({"type": "object", "properties": properties, "required": required}),
            );
            let reference = json!({"$ref": format!("#/components/schemas/{name}")});
            let mut filters = vec![
                parameter(
                    "select",
                    "columns and embedded resources, as select=id,name,items(*)",
                ),
                parameter(
                    "order",
                    "column.asc|desc[.nullsfirst|nullslast], comma-separated",
                ),
                parameter("limit", "at most this many rows"),
                parameter("offset", "skip this many rows"),
            ];
            filters.extend(
                columns
                    .iter()
                    .map(|c| parameter(c.name.as_str(), "a filter such as eq.value")),
            );
            let mut operations = Map::new();
            if commands.contains(&Command::Select) {
                operations.insert(
                    "get".into(),
                    json!({
                        "summary": format!("Read {name}"),
                        "parameters": filters,
                        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "array", "items": reference}}}}},
                    }),
                );
            }
            let body = json!({"content": {"application/json": {"schema": reference}}});
            for (command, method, summary) in [
                (Command::Insert, "post", "Insert into"),
                (Command::Update, "patch", "Update"),
                (Command::Delete, "delete", "Delete from"),
            ] {
                if commands.contains(&command) {
                    let mut operation = json!({
                        "summary": format!("{summary} {name}"),
                        "responses": {"201": {"description": "Created"}, "204": {"description": "No content"}},
                    });
                    if command != Command::Delete {
                        operation["requestBody"] = body.clone();
                    }
                    operations.insert(method.into(), operation);
                }
            }
            paths.insert(format!("/{name}"), Json::Object(operations));
        }
        json!({
            "openapi": "3.0.3",
            "info": {"title": "Data API", "description": "Tables this caller may use, in PostgREST's grammar.", "version": "1"},
            "paths": paths,
            "components": {"schemas": schemas},
        })
    }
}
