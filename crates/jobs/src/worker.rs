//! The workers: claiming due jobs under a lease, running them, recording each
//! outcome while the lease is still held, and the queues' figures.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_db::{Database, DbError, Sql, Statement, Value, timestamp};
use serde_json::Value as Json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::{Job, Runner, Settings, backoff};

/// Takes the oldest due job of queue `$1` (waiting and due, or running with
/// its lease run out), leasing it to `$3` until `$4`.
const CLAIM: Sql = Sql {
    sqlite: "UPDATE gatehouse_jobs SET state = 'running', attempts = attempts + 1, lease_id = ?3, run_at = ?4, started_at = ?2 \
             WHERE id = (SELECT id FROM gatehouse_jobs WHERE queue = ?1 AND state IN ('waiting', 'running') \
             AND run_at <= ?2 ORDER BY run_at LIMIT 1) \
             RETURNING id, function, payload, attempts, max_attempts, unique_key, enqueued_by",
    postgres: "UPDATE gatehouse_jobs SET state = 'running', attempts = attempts + 1, lease_id = $3, run_at = $4, started_at = $2 \
               WHERE id = (SELECT id FROM gatehouse_jobs WHERE queue = $1 AND state IN ('waiting', 'running') \
               AND run_at <= $2 ORDER BY run_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
               AND state IN ('waiting', 'running') AND run_at <= $2 \
               RETURNING id, function, payload, attempts, max_attempts, unique_key, enqueued_by",
};

/// Each outcome is recorded only by the worker still holding the lease.
const DONE: Sql = Sql::both(
    "UPDATE gatehouse_jobs SET state = 'done', lease_id = NULL, finished_at = $3, last_error = NULL \
     WHERE id = $1 AND lease_id = $2",
);

const RETRY: Sql = Sql::both(
    "UPDATE gatehouse_jobs SET state = 'waiting', lease_id = NULL, run_at = $3, last_error = $4 \
     WHERE id = $1 AND lease_id = $2",
);

const DEAD: Sql = Sql::both(
    "UPDATE gatehouse_jobs SET state = 'dead', lease_id = NULL, finished_at = $3, last_error = $4 \
     WHERE id = $1 AND lease_id = $2",
);

/// The attempt that just ended, kept with its outcome; written before the
/// outcome (which drops the lease) and only while the lease is held.
const ATTEMPT: Sql = Sql::both(
    "INSERT INTO gatehouse_job_attempts (id, job_id, attempt, started_at, finished_at, outcome, error) \
     SELECT $3, id, attempts, started_at, $4, $5, $6 FROM gatehouse_jobs WHERE id = $1 AND lease_id = $2",
);

/// Failures are recorded cut to this many bytes.
const MAX_ERROR_BYTES: usize = 2048;

/// Claims one due job of `queue` for a lease named `lease_id`.
async fn claim(
    db: &Database,
    settings: &Settings,
    queue: &str,
    lease_id: &str,
) -> Result<Option<Job>, DbError> {
    let now = OffsetDateTime::now_utc();
    let claimed = db
        .transaction(vec![Statement::new(
            &CLAIM,
            vec![
                queue.into(),
                timestamp(now).into(),
                lease_id.into(),
                timestamp(now + settings.lease).into(),
            ],
        )])
        .await?;
    let Some(row) = claimed.first().and_then(|rows| rows.first()) else {
        return Ok(None);
    };
    Ok(Some(Job {
        id: row.text(0)?.to_owned(),
        queue: queue.to_owned(),
        function: row.text(1)?.to_owned(),
        payload: serde_json::from_str(row.text(2)?).unwrap_or(Json::Null),
        attempt: row.integer(3)?,
        max_attempts: row.integer(4)?,
        key: row.optional_text(5)?.map(str::to_owned),
        enqueued_by: row
            .optional_text(6)?
            .and_then(|who| serde_json::from_str(who).ok()),
    }))
}

/// Records how `job`'s run under `lease_id` ended.
async fn record(
    db: &Database,
    settings: &Settings,
    (job, lease_id): (&Job, &str),
    outcome: Result<(), String>,
) -> Result<(), DbError> {
    let now = OffsetDateTime::now_utc();
    let key = [Value::from(job.id.as_str()), lease_id.into()];
    let attempt = |outcome: &str, error: Option<&str>| {
        let params = [
            uuid::Uuid::now_v7().to_string().into(),
            timestamp(now).into(),
            outcome.into(),
            error.map_or(Value::Null, Value::from),
        ];
        Statement::new(&ATTEMPT, [&key[..], &params[..]].concat())
    };
    let statements = match outcome {
        Ok(()) => vec![
            attempt("done", None),
            Statement::new(&DONE, [&key[..], &[timestamp(now).into()]].concat()),
        ],
        Err(mut error) => {
            if error.len() > MAX_ERROR_BYTES {
                let mut end = MAX_ERROR_BYTES;
                while !error.is_char_boundary(end) {
                    end -= 1;
                }
                error.truncate(end);
            }
            let dead = job.is_last_attempt();
            tracing::warn!(job = %job.id, function = %job.function, attempt = job.attempt, dead, %error, "a job failed");
            let recorded = attempt("failed", Some(&error));
            let outcome = if dead {
                Statement::new(
                    &DEAD,
                    [&key[..], &[timestamp(now).into(), error.into()]].concat(),
                )
            } else {
                let retry_at = now + backoff(settings, job.attempt);
                Statement::new(
                    &RETRY,
                    [&key[..], &[timestamp(retry_at).into(), error.into()]].concat(),
                )
            };
            vec![recorded, outcome]
        }
    };
    db.transaction(statements).await.map(drop)
}

/// The workers of this instance: one loop per queue, each running up to the
/// queue's concurrency of jobs at once.
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts the workers, which also look at once whenever `wake` is
    /// notified (after a commit that enqueued); they stop when `stop` turns
    /// true (jobs running then finish or, if the process ends first, run again
    /// after their lease).
    pub fn spawn(
        db: Database,
        settings: Settings,
        (runner, wake): (Arc<dyn Runner>, Arc<Notify>),
        stop: watch::Receiver<bool>,
    ) -> Self {
        let settings = Arc::new(settings);
        let mut handles = settings
            .queues
            .iter()
            .map(|(queue, concurrency)| {
                let worker = Worker {
                    db: db.clone(),
                    settings: settings.clone(),
                    runner: runner.clone(),
                    queue: queue.clone(),
                    slots: Arc::new(Semaphore::new((*concurrency).max(1))),
                    wake: wake.clone(),
                };
                tokio::spawn(worker.serve(stop.clone()))
            })
            .collect::<Vec<_>>();
        let mut stop = stop;
        handles.push(tokio::spawn(async move {
            loop {
                if let Err(error) = gauge(&db, &settings).await {
                    tracing::warn!(%error, "the job queue's figures could not be read");
                }
                tokio::select! {
                    () = tokio::time::sleep(GAUGE_EVERY) => {}
                    _ = stop.wait_for(|stopped| *stopped) => return,
                }
            }
        }));
        Self { handles }
    }

    /// Waits for every worker loop to end (after `stop`).
    pub async fn join(self) {
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

/// Each run's time and outcome, per queue.
fn observe(job: &Job, outcome: &Result<(), String>, took: Duration) {
    let queue = job.queue.clone();
    metrics::histogram!("gatehouse_job_run_seconds", "queue" => queue.clone())
        .record(took.as_secs_f64());
    let ended = match outcome {
        Ok(()) => "done",
        Err(_) if job.is_last_attempt() => "dead",
        Err(_) => "retry",
    };
    metrics::counter!("gatehouse_job_runs_total", "queue" => queue, "outcome" => ended)
        .increment(1);
}

/// How many jobs each queue holds per standing, and its oldest due job's
/// time; `failed` is a waiting job whose last attempt failed (it waits for its
/// retry), `waiting` one that has not failed yet.
const STANDING: Sql = Sql::both(
    "SELECT queue, CASE WHEN state = 'waiting' AND last_error IS NOT NULL THEN 'failed' ELSE state END \
     AS standing, COUNT(*), MIN(run_at) FROM gatehouse_jobs \
     WHERE state IN ('waiting', 'running', 'dead') GROUP BY queue, standing",
);

const GAUGED: [&str; 4] = ["waiting", "failed", "running", "dead"];

/// Sets the queue gauges from the database (every instance sees every
/// instance's jobs, so any one's figures are the whole queue's).
async fn gauge(db: &Database, settings: &Settings) -> Result<(), DbError> {
    let rows = db.query(Statement::new(&STANDING, vec![])).await?;
    let find = |queue: &str, state: &str| {
        rows.iter().find(|row| {
            row.text(0).is_ok_and(|q| q == queue) && row.text(1).is_ok_and(|s| s == state)
        })
    };
    let now = OffsetDateTime::now_utc();
    for queue in settings.queues.keys() {
        for state in GAUGED {
            let count = find(queue, state).map_or(Ok(0), |row| row.integer(2))?;
            metrics::gauge!("gatehouse_jobs", "queue" => queue.clone(), "state" => state)
                .set(count as f64);
        }
        let mut oldest_due = 0.0_f64;
        for standing in ["waiting", "failed"] {
            let due = find(queue, standing)
                .map(|row| row.text(3))
                .transpose()?
                .and_then(|due| OffsetDateTime::parse(due, &Rfc3339).ok())
                .filter(|due| *due <= now);
            if let Some(due) = due {
                oldest_due = oldest_due.max((now - due).as_seconds_f64());
            }
        }
        metrics::gauge!("gatehouse_jobs_oldest_due_seconds", "queue" => queue.clone())
            .set(oldest_due);
    }
    Ok(())
}

const GAUGE_EVERY: Duration = Duration::from_secs(10);

struct Worker {
    db: Database,
    settings: Arc<Settings>,
    runner: Arc<dyn Runner>,
    queue: String,
    slots: Arc<Semaphore>,
    wake: Arc<Notify>,
}

impl Worker {
    async fn serve(self, mut stop: watch::Receiver<bool>) {
        loop {
            let woken = self.wake.notified();
            // Claim while there are free slots and due jobs.
            loop {
                let Ok(slot) = self.slots.clone().acquire_owned().await else {
                    return;
                };
                let lease_id = uuid::Uuid::new_v4().to_string();
                match claim(&self.db, &self.settings, &self.queue, &lease_id).await {
                    Ok(Some(job)) => {
                        let (db, settings, runner) =
                            (self.db.clone(), self.settings.clone(), self.runner.clone());
                        tokio::spawn(async move {
                            let started = std::time::Instant::now();
                            // A lease that ran out on the last attempt: spent.
                            let outcome = if job.attempt > job.max_attempts {
                                Err("its last attempt ended without an outcome (lease expired)"
                                    .to_owned())
                            } else {
                                runner.run(job.clone()).await
                            };
                            observe(&job, &outcome, started.elapsed());
                            if let Err(error) =
                                record(&db, &settings, (&job, &lease_id), outcome).await
                            {
                                tracing::error!(job = %job.id, %error, "a job's outcome could not be recorded; it will run again after its lease");
                            }
                            drop(slot);
                        });
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::error!(queue = %self.queue, %error, "the job queue could not be read");
                        break;
                    }
                }
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(self.settings.poll) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    }
}
