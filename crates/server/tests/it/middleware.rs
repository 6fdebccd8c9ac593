use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use gatehouse_http::CorsPolicy;

use crate::kit::{self, json};

#[tokio::test]
async fn request_id_is_kept_when_well_formed_and_made_otherwise() {
    let server = kit::start().await;
    let kept = server
        .get("/health")
        .header("x-request-id", "trace-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-42.a_b");

    for bad in ["has space", "<script>", &"x".repeat(200)] {
        let replaced = server
            .get("/health")
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let id = replaced.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 36, "a fresh UUID: {id}");
    }
    let first = server.get("/health").send().await.unwrap();
    let second = server.get("/health").send().await.unwrap();
    assert_ne!(
        first.headers()["x-request-id"],
        second.headers()["x-request-id"]
    );
}

#[tokio::test]
async fn errors_carry_the_request_id_in_header_and_body() {
    let server = kit::start().await;
    let response = server
        .get("/rest/v1/x")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    assert_eq!(json(response).await["request_id"], "abc-123");
}

#[tokio::test]
async fn security_headers_on_every_answer() {
    let server = kit::start().await;
    for (path, status) in [("/health", 200), ("/rest/v1/x", 401), ("/nowhere", 404)] {
        let response = server.get(path).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
        assert_eq!(headers["cross-origin-resource-policy"], "same-origin");
        assert_eq!(headers["cache-control"], "no-store");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(
            headers.get("strict-transport-security").is_none(),
            "no HSTS over plain http"
        );
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
    }
}

#[tokio::test]
async fn hsts_when_served_over_tls() {
    let server = kit::start_with(
        |config| config.public_url = Some("https://api.example.com".into()),
        Router::new(),
    )
    .await;
    let response = server.get("/health").send().await.unwrap();
    let hsts = response.headers()["strict-transport-security"]
        .to_str()
        .unwrap();
    assert!(
        hsts.starts_with("max-age=") && hsts.contains("includeSubDomains"),
        "{hsts}"
    );
}

async fn preflight(server: &kit::TestServer, origin: &str) -> reqwest::Response {
    server
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/rest/v1/orders", server.url),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "apikey, authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_admits_listed_origins_only_and_never_a_wildcard() {
    let server = kit::start_with(
        |config| config.cors = CorsPolicy::Origins(vec!["https://app.example.com".into()]),
        Router::new(),
    )
    .await;
    let allowed = preflight(&server, "https://app.example.com").await;
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let allowed_headers = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed_headers.contains("apikey") && allowed_headers.contains("authorization"));

    for origin in [
        "https://evil.example.com",
        "https://app.example.com.evil.net",
        "null",
    ] {
        let refused = preflight(&server, origin).await;
        assert!(
            refused
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{origin}"
        );
    }
    let simple = server
        .get("/health")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_ne!(simple.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn cors_headers_answer_only_requests_that_name_an_origin() {
    let server = kit::start().await;
    let from_page = server
        .get("/health")
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    let headers = from_page.headers();
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert!(
        headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("content-range")
    );
    assert_eq!(headers["vary"], "origin");

    let without = server.get("/health").send().await.unwrap();
    let headers = without.headers();
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
    ] {
        assert!(headers.get(name).is_none(), "{name}");
    }
    assert_eq!(headers["vary"], "origin");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn development_admits_loopback_front_ends() {
    let server = kit::start().await;
    let local = preflight(&server, "http://localhost:5173").await;
    assert_eq!(
        local.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let remote = preflight(&server, "https://example.com").await;
    assert!(
        remote
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    let echo = Router::new().route(
        "/echo",
        post(|body: String| async move { body.len().to_string() }),
    );
    let server = kit::start_with(|config| config.body_limit = 4096, echo).await;
    let small = server
        .post("/echo")
        .body("x".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.text().await.unwrap(), "4096");

    let large = server
        .post("/echo")
        .body("x".repeat(4097))
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 413);
    assert_eq!(json(large).await["code"], "payload_too_large");

    // Without a length up front the limit holds while streaming.
    let status_line = chunked_post(&server, "/echo", 10, 1024).await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

    // An API route refuses an oversize body before anything else looks at it.
    let api = server
        .post("/rest/v1/orders")
        .header("apikey", &server.publishable)
        .body(vec![b'z'; 8192])
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 413);
}

/// Posts `count` chunks of `size` bytes with chunked encoding, so the server
/// cannot know the length in advance; returns the response's status line.
async fn chunked_post(server: &kit::TestServer, path: &str, count: usize, size: usize) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(server.running.addr)
        .await
        .unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..count {
        let chunk = format!("{size:x}\r\n{}\r\n", "y".repeat(size));
        // The server may answer and close before taking every chunk.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut status_line = String::new();
    BufReader::new(stream)
        .read_line(&mut status_line)
        .await
        .unwrap();
    status_line
}

#[tokio::test]
async fn slow_requests_are_cut_off() {
    let slow = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    );
    let server = kit::start_with(
        |config| config.request_timeout = Duration::from_millis(300),
        slow,
    )
    .await;
    let response = server.get("/slow").send().await.unwrap();
    assert_eq!(response.status(), 503);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = json(response).await;
    assert_eq!(body["code"], "request_timeout");
    assert_eq!(body["request_id"], request_id);
}

#[tokio::test]
async fn a_panic_becomes_a_generic_500_with_the_request_id() {
    let panics = Router::new().route(
        "/boom",
        get(|| async {
            if std::hint::black_box(true) {
                panic!("secret internals: /etc/gatehouse/db password=hunter2");
            }
            "unreachable"
        }),
    );
    let server = kit::start_with(|_| {}, panics).await;
    let response = server
        .get("/boom")
        .header("x-request-id", "panic-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-request-id"], "panic-1");
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("/etc/"),
        "{text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], "unexpected_failure");
    assert_eq!(body["request_id"], "panic-1");
    // The server keeps serving.
    assert_eq!(server.get("/health").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn credential_headers_print_redacted_even_in_debug_output() {
    let dump = Router::new().route(
        "/dump",
        get(|headers: axum::http::HeaderMap| async move { format!("{headers:?}") }),
    );
    let server = kit::start_with(|_| {}, dump).await;
    let printed = server
        .get("/dump")
        .header("authorization", "Bearer token-value-1")
        .header("cookie", "sid=cookie-value-2")
        .header("apikey", &server.publishable)
        .header("x-plain", "visible")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(printed.contains("visible"), "{printed}");
    for secret in [
        "token-value-1",
        "cookie-value-2",
        server.publishable.as_str(),
    ] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    assert!(printed.contains("Sensitive"), "{printed}");
}
