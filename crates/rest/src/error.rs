use gatehouse_db::{Constraint, DbError};

/// Why a data request failed. Each maps to one status and one PostgREST code in
/// the edge; messages name the table or column but never SQL.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("Could not find the table '{0}' in the schema cache")]
    UnknownTable(String),
    #[error("Could not find the '{column}' column of '{table}' in the schema cache")]
    UnknownColumn { table: String, column: String },
    #[error("permission denied for table {0}")]
    TableDenied(String),
    #[error("permission denied for column {column} of table {table}")]
    ColumnDenied { table: String, column: String },
    #[error("column {0} is set by the server and cannot be given")]
    ServerSet(String),
    #[error("new row violates row-level security policy for table \"{0}\"")]
    CheckFailed(String),
    #[error("invalid value for column {column}: {message}")]
    InvalidValue { column: String, message: String },
    #[error("{0}")]
    Query(#[from] gatehouse_query::QueryError),
    #[error("{0}")]
    Body(String),
    #[error(
        "{0} requires a filter; add one (to touch every row, filter on the primary key being not null)"
    )]
    Unfiltered(&'static str),
    #[error("the token's role is not anon or authenticated")]
    UnknownRole,
    #[error("JSON object requested, multiple (or no) rows returned")]
    NotSingular(usize),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Search(#[from] gatehouse_search::SearchError),
    #[error("{0}")]
    Relationship(String),
    #[error("the row conflicts with an existing one (duplicate key)")]
    Conflict,
    #[error("the row references a missing row, or is still referenced")]
    ForeignKey,
    #[error("the row breaks a check of the table")]
    Check,
    #[error("a required column has no value")]
    NotNull,
    /// A trigger refused the write, in its own words.
    #[error("{0}")]
    Raised(String),
    /// A trigger could not run to the end (its time or memory): the detail is
    /// for the log.
    #[error("a trigger failed: {0}")]
    TriggerFailed(String),
    #[error("database failure")]
    Database(DbError),
}

impl RestError {
    /// PostgREST's code for the failure (PostgreSQL's own where PostgREST
    /// passes one through); `None` for a database failure, whose detail is for
    /// the log only.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            RestError::UnknownTable(_) => "PGRST205",
            RestError::UnknownColumn { .. } => "42703",
            RestError::TableDenied(_) | RestError::ColumnDenied { .. } => "42501",
            RestError::CheckFailed(_) => "42501",
            RestError::ServerSet(_) => "server_set_column",
            RestError::InvalidValue { .. } => "22P02",
            RestError::Query(_) | RestError::Unsupported(_) => "PGRST100",
            RestError::Body(_) => "PGRST102",
            RestError::Search(gatehouse_search::SearchError::Syntax(_)) => "42601",
            RestError::Search(gatehouse_search::SearchError::UnknownLanguage(_)) => "42704",
            RestError::Search(gatehouse_search::SearchError::Unsupported(_)) => "0A000",
            RestError::Relationship(_) => "PGRST200",
            RestError::Unfiltered(_) => "21000",
            RestError::UnknownRole => "PGRST301",
            RestError::NotSingular(_) => "PGRST116",
            RestError::Conflict => "23505",
            RestError::ForeignKey => "23503",
            RestError::Check => "23514",
            RestError::NotNull => "23502",
            RestError::Raised(_) => "P0001",
            RestError::Database(_) | RestError::TriggerFailed(_) => return None,
        })
    }
}

impl From<DbError> for RestError {
    fn from(error: DbError) -> Self {
        match error.constraint() {
            Some(Constraint::Unique) => RestError::Conflict,
            Some(Constraint::ForeignKey) => RestError::ForeignKey,
            Some(Constraint::Check) => RestError::Check,
            Some(Constraint::NotNull) => RestError::NotNull,
            None => RestError::Database(error),
        }
    }
}
