//! The example shop's functions (examples/shop/functions) on both databases:
//! `checkout` prices from the catalogue, checks and lowers stock and writes the
//! order in one transaction, and sells exactly the stock under concurrent
//! buyers; `complete_lesson` is validated and idempotent.

use gatehouse_db::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::functions::rpc;
use crate::kit::{self, TestServer, json};

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";

async fn as_service(server: &TestServer, path: &str) -> Value {
    let response = server
        .get(&format!("/rest/v1/{path}"))
        .header("apikey", &server.secret)
        .bearer_auth(&server.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    json(response).await
}

async fn stock(server: &TestServer, product: i64) -> Value {
    as_service(server, &format!("products?select=stock&id=eq.{product}")).await[0]["stock"].clone()
}

async fn catalogue(server: &TestServer) {
    let seeded = kit::seed(
        server,
        "products",
        json!([
            {"id": 1, "name": "tea", "price_cents": 450, "stock": 5},
            {"id": 2, "name": "cake", "price_cents": 325, "stock": 10},
        ]),
    )
    .await;
    assert_eq!(seeded.status(), 201);
}

#[tokio::test]
async fn checkout_prices_on_the_server_and_keeps_nothing_when_it_fails() {
    for database in TestDatabase::all() {
        let server = kit::start_shop(&database).await;
        catalogue(&server).await;
        // A price or total from the client is ignored.
        let items = json!([
            {"product_id": 1, "quantity": 2, "price_cents": 1},
            {"product_id": 2, "quantity": 1},
            {"product_id": 1, "quantity": 1},
        ]);
        let (status, order) = rpc(&server, Some(ALICE), "checkout", json!({"items": items})).await;
        assert_eq!(status, 200, "{order}");
        assert_eq!(order["total_cents"], 3 * 450 + 325);
        assert_eq!(order["status"], "pending");
        assert_eq!(
            (stock(&server, 1).await, stock(&server, 2).await),
            (json!(2), json!(9))
        );
        let mine = server
            .rest(
                Method::GET,
                "orders?select=total_cents,order_items(product_id,quantity)&order_items.order=product_id",
                Some(ALICE),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            json(mine).await,
            json!([{"total_cents": 1675, "order_items": [
                {"product_id": 1, "quantity": 3}, {"product_id": 2, "quantity": 1}
            ]}])
        );

        // Stock lowered for the first line, then a line that cannot be had:
        // the whole call is undone.
        for (items, message) in [
            (
                json!([{"product_id": 2, "quantity": 1}, {"product_id": 1, "quantity": 3}]),
                "out of stock: product 1",
            ),
            (
                json!([{"product_id": 2, "quantity": 1}, {"product_id": 9, "quantity": 1}]),
                "no product 9",
            ),
            (
                json!([{"product_id": 2, "quantity": 0}]),
                "each line is { product_id, quantity } with a quantity from 1 to 100",
            ),
            (json!([]), "items must be a list of 1 to 50 lines"),
        ] {
            let (status, body) =
                rpc(&server, Some(ALICE), "checkout", json!({"items": items})).await;
            assert_eq!(
                (status, &body["code"], &body["message"]),
                (400, &json!("P0001"), &json!(message))
            );
        }
        assert_eq!(
            (stock(&server, 1).await, stock(&server, 2).await),
            (json!(2), json!(9))
        );
        assert_eq!(
            as_service(&server, "orders?select=id")
                .await
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // Anonymous callers may not check out.
        let (status, _) = rpc(&server, None, "checkout", json!({"items": []})).await;
        assert_eq!(status, 401);
    }
}

#[tokio::test]
async fn fifty_concurrent_checkouts_of_the_last_ten_sell_exactly_ten() {
    for database in TestDatabase::all() {
        let server = kit::start_shop(&database).await;
        catalogue(&server).await;
        let buyers: Vec<String> = (0..50)
            .map(|n| format!("0190c2a4-7e5b-7000-8000-{n:012}"))
            .collect();
        let calls = buyers.iter().map(|buyer| {
            rpc(
                &server,
                Some(buyer),
                "checkout",
                json!({"items": [{"product_id": 2, "quantity": 1}]}),
            )
        });
        let answers = futures_util::future::join_all(calls).await;
        let sold = answers.iter().filter(|(status, _)| *status == 200).count();
        let refused = answers
            .iter()
            .filter(|(status, body)| *status == 400 && body["message"] == "out of stock: product 2")
            .count();
        assert_eq!(
            (sold, refused),
            (10, 40),
            "{:?} {answers:?}",
            database.location()
        );
        assert_eq!(stock(&server, 2).await, json!(0));
        let lines = as_service(&server, "order_items?select=quantity&product_id=eq.2").await;
        assert_eq!(lines.as_array().unwrap().len(), 10);
    }
}

#[tokio::test]
async fn complete_lesson_is_validated_and_idempotent() {
    for database in TestDatabase::all() {
        let server = kit::start_shop(&database).await;
        let (status, first) = rpc(
            &server,
            Some(ALICE),
            "complete_lesson",
            json!({"lesson_id": 7, "score": 90}),
        )
        .await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(
            (&first["score"], &first["recorded"]),
            (&json!(90), &json!(true))
        );
        let (status, again) = rpc(
            &server,
            Some(ALICE),
            "complete_lesson",
            json!({"lesson_id": 7, "score": 10}),
        )
        .await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(
            (&again["score"], &again["recorded"]),
            (&json!(90), &json!(false))
        );
        assert_eq!(again["completed_at"], first["completed_at"]);
        let rows = as_service(&server, "lesson_progress?select=score").await;
        assert_eq!(rows, json!([{"score": 90}]));
        for (args, argument) in [
            (json!({"lesson_id": 0, "score": 50}), "lesson_id"),
            (json!({"lesson_id": 7, "score": 101}), "score"),
            (json!({"lesson_id": 7}), "score"),
            (json!({"lesson_id": 7, "score": 5, "bonus": 1}), "bonus"),
        ] {
            let (status, body) = rpc(&server, Some(ALICE), "complete_lesson", args).await;
            assert_eq!((status, &body["code"]), (400, &json!("22P02")), "{body}");
            assert!(
                body["message"].as_str().unwrap().contains(argument),
                "{body}"
            );
        }
    }
}
