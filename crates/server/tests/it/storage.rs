//! `/storage/v1` buckets through HTTP, on SQLite and (in CI) PostgreSQL: the
//! lifecycle with the secret key, Supabase Storage's error shape, bad ids, and
//! refusal for anyone else.

use gatehouse_db::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::kit::{self, TestServer, json};

fn admin(server: &TestServer, method: Method, path: &str) -> reqwest::RequestBuilder {
    server
        .client
        .request(method, format!("{}/storage/v1/{path}", server.url))
        .header("apikey", &server.secret)
        .header("authorization", format!("Bearer {}", server.secret))
}

#[tokio::test]
async fn the_bucket_lifecycle_with_the_secret_key() {
    for database in TestDatabase::all() {
        let server = kit::start_declared("", &database).await;
        let created = admin(&server, Method::POST, "bucket")
            .json(&json!({"id": "avatars", "name": "avatars", "public": false,
                          "file_size_limit": "1MB", "allowed_mime_types": ["image/png", "image/*"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 200);
        assert_eq!(json(created).await, json!({"name": "avatars"}));
        let bucket: Value = json(
            admin(&server, Method::GET, "bucket/avatars")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(bucket["id"], "avatars");
        assert_eq!(bucket["public"], false);
        assert_eq!(bucket["file_size_limit"], 1 << 20);
        assert_eq!(
            bucket["allowed_mime_types"],
            json!(["image/png", "image/*"])
        );
        assert!(bucket["created_at"].as_str().unwrap().ends_with('Z'));

        let again = admin(&server, Method::POST, "bucket")
            .json(&json!({"id": "avatars"}))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 400, "as Supabase Storage answers");
        let error = json(again).await;
        assert_eq!(error["statusCode"], "409");
        assert_eq!(error["code"], "BucketAlreadyExists");

        let updated = admin(&server, Method::PUT, "bucket/avatars")
            .json(&json!({"public": true, "file_size_limit": null}))
            .send()
            .await
            .unwrap();
        assert_eq!(json(updated).await["message"], "Successfully updated");
        let bucket = json(
            admin(&server, Method::GET, "bucket/avatars")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(bucket["public"], true);
        assert_eq!(bucket["file_size_limit"], Value::Null);
        assert_eq!(
            bucket["allowed_mime_types"],
            json!(["image/png", "image/*"])
        );

        let listed = json(admin(&server, Method::GET, "bucket").send().await.unwrap()).await;
        assert_eq!(listed.as_array().unwrap().len(), 1);
        let emptied = admin(&server, Method::POST, "bucket/avatars/empty")
            .send()
            .await
            .unwrap();
        assert_eq!(json(emptied).await["message"], "Successfully emptied");
        let deleted = admin(&server, Method::DELETE, "bucket/avatars")
            .send()
            .await
            .unwrap();
        assert_eq!(json(deleted).await["message"], "Successfully deleted");
        let gone = admin(&server, Method::GET, "bucket/avatars")
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 400);
        let error = json(gone).await;
        assert_eq!(
            (error["statusCode"].as_str(), error["code"].as_str()),
            (Some("404"), Some("NoSuchBucket"))
        );
    }
}

#[tokio::test]
async fn bad_bucket_ids_and_settings_are_refused() {
    let server = kit::start().await;
    for id in ["../etc", "Avatars", "", "a/b", "-x", "with space", "é"] {
        let response = admin(&server, Method::POST, "bucket")
            .json(&json!({"id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{id:?}");
        assert_eq!(json(response).await["error"], "InvalidBucketName", "{id:?}");
    }
    for body in [
        json!({"id": "x", "file_size_limit": "lots"}),
        json!({"id": "x", "file_size_limit": 0}),
        json!({"id": "x", "allowed_mime_types": ["text/html; charset=utf-8"]}),
    ] {
        let response = admin(&server, Method::POST, "bucket")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
    }
}

#[tokio::test]
async fn only_the_secret_key_manages_buckets() {
    let server = kit::start().await;
    let user = server.token_for("0190c2a4-7e5b-7000-8000-00000000a11c");
    for bearer in [server.publishable.clone(), user] {
        for (method, path) in [
            (Method::GET, "bucket"),
            (Method::POST, "bucket"),
            (Method::DELETE, "bucket/x"),
        ] {
            let response = server
                .client
                .request(method.clone(), format!("{}/storage/v1/{path}", server.url))
                .header("apikey", &server.publishable)
                .bearer_auth(&bearer)
                .json(&json!({"id": "sneaky"}))
                .send()
                .await
                .unwrap();
            assert!(
                matches!(response.status().as_u16(), 401 | 403),
                "{method} {path}"
            );
        }
    }
    let listed = json(admin(&server, Method::GET, "bucket").send().await.unwrap()).await;
    assert_eq!(listed, json!([]));
}
