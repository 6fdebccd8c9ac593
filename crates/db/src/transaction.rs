//! A transaction held open across awaits, for work that mixes reads, writes
//! and its own logic between them (a function's invocation), and the
//! [`Executor`] that lets the same code run on the pool or inside one.
//!
//! It begins at the first write: reads before it run on the pool, each seeing
//! the latest commit (as every statement does under PostgreSQL's READ
//! COMMITTED). From the first write to the commit it holds a connection, and on
//! SQLite the one writer, so that span is bounded by a limit of its own: past
//! it, everything written is rolled back and the next step or the commit fails
//! with [`DbError::TransactionExpired`].

use std::sync::Arc;
use std::time::Duration;

use crate::{Database, DbError, Dialect, Result, Row, Statement, postgres, sqlite};

type Outcome = Result<Option<Vec<Vec<Row>>>>;

/// Cheap to clone: the clones share the one transaction (a function's code
/// and the triggers its writes run).
#[derive(Clone)]
pub struct Transaction(Arc<Shared>);

struct Shared {
    database: Database,
    limit: Duration,
    open: tokio::sync::Mutex<Option<Open>>,
    /// What waits for the commit (see [`Transaction::on_commit`]).
    committed: std::sync::Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

enum Open {
    Sqlite(sqlite::OpenTransaction),
    Postgres(Box<postgres::PgTransaction>),
}

impl Database {
    /// A transaction that begins at its first write and may stay open `limit`
    /// from then to its commit. Dropping it uncommitted rolls it back.
    pub fn begin(&self, limit: Duration) -> Transaction {
        Transaction(Arc::new(Shared {
            database: self.clone(),
            limit,
            open: tokio::sync::Mutex::new(None),
            committed: std::sync::Mutex::new(Vec::new()),
        }))
    }
}

impl Transaction {
    pub fn dialect(&self) -> Dialect {
        self.0.database.dialect()
    }

    /// Whether anything has been written (and so would be committed).
    pub async fn is_writing(&self) -> bool {
        self.0.open.lock().await.is_some()
    }

    /// A read: on the pool until the first write, inside the transaction after.
    pub async fn query(&self, statement: Statement) -> Result<Vec<Row>> {
        let mut open = self.0.open.lock().await;
        match open.as_mut() {
            None => {
                drop(open);
                self.0.database.query(statement).await
            }
            Some(open) => {
                self.0.database.trace(std::slice::from_ref(&statement));
                let mut rows = run(open, vec![statement], |_| true)
                    .await?
                    .ok_or_else(|| DbError::Pool("a read was refused".into()))?;
                Ok(rows.pop().unwrap_or_default())
            }
        }
    }

    /// Writes inside the transaction (beginning it if this is the first), in a
    /// savepoint: kept when every statement succeeds and `accept` takes their
    /// rows, undone otherwise, leaving the transaction's earlier writes alone.
    pub async fn transaction_if(
        &self,
        statements: Vec<Statement>,
        accept: fn(&[Vec<Row>]) -> bool,
    ) -> Outcome {
        self.0.database.trace(&statements);
        let mut open = self.0.open.lock().await;
        let open = match &mut *open {
            Some(open) => open,
            unopened => unopened.insert(match &self.0.database {
                Database::Sqlite(pool) => Open::Sqlite(pool.begin(self.0.limit).await?),
                Database::Postgres(pool) => {
                    Open::Postgres(Box::new(pool.begin(self.0.limit).await?))
                }
            }),
        };
        run(open, statements, accept).await
    }

    /// Makes every write durable; with nothing written, does nothing. A later
    /// write would begin a new transaction.
    pub async fn commit(&self) -> Result<()> {
        let open = self.0.open.lock().await.take();
        let then = self.take_committed();
        match open {
            // The writer runs them, before any later commit.
            Some(Open::Sqlite(open)) => return open.commit(then).await,
            Some(Open::Postgres(open)) => open.commit().await?,
            None => {}
        }
        for then in then {
            then();
        }
        Ok(())
    }

    /// Undoes every write (as dropping the transaction does, but at once,
    /// while the transaction itself may still be shared).
    pub async fn rollback(&self) {
        let open = self.0.open.lock().await.take();
        drop(self.take_committed());
        if let Some(Open::Postgres(open)) = open {
            open.rollback().await;
        }
    }

    /// Runs `then` once this transaction has committed, and never if it
    /// rolls back: work that must follow the commit, whoever commits (the
    /// data API for its own write, a function for its whole call).
    pub fn on_commit(&self, then: impl FnOnce() + Send + 'static) {
        if let Ok(mut committed) = self.0.committed.lock() {
            committed.push(Box::new(then));
        }
    }

    fn take_committed(&self) -> Vec<Box<dyn FnOnce() + Send>> {
        self.0
            .committed
            .lock()
            .map(|mut committed| std::mem::take(&mut *committed))
            .unwrap_or_default()
    }
}

async fn run(
    open: &mut Open,
    statements: Vec<Statement>,
    accept: fn(&[Vec<Row>]) -> bool,
) -> Outcome {
    match open {
        Open::Sqlite(open) => open.run(statements, accept).await,
        Open::Postgres(open) => open.run(statements, accept).await,
    }
}

/// Where statements run: each on the pool (a write its own transaction), or
/// inside one open [`Transaction`].
#[derive(Clone, Copy)]
pub enum Executor<'a> {
    Pool(&'a Database),
    Transaction(&'a Transaction),
}

impl<'a> From<&'a Database> for Executor<'a> {
    fn from(database: &'a Database) -> Self {
        Executor::Pool(database)
    }
}

impl<'a> From<&'a Transaction> for Executor<'a> {
    fn from(transaction: &'a Transaction) -> Self {
        Executor::Transaction(transaction)
    }
}

impl Executor<'_> {
    pub fn dialect(&self) -> Dialect {
        match self {
            Executor::Pool(database) => database.dialect(),
            Executor::Transaction(transaction) => transaction.dialect(),
        }
    }

    pub async fn query(&self, statement: Statement) -> Result<Vec<Row>> {
        match self {
            Executor::Pool(database) => database.query(statement).await,
            Executor::Transaction(transaction) => transaction.query(statement).await,
        }
    }

    pub async fn transaction_if(
        &self,
        statements: Vec<Statement>,
        accept: fn(&[Vec<Row>]) -> bool,
    ) -> Outcome {
        match self {
            Executor::Pool(database) => database.transaction_if(statements, accept).await,
            Executor::Transaction(transaction) => {
                transaction.transaction_if(statements, accept).await
            }
        }
    }

    pub async fn transaction(&self, statements: Vec<Statement>) -> Result<Vec<Vec<Row>>> {
        self.transaction_if(statements, |_| true)
            .await?
            .ok_or_else(|| DbError::Pool("an unconditional transaction was refused".into()))
    }
}
