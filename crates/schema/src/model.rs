use gatehouse_core::Identifier;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::SchemaError;
use crate::declaration::{CheckDecl, ColumnDecl, TableDecl};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    Integer,
    Bigint,
    Numeric,
    Boolean,
    Timestamptz,
    Date,
    Uuid,
    Jsonb,
    Bytea,
    /// `text[]`, `integer[]`, `bigint[]`, `uuid[]`: PostgreSQL arrays (JSON
    /// arrays in SQLite's text).
    Array(Element),
}

/// The type of an array column's elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Element {
    Text,
    Integer,
    Bigint,
    Uuid,
}

impl Element {
    pub fn ty(self) -> ColumnType {
        match self {
            Element::Text => ColumnType::Text,
            Element::Integer => ColumnType::Integer,
            Element::Bigint => ColumnType::Bigint,
            Element::Uuid => ColumnType::Uuid,
        }
    }
}

impl ColumnType {
    fn parse(name: &str) -> Option<Self> {
        if let Some(element) = name.strip_suffix("[]") {
            return Some(Self::Array(match Self::parse(element)? {
                Self::Text => Element::Text,
                Self::Integer => Element::Integer,
                Self::Bigint => Element::Bigint,
                Self::Uuid => Element::Uuid,
                _ => return None,
            }));
        }
        Some(match name {
            "text" => Self::Text,
            "integer" | "int" => Self::Integer,
            "bigint" => Self::Bigint,
            "numeric" => Self::Numeric,
            "boolean" | "bool" => Self::Boolean,
            "timestamptz" => Self::Timestamptz,
            "date" => Self::Date,
            "uuid" => Self::Uuid,
            "jsonb" => Self::Jsonb,
            "bytea" => Self::Bytea,
            _ => return None,
        })
    }

    pub fn is_integral(self) -> bool {
        matches!(self, Self::Integer | Self::Bigint)
    }

    fn is_numeric(self) -> bool {
        self.is_integral() || self == Self::Numeric
    }
}

/// A constant from the declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Literal {
    Bool(bool),
    Integer(i64),
    /// A decimal number, kept as written so no precision is lost.
    Number(String),
    Text(String),
}

/// A value the server always supplies, whatever the client sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerValue {
    /// The caller's user id.
    AuthUid,
    /// The server's clock at the write.
    Now,
    Literal(Literal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    NoAction,
    Restrict,
    Cascade,
    SetNull,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub table: Identifier,
    pub column: Identifier,
    pub on_delete: OnDelete,
}

/// A constraint on one column's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    MinLength(u32),
    MaxLength(u32),
    Min(String),
    Max(String),
    /// Checked at the edge (SQLite has no regular expressions).
    Pattern(String),
    OneOf(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: Identifier,
    pub ty: ColumnType,
    pub primary_key: bool,
    pub not_null: bool,
    pub default: Option<Literal>,
    pub server_set: Option<ServerValue>,
    pub references: Option<ForeignKey>,
    pub checks: Vec<Check>,
    /// Full-text searchable (`fts` and its kin): indexed for it on both databases.
    #[serde(default)]
    pub searchable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub name: Identifier,
    pub columns: Vec<Identifier>,
    pub unique: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub name: Identifier,
    pub columns: Vec<Column>,
    pub indexes: Vec<Index>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name.as_str() == name)
    }

    /// The first column of the primary key (the whole key unless composite).
    pub fn primary_key(&self) -> &Column {
        // Validation guarantees at least one primary key column.
        self.columns
            .iter()
            .find(|c| c.primary_key)
            .unwrap_or(&self.columns[0])
    }

    /// Every column of the primary key, in declared order.
    pub fn key_columns(&self) -> Vec<&Column> {
        self.columns.iter().filter(|c| c.primary_key).collect()
    }

    /// The key column the server or database fills when a row leaves it out:
    /// a one-column uuid (v7) or integer (identity) key; composite keys are given.
    pub fn generated_key(&self) -> Option<&Column> {
        match self.key_columns().as_slice() {
            [key] if key.ty == ColumnType::Uuid || key.ty.is_integral() => Some(key),
            _ => None,
        }
    }

    /// Whether `column` alone is unique through the primary key.
    pub fn is_whole_key(&self, column: &Column) -> bool {
        column.primary_key && self.key_columns().len() == 1
    }
}

/// The validated declaration: every name checked, every reference resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// In dependency order: a table comes after the tables it references.
    pub tables: Vec<Table>,
}

impl Schema {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name.as_str() == name)
    }

    /// Parses the `[tables.*]` sections of a TOML document: for tools and tests;
    /// the server reads them as part of `gatehouse.toml`.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        Self::from_declaration(&crate::declaration::parse(text)?).map_err(|e| e.to_string())
    }

    /// Indexes each (table, column) unless an index already starts with it; for
    /// the columns row policies filter on, so those filters never scan.
    pub fn index_columns(&mut self, wanted: &[(Identifier, Identifier)]) {
        for (table_name, column) in wanted {
            let Some(table) = self.tables.iter_mut().find(|t| &t.name == table_name) else {
                continue;
            };
            let covered = table
                .indexes
                .iter()
                .any(|i| i.columns.first() == Some(column))
                || table.primary_key().name == *column;
            if !covered {
                let columns = vec![column.clone()];
                table.indexes.push(Index {
                    name: index_name("ix", &table.name, &columns),
                    columns,
                    unique: false,
                });
            }
        }
    }

    pub fn from_declaration(
        declaration: &IndexMap<String, TableDecl>,
    ) -> Result<Self, SchemaError> {
        let mut tables = declaration
            .iter()
            .map(|(name, table)| table_of(name, table))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some((_, second)) = same_without_case(tables.iter().map(|t| &t.name)) {
            return Err(table_error(
                second.as_str(),
                "another table has this name but for the case of its letters, which SQLite \
                 would take for the same table",
            ));
        }
        resolve_references(&mut tables, declaration)?;
        add_foreign_key_indexes(&mut tables);
        Ok(Schema {
            tables: dependency_order(tables)?,
        })
    }
}

fn table_error(table: &str, message: impl Into<String>) -> SchemaError {
    SchemaError::Table {
        table: table.to_owned(),
        message: message.into(),
    }
}

fn column_error(table: &str, column: &str, message: impl Into<String>) -> SchemaError {
    SchemaError::Column {
        table: table.to_owned(),
        column: column.to_owned(),
        message: message.into(),
    }
}

/// The first two names that differ only in the case of ASCII letters.
fn same_without_case<'a>(
    names: impl Iterator<Item = &'a Identifier>,
) -> Option<(&'a Identifier, &'a Identifier)> {
    let mut seen = std::collections::HashMap::new();
    for name in names {
        if let Some(first) = seen.insert(name.folded(), name) {
            return Some((first, name));
        }
    }
    None
}

/// Index and constraint names: `ix_<table>_<columns>`, shortened with a hash of
/// the full name when PostgreSQL's 63-byte limit would cut it.
pub(crate) fn index_name(prefix: &str, table: &Identifier, columns: &[Identifier]) -> Identifier {
    let mut name = format!("{prefix}_{table}");
    for column in columns {
        name.push('_');
        name.push_str(column.as_str());
    }
    if name.len() > 63 {
        // FNV-1a: stable across builds and platforms, which `DefaultHasher` is not.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut cut = 54;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name = format!("{}_{:08x}", &name[..cut], hash as u32);
    }
    // The parts are identifiers and the prefix is ours, so this cannot fail.
    Identifier::new(&name).unwrap_or_else(|_| table.clone())
}

fn table_of(name: &str, declared: &TableDecl) -> Result<Table, SchemaError> {
    let table = Identifier::new(name).map_err(|e| table_error(name, e.to_string()))?;
    if declared.columns.is_empty() {
        return Err(table_error(name, "declare at least one column"));
    }
    let columns = declared
        .columns
        .iter()
        .map(|(column, decl)| column_of(name, column, decl))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some((_, second)) = same_without_case(columns.iter().map(|c| &c.name)) {
        return Err(column_error(
            name,
            second.as_str(),
            "another column has this name but for the case of its letters, which SQLite \
             would take for the same column",
        ));
    }
    let mut columns = columns;
    match (
        columns.iter().filter(|c| c.primary_key).count(),
        declared.primary_key.len(),
    ) {
        (1, 0) => {}
        (0, 0) => {
            return Err(table_error(
                name,
                "declare one column with primary_key = true, or primary_key = [\"a\", \"b\"] on the table",
            ));
        }
        (0, 1) => {
            return Err(table_error(
                name,
                "a one-column key is marked on the column: primary_key = true",
            ));
        }
        (0, _) => {
            for key in &declared.primary_key {
                let column = columns
                    .iter_mut()
                    .find(|c| c.name.as_str() == key)
                    .ok_or_else(|| {
                        table_error(name, format!("primary_key names unknown column {key:?}"))
                    })?;
                if column.primary_key
                    || matches!(column.ty, ColumnType::Array(_) | ColumnType::Jsonb)
                {
                    return Err(table_error(
                        name,
                        format!("primary_key names {key:?} twice, or a jsonb or array column"),
                    ));
                }
                column.primary_key = true;
                column.not_null = true;
            }
        }
        (1, _) => {
            return Err(table_error(
                name,
                "declare the key on a column or on the table, not both",
            ));
        }
        _ => {
            return Err(table_error(
                name,
                "only one column may be primary_key = true; list a key of several columns on the table: primary_key = [\"a\", \"b\"]",
            ));
        }
    }
    let resolve = |list: &Vec<String>| -> Result<Vec<Identifier>, SchemaError> {
        if list.is_empty() {
            return Err(table_error(name, "an index needs at least one column"));
        }
        list.iter()
            .map(|column| {
                columns
                    .iter()
                    .find(|c| c.name.as_str() == column)
                    .map(|c| c.name.clone())
                    .ok_or_else(|| {
                        table_error(name, format!("index names unknown column {column:?}"))
                    })
            })
            .collect()
    };
    let mut indexes = Vec::new();
    for (column, decl) in columns.iter().zip(declared.columns.values()) {
        if decl.unique && !decl.primary_key {
            let list = vec![column.name.clone()];
            indexes.push(Index {
                name: index_name("ux", &table, &list),
                columns: list,
                unique: true,
            });
        }
    }
    for (list, unique) in declared
        .unique
        .iter()
        .map(|l| (l, true))
        .chain(declared.indexes.iter().map(|l| (l, false)))
    {
        let list = resolve(list)?;
        let index = Index {
            name: index_name(if unique { "ux" } else { "ix" }, &table, &list),
            columns: list,
            unique,
        };
        if !indexes
            .iter()
            .any(|i: &Index| i.columns == index.columns && i.unique == index.unique)
        {
            indexes.push(index);
        }
    }
    Ok(Table {
        name: table,
        columns,
        indexes,
    })
}

fn literal_for(ty: ColumnType, value: &serde_json::Value) -> Result<Literal, String> {
    use serde_json::Value as J;
    match (ty, value) {
        (ColumnType::Boolean, J::Bool(flag)) => Ok(Literal::Bool(*flag)),
        (ColumnType::Integer | ColumnType::Bigint, J::Number(n)) => n
            .as_i64()
            .filter(|n| ty == ColumnType::Bigint || i32::try_from(*n).is_ok())
            .map(Literal::Integer)
            .ok_or_else(|| format!("{n} does not fit a {ty:?} column").to_lowercase()),
        (ColumnType::Numeric, J::Number(n)) => Ok(Literal::Number(n.to_string())),
        (
            ColumnType::Text | ColumnType::Uuid | ColumnType::Date | ColumnType::Timestamptz,
            J::String(s),
        ) => Ok(Literal::Text(s.clone())),
        (ColumnType::Jsonb, value) => Ok(Literal::Text(value.to_string())),
        _ => Err(format!(
            "{value} is not a valid value for this column's type"
        )),
    }
}

fn server_value(ty: ColumnType, text: &str) -> Result<ServerValue, String> {
    match text.trim() {
        "auth.uid()" if ty == ColumnType::Uuid || ty == ColumnType::Text => {
            Ok(ServerValue::AuthUid)
        }
        "auth.uid()" => Err("auth.uid() fills uuid or text columns".into()),
        "now()" if ty == ColumnType::Timestamptz => Ok(ServerValue::Now),
        "now()" => Err("now() fills timestamptz columns".into()),
        literal => {
            let parsed = match literal.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                Some(text) => serde_json::Value::String(text.replace("''", "'")),
                None => serde_json::from_str(literal)
                    .map_err(|_| format!("server_set is auth.uid(), now() or a literal such as 'pending', not {literal}"))?,
            };
            literal_for(ty, &parsed).map(ServerValue::Literal)
        }
    }
}

fn checks_of(ty: ColumnType, decl: &CheckDecl) -> Result<Vec<Check>, String> {
    let mut checks = Vec::new();
    let textual = matches!(ty, ColumnType::Text);
    if (decl.min_length.is_some() || decl.max_length.is_some() || decl.pattern.is_some())
        && !textual
    {
        return Err("min_length, max_length and pattern apply to text columns".into());
    }
    if (decl.min.is_some() || decl.max.is_some()) && !ty.is_numeric() {
        return Err("min and max apply to integer, bigint and numeric columns".into());
    }
    if let (Some(low), Some(high)) = (decl.min_length, decl.max_length)
        && low > high
    {
        return Err("min_length is larger than max_length".into());
    }
    checks.extend(decl.min_length.map(Check::MinLength));
    checks.extend(decl.max_length.map(Check::MaxLength));
    checks.extend(decl.min.as_ref().map(|n| Check::Min(n.to_string())));
    checks.extend(decl.max.as_ref().map(|n| Check::Max(n.to_string())));
    if let Some(pattern) = &decl.pattern {
        // The edge runs it on every write: refuse what does not compile or is huge.
        regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("pattern does not compile: {e}"))?;
        checks.push(Check::Pattern(pattern.clone()));
    }
    if let Some(values) = &decl.one_of {
        if !textual {
            return Err("one_of applies to text columns".into());
        }
        if values.is_empty() {
            return Err("one_of needs at least one value".into());
        }
        checks.push(Check::OneOf(values.clone()));
    }
    Ok(checks)
}

impl Column {
    /// A value declared like a column outside any table (a function's argument):
    /// the same types and checks; keys and references do not apply.
    pub fn declared(owner: &str, name: &str, decl: &ColumnDecl) -> Result<Column, SchemaError> {
        if decl.primary_key || decl.references.is_some() || decl.server_set.is_some() || decl.unique
        {
            return Err(column_error(
                owner,
                name,
                "takes a type, not_null, default and check only",
            ));
        }
        column_of(owner, name, decl)
    }
}

fn column_of(table: &str, name: &str, decl: &ColumnDecl) -> Result<Column, SchemaError> {
    let error = |message: String| column_error(table, name, message);
    let column = Identifier::new(name).map_err(|e| error(e.to_string()))?;
    let ty = ColumnType::parse(&decl.ty).ok_or_else(|| {
        error(format!(
            "unknown type {:?}: use text, integer, bigint, numeric, boolean, timestamptz, date, uuid, jsonb, bytea, or text[], integer[], bigint[], uuid[]",
            decl.ty
        ))
    })?;
    if decl.primary_key
        && !matches!(
            ty,
            ColumnType::Uuid | ColumnType::Integer | ColumnType::Bigint | ColumnType::Text
        )
    {
        return Err(error(
            "a primary key is uuid (generated v7), integer or bigint (identity), or text".into(),
        ));
    }
    if matches!(ty, ColumnType::Array(_))
        && (decl.unique || decl.references.is_some() || decl.default.is_some())
    {
        return Err(error(
            "an array column takes no unique, references or default (yet)".into(),
        ));
    }
    let default = decl
        .default
        .as_ref()
        .map(|value| literal_for(ty, value))
        .transpose()
        .map_err(error)?;
    let server_set = decl
        .server_set
        .as_deref()
        .map(|text| server_value(ty, text))
        .transpose()
        .map_err(error)?;
    if default.is_some() && server_set.is_some() {
        return Err(error(
            "a column has a default or a server_set value, not both".into(),
        ));
    }
    if decl.primary_key && (default.is_some() || server_set.is_some()) {
        return Err(error(
            "the primary key is generated; it takes no default or server_set".into(),
        ));
    }
    if decl.searchable && ty != ColumnType::Text {
        return Err(error("only a text column can be searchable".into()));
    }
    if decl.on_delete.is_some() && decl.references.is_none() {
        return Err(error("on_delete needs references".into()));
    }
    let checks = decl
        .check
        .as_ref()
        .map(|c| checks_of(ty, c))
        .transpose()
        .map_err(error)?
        .unwrap_or_default();
    Ok(Column {
        name: column,
        ty,
        primary_key: decl.primary_key,
        not_null: decl.not_null || decl.primary_key,
        default,
        server_set,
        // Resolved once every table is known.
        references: None,
        checks,
        searchable: decl.searchable,
    })
}

fn resolve_references(
    tables: &mut [Table],
    declaration: &IndexMap<String, TableDecl>,
) -> Result<(), SchemaError> {
    let snapshot: Vec<Table> = tables.to_vec();
    for (table, (table_name, decl)) in tables.iter_mut().zip(declaration) {
        for (column, (column_name, column_decl)) in table.columns.iter_mut().zip(&decl.columns) {
            let Some(target) = &column_decl.references else {
                continue;
            };
            let error = |message: String| column_error(table_name, column_name, message);
            let (target_table, target_column) = match target.split_once('.') {
                Some((t, c)) => (t, Some(c)),
                None => (target.as_str(), None),
            };
            let referenced = snapshot
                .iter()
                .find(|t| t.name.as_str() == target_table)
                .ok_or_else(|| error(format!("references unknown table {target_table:?}")))?;
            let referenced_column = match target_column {
                Some(c) => referenced
                    .column(c)
                    .ok_or_else(|| error(format!("references unknown column {target:?}")))?,
                None if referenced.key_columns().len() == 1 => referenced.primary_key(),
                None => {
                    return Err(error(format!(
                        "{target_table} has a key of several columns: reference one unique column, as {target_table}.column"
                    )));
                }
            };
            let unique = referenced.is_whole_key(referenced_column)
                || referenced
                    .indexes
                    .iter()
                    .any(|i| i.unique && i.columns == [referenced_column.name.clone()]);
            if !unique {
                return Err(error(format!(
                    "{target} is neither a primary key nor unique"
                )));
            }
            let compatible = referenced_column.ty == column.ty
                || (referenced_column.ty.is_integral() && column.ty.is_integral());
            if !compatible {
                return Err(error(format!("its type differs from the type of {target}")));
            }
            let on_delete = match column_decl.on_delete.as_deref() {
                None | Some("no action") => OnDelete::NoAction,
                Some("restrict") => OnDelete::Restrict,
                Some("cascade") => OnDelete::Cascade,
                Some("set null") if !column.not_null => OnDelete::SetNull,
                Some("set null") => {
                    return Err(error(
                        "on_delete = \"set null\" needs a nullable column".into(),
                    ));
                }
                Some(other) => {
                    return Err(error(format!(
                        "on_delete {other:?}: use \"no action\", \"restrict\", \"cascade\" or \"set null\""
                    )));
                }
            };
            column.references = Some(ForeignKey {
                table: referenced.name.clone(),
                column: referenced_column.name.clone(),
                on_delete,
            });
        }
    }
    Ok(())
}

/// Joins and cascades walk foreign keys; an unindexed one turns each into a scan.
fn add_foreign_key_indexes(tables: &mut [Table]) {
    for table in tables {
        // The key's own index starts with its first column.
        let first_key = table.primary_key().name.clone();
        let wanted: Vec<Identifier> = table
            .columns
            .iter()
            .filter(|c| c.references.is_some() && c.name != first_key)
            .map(|c| c.name.clone())
            .collect();
        for column in wanted {
            let covered = table
                .indexes
                .iter()
                .any(|i| i.columns.first() == Some(&column));
            if !covered {
                let columns = vec![column];
                table.indexes.push(Index {
                    name: index_name("ix", &table.name, &columns),
                    columns,
                    unique: false,
                });
            }
        }
    }
}

fn dependency_order(mut pending: Vec<Table>) -> Result<Vec<Table>, SchemaError> {
    let mut ordered: Vec<Table> = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready = pending.iter().position(|table| {
            table
                .columns
                .iter()
                .filter_map(|c| c.references.as_ref())
                .all(|fk| {
                    fk.table == table.name || ordered.iter().any(|done| done.name == fk.table)
                })
        });
        match ready {
            Some(position) => ordered.push(pending.remove(position)),
            None => {
                return Err(table_error(
                    pending[0].name.as_str(),
                    "its foreign keys form a cycle with other tables; make one side nullable and drop the reference",
                ));
            }
        }
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Schema, String> {
        Schema::from_toml(text)
    }

    #[test]
    fn declaration_errors_name_table_column_and_fix() {
        for (text, expected) in [
            (
                "[tables.t]\ncolumns.id = { type = \"serial\", primary_key = true }",
                "column id: unknown type",
            ),
            (
                "[tables.t]\ncolumns.name = { type = \"text\" }",
                "table t: declare one column with primary_key",
            ),
            (
                "[tables.\"Bad-name\"]\ncolumns.id = { type = \"uuid\", primary_key = true }",
                "not a valid name",
            ),
            (
                "[tables.\"Gatehouse_users\"]\ncolumns.id = { type = \"uuid\", primary_key = true }",
                "reserved",
            ),
            (
                "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.createdAt = { type = \"text\" }\ncolumns.createdat = { type = \"text\" }",
                "column createdat: another column has this name but for the case",
            ),
            (
                "[tables.Orders]\ncolumns.id = { type = \"uuid\", primary_key = true }\n[tables.orders]\ncolumns.id = { type = \"uuid\", primary_key = true }",
                "table orders: another table has this name but for the case",
            ),
            (
                "[tables.gatehouse_x]\ncolumns.id = { type = \"uuid\", primary_key = true }",
                "reserved",
            ),
            (
                "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.o = { type = \"uuid\", references = \"nope\" }",
                "column o: references unknown table",
            ),
            (
                "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.o = { type = \"text\", server_set = \"now()\" }",
                "now() fills timestamptz",
            ),
            (
                "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.n = { type = \"integer\", default = \"x\" }",
                "not a valid value",
            ),
            (
                "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.n = { type = \"integer\", check = { max_length = 3 } }",
                "apply to text columns",
            ),
            (
                "[tables.a]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.b = { type = \"uuid\", references = \"b\" }\n\
                 [tables.b]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.a = { type = \"uuid\", references = \"a\" }",
                "cycle",
            ),
            (
                "[tables.t]\nprimary_key = [\"a\", \"b\"]\ncolumns.a = { type = \"uuid\", primary_key = true }\ncolumns.b = { type = \"uuid\" }",
                "not both",
            ),
            (
                "[tables.t]\nprimary_key = [\"a\", \"c\"]\ncolumns.a = { type = \"uuid\" }\ncolumns.b = { type = \"uuid\" }",
                "primary_key names unknown column \"c\"",
            ),
            (
                "[tables.t]\ncolumns.a = { type = \"uuid\", primary_key = true }\ncolumns.b = { type = \"uuid\", primary_key = true }",
                "list a key of several columns on the table",
            ),
            (
                "[tables.k]\nprimary_key = [\"a\", \"b\"]\ncolumns.a = { type = \"uuid\" }\ncolumns.b = { type = \"uuid\" }\n\
                 [tables.r]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.k = { type = \"uuid\", references = \"k\" }",
                "has a key of several columns",
            ),
            (
                "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.a = { type = \"jsonb[]\" }",
                "unknown type \"jsonb[]\"",
            ),
            (
                "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.a = { type = \"text[]\", unique = true }",
                "an array column takes no unique",
            ),
            (
                "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\ncolumns.a = { type = \"text[]\", check = { max_length = 3 } }",
                "apply to text columns",
            ),
            (
                "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\nindexes = [[\"missing\"]]",
                "unknown column \"missing\"",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?} gave {error}");
        }
    }

    #[test]
    fn names_as_postgresql_quotes_them() {
        let schema = parse(
            "[tables.\"Order Items\"]\ncolumns.id = { type = \"uuid\", primary_key = true }\n\
             columns.createdAt = { type = \"timestamptz\", server_set = \"now()\" }\n\
             columns.\"prénom du client\" = { type = \"text\" }\n\
             indexes = [[\"createdAt\", \"prénom du client\"]]\n",
        )
        .unwrap();
        let table = schema.table("Order Items").unwrap();
        assert!(table.column("createdAt").is_some());
        assert!(table.column("createdat").is_none(), "names keep their case");
        let long = Identifier::new(&"é".repeat(31)).unwrap();
        let index = index_name("ix", &long, std::slice::from_ref(&long));
        assert!(index.as_str().len() <= 63, "{index}");
        assert_eq!(table.indexes.len(), 1);
    }

    #[test]
    fn server_values_and_self_references() {
        let schema = parse(
            "[tables.t]\ncolumns.id = { type = \"uuid\", primary_key = true }\n\
             columns.parent = { type = \"uuid\", references = \"t\", on_delete = \"set null\" }\n\
             columns.owner = { type = \"uuid\", server_set = \"auth.uid()\" }\n\
             columns.state = { type = \"text\", server_set = \"'it''s new'\" }\n",
        )
        .unwrap();
        let table = schema.table("t").unwrap();
        assert_eq!(
            table.column("owner").unwrap().server_set,
            Some(ServerValue::AuthUid)
        );
        assert_eq!(
            table.column("state").unwrap().server_set,
            Some(ServerValue::Literal(Literal::Text("it's new".into())))
        );
        assert_eq!(
            table
                .column("parent")
                .unwrap()
                .references
                .as_ref()
                .unwrap()
                .on_delete,
            OnDelete::SetNull
        );
        assert_eq!(
            table.indexes[0].columns[0].as_str(),
            "parent",
            "foreign keys are indexed"
        );
    }
}
