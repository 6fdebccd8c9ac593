//! Secrets: the API keys, the signing key set and the database URL. They come
//! from `GATEHOUSE_<NAME>` or the file named by `GATEHOUSE_<NAME>_FILE`, never from
//! the config file. In development, missing ones are generated once into the data
//! folder (mode 0600); production refuses to start while any is missing, a
//! development leftover, a well-known default or too short, naming each.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gatehouse_auth::sealing::SealingKey;
use gatehouse_db::Location;
use gatehouse_keys::{
    ApiKeys, ApiRole, KeyOrigin, KeySet, PresentedKey, SigningAlgorithm, generate_api_key, weakness,
};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{Config, Env, Mode};

pub const PUBLISHABLE_FILE: &str = "publishable.key";
pub const SECRET_FILE: &str = "secret.key";
pub const SIGNING_KEYS_FILE: &str = "signing-keys.json";
pub const DATABASE_FILE: &str = "gatehouse.db";
pub const FACTOR_KEY_FILE: &str = "mfa.key";

const MIN_API_KEY_LEN: usize = 32;
const MIN_DATABASE_PASSWORD_LEN: usize = 16;

pub struct Secrets {
    pub database: Location,
    pub api_keys: ApiKeys,
    /// The secret key, checked as a request's would be: the server's own
    /// standing as the service role (uploads through URLs it signed).
    pub service: PresentedKey,
    pub signing_keys: KeySet,
    /// `GATEHOUSE_SMTP_URL`: how auth emails leave; without it they wait in the outbox.
    pub smtp: Option<SecretString>,
    /// `GATEHOUSE_REDIS_URL`: shared state (rate limits) for several instances.
    pub redis: Option<SecretString>,
    /// `GATEHOUSE_S3_ACCESS_KEY_ID` and `GATEHOUSE_S3_SECRET_ACCESS_KEY`, for
    /// `[storage] backend = "s3"`.
    pub s3_keys: Option<(SecretString, SecretString)>,
    /// Where the secret API key is kept, for the start-up message; never the key.
    pub secret_key_source: String,
    /// The values of the secrets functions declare (`secrets = ["NAME"]`), from
    /// `GATEHOUSE_FUNCTION_SECRET_<NAME>` or its `_FILE`.
    pub function_secrets: HashMap<String, SecretString>,
    /// Each inbound hook's secret, from `GATEHOUSE_HOOK_SECRET_<NAME>` (the
    /// name upper-cased, `-` as `_`) or its `_FILE`.
    pub hook_secrets: HashMap<String, SecretString>,
    /// Each outbound webhook's signing secret, from
    /// `GATEHOUSE_WEBHOOK_SECRET_<NAME>` or its `_FILE`.
    pub webhook_secrets: HashMap<String, SecretString>,
    /// `GATEHOUSE_MFA_KEY`: seals second-factor secrets; without it (possible
    /// only in production) factors are off.
    pub factor_key: Option<SealingKey>,
    /// Each identity provider's client secret, from
    /// `GATEHOUSE_OAUTH_SECRET_<NAME>` or its `_FILE`.
    pub oauth_secrets: HashMap<String, SecretString>,
}

/// Every declared hook's and webhook's secret, by name: `GATEHOUSE_<KIND>_SECRET_<NAME>`
/// (the name upper-cased, `-` as `_`). Nothing can be verified or signed
/// without one, so a missing secret refuses the start in production; in
/// development the log says so, and the hook refuses every delivery or the
/// webhook sends nothing.
fn named_secrets<'a>(
    (kind, unset): (&str, &str),
    names: impl Iterator<Item = &'a String>,
    (mode, env): (Mode, Env),
) -> anyhow::Result<HashMap<String, SecretString>> {
    let mut found = HashMap::new();
    for name in names {
        let variable = format!(
            "{}_SECRET_{}",
            kind.to_ascii_uppercase(),
            name.to_ascii_uppercase().replace('-', "_")
        );
        match read_secret(env, &variable)? {
            Some(value) => {
                found.insert(name.clone(), value);
            }
            None if mode == Mode::Production => {
                bail!(
                    "production mode refuses to start: missing GATEHOUSE_{variable} ({kind} {name})"
                )
            }
            None => {
                tracing::warn!("GATEHOUSE_{variable} is not set: {kind} {name} {unset}");
            }
        }
    }
    Ok(found)
}

fn hook_secrets(config: &Config, env: Env) -> anyhow::Result<HashMap<String, SecretString>> {
    named_secrets(
        ("hook", "refuses every delivery"),
        config.hooks.keys(),
        (config.mode, env),
    )
}

fn oauth_secrets(config: &Config, env: Env) -> anyhow::Result<HashMap<String, SecretString>> {
    named_secrets(
        (
            "oauth",
            "signs in as a public client, which most providers refuse",
        ),
        config.providers.iter().map(|provider| &provider.name),
        (config.mode, env),
    )
}

fn webhook_secrets(config: &Config, env: Env) -> anyhow::Result<HashMap<String, SecretString>> {
    named_secrets(
        ("webhook", "sends nothing"),
        config.webhooks.iter().map(|webhook| &webhook.name),
        (config.mode, env),
    )
}

/// Every secret a declared function names. Missing ones refuse a production
/// start; in development they are logged as missing and read as null.
fn function_secrets(config: &Config, env: Env) -> anyhow::Result<HashMap<String, SecretString>> {
    let mut found = HashMap::new();
    let mut missing = Vec::new();
    for (function, decl) in &config.functions {
        for name in &decl.secrets {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                bail!("function {function}: secret names are A-Z, 0-9 and _, not {name:?}");
            }
            if found.contains_key(name) {
                continue;
            }
            match read_secret(env, &format!("FUNCTION_SECRET_{name}"))? {
                Some(value) => {
                    found.insert(name.clone(), value);
                }
                None => missing.push(format!(
                    "GATEHOUSE_FUNCTION_SECRET_{name} (function {function})"
                )),
            }
        }
    }
    if !missing.is_empty() {
        if config.mode == Mode::Production {
            bail!(
                "production mode refuses to start: missing {}",
                missing.join(", ")
            );
        }
        tracing::warn!(missing = %missing.join(", "), "functions name secrets that are not set; they read as null");
    }
    Ok(found)
}

/// The two API keys, and the proof that the secret one is the service key.
fn api_keys(
    publishable: &SecretString,
    secret: &SecretString,
) -> anyhow::Result<(ApiKeys, PresentedKey)> {
    let keys = ApiKeys::new(publishable.expose_secret(), secret)?;
    let service = keys
        .identify(secret.expose_secret())
        .filter(|key| key.role() == ApiRole::Service)
        .context("the secret key does not identify as the service role")?;
    Ok((keys, service))
}

fn s3_keys(env: Env) -> anyhow::Result<Option<(SecretString, SecretString)>> {
    match (
        read_secret(env, "S3_ACCESS_KEY_ID")?,
        read_secret(env, "S3_SECRET_ACCESS_KEY")?,
    ) {
        (Some(id), Some(secret)) => Ok(Some((id, secret))),
        (None, None) => Ok(None),
        _ => bail!(
            "set both GATEHOUSE_S3_ACCESS_KEY_ID and GATEHOUSE_S3_SECRET_ACCESS_KEY, or neither"
        ),
    }
}

/// `GATEHOUSE_<NAME>` or the contents of `GATEHOUSE_<NAME>_FILE`, trailing
/// newline removed. A variable set to nothing counts as not set.
pub fn read_secret(env: Env, name: &str) -> anyhow::Result<Option<SecretString>> {
    let variable = format!("GATEHOUSE_{name}");
    let file_variable = format!("{variable}_FILE");
    let set = |name: &str| env(name).filter(|value| !value.is_empty());
    match (set(&variable), set(&file_variable)) {
        (Some(_), Some(_)) => bail!("set {variable} or {file_variable}, not both"),
        (Some(value), None) => Ok(Some(value.into())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{file_variable}: cannot read {path}"))?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned().into()))
        }
        (None, None) => Ok(None),
    }
}

fn source_of(env: Env, name: &str) -> String {
    let file_variable = format!("GATEHOUSE_{name}_FILE");
    env(&file_variable).unwrap_or_else(|| format!("the GATEHOUSE_{name} environment variable"))
}

fn database_location(env: Env, data_dir: &Path) -> anyhow::Result<Location> {
    match read_secret(env, "DATABASE_URL")? {
        None => Ok(Location::Sqlite(data_dir.join(DATABASE_FILE))),
        Some(url) => {
            let scheme_ok = ["postgres://", "postgresql://"]
                .iter()
                .any(|scheme| url.expose_secret().starts_with(scheme));
            if !scheme_ok {
                bail!(
                    "GATEHOUSE_DATABASE_URL must start with postgres:// (leave it unset for SQLite)"
                );
            }
            Ok(Location::Postgres(url))
        }
    }
}

pub fn create_data_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create the data folder {}", path.display()))
}

pub fn resolve(config: &Config, env: Env) -> anyhow::Result<Secrets> {
    match config.mode {
        Mode::Production => production(config, env),
        Mode::Development => development(config, env),
    }
}

fn development(config: &Config, env: Env) -> anyhow::Result<Secrets> {
    create_data_dir(&config.data_dir)?;
    let api_key =
        |name: &str, file: &str, role: ApiRole| -> anyhow::Result<(SecretString, String)> {
            if let Some(value) = read_secret(env, name)? {
                return Ok((value, source_of(env, name)));
            }
            let path = config.data_dir.join(file);
            let value = match std::fs::read_to_string(&path) {
                Ok(text) => text.trim_end().to_owned().into(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    let key = generate_api_key(role)?;
                    gatehouse_keys::write_private_file(&path, key.expose_secret().as_bytes())?;
                    key
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot read {}", path.display()));
                }
            };
            Ok((value, path.display().to_string()))
        };
    let (publishable, _) = api_key("PUBLISHABLE_KEY", PUBLISHABLE_FILE, ApiRole::Anon)?;
    let (secret, secret_key_source) = api_key("SECRET_KEY", SECRET_FILE, ApiRole::Service)?;
    let signing_path = env("GATEHOUSE_SIGNING_KEYS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| config.data_dir.join(SIGNING_KEYS_FILE));
    let signing_keys = if signing_path.exists() {
        KeySet::load(&signing_path)?
    } else {
        let keys = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Development)?;
        keys.save(&signing_path)?;
        keys
    };
    let (api_keys, service) = api_keys(&publishable, &secret)?;
    Ok(Secrets {
        database: database_location(env, &config.data_dir)?,
        api_keys,
        service,
        signing_keys,
        smtp: read_secret(env, "SMTP_URL")?,
        redis: read_secret(env, "REDIS_URL")?,
        s3_keys: s3_keys(env)?,
        secret_key_source,
        function_secrets: function_secrets(config, env)?,
        hook_secrets: hook_secrets(config, env)?,
        webhook_secrets: webhook_secrets(config, env)?,
        factor_key: Some(development_factor_key(config, env)?),
        oauth_secrets: oauth_secrets(config, env)?,
    })
}

/// `GATEHOUSE_MFA_KEY`, or in development the key generated once into the
/// data folder.
fn development_factor_key(config: &Config, env: Env) -> anyhow::Result<SealingKey> {
    if let Some(key) = factor_key(env)? {
        return Ok(key);
    }
    let path = config.data_dir.join(FACTOR_KEY_FILE);
    let text: SecretString = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim_end().to_owned().into(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = gatehouse_auth::sealing::generate_key()?;
            gatehouse_keys::write_private_file(&path, key.expose_secret().as_bytes())?;
            key
        }
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    SealingKey::from_base64(&text)
        .map_err(|problem| anyhow::anyhow!("{}: {problem}", path.display()))
}

/// `GATEHOUSE_MFA_KEY` (or its `_FILE`): 32 random bytes as base64.
fn factor_key(env: Env) -> anyhow::Result<Option<SealingKey>> {
    read_secret(env, "MFA_KEY")?
        .map(|text| {
            SealingKey::from_base64(&text).map_err(|problem| {
                anyhow::anyhow!(
                    "GATEHOUSE_MFA_KEY: {problem}; make one with `openssl rand -base64 32`"
                )
            })
        })
        .transpose()
}

fn production(config: &Config, env: Env) -> anyhow::Result<Secrets> {
    let mut problems = Vec::new();
    let api_key_fix = |kind: &str, name: &str| {
        format!(
            "create one with `gatehouse keys generate --api-key {kind} --out {}.key` and set \
             GATEHOUSE_{name}_FILE to its path",
            kind
        )
    };
    let mut api_key = |name: &str, kind: &str| match read_secret(env, name) {
        Ok(Some(value)) => match weakness(value.expose_secret(), MIN_API_KEY_LEN) {
            None => Some(value),
            Some(reason) => {
                problems.push(format!(
                    "GATEHOUSE_{name} is too weak ({reason}): {}",
                    api_key_fix(kind, name)
                ));
                None
            }
        },
        Ok(None) => {
            problems.push(format!(
                "GATEHOUSE_{name} is missing: {}",
                api_key_fix(kind, name)
            ));
            None
        }
        Err(error) => {
            problems.push(format!("{error:#}"));
            None
        }
    };
    let publishable = api_key("PUBLISHABLE_KEY", "publishable");
    let secret = api_key("SECRET_KEY", "secret");

    let signing_fix = "create a key set with `gatehouse keys generate --out /etc/gatehouse/signing-keys.json` \
                       and set GATEHOUSE_SIGNING_KEYS_FILE to its path";
    let signing_keys = match env("GATEHOUSE_SIGNING_KEYS_FILE") {
        None => {
            problems.push(format!(
                "GATEHOUSE_SIGNING_KEYS_FILE is missing: {signing_fix}"
            ));
            None
        }
        Some(path) => match KeySet::load(Path::new(&path)) {
            Ok(keys) if keys.origin() == KeyOrigin::Development => {
                problems.push(format!(
                    "GATEHOUSE_SIGNING_KEYS_FILE ({path}) holds development keys: {signing_fix}"
                ));
                None
            }
            Ok(keys) => Some(keys),
            Err(error) => {
                problems.push(format!("GATEHOUSE_SIGNING_KEYS_FILE: {error}"));
                None
            }
        },
    };

    let database = match database_location(env, &config.data_dir) {
        Ok(location) => {
            match location.postgres_password() {
                Ok(None) if matches!(location, Location::Postgres(_)) => problems.push(format!(
                    "GATEHOUSE_DATABASE_URL has no password: give the database user a random password of \
                     {MIN_DATABASE_PASSWORD_LEN} or more characters and put it in the URL"
                )),
                Ok(Some(password)) => {
                    if let Some(reason) = weakness(password.expose_secret(), MIN_DATABASE_PASSWORD_LEN) {
                        problems.push(format!(
                            "the GATEHOUSE_DATABASE_URL password is too weak ({reason}): use a random one of \
                             {MIN_DATABASE_PASSWORD_LEN} or more characters"
                        ));
                    }
                }
                Ok(None) => {}
                Err(error) => problems.push(format!("GATEHOUSE_DATABASE_URL: {error}")),
            }
            Some(location)
        }
        Err(error) => {
            problems.push(format!("{error:#}"));
            None
        }
    };

    // Services the configuration depends on: without them it cannot work.
    let smtp = read_secret(env, "SMTP_URL")?;
    if config.auth.email_confirmation && smtp.is_none() {
        problems.push(
            "GATEHOUSE_SMTP_URL is missing while [auth] email_confirmation is on, so new users could \
             never confirm: set it (smtp://user:password@relay:587) or turn confirmation off"
                .into(),
        );
    }
    let factor_key = factor_key(env).unwrap_or_else(|error| {
        problems.push(format!("{error:#}"));
        None
    });
    let s3_keys = s3_keys(env)?;
    if config.storage.s3.is_some() && s3_keys.is_none() {
        problems.push(
            "[storage] backend = \"s3\" needs GATEHOUSE_S3_ACCESS_KEY_ID and GATEHOUSE_S3_SECRET_ACCESS_KEY"
                .into(),
        );
    }

    match (publishable, secret, signing_keys, database) {
        (Some(publishable), Some(secret), Some(signing_keys), Some(database))
            if problems.is_empty() =>
        {
            if matches!(database, Location::Sqlite(_)) {
                create_data_dir(&config.data_dir)?;
            }
            let (api_keys, service) = api_keys(&publishable, &secret)?;
            Ok(Secrets {
                database,
                api_keys,
                service,
                signing_keys,
                smtp,
                redis: read_secret(env, "REDIS_URL")?,
                s3_keys,
                secret_key_source: source_of(env, "SECRET_KEY"),
                function_secrets: function_secrets(config, env)?,
                hook_secrets: hook_secrets(config, env)?,
                webhook_secrets: webhook_secrets(config, env)?,
                factor_key,
                oauth_secrets: oauth_secrets(config, env)?,
            })
        }
        _ => bail!(
            "production mode refuses to start:\n{}",
            problems
                .iter()
                .map(|p| format!("  - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}
