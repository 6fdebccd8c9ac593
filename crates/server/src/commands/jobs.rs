//! `gatehouse jobs`: the background job queue from the command line, one JSON
//! object per line.

use gatehouse_db::Database;
use gatehouse_jobs::admin;

use crate::config::Config;
use crate::{secrets, server};

/// What to do with the queue.
pub enum Action {
    List {
        state: Option<String>,
        queue: Option<String>,
        limit: u32,
    },
    Show(String),
    Retry(String),
    Cancel(String),
    Purge {
        state: String,
        older_than_hours: u32,
    },
}

async fn database(config: &Config) -> anyhow::Result<Database> {
    let env = |name: &str| std::env::var(name).ok();
    let secrets = secrets::resolve(config, &env)?;
    server::open_database(config, &secrets.database).await
}

pub async fn run(config: Config, action: Action) -> anyhow::Result<()> {
    let db = database(&config).await?;
    match action {
        Action::List {
            state,
            queue,
            limit,
        } => {
            for job in admin::list(&db, (state.as_deref(), queue.as_deref()), limit).await? {
                println!("{}", serde_json::to_string(&job)?);
            }
        }
        Action::Show(id) => match admin::show(&db, &id).await? {
            Some(job) => println!("{}", serde_json::to_string(&job)?),
            None => anyhow::bail!("no job {id}"),
        },
        Action::Retry(id) => {
            anyhow::ensure!(
                admin::retry(&db, &id).await?,
                "no dead, cancelled or waiting job {id}"
            );
            println!("job {id} will run again now");
        }
        Action::Cancel(id) => {
            anyhow::ensure!(
                admin::cancel(&db, &id).await?,
                "no waiting or running job {id}"
            );
            println!("job {id} is cancelled");
        }
        Action::Purge {
            state,
            older_than_hours,
        } => {
            anyhow::ensure!(
                admin::FINISHED.contains(&state.as_str()),
                "purge removes finished jobs: --state done, dead or cancelled"
            );
            let age = std::time::Duration::from_secs(u64::from(older_than_hours) * 3600);
            let removed = admin::purge(&db, &state, age).await?;
            println!("removed {removed} {state} jobs");
        }
    }
    Ok(())
}
