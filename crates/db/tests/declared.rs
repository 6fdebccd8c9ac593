//! Migrations of the declared schema, on SQLite and (in CI) PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

use std::time::Duration;

use gatehouse_db::testing::TestDatabase;
use gatehouse_db::{Database, DbError, MigrateOptions, PoolOptions, Statement};
use gatehouse_schema::Schema;

fn schema(text: &str) -> Schema {
    Schema::from_toml(text).unwrap()
}

const V1: &str = r#"
[tables.notes]
columns.id = { type = "bigint", primary_key = true }
columns.body = { type = "text", not_null = true }
"#;

fn v2() -> String {
    format!("{V1}columns.pinned = {{ type = \"boolean\", not_null = true, default = false }}\n")
}

async fn open(database: &TestDatabase) -> Database {
    let options = PoolOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        ..PoolOptions::default()
    };
    Database::open(&database.location(), options).await.unwrap()
}

const APPLY: MigrateOptions = MigrateOptions {
    dry_run: false,
    allow_destructive: false,
};

/// Test-only SQL: the statements a compiler would produce, written out.
async fn insert_note(db: &Database, body: &str) {
    let sql = match db.dialect() {
        gatehouse_db::Dialect::Sqlite => "INSERT INTO \"notes\" (\"body\") VALUES (?1)",
        gatehouse_db::Dialect::Postgres => "INSERT INTO \"notes\" (\"body\") VALUES ($1)",
    };
    db.transaction(vec![Statement::compiled(sql.into(), vec![body.into()])])
        .await
        .unwrap();
}

async fn count_notes(db: &Database) -> Result<i64, DbError> {
    let sql = "SELECT CAST(COUNT(*) AS BIGINT) FROM \"notes\"";
    db.query(Statement::compiled(sql.into(), vec![])).await?[0].integer(0)
}

#[tokio::test]
async fn applies_once_and_then_is_up_to_date() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let first = db.migrate_schema(&schema(V1), APPLY).await.unwrap();
        assert!(first.applied);
        assert_eq!(first.version, 1);
        insert_note(&db, "hello").await;
        let again = db.migrate_schema(&schema(V1), APPLY).await.unwrap();
        assert!(!again.applied && again.plan.is_empty());
        assert_eq!(again.version, 1);
        assert_eq!(db.applied_schema().await.unwrap(), (1, schema(V1)));
    }
}

#[tokio::test]
async fn added_columns_fill_existing_rows_from_their_default() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        db.migrate_schema(&schema(V1), APPLY).await.unwrap();
        insert_note(&db, "before").await;
        let second = db.migrate_schema(&schema(&v2()), APPLY).await.unwrap();
        assert_eq!(second.version, 2);
        let sql = "SELECT CAST(COUNT(*) AS BIGINT) FROM \"notes\" WHERE \"pinned\" = FALSE";
        let rows = db
            .query(Statement::compiled(sql.into(), vec![]))
            .await
            .unwrap();
        assert_eq!(rows[0].integer(0).unwrap(), 1);
    }
}

#[tokio::test]
async fn dry_runs_change_nothing() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let dry = MigrateOptions {
            dry_run: true,
            ..APPLY
        };
        let preview = db.migrate_schema(&schema(V1), dry).await.unwrap();
        assert!(!preview.applied);
        assert!(
            preview
                .plan
                .statements()
                .any(|s| s.starts_with("CREATE TABLE \"notes\""))
        );
        assert_eq!(db.applied_schema().await.unwrap().0, 0);
        assert!(count_notes(&db).await.is_err(), "no table was created");
    }
}

#[tokio::test]
async fn destructive_steps_need_permission() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        db.migrate_schema(&schema(&v2()), APPLY).await.unwrap();
        insert_note(&db, "kept").await;
        let refused = db.migrate_schema(&schema(V1), APPLY).await.unwrap_err();
        assert!(
            matches!(&refused, DbError::Destructive(steps) if steps == &["drop column notes.pinned"]),
            "{refused}"
        );
        assert_eq!(db.applied_schema().await.unwrap().0, 1);
        let allowed = MigrateOptions {
            allow_destructive: true,
            ..APPLY
        };
        assert!(
            db.migrate_schema(&schema(V1), allowed)
                .await
                .unwrap()
                .applied
        );
        assert_eq!(count_notes(&db).await.unwrap(), 1, "other data stays");
    }
}

#[tokio::test]
async fn a_failed_migration_leaves_the_database_as_it_was() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        db.migrate_schema(&schema(V1), APPLY).await.unwrap();
        insert_note(&db, "same").await;
        insert_note(&db, "same").await;
        // Adding a column succeeds, then the unique index on duplicate bodies fails.
        let breaking = V1.replace(
            "columns.body = { type = \"text\", not_null = true }",
            "columns.body = { type = \"text\", not_null = true }\n\
             columns.title = { type = \"text\" }\nunique = [[\"body\"]]",
        );
        assert!(db.migrate_schema(&schema(&breaking), APPLY).await.is_err());
        assert_eq!(db.applied_schema().await.unwrap(), (1, schema(V1)));
        let sql = "SELECT \"title\" FROM \"notes\"";
        assert!(
            db.query(Statement::compiled(sql.into(), vec![]))
                .await
                .is_err(),
            "the column was rolled back"
        );
        assert_eq!(count_notes(&db).await.unwrap(), 2);
    }
}

#[tokio::test]
async fn instances_migrating_together_apply_once() {
    for database in TestDatabase::all() {
        let (a, b) = (open(&database).await, open(&database).await);
        let declared = schema(V1);
        let (first, second) = tokio::join!(
            a.migrate_schema(&declared, APPLY),
            b.migrate_schema(&declared, APPLY)
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(
            [first.applied, second.applied]
                .iter()
                .filter(|x| **x)
                .count(),
            1
        );
        assert_eq!(a.applied_schema().await.unwrap().0, 1);
    }
}

#[tokio::test]
async fn a_misspelt_name_is_an_error_not_a_string() {
    for database in TestDatabase::all() {
        let db = open(&database).await;
        db.migrate_schema(&schema(V1), APPLY).await.unwrap();
        let sql = "SELECT \"no_such_column\" FROM \"notes\"";
        assert!(
            db.query(Statement::compiled(sql.into(), vec![]))
                .await
                .is_err(),
            "{:?}",
            db.dialect()
        );
    }
}
