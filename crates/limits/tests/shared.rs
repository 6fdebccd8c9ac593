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

#[tokio::test]
async fn an_unreachable_redis_falls_back_to_the_local_limit() {
    // Nothing listens on port 1; the first check connects lazily or fails fast.
    let url: secrecy::SecretString = "redis://127.0.0.1:1".to_owned().into();
    let policy = policy(2, Duration::from_secs(60));
    let Ok(limiter) = Limiter::shared(&[policy], &url).await else {
        return; // Refusing to start is also a safe answer.
    };
    let mut admitted = 0;
    for _ in 0..5 {
        if let Decision::Allowed { .. } = limiter.check(&policy, "k").await {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 2);
}
