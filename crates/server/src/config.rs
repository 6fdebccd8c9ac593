//! Configuration: `gatehouse.toml`, then `GATEHOUSE_*` variables on top, parsed
//! into a validated [`Config`] before anything runs. Secrets are not here: they
//! come from the environment or files (see `secrets`), and a secret-looking key
//! in the toml is refused with a pointer to the right variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_auth::{AuthSettings, HashParams};
use gatehouse_functions::FunctionDecl;
use gatehouse_http::{CorsPolicy, RateLimits};
use gatehouse_jobs::cron::Schedule;
use gatehouse_limits::Policy;
use gatehouse_policy::{Policies, TablePolicies};
use gatehouse_schema::declaration::{PolicyDecl, ReplicaIdentity, TableDecl, TriggerDecl};
use gatehouse_schema::{Schema, SchemaError};
use indexmap::IndexMap;
use ipnet::IpNet;
use serde::Deserialize;

use crate::listener::ConnectionLimits;

mod background;
mod providers;

use background::{
    CronEntry, HookDecl, JobsSection, WebhookDecl, checked_hooks, checked_webhooks, cron_schedules,
};
pub use background::{HookConfig, WebhookConfig};

pub const DEFAULT_FILE: &str = "gatehouse.toml";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:54321";

/// Fields that would hold secrets; each names the variable to use instead.
const SECRET_FIELDS: &[(&str, &str)] = &[
    ("secret_key", "GATEHOUSE_SECRET_KEY"),
    ("publishable_key", "GATEHOUSE_PUBLISHABLE_KEY"),
    ("database_url", "GATEHOUSE_DATABASE_URL"),
    ("url", "GATEHOUSE_DATABASE_URL"),
    ("password", "GATEHOUSE_DATABASE_URL"),
    ("signing_keys", "GATEHOUSE_SIGNING_KEYS_FILE"),
    ("jwt_secret", "GATEHOUSE_SIGNING_KEYS_FILE"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}:{line}:{column}: {message}")]
    File {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{variable}: {message}")]
    Env { variable: String, message: String },
}

impl ConfigError {
    fn in_file(path: &Path, text: &str, offset: usize, message: String) -> Self {
        let (line, column) = line_and_column(text, offset);
        ConfigError::File {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Development,
    Production,
}

/// The validated configuration everything else is built from.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    /// The URL clients use; the token issuer derives from it. Defaults to the listen address.
    pub public_url: Option<String>,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub cors: CorsPolicy,
    pub pool_size: usize,
    pub pool_timeout: Duration,
    /// Apply the declared schema at start (destructive steps still need `gatehouse migrate`).
    pub auto_migrate: bool,
    /// The declared tables, with indexes added for every column a policy filters on.
    pub schema: Schema,
    pub policies: Policies,
    pub auth: AuthSettings,
    pub email_from: String,
    /// Proxies whose `X-Forwarded-For` is believed (none by default).
    pub trusted_proxies: Vec<IpNet>,
    /// `None` when the operator turned rate limiting off.
    pub rate_limits: Option<RateLimits>,
    pub connection_limits: ConnectionLimits,
    /// Longer request targets (path and query) get 414.
    pub max_url_bytes: usize,
    /// Deeper JSON bodies get 400.
    pub max_json_depth: usize,
    pub storage: StorageConfig,
    /// `[functions.*]`, whose modules are under `functions_dir`.
    pub functions: IndexMap<String, FunctionDecl>,
    /// Each table's `[[tables.<t>.triggers]]`, in declaration order.
    pub triggers: Vec<(String, TriggerDecl)>,
    /// `[realtime]`: the bounds of realtime's sockets.
    pub realtime: gatehouse_realtime::limits::Limits,
    /// `[[realtime.policies]]`, over `realtime.messages`: none, no private channel.
    pub realtime_policies: TablePolicies,
    /// Tables whose old rows realtime sends whole (`replica_identity = "full"`).
    pub full_old_rows: std::collections::HashSet<String>,
    /// `functions/` beside the configuration file.
    pub functions_dir: PathBuf,
    /// `[jobs]`: the background job queues and their timings.
    pub jobs: gatehouse_jobs::Settings,
    /// `[[cron]]`: schedules, each enqueueing its function's job at every tick.
    pub cron: Vec<Schedule>,
    /// `[hooks.<name>]`: inbound webhooks at `/hooks/v1/<name>`.
    pub hooks: IndexMap<String, HookConfig>,
    /// `[[webhooks]]`: table changes delivered, signed, to a URL.
    pub webhooks: Vec<WebhookConfig>,
    /// `[auth.providers.<name>]`: sign-in through other identity providers
    /// (secrets filled in from `GATEHOUSE_OAUTH_SECRET_<NAME>` at start).
    pub providers: Vec<gatehouse_oauth::ProviderConfig>,
}

/// `[storage]`: where object bytes live, their bounds, and the storage policies.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `None`: a folder under the data directory.
    pub s3: Option<S3Location>,
    pub max_object_bytes: u64,
    pub upload_timeout: Duration,
    /// How long past `upload_timeout` an interrupted upload's bytes are kept.
    pub orphan_grace: Duration,
    pub max_concurrent_uploads: usize,
    pub policies: TablePolicies,
}

/// An S3-compatible bucket; its keys come from `GATEHOUSE_S3_ACCESS_KEY_ID` and
/// `GATEHOUSE_S3_SECRET_ACCESS_KEY`.
#[derive(Debug, Clone)]
pub struct S3Location {
    pub bucket: String,
    pub region: String,
    pub endpoint: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    /// `local` (default) or `s3`.
    backend: Option<String>,
    s3_bucket: Option<String>,
    s3_region: Option<String>,
    s3_endpoint: Option<String>,
    max_object_bytes: Option<Bounded<1, { 5 << 30 }>>,
    upload_timeout_secs: Option<Bounded<1, 86_400>>,
    orphan_grace_secs: Option<Bounded<1, 86_400>>,
    max_concurrent_uploads: Option<Bounded<1, 4096>>,
    #[serde(default)]
    policies: Vec<PolicyDecl>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    database: DatabaseSection,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default)]
    rate_limits: RateLimitsSection,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    realtime: RealtimeSection,
    /// Files holding more `[tables.*]` declarations, relative to this one.
    #[serde(default)]
    schema_files: Vec<PathBuf>,
    /// Where functions' modules are, relative to this file; `functions` by default.
    functions_dir: Option<PathBuf>,
    #[serde(default)]
    tables: IndexMap<String, TableDecl>,
    #[serde(default)]
    functions: IndexMap<String, FunctionDecl>,
    #[serde(default)]
    jobs: JobsSection,
    #[serde(default)]
    cron: Vec<CronEntry>,
    #[serde(default)]
    hooks: IndexMap<String, HookDecl>,
    #[serde(default)]
    webhooks: Vec<WebhookDecl>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    public_url: Option<PublicUrl>,
    body_limit_bytes: Option<Bounded<1024, { 1 << 30 }>>,
    request_timeout_secs: Option<Bounded<1, 3600>>,
    shutdown_grace_secs: Option<Bounded<0, 3600>>,
    cors_origins: Option<Vec<Origin>>,
    trusted_proxies: Option<Vec<ProxyNet>>,
    max_headers: Option<Bounded<8, 1000>>,
    max_header_bytes: Option<Bounded<8192, { 1 << 20 }>>,
    header_read_timeout_secs: Option<Bounded<1, 300>>,
    max_connections_per_ip: Option<Bounded<1, 1_000_000>>,
    max_url_bytes: Option<Bounded<256, 65_536>>,
    max_json_depth: Option<Bounded<2, 128>>,
}

/// `[realtime]`; each bound absent keeps its default (see `Limits`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RealtimeSection {
    max_connections_per_address: Option<Bounded<1, 1_000_000>>,
    max_connections_per_user: Option<Bounded<1, 100_000>>,
    max_channels_per_connection: Option<Bounded<1, 10_000>>,
    max_message_bytes: Option<Bounded<1024, { 16 << 20 }>>,
    max_messages_per_second: Option<Bounded<1, 100_000>>,
    max_queued_messages: Option<Bounded<16, 1_000_000>>,
    session_check_secs: Option<Bounded<1, 3600>>,
    /// `[[realtime.policies]]`: who may join, send and track on private channels.
    #[serde(default)]
    policies: Vec<PolicyDecl>,
}

impl RealtimeSection {
    fn limits(&self) -> gatehouse_realtime::limits::Limits {
        let given = gatehouse_realtime::limits::Limits::default();
        gatehouse_realtime::limits::Limits {
            connections_per_address: count(
                self.max_connections_per_address,
                given.connections_per_address,
            ),
            connections_per_user: count(self.max_connections_per_user, given.connections_per_user),
            channels_per_connection: count(
                self.max_channels_per_connection,
                given.channels_per_connection,
            ),
            message_bytes: count(self.max_message_bytes, given.message_bytes),
            messages_per_second: self
                .max_messages_per_second
                .map_or(given.messages_per_second, |b| b.0 as u32),
            outbox_frames: count(self.max_queued_messages, given.outbox_frames),
            session_check: self
                .session_check_secs
                .map_or(given.session_check, |b| Duration::from_secs(b.0)),
            silence: given.silence,
        }
    }
}

/// A bounded count as given, else `default`.
fn count<const MIN: i64, const MAX: i64>(
    given: Option<Bounded<MIN, MAX>>,
    default: usize,
) -> usize {
    given.map_or(default, |b| b.0 as usize)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RateLimitsSection {
    enabled: Option<bool>,
    auth: Option<LimitDecl>,
    reads: Option<LimitDecl>,
    writes: Option<LimitDecl>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct LimitDecl {
    limit: Bounded<1, 1_000_000>,
    window_secs: Bounded<1, 86_400>,
}

impl LimitDecl {
    fn apply(decl: Option<Self>, default: Policy) -> Policy {
        decl.map_or(default, |decl| Policy {
            limit: decl.limit.0 as u32,
            window: Duration::from_secs(decl.window_secs.0),
            ..default
        })
    }
}

/// A trusted proxy: an address or a CIDR network.
#[derive(Deserialize, Clone, Copy)]
#[serde(try_from = "String")]
struct ProxyNet(IpNet);

impl TryFrom<String> for ProxyNet {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let text = text.trim();
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
            .map(Self)
            .map_err(|_| format!("{text:?} is not an address or a CIDR network such as 10.0.0.0/8"))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    email_confirmation: Option<bool>,
    anonymous_sign_ins: Option<bool>,
    signups: Option<bool>,
    /// Below 8 (NIST SP 800-63B's minimum) only to match an existing app's rules.
    password_min_length: Option<Bounded<6, 256>>,
    /// Refuse the 10,000 most common passwords (on by default).
    password_blocklist: Option<bool>,
    /// A new password or email needs the current password or a reauthentication
    /// nonce (on by default; Supabase's default is off).
    secure_password_change: Option<bool>,
    access_token_ttl_secs: Option<Bounded<60, 604_800>>,
    personal_data_in_token: Option<bool>,
    argon2_memory_kib: Option<Bounded<8192, 1_048_576>>,
    argon2_iterations: Option<Bounded<1, 20>>,
    /// Where email links lead by default.
    site_url: Option<PublicUrl>,
    /// Other allowed `redirect_to` targets (by prefix).
    redirect_urls: Option<Vec<PublicUrl>>,
    /// The sender of auth emails, e.g. "Shop <no-reply@shop.example>".
    email_from: Option<String>,
    /// Offer HttpOnly cookie sessions (with CSRF tokens) to server-rendered apps.
    cookie_sessions: Option<bool>,
    cookie_idle_timeout_secs: Option<Bounded<60, 604_800>>,
    /// How long this instance trusts its own finding that a session is live.
    session_check_secs: Option<Bounded<0, 60>>,
    audit_retention_days: Option<Bounded<1, 3650>>,
    #[serde(default)]
    providers: IndexMap<String, providers::ProviderDecl>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DatabaseSection {
    pool_size: Option<Bounded<1, 256>>,
    pool_timeout_secs: Option<Bounded<1, 600>>,
    auto_migrate: Option<bool>,
}

/// An integer setting within `MIN..=MAX`, checked while parsing so the error
/// carries the line.
#[derive(Deserialize, Clone, Copy)]
#[serde(try_from = "i64")]
struct Bounded<const MIN: i64, const MAX: i64>(u64);

impl<const MIN: i64, const MAX: i64> TryFrom<i64> for Bounded<MIN, MAX> {
    type Error = String;

    fn try_from(value: i64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&value) {
            Ok(Self(value.unsigned_abs()))
        } else {
            Err(format!("{value} is out of range: use {MIN} to {MAX}"))
        }
    }
}

/// An exact browser origin such as `https://app.example.com`.
#[derive(Deserialize, Clone)]
#[serde(try_from = "String")]
struct Origin(String);

impl TryFrom<String> for Origin {
    type Error = String;

    fn try_from(origin: String) -> Result<Self, String> {
        if origin.contains('*') {
            return Err(format!(
                "{origin:?}: wildcard origins are refused because the API allows credentials; list each origin"
            ));
        }
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .ok_or_else(|| format!("{origin:?}: an origin starts with https:// or http://"))?;
        if rest.is_empty()
            || rest.contains('/')
            || rest.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "{origin:?}: an origin is scheme://host[:port], without path or trailing slash"
            ));
        }
        Ok(Self(origin))
    }
}

#[derive(Deserialize, Clone)]
#[serde(try_from = "String")]
struct PublicUrl(String);

impl TryFrom<String> for PublicUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        let valid = (url.starts_with("https://") || url.starts_with("http://"))
            && !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            Ok(Self(url.trim_end_matches('/').to_owned()))
        } else {
            Err(format!(
                "{url:?}: the public URL starts with https:// or http://"
            ))
        }
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    (line, column)
}

/// One file of the declaration: gatehouse.toml or a schema file it names.
struct Source {
    path: PathBuf,
    text: String,
}

/// Where a table (and column) is declared in one file: the first line naming it.
fn declaration_offset(text: &str, table: &str, column: Option<&str>) -> Option<usize> {
    let table_at = [
        format!("[tables.{table}]"),
        format!("[tables.{table}."),
        format!("tables.{table}."),
    ]
    .iter()
    .filter_map(|needle| text.find(needle.as_str()))
    .min()?;
    let column_at = column.and_then(|column| {
        [
            format!("columns.{column} "),
            format!("columns.{column}="),
            format!("[tables.{table}.columns.{column}]"),
        ]
        .iter()
        .filter_map(|needle| text[table_at..].find(needle.as_str()))
        .min()
    });
    Some(column_at.map_or(table_at, |offset| table_at + offset))
}

/// An error about `table` (and `column`, or the text `near`), at its line in
/// whichever file declares it.
fn located(
    sources: &[Source],
    table: &str,
    column: Option<&str>,
    near: Option<&str>,
    message: String,
) -> ConfigError {
    let found = sources.iter().find_map(|source| {
        let table_at = declaration_offset(&source.text, table, column)?;
        let offset = near
            .and_then(|near| source.text[table_at..].find(near))
            .map_or(table_at, |at| table_at + at);
        Some((source, offset))
    });
    match found.or_else(|| sources.first().map(|source| (source, 0))) {
        Some((source, offset)) => ConfigError::in_file(&source.path, &source.text, offset, message),
        None => ConfigError::Env {
            variable: "tables".into(),
            message,
        },
    }
}

/// The declared schema, its table policies and the storage policies.
type Compiled = (Schema, Policies, TablePolicies);

fn schema_of(
    sources: &[Source],
    tables: &IndexMap<String, TableDecl>,
    storage_policies: &[PolicyDecl],
) -> Result<Compiled, ConfigError> {
    let mut schema = Schema::from_declaration(tables).map_err(|error| {
        let message = error.to_string();
        match &error {
            SchemaError::Table { table, .. } => located(sources, table, None, None, message),
            SchemaError::Column { table, column, .. } => {
                located(sources, table, Some(column), None, message)
            }
            SchemaError::Unsupported(_) => located(sources, "", None, None, message),
        }
    })?;
    let policies = Policies::compile(tables, &schema).map_err(|error| {
        let near = format!("{:?}", error.policy);
        located(sources, &error.table, None, Some(&near), error.to_string())
    })?;
    schema.index_columns(&policies.filtered_columns());
    let storage = Policies::compile_objects(storage_policies, &schema).map_err(|error| {
        let near = format!("{:?}", error.policy);
        let found = sources
            .iter()
            .find_map(|source| Some((source, source.text.find(&near)?)));
        match found {
            Some((source, offset)) => {
                ConfigError::in_file(&source.path, &source.text, offset, error.to_string())
            }
            None => located(sources, "", None, None, error.to_string()),
        }
    })?;
    Ok((schema, policies, storage))
}

/// Adds the tables of each schema file the config names (relative to it).
fn read_schema_files(
    main: &Source,
    files: &[PathBuf],
    tables: &mut IndexMap<String, TableDecl>,
) -> Result<Vec<Source>, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SchemaFile {
        #[serde(default)]
        tables: IndexMap<String, TableDecl>,
    }
    let folder = main.path.parent().unwrap_or(Path::new(""));
    let mut sources = Vec::new();
    for file in files {
        let path = folder.join(file);
        let text = read(&path)?.ok_or_else(|| ConfigError::Read {
            path: path.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let parsed: SchemaFile = toml::from_str(&text).map_err(|error| {
            let offset = error.span().map_or(0, |span| span.start);
            ConfigError::in_file(&path, &text, offset, error.message().trim().to_owned())
        })?;
        for (name, table) in parsed.tables {
            if tables.contains_key(&name) {
                let offset = declaration_offset(&text, &name, None).unwrap_or(0);
                return Err(ConfigError::in_file(
                    &path,
                    &text,
                    offset,
                    format!("table {name} is declared twice"),
                ));
            }
            tables.insert(name, table);
        }
        sources.push(Source { path, text });
    }
    Ok(sources)
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        let mut message = error.message().trim().to_owned();
        if let Some((field, variable)) = SECRET_FIELDS
            .iter()
            .find(|(field, _)| message.contains(&format!("unknown field `{field}`")))
        {
            message = format!(
                "`{field}` is a secret and is never read from the config file; set {variable} \
                 (or {variable}_FILE) in the environment instead"
            );
        }
        ConfigError::in_file(path, text, offset, message)
    })
}

/// Reads environment variables; a closure so tests need not touch the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn env_value<T: TryFrom<String, Error = String>>(
    env: Env,
    variable: &str,
) -> Result<Option<T>, ConfigError> {
    env(variable)
        .map(|value| {
            T::try_from(value).map_err(|message| ConfigError::Env {
                variable: variable.to_owned(),
                message,
            })
        })
        .transpose()
}

fn env_parsed<T: std::str::FromStr>(
    env: Env,
    variable: &str,
    expect: &str,
) -> Result<Option<T>, ConfigError> {
    env(variable)
        .map(|value| {
            value.trim().parse::<T>().map_err(|_| ConfigError::Env {
                variable: variable.to_owned(),
                message: format!("{value:?} is not {expect}"),
            })
        })
        .transpose()
}

fn env_bounded<const MIN: i64, const MAX: i64>(
    env: Env,
    variable: &str,
) -> Result<Option<Bounded<MIN, MAX>>, ConfigError> {
    env_parsed::<i64>(env, variable, "a whole number")?
        .map(|value| {
            Bounded::try_from(value).map_err(|message| ConfigError::Env {
                variable: variable.to_owned(),
                message,
            })
        })
        .transpose()
}

/// What the command line says, which wins over the environment and the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub production: bool,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the file (the named one, which must exist, or `gatehouse.toml` when
    /// present), applies `GATEHOUSE_*` variables, then the command line.
    pub fn load(overrides: &Overrides, env: Env) -> Result<Self, ConfigError> {
        let named = overrides
            .config_file
            .clone()
            .or_else(|| env("GATEHOUSE_CONFIG").map(PathBuf::from));
        let file = match named {
            Some(path) => Some(read(&path)?.map(|text| (path.clone(), text)).ok_or(
                ConfigError::Read {
                    path,
                    source: std::io::ErrorKind::NotFound.into(),
                },
            )?),
            None => read(Path::new(DEFAULT_FILE))?.map(|text| (PathBuf::from(DEFAULT_FILE), text)),
        };
        let mut functions_dir = PathBuf::from("functions");
        let (parsed, schema) = match file {
            Some((path, text)) => {
                let mut parsed = parse_file(&path, &text)?;
                let folder = parsed
                    .functions_dir
                    .as_deref()
                    .unwrap_or(Path::new("functions"));
                functions_dir = path.parent().unwrap_or(Path::new("")).join(folder);
                let main = Source { path, text };
                let mut sources =
                    read_schema_files(&main, &parsed.schema_files, &mut parsed.tables)?;
                sources.insert(0, main);
                let schema = schema_of(&sources, &parsed.tables, &parsed.storage.policies)?;
                (parsed, schema)
            }
            None => (FileConfig::default(), Default::default()),
        };
        let mut config = Self::assemble(parsed, schema, overrides, env)?;
        config.functions_dir = functions_dir;
        Ok(config)
    }

    fn assemble(
        mut file: FileConfig,
        (schema, policies, storage_policies): Compiled,
        overrides: &Overrides,
        env: Env,
    ) -> Result<Self, ConfigError> {
        let production = overrides.production
            || match env("GATEHOUSE_ENV").as_deref().map(str::trim) {
                None | Some("" | "development") => false,
                Some("production") => true,
                Some(other) => {
                    return Err(ConfigError::Env {
                        variable: "GATEHOUSE_ENV".into(),
                        message: format!("{other:?} is not development or production"),
                    });
                }
            };
        let realtime_policies = Policies::compile_messages(&file.realtime.policies, &schema)
            .map_err(|error| ConfigError::Env {
                variable: "[realtime]".into(),
                message: error.to_string(),
            })?;
        let server = file.server;
        let jobs = file.jobs.settings()?;
        let webhooks = checked_webhooks(file.webhooks, &schema, &jobs)?;
        let listen = match overrides.listen {
            Some(listen) => listen,
            None => match env_parsed(
                env,
                "GATEHOUSE_LISTEN",
                "a socket address such as 127.0.0.1:54321",
            )? {
                Some(listen) => listen,
                None => match server.listen {
                    Some(listen) => listen,
                    None => DEFAULT_LISTEN.parse().map_err(|_| ConfigError::Env {
                        variable: "GATEHOUSE_LISTEN".into(),
                        message: "the built-in default does not parse".into(),
                    })?,
                },
            },
        };
        let admin_listen =
            env_parsed(env, "GATEHOUSE_ADMIN_LISTEN", "a socket address")?.or(server.admin_listen);
        let public_url = env_value::<PublicUrl>(env, "GATEHOUSE_PUBLIC_URL")?.or(server.public_url);
        let cors_origins = match env("GATEHOUSE_CORS_ORIGINS") {
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|origin| !origin.is_empty())
                    .map(|origin| {
                        Origin::try_from(origin.to_owned()).map_err(|message| ConfigError::Env {
                            variable: "GATEHOUSE_CORS_ORIGINS".into(),
                            message,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => server.cors_origins,
        };
        let cors = match cors_origins {
            Some(origins) if origins.is_empty() => CorsPolicy::Deny,
            Some(origins) => CorsPolicy::Origins(origins.into_iter().map(|o| o.0).collect()),
            // Front ends on a developer's machine work out of the box; production
            // admits no browser origin until the operator names one.
            None if production => CorsPolicy::Deny,
            None => CorsPolicy::Loopback,
        };
        let seconds =
            |bounded: Option<u64>, default: u64| Duration::from_secs(bounded.unwrap_or(default));
        let connection = ConnectionLimits::default();
        let trusted_proxies: Vec<IpNet> = server
            .trusted_proxies
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|net| net.0)
            .collect();
        let defaults = RateLimits::default();
        let limits = &file.rate_limits;
        let rate_limits = limits.enabled.unwrap_or(true).then(|| RateLimits {
            auth: LimitDecl::apply(limits.auth, defaults.auth),
            reads: LimitDecl::apply(limits.reads, defaults.reads),
            writes: LimitDecl::apply(limits.writes, defaults.writes),
        });
        Ok(Config {
            mode: if production {
                Mode::Production
            } else {
                Mode::Development
            },
            data_dir: overrides
                .data_dir
                .clone()
                .or_else(|| env("GATEHOUSE_DATA_DIR").map(PathBuf::from))
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("gatehouse-data")),
            listen,
            admin_listen,
            public_url: public_url.map(|url| url.0),
            body_limit: env_bounded::<1024, { 1 << 30 }>(env, "GATEHOUSE_BODY_LIMIT_BYTES")?
                .or(server.body_limit_bytes)
                .map_or(1 << 20, |b| b.0 as usize),
            request_timeout: seconds(
                env_bounded::<1, 3600>(env, "GATEHOUSE_REQUEST_TIMEOUT_SECS")?
                    .or(server.request_timeout_secs)
                    .map(|b| b.0),
                30,
            ),
            shutdown_grace: seconds(server.shutdown_grace_secs.map(|b| b.0), 30),
            cors,
            pool_size: file.database.pool_size.map_or(8, |b| b.0 as usize),
            pool_timeout: seconds(file.database.pool_timeout_secs.map(|b| b.0), 5),
            auto_migrate: file.database.auto_migrate.unwrap_or(true),
            schema,
            policies,
            auth: auth_settings(&file.auth),
            providers: providers::checked_providers(std::mem::take(&mut file.auth.providers))?,
            email_from: file
                .auth
                .email_from
                .clone()
                .unwrap_or_else(|| "Gatehouse <no-reply@localhost>".into()),
            trusted_proxies: trusted_proxies.clone(),
            rate_limits,
            connection_limits: ConnectionLimits {
                max_headers: server
                    .max_headers
                    .map_or(connection.max_headers, |b| b.0 as usize),
                max_header_bytes: server
                    .max_header_bytes
                    .map_or(connection.max_header_bytes, |b| b.0 as usize),
                header_read_timeout: server
                    .header_read_timeout_secs
                    .map_or(connection.header_read_timeout, |b| Duration::from_secs(b.0)),
                max_connections_per_ip: server
                    .max_connections_per_ip
                    .map_or(connection.max_connections_per_ip, |b| b.0 as usize),
                trusted_proxies,
            },
            max_url_bytes: server.max_url_bytes.map_or(8192, |b| b.0 as usize),
            max_json_depth: server.max_json_depth.map_or(32, |b| b.0 as usize),
            storage: storage_config(&file.storage, storage_policies)?,
            triggers: file
                .tables
                .iter()
                .flat_map(|(table, decl)| {
                    decl.triggers
                        .iter()
                        .map(move |trigger| (table.clone(), trigger.clone()))
                })
                .collect(),
            realtime: file.realtime.limits(),
            realtime_policies,
            full_old_rows: file
                .tables
                .iter()
                .filter(|(_, decl)| decl.replica_identity == ReplicaIdentity::Full)
                .map(|(table, _)| table.clone())
                .collect(),
            cron: cron_schedules(file.cron, &file.functions, &jobs)?,
            hooks: checked_hooks(file.hooks, &file.functions, &jobs)?,
            webhooks,
            functions: file.functions,
            functions_dir: PathBuf::from("functions"),
            jobs,
        })
    }

    /// The base URL clients reach: the configured public URL or the bound address.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
    }
}

fn storage_config(
    section: &StorageSection,
    policies: TablePolicies,
) -> Result<StorageConfig, ConfigError> {
    let invalid = |message: &str| ConfigError::Env {
        variable: "[storage]".into(),
        message: message.into(),
    };
    let s3 = match section.backend.as_deref().unwrap_or("local") {
        "local" => None,
        "s3" => Some(S3Location {
            bucket: section
                .s3_bucket
                .clone()
                .ok_or_else(|| invalid("backend = \"s3\" needs s3_bucket"))?,
            region: section
                .s3_region
                .clone()
                .unwrap_or_else(|| "us-east-1".into()),
            endpoint: section.s3_endpoint.clone(),
        }),
        _ => return Err(invalid("backend is \"local\" or \"s3\"")),
    };
    Ok(StorageConfig {
        s3,
        max_object_bytes: section.max_object_bytes.map_or(50 << 20, |b| b.0),
        upload_timeout: Duration::from_secs(section.upload_timeout_secs.map_or(3600, |b| b.0)),
        orphan_grace: Duration::from_secs(section.orphan_grace_secs.map_or(600, |b| b.0)),
        max_concurrent_uploads: section.max_concurrent_uploads.map_or(16, |b| b.0 as usize),
        policies,
    })
}

/// The auth settings set below Gatehouse's secure defaults, each with what it
/// gives up: said at start, so that one loosened to match an existing app is
/// not forgotten.
pub fn weakened(auth: &AuthSettings) -> Vec<String> {
    let mut warnings = Vec::new();
    if auth.password_min_length < 8 {
        warnings.push(format!(
            "[auth] password_min_length = {}: NIST SP 800-63B asks for at least 8",
            auth.password_min_length
        ));
    }
    if !auth.password_blocklist {
        warnings.push(
            "[auth] password_blocklist = false: the most common passwords are accepted".into(),
        );
    }
    if !auth.secure_password_change {
        warnings.push(
            "[auth] secure_password_change = false: a stolen access token can change the \
             password without the current one"
                .into(),
        );
    }
    warnings
}

fn auth_settings(section: &AuthSection) -> AuthSettings {
    let defaults = AuthSettings::default();
    AuthSettings {
        email_confirmation: section
            .email_confirmation
            .unwrap_or(defaults.email_confirmation),
        anonymous_sign_ins: section
            .anonymous_sign_ins
            .unwrap_or(defaults.anonymous_sign_ins),
        signups: section.signups.unwrap_or(defaults.signups),
        password_min_length: section
            .password_min_length
            .map_or(defaults.password_min_length, |b| b.0 as usize),
        password_blocklist: section
            .password_blocklist
            .unwrap_or(defaults.password_blocklist),
        secure_password_change: section
            .secure_password_change
            .unwrap_or(defaults.secure_password_change),
        access_token_ttl: section
            .access_token_ttl_secs
            .map_or(defaults.access_token_ttl, |b| Duration::from_secs(b.0)),
        personal_data_in_token: section
            .personal_data_in_token
            .unwrap_or(defaults.personal_data_in_token),
        hash: HashParams {
            memory_kib: section
                .argon2_memory_kib
                .map_or(defaults.hash.memory_kib, |b| b.0 as u32),
            iterations: section
                .argon2_iterations
                .map_or(defaults.hash.iterations, |b| b.0 as u32),
            parallelism: defaults.hash.parallelism,
        },
        site_url: section
            .site_url
            .clone()
            .map_or(defaults.site_url.clone(), |url| url.0),
        cookie_sessions: section.cookie_sessions.unwrap_or(defaults.cookie_sessions),
        cookie_idle_timeout: section
            .cookie_idle_timeout_secs
            .map_or(defaults.cookie_idle_timeout, |b| Duration::from_secs(b.0)),
        session_check_ttl: section
            .session_check_secs
            .map_or(defaults.session_check_ttl, |b| Duration::from_secs(b.0)),
        audit_retention: section
            .audit_retention_days
            .map_or(defaults.audit_retention, |b| {
                Duration::from_secs(b.0 * 86_400)
            }),
        redirect_urls: section
            .redirect_urls
            .clone()
            .map_or_else(Vec::new, |urls| urls.into_iter().map(|url| url.0).collect()),
        ..defaults
    }
}

fn read(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The commented starter file `gatehouse init` writes.
pub const STARTER: &str = include_str!("starter.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let path = Path::new("gatehouse.toml");
        let file = parse_file(path, text)?;
        let sources = [Source {
            path: path.to_path_buf(),
            text: text.to_owned(),
        }];
        let schema = schema_of(&sources, &file.tables, &file.storage.policies)?;
        Config::assemble(file, schema, &Overrides::default(), &no_env)
    }

    fn error_of(text: &str) -> String {
        parse(text).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn the_starter_file_is_valid() {
        let config = parse(STARTER).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn realtime_bounds_and_policies_are_read_and_checked() {
        let policy = |using: &str| {
            format!(
                "[realtime]\nmax_channels_per_connection = 5\nsession_check_secs = 2\n\
                 [[realtime.policies]]\nname = \"lobby\"\nfor = \"select\"\nto = \"authenticated\"\nusing = \"{using}\"\n"
            )
        };
        let config = parse(&policy("topic = 'lobby'")).unwrap();
        assert_eq!(config.realtime.channels_per_connection, 5);
        assert_eq!(config.realtime.session_check, Duration::from_secs(2));
        assert_eq!(config.realtime.connections_per_user, 20, "the default");
        assert!(
            config
                .realtime_policies
                .using(
                    gatehouse_policy::Command::Select,
                    gatehouse_policy::Role::Authenticated
                )
                .is_some()
        );
        let unknown = error_of(&policy("room = 'lobby'"));
        assert!(
            unknown.contains("[realtime]") && unknown.contains("unknown column room"),
            "{unknown}"
        );
        let zero = error_of("[realtime]\nmax_channels_per_connection = 0\n");
        assert!(zero.contains("0 is out of range: use 1 to 10000"), "{zero}");
    }

    #[test]
    fn cron_entries_name_what_is_wrong_with_them() {
        let declared = "[functions.cleanup]\nmodule = \"cleanup.js\"\n[jobs.queues]\nslow = { concurrency = 1 }\n";
        let entry = |fields: &str| format!("{declared}[[cron]]\nname = \"nightly\"\n{fields}\n");
        let config = parse(&entry(
            "schedule = \"0 3 * * *\"\ntime_zone = \"Europe/Paris\"\nfunction = \"cleanup\"\nqueue = \"slow\"",
        ))
        .unwrap();
        assert_eq!(config.cron.len(), 1);
        assert_eq!(config.cron[0].queue, "slow");
        assert_eq!(config.jobs.queues["slow"], 1);

        let bad_schedule = error_of(&entry("schedule = \"0 25 * * *\"\nfunction = \"cleanup\""));
        assert!(
            bad_schedule.starts_with("gatehouse.toml:"),
            "{bad_schedule}"
        );
        assert!(bad_schedule.contains("cron nightly"), "{bad_schedule}");
        let bad_zone = error_of(&entry(
            "schedule = \"@daily\"\ntime_zone = \"Paris\"\nfunction = \"cleanup\"",
        ));
        assert!(bad_zone.contains("\"Paris\""), "{bad_zone}");
        let unknown = error_of(&entry("schedule = \"@daily\"\nfunction = \"sweep\""));
        assert!(unknown.contains("no function \"sweep\""), "{unknown}");
        let no_queue = error_of(&entry(
            "schedule = \"@daily\"\nfunction = \"cleanup\"\nqueue = \"fast\"",
        ));
        assert!(no_queue.contains("no queue \"fast\""), "{no_queue}");
        let twice = format!(
            "{}[[cron]]\nname = \"nightly\"\nschedule = \"@hourly\"\nfunction = \"cleanup\"\n",
            entry("schedule = \"@daily\"\nfunction = \"cleanup\"")
        );
        assert!(error_of(&twice).contains("another [[cron]] entry"));
    }

    #[test]
    fn defaults_without_a_file() {
        let config = parse("").unwrap();
        assert_eq!(config.mode, Mode::Development);
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir, PathBuf::from("gatehouse-data"));
        assert_eq!(config.cors, CorsPolicy::Loopback);
        assert_eq!(config.body_limit, 1 << 20);
    }

    #[test]
    fn weakened_auth_settings_are_named() {
        assert!(
            weakened(&parse("").unwrap().auth).is_empty(),
            "secure defaults"
        );
        let config = parse(
            "[auth]\npassword_min_length = 6\npassword_blocklist = false\nsecure_password_change = false\n",
        )
        .unwrap();
        assert_eq!(config.auth.password_min_length, 6);
        assert!(!config.auth.password_blocklist && !config.auth.secure_password_change);
        let warnings = weakened(&config.auth);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("password_min_length = 6"));
        assert!(error_of("[auth]\npassword_min_length = 5\n").contains("gatehouse.toml:2:"));
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        for (text, expected) in [
            ("[server]\nlisten = \"nowhere\"\n", "gatehouse.toml:2:"),
            (
                "[server]\n\nrequest_timeout_secs = 0\n",
                "gatehouse.toml:3:",
            ),
            (
                "[server]\nlistne = \"127.0.0.1:1\"\n",
                "unknown field `listne`",
            ),
            (
                "[server]\ncors_origins = [\"*\"]\n",
                "wildcard origins are refused",
            ),
            (
                "[server]\ncors_origins = [\"https://a.example/\"]\n",
                "without path",
            ),
            ("[server\n", "gatehouse.toml:1:"),
            ("secret_key = \"x\"\n", "GATEHOUSE_SECRET_KEY"),
            (
                "[database]\nurl = \"postgres://u:p@h/db\"\n",
                "GATEHOUSE_DATABASE_URL",
            ),
        ] {
            let message = error_of(text);
            assert!(message.contains(expected), "{text:?} gave {message:?}");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = |name: &str| match name {
            "GATEHOUSE_LISTEN" => Some("127.0.0.1:9999".to_owned()),
            "GATEHOUSE_CORS_ORIGINS" => Some("https://a.example, https://b.example".to_owned()),
            "GATEHOUSE_ENV" => Some("production".to_owned()),
            _ => None,
        };
        let file = parse_file(Path::new("g.toml"), "[server]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        let config =
            Config::assemble(file, Default::default(), &Overrides::default(), &env).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(config.mode, Mode::Production);
        assert_eq!(
            config.cors,
            CorsPolicy::Origins(vec!["https://a.example".into(), "https://b.example".into()])
        );
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        let env =
            |name: &str| (name == "GATEHOUSE_REQUEST_TIMEOUT_SECS").then(|| "soon".to_owned());
        let error = Config::assemble(
            FileConfig::default(),
            Default::default(),
            &Overrides::default(),
            &env,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("GATEHOUSE_REQUEST_TIMEOUT_SECS:"),
            "{error}"
        );
    }

    #[test]
    fn production_admits_no_browser_origin_by_default() {
        let overrides = Overrides {
            production: true,
            ..Overrides::default()
        };
        let config = Config::assemble(
            FileConfig::default(),
            Default::default(),
            &overrides,
            &no_env,
        )
        .unwrap();
        assert_eq!(config.cors, CorsPolicy::Deny);
    }
}
