//! The SQL each representative request compiles to, on record: the shop's
//! tables and storage policy (examples/shop), on SQLite and (when
//! GATEHOUSE_TEST_DATABASE_URL names a server, always in CI) PostgreSQL. A
//! change to a policy, the compiler or the access decision shows up here as a
//! readable diff of the statements, reviewed with `cargo insta review`.
//!
//! Only statement texts are recorded (the database's trace log), never
//! parameters: the caller's id and the request's values are bound, so they
//! appear as placeholders, which is the point.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

use std::sync::{Arc, Mutex};

use gatehouse_db::testing::TestDatabase;
use gatehouse_db::{Database, Dialect, MigrateOptions, PoolOptions, STATEMENT_LOG};
use gatehouse_keys::LocalKeys;
use gatehouse_rest::{Caller, ReadOptions, Resolution, Rest, RestSettings, WriteOptions};
use gatehouse_server::config::{Config, Overrides};
use gatehouse_storage::{
    Actor, BlobConfig, Blobs, Buckets, ListRequest, NewBucket, NewObject, ObjectSettings, Objects,
    UrlSigner,
};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";

/// Statement texts as the database's trace log gives them.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    /// What was recorded since the last call, one statement a paragraph, broken
    /// before its main clauses so a diff points at the clause that changed.
    fn take(&self) -> String {
        let statements = std::mem::take(&mut *self.0.lock().unwrap());
        statements
            .iter()
            .map(|sql| {
                let mut text = sql.clone();
                for clause in [
                    " FROM ",
                    " WHERE ",
                    " AND ",
                    " OR ",
                    " ORDER BY ",
                    " LIMIT ",
                    " ON CONFLICT ",
                    " RETURNING ",
                ] {
                    text = text.replace(clause, &format!("\n  {}", clause.trim_start()));
                }
                text
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Sql(Option<String>);
        impl tracing::field::Visit for Sql {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "sql" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        if event.metadata().target() != STATEMENT_LOG {
            return;
        }
        let mut sql = Sql(None);
        event.record(&mut sql);
        self.0.lock().unwrap().extend(sql.0);
    }
}

struct Shop {
    db: Database,
    rest: Rest,
    objects: Objects,
    alice: Caller,
    anon: Caller,
    service: Caller,
    _blobs: tempfile::TempDir,
}

async fn shop(test_db: &TestDatabase) -> Shop {
    let overrides = Overrides {
        config_file: Some(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../examples/shop/gatehouse.toml"
            )
            .into(),
        ),
        ..Overrides::default()
    };
    let config = Config::load(&overrides, &|_| None).unwrap();
    let db = Database::open(&test_db.location(), PoolOptions::default())
        .await
        .unwrap();
    db.migrate_schema(&config.schema, MigrateOptions::default())
        .await
        .unwrap();
    let rest = Rest::new(
        config.schema.clone(),
        config.policies.clone(),
        RestSettings::default(),
    );

    let keys = LocalKeys::generate("http://localhost/auth/v1").unwrap();
    let service = Caller::holding(keys.service());
    let alice = Caller::signed_in(keys.user(ALICE, serde_json::Map::new()).unwrap());

    let blobs = tempfile::tempdir().unwrap();
    Buckets::new(db.clone())
        .create(NewBucket {
            id: "avatars".into(),
            public: false,
            file_size_limit: None,
            allowed_mime_types: None,
        })
        .await
        .unwrap();
    let objects = Objects::new(
        db.clone(),
        Blobs::open(&BlobConfig::Local {
            root: blobs.path().to_path_buf(),
        })
        .unwrap(),
        config.storage.policies.clone(),
        (
            UrlSigner::new(&keys.api_keys().derive_key("sql snapshots")),
            service.clone(),
        ),
        ObjectSettings::default(),
    );
    Shop {
        db,
        rest,
        objects,
        alice,
        anon: Caller::anon(),
        service,
        _blobs: blobs,
    }
}

fn request(query: &str) -> gatehouse_query::Request {
    gatehouse_query::parse(&gatehouse_query::written_pairs(query)).unwrap()
}

fn representation() -> WriteOptions {
    WriteOptions {
        representation: true,
        resolution: None,
    }
}

/// Runs each case and records what it sent to the database, per dialect.
async fn record(test_db: TestDatabase) {
    let recorder = Recorder::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(recorder.clone()));
    let shop = shop(&test_db).await;
    let Shop {
        db, rest, alice, ..
    } = &shop;
    let dialect = match db.dialect() {
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgres",
    };
    let snapshot = |case: &str| {
        insta::assert_snapshot!(format!("{case}@{dialect}"), recorder.take());
    };
    recorder.take();

    // The catalogue, written by the server (no policy applies).
    rest.insert(
        db.into(),
        &shop.service,
        "products",
        &request(""),
        &json!({"id": 1, "name": "Tea", "price_cents": 450}),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    snapshot("insert_as_the_service_role");

    let placed = rest
        .insert(
            db.into(),
            alice,
            "orders",
            &request("select=id"),
            &json!({"note": "first"}),
            representation(),
        )
        .await
        .unwrap();
    snapshot("insert_own_order_with_check");
    let order = placed.rows[0]["id"].as_str().unwrap().to_owned();

    rest.insert(
        db.into(),
        alice,
        "order_items",
        &request(""),
        &json!({"id": 1, "order_id": order, "product_id": 1, "quantity": 2}),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    snapshot("insert_order_line_exists_check");

    let options = ReadOptions::default();
    rest.read(
        db.into(),
        alice,
        "orders",
        &request("select=*&order=created_at.desc"),
        options,
    )
    .await
    .unwrap();
    snapshot("list_own_orders");

    rest.read(
        db.into(),
        alice,
        "orders",
        &request(&format!("select=id,note&id=eq.{order}")),
        options,
    )
    .await
    .unwrap();
    snapshot("get_one_order");

    let read = rest
        .read(
            db.into(),
            alice,
            "orders",
            &request("select=id,order_items(quantity,products(name))"),
            options,
        )
        .await
        .unwrap();
    assert_eq!(read.rows[0]["order_items"][0]["products"]["name"], "Tea");
    snapshot("embed_through_order_lines");

    rest.update(
        db.into(),
        alice,
        "orders",
        &request(&format!("id=eq.{order}")),
        &json!({"note": "changed"}),
        representation(),
    )
    .await
    .unwrap();
    snapshot("update_note_of_own_pending_order");

    rest.insert(
        db.into(),
        alice,
        "profiles",
        &request("on_conflict=user_id"),
        &json!({"display_name": "Alice"}),
        WriteOptions {
            representation: true,
            resolution: Some(Resolution::MergeDuplicates),
        },
    )
    .await
    .unwrap();
    snapshot("upsert_own_profile");

    rest.read(
        db.into(),
        &shop.anon,
        "profiles",
        &request("select=id,display_name"),
        options,
    )
    .await
    .unwrap();
    snapshot("column_grant_for_anon");

    rest.read(
        db.into(),
        alice,
        "projects",
        &request("select=id,title"),
        options,
    )
    .await
    .unwrap();
    snapshot("membership_exists_policy");

    rest.delete(
        db.into(),
        alice,
        "projects",
        &request("id=eq.1"),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    snapshot("delete_through_membership");

    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"\x89PNG\r\n\x1a\n",
    ))]);
    shop.objects
        .upload(
            Actor::Caller(alice),
            NewObject {
                bucket: "avatars".into(),
                name: format!("{ALICE}/me.png"),
                content_type: Some("image/png".into()),
                cache_control: None,
                upsert: false,
                length: Some(8),
                client: ALICE.into(),
                body,
            },
        )
        .await
        .unwrap();
    snapshot("storage_upload_to_own_folder");

    let listed = shop
        .objects
        .list(
            alice,
            "avatars",
            &ListRequest {
                prefix: ALICE.into(),
                search: None,
                limit: None,
                offset: None,
                sort_column: None,
                descending: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    snapshot("storage_list_own_folder");
}

#[tokio::test]
async fn compiled_sql_on_sqlite() {
    record(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn compiled_sql_on_postgres() {
    if let Some(test_db) = TestDatabase::postgres() {
        record(test_db).await;
    }
}
