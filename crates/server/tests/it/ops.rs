use axum::Router;
use gatehouse_db::testing::TestDatabase;

use crate::kit::{self, json};

#[tokio::test]
async fn health_and_readiness() {
    let server = kit::start().await;
    let health = server.get("/health").send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(json(health).await["status"], "ok");
    let ready = server.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(json(ready).await["status"], "ready");
}

#[tokio::test]
async fn readiness_follows_the_database() {
    for database in TestDatabase::all() {
        let server = kit::start_on(Some(&database), |_| {}, Router::new()).await;
        let ready = server.get("/ready").send().await.unwrap();
        assert_eq!(
            ready.status(),
            200,
            "{:?}",
            server.running.state.db().dialect()
        );
        if matches!(database, TestDatabase::Postgres { .. }) {
            drop(database); // DROP DATABASE … WITH (FORCE) ends every connection.
            let gone = server.get("/ready").send().await.unwrap();
            assert_eq!(gone.status(), 503);
            let text = gone.text().await.unwrap();
            assert!(
                text.contains("not_ready") && !text.contains("gatehouse_test_"),
                "{text}"
            );
            assert_eq!(server.get("/health").send().await.unwrap().status(), 200);
        }
    }
}

#[tokio::test]
async fn metrics_need_the_secret_key_on_the_api_listener() {
    let server = kit::start().await;
    server.get("/health").send().await.unwrap();

    let anonymous = server.get("/metrics").send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let publishable = server
        .get("/metrics")
        .header("apikey", &server.publishable)
        .send()
        .await
        .unwrap();
    assert_eq!(publishable.status(), 403);

    let metrics = server
        .get("/metrics")
        .header("apikey", &server.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            r#"gatehouse_http_requests_total{method="GET",route="/health",status="200"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains("gatehouse_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains(r#"route="/metrics",status="401""#), "{text}");
}

#[tokio::test]
async fn an_admin_listener_takes_metrics_off_the_api() {
    let server = kit::start_with(
        |config| config.admin_listen = Some("127.0.0.1:0".parse().unwrap()),
        Router::new(),
    )
    .await;
    let admin = format!("http://{}", server.running.admin_addr.unwrap());
    let metrics = server
        .client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("gatehouse_http_requests_total")
    );
    let on_api = server
        .get("/metrics")
        .header("apikey", &server.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), 404);
}
