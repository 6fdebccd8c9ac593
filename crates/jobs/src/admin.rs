//! Operating the queue: list and show jobs, retry a dead or waiting one now,
//! cancel one, purge finished ones. `gatehouse jobs …` runs these.

use gatehouse_db::{Database, DbError, Row, Sql, Statement, Value, timestamp};
use serde_json::{Value as Json, json};
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
     finished_at = NULL WHERE id = $1 AND state IN ('dead', 'cancelled', 'waiting') RETURNING id",
);

/// A waiting or running job will not run (again); a running one's outcome is
/// dropped, as its worker no longer holds the lease.
const CANCEL: Sql = Sql::both(
    "UPDATE gatehouse_jobs SET state = 'cancelled', lease_id = NULL, finished_at = $2 \
     WHERE id = $1 AND state IN ('waiting', 'running') RETURNING id",
);

const PURGE: Sql =
    Sql::both("DELETE FROM gatehouse_jobs WHERE state = $1 AND finished_at < $2 RETURNING id");

/// The states a job finishes in, which `purge` may remove.
pub const FINISHED: [&str; 3] = ["done", "dead", "cancelled"];

fn record(row: &Row) -> Result<Json, DbError> {
    let text = |column| {
        row.optional_text(column)
            .map(|text| text.map(str::to_owned))
    };
    Ok(json!({
        "id": row.text(0)?,
        "queue": row.text(1)?,
        "function": row.text(2)?,
        "payload": serde_json::from_str::<Json>(row.text(3)?).unwrap_or(Json::Null),
        "key": text(4)?,
        "state": row.text(5)?,
        "attempts": row.integer(6)?,
        "max_attempts": row.integer(7)?,
        "run_at": row.text(8)?,
        "last_error": text(9)?,
        "created_at": row.text(10)?,
        "started_at": text(11)?,
        "finished_at": text(12)?,
    }))
}

/// Newest first, optionally of one state and queue.
pub async fn list(
    db: &Database,
    (state, queue): (Option<&str>, Option<&str>),
    limit: u32,
) -> Result<Vec<Json>, DbError> {
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

pub async fn show(db: &Database, id: &str) -> Result<Option<Json>, DbError> {
    let rows = db.query(Statement::new(&SHOW, vec![id.into()])).await?;
    rows.first().map(record).transpose()
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

/// Removes jobs that finished in `state` longer than `age` ago; how many.
pub async fn purge(db: &Database, state: &str, age: std::time::Duration) -> Result<usize, DbError> {
    let before = OffsetDateTime::now_utc() - age;
    let params: Vec<Value> = vec![state.into(), timestamp(before).into()];
    changed(db, Statement::new(&PURGE, params)).await
}
