//! `gatehouse audit`: the security audit log, newest first, one JSON object per
//! line; and the entries the command line itself writes (key rotation, retirement).

use gatehouse_auth::audit::{AuditLog, Event, Origin, Query};

use crate::config::Config;
use crate::{secrets, server};

async fn log(config: &Config) -> anyhow::Result<AuditLog> {
    let env = |name: &str| std::env::var(name).ok();
    let secrets = secrets::resolve(config, &env)?;
    let db = server::open_database(config, &secrets.database).await?;
    Ok(AuditLog::new(db))
}

pub async fn show(config: Config, query: Query) -> anyhow::Result<()> {
    for entry in log(&config).await?.read(&query).await? {
        println!("{}", gatehouse_http::wire::audit_entry(&entry));
    }
    Ok(())
}

/// Records an operator's action from the command line. The action has happened
/// already, so a failure here is reported, not fatal.
pub async fn record(config: &Config, event: Event) {
    let origin = Origin {
        user_agent: Some(format!("gatehouse-cli/{}", env!("CARGO_PKG_VERSION"))),
        ..Origin::default()
    };
    let written = match log(config).await {
        Ok(log) => log
            .record(&origin, event.by("cli"))
            .await
            .map_err(anyhow::Error::from),
        Err(error) => Err(error),
    };
    if let Err(error) = written {
        eprintln!("warning: the audit log did not record this: {error:#}");
    }
}
