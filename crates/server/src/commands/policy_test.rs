//! `gatehouse policy test <file>`: runs a fixture of users, seed rows and
//! expectations against the declared schema and policies, on a throwaway SQLite
//! database, through the same code as the data API. Exits non-zero with a
//! readable report when any expectation fails.
//!
//! ```toml
//! config = "gatehouse.toml"          # relative to the fixture
//! [users]
//! alice = { id = "0190c2a4-7e5b-7000-8000-00000000a11c" }
//! [[seed]]                           # inserted in order; `as` a user, else with the secret key
//! table = "orders"
//! as = "alice"
//! rows = [{ note = "first" }]
//! [[expect]]
//! as = "bob"                         # a user, or "anon"
//! cannot = "select"                  # can / cannot: select, insert, update, delete
//! table = "orders"
//! where = "note=eq.first"            # PostgREST filters
//! rows = 1                           # with `can`: exactly this many rows seen or touched
//! body = { note = "x" }              # for insert and update
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gatehouse_db::{Database, Location, MigrateOptions, PoolOptions};
use gatehouse_keys::LocalKeys;
use gatehouse_rest::{Caller, ReadOptions, Rest, RestError, RestSettings, WriteOptions};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::config::{Config, Overrides};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    config: Option<PathBuf>,
    #[serde(default)]
    users: HashMap<String, User>,
    #[serde(default)]
    seed: Vec<Seed>,
    #[serde(default)]
    expect: Vec<Expectation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct User {
    id: String,
    #[serde(default)]
    claims: serde_json::Map<String, Json>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    table: String,
    #[serde(rename = "as")]
    user: Option<String>,
    rows: Vec<Json>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    #[serde(rename = "as")]
    user: String,
    can: Option<String>,
    cannot: Option<String>,
    table: String,
    #[serde(rename = "where", default)]
    filter: String,
    rows: Option<usize>,
    body: Option<Json>,
}

const ISSUER: &str = "gatehouse-policy-test";

struct Callers {
    keys: LocalKeys,
    users: HashMap<String, User>,
}

impl Callers {
    fn caller(&self, name: &str) -> anyhow::Result<Caller> {
        if name == "anon" {
            return Ok(Caller::anon());
        }
        let user = self
            .users
            .get(name)
            .with_context(|| format!("unknown user {name:?}"))?;
        let verified = self.keys.user(&user.id, user.claims.clone())?;
        Ok(Caller::signed_in(verified))
    }
}

/// Whether the expectation held, and what happened.
async fn check(
    rest: &Rest,
    db: &Database,
    callers: &Callers,
    expect: &Expectation,
) -> anyhow::Result<(bool, String)> {
    let (wanted, command) = match (&expect.can, &expect.cannot) {
        (Some(command), None) => (true, command.as_str()),
        (None, Some(command)) => (false, command.as_str()),
        _ => bail!("an expectation has exactly one of can or cannot"),
    };
    let caller = callers.caller(&expect.user)?;
    let pairs = gatehouse_query::written_pairs(&expect.filter);
    let request = gatehouse_query::parse(&pairs)?;
    let body = expect
        .body
        .clone()
        .unwrap_or(Json::Object(Default::default()));
    let options = WriteOptions::default();
    let outcome: Result<usize, RestError> = match command {
        "select" => rest
            .read(
                db.into(),
                &caller,
                &expect.table,
                &request,
                ReadOptions::default(),
            )
            .await
            .map(|result| result.rows.len()),
        "insert" => rest
            .insert(db.into(), &caller, &expect.table, &request, &body, options)
            .await
            .map(|r| r.affected),
        "update" => rest
            .update(db.into(), &caller, &expect.table, &request, &body, options)
            .await
            .map(|r| r.affected),
        "delete" => rest
            .delete(db.into(), &caller, &expect.table, &request, options)
            .await
            .map(|r| r.affected),
        other => bail!("unknown command {other:?}: use select, insert, update or delete"),
    };
    Ok(match outcome {
        Ok(count) => {
            let allowed = match expect.rows {
                Some(rows) => count == rows,
                None => count > 0,
            };
            (allowed == wanted, format!("{count} row(s)"))
        }
        Err(RestError::Database(error)) => bail!("the database failed: {error}"),
        Err(error) => (!wanted, format!("refused: {error}")),
    })
}

pub async fn run(file: &Path, overrides: &Overrides) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let fixture: Fixture = toml::from_str(&text)
        .with_context(|| format!("{} is not a policy fixture", file.display()))?;
    let scratch = tempfile::tempdir()?;
    let mut overrides = overrides.clone();
    if let Some(config) = &fixture.config {
        overrides.config_file = Some(file.parent().unwrap_or(Path::new(".")).join(config));
    }
    overrides.data_dir = Some(scratch.path().to_path_buf());
    let env = |_: &str| None;
    let config = Config::load(&overrides, &env)?;
    let db = Database::open(
        &Location::Sqlite(scratch.path().join("policy-test.db")),
        PoolOptions::default(),
    )
    .await?;
    db.migrate_schema(&config.schema, MigrateOptions::default())
        .await?;
    let rest = Rest::new(
        config.schema.clone(),
        config.policies.clone(),
        RestSettings::default(),
    );
    let callers = Callers {
        keys: LocalKeys::generate(ISSUER)?,
        users: fixture.users,
    };

    // The fixture's seed rows go in as the service role: the test holds a
    // secret key of its own for it.
    let service = Caller::holding(callers.keys.service());
    for (index, seed) in fixture.seed.iter().enumerate() {
        let caller = match &seed.user {
            Some(user) => callers.caller(user)?,
            None => service.clone(),
        };
        let rows = Json::Array(seed.rows.clone());
        let request = gatehouse_query::Request::default();
        rest.insert(
            (&db).into(),
            &caller,
            &seed.table,
            &request,
            &rows,
            WriteOptions::default(),
        )
        .await
        .map_err(|error| anyhow::anyhow!("seed {} ({}): {error}", index + 1, seed.table))?;
    }

    let mut failures = 0;
    for expect in &fixture.expect {
        let verb = if expect.can.is_some() {
            "can"
        } else {
            "cannot"
        };
        let command = expect
            .can
            .as_ref()
            .or(expect.cannot.as_ref())
            .map_or("?", String::as_str);
        let filter = if expect.filter.is_empty() {
            String::new()
        } else {
            format!(" where {}", expect.filter)
        };
        let line = format!("{} {verb} {command} {}{filter}", expect.user, expect.table);
        let (held, happened) = check(&rest, &db, &callers, expect).await?;
        if held {
            println!("ok    {line}");
        } else {
            failures += 1;
            println!("FAIL  {line}: {happened}");
        }
    }
    println!("\n{} expectations, {failures} failed", fixture.expect.len());
    if failures > 0 {
        bail!("{failures} policy expectation(s) failed");
    }
    Ok(())
}
