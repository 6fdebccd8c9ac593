//! Fresh databases for tests, behind the `testing` feature. SQLite always;
//! PostgreSQL when GATEHOUSE_TEST_DATABASE_URL names a server. In CI (CI=true)
//! its absence panics, so no suite silently skips PostgreSQL there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test support fails loudly by design.

use secrecy::SecretString;

use crate::Location;

pub const ADMIN_URL_VARIABLE: &str = "GATEHOUSE_TEST_DATABASE_URL";

/// A database of its own for one test, dropped afterwards.
pub enum TestDatabase {
    Sqlite(tempfile::TempDir),
    Postgres { admin: String, name: String },
}

impl TestDatabase {
    pub fn sqlite() -> Self {
        TestDatabase::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A fresh PostgreSQL database, or `None` outside CI when no server is named.
    pub fn postgres() -> Option<Self> {
        match std::env::var(ADMIN_URL_VARIABLE) {
            Ok(admin) => {
                let name = format!("gatehouse_test_{}", uuid::Uuid::new_v4().simple());
                admin_sql(&admin, format!("CREATE DATABASE \"{name}\""));
                Some(TestDatabase::Postgres { admin, name })
            }
            Err(_) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
                panic!("{ADMIN_URL_VARIABLE} is not set: CI runs these tests on PostgreSQL too")
            }
            Err(_) => {
                eprintln!("{ADMIN_URL_VARIABLE} not set: PostgreSQL cases skipped outside CI");
                None
            }
        }
    }

    /// SQLite, then PostgreSQL when available.
    pub fn all() -> Vec<Self> {
        std::iter::once(Self::sqlite())
            .chain(Self::postgres())
            .collect()
    }

    pub fn location(&self) -> Location {
        match self {
            TestDatabase::Sqlite(dir) => Location::Sqlite(dir.path().join("gatehouse.db")),
            TestDatabase::Postgres { admin, name } => Location::Postgres(database_url(admin, name)),
        }
    }
}

fn database_url(admin: &str, name: &str) -> SecretString {
    let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
    format!("{base}/{name}").into()
}

/// Runs CREATE/DROP DATABASE (which take no parameters; the name is ours) on a
/// runtime of its own, so it also works from `Drop` inside an async test.
fn admin_sql(admin: &str, sql: String) {
    let admin = admin.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client.batch_execute(&sql).await.unwrap();
        });
    })
    .join()
    .unwrap();
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let TestDatabase::Postgres { admin, name } = self {
            admin_sql(
                admin,
                format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            );
        }
    }
}
