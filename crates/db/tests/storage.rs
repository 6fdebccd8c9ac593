//! The storage layer on every backend: SQLite always; PostgreSQL when
//! GATEHOUSE_TEST_DATABASE_URL names a server (`.ci/run` sets it, and in CI its
//! absence is a failure, not a skip).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse_db::testing::TestDatabase;
use gatehouse_db::{Database, Location, PoolOptions, Sql, Statement};
use secrecy::ExposeSecret;

fn options() -> PoolOptions {
    PoolOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
        ..PoolOptions::default()
    }
}

#[tokio::test]
async fn opening_migrates_once_and_again_is_harmless() {
    for backend in TestDatabase::all() {
        let location = backend.location();
        let (first, second) = tokio::join!(
            Database::open(&location, options()),
            Database::open(&location, options())
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        first.ping().await.unwrap();
        second.ping().await.unwrap();
        drop((first, second));
        let again = Database::open(&location, options()).await.unwrap();
        assert_eq!(again.meta("never-set").await.unwrap(), None);
    }
}

/// Migration 14: emails still waiting in the old outbox become jobs of the
/// email queue, due at once; sent ones stay where they were.
#[tokio::test]
async fn unsent_outbox_emails_move_into_the_job_queue() {
    const OUTBOX: Sql = Sql::both(
        "INSERT INTO gatehouse_outbox (id, recipient, subject, text_body, html_body, created_at, \
         next_attempt_at, sent_at) VALUES ($1, 'pat@example.com', 'Confirm', 'text', '<p>html</p>', \
         '2026-12-01T00:00:00.000000Z', '2026-12-01T00:00:00.000000Z', $2)",
    );
    // Back to version 13: the ledger forgets 14 and later, and what the later
    // ones added that cannot be added twice goes (15's and 17's columns).
    const FORGET: Sql = Sql::both("DELETE FROM gatehouse_migrations WHERE version >= 14");
    const UNDO_15: Sql = Sql::both("ALTER TABLE gatehouse_jobs DROP COLUMN enqueued_by");
    const UNDO_17_AAL: Sql = Sql::both("ALTER TABLE gatehouse_sessions DROP COLUMN aal");
    const UNDO_17_AMR: Sql = Sql::both("ALTER TABLE gatehouse_sessions DROP COLUMN amr");
    const JOBS: Sql = Sql::both(
        "SELECT id, queue, function, payload, state, run_at FROM gatehouse_jobs ORDER BY id",
    );
    for backend in TestDatabase::all() {
        let location = backend.location();
        let db = Database::open(&location, options()).await.unwrap();
        db.transaction(vec![
            Statement::new(&OUTBOX, vec!["waiting".into(), gatehouse_db::Value::Null]),
            Statement::new(
                &OUTBOX,
                vec!["sent".into(), "2026-12-01T00:00:01.000000Z".into()],
            ),
            Statement::new(&FORGET, vec![]),
            Statement::new(&UNDO_15, vec![]),
            Statement::new(&UNDO_17_AAL, vec![]),
            Statement::new(&UNDO_17_AMR, vec![]),
        ])
        .await
        .unwrap();
        drop(db);
        let db = Database::open(&location, options()).await.unwrap();
        let jobs = db.query(Statement::new(&JOBS, vec![])).await.unwrap();
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!(job.text(0).unwrap(), "waiting");
        assert_eq!(job.text(1).unwrap(), "gatehouse_email");
        assert_eq!(job.text(2).unwrap(), "gatehouse:email");
        let payload: serde_json::Value = serde_json::from_str(job.text(3).unwrap()).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({"to": "pat@example.com", "subject": "Confirm", "text": "text", "html": "<p>html</p>"})
        );
        assert_eq!(job.text(4).unwrap(), "waiting");
        assert_eq!(job.text(5).unwrap(), "2026-12-01T00:00:00.000000Z");
    }
}

#[tokio::test]
async fn meta_round_trips_and_overwrites() {
    for backend in TestDatabase::all() {
        let db = Database::open(&backend.location(), options())
            .await
            .unwrap();
        db.set_meta("format", "1").await.unwrap();
        assert_eq!(db.meta("format").await.unwrap().as_deref(), Some("1"));
        db.set_meta("format", "2").await.unwrap();
        assert_eq!(db.meta("format").await.unwrap().as_deref(), Some("2"));
        // Values are bound, never spliced: quotes and SQL are just text.
        let tricky = "x'); DROP TABLE gatehouse_meta; --";
        db.set_meta(tricky, tricky).await.unwrap();
        assert_eq!(db.meta(tricky).await.unwrap().as_deref(), Some(tricky));
        db.ping().await.unwrap();
    }
}

const WRITE: Sql = Sql::both("INSERT INTO gatehouse_meta (key, value) VALUES ($1, $2)");

const BROKEN: Sql = Sql::both("INSERT INTO no_such_table (x) VALUES (1)");

#[tokio::test]
async fn a_transaction_is_all_or_nothing() {
    for backend in TestDatabase::all() {
        let db = Database::open(&backend.location(), options())
            .await
            .unwrap();
        let result = db
            .transaction(vec![
                Statement::new(&WRITE, vec!["half".into(), "done".into()]),
                Statement::new(&BROKEN, vec![]),
            ])
            .await;
        assert!(result.is_err());
        assert_eq!(db.meta("half").await.unwrap(), None, "{:?}", db.dialect());
        // The connection is usable afterwards.
        db.set_meta("after", "ok").await.unwrap();
    }
}

/// Many writers at once (on SQLite they share commits): each gets its own outcome,
/// and a failed or refused one leaves no trace while its neighbours are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_keep_their_own_outcomes() {
    for backend in TestDatabase::all() {
        let db = Database::open(&backend.location(), options())
            .await
            .unwrap();
        db.set_meta("taken", "first").await.unwrap();
        let mut writers = tokio::task::JoinSet::new();
        for i in 0..90 {
            let db = db.clone();
            writers.spawn(async move {
                let key = match i % 3 {
                    0 => "taken".to_owned(),
                    _ => format!("key-{i}"),
                };
                let write = vec![Statement::new(
                    &WRITE,
                    vec![key.into(), i.to_string().into()],
                )];
                let outcome = if i % 3 == 1 {
                    db.transaction_if(write, |_| false).await
                } else {
                    db.transaction(write).await.map(Some)
                };
                (i, outcome)
            });
        }
        while let Some(joined) = writers.join_next().await {
            let (i, outcome) = joined.unwrap();
            match i % 3 {
                0 => assert!(outcome.unwrap_err().constraint().is_some(), "{i}"),
                1 => assert!(outcome.unwrap().is_none(), "{i}"),
                _ => assert!(outcome.unwrap().is_some(), "{i}"),
            }
        }
        for i in 0..90 {
            let kept = db.meta(&format!("key-{i}")).await.unwrap();
            let expected = (i % 3 == 2).then(|| i.to_string());
            assert_eq!(kept, expected, "key-{i} on {:?}", db.dialect());
        }
        assert_eq!(db.meta("taken").await.unwrap().as_deref(), Some("first"));
    }
}

#[test]
fn sqlite_runs_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(Database::open(&Location::Sqlite(path.clone()), options()))
        .unwrap();
    let connection = rusqlite::Connection::open(&path).unwrap();
    let mode: String = connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

const CHILD: &str = "GATEHOUSE_DURABILITY_CHILD";

/// Not a test on its own: the writer process that `acknowledged_writes_survive_kill_9`
/// starts (this same test binary, with CHILD set) and then kills.
#[tokio::test]
async fn durability_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let location = match spec.split_once(':') {
        Some(("sqlite", path)) => Location::Sqlite(path.into()),
        Some(("postgres", url)) => Location::Postgres(url.to_owned().into()),
        _ => panic!("bad {CHILD}"),
    };
    let db = Database::open(&location, options()).await.unwrap();
    // Bounded: the parent kills us long before this ends.
    for i in 0..20_000 {
        db.set_meta(&format!("k{i}"), "v").await.unwrap();
        println!("ack {i}");
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    for backend in TestDatabase::all() {
        let spec = match backend.location() {
            Location::Sqlite(path) => format!("sqlite:{}", path.display()),
            Location::Postgres(url) => format!("postgres:{}", url.expose_secret()),
        };
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "durability_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acknowledged = None;
        for line in lines.by_ref() {
            if let Some(i) = line.unwrap().strip_prefix("ack ") {
                acknowledged = Some(i.parse::<u32>().unwrap());
                if acknowledged == Some(40) {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL: no destructor, no flush, no checkpoint.
        // Acks printed before death are still in the pipe.
        for line in lines {
            if let Some(i) = line.unwrap().strip_prefix("ack ") {
                acknowledged = Some(i.parse().unwrap());
            }
        }
        child.wait().unwrap();
        let last = acknowledged.expect("the writer acknowledged nothing");
        let db = Database::open(&backend.location(), options())
            .await
            .unwrap();
        for i in 0..=last {
            assert_eq!(
                db.meta(&format!("k{i}")).await.unwrap().as_deref(),
                Some("v"),
                "k{i} of {last}"
            );
        }
    }
}

#[tokio::test]
async fn reads_abandoned_mid_query_give_their_connection_back() {
    for backend in TestDatabase::all() {
        let pool = PoolOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(2),
            ..PoolOptions::default()
        };
        let db = Database::open(&backend.location(), pool).await.unwrap();
        // Slow reads dropped while in flight, as when clients hang up.
        let slow = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 300000) \
                    SELECT CAST(COUNT(*) AS BIGINT) FROM c";
        for _ in 0..4 {
            let read = db.query(Statement::compiled(slow.into(), vec![]));
            let _ = tokio::time::timeout(Duration::from_millis(5), read).await;
        }
        for _ in 0..10 {
            db.meta("k").await.expect("every connection came back");
        }
    }
}

/// A read longer than the statement timeout is stopped, on both databases, and the
/// connection serves the next read.
#[tokio::test]
async fn a_statement_past_its_timeout_is_cancelled() {
    for backend in TestDatabase::all() {
        let pool = PoolOptions {
            max_connections: 1,
            statement_timeout: Duration::from_millis(200),
            ..PoolOptions::default()
        };
        let db = open_with_short_timeout(&backend, pool).await;
        let endless = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) \
                       SELECT CAST(COUNT(*) AS BIGINT) FROM c";
        let started = std::time::Instant::now();
        let error = db
            .query(Statement::compiled(endless.into(), vec![]))
            .await
            .unwrap_err();
        assert!(
            matches!(error, gatehouse_db::DbError::StatementTimeout),
            "{error:?} on {:?}",
            db.dialect()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        db.ping().await.unwrap();
    }
}

/// Opens `backend` under `pool`'s short statement timeout, its migrations
/// applied first under the default one (a loaded machine can take longer
/// than the short timeout for a migration step, which is not under test).
async fn open_with_short_timeout(backend: &TestDatabase, pool: PoolOptions) -> Database {
    drop(
        Database::open(&backend.location(), PoolOptions::default())
            .await
            .unwrap(),
    );
    Database::open(&backend.location(), pool).await.unwrap()
}

/// A write that runs past the statement timeout is stopped and rolled back, on
/// both databases, and the writer serves the next write.
#[tokio::test]
async fn a_write_past_its_timeout_is_cancelled() {
    for backend in TestDatabase::all() {
        let pool = PoolOptions {
            statement_timeout: Duration::from_millis(200),
            ..PoolOptions::default()
        };
        let db = open_with_short_timeout(&backend, pool).await;
        let endless = "INSERT INTO gatehouse_meta (key, value) \
                       WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) \
                       SELECT 'k' || CAST(n AS TEXT), 'v' FROM c";
        let started = std::time::Instant::now();
        let error = db
            .transaction(vec![Statement::compiled(endless.into(), vec![])])
            .await
            .unwrap_err();
        assert!(
            matches!(error, gatehouse_db::DbError::StatementTimeout),
            "{error:?} on {:?}",
            db.dialect()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(db.meta("k1").await.unwrap(), None, "rolled back");
        db.set_meta("after", "ok").await.unwrap();
    }
}

const PATH_PARTS: Sql = Sql {
    sqlite: "SELECT gatehouse_foldername(?1, 1), gatehouse_foldername(?1, 2), gatehouse_filename(?1), \
             gatehouse_extension(?1)",
    postgres: "SELECT gatehouse_foldername($1::text, 1), gatehouse_foldername($1::text, 2), \
               gatehouse_filename($1::text), gatehouse_extension($1::text)",
};

/// Storage policies' path functions mean the same on both databases, and the
/// same as `gatehouse_db::path_parts`.
#[tokio::test]
async fn path_parts_agree_on_every_backend() {
    use gatehouse_db::path_parts::{extension, filename, folder};
    for backend in TestDatabase::all() {
        let db = Database::open(&backend.location(), options())
            .await
            .unwrap();
        for path in [
            "a/b/c.png",
            "c.png",
            "a/c",
            "x/.bashrc",
            "a.b/c",
            "file.",
            "d/e.tar.gz",
            "ü/ñ.jpg",
        ] {
            let rows = db
                .query(Statement::new(&PATH_PARTS, vec![path.to_owned().into()]))
                .await
                .unwrap();
            let got: Vec<Option<&str>> =
                (0..4).map(|i| rows[0].optional_text(i).unwrap()).collect();
            let want = vec![
                folder(path, 1),
                folder(path, 2),
                Some(filename(path)),
                extension(path),
            ];
            assert_eq!(got, want, "{path} on {:?}", db.dialect());
        }
    }
}
