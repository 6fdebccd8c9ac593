//! DDL for one dialect. Names are quoted identifiers; the only literals are the
//! declaration's own defaults and check values, quoted by `string_literal`.

use gatehouse_core::{Dialect, Identifier, string_literal};

use crate::model::{
    Check, Column, ColumnType, Index, Literal, OnDelete, ServerValue, Table, index_name,
};

fn sql_type(ty: ColumnType, dialect: Dialect) -> &'static str {
    use crate::model::Element;
    match dialect {
        // SQLite keeps exact decimals, times, dates, uuids and JSON as text in a
        // canonical form the edge writes, and booleans as 0/1.
        Dialect::Sqlite => match ty {
            ColumnType::Integer | ColumnType::Bigint | ColumnType::Boolean => "INTEGER",
            ColumnType::Bytea => "BLOB",
            _ => "TEXT",
        },
        Dialect::Postgres => match ty {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Bigint => "bigint",
            ColumnType::Numeric => "numeric",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Date => "date",
            ColumnType::Uuid => "uuid",
            ColumnType::Jsonb => "jsonb",
            ColumnType::Bytea => "bytea",
            ColumnType::Array(Element::Text) => "text[]",
            ColumnType::Array(Element::Integer) => "integer[]",
            ColumnType::Array(Element::Bigint) => "bigint[]",
            ColumnType::Array(Element::Uuid) => "uuid[]",
        },
    }
}

fn literal(value: &Literal, ty: ColumnType, dialect: Dialect) -> String {
    match (value, dialect) {
        (Literal::Bool(flag), Dialect::Sqlite) => u8::from(*flag).to_string(),
        (Literal::Bool(flag), Dialect::Postgres) => flag.to_string().to_uppercase(),
        (Literal::Integer(n), _) => n.to_string(),
        (Literal::Number(n), Dialect::Sqlite) => string_literal(n),
        (Literal::Number(n), Dialect::Postgres) => n.clone(),
        (Literal::Text(text), Dialect::Postgres) if ty == ColumnType::Jsonb => {
            format!("{}::jsonb", string_literal(text))
        }
        (Literal::Text(text), _) => string_literal(text),
    }
}

/// The database's own default, so rows written by the service role or by hand
/// still get server-set values. `auth.uid()` has no database equivalent.
fn default_clause(column: &Column, dialect: Dialect) -> Option<String> {
    let value = match (&column.default, &column.server_set) {
        (Some(value), _) | (None, Some(ServerValue::Literal(value))) => {
            literal(value, column.ty, dialect)
        }
        (None, Some(ServerValue::Now)) => match dialect {
            Dialect::Sqlite => "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))".to_owned(),
            Dialect::Postgres => "now()".to_owned(),
        },
        _ => return None,
    };
    Some(format!("DEFAULT {value}"))
}

fn check_clauses(column: &Column, dialect: Dialect) -> Vec<String> {
    let name = column.name.quoted();
    let length = match dialect {
        Dialect::Sqlite => "length",
        Dialect::Postgres => "char_length",
    };
    let number = |n: &str| match (dialect, column.ty) {
        (Dialect::Sqlite, ColumnType::Numeric) => format!("CAST({name} AS REAL) {n}"),
        _ => format!("{name} {n}"),
    };
    let mut clauses: Vec<String> = column
        .checks
        .iter()
        .filter_map(|check| match check {
            Check::MinLength(n) => Some(format!("{length}({name}) >= {n}")),
            Check::MaxLength(n) => Some(format!("{length}({name}) <= {n}")),
            Check::Min(n) => Some(number(&format!(">= {n}"))),
            Check::Max(n) => Some(number(&format!("<= {n}"))),
            Check::OneOf(values) => Some(format!(
                "{name} IN ({})",
                values
                    .iter()
                    .map(|v| string_literal(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Check::Pattern(_) => None,
        })
        .collect();
    if dialect == Dialect::Sqlite {
        match column.ty {
            ColumnType::Boolean => clauses.push(format!("{name} IN (0, 1)")),
            ColumnType::Jsonb => clauses.push(format!("json_valid({name})")),
            ColumnType::Array(_) => clauses.push(format!("json_type({name}) = 'array'")),
            _ => {}
        }
    }
    clauses
        .into_iter()
        .map(|c| format!("CHECK ({c})"))
        .collect()
}

fn references_clause(column: &Column) -> Option<String> {
    let fk = column.references.as_ref()?;
    let action = match fk.on_delete {
        OnDelete::NoAction => "NO ACTION",
        OnDelete::Restrict => "RESTRICT",
        OnDelete::Cascade => "CASCADE",
        OnDelete::SetNull => "SET NULL",
    };
    Some(format!(
        "REFERENCES {} ({}) ON DELETE {action}",
        fk.table.quoted(),
        fk.column.quoted()
    ))
}

/// One column's definition, as in CREATE TABLE or ALTER TABLE ADD COLUMN;
/// `inline_key`: the column is the whole primary key, declared here.
pub(crate) fn column_definition(column: &Column, inline_key: bool, dialect: Dialect) -> String {
    let mut parts = vec![column.name.quoted()];
    if column.primary_key && inline_key {
        parts.push(match (dialect, column.ty) {
            // Exactly INTEGER, so SQLite makes it the rowid: compact and auto-assigned.
            (Dialect::Sqlite, ty) if ty.is_integral() => "INTEGER PRIMARY KEY".to_owned(),
            (Dialect::Postgres, ty) if ty.is_integral() => {
                format!(
                    "{} GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
                    sql_type(ty, dialect)
                )
            }
            (_, ty) => format!("{} PRIMARY KEY", sql_type(ty, dialect)),
        });
    } else {
        parts.push(sql_type(column.ty, dialect).to_owned());
    }
    if column.not_null {
        parts.push("NOT NULL".to_owned());
    }
    parts.extend(default_clause(column, dialect));
    parts.extend(check_clauses(column, dialect));
    parts.extend(references_clause(column));
    parts.join(" ")
}

pub(crate) fn create_table(table: &Table, dialect: Dialect) -> String {
    let key = table.key_columns();
    let inline_key = key.len() == 1;
    let mut columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("  {}", column_definition(c, inline_key, dialect)))
        .collect();
    if !inline_key {
        let names: Vec<String> = key.iter().map(|c| c.name.quoted()).collect();
        columns.push(format!("  PRIMARY KEY ({})", names.join(", ")));
    }
    format!(
        "CREATE TABLE {} (\n{}\n)",
        table.name.quoted(),
        columns.join(",\n")
    )
}

pub(crate) fn create_index(table: &Identifier, index: &Index) -> String {
    let columns: Vec<String> = index.columns.iter().map(Identifier::quoted).collect();
    format!(
        "CREATE {}INDEX {} ON {} ({})",
        if index.unique { "UNIQUE " } else { "" },
        index.name.quoted(),
        table.quoted(),
        columns.join(", ")
    )
}

pub(crate) fn drop_index(index: &Index) -> String {
    format!("DROP INDEX {}", index.name.quoted())
}

/// The statements that create a table, its indexes and its search indexes.
pub fn create_statements(table: &Table, dialect: Dialect) -> Vec<String> {
    std::iter::once(create_table(table, dialect))
        .chain(
            table
                .indexes
                .iter()
                .map(|index| create_index(&table.name, index)),
        )
        .chain(
            table
                .columns
                .iter()
                .filter(|column| column.searchable)
                .flat_map(|column| create_search(&table.name, &column.name, dialect)),
        )
        .collect()
}

/// The FTS5 table that indexes a searchable column on SQLite, quoted:
/// `"gatehouse_search:<table>:<column>"` (`:` is in no identifier, so no two
/// columns share one). Its `english` and `simple` columns hold the text's
/// lexemes in each language (`gatehouse_search::index_text`), under the row's rowid.
pub fn search_table(table: &Identifier, column: &Identifier) -> String {
    format!("\"gatehouse_search:{table}:{column}\"")
}

/// The trigger names of a search table, quoted.
fn search_trigger(table: &Identifier, column: &Identifier, event: &str) -> String {
    format!("\"gatehouse_search:{table}:{column}:{event}\"")
}

/// What makes a column searchable. On PostgreSQL, a GIN index on the default
/// language's `to_tsvector`, the expression the `fts` filters use. On SQLite, an
/// FTS5 table of the column's lexemes kept by triggers (filled from the rows
/// already there), whose rowids are the rows' own.
pub(crate) fn create_search(
    table: &Identifier,
    column: &Identifier,
    dialect: Dialect,
) -> Vec<String> {
    let (t, c) = (table.quoted(), column.quoted());
    match dialect {
        Dialect::Postgres => vec![format!(
            "CREATE INDEX {} ON {t} USING gin (to_tsvector('english'::regconfig, {c}))",
            search_index_name(table, column).quoted()
        )],
        Dialect::Sqlite => {
            let fts = search_table(table, column);
            let lexemes = |row: &str| {
                format!(
                    "gatehouse_index_text('english', {row}{c}), gatehouse_index_text('simple', {row}{c})"
                )
            };
            let insert = format!(
                "INSERT INTO {fts} (rowid, english, simple) VALUES (new.rowid, {})",
                lexemes("new.")
            );
            let delete = format!("DELETE FROM {fts} WHERE rowid = old.rowid");
            vec![
                format!("CREATE VIRTUAL TABLE {fts} USING fts5(english, simple)"),
                format!(
                    "INSERT INTO {fts} (rowid, english, simple) SELECT rowid, {} FROM {t}",
                    lexemes("")
                ),
                format!(
                    "CREATE TRIGGER {} AFTER INSERT ON {t} BEGIN {insert}; END",
                    search_trigger(table, column, "insert")
                ),
                format!(
                    "CREATE TRIGGER {} AFTER UPDATE ON {t} \
                     WHEN old.rowid IS NOT new.rowid OR old.{c} IS NOT new.{c} \
                     BEGIN {delete}; {insert}; END",
                    search_trigger(table, column, "update")
                ),
                format!(
                    "CREATE TRIGGER {} AFTER DELETE ON {t} BEGIN {delete}; END",
                    search_trigger(table, column, "delete")
                ),
            ]
        }
    }
}

pub(crate) fn drop_search(
    table: &Identifier,
    column: &Identifier,
    dialect: Dialect,
) -> Vec<String> {
    match dialect {
        Dialect::Postgres => vec![format!(
            "DROP INDEX {}",
            search_index_name(table, column).quoted()
        )],
        Dialect::Sqlite => ["insert", "update", "delete"]
            .iter()
            .map(|event| format!("DROP TRIGGER {}", search_trigger(table, column, event)))
            .chain(std::iter::once(format!(
                "DROP TABLE {}",
                search_table(table, column)
            )))
            .collect(),
    }
}

fn search_index_name(table: &Identifier, column: &Identifier) -> Identifier {
    index_name("fts", table, std::slice::from_ref(column))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Schema;

    fn shop() -> Schema {
        let text = r#"
            [tables.products]
            columns.id = { type = "bigint", primary_key = true }
            columns.name = { type = "text", not_null = true, check = { min_length = 1, max_length = 200 } }
            columns.price_cents = { type = "integer", not_null = true, default = 0, check = { min = 0 } }
            columns.active = { type = "boolean", not_null = true, default = true }
            columns.sku = { type = "text", unique = true }

            [tables.orders]
            columns.id = { type = "uuid", primary_key = true }
            columns.user_id = { type = "uuid", server_set = "auth.uid()", not_null = true }
            columns.status = { type = "text", server_set = "'pending'", check = { one_of = ["pending", "paid"] } }
            columns.note = { type = "text", check = { max_length = 500 } }
            columns.created_at = { type = "timestamptz", server_set = "now()" }
            indexes = [["user_id", "created_at"]]

            [tables.order_items]
            columns.id = { type = "bigint", primary_key = true }
            columns.order_id = { type = "uuid", not_null = true, references = "orders", on_delete = "cascade" }
            columns.product_id = { type = "bigint", not_null = true, references = "products.id" }
            columns.quantity = { type = "integer", not_null = true, check = { min = 1, max = 1000 } }
        "#;
        Schema::from_toml(text).unwrap()
    }

    fn ddl(dialect: Dialect) -> String {
        shop()
            .tables
            .iter()
            .flat_map(|t| create_statements(t, dialect))
            .collect::<Vec<_>>()
            .join(";\n")
    }

    #[test]
    fn a_searchable_column_gets_a_search_index() {
        let declared = "[tables.posts]\ncolumns.id = { type = \"bigint\", primary_key = true }\n\
                        columns.body = { type = \"text\", searchable = true }\n";
        let schema = Schema::from_toml(declared).unwrap();
        let postgres = create_statements(&schema.tables[0], Dialect::Postgres);
        assert_eq!(
            postgres[1],
            "CREATE INDEX \"fts_posts_body\" ON \"posts\" \
             USING gin (to_tsvector('english'::regconfig, \"body\"))"
        );
        let sqlite = create_statements(&schema.tables[0], Dialect::Sqlite);
        assert_eq!(
            sqlite[1],
            "CREATE VIRTUAL TABLE \"gatehouse_search:posts:body\" USING fts5(english, simple)"
        );
        assert_eq!(sqlite.len(), 6, "the table, filled, and three triggers");
        let number = declared.replace("type = \"text\"", "type = \"integer\"");
        assert!(
            Schema::from_toml(&number).is_err(),
            "only text is searchable"
        );
    }

    #[test]
    fn a_key_of_several_columns_is_a_table_constraint() {
        let schema = Schema::from_toml(
            "[tables.m]\nprimary_key = [\"team\", \"who\"]\n\
             columns.team = { type = \"bigint\" }\ncolumns.who = { type = \"uuid\" }\n",
        )
        .unwrap();
        let table = &schema.tables[0];
        assert!(
            table.generated_key().is_none(),
            "a composite key is given, not made"
        );
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let sql = create_table(table, dialect);
            assert!(
                sql.ends_with("  PRIMARY KEY (\"team\", \"who\")\n)"),
                "{sql}"
            );
            assert!(
                !sql.contains("IDENTITY") && !sql.contains("INTEGER PRIMARY KEY"),
                "{sql}"
            );
        }
    }

    #[test]
    fn sqlite_ddl() {
        let expected = r#"CREATE TABLE "products" (
  "id" INTEGER PRIMARY KEY NOT NULL,
  "name" TEXT NOT NULL CHECK (length("name") >= 1) CHECK (length("name") <= 200),
  "price_cents" INTEGER NOT NULL DEFAULT 0 CHECK ("price_cents" >= 0),
  "active" INTEGER NOT NULL DEFAULT 1 CHECK ("active" IN (0, 1)),
  "sku" TEXT
);
CREATE UNIQUE INDEX "ux_products_sku" ON "products" ("sku");
CREATE TABLE "orders" (
  "id" TEXT PRIMARY KEY NOT NULL,
  "user_id" TEXT NOT NULL,
  "status" TEXT DEFAULT 'pending' CHECK ("status" IN ('pending', 'paid')),
  "note" TEXT CHECK (length("note") <= 500),
  "created_at" TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX "ix_orders_user_id_created_at" ON "orders" ("user_id", "created_at");
CREATE TABLE "order_items" (
  "id" INTEGER PRIMARY KEY NOT NULL,
  "order_id" TEXT NOT NULL REFERENCES "orders" ("id") ON DELETE CASCADE,
  "product_id" INTEGER NOT NULL REFERENCES "products" ("id") ON DELETE NO ACTION,
  "quantity" INTEGER NOT NULL CHECK ("quantity" >= 1) CHECK ("quantity" <= 1000)
);
CREATE INDEX "ix_order_items_order_id" ON "order_items" ("order_id");
CREATE INDEX "ix_order_items_product_id" ON "order_items" ("product_id")"#;
        assert_eq!(ddl(Dialect::Sqlite), expected);
    }

    #[test]
    fn postgres_ddl() {
        let expected = r#"CREATE TABLE "products" (
  "id" bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY NOT NULL,
  "name" text NOT NULL CHECK (char_length("name") >= 1) CHECK (char_length("name") <= 200),
  "price_cents" integer NOT NULL DEFAULT 0 CHECK ("price_cents" >= 0),
  "active" boolean NOT NULL DEFAULT TRUE,
  "sku" text
);
CREATE UNIQUE INDEX "ux_products_sku" ON "products" ("sku");
CREATE TABLE "orders" (
  "id" uuid PRIMARY KEY NOT NULL,
  "user_id" uuid NOT NULL,
  "status" text DEFAULT 'pending' CHECK ("status" IN ('pending', 'paid')),
  "note" text CHECK (char_length("note") <= 500),
  "created_at" timestamptz DEFAULT now()
);
CREATE INDEX "ix_orders_user_id_created_at" ON "orders" ("user_id", "created_at");
CREATE TABLE "order_items" (
  "id" bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY NOT NULL,
  "order_id" uuid NOT NULL REFERENCES "orders" ("id") ON DELETE CASCADE,
  "product_id" bigint NOT NULL REFERENCES "products" ("id") ON DELETE NO ACTION,
  "quantity" integer NOT NULL CHECK ("quantity" >= 1) CHECK ("quantity" <= 1000)
);
CREATE INDEX "ix_order_items_order_id" ON "order_items" ("order_id");
CREATE INDEX "ix_order_items_product_id" ON "order_items" ("product_id")"#;
        assert_eq!(ddl(Dialect::Postgres), expected);
    }
}
