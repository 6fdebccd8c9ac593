//! Open transactions (a function's invocation): one commit for every write,
//! nothing kept when dropped, savepoints per step, and the limit that keeps one
//! from holding the SQLite writer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

use std::time::Duration;

use gatehouse_db::testing::TestDatabase;
use gatehouse_db::{Database, DbError, MigrateOptions, PoolOptions, Statement};
use gatehouse_schema::Schema;

const NOTES: &str = r#"
[tables.notes]
columns.id = { type = "bigint", primary_key = true }
columns.body = { type = "text", not_null = true, unique = true }
"#;

async fn open(database: &TestDatabase) -> Database {
    let options = PoolOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        ..PoolOptions::default()
    };
    let db = Database::open(&database.location(), options).await.unwrap();
    let apply = MigrateOptions {
        dry_run: false,
        allow_destructive: false,
    };
    db.migrate_schema(&Schema::from_toml(NOTES).unwrap(), apply)
        .await
        .unwrap();
    db
}

/// Test-only SQL: what the compiler would produce, written out ($1 serves both).
fn insert(body: &str) -> Statement {
    let sql = "INSERT INTO \"notes\" (\"body\") VALUES ($1) RETURNING \"id\"";
    Statement::compiled(sql.into(), vec![body.into()])
}

fn count() -> Statement {
    Statement::compiled(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM \"notes\"".into(),
        vec![],
    )
}

async fn notes(db: &Database) -> i64 {
    db.query(count()).await.unwrap()[0].integer(0).unwrap()
}

const LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn commits_every_write_at_once_and_sees_its_own_writes() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let transaction = db.begin(LIMIT);
        assert!(!transaction.is_writing().await);
        transaction
            .transaction_if(vec![insert("a")], |_| true)
            .await
            .unwrap()
            .unwrap();
        transaction
            .transaction_if(vec![insert("b")], |_| true)
            .await
            .unwrap()
            .unwrap();
        // Inside: both; outside: none yet.
        assert_eq!(
            transaction.query(count()).await.unwrap()[0]
                .integer(0)
                .unwrap(),
            2
        );
        assert_eq!(notes(&db).await, 0, "{:?}", db.dialect());
        transaction.commit().await.unwrap();
        assert_eq!(notes(&db).await, 2);
    }
}

#[tokio::test]
async fn dropped_uncommitted_keeps_nothing_and_frees_the_writer() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let transaction = db.begin(LIMIT);
        transaction
            .transaction_if(vec![insert("a")], |_| true)
            .await
            .unwrap();
        drop(transaction);
        // The next write is not stuck behind the dropped transaction.
        tokio::time::timeout(Duration::from_secs(2), db.transaction(vec![insert("b")]))
            .await
            .expect("the writer was freed")
            .unwrap();
        assert_eq!(notes(&db).await, 1);
    }
}

#[tokio::test]
async fn a_failed_or_refused_step_is_undone_alone() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let transaction = db.begin(LIMIT);
        transaction
            .transaction_if(vec![insert("a")], |_| true)
            .await
            .unwrap();
        let duplicate = transaction
            .transaction_if(vec![insert("b"), insert("a")], |_| true)
            .await;
        assert!(duplicate.is_err(), "{:?}", db.dialect());
        let refused = transaction
            .transaction_if(vec![insert("c")], |_| false)
            .await
            .unwrap();
        assert!(refused.is_none());
        transaction
            .transaction_if(vec![insert("d")], |_| true)
            .await
            .unwrap();
        transaction.commit().await.unwrap();
        let bodies = db
            .query(Statement::compiled(
                "SELECT \"body\" FROM \"notes\" ORDER BY \"body\"".into(),
                vec![],
            ))
            .await
            .unwrap();
        let bodies: Vec<&str> = bodies.iter().map(|row| row.text(0).unwrap()).collect();
        assert_eq!(bodies, ["a", "d"], "{:?}", db.dialect());
    }
}

#[tokio::test]
async fn past_its_limit_it_is_rolled_back_and_other_writers_go_on() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let transaction = db.begin(Duration::from_millis(200));
        transaction
            .transaction_if(vec![insert("a")], |_| true)
            .await
            .unwrap();
        // Another writer waits at most about the limit, then gets through.
        let started = std::time::Instant::now();
        db.transaction(vec![insert("b")]).await.unwrap();
        if db.dialect() == gatehouse_db::Dialect::Sqlite {
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let late = transaction
            .transaction_if(vec![insert("c")], |_| true)
            .await;
        assert!(matches!(late, Err(DbError::TransactionExpired)), "{late:?}");
        assert!(matches!(
            transaction.commit().await,
            Err(DbError::TransactionExpired)
        ));
        assert_eq!(notes(&db).await, 1, "{:?}", db.dialect());
    }
}

/// What follows a commit is done in the order of the commits: on SQLite the
/// writer runs it before the next write commits (realtime delivers one
/// table's changes in commit order by it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_follows_commits_runs_in_commit_order() {
    let database = TestDatabase::sqlite();
    let db = open(&database).await;
    let followed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..40 {
        let (db, followed) = (db.clone(), followed.clone());
        writers.spawn(async move {
            let transaction = db.begin(LIMIT);
            let rows = transaction
                .transaction_if(vec![insert(&format!("note {n}"))], |_| true)
                .await
                .unwrap()
                .unwrap();
            let id = rows[0][0].integer(0).unwrap();
            transaction.on_commit(move || {
                let writer = std::thread::current().name().map(str::to_owned);
                followed.lock().unwrap().push((id, writer));
            });
            transaction.commit().await.unwrap();
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let followed = followed.lock().unwrap();
    let ids: Vec<i64> = followed.iter().map(|(id, _)| *id).collect();
    let mut in_order = ids.clone();
    in_order.sort_unstable();
    assert_eq!(ids, in_order, "ids are given in commit order");
    assert!(
        followed
            .iter()
            .all(|(_, thread)| thread.as_deref() == Some("gatehouse-sqlite-writer")),
        "run by the writer, before it commits anything else"
    );
}
