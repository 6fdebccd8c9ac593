//! The embedded database: one writer connection on its own thread (SQLite admits
//! one writer at a time, so queueing writes here is cheaper than letting them fight
//! over the file lock) and a bounded set of read-only connections, all used off the
//! async threads. WAL with `synchronous = FULL` makes every commit durable before it
//! returns, so an acknowledged write survives kill -9 and power loss alike.
//!
//! Group commit: the writer takes every write waiting in its queue (up to
//! [`GROUP_LIMIT`]) into one SQLite transaction, each in its own savepoint, and
//! answers them all after the one commit and its one fsync. Each write is still
//! atomic and sees the ones before it, exactly as if they had run one by one; the
//! fsync, which bounds durable writes per second, is shared.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::Semaphore;

use crate::{DbError, Dialect, PoolOptions, Result, Row, Statement, Value};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Writes waiting for the writer; a full queue makes callers wait (and time out).
const WRITE_QUEUE: usize = 1024;
/// The most writes that share one commit.
const GROUP_LIMIT: usize = 64;
/// How long a read may run on the async thread that asked for it before it is
/// stopped and run again on the blocking pool. Most reads (an indexed lookup, a
/// page of rows) finish in far less; handing each to another thread cost more than
/// the query itself (bench/README.md).
const INLINE_BUDGET: Duration = Duration::from_micros(500);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 256;
/// SQLite calls the progress handler every this many virtual machine steps.
const PROGRESS_STEPS: i32 = 1000;

type Accept = fn(&[Vec<Row>]) -> bool;
type Outcome = Result<Option<Vec<Vec<Row>>>>;

/// One caller's transaction, queued for the writer thread.
struct Write {
    statements: Vec<Statement>,
    accept: Accept,
    reply: tokio::sync::oneshot::Sender<Outcome>,
}

#[derive(Clone)]
pub struct SqlitePool {
    writes: tokio::sync::mpsc::Sender<Job>,
    readers: Arc<Mutex<Vec<Reader>>>,
    reader_slots: Arc<Semaphore>,
    acquire_timeout: Duration,
    statement_timeout: Duration,
}

/// A read-only connection whose statements stop at `deadline`.
struct Reader {
    connection: Connection,
    deadline: Arc<Deadline>,
}

/// When the running statement must stop, in microseconds since [`epoch`]; SQLite's
/// progress handler reads it, so setting it costs no allocation per statement.
#[derive(Default)]
struct Deadline(AtomicU64);

impl Deadline {
    fn set(&self, after: Duration) {
        let at = epoch().elapsed().saturating_add(after).as_micros();
        self.0
            .store(u64::try_from(at).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn passed(&self) -> bool {
        let now = u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX);
        now > self.0.load(Ordering::Relaxed)
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn interrupted(error: &DbError) -> bool {
    matches!(
        error,
        DbError::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
            if failure.code == rusqlite::ErrorCode::OperationInterrupted
    )
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
            let mut writer = Connection::open(&path)?;
            configure(&writer)?;
            let mode = wal_mode(&writer)?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(%mode, "SQLite refused WAL mode; writes stay durable but readers block writers");
            }
            writer.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
            let writer_deadline = Arc::new(Deadline::default());
            let watched = writer_deadline.clone();
            writer.progress_handler(PROGRESS_STEPS, Some(move || watched.passed()))?;
            let writer = Writer {
                connection: writer,
                deadline: writer_deadline,
                timeout: options.statement_timeout,
            };
            let readers = (0..reader_count)
                .map(|_| {
                    let mut connection = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    configure(&connection)?;
                    let deadline = Arc::new(Deadline::default());
                    let watched = deadline.clone();
                    connection
                        .progress_handler(PROGRESS_STEPS, Some(move || watched.passed()))?;
                    Ok(Reader {
                        connection,
                        deadline,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((writer, readers))
        })
        .await
        .map_err(|join| DbError::Pool(join.to_string()))??;
        let (writes, queue) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("gatehouse-sqlite-writer".into())
            .spawn(move || write_loop(writer, queue))
            .map_err(|error| DbError::Pool(format!("cannot start the writer thread: {error}")))?;
        Ok(Self {
            writes,
            readers: Arc::new(Mutex::new(readers)),
            reader_slots: Arc::new(Semaphore::new(reader_count)),
            acquire_timeout: options.acquire_timeout,
            statement_timeout: options.statement_timeout,
        })
    }

    /// Runs a read. When a connection is free it first runs right here, stopped
    /// after [`INLINE_BUDGET`]; a read that needs longer, or finds every connection
    /// busy, runs on the blocking pool until the statement timeout.
    pub async fn query(&self, statement: Statement) -> Result<Vec<Row>> {
        if let Ok(slot) = self.reader_slots.clone().try_acquire_owned() {
            let reader = self
                .readers
                .lock()
                .map_err(|poisoned| DbError::Pool(poisoned.to_string()))?
                .pop()
                .ok_or_else(|| DbError::Pool("reader slot without a connection".into()))?;
            reader.deadline.set(INLINE_BUDGET);
            let rows = run(&reader.connection, &statement);
            self.readers
                .lock()
                .map_err(|poisoned| DbError::Pool(poisoned.to_string()))?
                .push(reader);
            drop(slot);
            match rows {
                Err(error) if interrupted(&error) => {}
                done => return done,
            }
        }
        self.query_off_thread(statement).await
    }

    async fn query_off_thread(&self, statement: Statement) -> Result<Vec<Row>> {
        let slot = tokio::time::timeout(
            self.acquire_timeout,
            self.reader_slots.clone().acquire_owned(),
        )
        .await
        .map_err(|_| DbError::PoolTimeout)?
        .map_err(|closed| DbError::Pool(closed.to_string()))?;
        let readers = self.readers.clone();
        let timeout = self.statement_timeout;
        // The blocking task takes the connection and puts it back itself, and holds
        // the slot until then: if the request is dropped mid-query (a client hung
        // up), the connection still returns to the pool.
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let reader = readers
                .lock()
                .map_err(|poisoned| DbError::Pool(poisoned.to_string()))?
                .pop()
                .ok_or_else(|| DbError::Pool("reader slot without a connection".into()))?;
            reader.deadline.set(timeout);
            let rows = run(&reader.connection, &statement);
            readers
                .lock()
                .map_err(|poisoned| DbError::Pool(poisoned.to_string()))?
                .push(reader);
            rows.map_err(|error| {
                if interrupted(&error) {
                    DbError::StatementTimeout
                } else {
                    error
                }
            })
        })
        .await
        .map_err(|join| DbError::Pool(join.to_string()))?
    }

    /// Queues the statements for the writer and waits for their outcome. Once
    /// queued, a write runs even if the caller stops waiting.
    pub async fn transaction_if(&self, statements: Vec<Statement>, accept: Accept) -> Outcome {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let write = Write {
            statements,
            accept,
            reply,
        };
        self.enqueue(Job::Write(write)).await?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn enqueue(&self, job: Job) -> Result<()> {
        tokio::time::timeout(self.acquire_timeout, self.writes.send(job))
            .await
            .map_err(|_| DbError::PoolTimeout)?
            .map_err(|_| stopped())
    }

    /// Opens a transaction on the writer, which it holds until the transaction
    /// commits, is dropped, or `limit` passes (then it is rolled back).
    pub async fn begin(&self, limit: Duration) -> Result<OpenTransaction> {
        let (steps, receiver) = std::sync::mpsc::channel();
        let (ready, opened) = tokio::sync::oneshot::channel();
        self.enqueue(Job::Open(Opening {
            steps: receiver,
            limit,
            ready,
        }))
        .await?;
        tokio::time::timeout(self.acquire_timeout, opened)
            .await
            .map_err(|_| DbError::PoolTimeout)?
            .map_err(|_| stopped())??;
        Ok(OpenTransaction { steps })
    }
}

fn stopped() -> DbError {
    DbError::Pool("the writer thread has stopped".into())
}

/// A transaction holding the writer; dropping it rolls back.
pub struct OpenTransaction {
    steps: std::sync::mpsc::Sender<Step>,
}

impl OpenTransaction {
    /// Runs statements inside the transaction, in a savepoint (see
    /// [`SqlitePool::transaction_if`]).
    pub async fn run(&self, statements: Vec<Statement>, accept: Accept) -> Outcome {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.steps
            .send(Step::Run {
                statements,
                accept,
                reply,
            })
            .map_err(|_| DbError::TransactionExpired)?;
        outcome.await.map_err(|_| DbError::TransactionExpired)?
    }

    /// Commits, then runs `then` on the writer before the next write
    /// commits: what follows one commit (realtime's changes among it) is
    /// done in the order of the commits.
    pub async fn commit(self, then: Vec<OnCommit>) -> Result<()> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.steps
            .send(Step::Commit { reply, then })
            .map_err(|_| DbError::TransactionExpired)?;
        outcome.await.map_err(|_| DbError::TransactionExpired)?
    }
}

/// What the writer thread is asked to do.
enum Job {
    Write(Write),
    /// Hold the writer for one transaction driven step by step from outside.
    Open(Opening),
}

/// A transaction to open on the writer and serve until it commits, is dropped,
/// or outlives `limit`.
struct Opening {
    steps: std::sync::mpsc::Receiver<Step>,
    limit: Duration,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
}

/// One request inside an open transaction.
enum Step {
    Run {
        statements: Vec<Statement>,
        accept: Accept,
        reply: tokio::sync::oneshot::Sender<Outcome>,
    },
    Commit {
        reply: tokio::sync::oneshot::Sender<Result<()>>,
        then: Vec<OnCommit>,
    },
}

/// Work that follows a commit (and never a rollback).
pub type OnCommit = Box<dyn FnOnce() + Send>;

/// An open transaction's commit, owed its answer once the group commits.
type CommitOwed = (tokio::sync::oneshot::Sender<Result<()>>, Vec<OnCommit>);

/// The writer thread: until every pool handle is gone, takes what is queued
/// (writes and open transactions, in order) and commits it as one group.
fn write_loop(mut writer: Writer, mut queue: tokio::sync::mpsc::Receiver<Job>) {
    while let Some(first) = queue.blocking_recv() {
        let mut group = vec![first];
        while group.len() < GROUP_LIMIT {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let [Job::Write(_)] = group.as_slice()
            && let Some(Job::Write(write)) = group.pop()
        {
            let outcome = commit_alone(&mut writer, &write.statements, write.accept);
            let _ = write.reply.send(outcome);
            continue;
        }
        if let Err((error, writes)) = commit_group(&mut writer, group) {
            // Nothing was kept: each write runs alone and gets its own answer.
            tracing::warn!(%error, writes = writes.len(), "group commit failed; retrying one by one");
            for write in writes {
                let outcome = commit_alone(&mut writer, &write.statements, write.accept);
                let _ = write.reply.send(outcome);
            }
        }
    }
}

/// Serves one open transaction inside the group's `transaction`, in a
/// savepoint of its own: each step in a savepoint within that, then its
/// commit, a release whose reply waits for the group's commit (given back).
/// Every other write waits meanwhile, so the transaction's life on the writer
/// is bounded by its limit: past it (or when its owner drops it) everything it
/// wrote is rolled back and the writer moves on.
fn serve_open(
    transaction: &mut rusqlite::Transaction<'_>,
    (deadline, timeout): (&Deadline, Duration),
    opening: Opening,
) -> Option<CommitOwed> {
    let mut savepoint = match transaction.savepoint() {
        Ok(savepoint) => savepoint,
        Err(error) => {
            let _ = opening.ready.send(Err(error.into()));
            return None;
        }
    };
    // The limit runs from the moment the writer is taken.
    let until = Instant::now() + opening.limit;
    if opening.ready.send(Ok(())).is_err() {
        return None;
    }
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match opening.steps.recv_timeout(left) {
            Ok(Step::Run {
                statements,
                accept,
                reply,
            }) => {
                deadline.set(timeout.min(left));
                let outcome = in_savepoint(&mut savepoint, &statements, accept);
                let lost = savepoint.is_autocommit();
                let _ = reply.send(outcome.map_err(|error| {
                    if interrupted(&error) && left < timeout {
                        DbError::TransactionExpired
                    } else {
                        timed_out(error)
                    }
                }));
                if lost {
                    return None;
                }
            }
            Ok(Step::Commit { reply, then }) => {
                return match savepoint.commit() {
                    Ok(()) => Some((reply, then)),
                    Err(error) => {
                        let _ = reply.send(Err(error.into()));
                        None
                    }
                };
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    "an open transaction held the writer past its limit and was rolled back"
                );
                return None;
            }
            // Its owner dropped it: dropping the savepoint rolls back to it.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// The writer connection and the deadline its progress handler watches: each
/// write gets the statement timeout; a commit is never cut off.
struct Writer {
    connection: Connection,
    deadline: Arc<Deadline>,
    timeout: Duration,
}

/// A deadline no commit reaches: a commit is never cut off halfway.
const UNBOUNDED: Duration = Duration::from_secs(24 * 3600);

fn timed_out(error: DbError) -> DbError {
    if interrupted(&error) {
        DbError::StatementTimeout
    } else {
        error
    }
}

fn commit_alone(writer: &mut Writer, statements: &[Statement], accept: Accept) -> Outcome {
    let deadline = writer.deadline.clone();
    deadline.set(writer.timeout);
    let transaction = writer
        .connection
        .transaction_with_behavior(TransactionBehavior::Immediate)?;
    let results = statements
        .iter()
        .map(|statement| run(&transaction, statement))
        .collect::<Result<Vec<_>>>()
        .map_err(timed_out)?;
    if !accept(&results) {
        // Dropping the transaction rolls it back.
        return Ok(None);
    }
    deadline.set(UNBOUNDED);
    transaction.commit()?;
    committed(1);
    Ok(Some(results))
}

/// What a job of a group is owed once the group's commit is known.
enum Owed {
    Write(Write, Outcome),
    /// An open transaction that asked to commit.
    Commit(CommitOwed),
}

/// Runs each job of the group in its own savepoint of one transaction and
/// commits once: a write that fails or is refused rolls back to its savepoint
/// and gets its own outcome; an open transaction is served in its savepoint
/// (`serve_open`), its commit a release answered after the group's commit.
/// `Err` means the transaction itself was lost and nothing of the group kept:
/// the writes come back to be run alone; open transactions are told so.
fn commit_group(writer: &mut Writer, group: Vec<Job>) -> Result<(), (DbError, Vec<Write>)> {
    let deadline = writer.deadline.clone();
    let timeout = writer.timeout;
    let mut owed = Vec::with_capacity(group.len());
    let mut jobs = group.into_iter();
    let ran: Result<()> = (|| {
        let mut transaction = writer
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for job in jobs.by_ref() {
            match job {
                Job::Write(write) => {
                    deadline.set(timeout);
                    let outcome = in_savepoint(&mut transaction, &write.statements, write.accept);
                    owed.push(Owed::Write(write, outcome.map_err(timed_out)));
                }
                Job::Open(opening) => {
                    if let Some(commit) =
                        serve_open(&mut transaction, (&deadline, timeout), opening)
                    {
                        owed.push(Owed::Commit(commit));
                    }
                }
            }
            // Some failures (a full disk, I/O errors, an interrupted statement)
            // end the whole transaction.
            if transaction.is_autocommit() {
                return Err(DbError::Pool(
                    "the group's transaction was rolled back".into(),
                ));
            }
        }
        deadline.set(UNBOUNDED);
        transaction.commit()?;
        Ok(())
    })();
    match ran {
        Ok(()) => {
            let kept = owed.iter().filter(|owed| match owed {
                Owed::Write(_, outcome) => matches!(outcome, Ok(Some(_))),
                Owed::Commit(_) => true,
            });
            committed(kept.count());
            for owed in owed {
                // A caller that stopped waiting does not need the answer.
                match owed {
                    Owed::Write(write, outcome) => drop(write.reply.send(outcome)),
                    Owed::Commit((reply, then)) => {
                        for then in then {
                            then();
                        }
                        drop(reply.send(Ok(())));
                    }
                }
            }
            Ok(())
        }
        Err(error) => {
            let mut writes = Vec::new();
            for owed in owed {
                match owed {
                    Owed::Write(write, _) => writes.push(write),
                    // Its steps ran in the lost transaction: it cannot run again.
                    Owed::Commit((reply, _)) => {
                        let lost = DbError::Pool("the group's transaction was lost".into());
                        let _ = reply.send(Err(lost));
                    }
                }
            }
            for job in jobs {
                match job {
                    Job::Write(write) => writes.push(write),
                    // Dropped unserved: its owner hears the writer is gone.
                    Job::Open(_) => {}
                }
            }
            Err((error, writes))
        }
    }
}

/// Runs statements in a savepoint of `transaction`, kept when they succeed and
/// `accept` takes their rows, rolled back to otherwise.
fn in_savepoint(outer: &mut impl Nesting, statements: &[Statement], accept: Accept) -> Outcome {
    let savepoint = outer.nested()?;
    let results = statements
        .iter()
        .map(|statement| run(&savepoint, statement))
        .collect::<Result<Vec<_>>>();
    match results {
        Ok(results) if accept(&results) => {
            savepoint.commit()?;
            Ok(Some(results))
        }
        // Dropping a savepoint rolls back to it.
        refused_or_failed => refused_or_failed.map(|_| None),
    }
}

/// A transaction or a savepoint: either takes a savepoint inside.
trait Nesting {
    fn nested(&mut self) -> rusqlite::Result<rusqlite::Savepoint<'_>>;
}

impl Nesting for rusqlite::Transaction<'_> {
    fn nested(&mut self) -> rusqlite::Result<rusqlite::Savepoint<'_>> {
        self.savepoint()
    }
}

impl Nesting for rusqlite::Savepoint<'_> {
    fn nested(&mut self) -> rusqlite::Result<rusqlite::Savepoint<'_>> {
        self.savepoint()
    }
}

/// Counts a commit and the writes it kept: more writes than commits means writes
/// shared fsyncs.
fn committed(writes: usize) {
    metrics::counter!("gatehouse_sqlite_commits_total").increment(1);
    metrics::counter!("gatehouse_sqlite_writes_total").increment(writes as u64);
}

/// Switches the file to WAL. Switching needs the file to itself and SQLite
/// answers BUSY at once, without its busy handler, when another process or pool
/// is opening the same new file: retry within the busy timeout.
fn wal_mode(connection: &Connection) -> Result<String> {
    let started = Instant::now();
    loop {
        match connection.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return Ok(other?),
        }
    }
}

/// Settings every connection gets. SQLite by default reads a double-quoted name
/// that matches no column as a string literal, so a misspelt identifier would
/// silently compare against text; with DQS off it is an error, as in PostgreSQL.
fn configure(connection: &Connection) -> Result<()> {
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // Compiled statements differ by table, columns, filters and limit; keep the
    // working set of a typical app prepared.
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false)?;
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DDL, false)?;
    // LIKE is case-sensitive, as in PostgreSQL; ILIKE is compiled with lower().
    connection.execute_batch("PRAGMA case_sensitive_like = ON")?;
    let deterministic = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    // Two JSON arguments to a truth, NULL when either is NULL (or not JSON).
    let json_pair = |name: &str, test: fn(&serde_json::Value, &serde_json::Value) -> bool| {
        connection.create_scalar_function(name, 2, deterministic, move |context| {
            let parse = |index: usize| -> rusqlite::Result<Option<serde_json::Value>> {
                Ok(context
                    .get::<Option<String>>(index)?
                    .and_then(|text| serde_json::from_str(&text).ok()))
            };
            Ok(match (parse(0)?, parse(1)?) {
                (Some(a), Some(b)) => Some(test(&a, &b)),
                _ => None,
            })
        })
    };
    json_pair("gatehouse_json_contains", crate::json::contains)?;
    json_pair("gatehouse_array_contains", crate::json::array_contains)?;
    json_pair("gatehouse_json_overlaps", crate::json::overlaps)?;
    json_pair("gatehouse_json_same", crate::json::same)?;
    connection.create_scalar_function("gatehouse_json_text", 1, deterministic, |context| {
        let json = context.get::<Option<String>>(0)?;
        Ok(json
            .and_then(|text| serde_json::from_str(&text).ok())
            .and_then(|value| crate::json::as_text(&value)))
    })?;
    connection.create_scalar_function("gatehouse_foldername", 2, deterministic, |context| {
        let path = context.get::<Option<String>>(0)?;
        let n = context.get::<i64>(1)?;
        Ok(path.and_then(|path| crate::path_parts::folder(&path, n).map(str::to_owned)))
    })?;
    connection.create_scalar_function("gatehouse_filename", 1, deterministic, |context| {
        let path = context.get::<Option<String>>(0)?;
        Ok(path.map(|path| crate::path_parts::filename(&path).to_owned()))
    })?;
    connection.create_scalar_function("gatehouse_extension", 1, deterministic, |context| {
        let path = context.get::<Option<String>>(0)?;
        Ok(path.and_then(|path| crate::path_parts::extension(&path).map(str::to_owned)))
    })?;
    crate::search::register(connection)?;
    Ok(())
}

fn run(connection: &Connection, statement: &Statement) -> Result<Vec<Row>> {
    let mut prepared = connection.prepare_cached(statement.text(Dialect::Sqlite))?;
    let width = prepared.column_count();
    bind(&mut prepared, &statement.params)?;
    let mut rows = prepared.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..width)
            .map(|column| row.get_ref(column).map(from_sqlite))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push(Row(values));
    }
    Ok(out)
}

/// Binds each placeholder to the value it names. `?N` and `$N` both name the
/// N-th value (so one text with `$N` serves both databases), but SQLite numbers
/// `$N` by first appearance, not by N: each is looked up by its name.
fn bind(prepared: &mut rusqlite::CachedStatement<'_>, params: &[Value]) -> Result<()> {
    let count = prepared.parameter_count();
    if count != params.len() {
        return Err(rusqlite::Error::InvalidParameterCount(params.len(), count).into());
    }
    for index in 1..=count {
        // A plain `?` has no name and takes its place; a name that is not a
        // number (`$1::text` reads as one name in SQLite) is a mistake.
        let number = match prepared.parameter_name(index) {
            None => index,
            Some(name) => name
                .get(1..)
                .and_then(|number| number.parse::<usize>().ok())
                .ok_or_else(|| rusqlite::Error::InvalidParameterName(name.to_owned()))?,
        };
        let value = params
            .get(number.wrapping_sub(1))
            .ok_or(rusqlite::Error::InvalidParameterCount(params.len(), number))?;
        prepared.raw_bind_parameter(index, value)?;
    }
    Ok(())
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
