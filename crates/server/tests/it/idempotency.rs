//! `Idempotency-Key` on data writes: the first answer is replayed, a different
//! request under the same key gets 422, concurrent duplicates run once (the rest
//! get the replay or 409), keys are per caller, and records survive a restart.

use gatehouse_db::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::kit::{self, TestServer, json};

const NOTES: &str = r#"
[tables.notes]
columns.id = { type = "uuid", primary_key = true }
columns.owner = { type = "uuid", server_set = "auth.uid()", not_null = true }
columns.title = { type = "text", not_null = true, check = { max_length = 20 } }

[[tables.notes.policies]]
name = "owners do everything"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
"#;

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";
const BOB: &str = "0190c2a4-7e5b-7000-8000-000000000b0b";

fn insert(server: &TestServer, user: &str, key: &str, title: &str) -> reqwest::RequestBuilder {
    server
        .rest(Method::POST, "notes", Some(user))
        .header("prefer", "return=representation")
        .header("idempotency-key", format!("\"{key}\""))
        .json(&json!({"title": title}))
}

async fn count(server: &TestServer, user: &str) -> usize {
    let rows = json(
        server
            .rest(Method::GET, "notes?select=id", Some(user))
            .send()
            .await
            .unwrap(),
    )
    .await;
    rows.as_array().unwrap().len()
}

#[tokio::test]
async fn a_retry_gets_the_first_answer_and_writes_nothing_new() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(NOTES, &database).await;
        let first = insert(&server, ALICE, "k-1", "milk").send().await.unwrap();
        assert_eq!(first.status(), 201);
        assert!(first.headers().get("idempotent-replayed").is_none());
        let first_body: Value = json(first).await;
        let again = insert(&server, ALICE, "k-1", "milk").send().await.unwrap();
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert!(
            again.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        assert_eq!(json(again).await, first_body);
        assert_eq!(count(&server, ALICE).await, 1);
        // The same key with another body is refused.
        let other = insert(&server, ALICE, "k-1", "eggs").send().await.unwrap();
        assert_eq!(other.status(), 422);
        assert_eq!(json(other).await["code"], "idempotency_key_reused");
        // Keys belong to their caller: Bob's k-1 is his own.
        assert_eq!(
            insert(&server, BOB, "k-1", "milk")
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
        assert_eq!(count(&server, BOB).await, 1);
        // An error answer is replayed too (the title is too long).
        let long = "x".repeat(30);
        let refused = insert(&server, ALICE, "k-2", &long).send().await.unwrap();
        assert_eq!(refused.status(), 400);
        let replayed = insert(&server, ALICE, "k-2", &long).send().await.unwrap();
        assert_eq!(replayed.status(), 400);
        assert_eq!(replayed.headers()["idempotent-replayed"], "true");
        // A malformed key is refused before anything runs.
        let bad = server
            .rest(Method::POST, "notes", Some(ALICE))
            .header("idempotency-key", "")
            .json(&json!({"title": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(count(&server, ALICE).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_run_once() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(NOTES, &database).await;
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..12 {
            requests.spawn(insert(&server, ALICE, "same", "once").send());
        }
        let mut statuses = Vec::new();
        while let Some(response) = requests.join_next().await {
            statuses.push(response.unwrap().unwrap().status().as_u16());
        }
        assert!(
            statuses.iter().all(|s| *s == 201 || *s == 409),
            "{statuses:?}"
        );
        assert!(statuses.contains(&201));
        assert_eq!(count(&server, ALICE).await, 1, "{statuses:?}");
    }
}

#[tokio::test]
async fn records_outlive_a_restart() {
    let database = TestDatabase::sqlite();
    let first = kit::start_declared(NOTES, &database).await;
    let created = insert(&first, ALICE, "k-restart", "tea")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let body = json(created).await;
    drop(first);
    let second = kit::start_declared(NOTES, &database).await;
    let replayed = insert(&second, ALICE, "k-restart", "tea")
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(json(replayed).await, body);
    assert_eq!(count(&second, ALICE).await, 1);
}
