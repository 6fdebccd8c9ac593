use axum::Router;
use gatehouse_db::Location;

use crate::config::{Config, Mode};
use crate::secrets::{self, Secrets};
use crate::server;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let secrets = secrets::resolve(&config, &env)?;
    let banner = banner(&config, &secrets);
    // Install the handlers before serving so a signal during start-up is not lost.
    let signal = server::shutdown_signal()?;
    let running = server::start(&config, secrets, Router::new()).await?;
    eprintln!(
        "{}",
        banner
            .replace("{url}", &running.public_url)
            .replace("{listen}", &running.addr.to_string())
    );
    signal.await;
    running.shutdown().await
}

fn banner(config: &Config, secrets: &Secrets) -> String {
    let mode = match config.mode {
        Mode::Development => "development",
        Mode::Production => "production",
    };
    let database = match &secrets.database {
        Location::Sqlite(path) => format!("SQLite at {}", path.display()),
        Location::Postgres(_) => "PostgreSQL (GATEHOUSE_DATABASE_URL)".to_owned(),
    };
    format!(
        "Gatehouse is running in {mode} mode.\n\
         \x20 API URL:          {{url}}\n\
         \x20 Listening on:     {{listen}}\n\
         \x20 Publishable key:  {}\n\
         \x20 Secret key:       kept in {} (server-side only; never ship it to a browser)\n\
         \x20 Database:         {database}",
        secrets.api_keys.publishable(),
        secrets.secret_key_source,
    )
}
