//! The migration from one declaration to the next, as ordered steps. Steps that
//! lose data (dropping a table or column, narrowing a type) are marked
//! destructive so the caller can refuse them. A change whose meaning would
//! differ between SQLite and PostgreSQL, or that needs a table rebuild, is
//! refused here rather than half-done.

use gatehouse_core::Dialect;

use crate::SchemaError;
use crate::ddl::{
    column_definition, create_index, create_search, create_statements, drop_index, drop_search,
};
use crate::model::{Column, ColumnType, Schema, ServerValue, Table};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub description: String,
    pub destructive: bool,
    pub statements: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn destructive(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|step| step.destructive)
    }

    pub fn statements(&self) -> impl Iterator<Item = &String> {
        self.steps.iter().flat_map(|step| &step.statements)
    }

    fn push(&mut self, description: String, destructive: bool, statements: Vec<String>) {
        self.steps.push(Step {
            description,
            destructive,
            statements,
        });
    }
}

fn unsupported(table: &Table, column: &Column, what: &str) -> SchemaError {
    SchemaError::Unsupported(format!(
        "table {}, column {}: changing {what} of an existing column is not supported yet; \
         add a new column, copy the data over, then drop the old one",
        table.name, column.name
    ))
}

/// Whether the database itself can fill the column for rows that already exist.
fn has_database_default(column: &Column) -> bool {
    column.default.is_some()
        || matches!(
            column.server_set,
            Some(ServerValue::Literal(_) | ServerValue::Now)
        )
}

fn add_column(table: &Table, column: &Column, dialect: Dialect) -> Result<String, SchemaError> {
    let refuse = |why: &str| {
        SchemaError::Unsupported(format!(
            "table {}, new column {}: {why}",
            table.name, column.name
        ))
    };
    if column.primary_key {
        return Err(refuse("a primary key cannot be added to an existing table"));
    }
    if column.not_null && !has_database_default(column) {
        return Err(refuse(
            "existing rows would have no value; give it a default or leave out not_null",
        ));
    }
    if column.references.is_some() && has_database_default(column) {
        return Err(refuse("a new foreign key column cannot have a default"));
    }
    Ok(format!(
        "ALTER TABLE {} ADD COLUMN {}",
        table.name.quoted(),
        column_definition(column, false, dialect)
    ))
}

/// Compares an existing column with its new declaration. Only a change between
/// integer and bigint is carried out; anything else that alters the DDL is refused.
fn alter_column(
    plan: &mut Plan,
    table: &Table,
    old: &Column,
    new: &Column,
    dialect: Dialect,
) -> Result<(), SchemaError> {
    let retyped = Column {
        ty: new.ty,
        ..old.clone()
    };
    let same_elsewhere = [Dialect::Sqlite, Dialect::Postgres]
        .iter()
        .all(|d| column_definition(&retyped, true, *d) == column_definition(new, true, *d));
    if !same_elsewhere {
        let what = if old.not_null != new.not_null {
            "not_null"
        } else if old.references != new.references {
            "the reference"
        } else if old.checks != new.checks {
            "the checks"
        } else if old.primary_key != new.primary_key {
            "the primary key"
        } else {
            "the default"
        };
        return Err(unsupported(table, old, what));
    }
    if old.ty == new.ty {
        return Ok(());
    }
    let widening = match (old.ty, new.ty) {
        (ColumnType::Integer, ColumnType::Bigint) => true,
        (ColumnType::Bigint, ColumnType::Integer) => false,
        _ => return Err(unsupported(table, old, "the type")),
    };
    let statements = match dialect {
        // SQLite stores both as INTEGER; the edge enforces the narrower range.
        Dialect::Sqlite => vec![],
        Dialect::Postgres => vec![format!(
            "ALTER TABLE {} ALTER COLUMN {} TYPE {}",
            table.name.quoted(),
            old.name.quoted(),
            if widening { "bigint" } else { "integer" }
        )],
    };
    let verb = if widening { "widen" } else { "narrow" };
    plan.push(
        format!("{verb} {}.{} to {:?}", table.name, old.name, new.ty).to_lowercase(),
        !widening,
        statements,
    );
    Ok(())
}

pub fn plan(old: &Schema, new: &Schema, dialect: Dialect) -> Result<Plan, SchemaError> {
    let mut plan = Plan::default();
    let kept: Vec<(&Table, &Table)> = new
        .tables
        .iter()
        .filter_map(|table| old.table(table.name.as_str()).map(|before| (before, table)))
        .collect();

    // Search indexes go first: SQLite's triggers name the column being dropped.
    for before in &old.tables {
        let after = new.table(before.name.as_str());
        for column in before.columns.iter().filter(|c| c.searchable) {
            if after
                .and_then(|t| t.column(column.name.as_str()))
                .is_some_and(|c| c.searchable)
            {
                continue;
            }
            plan.push(
                format!("drop search on {}.{}", before.name, column.name),
                false,
                drop_search(&before.name, &column.name, dialect),
            );
        }
    }
    for (before, after) in &kept {
        for index in before.indexes.iter().filter(|i| !after.indexes.contains(i)) {
            plan.push(
                format!("drop index {} on {}", index.name, before.name),
                false,
                vec![drop_index(index)],
            );
        }
    }
    for (before, after) in &kept {
        for column in before
            .columns
            .iter()
            .filter(|c| after.column(c.name.as_str()).is_none())
        {
            plan.push(
                format!("drop column {}.{}", before.name, column.name),
                true,
                vec![format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    before.name.quoted(),
                    column.name.quoted()
                )],
            );
        }
    }
    // Referencing tables go before the tables they reference.
    for table in old
        .tables
        .iter()
        .rev()
        .filter(|t| new.table(t.name.as_str()).is_none())
    {
        plan.push(
            format!("drop table {}", table.name),
            true,
            vec![format!("DROP TABLE {}", table.name.quoted())],
        );
    }
    for table in new
        .tables
        .iter()
        .filter(|t| old.table(t.name.as_str()).is_none())
    {
        plan.push(
            format!("create table {}", table.name),
            false,
            create_statements(table, dialect),
        );
    }
    for (before, after) in &kept {
        for column in &after.columns {
            match before.column(column.name.as_str()) {
                None => plan.push(
                    format!("add column {}.{}", after.name, column.name),
                    false,
                    vec![add_column(after, column, dialect)?],
                ),
                Some(existing) => alter_column(&mut plan, after, existing, column, dialect)?,
            }
        }
    }
    for (before, after) in &kept {
        for index in after.indexes.iter().filter(|i| !before.indexes.contains(i)) {
            plan.push(
                format!("create index {} on {}", index.name, after.name),
                false,
                vec![create_index(&after.name, index)],
            );
        }
        for column in after.columns.iter().filter(|c| c.searchable) {
            if before
                .column(column.name.as_str())
                .is_some_and(|c| c.searchable)
            {
                continue;
            }
            plan.push(
                format!("create search on {}.{}", after.name, column.name),
                false,
                create_search(&after.name, &column.name, dialect),
            );
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> Schema {
        Schema::from_toml(text).unwrap()
    }

    const BASE: &str = r#"
        [tables.notes]
        columns.id = { type = "integer", primary_key = true }
        columns.body = { type = "text", not_null = true }
        columns.score = { type = "integer" }
    "#;

    fn descriptions(plan: &Plan) -> Vec<(String, bool)> {
        plan.steps
            .iter()
            .map(|s| (s.description.clone(), s.destructive))
            .collect()
    }

    #[test]
    fn searchable_comes_and_goes_as_its_own_step() {
        let searchable = BASE.replace(
            "type = \"text\", not_null = true",
            "type = \"text\", not_null = true, searchable = true",
        );
        let on = plan(&schema(BASE), &schema(&searchable), Dialect::Sqlite).unwrap();
        assert_eq!(
            descriptions(&on),
            vec![("create search on notes.body".to_owned(), false)]
        );
        let off = plan(&schema(&searchable), &schema(BASE), Dialect::Postgres).unwrap();
        assert_eq!(
            descriptions(&off),
            vec![("drop search on notes.body".to_owned(), false)]
        );
        let dropped = BASE.replace("columns.body = { type = \"text\", not_null = true }\n", "");
        let gone = plan(&schema(&searchable), &schema(&dropped), Dialect::Sqlite).unwrap();
        assert_eq!(
            descriptions(&gone),
            vec![
                ("drop search on notes.body".to_owned(), false),
                ("drop column notes.body".to_owned(), true)
            ],
            "the triggers go before the column they name"
        );
    }

    #[test]
    fn nothing_to_do_for_the_same_declaration() {
        assert!(
            plan(&schema(BASE), &schema(BASE), Dialect::Sqlite)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn from_nothing_creates_in_dependency_order() {
        let new = schema(&format!(
            "{BASE}\n[tables.tags]\ncolumns.id = {{ type = \"integer\", primary_key = true }}\n\
             columns.note_id = {{ type = \"integer\", references = \"notes\" }}\n"
        ));
        let steps = descriptions(&plan(&Schema::default(), &new, Dialect::Postgres).unwrap());
        assert_eq!(
            steps,
            vec![
                ("create table notes".into(), false),
                ("create table tags".into(), false)
            ]
        );
    }

    #[test]
    fn additions_are_safe_and_removals_destructive() {
        let grown = schema(&format!(
            "{BASE}columns.title = {{ type = \"text\", not_null = true, default = \"untitled\", unique = true }}\n"
        ));
        let up = plan(&schema(BASE), &grown, Dialect::Sqlite).unwrap();
        assert_eq!(
            descriptions(&up),
            vec![
                ("add column notes.title".into(), false),
                ("create index ux_notes_title on notes".into(), false),
            ]
        );
        assert_eq!(
            up.statements().collect::<Vec<_>>(),
            [
                r#"ALTER TABLE "notes" ADD COLUMN "title" TEXT NOT NULL DEFAULT 'untitled'"#,
                r#"CREATE UNIQUE INDEX "ux_notes_title" ON "notes" ("title")"#,
            ]
        );
        let down = plan(&grown, &schema(BASE), Dialect::Sqlite).unwrap();
        assert_eq!(
            descriptions(&down),
            vec![
                ("drop index ux_notes_title on notes".into(), false),
                ("drop column notes.title".into(), true),
            ]
        );
        let gone = plan(&schema(BASE), &Schema::default(), Dialect::Postgres).unwrap();
        assert_eq!(descriptions(&gone), vec![("drop table notes".into(), true)]);
    }

    #[test]
    fn integer_widening_is_safe_and_narrowing_destructive() {
        let wide = schema(&BASE.replace(
            r#"score = { type = "integer" }"#,
            r#"score = { type = "bigint" }"#,
        ));
        let up = plan(&schema(BASE), &wide, Dialect::Postgres).unwrap();
        assert_eq!(
            descriptions(&up),
            vec![("widen notes.score to bigint".into(), false)]
        );
        assert_eq!(
            up.statements().collect::<Vec<_>>(),
            [r#"ALTER TABLE "notes" ALTER COLUMN "score" TYPE bigint"#]
        );
        let down = plan(&wide, &schema(BASE), Dialect::Postgres).unwrap();
        assert_eq!(
            descriptions(&down),
            vec![("narrow notes.score to integer".into(), true)]
        );
    }

    #[test]
    fn unsafe_or_unsupported_changes_are_refused_with_the_reason() {
        for (change, expected) in [
            (
                BASE.replace(
                    r#"score = { type = "integer" }"#,
                    r#"score = { type = "text" }"#,
                ),
                "the type",
            ),
            (
                BASE.replace(
                    r#"score = { type = "integer" }"#,
                    r#"score = { type = "integer", not_null = true }"#,
                ),
                "not_null",
            ),
            (
                format!("{BASE}columns.extra = {{ type = \"text\", not_null = true }}\n"),
                "existing rows would have no value",
            ),
            (
                BASE.replace(
                    r#"score = { type = "integer" }"#,
                    r#"score = { type = "integer", check = { min = 0 } }"#,
                ),
                "the checks",
            ),
        ] {
            let error = plan(&schema(BASE), &schema(&change), Dialect::Sqlite).unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn a_changed_server_value_without_ddl_effect_is_allowed() {
        let before = schema(
            "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.owner = { type = \"uuid\" }\n",
        );
        let after = schema(
            "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\n\
             columns.owner = { type = \"uuid\", server_set = \"auth.uid()\" }\n",
        );
        assert!(plan(&before, &after, Dialect::Postgres).unwrap().is_empty());
    }
}
