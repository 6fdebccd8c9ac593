use crate::kit::{self, json};

#[tokio::test]
async fn each_surface_answers_in_its_clients_dialect() {
    let server = kit::start().await;

    // auth-js sends X-Supabase-Api-Version and reads the string `code`.
    let versioned = server
        .get("/auth/v1/user")
        .header("x-supabase-api-version", "2024-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(versioned.status(), 401);
    assert_eq!(versioned.headers()["x-supabase-api-version"], "2024-01-01");
    let body = json(versioned).await;
    assert_eq!(body["code"], "no_api_key");
    assert!(body["message"].is_string());

    // Older GoTrue clients read `code` as the status, `error_code` and `msg`.
    let legacy = json(server.get("/auth/v1/user").send().await.unwrap()).await;
    assert_eq!(legacy["code"], 401);
    assert_eq!(legacy["error_code"], "no_api_key");
    assert!(legacy["msg"].is_string());
    assert!(legacy["error_id"].is_string());

    // PostgREST: code, message, details, hint.
    let rest = json(server.get("/rest/v1/orders").send().await.unwrap()).await;
    assert_eq!(rest["code"], "no_api_key");
    assert!(rest["details"].is_null() && rest["hint"].is_null());

    // Supabase Storage: statusCode as a string, error, message.
    let storage = json(server.get("/storage/v1/bucket").send().await.unwrap()).await;
    assert_eq!(storage["statusCode"], "401");
    assert_eq!(storage["error"], "no_api_key");
}

#[tokio::test]
async fn errors_reveal_nothing_internal() {
    let server = kit::start().await;
    let requests = [
        server.get("/nowhere"),
        server
            .get("/rest/v1/orders?select=*;drop table x")
            .header("apikey", &server.publishable),
        server.post("/health").body("{not json"),
        server.get("/auth/v1/../../etc/passwd").header(
            "apikey",
            reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        ),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
        let text = response.text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            body["code"].is_string() || body["code"].is_number(),
            "{text}"
        );
        for leak in [
            "sqlite", "SELECT", "/work", "/root", "panicked", "axum", "hyper", "0.1.0",
        ] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
    }
}

#[tokio::test]
async fn wrong_methods_get_405_in_the_same_shape() {
    let server = kit::start().await;
    let response = server.post("/health").send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(json(response).await["code"], "method_not_allowed");
}
