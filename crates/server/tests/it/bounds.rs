//! Request bounds at the edge: header count and bytes (431), URL length (414),
//! JSON depth (400), a request head sent too slowly (the connection is closed)
//! and connections per address (429), each with its setting.

use std::time::{Duration, Instant};

use axum::Router;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::kit::{self, TestServer, json};

async fn start() -> TestServer {
    kit::start_with(
        |config| {
            config.connection_limits.max_headers = 20;
            config.connection_limits.max_header_bytes = 16 * 1024;
            config.connection_limits.header_read_timeout = Duration::from_secs(1);
            config.connection_limits.max_connections_per_ip = 4;
            config.max_url_bytes = 2048;
            config.max_json_depth = 8;
        },
        Router::new(),
    )
    .await
}

fn address(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn oversized_heads_and_urls_are_refused() {
    let server = start().await;
    let mut many = server.get("/health");
    for i in 0..30 {
        many = many.header(format!("x-extra-{i}"), "1");
    }
    assert_eq!(many.send().await.unwrap().status(), 431);
    let big = server
        .get("/health")
        .header("x-big", "b".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 431);
    let long = server
        .get(&format!("/rest/v1/orders?note=eq.{}", "n".repeat(3000)))
        .header("apikey", &server.publishable)
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 414);
    assert_eq!(json(long).await["code"], "uri_too_long");
    assert_eq!(server.get("/health").send().await.unwrap().status(), 200);
}

/// The refusals made before any handler runs are answers like any other: JSON
/// with a request id, and every security header.
#[tokio::test]
async fn early_refusals_carry_the_security_headers() {
    let server = kit::start_with(
        |config| {
            config.connection_limits.max_headers = 20;
            config.max_url_bytes = 2048;
            config.max_json_depth = 8;
            config.body_limit = 4096;
        },
        Router::new(),
    )
    .await;
    let post_json = |body: String| {
        server
            .post("/rest/v1/orders")
            .header("apikey", &server.publishable)
            .header("content-type", "application/json")
            .body(body)
    };
    let mut many_headers = server.get("/health");
    for i in 0..25 {
        many_headers = many_headers.header(format!("x-extra-{i}"), "1");
    }
    let refusals = [
        (
            413,
            post_json(format!(r#"{{"note":"{}"}}"#, "n".repeat(8192))),
        ),
        (414, server.get(&format!("/health?{}", "q".repeat(3000)))),
        (431, many_headers),
        (
            400,
            post_json(format!("{}1{}", "[".repeat(50), "]".repeat(50))),
        ),
    ];
    for (status, request) in refusals {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let headers = response.headers().clone();
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("cache-control", "no-store"),
            ("cross-origin-resource-policy", "same-origin"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(
                headers.get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "{status} {name}"
            );
        }
        assert!(headers.contains_key("content-security-policy"), "{status}");
        let body = json(response).await;
        assert!(body["request_id"].is_string(), "{status}: {body}");
    }
}

#[tokio::test]
async fn deeply_nested_json_is_refused_before_parsing() {
    let server = start().await;
    let deep = format!("{}1{}", "[".repeat(50), "]".repeat(50));
    let response = server
        .post("/auth/v1/signup")
        .header("apikey", &server.publishable)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"email":"a@example.com","password":"x","data":{deep}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = json(response).await;
    assert_eq!(body["error_code"], "json_too_deep");
}

#[tokio::test]
async fn a_slow_request_head_loses_its_connection() {
    let server = start().await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(3));
    let answer = String::from_utf8_lossy(&buffer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn connections_per_address_are_bounded() {
    let server = start().await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(address(&server)).await.unwrap());
    }
    // Let the server count them before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = TcpStream::connect(address(&server)).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), fifth.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("too_many_connections"));
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.get("/health").send().await.unwrap().status(), 200);
}
