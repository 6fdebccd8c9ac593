//! The queue on both databases: an enqueue lives or dies with its transaction,
//! keys make it idempotent, failures back off and end dead, a lease that runs
//! out hands the job to another worker, and two instances' workers share
//! thousands of jobs without losing or repeating one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

mod common;

use common::open;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use gatehouse_db::testing::TestDatabase;
use gatehouse_db::{Database, Sql, Statement};
use gatehouse_jobs::{Job, NewJob, Runner, Settings, Workers, admin, enqueue};
use serde_json::json;
use tokio::sync::watch;

fn quick() -> Settings {
    Settings {
        poll: Duration::from_millis(20),
        backoff: Duration::from_millis(40),
        ..Settings::default()
    }
}

/// Each run: the job's id, its attempt and when it started; `fail` makes every
/// run fail, `hang` makes it never finish.
#[derive(Default)]
struct Recorder {
    runs: Mutex<Vec<(String, i64, Instant)>>,
    fail: bool,
    hang: bool,
}

impl Runner for Recorder {
    fn run(&self, job: Job) -> BoxFuture<'_, Result<(), String>> {
        self.runs
            .lock()
            .unwrap()
            .push((job.payload["n"].to_string(), job.attempt, Instant::now()));
        Box::pin(async move {
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.fail {
                Err(format!("attempt {} failed", job.attempt))
            } else {
                Ok(())
            }
        })
    }
}

impl Recorder {
    fn count(&self) -> usize {
        self.runs.lock().unwrap().len()
    }
}

const STATES: Sql = Sql::both(
    "SELECT state, attempts, COALESCE(last_error, '') FROM gatehouse_jobs ORDER BY created_at, id",
);

async fn states(db: &Database) -> Vec<(String, i64, String)> {
    let rows = db.query(Statement::new(&STATES, vec![])).await.unwrap();
    rows.iter()
        .map(|row| {
            (
                row.text(0).unwrap().to_owned(),
                row.integer(1).unwrap(),
                row.text(2).unwrap().to_owned(),
            )
        })
        .collect()
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn job(n: usize) -> NewJob {
    NewJob::new("handler", json!({ "n": n }))
}

fn start(
    db: &Database,
    settings: Settings,
    runner: Arc<Recorder>,
) -> (Workers, watch::Sender<bool>) {
    let (stop, stopped) = watch::channel(false);
    let wake = Arc::new(tokio::sync::Notify::new());
    let runner: Arc<dyn Runner> = runner;
    (
        Workers::spawn(db.clone(), settings, (runner, wake), stopped),
        stop,
    )
}

#[tokio::test]
async fn a_rolled_back_enqueue_never_runs_and_a_committed_one_does() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let settings = quick();
        let undone = db.begin(Duration::from_secs(1));
        undone
            .transaction_if(vec![enqueue(&settings, &job(1)).unwrap()], |_| true)
            .await
            .unwrap();
        undone.rollback().await;
        let kept = db.begin(Duration::from_secs(1));
        kept.transaction_if(vec![enqueue(&settings, &job(2)).unwrap()], |_| true)
            .await
            .unwrap();
        kept.commit().await.unwrap();

        let runner = Arc::new(Recorder::default());
        let (workers, stop) = start(&db, settings, runner.clone());
        until("the committed job", async || {
            states(&db).await == [("done".into(), 1, String::new())]
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let runs = runner.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].0, "2");
        stop.send(true).unwrap();
        workers.join().await;
    }
}

#[tokio::test]
async fn a_key_enqueues_once() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let settings = quick();
        let keyed = NewJob {
            key: Some("order-7".into()),
            ..job(1)
        };
        let first = db
            .transaction(vec![enqueue(&settings, &keyed).unwrap()])
            .await
            .unwrap();
        let again = db
            .transaction(vec![enqueue(&settings, &keyed).unwrap()])
            .await
            .unwrap();
        assert_eq!(first[0].len(), 1, "the first enqueue answers its id");
        assert!(again[0].is_empty(), "the second answers nothing");
        assert_eq!(states(&db).await.len(), 1);
        // Without a key, the same payload is another job.
        db.transaction(vec![enqueue(&settings, &job(1)).unwrap()])
            .await
            .unwrap();
        db.transaction(vec![enqueue(&settings, &job(1)).unwrap()])
            .await
            .unwrap();
        assert_eq!(states(&db).await.len(), 3);
    }
}

#[tokio::test]
async fn enqueueing_checks_what_it_is_given() {
    let settings = Settings::default();
    let elsewhere = NewJob {
        queue: "nowhere".into(),
        ..job(1)
    };
    assert!(enqueue(&settings, &elsewhere).is_err());
    assert!(enqueue(&settings, &NewJob::new("handler", json!([1]))).is_err());
    let big = NewJob::new("handler", json!({ "text": "x".repeat(70_000) }));
    assert!(enqueue(&settings, &big).is_err());
    let keyless = NewJob {
        key: Some(String::new()),
        ..job(1)
    };
    assert!(enqueue(&settings, &keyless).is_err());
    let endless = NewJob {
        max_attempts: Some(0),
        ..job(1)
    };
    assert!(enqueue(&settings, &endless).is_err());
}

#[tokio::test]
async fn failures_back_off_then_the_job_is_dead() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let settings = quick();
        let limited = NewJob {
            max_attempts: Some(3),
            ..job(1)
        };
        db.transaction(vec![enqueue(&settings, &limited).unwrap()])
            .await
            .unwrap();
        let runner = Arc::new(Recorder {
            fail: true,
            ..Recorder::default()
        });
        let (workers, stop) = start(&db, settings.clone(), runner.clone());
        until("the dead letter", async || states(&db).await[0].0 == "dead").await;
        assert_eq!(
            states(&db).await,
            [("dead".into(), 3, "attempt 3 failed".into())]
        );
        let runs = runner.runs.lock().unwrap().clone();
        assert_eq!(runs.iter().map(|run| run.1).collect::<Vec<_>>(), [1, 2, 3]);
        // Each retry waited at least half its backoff (the jitter's floor),
        // and the second backoff is twice the first.
        assert!(runs[1].2 - runs[0].2 >= settings.backoff / 2);
        assert!(runs[2].2 - runs[1].2 >= settings.backoff);
        stop.send(true).unwrap();
        workers.join().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(runner.count(), 3, "a dead job is not run again");

        // Each attempt is kept with its error, until the retention passes.
        let id = admin::list(&db, (None, None), 1).await.unwrap()[0]
            .id
            .clone();
        let history = admin::show(&db, &id)
            .await
            .unwrap()
            .unwrap()
            .history
            .unwrap();
        let kept: Vec<(i64, &str, Option<&str>)> = history
            .iter()
            .map(|a| (a.attempt, a.outcome.as_str(), a.error.as_deref()))
            .collect();
        assert_eq!(
            kept,
            [
                (1, "failed", Some("attempt 1 failed")),
                (2, "failed", Some("attempt 2 failed")),
                (3, "failed", Some("attempt 3 failed")),
            ]
        );
        assert!(history.iter().all(|a| a.started_at.is_some()));
        assert_eq!(
            admin::prune(&db, Duration::from_secs(3600)).await.unwrap(),
            (0, 0),
            "within the retention"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(admin::prune(&db, Duration::ZERO).await.unwrap(), (1, 0));
        assert!(admin::show(&db, &id).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_lease_that_runs_out_hands_the_job_to_another_worker() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let settings = Settings {
            lease: Duration::from_millis(300),
            ..quick()
        };
        db.transaction(vec![enqueue(&settings, &job(1)).unwrap()])
            .await
            .unwrap();
        // The first instance takes the job and never finishes it (as if it died).
        let stuck = Arc::new(Recorder {
            hang: true,
            ..Recorder::default()
        });
        let (first, stop_first) = start(&db, settings.clone(), stuck.clone());
        until("the first claim", async || stuck.count() == 1).await;
        // It dies: it claims nothing more, and its run never reports.
        stop_first.send(true).unwrap();
        first.join().await;
        let healthy = Arc::new(Recorder::default());
        let (second, stop_second) = start(&db, settings, healthy.clone());
        until("the takeover", async || states(&db).await[0].0 == "done").await;
        assert_eq!(
            states(&db).await[0].1,
            2,
            "the lost run counts as an attempt"
        );
        assert_eq!(healthy.count(), 1);
        assert_eq!(healthy.runs.lock().unwrap()[0].1, 2);
        stop_second.send(true).unwrap();
        second.join().await;
    }
}

#[tokio::test]
async fn two_instances_run_every_job_once() {
    const JOBS: usize = 2_000;
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let settings = Settings {
            queues: [("default".to_owned(), 8)].into(),
            ..quick()
        };
        let statements = (0..JOBS)
            .map(|n| enqueue(&settings, &job(n)).unwrap())
            .collect::<Vec<_>>();
        for chunk in statements.chunks(500) {
            db.transaction(chunk.to_vec()).await.unwrap();
        }
        // Two instances: each its own pool and workers on the one database.
        let other = open(&database).await;
        let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        let (first, stop_first) = start(&db, settings.clone(), a.clone());
        let (second, stop_second) = start(&other, settings, b.clone());
        until("every job", async || a.count() + b.count() >= JOBS).await;
        let done = Statement::new(
            &Sql::both("SELECT COUNT(*) FROM gatehouse_jobs WHERE state = 'done'"),
            vec![],
        );
        until("every outcome", async || {
            db.query(done.clone()).await.unwrap()[0].integer(0).unwrap() == JOBS as i64
        })
        .await;
        let mut seen = HashMap::new();
        for (n, _, _) in a
            .runs
            .lock()
            .unwrap()
            .iter()
            .chain(b.runs.lock().unwrap().iter())
        {
            *seen.entry(n.clone()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), JOBS, "none lost");
        assert!(seen.values().all(|runs| *runs == 1), "none run twice");
        assert!(a.count() > 0 && b.count() > 0, "both instances took jobs");
        for stop in [stop_first, stop_second] {
            stop.send(true).unwrap();
        }
        first.join().await;
        second.join().await;
    }
}

#[tokio::test]
async fn operators_retry_cancel_and_purge() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let settings = Settings {
            max_attempts: 1,
            ..quick()
        };
        for n in 0..2 {
            db.transaction(vec![enqueue(&settings, &job(n)).unwrap()])
                .await
                .unwrap();
        }
        let listed = admin::list(&db, (Some("waiting"), None), 10).await.unwrap();
        assert_eq!(listed.len(), 2);
        let (newest, oldest) = (listed[0].id.as_str(), listed[1].id.as_str());
        assert_eq!(listed[1].payload, json!({"n": 0}), "newest first");
        assert!(admin::cancel(&db, newest).await.unwrap());
        assert!(
            !admin::cancel(&db, newest).await.unwrap(),
            "already cancelled"
        );

        let failing = Arc::new(Recorder {
            fail: true,
            ..Recorder::default()
        });
        let (workers, stop) = start(&db, settings.clone(), failing.clone());
        until("the dead letter", async || {
            admin::show(&db, oldest).await.unwrap().unwrap().state == "dead"
        })
        .await;
        stop.send(true).unwrap();
        workers.join().await;
        assert_eq!(failing.count(), 1, "the cancelled job never ran");
        let dead = admin::show(&db, oldest).await.unwrap().unwrap();
        assert_eq!(dead.last_error.as_deref(), Some("attempt 1 failed"));
        assert!(
            dead.started_at.as_deref() >= Some(dead.created_at.as_str()),
            "{dead:?}"
        );

        assert!(admin::retry(&db, oldest).await.unwrap());
        let healthy = Arc::new(Recorder::default());
        let (workers, stop) = start(&db, settings, healthy.clone());
        until("the retried job", async || {
            admin::show(&db, oldest).await.unwrap().unwrap().state == "done"
        })
        .await;
        stop.send(true).unwrap();
        workers.join().await;
        assert_eq!(healthy.count(), 1);

        assert_eq!(
            admin::purge(&db, "done", Duration::from_secs(3600))
                .await
                .unwrap(),
            0,
            "it finished just now"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(admin::purge(&db, "done", Duration::ZERO).await.unwrap(), 1);
        assert_eq!(
            admin::purge(&db, "cancelled", Duration::ZERO)
                .await
                .unwrap(),
            1
        );
        assert!(admin::list(&db, (None, None), 10).await.unwrap().is_empty());
    }
}
