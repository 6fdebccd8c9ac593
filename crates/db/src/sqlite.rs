//! The embedded database: one writer connection (SQLite admits one writer at a
//! time, so queueing writes here is cheaper than letting them fight over the file
//! lock) and a bounded set of read-only connections, all used off the async
//! threads. WAL with `synchronous = FULL` makes every commit durable before it
//! returns, so an acknowledged write survives kill -9 and power loss alike.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::Semaphore;

use crate::{DbError, Dialect, PoolOptions, Result, Row, Statement, Value};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct SqlitePool {
    writer: Arc<tokio::sync::Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    reader_slots: Arc<Semaphore>,
    acquire_timeout: Duration,
}

impl SqlitePool {
    pub async fn open(path: &Path, options: PoolOptions) -> Result<Self> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|source| DbError::Folder {
                path: folder.to_path_buf(),
                source,
            })?;
        }
        let path = path.to_path_buf();
        let reader_count = options.max_connections.max(1);
        let (writer, readers) = tokio::task::spawn_blocking(move || -> Result<_> {
            let writer = Connection::open(&path)?;
            configure(&writer)?;
            let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(%mode, "SQLite refused WAL mode; writes stay durable but readers block writers");
            }
            writer.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
            let readers = (0..reader_count)
                .map(|_| {
                    let reader = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    configure(&reader)?;
                    Ok(reader)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((writer, readers))
        })
        .await
        .map_err(|join| DbError::Pool(join.to_string()))??;
        Ok(Self {
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            readers: Arc::new(Mutex::new(readers)),
            reader_slots: Arc::new(Semaphore::new(reader_count)),
            acquire_timeout: options.acquire_timeout,
        })
    }

    pub async fn query(&self, statement: Statement) -> Result<Vec<Row>> {
        let slot = tokio::time::timeout(
            self.acquire_timeout,
            self.reader_slots.clone().acquire_owned(),
        )
        .await
        .map_err(|_| DbError::PoolTimeout)?
        .map_err(|closed| DbError::Pool(closed.to_string()))?;
        let readers = self.readers.clone();
        // The blocking task takes the connection and puts it back itself, and holds
        // the slot until then: if the request is dropped mid-query (a client hung
        // up), the connection still returns to the pool.
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let connection = readers
                .lock()
                .map_err(|poisoned| DbError::Pool(poisoned.to_string()))?
                .pop()
                .ok_or_else(|| DbError::Pool("reader slot without a connection".into()))?;
            let rows = run(&connection, &statement);
            readers
                .lock()
                .map_err(|poisoned| DbError::Pool(poisoned.to_string()))?
                .push(connection);
            rows
        })
        .await
        .map_err(|join| DbError::Pool(join.to_string()))?
    }

    pub async fn transaction_if(
        &self,
        statements: Vec<Statement>,
        accept: fn(&[Vec<Row>]) -> bool,
    ) -> Result<Option<Vec<Vec<Row>>>> {
        let mut writer =
            tokio::time::timeout(self.acquire_timeout, self.writer.clone().lock_owned())
                .await
                .map_err(|_| DbError::PoolTimeout)?;
        tokio::task::spawn_blocking(move || {
            let transaction = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let results = statements
                .iter()
                .map(|statement| run(&transaction, statement))
                .collect::<Result<Vec<_>>>()?;
            if !accept(&results) {
                // Dropping the transaction rolls it back.
                return Ok(None);
            }
            transaction.commit()?;
            Ok(Some(results))
        })
        .await
        .map_err(|join| DbError::Pool(join.to_string()))?
    }
}

/// Settings every connection gets. SQLite by default reads a double-quoted name
/// that matches no column as a string literal, so a misspelt identifier would
/// silently compare against text; with DQS off it is an error, as in PostgreSQL.
fn configure(connection: &Connection) -> Result<()> {
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false)?;
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DDL, false)?;
    // LIKE is case-sensitive, as in PostgreSQL; ILIKE is compiled with lower().
    connection.execute_batch("PRAGMA case_sensitive_like = ON")?;
    connection.create_scalar_function(
        "gatehouse_json_contains",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |context| {
            let parse = |index: usize| -> rusqlite::Result<Option<serde_json::Value>> {
                Ok(context
                    .get::<Option<String>>(index)?
                    .and_then(|text| serde_json::from_str(&text).ok()))
            };
            Ok(match (parse(0)?, parse(1)?) {
                (Some(container), Some(contained)) => {
                    Some(crate::json::contains(&container, &contained))
                }
                _ => None,
            })
        },
    )?;
    Ok(())
}

fn run(connection: &Connection, statement: &Statement) -> Result<Vec<Row>> {
    let mut prepared = connection.prepare_cached(statement.text(Dialect::Sqlite))?;
    let width = prepared.column_count();
    let mut rows = prepared.query(rusqlite::params_from_iter(statement.params.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..width)
            .map(|column| row.get_ref(column).map(from_sqlite))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push(Row(values));
    }
    Ok(out)
}

fn from_sqlite(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(number) => Value::Integer(number),
        ValueRef::Real(number) => Value::Real(number),
        ValueRef::Text(bytes) => Value::Text(String::from_utf8_lossy(bytes).into_owned()),
        ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(number) => ToSqlOutput::Borrowed(ValueRef::Integer(*number)),
            Value::Real(number) => ToSqlOutput::Borrowed(ValueRef::Real(*number)),
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Blob(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
            Value::Bool(flag) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*flag))),
        })
    }
}
