//! Durable background jobs. A job is a row of `gatehouse_jobs` written by the
//! same transaction as the change that causes it ([`enqueue`] gives the
//! statement), so a rolled-back write leaves no job and a committed one cannot
//! lose it. Workers in every instance claim due jobs with a lease (`FOR UPDATE
//! SKIP LOCKED` on PostgreSQL; the one writer on SQLite), run them through a
//! [`Runner`] (the server's declared functions), and record the outcome only
//! while they still hold the lease. A failure is retried after an exponential
//! backoff with jitter until the job's attempts are spent; then it is dead,
//! kept with its last error for inspection. A lease that runs out (its
//! instance died, or the run outlived it) makes the job claimable again, and
//! that counts as an attempt: delivery is at least once.

pub mod admin;
pub mod changes;
pub mod cron;
pub mod inbound;
pub mod outbound;
mod worker;

pub use worker::Workers;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use gatehouse_db::{Sql, Statement, Value, timestamp};
use serde_json::Value as Json;
use time::OffsetDateTime;

/// The queue a job joins when it names none.
pub const DEFAULT_QUEUE: &str = "default";

/// Gatehouse's own queues: its upkeep, one job at a time per instance so the
/// app's jobs never hold it back; and auth's email, whose workers run only when
/// SMTP is configured (without it, emails wait, as in an outbox).
pub const OWN_QUEUE: &str = "gatehouse";
pub const EMAIL_QUEUE: &str = "gatehouse_email";

/// A payload's size at most, as JSON text, for jobs the app's code enqueues.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// A table change's payload at most: two rows the data API accepted (each
/// within its request body limit), which must not fail the write they follow.
pub(crate) const MAX_CHANGE_PAYLOAD_BYTES: usize = 16 << 20;

const MAX_KEY_BYTES: usize = 200;

/// How jobs run: the queues with how many of each run at once per instance,
/// and the timings. `[jobs]` in gatehouse.toml.
#[derive(Debug, Clone)]
pub struct Settings {
    pub queues: BTreeMap<String, usize>,
    /// How long a claimed job is its worker's before another may take it:
    /// longer than any handler may run.
    pub lease: Duration,
    /// How often an idle worker looks for due jobs (enqueued by another
    /// instance, or due later); this instance's own commits wake it at once.
    pub poll: Duration,
    /// The first retry's delay; each later one doubles it, up to `backoff_cap`.
    pub backoff: Duration,
    pub backoff_cap: Duration,
    /// Attempts a job gets when it names no limit of its own.
    pub max_attempts: u32,
    /// How long finished jobs and their attempts are kept for inspection.
    pub keep_finished: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            queues: BTreeMap::from([(DEFAULT_QUEUE.to_owned(), 4)]),
            lease: Duration::from_secs(300),
            poll: Duration::from_secs(1),
            backoff: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(3600),
            max_attempts: 5,
            keep_finished: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Why a job could not be enqueued, in words for the code that asked.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JobError {
    #[error("there is no queue {0:?} (declare it under [jobs.queues])")]
    Queue(String),
    #[error("a job's payload is a JSON object of at most {MAX_PAYLOAD_BYTES} bytes")]
    Payload,
    #[error("a job's key is 1 to {MAX_KEY_BYTES} bytes")]
    Key,
    #[error("a job's attempts are 1 to 100")]
    Attempts,
}

/// A job to enqueue: the declared function that runs it and its arguments.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub function: String,
    pub payload: Json,
    pub queue: String,
    /// Not before this moment; now when absent.
    pub run_at: Option<OffsetDateTime>,
    /// A second job with the same function and key is not enqueued.
    pub key: Option<String>,
    pub max_attempts: Option<u32>,
    /// Who queued it, as the queueing code verified them (`{ role, user_id }`),
    /// for handlers that run with the rights of whoever queued their job.
    pub enqueued_by: Option<Json>,
}

impl NewJob {
    pub fn new(function: &str, payload: Json) -> Self {
        Self {
            function: function.to_owned(),
            payload,
            queue: DEFAULT_QUEUE.to_owned(),
            run_at: None,
            key: None,
            max_attempts: None,
            enqueued_by: None,
        }
    }
}

const ENQUEUE: Sql = Sql::both(
    "INSERT INTO gatehouse_jobs (id, queue, function, payload, unique_key, state, max_attempts, run_at, created_at, enqueued_by) \
     VALUES ($1, $2, $3, $4, $5, 'waiting', $6, $7, $8, $9) \
     ON CONFLICT (function, unique_key) DO NOTHING RETURNING id",
);

/// The statement that enqueues `job`, checked against `settings`; run it in the
/// transaction whose commit should cause the job. It returns the new job's id,
/// or no row when the job's key was already used.
pub fn enqueue(settings: &Settings, job: &NewJob) -> Result<Statement, JobError> {
    enqueue_within(settings, job, MAX_PAYLOAD_BYTES)
}

fn enqueue_within(
    settings: &Settings,
    job: &NewJob,
    max_payload_bytes: usize,
) -> Result<Statement, JobError> {
    if !settings.queues.contains_key(&job.queue) {
        return Err(JobError::Queue(job.queue.clone()));
    }
    let payload = match &job.payload {
        Json::Object(_) => job.payload.to_string(),
        _ => return Err(JobError::Payload),
    };
    if payload.len() > max_payload_bytes {
        return Err(JobError::Payload);
    }
    if job
        .key
        .as_ref()
        .is_some_and(|key| key.is_empty() || key.len() > MAX_KEY_BYTES)
    {
        return Err(JobError::Key);
    }
    let attempts = job.max_attempts.unwrap_or(settings.max_attempts);
    if !(1..=100).contains(&attempts) {
        return Err(JobError::Attempts);
    }
    Ok(insert(job, payload, attempts))
}

/// The statement that enqueues one of Gatehouse's own jobs (`job.function` a
/// [`Handler::Own`] column, `job.queue` one of its own queues); nothing of it
/// comes from the app, so it is not checked.
pub fn enqueue_own(job: &NewJob) -> Statement {
    let attempts = job.max_attempts.unwrap_or(Settings::default().max_attempts);
    insert(job, job.payload.to_string(), attempts)
}

fn insert(job: &NewJob, payload: String, attempts: u32) -> Statement {
    let now = OffsetDateTime::now_utc();
    Statement::new(
        &ENQUEUE,
        vec![
            uuid::Uuid::now_v7().to_string().into(),
            job.queue.clone().into(),
            job.function.clone().into(),
            payload.into(),
            job.key.clone().map_or(Value::Null, Value::Text),
            i64::from(attempts).into(),
            timestamp(job.run_at.unwrap_or(now)).into(),
            timestamp(now).into(),
            job.enqueued_by
                .as_ref()
                .map_or(Value::Null, |who| Value::Text(who.to_string())),
        ],
    )
}

/// A claimed job, as its runner sees it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub queue: String,
    pub function: String,
    pub payload: Json,
    /// 1 on the first run.
    pub attempt: i64,
    pub max_attempts: i64,
    /// The key it was enqueued with (a cron job's names its tick).
    pub key: Option<String>,
    /// Who queued it (see [`NewJob::enqueued_by`]).
    pub enqueued_by: Option<Json>,
}

/// What runs a job, as its `function` column names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler<'a> {
    /// A declared function, the payload its arguments.
    Function(&'a str),
    /// A declared function as an after trigger (`trigger:<name>`), the
    /// payload the change it follows.
    AfterTrigger(&'a str),
    /// An outbound webhook's delivery (`webhook:<name>`), the payload its body.
    Webhook(&'a str),
    /// One of Gatehouse's own tasks (`gatehouse:<task>`): its upkeep, auth's email.
    Own(&'a str),
}

impl Handler<'_> {
    /// As the `function` column holds it. Declared functions' names are
    /// identifiers, so the prefixed forms cannot be enqueued by the app's code.
    pub fn column(self) -> String {
        match self {
            Handler::Function(name) => name.to_owned(),
            Handler::AfterTrigger(name) => format!("trigger:{name}"),
            Handler::Webhook(name) => format!("webhook:{name}"),
            Handler::Own(task) => format!("gatehouse:{task}"),
        }
    }
}

impl Job {
    pub fn handler(&self) -> Handler<'_> {
        if let Some(name) = self.function.strip_prefix("trigger:") {
            Handler::AfterTrigger(name)
        } else if let Some(name) = self.function.strip_prefix("webhook:") {
            Handler::Webhook(name)
        } else if let Some(task) = self.function.strip_prefix("gatehouse:") {
            Handler::Own(task)
        } else {
            Handler::Function(&self.function)
        }
    }

    /// Whether a failure now leaves the job dead.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// What runs a job: `Err` carries the failure to record (it is kept in the
/// database and shown to operators, so it must not hold secrets).
pub trait Runner: Send + Sync + 'static {
    fn run(&self, job: Job) -> Running<'_>;
}

pub type Running<'a> = BoxFuture<'a, Result<(), String>>;

/// The delay before the attempt after `attempt` (1-based): `base` doubled per
/// attempt, capped, then "equal jitter" (a random point in its upper half) so
/// jobs that failed together do not retry together.
pub fn backoff(settings: &Settings, attempt: i64) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(30);
    let full = settings
        .backoff
        .saturating_mul(1 << doublings)
        .min(settings.backoff_cap);
    let unit = f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX);
    full.mul_f64(0.5 + unit / 2.0)
}
