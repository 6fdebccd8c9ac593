//! Migrations of the developer's declared schema. Each applied declaration is
//! recorded with its version, so the next plan is computed against exactly what
//! was applied, identically on SQLite and PostgreSQL. A migration is one
//! transaction: its ledger row first (a second instance racing to apply the same
//! version fails on it and re-plans), then the DDL.

use gatehouse_schema::{Plan, Schema, SchemaError};

use crate::migrations::LOCK;
use crate::{Database, DbError, Result, Sql, Statement, Value};

const LATEST: Sql = Sql::both(
    "SELECT version, declaration FROM gatehouse_schema_versions ORDER BY version DESC LIMIT 1",
);

const RECORD: Sql = Sql::both(
    "INSERT INTO gatehouse_schema_versions (version, declaration, statements) VALUES ($1, $2, $3)",
);

/// What a migration would do or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The schema version after it; 0 means nothing was ever applied.
    pub version: i64,
    pub plan: Plan,
    pub applied: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MigrateOptions {
    pub dry_run: bool,
    pub allow_destructive: bool,
}

impl Database {
    /// The declaration applied last, and its version.
    pub async fn applied_schema(&self) -> Result<(i64, Schema)> {
        let rows = self.query(Statement::new(&LATEST, vec![])).await?;
        match rows.first() {
            None => Ok((0, Schema::default())),
            Some(row) => {
                let schema = serde_json::from_str(row.text(1)?).map_err(|e| {
                    DbError::Pool(format!("stored schema version is unreadable: {e}"))
                })?;
                Ok((row.integer(0)?, schema))
            }
        }
    }

    /// Brings the database to `declared`: plans against the applied declaration
    /// and, unless a dry run, applies the plan in one transaction.
    pub async fn migrate_schema(
        &self,
        declared: &Schema,
        options: MigrateOptions,
    ) -> Result<Migration> {
        let mut attempts = 0;
        loop {
            let (version, applied) = self.applied_schema().await?;
            let plan = gatehouse_schema::plan(&applied, declared, self.dialect())
                .map_err(DbError::Schema)?;
            if plan.is_empty() || options.dry_run {
                return Ok(Migration {
                    version: if plan.is_empty() {
                        version
                    } else {
                        version + 1
                    },
                    plan,
                    applied: false,
                });
            }
            let destructive: Vec<String> =
                plan.destructive().map(|s| s.description.clone()).collect();
            if !destructive.is_empty() && !options.allow_destructive {
                return Err(DbError::Destructive(destructive));
            }
            let snapshot = serde_json::to_string(declared)
                .map_err(|e| DbError::Schema(SchemaError::Unsupported(e.to_string())))?;
            let statements: Vec<String> = plan.statements().cloned().collect();
            let mut transaction = vec![
                Statement::new(&LOCK, vec![]),
                Statement::new(
                    &RECORD,
                    vec![
                        Value::Integer(version + 1),
                        snapshot.into(),
                        statements.join(";\n").into(),
                    ],
                ),
            ];
            transaction.extend(
                statements
                    .into_iter()
                    .map(|sql| Statement::compiled(sql, vec![])),
            );
            match self.transaction(transaction).await {
                Ok(_) => {
                    tracing::info!(
                        version = version + 1,
                        steps = plan.steps.len(),
                        "applied the declared schema"
                    );
                    return Ok(Migration {
                        version: version + 1,
                        plan,
                        applied: true,
                    });
                }
                // Another instance may have applied this version meanwhile: plan again.
                Err(error) if attempts == 0 && self.applied_schema().await?.0 != version => {
                    tracing::info!(%error, "the schema moved on while migrating; planning again");
                    attempts += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}
