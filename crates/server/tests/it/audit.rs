//! The audit log through HTTP: a scripted sign-up, failed and locked sign-ins,
//! refresh-token reuse, a password change, sign-out and an admin deletion, read back
//! with the secret key and checked field by field.

use std::time::Duration;

use axum::Router;
use reqwest::Method;
use serde_json::{Value, json};

use crate::kit::{self, TestServer, json};

const PASSWORD: &str = "correct horse battery staple";
const CLIENT: &str = "203.0.113.5";
const AGENT: &str = "audit-test/1.0";

fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    request_id: &str,
) -> reqwest::RequestBuilder {
    server
        .client
        .request(method, format!("{}{path}", server.url))
        .header("apikey", &server.publishable)
        .header("x-forwarded-for", CLIENT)
        .header("user-agent", AGENT)
        .header("x-request-id", request_id)
}

async fn entries(server: &TestServer, query: &str) -> Vec<Value> {
    let response = server
        .get(&format!("/auth/v1/admin/audit{query}"))
        .header("apikey", &server.secret)
        .header("authorization", format!("Bearer {}", server.secret))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    json(response).await.as_array().unwrap().clone()
}

#[tokio::test]
async fn a_scripted_session_is_audited_field_by_field() {
    let server = kit::start_with(
        |config| {
            config.auth.email_confirmation = false;
            config.auth.refresh_reuse_grace = Duration::ZERO;
            config.auth.throttle.per_account_address = 3;
            config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        },
        Router::new(),
    )
    .await;
    let signed_up = call(&server, Method::POST, "/auth/v1/signup", "r-signup")
        .json(&json!({"email": "Lee@Example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let session = json(signed_up).await;
    let user_id = session["user"]["id"].as_str().unwrap().to_owned();
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();
    let sign_in = |password: &str, request_id: &str| {
        call(
            &server,
            Method::POST,
            "/auth/v1/token?grant_type=password",
            request_id,
        )
        .json(&json!({"email": "lee@example.com", "password": password}))
        .send()
    };
    assert_eq!(sign_in("wrong one", "r-wrong").await.unwrap().status(), 400);
    assert_eq!(sign_in(PASSWORD, "r-right").await.unwrap().status(), 200);
    let refreshed = call(
        &server,
        Method::POST,
        "/auth/v1/token?grant_type=refresh_token",
        "r-refresh",
    )
    .json(&json!({"refresh_token": refresh}))
    .send()
    .await
    .unwrap();
    assert_eq!(refreshed.status(), 200);
    let reused = call(
        &server,
        Method::POST,
        "/auth/v1/token?grant_type=refresh_token",
        "r-reuse",
    )
    .json(&json!({"refresh_token": refresh}))
    .send()
    .await
    .unwrap();
    assert_eq!(reused.status(), 400);
    let fresh = json(sign_in(PASSWORD, "r-again").await.unwrap()).await;
    let fresh_token = fresh["access_token"].as_str().unwrap().to_owned();
    let changed = call(&server, Method::PUT, "/auth/v1/user", "r-password")
        .bearer_auth(&fresh_token)
        .json(&json!({"password": "a whole new passphrase", "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    for request_id in ["r-lock-1", "r-lock-2", "r-lock-3"] {
        sign_in("guess", request_id).await.unwrap();
    }
    let out = call(
        &server,
        Method::POST,
        "/auth/v1/logout?scope=local",
        "r-logout",
    )
    .bearer_auth(&fresh_token)
    .send()
    .await
    .unwrap();
    assert_eq!(out.status(), 204);
    let deleted = server
        .client
        .delete(format!("{}/auth/v1/admin/users/{user_id}", server.url))
        .header("apikey", &server.secret)
        .header("authorization", format!("Bearer {}", server.secret))
        .header("x-request-id", "r-delete")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);

    let log = entries(&server, "").await;
    let summary: Vec<(String, String, Option<String>)> = log
        .iter()
        .rev()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
                e["request_id"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let expected = [
        ("sign_up", "success", "r-signup"),
        ("sign_in", "failure", "r-wrong"),
        ("sign_in", "success", "r-right"),
        ("token_refresh", "success", "r-refresh"),
        ("token_refresh", "failure", "r-reuse"),
        ("sign_in", "success", "r-again"),
        ("password_change", "success", "r-password"),
        ("sign_in", "failure", "r-lock-1"),
        ("sign_in", "failure", "r-lock-2"),
        ("sign_in", "failure", "r-lock-3"),
        ("sign_out", "success", "r-logout"),
        ("admin_user_deleted", "success", "r-delete"),
    ];
    assert_eq!(
        summary,
        expected
            .iter()
            .map(|(a, o, r)| ((*a).to_owned(), (*o).to_owned(), Some((*r).to_owned())))
            .collect::<Vec<_>>()
    );
    let by_request = |id: &str| log.iter().find(|e| e["request_id"] == id).unwrap().clone();
    let signup = by_request("r-signup");
    assert_eq!(signup["actor"], user_id.as_str());
    assert_eq!(signup["ip"], CLIENT);
    assert_eq!(signup["user_agent"], AGENT);
    assert_eq!(signup["detail"], json!({"email": "lee@example.com"}));
    assert!(signup["at"].as_str().unwrap().ends_with('Z'));
    let wrong = by_request("r-wrong");
    assert_eq!(wrong["actor"], Value::Null);
    assert_eq!(
        wrong["detail"],
        json!({"email": "lee@example.com", "error": "invalid_credentials"})
    );
    assert_eq!(by_request("r-right")["actor"], user_id.as_str());
    assert_eq!(
        by_request("r-reuse")["detail"]["error"],
        "refresh_token_already_used"
    );
    assert_eq!(by_request("r-password")["actor"], user_id.as_str());
    let lock = by_request("r-lock-3");
    assert_eq!(lock["detail"]["error"], "over_request_rate_limit");
    assert_eq!(lock["detail"]["locked_for_secs"], 300);
    assert_eq!(by_request("r-logout")["detail"], json!({"scope": "local"}));
    let deletion = by_request("r-delete");
    assert_eq!(deletion["actor"], "service");
    assert_eq!(deletion["detail"], json!({"user_id": user_id}));
    // Nothing secret anywhere: no password, token or refresh token.
    let text = serde_json::to_string(&log).unwrap();
    for secret in [PASSWORD, "a whole new passphrase", &refresh, &fresh_token] {
        assert!(!text.contains(secret), "the log holds a secret");
    }

    // Filters and paging.
    let sign_ins = entries(&server, "?action=sign_in").await;
    assert_eq!(sign_ins.len(), 6);
    assert!(sign_ins.iter().all(|e| e["action"] == "sign_in"));
    let first_page = entries(&server, "?limit=5").await;
    assert_eq!(first_page.len(), 5);
    let last_id = first_page[4]["id"].as_i64().unwrap();
    let next = entries(&server, &format!("?limit=100&before={last_id}")).await;
    assert_eq!(next.len(), log.len() - 5);
    // The publishable key cannot read it.
    let refused = server
        .get("/auth/v1/admin/audit")
        .header("apikey", &server.publishable)
        .send()
        .await
        .unwrap();
    assert!(matches!(refused.status().as_u16(), 401 | 403));
}
