//! Operating the queue: list and show jobs, retry a dead or waiting one now,
//! cancel one, purge finished ones. `gatehouse jobs …` runs these.

use gatehouse_db::{Database, DbError, Row, Sql, Statement, timestamp};
use serde_json::Value as Json;
use time::OffsetDateTime;

const LIST: Sql = Sql::both(
    "SELECT id, queue, function, payload, unique_key, state, attempts, max_attempts, run_at, \
     last_error, created_at, started_at, finished_at FROM gatehouse_jobs \
     WHERE ($1 = '' OR state = $1) AND ($2 = '' OR queue = $2) \
     ORDER BY created_at DESC, id DESC LIMIT $3",
);

const SHOW: Sql = Sql::both(
    "SELECT id, queue, function, payload, unique_key, state, attempts, max_attempts, run_at, \
     last_error, created_at, started_at, finished_at FROM gatehouse_jobs WHERE id = $1",
);

/// A dead, cancelled or waiting job runs again now with its attempts renewed.
const RETRY: Sql = Sql::both(
    "UPDATE gatehouse_jobs SET state = 'waiting', attempts = 0, run_at = $2, lease_id = NULL, \
     finished_at = NULL, last_error = NULL WHERE id = $1 AND state IN ('dead', 'cancelled', 'waiting') RETURNING id",
);

/// A waiting or running job will not run (again); a running one's outcome is
/// dropped, as its worker no longer holds the lease.
const CANCEL: Sql = Sql::both(
    "UPDATE gatehouse_jobs SET state = 'cancelled', lease_id = NULL, finished_at = $2 \
     WHERE id = $1 AND state IN ('waiting', 'running') RETURNING id",
);

const ATTEMPTS: Sql = Sql::both(
    "SELECT attempt, started_at, finished_at, outcome, error FROM gatehouse_job_attempts \
     WHERE job_id = $1 ORDER BY finished_at, id",
);

/// The attempts of the jobs `PURGE` removes.
const PURGE_ATTEMPTS: Sql = Sql::both(
    "DELETE FROM gatehouse_job_attempts WHERE job_id IN \
     (SELECT id FROM gatehouse_jobs WHERE state = $1 AND finished_at < $2) RETURNING id",
);

/// Attempts of jobs still kept (a long-retried one) past the retention.
const PRUNE_ATTEMPTS: Sql =
    Sql::both("DELETE FROM gatehouse_job_attempts WHERE finished_at < $1 RETURNING id");

const PURGE: Sql =
    Sql::both("DELETE FROM gatehouse_jobs WHERE state = $1 AND finished_at < $2 RETURNING id");

/// The states a job finishes in, which `purge` may remove.
pub const FINISHED: [&str; 3] = ["done", "dead", "cancelled"];

/// One job as operators see it (`gatehouse jobs`, `/admin/v1/jobs`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRecord {
    pub id: String,
    pub queue: String,
    pub function: String,
    pub payload: Json,
    pub key: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: String,
    pub last_error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Its finished attempts, oldest first (`show` only; kept for
    /// `[jobs] keep_finished_hours`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<Attempt>>,
}

/// One finished attempt of a job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    pub attempt: i64,
    pub started_at: Option<String>,
    pub finished_at: String,
    /// `done` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
}

fn record(row: &Row) -> Result<JobRecord, DbError> {
    let text = |column| {
        row.optional_text(column)
            .map(|text| text.map(str::to_owned))
    };
    Ok(JobRecord {
        id: row.text(0)?.to_owned(),
        queue: row.text(1)?.to_owned(),
        function: row.text(2)?.to_owned(),
        payload: serde_json::from_str::<Json>(row.text(3)?).unwrap_or(Json::Null),
        key: text(4)?,
        state: row.text(5)?.to_owned(),
        attempts: row.integer(6)?,
        max_attempts: row.integer(7)?,
        run_at: row.text(8)?.to_owned(),
        last_error: text(9)?,
        created_at: row.text(10)?.to_owned(),
        started_at: text(11)?,
        finished_at: text(12)?,
        history: None,
    })
}

/// Newest first, optionally of one state and queue.
pub async fn list(
    db: &Database,
    (state, queue): (Option<&str>, Option<&str>),
    limit: u32,
) -> Result<Vec<JobRecord>, DbError> {
    let rows = db
        .query(Statement::new(
            &LIST,
            vec![
                state.unwrap_or("").into(),
                queue.unwrap_or("").into(),
                i64::from(limit).into(),
            ],
        ))
        .await?;
    rows.iter().map(record).collect()
}

/// The job with its attempts.
pub async fn show(db: &Database, id: &str) -> Result<Option<JobRecord>, DbError> {
    let rows = db.query(Statement::new(&SHOW, vec![id.into()])).await?;
    let Some(mut job) = rows.first().map(record).transpose()? else {
        return Ok(None);
    };
    let attempts = db.query(Statement::new(&ATTEMPTS, vec![id.into()])).await?;
    job.history = Some(
        attempts
            .iter()
            .map(|row| {
                Ok(Attempt {
                    attempt: row.integer(0)?,
                    started_at: row.optional_text(1)?.map(str::to_owned),
                    finished_at: row.text(2)?.to_owned(),
                    outcome: row.text(3)?.to_owned(),
                    error: row.optional_text(4)?.map(str::to_owned),
                })
            })
            .collect::<Result<_, DbError>>()?,
    );
    Ok(Some(job))
}

async fn changed(db: &Database, statement: Statement) -> Result<usize, DbError> {
    let results = db.transaction(vec![statement]).await?;
    Ok(results.first().map_or(0, Vec::len))
}

/// Whether the job was there to retry.
pub async fn retry(db: &Database, id: &str) -> Result<bool, DbError> {
    let now = timestamp(OffsetDateTime::now_utc());
    Ok(changed(db, Statement::new(&RETRY, vec![id.into(), now.into()])).await? == 1)
}

/// Whether the job was there to cancel.
pub async fn cancel(db: &Database, id: &str) -> Result<bool, DbError> {
    let now = timestamp(OffsetDateTime::now_utc());
    Ok(changed(db, Statement::new(&CANCEL, vec![id.into(), now.into()])).await? == 1)
}

/// Removes jobs that finished in `state` longer than `age` ago, with their
/// attempts; how many jobs.
pub async fn purge(db: &Database, state: &str, age: std::time::Duration) -> Result<usize, DbError> {
    let before = timestamp(OffsetDateTime::now_utc() - age);
    let results = db
        .transaction(vec![
            Statement::new(&PURGE_ATTEMPTS, vec![state.into(), before.clone().into()]),
            Statement::new(&PURGE, vec![state.into(), before.into()]),
        ])
        .await?;
    Ok(results.get(1).map_or(0, Vec::len))
}

/// The retention upkeep applies: finished jobs and attempts that ended within
/// `keep`; older ones are removed. How many jobs and attempts went.
pub async fn prune(db: &Database, keep: std::time::Duration) -> Result<(usize, usize), DbError> {
    let before = timestamp(OffsetDateTime::now_utc() - keep);
    let mut jobs = 0;
    for state in FINISHED {
        jobs += purge(db, state, keep).await?;
    }
    let attempts = changed(db, Statement::new(&PRUNE_ATTEMPTS, vec![before.into()])).await?;
    Ok((jobs, attempts))
}
