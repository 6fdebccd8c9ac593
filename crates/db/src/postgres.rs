//! PostgreSQL through a bounded deadpool pool. Commits wait for the WAL flush
//! (`synchronous_commit = on`, forced per connection so a server default cannot
//! weaken it), which is what makes an acknowledged write survive a crash.

use std::error::Error;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{GenericClient, NoTls};

use crate::{DbError, Dialect, PoolOptions, Result, Row, Statement, Value};

#[derive(Clone)]
pub struct PgPool {
    pool: Pool,
    /// How to open a connection of its own (a listener holds one apart from
    /// the pool for as long as it listens).
    config: std::sync::Arc<tokio_postgres::Config>,
}

/// Notifications on one channel (`LISTEN`), over a connection of their own.
/// [`Listener::next`] answers `None` once that connection has ended: the
/// owner reconnects, knowing it may have missed notifications meanwhile.
pub struct Listener {
    // Dropping the client closes the connection, which ends the task below.
    _client: tokio_postgres::Client,
    payloads: tokio::sync::mpsc::Receiver<String>,
}

impl Listener {
    pub async fn next(&mut self) -> Option<String> {
        self.payloads.recv().await
    }
}

/// Notifications read ahead of their reader before the connection stops
/// reading (PostgreSQL then keeps them in its own bounded queue).
const LISTENED_AHEAD: usize = 1024;

impl PgPool {
    pub async fn open(url: &SecretString, options: PoolOptions) -> Result<Self> {
        let mut config = parse_url(url)?;
        // UTC, so times come back in one canonical form on every connection.
        config.options(format!(
            "-c synchronous_commit=on -c TimeZone=UTC -c statement_timeout={}",
            options.statement_timeout.as_millis()
        ));
        config.application_name("gatehouse");
        config.connect_timeout(options.acquire_timeout);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .wait_timeout(Some(options.acquire_timeout))
            .create_timeout(Some(options.acquire_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|error| DbError::Pool(error.to_string()))?;
        let pool = Self {
            pool,
            config: config.into(),
        };
        // Fail at start-up, not on the first request, when the server is unreachable.
        drop(pool.client().await?);
        Ok(pool)
    }

    /// Listens on `channel` (a fixed name, written in the code).
    pub async fn listen(&self, channel: &'static str) -> Result<Listener> {
        if channel.is_empty() || !channel.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(DbError::Pool(format!("not a channel name: {channel}")));
        }
        let (client, mut connection) = self.config.connect(NoTls).await?;
        let (sender, payloads) = tokio::sync::mpsc::channel(LISTENED_AHEAD);
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(notification)) => {
                        if sender
                            .send(notification.payload().to_owned())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "a listening connection to PostgreSQL ended");
                        return;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        Ok(Listener {
            _client: client,
            payloads,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|error| match error {
            deadpool_postgres::PoolError::Timeout(_) => DbError::PoolTimeout,
            deadpool_postgres::PoolError::Backend(source) => DbError::Postgres(source),
            other => DbError::Pool(other.to_string()),
        })
    }

    pub async fn query(&self, statement: Statement) -> Result<Vec<Row>> {
        let client = self.client().await?;
        run(&**client, &statement).await.map_err(timed_out)
    }

    pub async fn transaction_if(
        &self,
        statements: Vec<Statement>,
        accept: fn(&[Vec<Row>]) -> bool,
    ) -> Result<Option<Vec<Vec<Row>>>> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let mut results = Vec::with_capacity(statements.len());
        for statement in &statements {
            results.push(run(&*transaction, statement).await.map_err(timed_out)?);
        }
        if !accept(&results) {
            transaction.rollback().await?;
            return Ok(None);
        }
        transaction.commit().await?;
        Ok(Some(results))
    }
}

impl PgPool {
    /// Begins a transaction on a connection of its own, which it keeps until
    /// it commits or is dropped (then rolled back).
    pub async fn begin(&self, limit: Duration) -> Result<PgTransaction> {
        let client = self.client().await?;
        client.batch_execute("BEGIN").await?;
        Ok(PgTransaction {
            client: Some(client),
            until: Instant::now() + limit,
        })
    }
}

/// A transaction holding one connection, to be finished by `until`.
pub struct PgTransaction {
    /// None once the transaction is lost (it ran past its limit).
    client: Option<deadpool_postgres::Object>,
    until: Instant,
}

impl PgTransaction {
    /// Runs statements inside the transaction in a savepoint, kept when they
    /// succeed and `accept` takes their rows, rolled back to otherwise.
    pub async fn run(
        &mut self,
        statements: Vec<Statement>,
        accept: fn(&[Vec<Row>]) -> bool,
    ) -> Result<Option<Vec<Vec<Row>>>> {
        let left = self.time_left()?;
        let client = self.client.as_ref().ok_or(DbError::TransactionExpired)?;
        let step = async {
            client.batch_execute("SAVEPOINT gatehouse_step").await?;
            let mut results = Vec::with_capacity(statements.len());
            for statement in &statements {
                match run(&***client, statement).await {
                    Ok(rows) => results.push(rows),
                    Err(error) => {
                        client
                            .batch_execute("ROLLBACK TO SAVEPOINT gatehouse_step")
                            .await?;
                        return Err(timed_out(error));
                    }
                }
            }
            if accept(&results) {
                client
                    .batch_execute("RELEASE SAVEPOINT gatehouse_step")
                    .await?;
                Ok(Some(results))
            } else {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT gatehouse_step")
                    .await?;
                Ok(None)
            }
        };
        match tokio::time::timeout(left, step).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.abandon();
                Err(DbError::TransactionExpired)
            }
        }
    }

    pub async fn commit(mut self) -> Result<()> {
        self.time_left()?;
        let client = self.client.take().ok_or(DbError::TransactionExpired)?;
        client.batch_execute("COMMIT").await?;
        Ok(())
    }

    /// Rolls back and returns the connection to the pool (or closes it, when
    /// the rollback fails).
    pub async fn rollback(mut self) {
        if let Some(client) = self.client.take()
            && client.batch_execute("ROLLBACK").await.is_err()
        {
            drop(deadpool_postgres::Object::take(client));
        }
    }

    /// The time left before the limit; past it, the transaction is abandoned.
    fn time_left(&mut self) -> Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.abandon();
            return Err(DbError::TransactionExpired);
        }
        Ok(left)
    }

    /// Closes the connection rather than pooling it: the server rolls the
    /// transaction back, and no later user finds it open.
    fn abandon(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// PostgreSQL's `statement_timeout` cancellation, named as on SQLite.
fn timed_out(error: DbError) -> DbError {
    match &error {
        DbError::Postgres(source)
            if source.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) =>
        {
            DbError::StatementTimeout
        }
        _ => error,
    }
}

pub(crate) fn parse_url(url: &SecretString) -> Result<tokio_postgres::Config> {
    // The parser's message can quote the URL, password included: keep it out.
    tokio_postgres::Config::from_str(url.expose_secret())
        .map_err(|_| DbError::InvalidUrl("not a valid postgres:// connection string".into()))
}

async fn run(client: &impl GenericClient, statement: &Statement) -> Result<Vec<Row>> {
    let prepared = client.prepare(statement.text(Dialect::Postgres)).await?;
    let params: Vec<&(dyn ToSql + Sync)> = statement
        .params
        .iter()
        .map(|value| value as &(dyn ToSql + Sync))
        .collect();
    let rows = client.query(&prepared, &params).await?;
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|column| from_postgres(row, column))
                .collect::<Result<Vec<_>>>()
                .map(Row)
        })
        .collect()
}

fn from_postgres(row: &tokio_postgres::Row, column: usize) -> Result<Value> {
    let ty = row.columns()[column].type_();
    let value = match *ty {
        Type::BOOL => row.try_get::<_, Option<bool>>(column)?.map(Value::Bool),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(column)?
            .map(|n| Value::Integer(n.into())),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(column)?
            .map(|n| Value::Integer(n.into())),
        Type::INT8 => row.try_get::<_, Option<i64>>(column)?.map(Value::Integer),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(column)?
            .map(|n| Value::Real(n.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(column)?.map(Value::Real),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(column)?.map(Value::Blob),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            row.try_get::<_, Option<String>>(column)?.map(Value::Text)
        }
        _ => return Err(DbError::Decode(column)),
    };
    Ok(value.unwrap_or(Value::Null))
}

/// Binds a [`Value`] to whatever type PostgreSQL inferred for the parameter, so one
/// statement works whether a column is `int4` or `int8`, `text` or `varchar`.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(number) => match *ty {
                Type::INT2 => i16::try_from(*number)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*number)?.to_sql(ty, out),
                Type::FLOAT8 => (*number as f64).to_sql(ty, out),
                _ => number.to_sql(ty, out),
            },
            Value::Real(number) => match *ty {
                Type::FLOAT4 => (*number as f32).to_sql(ty, out),
                _ => number.to_sql(ty, out),
            },
            Value::Text(text) => text.as_str().to_sql(ty, out),
            Value::Blob(bytes) => bytes.as_slice().to_sql(ty, out),
            Value::Bool(flag) => flag.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}
