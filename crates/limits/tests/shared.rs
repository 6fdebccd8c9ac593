//! The Redis-backed limiter against a real Redis: GATEHOUSE_TEST_REDIS_URL names it
//! (`.ci/run` sets it; under CI=true its absence fails instead of skipping).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

use std::time::Duration;

use gatehouse_limits::{Decision, Limiter, Policy};

fn redis_url() -> Option<secrecy::SecretString> {
    match std::env::var("GATEHOUSE_TEST_REDIS_URL") {
        Ok(url) => Some(url.into()),
        Err(_) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but GATEHOUSE_TEST_REDIS_URL is not set")
        }
        Err(_) => None,
    }
}

fn policy(limit: u32, window: Duration) -> Policy {
    // A fresh name per run, so earlier runs' keys do not count.
    let name: &'static str = Box::leak(format!("test-{}", uuid_like()).into_boxed_str());
    Policy {
        name,
        limit,
        window,
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}-{}", std::process::id())
}

#[tokio::test]
async fn two_instances_share_one_budget() {
    let Some(url) = redis_url() else { return };
    let policy = policy(10, Duration::from_secs(60));
    let first = Limiter::shared(&[policy], &url).await.unwrap();
    let second = Limiter::shared(&[policy], &url).await.unwrap();
    let mut admitted = 0;
    for i in 0..40 {
        let limiter = if i % 2 == 0 { &first } else { &second };
        if let Decision::Allowed { .. } = limiter.check(&policy, "203.0.113.9").await {
            admitted += 1;
        }
    }
    assert!((10..=11).contains(&admitted), "{admitted} admitted");
}

#[tokio::test]
async fn a_shared_limit_reports_remaining_and_recovers() {
    let Some(url) = redis_url() else { return };
    let policy = policy(3, Duration::from_millis(600));
    let limiter = Limiter::shared(&[policy], &url).await.unwrap();
    for expected in [2, 1, 0] {
        match limiter.check(&policy, "k").await {
            Decision::Allowed { remaining, .. } => assert_eq!(remaining, expected),
            other => panic!("{other:?}"),
        }
    }
    let Decision::Limited { retry_after } = limiter.check(&policy, "k").await else {
        panic!("the fourth request was admitted");
    };
    assert!(retry_after <= Duration::from_millis(200), "{retry_after:?}");
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    assert!(matches!(
        limiter.check(&policy, "k").await,
        Decision::Allowed { .. }
    ));
}

/// A Redis that goes away mid-operation: checks fall back to this instance's own
/// limit, so the policy still holds (per instance) instead of vanishing.
#[tokio::test]
async fn a_redis_that_goes_away_falls_back_to_the_local_limit() {
    if redis_url().is_none() {
        return;
    }
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let url: secrecy::SecretString = format!("redis://127.0.0.1:{port}").into();
    let policy = policy(2, Duration::from_secs(60));
    let mut limiter = None;
    for _ in 0..50 {
        if let Ok(ready) = Limiter::shared(&[policy], &url).await {
            limiter = Some(ready);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let limiter = limiter.expect("the throwaway redis-server came up");
    server.kill().unwrap();
    server.wait().unwrap();
    let mut admitted = 0;
    for _ in 0..5 {
        if let Decision::Allowed { .. } = limiter.check(&policy, "k").await {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 2);
}
