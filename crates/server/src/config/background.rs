//! The background work's configuration: `[jobs]` (queues and timings),
//! `[[cron]]`, inbound `[hooks.<name>]` and outbound `[[webhooks]]`, each
//! checked against the declared functions, tables and queues.

use std::time::Duration;

use gatehouse_functions::FunctionDecl;
use gatehouse_jobs::changes::{Follower, Watch};
use gatehouse_jobs::cron::Schedule;
use gatehouse_jobs::inbound::Scheme;
use gatehouse_rest::Event;
use gatehouse_schema::Schema;
use gatehouse_schema::declaration::OneOrMany;
use indexmap::IndexMap;
use serde::Deserialize;

use super::{Bounded, ConfigError};

/// `[hooks.<name>]`, checked; its secret is `GATEHOUSE_HOOK_SECRET_<NAME>`.
#[derive(Debug, Clone)]
pub struct HookConfig {
    pub scheme: Scheme,
    /// A declared function with an `event` argument.
    pub function: String,
    pub queue: String,
    /// How far a delivery's signed time may be from ours.
    pub tolerance: Duration,
}

/// `[hooks.<name>]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HookDecl {
    /// `standard` (Standard Webhooks) or `stripe`.
    scheme: Scheme,
    function: String,
    queue: Option<String>,
    /// 300 when absent.
    tolerance_secs: Option<Bounded<1, 3600>>,
}

/// Each hook has a URL-safe name, a declared queue, and a declared function
/// taking the event as its `event` argument.
pub(super) fn checked_hooks(
    hooks: IndexMap<String, HookDecl>,
    functions: &IndexMap<String, FunctionDecl>,
    jobs: &gatehouse_jobs::Settings,
) -> Result<IndexMap<String, HookConfig>, ConfigError> {
    hooks
        .into_iter()
        .map(|(name, hook)| {
            let queue = hook
                .queue
                .unwrap_or_else(|| gatehouse_jobs::DEFAULT_QUEUE.to_owned());
            let problem = if !valid_name(&name) {
                Some("a hook's name is 1 to 63 of a-z, 0-9, _ and -".to_owned())
            } else if !functions
                .get(&hook.function)
                .is_some_and(|function| function.args.contains_key("event"))
            {
                Some(format!(
                    "function {:?} must be declared with an `event` argument (args.event = {{ type = \"jsonb\" }})",
                    hook.function
                ))
            } else if !jobs.queues.contains_key(&queue) {
                Some("its queue is not declared under [jobs.queues]".to_owned())
            } else {
                None
            };
            match problem {
                Some(message) => Err(ConfigError::Env {
                    variable: format!("[hooks.{name}]"),
                    message,
                }),
                None => Ok((
                    name,
                    HookConfig {
                        scheme: hook.scheme,
                        function: hook.function,
                        queue,
                        tolerance: Duration::from_secs(hook.tolerance_secs.map_or(300, |b| b.0)),
                    },
                )),
            }
        })
        .collect()
}

/// `[[cron]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CronDecl {
    name: String,
    /// Five fields (a sixth, leading one for seconds), or `@hourly`-style.
    schedule: String,
    /// An IANA zone the fields are read in; UTC when absent.
    time_zone: Option<String>,
    function: String,
    queue: Option<String>,
}

/// A `[[cron]]` entry whose schedule and zone parsed (an error points at it).
#[derive(Deserialize)]
#[serde(try_from = "CronDecl")]
pub(super) struct CronEntry(Schedule);

impl TryFrom<CronDecl> for CronEntry {
    type Error = String;

    fn try_from(decl: CronDecl) -> Result<Self, String> {
        Schedule::new(
            &decl.name,
            (&decl.schedule, decl.time_zone.as_deref().unwrap_or("UTC")),
            &decl.function,
            decl.queue
                .as_deref()
                .unwrap_or(gatehouse_jobs::DEFAULT_QUEUE),
        )
        .map(Self)
    }
}

/// Each schedule names a declared function and queue, under a name of its own.
pub(super) fn cron_schedules(
    entries: Vec<CronEntry>,
    functions: &IndexMap<String, FunctionDecl>,
    jobs: &gatehouse_jobs::Settings,
) -> Result<Vec<Schedule>, ConfigError> {
    let mut names = std::collections::HashSet::new();
    entries
        .into_iter()
        .map(|CronEntry(schedule)| {
            let problem = if !names.insert(schedule.name.clone()) {
                Some("another [[cron]] entry has this name".to_owned())
            } else if schedule.name.starts_with("gatehouse:") {
                Some("names starting with gatehouse: are Gatehouse's own schedules".to_owned())
            } else if !functions.contains_key(&schedule.function) {
                Some(format!("no function {:?} is declared", schedule.function))
            } else if !jobs.queues.contains_key(&schedule.queue) {
                Some(format!(
                    "no queue {:?} is declared under [jobs.queues]",
                    schedule.queue
                ))
            } else {
                None
            };
            match problem {
                Some(message) => Err(ConfigError::Env {
                    variable: format!("[[cron]] {}", schedule.name),
                    message,
                }),
                None => Ok(schedule),
            }
        })
        .collect()
}

/// `[jobs]`: timings, and `queues.<name> = { concurrency = n }` (per instance).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct JobsSection {
    poll_ms: Option<Bounded<10, 60_000>>,
    lease_secs: Option<Bounded<1, 86_400>>,
    backoff_ms: Option<Bounded<1, 3_600_000>>,
    backoff_cap_secs: Option<Bounded<1, 604_800>>,
    max_attempts: Option<Bounded<1, 100>>,
    /// At least three days: a finished job's key (an inbound event's id)
    /// must outlive a provider's redeliveries (Stripe's last three days).
    keep_finished_hours: Option<Bounded<72, 87_600>>,
    #[serde(default)]
    queues: IndexMap<String, QueueDecl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueDecl {
    concurrency: Bounded<1, 256>,
}

impl JobsSection {
    /// The settings, the declared queues added; names starting `gatehouse`
    /// are Gatehouse's own queues (its upkeep, its email) and refused.
    pub(super) fn settings(&self) -> Result<gatehouse_jobs::Settings, ConfigError> {
        let defaults = gatehouse_jobs::Settings::default();
        let mut queues = defaults.queues.clone();
        for (name, queue) in &self.queues {
            if name.starts_with("gatehouse") {
                return Err(ConfigError::Env {
                    variable: format!("[jobs.queues] {name}"),
                    message: "queue names starting with gatehouse are Gatehouse's own".into(),
                });
            }
            queues.insert(name.clone(), queue.concurrency.0 as usize);
        }
        Ok(gatehouse_jobs::Settings {
            queues,
            poll: self
                .poll_ms
                .map_or(defaults.poll, |b| Duration::from_millis(b.0)),
            lease: self
                .lease_secs
                .map_or(defaults.lease, |b| Duration::from_secs(b.0)),
            backoff: self
                .backoff_ms
                .map_or(defaults.backoff, |b| Duration::from_millis(b.0)),
            backoff_cap: self
                .backoff_cap_secs
                .map_or(defaults.backoff_cap, |b| Duration::from_secs(b.0)),
            max_attempts: self
                .max_attempts
                .map_or(defaults.max_attempts, |b| b.0 as u32),
            keep_finished: self
                .keep_finished_hours
                .map_or(defaults.keep_finished, |b| Duration::from_secs(b.0 * 3600)),
        })
    }
}

/// `[[webhooks]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhookDecl {
    name: String,
    table: String,
    /// `insert`, `update` or `delete`; one or a list.
    events: OneOrMany,
    url: String,
    /// The columns the records carry; all of them when absent.
    columns: Option<Vec<String>>,
    queue: Option<String>,
    /// Let deliveries reach loopback and private addresses (a receiver on
    /// this host or network, named on purpose).
    #[serde(default)]
    allow_private_addresses: bool,
}

/// `[[webhooks]]`, checked; its secret is `GATEHOUSE_WEBHOOK_SECRET_<NAME>`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    pub allow_private_addresses: bool,
    /// The table's events it follows, and the columns it sends.
    pub watch: Watch,
}

/// A name for a hook or webhook: it is part of a URL or a variable's name.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Each webhook has a name of its own, a declared table, its events, columns
/// of that table, an http(s) URL and a declared queue.
pub(super) fn checked_webhooks(
    decls: Vec<WebhookDecl>,
    schema: &Schema,
    jobs: &gatehouse_jobs::Settings,
) -> Result<Vec<WebhookConfig>, ConfigError> {
    let mut names = std::collections::HashSet::new();
    decls
        .into_iter()
        .map(|decl| {
            let invalid = |message: String| ConfigError::Env {
                variable: format!("[[webhooks]] {}", decl.name),
                message,
            };
            if !valid_name(&decl.name) {
                return Err(invalid(
                    "a webhook's name is 1 to 63 of a-z, 0-9, _ and -".into(),
                ));
            }
            if !names.insert(decl.name.clone()) {
                return Err(invalid("another [[webhooks]] entry has this name".into()));
            }
            let table = schema
                .table(&decl.table)
                .ok_or_else(|| invalid(format!("no table {:?} is declared", decl.table)))?;
            let events = decl
                .events
                .items()
                .into_iter()
                .map(|event| {
                    Event::declared(event).ok_or_else(|| {
                        invalid(format!("event {event:?}: insert, update or delete"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(unknown) = decl
                .columns
                .iter()
                .flatten()
                .find(|column| table.column(column).is_none())
            {
                return Err(invalid(format!("{} has no column {unknown:?}", decl.table)));
            }
            let url = url::Url::parse(&decl.url)
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
                .ok_or_else(|| invalid(format!("{:?} is not an http or https URL", decl.url)))?;
            let queue = decl
                .queue
                .unwrap_or_else(|| gatehouse_jobs::DEFAULT_QUEUE.to_owned());
            if !jobs.queues.contains_key(&queue) {
                return Err(invalid(format!(
                    "no queue {queue:?} is declared under [jobs.queues]"
                )));
            }
            Ok(WebhookConfig {
                watch: Watch {
                    table: decl.table,
                    events,
                    follower: Follower::Webhook {
                        name: decl.name.clone(),
                        columns: decl.columns,
                    },
                    queue,
                },
                name: decl.name,
                url: url.into(),
                allow_private_addresses: decl.allow_private_addresses,
            })
        })
        .collect()
}
