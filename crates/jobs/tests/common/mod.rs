//! What the queue's test files share.

#![allow(clippy::unwrap_used)] // Test helpers fail loudly by design.

use gatehouse_db::testing::TestDatabase;
use gatehouse_db::{Database, PoolOptions};

/// A pool of its own on `database`, as one instance would hold.
pub async fn open(database: &TestDatabase) -> Database {
    let options = PoolOptions {
        max_connections: 4,
        ..PoolOptions::default()
    };
    Database::open(&database.location(), options).await.unwrap()
}
