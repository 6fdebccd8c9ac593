//! SIGTERM during a slow request lets it finish. A test binary of its own: the
//! signal goes to this very process, whose handler is the one `gatehouse serve`
//! installs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use gatehouse_server::config::{Config, Overrides};
use gatehouse_server::server;

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_stops() {
    let data_dir = tempfile::tempdir().unwrap();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(data_dir.path().to_path_buf()),
        ..Overrides::default()
    };
    let no_env = |_: &str| None;
    let config = Config::load(&overrides, &no_env).unwrap();
    let secrets = gatehouse_server::secrets::resolve(&config, &no_env).unwrap();
    let slow = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "finished"
        }),
    );
    let signal = server::shutdown_signal().unwrap();
    let running = server::start(&config, secrets, slow).await.unwrap();
    let url = format!("http://{}", running.addr);

    let in_flight = tokio::spawn({
        let url = url.clone();
        async move { reqwest::get(format!("{url}/slow")).await?.text().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = std::process::id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::timeout(Duration::from_secs(5), signal)
        .await
        .expect("SIGTERM was not seen");
    let stopping = tokio::spawn(running.shutdown());

    assert_eq!(in_flight.await.unwrap().unwrap(), "finished");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown did not finish")
        .unwrap()
        .unwrap();
    assert!(
        reqwest::get(format!("{url}/health")).await.is_err(),
        "no new connections after shutdown"
    );
}
