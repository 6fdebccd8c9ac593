//! The OpenAPI 3 description of the data API as one caller may use it: only
//! the tables, commands and columns their role reaches appear, and the document
//! says what the server enforces (so a client generated from it, or a fuzzer
//! such as schemathesis, sends what is accepted): each column's checks, which
//! columns a request body may carry, the grammar of each query parameter as a
//! pattern, and every status an operation answers.

use gatehouse_core::Identifier;
use gatehouse_policy::Command;
use gatehouse_schema::{Check, Column, ColumnType, ServerValue, Table};
use serde_json::{Map, Value as Json, json};

use crate::{Access, Caller, Rest};

use gatehouse_query::MAX_ROW_NUMBER;

/// A column's value in a row, as read or written.
fn column_schema(column: &Column) -> Json {
    let mut schema = type_schema(column.ty);
    for check in &column.checks {
        let (key, value) = match check {
            Check::MinLength(n) => ("minLength", json!(n)),
            Check::MaxLength(n) => ("maxLength", json!(n)),
            Check::Min(n) => ("minimum", serde_json::from_str(n).unwrap_or(Json::Null)),
            Check::Max(n) => ("maximum", serde_json::from_str(n).unwrap_or(Json::Null)),
            // Beside the type's own pattern (text holds no NUL), not instead of it.
            Check::Pattern(p) => ("allOf", json!([{"pattern": p}])),
            Check::OneOf(values) => ("enum", json!(values)),
        };
        schema[key] = value;
    }
    if !column.not_null {
        schema["nullable"] = json!(true);
    }
    schema
}

fn type_schema(ty: ColumnType) -> Json {
    match ty {
        // PostgreSQL's text cannot hold NUL, so neither database takes it.
        ColumnType::Text => json!({"type": "string", "pattern": "^[^\\u0000]*$"}),
        ColumnType::Integer => json!({"type": "integer", "format": "int32",
            "minimum": i32::MIN, "maximum": i32::MAX}),
        ColumnType::Bigint => json!({"type": "integer", "format": "int64",
            "minimum": i64::MIN, "maximum": i64::MAX}),
        ColumnType::Numeric => json!({"type": "number"}),
        ColumnType::Boolean => json!({"type": "boolean"}),
        ColumnType::Timestamptz => json!({"type": "string", "format": "date-time"}),
        ColumnType::Date => json!({"type": "string", "format": "date"}),
        ColumnType::Uuid => json!({"type": "string", "format": "uuid"}),
        ColumnType::Jsonb => json!({}),
        ColumnType::Bytea => {
            json!({"type": "string", "pattern": "^\\\\x([0-9a-f]{2})*$", "description": "hex, starting with \\x"})
        }
        ColumnType::Array(element) => {
            let mut items = type_schema(element.ty());
            items["nullable"] = json!(true);
            json!({"type": "array", "items": items})
        }
    }
}

// Values as the query grammar takes them (`values::from_text`), as patterns.
const TIMESTAMP: &str = "(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z";
const DATE: &str = "(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])";

/// A value of the column's type in a filter, or `None` when the type takes no
/// comparison (jsonb, bytea).
fn value_pattern(ty: ColumnType) -> Option<&'static str> {
    Some(match ty {
        ColumnType::Text => "[^,()\"\\\\\\u0000]*",
        ColumnType::Integer => "-?[0-9]{1,9}",
        ColumnType::Bigint => "-?[0-9]{1,15}",
        ColumnType::Numeric => "-?[0-9]{1,12}(\\.[0-9]{1,6})?",
        ColumnType::Boolean => "(true|false)",
        ColumnType::Uuid => "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ColumnType::Timestamptz => TIMESTAMP,
        ColumnType::Date => DATE,
        ColumnType::Jsonb | ColumnType::Bytea | ColumnType::Array(_) => return None,
    })
}

/// `?column=…`: the filters the column takes.
fn filter_pattern(column: &Column) -> String {
    let mut forms = vec!["is\\.null".to_owned()];
    if let Some(value) = value_pattern(column.ty) {
        forms.push(format!("(eq|neq|gt|gte|lt|lte)\\.{value}"));
        forms.push(format!("in\\.\\({value}(,{value}){{0,9}}\\)"));
    }
    match column.ty {
        ColumnType::Boolean => forms.push("is\\.(true|false)".into()),
        ColumnType::Text => forms.push("(like|ilike)\\.[^\\u0000]*".into()),
        _ => {}
    }
    if column.searchable {
        // Any text reads as plain, phrase or web-search words; `fts` takes the
        // operator grammar, here words joined by & or |.
        let language = "(\\((english|simple)\\))?";
        forms.push(format!("(plfts|phfts|wfts){language}\\.[^\\u0000]*"));
        forms.push(format!(
            "fts{language}\\.[a-z]{{1,20}}( ?[&|] ?[a-z]{{1,20}}){{0,3}}"
        ));
    }
    format!("^(not\\.)?({})$", forms.join("|"))
}

/// A name as the select grammar takes it: bare, or quoted when it holds spaces.
fn select_name(name: &Identifier) -> String {
    let escaped = regex::escape(name.as_str());
    if name.as_str().contains(' ') {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

fn parameter(name: &str, description: &str, schema: Json, required: bool) -> Json {
    json!({"name": name, "in": "query", "required": required, "schema": schema, "description": description})
}

/// `select`, `order`, `limit`, `offset` over the readable columns.
fn read_parameters(columns: &[&Column]) -> Vec<Json> {
    let select_item = format!(
        "(\\*|{})",
        columns
            .iter()
            .map(|c| select_name(&c.name))
            .collect::<Vec<_>>()
            .join("|")
    );
    let order_term = format!(
        "({})(\\.(asc|desc))?(\\.(nullsfirst|nullslast))?",
        columns
            .iter()
            .map(|c| regex::escape(c.name.as_str()))
            .collect::<Vec<_>>()
            .join("|")
    );
    let count = json!({"type": "integer", "minimum": 0, "maximum": MAX_ROW_NUMBER});
    vec![
        parameter(
            "select",
            "columns and embedded resources, as select=id,name,items(*)",
            json!({"type": "string", "pattern": format!("^{select_item}(,{select_item}){{0,15}}$")}),
            false,
        ),
        parameter(
            "order",
            "column.asc|desc[.nullsfirst|nullslast], comma-separated",
            json!({"type": "string", "pattern": format!("^{order_term}(,{order_term}){{0,3}}$")}),
            false,
        ),
        parameter("limit", "at most this many rows", count.clone(), false),
        parameter("offset", "skip this many rows", count, false),
    ]
}

/// One filter parameter per readable column. (PATCH and DELETE refuse to run
/// without one, with 403; OpenAPI cannot say "at least one of these".)
fn filter_parameters(columns: &[&Column]) -> Vec<Json> {
    columns
        .iter()
        .map(|column| {
            parameter(
                column.name.as_str(),
                "a filter such as eq.value, in.(a,b), is.null",
                json!({"type": "string", "pattern": filter_pattern(column)}),
                false,
            )
        })
        .collect()
}

/// The body a write takes: the columns the caller may set, nothing else.
fn body_schema(columns: &[&Column], generated_key: Option<&Column>, insert: bool) -> Json {
    let properties: Map<String, Json> = columns
        .iter()
        .map(|c| (c.name.to_string(), column_schema(c)))
        .collect();
    let mut schema =
        json!({"type": "object", "properties": properties, "additionalProperties": false});
    if insert {
        // Server-set values fill themselves, except a user id when there is none.
        let filled = |c: &Column| match &c.server_set {
            Some(ServerValue::AuthUid) => false,
            Some(_) => true,
            None => c.default.is_some() || generated_key == Some(c),
        };
        let required: Vec<&str> = columns
            .iter()
            .filter(|c| c.not_null && !filled(c))
            .map(|c| c.name.as_str())
            .collect();
        schema["required"] = json!(required);
    } else {
        schema["minProperties"] = json!(1);
    }
    schema
}

/// The statuses an operation answers besides its success, each with the error
/// body (see `components.responses`).
fn refusals(statuses: &[&str]) -> Map<String, Json> {
    statuses
        .iter()
        .map(|status| {
            let name = format!("#/components/responses/{status}");
            ((*status).to_owned(), json!({"$ref": name}))
        })
        .collect()
}

const ERROR_RESPONSES: [(&str, &str); 10] = [
    ("400", "The request is malformed or a value is invalid"),
    ("401", "No valid API key or token"),
    ("403", "No policy or grant allows it"),
    ("406", "No single row, or a media type not produced"),
    ("409", "A unique key or a reference conflicts"),
    ("413", "The body is too large"),
    ("416", "The range is not satisfiable"),
    ("429", "Over the rate limit"),
    ("500", "The server failed"),
    ("503", "The request took too long"),
];

impl Rest {
    pub fn openapi(&self, caller: &Caller) -> Json {
        let mut paths = Map::new();
        let mut schemas = Map::new();
        for table in &self.schema.tables {
            let name = table.name.as_str();
            let commands = [
                Command::Select,
                Command::Insert,
                Command::Update,
                Command::Delete,
            ]
            .map(|command| (command, self.access(name, command, caller).ok()));
            let Some(first) = commands.iter().find_map(|(_, access)| access.as_ref()) else {
                continue;
            };
            let columns = first.readable_columns();
            schemas.insert(name.to_owned(), row_schema(&columns));
            let rows =
                json!({"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}});
            let mut operations = Map::new();
            // Every method the route has is listed (as its `Allow` header says);
            // one no policy allows this caller answers 403.
            for (command, access) in &commands {
                let (method, operation) = match access {
                    Some(access) => operation(name, table, *command, access, &rows),
                    None => denied(name, *command),
                };
                operations.insert(method.into(), operation);
            }
            paths.insert(format!("/{name}"), Json::Object(operations));
        }
        let responses: Map<String, Json> = ERROR_RESPONSES
            .iter()
            .map(|(status, description)| {
                let body = json!({"$ref": "#/components/schemas/Error"});
                let response = json!({"description": description, "content": {"application/json": {"schema": body}}});
                ((*status).to_owned(), response)
            })
            .collect();
        schemas.insert(
            "Error".into(),
            json!({"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"},
                "details": {"nullable": true}, "hint": {"nullable": true},
                "request_id": {"type": "string"},
            }}),
        );
        json!({
            "openapi": "3.0.3",
            "info": {"title": "Data API", "description": "Tables this caller may use, in PostgREST's grammar.", "version": "1"},
            "paths": paths,
            "components": {"schemas": schemas, "responses": responses},
        })
    }
}

/// The HTTP method of a command, and the verb its summary starts with.
fn method_of(command: Command) -> (&'static str, &'static str) {
    match command {
        Command::Select => ("get", "Read"),
        Command::Insert => ("post", "Insert into"),
        Command::Update => ("patch", "Update"),
        Command::Delete => ("delete", "Delete from"),
    }
}

/// A method no policy lets this caller use on the table.
fn denied(name: &str, command: Command) -> (&'static str, Json) {
    let (method, verb) = method_of(command);
    let verb = verb.to_lowercase();
    let mut operation = json!({
        "summary": format!("Not allowed: {verb} {name}"),
        "description": format!("No policy lets this caller {verb} {name}; the answer is 401 without a signed-in user, else 403 (400 for a malformed request)."),
        "responses": refusals(&["400", "401", "403"]),
    });
    if matches!(command, Command::Insert | Command::Update) {
        operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}});
    }
    (method, operation)
}

fn row_schema(columns: &[&Column]) -> Json {
    let properties: Map<String, Json> = columns
        .iter()
        .map(|c| {
            let mut schema = column_schema(c);
            if c.server_set.is_some() {
                schema["readOnly"] = json!(true);
            }
            (c.name.to_string(), schema)
        })
        .collect();
    json!({"type": "object", "properties": properties})
}

/// One table's operation for `command`: its method and description.
fn operation(
    name: &str,
    table: &Table,
    command: Command,
    access: &Access<'_>,
    rows: &Json,
) -> (&'static str, Json) {
    let readable = access.readable_columns();
    // What a client may send for each column: not what the server sets (but the
    // secret key may: it has no user id to fill an owner with), and only what the
    // caller's grants let it change.
    let service = access.caller.is_service();
    let settable: Vec<&Column> = table
        .columns
        .iter()
        .filter(|c| (service || c.server_set.is_none()) && access.writable(c).is_ok())
        .filter(|c| command != Command::Update || !c.primary_key)
        .collect();
    let returned = json!({"description": "The rows, with Prefer: return=representation",
        "content": {"application/json": {"schema": rows}}});
    // Without return=representation an insert answers 201 with no body.
    let created = json!({"description": "Inserted; the rows with Prefer: return=representation"});
    let none = json!({"description": "Done; no rows asked back"});
    let body = |insert: bool| json!({"required": true, "content": {"application/json": {"schema": body_schema(&settable, table.generated_key(), insert)}}});
    let mut parameters = read_parameters(&readable);
    let (method, summary) = method_of(command);
    let (mut responses, statuses, request_body) = match command {
        Command::Select => {
            parameters.extend(filter_parameters(&readable));
            let ok = json!({"description": "The rows", "content": {"application/json": {"schema": rows}}});
            let responses = Map::from_iter([("200".to_owned(), ok)]);
            const STATUSES: &[&str] = &["400", "401", "403", "406", "416", "429", "500", "503"];
            (responses, STATUSES, None)
        }
        Command::Insert => {
            parameters.truncate(1); // select, for the rows asked back
            let responses = Map::from_iter([("201".to_owned(), created)]);
            const STATUSES: &[&str] = &["400", "401", "403", "409", "413", "429", "500", "503"];
            (responses, STATUSES, Some(body(true)))
        }
        Command::Update | Command::Delete => {
            parameters.truncate(1);
            parameters.extend(filter_parameters(&readable));
            let responses =
                Map::from_iter([("200".to_owned(), returned), ("204".to_owned(), none)]);
            if command == Command::Update {
                const STATUSES: &[&str] = &["400", "401", "403", "409", "413", "429", "500", "503"];
                (responses, STATUSES, Some(body(false)))
            } else {
                const STATUSES: &[&str] = &["400", "401", "403", "409", "429", "500", "503"];
                (responses, STATUSES, None)
            }
        }
    };
    responses.extend(refusals(statuses));
    let mut operation = json!({
        "summary": format!("{summary} {name}"),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = request_body {
        operation["requestBody"] = body;
    }
    (method, operation)
}
