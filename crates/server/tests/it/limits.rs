//! Rate limits through HTTP: each class trips at its count, answers 429 with
//! `Retry-After` and the RateLimit fields, recovers after its window, keys by the
//! address a trusted proxy vouches for (and only then), by user for data, and holds
//! across two instances sharing Redis.

use std::time::Duration;

use axum::Router;
use gatehouse_limits::Policy;
use gatehouse_server::RateLimits;
use gatehouse_server::config::Config;
use serde_json::json;

use crate::kit::{self, TestServer, json};

fn policy(name: &'static str, limit: u32, window: Duration) -> Policy {
    Policy {
        name,
        limit,
        window,
    }
}

fn limits(auth: Policy, reads: Policy) -> RateLimits {
    RateLimits {
        auth,
        reads,
        ..RateLimits::default()
    }
}

async fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
    kit::start_with(configure, Router::new()).await
}

async fn sign_in(server: &TestServer, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = server
        .post("/auth/v1/token?grant_type=password")
        .header("apikey", &server.publishable)
        .json(&json!({"email": "nobody@example.com", "password": "not the password"}));
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn sign_in_trips_at_its_count_and_recovers_after_its_window() {
    let window = Duration::from_secs(3);
    let server = start(|config| {
        config.rate_limits = Some(limits(
            policy("auth", 3, window),
            RateLimits::default().reads,
        ));
    })
    .await;
    for remaining in ["2", "1", "0"] {
        let response = sign_in(&server, None).await;
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()["ratelimit-policy"], "\"auth\";q=3;w=3");
        let field = response.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            field.starts_with(&format!("\"auth\";r={remaining};t=")),
            "{field}"
        );
    }
    let refused = sign_in(&server, None).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    let body = json(refused).await;
    assert_eq!(body["error_code"], "over_request_rate_limit");
    // One request is given back every window / limit.
    tokio::time::sleep(window / 3 + Duration::from_millis(50)).await;
    assert_eq!(sign_in(&server, None).await.status(), 400);
    assert_eq!(sign_in(&server, None).await.status(), 429);
}

#[tokio::test]
async fn a_spoofed_forwarded_for_does_not_escape_the_limit() {
    let server = start(|config| {
        config.rate_limits = Some(limits(
            policy("auth", 3, Duration::from_secs(60)),
            RateLimits::default().reads,
        ));
    })
    .await;
    let statuses = [
        sign_in(&server, Some("198.51.100.1")).await.status(),
        sign_in(&server, Some("198.51.100.2")).await.status(),
        sign_in(&server, Some("198.51.100.3")).await.status(),
        sign_in(&server, Some("198.51.100.4")).await.status(),
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [400, 400, 400, 429]);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_budget() {
    let server = start(|config| {
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        config.rate_limits = Some(limits(
            policy("auth", 2, Duration::from_secs(60)),
            RateLimits::default().reads,
        ));
    })
    .await;
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        assert_eq!(sign_in(&server, Some(client)).await.status(), 400);
        assert_eq!(sign_in(&server, Some(client)).await.status(), 400);
        assert_eq!(
            sign_in(&server, Some(client)).await.status(),
            429,
            "{client}"
        );
    }
}

#[tokio::test]
async fn data_reads_are_limited_per_user_and_the_secret_key_is_not() {
    let server = start(|config| {
        config.rate_limits = Some(limits(
            RateLimits::default().auth,
            policy("reads", 2, Duration::from_secs(60)),
        ));
    })
    .await;
    let read = |token: String| {
        server
            .get("/rest/v1/")
            .header("apikey", &server.publishable)
            .bearer_auth(token)
            .send()
    };
    let alice = server.token_for("0190c2a4-7e5b-7000-8000-00000000a11c");
    let bob = server.token_for("0190c2a4-7e5b-7000-8000-000000000b0b");
    assert_eq!(read(alice.clone()).await.unwrap().status(), 200);
    assert_eq!(read(alice.clone()).await.unwrap().status(), 200);
    assert_eq!(read(alice).await.unwrap().status(), 429);
    // Same address, another user: another budget.
    assert_eq!(read(bob).await.unwrap().status(), 200);
    for _ in 0..5 {
        let service = server
            .get("/rest/v1/")
            .header("apikey", &server.secret)
            .send()
            .await
            .unwrap();
        assert_eq!(service.status(), 200);
    }
}

#[tokio::test]
async fn storage_requests_are_limited_per_address_when_anonymous() {
    let server = start(|config| {
        config.rate_limits = Some(limits(
            RateLimits::default().auth,
            policy("reads", 2, Duration::from_secs(60)),
        ));
    })
    .await;
    // Public object URLs need no key, so only the address can be counted.
    let fetch = || server.get("/storage/v1/object/public/site/a.txt").send();
    // No such bucket: 400, as Supabase Storage answers it.
    assert_eq!(fetch().await.unwrap().status(), 400);
    assert_eq!(fetch().await.unwrap().status(), 400);
    assert_eq!(fetch().await.unwrap().status(), 429);
}

/// GATEHOUSE_TEST_REDIS_URL names a Redis (`.ci/run` sets it; with CI=true its
/// absence fails the test rather than skipping it).
fn redis_url() -> Option<String> {
    match std::env::var("GATEHOUSE_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but GATEHOUSE_TEST_REDIS_URL is not set")
        }
        Err(_) => None,
    }
}

#[tokio::test]
async fn two_instances_sharing_redis_admit_at_most_one_more_than_the_limit() {
    let Some(redis) = redis_url() else { return };
    // A policy name of its own, so other runs' keys in the same Redis do not count.
    let name: &'static str = Box::leak(format!("auth-{}", uuid::Uuid::now_v7()).into_boxed_str());
    let configure = |config: &mut Config| {
        config.rate_limits = Some(limits(
            policy(name, 5, Duration::from_secs(60)),
            RateLimits::default().reads,
        ));
    };
    let first = kit::start_sharing(None, Some(&redis), configure, Router::new()).await;
    let second = kit::start_sharing(None, Some(&redis), configure, Router::new()).await;
    let mut admitted = 0;
    for i in 0..20 {
        let server = if i % 2 == 0 { &first } else { &second };
        if sign_in(server, None).await.status() != 429 {
            admitted += 1;
        }
    }
    assert!(
        (5..=6).contains(&admitted),
        "{admitted} admitted across both"
    );
}

/// Failed sign-ins lock the account, whichever address they come from, for
/// existing and unknown accounts alike; the right password is refused during the
/// lock, and the lock survives a restart (it lives in the database).
#[tokio::test]
async fn failed_sign_ins_lock_the_account_across_addresses_and_restarts() {
    let folder = tempfile::tempdir().unwrap();
    let configure = |config: &mut Config| {
        config.data_dir = folder.path().to_path_buf();
        config.auth.email_confirmation = false;
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        config.auth.throttle.per_account = 5;
    };
    let server = start(configure).await;
    let password = "correct horse battery staple";
    let created = server
        .post("/auth/v1/signup")
        .header("apikey", &server.publishable)
        .json(&json!({"email": "kim@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let attempt = |server: &TestServer, email: &str, guess: &str, from: String| {
        server
            .post("/auth/v1/token?grant_type=password")
            .header("apikey", &server.publishable)
            .header("x-forwarded-for", from)
            .json(&json!({"email": email, "password": guess}))
            .send()
    };
    for (email, label) in [
        ("kim@example.com", "existing"),
        ("nobody@example.com", "unknown"),
    ] {
        let mut statuses = Vec::new();
        for i in 0..7 {
            let response = attempt(&server, email, "wrong guess", format!("198.51.100.{i}"))
                .await
                .unwrap();
            statuses.push(response.status().as_u16());
        }
        // Four failures, the fifth locks (429 from then on), the same for both.
        assert_eq!(statuses, [400, 400, 400, 400, 429, 429, 429], "{label}");
    }
    let locked = attempt(&server, "kim@example.com", password, "203.0.113.1".into())
        .await
        .unwrap();
    assert_eq!(locked.status(), 429, "the right password during the lock");
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((200..=300).contains(&retry_after), "{retry_after}");
    drop(server);
    let again = start(configure).await;
    let still = attempt(&again, "kim@example.com", password, "203.0.113.2".into())
        .await
        .unwrap();
    assert_eq!(still.status(), 429, "the lock outlives a restart");
}

/// A lock ends by itself: with a one-second first lock, the right password works
/// again once it has passed, and that success clears the count where it signed in.
#[tokio::test]
async fn a_sign_in_lock_expires_by_itself() {
    let server = start(|config| {
        config.auth.email_confirmation = false;
        config.auth.throttle.per_account_address = 2;
        config.auth.throttle.first_lock = Duration::from_secs(1);
    })
    .await;
    let password = "correct horse battery staple";
    let sign_in = |guess: &str| {
        server
            .post("/auth/v1/token?grant_type=password")
            .header("apikey", &server.publishable)
            .json(&json!({"email": "ola@example.com", "password": guess}))
            .send()
    };
    server
        .post("/auth/v1/signup")
        .header("apikey", &server.publishable)
        .json(&json!({"email": "ola@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(sign_in("wrong").await.unwrap().status(), 400);
    assert_eq!(sign_in("wrong").await.unwrap().status(), 429);
    assert_eq!(sign_in(password).await.unwrap().status(), 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(sign_in(password).await.unwrap().status(), 200);
    // The success started everything over: the next lock is a first lock again
    // (one second, not two).
    assert_eq!(sign_in("wrong").await.unwrap().status(), 400);
    let locked = sign_in("wrong").await.unwrap();
    assert_eq!(locked.status(), 429);
    assert_eq!(locked.headers()["retry-after"], "1");
}
