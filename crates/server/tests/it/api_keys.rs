use crate::kit::{self, json};

#[tokio::test]
async fn api_routes_need_a_known_key() {
    let server = kit::start().await;
    let missing = server.get("/rest/v1/orders").send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(json(missing).await["code"], "no_api_key");

    let unknown = server
        .get("/rest/v1/orders")
        .header("apikey", "sb_publishable_guess")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    assert_eq!(json(unknown).await["code"], "invalid_api_key");

    for prefix in ["/auth/v1/user", "/storage/v1/bucket"] {
        assert_eq!(
            server.get(prefix).send().await.unwrap().status(),
            401,
            "{prefix}"
        );
    }
}

#[tokio::test]
async fn both_keys_pass_the_gate() {
    let server = kit::start().await;
    for key in [&server.publishable, &server.secret] {
        let response = server
            .get("/rest/v1/nothing-here")
            .header("apikey", key)
            .send()
            .await
            .unwrap();
        // Past the key check, an unknown route is simply not found.
        assert_eq!(response.status(), 404);
    }
}

#[tokio::test]
async fn the_secret_key_never_comes_back() {
    let server = kit::start().await;
    let paths = [
        "/health",
        "/ready",
        "/metrics",
        "/auth/v1/.well-known/jwks.json",
        "/auth/v1/settings",
        "/rest/v1/orders",
    ];
    for path in paths {
        for key in [None, Some(&server.publishable), Some(&server.secret)] {
            let mut request = server.get(path);
            if let Some(key) = key {
                request = request.header("apikey", key);
            }
            let response = request.send().await.unwrap();
            let headers = format!("{:?}", response.headers());
            let body = response.text().await.unwrap();
            assert!(
                !body.contains(&server.secret) && !headers.contains(&server.secret),
                "{path}"
            );
        }
    }
}
