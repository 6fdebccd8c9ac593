//! A million orders: reads stay capped, and an owner's list walks an index that
//! nobody declared, because the policy filters on that column.

use gatehouse_db::Statement;
use gatehouse_db::testing::TestDatabase;
use gatehouse_rest::Caller;
use reqwest::Method;

use crate::kit::{self, json};

const ORDERS: &str = r#"
[tables.orders]
columns.id = { type = "uuid", primary_key = true }
columns.user_id = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.total_cents = { type = "integer", not_null = true, default = 0 }

[[tables.orders.policies]]
name = "owners read their orders"
for = "select"
to = "authenticated"
using = "user_id = auth.uid()"
"#;

/// 100 users × 10,000 orders, written in one statement.
const FILL: &str = "INSERT INTO \"orders\" (\"id\", \"user_id\", \"total_cents\") \
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) \
    SELECT printf('%08x-0000-7000-8000-%012x', i, i), \
           printf('0190c2a4-7e5b-7000-8000-%012x', i % 100), i % 5000 FROM n";

#[tokio::test]
async fn a_million_rows_are_capped_and_owner_lists_use_an_index() {
    let database = TestDatabase::sqlite();
    let server = kit::start_declared(ORDERS, &database).await;
    let db = server.running.state.db();
    db.transaction(vec![Statement::compiled(FILL.into(), vec![])])
        .await
        .unwrap();

    let everything = server
        .client
        .get(format!("{}/rest/v1/orders?select=id", server.url))
        .header("apikey", &server.secret)
        .header("prefer", "count=exact")
        .send()
        .await
        .unwrap();
    assert_eq!(everything.headers()["content-range"], "0-999/1000000");
    assert_eq!(
        json(everything).await.as_array().unwrap().len(),
        1000,
        "capped at max_rows"
    );

    let user = "0190c2a4-7e5b-7000-8000-000000000007";
    let own = server
        .rest(Method::GET, "orders?select=user_id&limit=20", Some(user))
        .send()
        .await
        .unwrap();
    let rows = json(own).await;
    assert_eq!(rows.as_array().unwrap().len(), 20);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|row| row["user_id"] == user)
    );

    let claims = server
        .running
        .state
        .signing_keys()
        .verify_access_token(&server.token_for(user), server.running.state.token_rules())
        .unwrap();
    let request = gatehouse_query::parse(&[("limit".into(), "20".into())]).unwrap();
    let plan = server
        .running
        .state
        .rest()
        .plan_read(db, &Caller::signed_in(claims), "orders", &request)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("USING INDEX ix_orders_user_id"), "{plan}");
    assert!(
        !plan.contains("SCAN orders") || plan.contains("USING INDEX"),
        "{plan}"
    );
}
