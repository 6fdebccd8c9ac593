//! One interface over the embedded SQLite database and PostgreSQL.
//!
//! This crate owns connections, pools, durability settings and Gatehouse's own
//! migrations. Invariant: SQL reaches a connection only as a [`Statement`]: either a
//! [`Sql`] pair of `'static` texts (one per dialect) or SQL compiled from the
//! declared schema, plus bound values, so request text is never spliced into SQL.

mod declared;
pub mod json;
mod migrations;
pub mod path_parts;
mod postgres;
mod search;
mod sqlite;
mod statement;
#[cfg(feature = "testing")]
pub mod testing;
mod transaction;

use std::path::PathBuf;
use std::time::Duration;

pub use declared::{MigrateOptions, Migration};
pub use postgres::Listener;
pub use statement::{Row, Sql, Statement, Value};
pub use transaction::{Executor, Transaction};

pub use gatehouse_core::Dialect;

/// The log target under which every statement's text is written at trace
/// level (`GATEHOUSE_LOG=gatehouse_db::statement=trace`).
pub const STATEMENT_LOG: &str = "gatehouse_db::statement";

/// Where the data lives, decided once at start-up.
#[derive(Clone)]
pub enum Location {
    /// The embedded database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string; it may carry a password, so it is never printed.
    Postgres(secrecy::SecretString),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
            Location::Postgres(_) => f.write_str("Postgres([redacted])"),
        }
    }
}

impl Location {
    /// The password a PostgreSQL location carries, if any, for production checks.
    pub fn postgres_password(&self) -> Result<Option<secrecy::SecretString>> {
        let Location::Postgres(url) = self else {
            return Ok(None);
        };
        let config = postgres::parse_url(url)?;
        Ok(config
            .get_password()
            .map(|password| String::from_utf8_lossy(password).into_owned().into()))
    }
}

/// Pool bounds: every caller waits at most `acquire_timeout` for a connection, and
/// a statement runs at most `statement_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_connections: usize,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    #[error("no database connection became free in time")]
    PoolTimeout,
    #[error("the statement ran longer than its timeout and was cancelled")]
    StatementTimeout,
    #[error("database pool: {0}")]
    Pool(String),
    #[error("the transaction ran past its limit and was rolled back")]
    TransactionExpired,
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: Box<DbError>,
    },
    #[error("the database was written by a newer Gatehouse (migration {0} is unknown)")]
    NewerSchema(i64),
    #[error("cannot create the database folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Schema(gatehouse_schema::SchemaError),
    #[error("refusing destructive steps without --allow-destructive: {}", .0.join("; "))]
    Destructive(Vec<String>),
    #[error("unexpected value in column {0}")]
    Decode(usize),
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// How Gatehouse's own tables store times: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, fixed
/// width, so they compare and sort as text on both databases.
pub fn timestamp(at: time::OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.microsecond()
    )
}

/// Which integrity rule a failed write broke, in either dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    Unique,
    ForeignKey,
    Check,
    NotNull,
}

impl DbError {
    pub fn constraint(&self) -> Option<Constraint> {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(error, _)) => {
                match error.extended_code {
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => Some(Constraint::Unique),
                    rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Some(Constraint::ForeignKey),
                    rusqlite::ffi::SQLITE_CONSTRAINT_CHECK => Some(Constraint::Check),
                    rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL => Some(Constraint::NotNull),
                    _ => None,
                }
            }
            DbError::Postgres(error) => {
                use tokio_postgres::error::SqlState;
                match error.code()? {
                    code if *code == SqlState::UNIQUE_VIOLATION => Some(Constraint::Unique),
                    code if *code == SqlState::FOREIGN_KEY_VIOLATION => {
                        Some(Constraint::ForeignKey)
                    }
                    code if *code == SqlState::CHECK_VIOLATION => Some(Constraint::Check),
                    code if *code == SqlState::NOT_NULL_VIOLATION => Some(Constraint::NotNull),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// The storage layer every service uses; cheap to clone.
#[derive(Clone)]
pub enum Database {
    Sqlite(sqlite::SqlitePool),
    Postgres(postgres::PgPool),
}

impl Database {
    /// Opens (creating if needed) the database and applies Gatehouse's own migrations.
    pub async fn open(location: &Location, options: PoolOptions) -> Result<Self> {
        let db = match location {
            Location::Sqlite(path) => {
                Database::Sqlite(sqlite::SqlitePool::open(path, options).await?)
            }
            Location::Postgres(url) => {
                Database::Postgres(postgres::PgPool::open(url, options).await?)
            }
        };
        migrations::apply(&db).await?;
        Ok(db)
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Database::Sqlite(_) => Dialect::Sqlite,
            Database::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs one read-only statement and returns its rows.
    pub async fn query(&self, statement: Statement) -> Result<Vec<Row>> {
        self.trace(std::slice::from_ref(&statement));
        match self {
            Database::Sqlite(pool) => pool.query(statement).await,
            Database::Postgres(pool) => pool.query(statement).await,
        }
    }

    /// Runs statements in one transaction, committed durably before this returns;
    /// on any error nothing of it is kept. Returns each statement's rows.
    pub async fn transaction(&self, statements: Vec<Statement>) -> Result<Vec<Vec<Row>>> {
        Executor::Pool(self).transaction(statements).await
    }

    /// Like [`Database::transaction`], but `accept` sees every statement's rows
    /// before the commit; when it says no, nothing is kept and `Ok(None)` comes back.
    /// The caller uses it for checks that need the written rows, such as a row
    /// policy's `with check`.
    pub async fn transaction_if(
        &self,
        statements: Vec<Statement>,
        accept: fn(&[Vec<Row>]) -> bool,
    ) -> Result<Option<Vec<Vec<Row>>>> {
        self.trace(&statements);
        match self {
            Database::Sqlite(pool) => pool.transaction_if(statements, accept).await,
            Database::Postgres(pool) => pool.transaction_if(statements, accept).await,
        }
    }

    /// Each statement's text at trace level under [`STATEMENT_LOG`], never its
    /// parameters (they carry the request's values, some of them secret).
    fn trace(&self, statements: &[Statement]) {
        if tracing::enabled!(target: STATEMENT_LOG, tracing::Level::TRACE) {
            for statement in statements {
                tracing::trace!(target: STATEMENT_LOG, sql = statement.text(self.dialect()));
            }
        }
    }

    /// The plan the database would use for a read, one line per step.
    pub async fn explain(&self, statement: Statement) -> Result<Vec<String>> {
        let dialect = self.dialect();
        let detail_column = match dialect {
            Dialect::Sqlite => 3,
            Dialect::Postgres => 0,
        };
        let rows = self.query(statement.explained(dialect)).await?;
        rows.iter()
            .map(|row| row.text(detail_column).map(str::to_owned))
            .collect()
    }

    /// Notifications on `channel` (`LISTEN`/`NOTIFY`), where the database has
    /// them: PostgreSQL does, an embedded SQLite (one instance) does not.
    pub async fn listen(&self, channel: &'static str) -> Result<Option<Listener>> {
        match self {
            Database::Sqlite(_) => Ok(None),
            Database::Postgres(pool) => pool.listen(channel).await.map(Some),
        }
    }

    /// Answers whether the database serves queries and carries Gatehouse's tables.
    pub async fn ping(&self) -> Result<()> {
        migrations::current_version(self).await.map(|_| ())
    }

    /// Reads one value of Gatehouse's own key/value table.
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        let rows = self
            .query(Statement::new(&migrations::GET_META, vec![key.into()]))
            .await?;
        rows.first()
            .map(|row| row.text(0).map(str::to_owned))
            .transpose()
    }

    /// Writes one value of Gatehouse's own key/value table, durably.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.transaction(vec![Statement::new(
            &migrations::SET_META,
            vec![key.into(), value.into()],
        )])
        .await
        .map(|_| ())
    }
}
