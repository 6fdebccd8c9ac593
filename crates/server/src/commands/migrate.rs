//! `gatehouse migrate`: bring the database to the declared schema, or with
//! `--dry-run` show the SQL that would do it.

use gatehouse_db::MigrateOptions;

use crate::config::Config;
use crate::{secrets, server};

pub async fn run(config: Config, options: MigrateOptions) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let secrets = secrets::resolve(&config, &env)?;
    let db = server::open_database(&config, &secrets.database).await?;
    let migration = db.migrate_schema(&config.schema, options).await?;
    if migration.plan.is_empty() {
        println!(
            "The database is up to date (schema version {}).",
            migration.version
        );
        return Ok(());
    }
    let verb = if migration.applied {
        "Applied"
    } else {
        "Would apply"
    };
    println!("{verb} schema version {}:", migration.version);
    for step in &migration.plan.steps {
        let mark = if step.destructive { "!" } else { "+" };
        println!("  {mark} {}", step.description);
    }
    if options.dry_run {
        println!();
        for statement in migration.plan.statements() {
            println!("{statement};");
        }
        if migration.plan.destructive().next().is_some() {
            println!("\n-- Steps marked ! lose data and need --allow-destructive.");
        }
    }
    Ok(())
}
