//! POST, PATCH and DELETE. Inserts and updates carry the policy's `with check`
//! on the new row inside the statement; if any row fails it, nothing is kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Identifier;
use gatehouse_db::{Dialect, Executor, Row, Statement, Transaction, Value};
use gatehouse_policy::Command;
use gatehouse_query::Request;
use gatehouse_schema::{Column, ColumnType, Literal, ServerValue, Table};
use serde_json::{Map, Value as Json};

use crate::output::Output;
use crate::read::{row_object, selected, where_clause};
use crate::sql::{Decided, StatementBuilder, Undecided};
use crate::triggers::{
    AfterWrite, BeforeWrite, Event, RowChange, by_column, returned_row, row_json,
};
use crate::values::{canonical_time, from_json, from_text};
use crate::{Access, Caller, Rest, RestError};

/// The app's code around one write: before triggers for each row, and the
/// after-commit work the written rows are handed to. A write with either runs
/// in a transaction of its own (or the caller's), row by row where the before
/// triggers or the old rows need it.
pub(crate) struct Hooks {
    pub before: Option<Arc<dyn BeforeWrite>>,
    pub after: Option<Arc<dyn AfterWrite>>,
}

/// How long a write whose only hooks are after-commit ones may hold its
/// transaction's writes: its own statements and the jobs they enqueue.
const AFTER_ONLY_WRITE_LIMIT: Duration = Duration::from_millis(250);

impl Hooks {
    fn any(&self) -> bool {
        self.before.is_some() || self.after.is_some()
    }

    fn write_limit(&self) -> Duration {
        self.before
            .as_ref()
            .map_or(AFTER_ONLY_WRITE_LIMIT, |before| before.write_limit())
    }

    /// Hands the rows a write made or removed to the after-commit work and
    /// runs the statements recording it in the write's transaction.
    async fn hand_over(
        &self,
        db: Executor<'_>,
        changes: Vec<RowChange<'_>>,
    ) -> Result<(), RestError> {
        let Some(after) = &self.after else {
            return Ok(());
        };
        if changes.is_empty() {
            return Ok(());
        }
        let followed = after.after(&changes)?;
        if !followed.statements.is_empty() {
            db.transaction(followed.statements).await?;
        }
        // Whoever commits the transaction (this write, or the function whose
        // call it is part of), what follows the commit runs then.
        for then in followed.on_commit {
            match db {
                Executor::Transaction(transaction) => transaction.on_commit(then),
                Executor::Pool(_) => then(),
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// `Prefer: return=representation`.
    pub representation: bool,
    /// `Prefer: resolution=…`: an insert becomes an upsert.
    pub resolution: Option<Resolution>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    MergeDuplicates,
    IgnoreDuplicates,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WriteResult {
    pub affected: usize,
    /// The written rows, when representation was asked for.
    pub rows: Vec<Json>,
}

/// Rows written come back without embeds for now; say so rather than drop them.
fn refuse_embeds(request: &Request, options: &WriteOptions) -> Result<(), RestError> {
    // `items.or=(…)`, `items.limit=…`: modifiers of embeds a write never reads;
    // ignoring one would widen what the write touches.
    if let Some((path, _)) = request.embedded.first() {
        return Err(RestError::Unsupported(format!(
            "'{path}' modifies an embedded resource, which a write does not read"
        )));
    }
    let embeds = request
        .select
        .iter()
        .any(|item| matches!(item, gatehouse_query::SelectItem::Embed { .. }));
    if options.representation && embeds {
        return Err(RestError::Unsupported(
            "embedded resources in the rows a write returns are not supported yet".into(),
        ));
    }
    Ok(())
}

fn literal_value(column: &Column, literal: &Literal) -> Result<Value, RestError> {
    Ok(match literal {
        Literal::Bool(flag) => Value::Bool(*flag),
        Literal::Integer(n) => Value::Integer(*n),
        Literal::Number(text) => Value::Text(text.clone()),
        Literal::Text(text) => {
            from_text(column.ty, text).map_err(|message| RestError::InvalidValue {
                column: column.name.to_string(),
                message,
            })?
        }
    })
}

/// A client's value for a server-set column is refused, except an owner id equal
/// to the caller's own, which supabase-js code commonly sends. (The service role
/// writes server-set columns freely; callers check that first.)
fn accept_server_set(column: &Column, json: &Json, caller: &Caller) -> Result<(), RestError> {
    match (&column.server_set, json, caller.user_id()) {
        (Some(ServerValue::AuthUid), Json::String(given), Some(uid))
            if given.eq_ignore_ascii_case(uid) =>
        {
            Ok(())
        }
        _ => Err(RestError::ServerSet(column.name.to_string())),
    }
}

impl Rest {
    fn checked_value(
        &self,
        access: &Access<'_>,
        column: &Column,
        json: &Json,
    ) -> Result<Value, RestError> {
        from_json(column, json, &|text| {
            self.pattern_matches(access.table, column, text)
        })
        .map_err(|message| RestError::InvalidValue {
            column: column.name.to_string(),
            message,
        })
    }

    /// The full new row: the client's values checked, server-set values filled,
    /// declared defaults applied, a uuid v7 made for a uuid primary key. Columns
    /// left to the database (an identity key, absent nullable columns) map to NULL.
    fn new_row(
        &self,
        access: &Access<'_>,
        caller: &Caller,
        object: &Map<String, Json>,
    ) -> Result<HashMap<Identifier, Value>, RestError> {
        let table = access.table;
        for key in object.keys() {
            if table.column(key).is_none() {
                return Err(RestError::UnknownColumn {
                    table: table.name.to_string(),
                    column: key.clone(),
                });
            }
        }
        let mut row = HashMap::with_capacity(table.columns.len());
        let generated_key = table.generated_key().map(|key| &key.name);
        for column in &table.columns {
            let generated = generated_key == Some(&column.name);
            let given = object.get(column.name.as_str());
            let value = match (&column.server_set, given) {
                // The service role (the app's own server) may set them, e.g. to seed data.
                (Some(_), Some(json)) if caller.is_service() => {
                    Some(self.checked_value(access, column, json)?)
                }
                (Some(_), Some(json)) => {
                    accept_server_set(column, json, caller)?;
                    None
                }
                (None, Some(json)) => Some(self.checked_value(access, column, json)?),
                (_, None) => None,
            };
            let value = match (value, &column.server_set) {
                (Some(value), _) => value,
                (None, Some(ServerValue::AuthUid)) => caller
                    .user_id()
                    .map_or(Value::Null, |id| Value::Text(id.to_owned())),
                (None, Some(ServerValue::Now)) => {
                    Value::Text(canonical_time(time::OffsetDateTime::now_utc()))
                }
                (None, Some(ServerValue::Literal(literal))) => literal_value(column, literal)?,
                (None, None) if generated && column.ty == ColumnType::Uuid => {
                    Value::Text(uuid::Uuid::now_v7().hyphenated().to_string())
                }
                (None, None) => match &column.default {
                    Some(literal) => literal_value(column, literal)?,
                    None => Value::Null,
                },
            };
            let database_fills = generated && column.ty.is_integral();
            if value == Value::Null && column.not_null && !database_fills {
                return Err(RestError::InvalidValue {
                    column: column.name.to_string(),
                    message: "a value is required".into(),
                });
            }
            row.insert(column.name.clone(), value);
        }
        Ok(row)
    }

    /// RETURNING the representation's columns, or just the key: the rows coming
    /// back is how a write learns how many rows it touched. With `every_column`
    /// the whole row follows, for the after-commit work (see `returned_row`).
    fn returning(
        sql: &mut StatementBuilder<Decided>,
        (outputs, table): (&[Output<'_>], &Table),
        every_column: bool,
    ) -> Result<(), RestError> {
        sql.push(" RETURNING ");
        if outputs.is_empty() {
            sql.output(None, table.primary_key());
        }
        for (i, output) in outputs.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.output_of(None, output)?;
        }
        if every_column {
            for column in &table.columns {
                sql.push(", ").output(None, column);
            }
        }
        Ok(())
    }

    /// The conflict target of an upsert: `on_conflict` columns, which must be the
    /// primary key or exactly a unique index, else the primary key.
    fn conflict_target<'t>(
        &self,
        access: &Access<'t>,
        request: &Request,
    ) -> Result<Vec<&'t Column>, RestError> {
        let table = access.table;
        if request.on_conflict.is_empty() {
            return Ok(table.key_columns());
        }
        let columns = request
            .on_conflict
            .iter()
            .map(|name| {
                table.column(name).ok_or_else(|| RestError::UnknownColumn {
                    table: table.name.to_string(),
                    column: name.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<Identifier> = columns.iter().map(|c| c.name.clone()).collect();
        let key: Vec<Identifier> = table.key_columns().iter().map(|c| c.name.clone()).collect();
        let same_set = |list: &[Identifier]| {
            list.len() == names.len() && list.iter().all(|name| names.contains(name))
        };
        let unique = same_set(&key)
            || table
                .indexes
                .iter()
                .any(|index| index.unique && same_set(&index.columns));
        if unique {
            Ok(columns)
        } else {
            Err(RestError::Body(
                "on_conflict must name the primary key or the columns of a unique constraint"
                    .into(),
            ))
        }
    }

    pub async fn insert(
        &self,
        db: Executor<'_>,
        caller: &Caller,
        table: &str,
        request: &Request,
        body: &Json,
        options: WriteOptions,
    ) -> Result<WriteResult, RestError> {
        refuse_embeds(request, &options)?;
        let access = self.access(table, Command::Insert, caller)?;
        let merges = options.resolution == Some(Resolution::MergeDuplicates);
        let hooks = self.hooks(table, (Event::Insert, merges.then_some(Event::Update)));
        if let (true, Executor::Pool(database)) = (hooks.any(), db) {
            let transaction = database.begin(hooks.write_limit());
            let written =
                Box::pin(self.insert((&transaction).into(), caller, table, request, body, options));
            return settle(&transaction, written.await).await;
        }
        let objects: Vec<&Map<String, Json>> = match body {
            Json::Object(object) => vec![object],
            Json::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_object()
                        .ok_or_else(|| RestError::Body("every array item must be an object".into()))
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(RestError::Body(
                    "the body must be a JSON object or an array of objects".into(),
                ));
            }
        };
        if objects.len() > self.settings.max_insert_rows {
            return Err(RestError::Body(format!(
                "at most {} rows per insert",
                self.settings.max_insert_rows
            )));
        }
        let returned = returned(&access, request, options)?;
        let check = access.with_check();
        let upsert = match options.resolution {
            None => None,
            Some(resolution) => {
                let target = self.conflict_target(&access, request)?;
                // Merging updates an existing row: the caller needs the update policy too.
                let update = match resolution {
                    Resolution::IgnoreDuplicates => None,
                    Resolution::MergeDuplicates => {
                        Some(self.access(table, Command::Update, caller)?)
                    }
                };
                Some((target, update))
            }
        };
        let mut statements = Vec::with_capacity(objects.len());
        // With after-commit work, an upsert's rows that already exist are
        // handed on as updates with their old selves.
        let mut existing = Vec::with_capacity(objects.len());
        let mut keys = Vec::new();
        // An identity key left out is the database's to fill: not in the INSERT.
        let identity = access
            .table
            .generated_key()
            .filter(|key| key.ty.is_integral());
        for object in objects {
            let mut row = self.new_row(&access, caller, object)?;
            if let (Some(triggers), Executor::Transaction(transaction)) = (&hooks.before, db) {
                row = self
                    .triggered((triggers.as_ref(), transaction), &access, row, None)
                    .await?;
            }
            if let (Some(_), Some((target, _))) = (&hooks.after, &upsert) {
                // The old rows are read before any is written: a key named
                // twice would report the second write against a stale row
                // (PostgreSQL refuses it in one statement too).
                let key: Vec<Value> = target.iter().map(|c| row[&c.name].clone()).collect();
                if keys.contains(&key) {
                    return Err(RestError::Body("an upsert names the same row twice".into()));
                }
                keys.push(key);
                existing.push(self.existing_row(db, access.table, target, &row).await?);
            }
            let columns: Vec<&Column> = access
                .table
                .columns
                .iter()
                .filter(|c| !(Some(*c) == identity && row.get(&c.name) == Some(&Value::Null)))
                .collect();
            let mut sql = StatementBuilder::new(db.dialect());
            sql.push("INSERT INTO ")
                .raw(&access.table.name.quoted())
                .push(" AS \"t0\" (")
                .raw(
                    &columns
                        .iter()
                        .map(|c| c.name.quoted())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
                .push(") SELECT ");
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.param(row[&column.name].clone(), Some(column.ty));
            }
            // The WHERE also keeps SQLite from reading ON CONFLICT as a join clause.
            sql.push(" WHERE (1 = 1)");
            let mut sql = sql.and_decision(&check, "t0", Some(&row));
            if let Some((target, update)) = &upsert {
                self.on_conflict(&mut sql, target, update.as_ref(), object, &row)?;
            }
            Self::returning(&mut sql, (&returned, access.table), hooks.after.is_some())?;
            statements.push(sql.finish());
        }
        let accept = match options.resolution {
            // A skipped duplicate returns no row; so does a row failing the check,
            // which is then not written either.
            Some(Resolution::IgnoreDuplicates) => at_most_one_row_each,
            _ => exactly_one_row_each,
        };
        let written = db
            .transaction_if(statements, accept)
            .await?
            .ok_or_else(|| RestError::CheckFailed(table.to_owned()))?;
        let rows: Vec<&Row> = written.iter().flatten().collect();
        if hooks.after.is_some() {
            let changes = written
                .iter()
                .enumerate()
                .filter_map(|(i, rows)| Some((rows.first()?, existing.get(i).cloned().flatten())))
                .map(|(row, old)| RowChange {
                    table,
                    event: if old.is_some() {
                        Event::Update
                    } else {
                        Event::Insert
                    },
                    new: Some(returned_row(access.table, row)),
                    old,
                })
                .collect();
            hooks.hand_over(db, changes).await?;
        }
        Ok(answer(&returned, rows.into_iter(), options))
    }

    /// `ON CONFLICT … DO NOTHING`, or `DO UPDATE SET` the columns the client sent,
    /// only where the update policy's `using` admits the existing row and its
    /// `with check` the changed one.
    fn on_conflict(
        &self,
        sql: &mut StatementBuilder<Decided>,
        target: &[&Column],
        update: Option<&Access<'_>>,
        object: &Map<String, Json>,
        row: &HashMap<Identifier, Value>,
    ) -> Result<(), RestError> {
        let names: Vec<String> = target.iter().map(|c| c.name.quoted()).collect();
        sql.push(" ON CONFLICT (")
            .raw(&names.join(", "))
            .push(") DO ");
        let Some(update) = update else {
            sql.push("NOTHING");
            return Ok(());
        };
        let mut changes = HashMap::new();
        let mut set = Vec::new();
        for column in &update.table.columns {
            let sent = object.contains_key(column.name.as_str());
            if !sent || column.server_set.is_some() || target.iter().any(|t| t.name == column.name)
            {
                continue;
            }
            update.writable(column)?;
            changes.insert(column.name.clone(), row[&column.name].clone());
            set.push(format!(
                "{name} = excluded.{name}",
                name = column.name.quoted()
            ));
        }
        if set.is_empty() {
            // Nothing to change: touch the key so the row still comes back.
            set.push(format!("{name} = excluded.{name}", name = names[0]));
        }
        sql.push("UPDATE SET ")
            .raw(&set.join(", "))
            .push(" WHERE (1 = 1)")
            .and_also(update.using(), "t0", None)
            .and_also(&update.with_check(), "t0", Some(&changes));
        Ok(())
    }

    pub async fn update(
        &self,
        db: Executor<'_>,
        caller: &Caller,
        table: &str,
        request: &Request,
        body: &Json,
        options: WriteOptions,
    ) -> Result<WriteResult, RestError> {
        refuse_embeds(request, &options)?;
        let access = self.access(table, Command::Update, caller)?;
        let hooks = self.hooks(table, (Event::Update, None));
        if let (true, Executor::Pool(database)) = (hooks.any(), db) {
            let transaction = database.begin(hooks.write_limit());
            let written =
                Box::pin(self.update((&transaction).into(), caller, table, request, body, options));
            return settle(&transaction, written.await).await;
        }
        let object = body.as_object().filter(|o| !o.is_empty()).ok_or_else(|| {
            RestError::Body("the body must be a JSON object with the columns to change".into())
        })?;
        if request.filters.is_empty() && !self.settings.allow_unfiltered_writes {
            return Err(RestError::Unfiltered("UPDATE"));
        }
        let mut changes = HashMap::new();
        let mut ordered = Vec::new();
        for (key, json) in object {
            let column = access
                .table
                .column(key)
                .ok_or_else(|| RestError::UnknownColumn {
                    table: access.table.name.to_string(),
                    column: key.clone(),
                })?;
            access.writable(column)?;
            if column.server_set.is_some() && !caller.is_service() {
                accept_server_set(column, json, caller)?;
                continue;
            }
            changes.insert(
                column.name.clone(),
                self.checked_value(&access, column, json)?,
            );
            ordered.push(column);
        }
        let returned = returned(&access, request, options)?;
        if let (Some(_), Executor::Transaction(transaction)) = (&hooks.before, db) {
            let rows = self
                .update_each((&hooks, transaction), &access, request, &changes, &returned)
                .await?;
            return Ok(answer(&returned, rows.iter(), options));
        }
        let name = access.table.name.quoted();
        // After-commit work needs each changed row's old self: the rows are
        // then read whole rather than counted, and joined to the new ones by key.
        let whole = hooks.after.is_some();

        // The rows the update may touch, counted to tell a row its new version
        // fails the `with check` on from a row that is simply not there. On
        // PostgreSQL they are locked as they are counted: a concurrent write
        // could otherwise change one between the count and the update, which
        // would then skip it (READ COMMITTED checks the filters again) and read
        // as a failed check.
        let visible = if whole {
            locked_rows_select(db.dialect(), &access, request)?
        } else {
            let mut count = StatementBuilder::new(db.dialect());
            count
                .push("SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT 1 FROM ")
                .raw(&name)
                .push(" AS \"t0\"");
            let mut count = where_clause(count, &access, request)?;
            if db.dialect() == Dialect::Postgres {
                count.push(" FOR UPDATE");
            }
            count.push(") AS \"visible\"");
            count
        };

        let mut update = StatementBuilder::new(db.dialect());
        // Only tolerated owner values sent make a no-op that still reports the rows.
        update_set(&mut update, access.table, &ordered, &changes);
        let mut update = where_clause(update, &access, request)?;
        update.and_also(&access.with_check(), "t0", Some(&changes));
        Self::returning(&mut update, (&returned, access.table), whole)?;
        let passed = if whole {
            every_read_row_written
        } else {
            every_visible_row_passed
        };
        let results = db
            .transaction_if(vec![visible.finish(), update.finish()], passed)
            .await?
            .ok_or_else(|| RestError::CheckFailed(table.to_owned()))?;
        let rows = &results[1];
        if whole {
            hooks
                .hand_over(db, updated_rows(access.table, &results[0], rows))
                .await?;
        }
        Ok(answer(&returned, rows.iter(), options))
    }

    pub async fn delete(
        &self,
        db: Executor<'_>,
        caller: &Caller,
        table: &str,
        request: &Request,
        options: WriteOptions,
    ) -> Result<WriteResult, RestError> {
        refuse_embeds(request, &options)?;
        let access = self.access(table, Command::Delete, caller)?;
        if request.filters.is_empty() && !self.settings.allow_unfiltered_writes {
            return Err(RestError::Unfiltered("DELETE"));
        }
        let hooks = self.hooks(table, (Event::Delete, None));
        if let (true, Executor::Pool(database)) = (hooks.any(), db) {
            let transaction = database.begin(hooks.write_limit());
            let written =
                Box::pin(self.delete((&transaction).into(), caller, table, request, options));
            return settle(&transaction, written.await).await;
        }
        if let (Some(triggers), Executor::Transaction(transaction)) = (&hooks.before, db) {
            for old in self.locked_rows(db, &access, request).await? {
                let change = RowChange {
                    table,
                    event: Event::Delete,
                    new: None,
                    old: Some(row_json(access.table, &by_column(access.table, old))),
                };
                triggers.before(transaction, caller, change).await?;
            }
        }
        let returned = returned(&access, request, options)?;
        let mut sql = StatementBuilder::new(db.dialect());
        sql.push("DELETE FROM ")
            .raw(&access.table.name.quoted())
            .push(" AS \"t0\"");
        let mut sql = where_clause(sql, &access, request)?;
        Self::returning(&mut sql, (&returned, access.table), hooks.after.is_some())?;
        let statement: Statement = sql.finish();
        let rows = db.transaction(vec![statement]).await?.remove(0);
        let changes = rows
            .iter()
            .map(|row| RowChange {
                table,
                event: Event::Delete,
                new: None,
                old: Some(returned_row(access.table, row)),
            })
            .collect();
        hooks.hand_over(db, changes).await?;
        Ok(answer(&returned, rows.iter(), options))
    }
}

impl Rest {
    /// The row the triggers leave for `row` (inserted, or `old` updated): each
    /// value they changed checked as a client's would be (type, checks); a key
    /// that is no column is refused.
    async fn triggered(
        &self,
        (triggers, transaction): (&dyn BeforeWrite, &Transaction),
        access: &Access<'_>,
        mut row: HashMap<Identifier, Value>,
        old: Option<&HashMap<Identifier, Value>>,
    ) -> Result<HashMap<Identifier, Value>, RestError> {
        let given = row_json(access.table, &row);
        let change = RowChange {
            table: access.table.name.as_str(),
            event: if old.is_some() {
                Event::Update
            } else {
                Event::Insert
            },
            new: Some(given.clone()),
            old: old.map(|old| row_json(access.table, old)),
        };
        let Some(returned) = triggers.before(transaction, access.caller, change).await? else {
            return Ok(row);
        };
        for (key, json) in returned {
            if given.get(&key) == Some(&json) {
                continue;
            }
            let column = access
                .table
                .column(&key)
                .ok_or_else(|| RestError::UnknownColumn {
                    table: access.table.name.to_string(),
                    column: key.clone(),
                })?;
            let value = if json.is_null() {
                Value::Null
            } else {
                self.checked_value(access, column, &json)?
            };
            if value == Value::Null && column.not_null {
                return Err(RestError::InvalidValue {
                    column: column.name.to_string(),
                    message: "a value is required".into(),
                });
            }
            row.insert(column.name.clone(), value);
        }
        Ok(row)
    }

    /// The row an upsert would merge into (by its conflict target), every
    /// column, read in the write's transaction before the write; not shown to
    /// the caller, only to the after-commit work, which then sees an update.
    async fn existing_row(
        &self,
        db: Executor<'_>,
        table: &Table,
        target: &[&Column],
        row: &HashMap<Identifier, Value>,
    ) -> Result<Option<Map<String, Json>>, RestError> {
        let mut select = StatementBuilder::without_policy(
            db.dialect(),
            "an upsert's existing row, for the after-commit work only",
        );
        every_column_of(&mut select, table);
        select.push(" WHERE (1 = 1)");
        for column in target {
            select.push(" AND ").column("t0", &column.name).push(" = ");
            select.param(row[&column.name].clone(), Some(column.ty));
        }
        if db.dialect() == Dialect::Postgres {
            // Held until the write: no other writer changes it in between.
            select.push(" FOR UPDATE");
        }
        let mut found = db.transaction(vec![select.finish()]).await?;
        Ok(found
            .pop()
            .and_then(|mut rows| rows.pop())
            .map(|old| row_json(table, &by_column(table, old))))
    }

    /// The rows a write's filters and policy select, every column, read inside
    /// the write's transaction (locked on PostgreSQL), for the triggers.
    async fn locked_rows(
        &self,
        db: Executor<'_>,
        access: &Access<'_>,
        request: &Request,
    ) -> Result<Vec<Row>, RestError> {
        let select = locked_rows_select(db.dialect(), access, request)?;
        // Through the transaction's write path: its locks and its view are the write's.
        let mut rows = db.transaction(vec![select.finish()]).await?;
        Ok(rows.pop().unwrap_or_default())
    }

    /// An update with hooks: each row its filters and policy select is
    /// changed, shown to the before triggers with its old self, written back by
    /// its key under the update policy's `using` and `with check`, and handed
    /// with its old self to the after-commit work.
    async fn update_each(
        &self,
        (hooks, transaction): (&Hooks, &Transaction),
        access: &Access<'_>,
        request: &Request,
        changes: &HashMap<Identifier, Value>,
        returned: &[Output<'_>],
    ) -> Result<Vec<Row>, RestError> {
        let db = Executor::Transaction(transaction);
        let table = access.table;
        let mut statements = Vec::new();
        let mut olds = Vec::new();
        for old in self.locked_rows(db, access, request).await? {
            let old = by_column(table, old);
            let mut new = old.clone();
            new.extend(
                changes
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone())),
            );
            if let Some(triggers) = &hooks.before {
                new = self
                    .triggered((triggers.as_ref(), transaction), access, new, Some(&old))
                    .await?;
            }
            let changed: HashMap<Identifier, Value> = new
                .into_iter()
                .filter(|(name, value)| old.get(name) != Some(value))
                .collect();
            let set: Vec<&Column> = table
                .columns
                .iter()
                .filter(|column| changed.contains_key(&column.name))
                .collect();
            let mut sql = StatementBuilder::new(db.dialect());
            update_set(&mut sql, table, &set, &changed);
            sql.push(" WHERE (1 = 1)");
            for key in table.key_columns() {
                sql.push(" AND ").column("t0", &key.name).push(" = ");
                sql.param(old[&key.name].clone(), Some(key.ty));
            }
            let mut sql = sql.and_decision(access.using(), "t0", None);
            sql.and_also(&access.with_check(), "t0", Some(&changed));
            Self::returning(&mut sql, (returned, table), hooks.after.is_some())?;
            statements.push(sql.finish());
            olds.push(old);
        }
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        let written: Vec<Row> = db
            .transaction_if(statements, exactly_one_row_each)
            .await?
            .ok_or_else(|| RestError::CheckFailed(table.name.to_string()))?
            .into_iter()
            .flatten()
            .collect();
        let handed = written
            .iter()
            .zip(&olds)
            .map(|(new, old)| RowChange {
                table: table.name.as_str(),
                event: Event::Update,
                new: Some(returned_row(table, new)),
                old: Some(row_json(table, old)),
            })
            .collect();
        hooks.hand_over(db, handed).await?;
        Ok(written)
    }
}

/// `SELECT` every column `FROM <table> AS "t0"`.
fn every_column_of<S>(sql: &mut StatementBuilder<S>, table: &Table) {
    sql.push("SELECT ");
    for (i, column) in table.columns.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.output(None, column);
    }
    sql.push(" FROM ")
        .raw(&table.name.quoted())
        .push(" AS \"t0\"");
}

/// The rows a write's filters and policy select, every column, locked on
/// PostgreSQL: what triggers and after-commit work see as the old rows.
fn locked_rows_select(
    dialect: Dialect,
    access: &Access<'_>,
    request: &Request,
) -> Result<StatementBuilder<Decided>, RestError> {
    let mut select = StatementBuilder::new(dialect);
    every_column_of(&mut select, access.table);
    let mut select = where_clause(select, access, request)?;
    if dialect == Dialect::Postgres {
        select.push(" FOR UPDATE");
    }
    Ok(select)
}

/// `UPDATE <table> AS "t0" SET` each of `columns` to its value in `values`;
/// with none, the key to itself (a no-op that still matches the rows).
fn update_set(
    sql: &mut StatementBuilder<Undecided>,
    table: &Table,
    columns: &[&Column],
    values: &HashMap<Identifier, Value>,
) {
    sql.push("UPDATE ")
        .raw(&table.name.quoted())
        .push(" AS \"t0\" SET ");
    if columns.is_empty() {
        let key = table.primary_key().name.quoted();
        sql.raw(&key).push(" = ").raw(&key);
    }
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.raw(&column.name.quoted()).push(" = ");
        sql.param(values[&column.name].clone(), Some(column.ty));
    }
}

/// Commits a write made in a transaction of its own (for its hooks), or
/// rolls it back when the write failed.
async fn settle(
    transaction: &Transaction,
    written: Result<WriteResult, RestError>,
) -> Result<WriteResult, RestError> {
    match written {
        Ok(result) => {
            transaction.commit().await?;
            Ok(result)
        }
        Err(error) => {
            transaction.rollback().await;
            Err(error)
        }
    }
}

/// What a write gives back: the select list's values with
/// `return=representation`, else nothing; the list is checked either way, so a
/// request naming an unknown column is refused whatever it prefers.
fn returned<'a>(
    access: &'a Access<'_>,
    request: &Request,
    options: WriteOptions,
) -> Result<Vec<Output<'a>>, RestError> {
    let selected = selected(access, &request.select)?;
    Ok(if options.representation {
        selected
    } else {
        Vec::new()
    })
}

/// The update wrote every row its filters and `using` matched (read whole
/// before it); a row missing means its new version failed the `with check`.
fn every_read_row_written(results: &[Vec<Row>]) -> bool {
    results[0].len() == results[1].len()
}

/// Each updated row (RETURNING every column at its end) with its old self,
/// found by its primary key among the rows read before the update.
fn updated_rows<'a>(table: &'a Table, old: &[Row], new: &[Row]) -> Vec<RowChange<'a>> {
    let key_of = |row: &Map<String, Json>| -> String {
        let key: Vec<&Json> = table
            .key_columns()
            .iter()
            .map(|column| row.get(column.name.as_str()).unwrap_or(&Json::Null))
            .collect();
        Json::from(key.into_iter().cloned().collect::<Vec<_>>()).to_string()
    };
    let mut old: HashMap<String, Map<String, Json>> = old
        .iter()
        .map(|row| {
            let old = row_json(table, &by_column(table, row.clone()));
            (key_of(&old), old)
        })
        .collect();
    new.iter()
        .map(|row| {
            let new = returned_row(table, row);
            RowChange {
                table: table.name.as_str(),
                event: Event::Update,
                // A row whose key the update changed has no old self here.
                old: old.remove(&key_of(&new)),
                new: Some(new),
            }
        })
        .collect()
}

fn exactly_one_row_each(results: &[Vec<Row>]) -> bool {
    results.iter().all(|rows| rows.len() == 1)
}

fn at_most_one_row_each(results: &[Vec<Row>]) -> bool {
    results.iter().all(|rows| rows.len() <= 1)
}

/// The update touched every row its filters and `using` matched; a row missing
/// means its new version failed the `with check`.
fn every_visible_row_passed(results: &[Vec<Row>]) -> bool {
    let visible = results[0]
        .first()
        .and_then(|row| row.integer(0).ok())
        .unwrap_or(-1);
    usize::try_from(visible).is_ok_and(|visible| visible == results[1].len())
}

/// What a write answers: how many rows it touched and, with
/// `return=representation`, the rows.
fn answer<'a>(
    returned: &[Output<'_>],
    rows: impl ExactSizeIterator<Item = &'a Row>,
    options: WriteOptions,
) -> WriteResult {
    WriteResult {
        affected: rows.len(),
        rows: if options.representation {
            rows.map(|row| row_object(returned, &row.0)).collect()
        } else {
            vec![]
        },
    }
}
