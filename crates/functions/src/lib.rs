//! The app's own logic: functions declared in gatehouse.toml as JavaScript
//! modules, called with typed, validated arguments by the roles allowed to,
//! inside the sandbox (`sandbox.rs`). The edge adapts routes to [`Functions::call`].
//!
//! ```toml
//! [functions.add]
//! module = "add.js"                 # under functions/ beside gatehouse.toml
//! roles = ["authenticated"]         # who may call it; nobody when absent
//! args.a = { type = "integer", not_null = true }
//! args.b = { type = "integer", check = { min = 0 } }
//! ```
//!
//! Invariants: deny by default (no role listed, no call); the arguments are
//! checked against their declaration before any code runs; the caller the code
//! sees is the verified one.

mod data;
mod fetch;
mod jobs;
mod rows;
mod sandbox;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gatehouse_db::Transaction;
use gatehouse_policy::Role;
use gatehouse_rest::{BeforeWrite, Caller, Event, Pending, RestError, RowChange};
use gatehouse_schema::declaration::{ColumnDecl, TriggerDecl};
use gatehouse_schema::{Check, Column, ColumnType, Literal};
use indexmap::IndexMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

pub use data::Data;
pub use rows::{ShapeError, Shaped, asks_anything, shape};
use sandbox::Sandbox;
use sandbox::{CallContext, Inline};
pub use sandbox::{Failure, Limits};

/// `[functions.<name>]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionDecl {
    /// The module file, relative to the `functions/` folder.
    pub module: PathBuf,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub args: IndexMap<String, ColumnDecl>,
    /// `volatile` (the default) or `stable` (may also be called with GET).
    pub volatility: Option<String>,
    pub memory_mb: Option<u32>,
    pub time_ms: Option<u32>,
    /// How long the call's transaction may stay open from its first write to
    /// its commit (on SQLite every other write waits that long at most).
    pub write_ms: Option<u32>,
    /// How long a client's call waits for a turn among the calls running at
    /// once before it is refused as busy (jobs and triggers wait theirs).
    pub wait_ms: Option<u32>,
    /// `invoker` (the default: `ctx.db` acts as the caller) or `definer` (the
    /// function also gets `ctx.admin.db`, with the secret key's rights).
    pub security: Option<String>,
    /// Whose rights the function's jobs run with: `secret` (the default, the
    /// server's own work) or `enqueuer` (the verified caller whose
    /// `ctx.jobs.enqueue` queued the job: their role and user id; jobs queued
    /// by cron, hooks or triggers then run as anon).
    pub job_rights: Option<String>,
    /// Hosts `ctx.fetch` may reach (`host` or `host:port`); none when absent.
    #[serde(default)]
    pub fetch: Vec<String>,
    /// Let `ctx.fetch` reach loopback and private addresses (for a service on
    /// the same network); refused by default, after DNS resolution.
    #[serde(default)]
    pub fetch_private_addresses: bool,
    /// Secrets `ctx.secrets.get(name)` may read (set by the operator as
    /// `GATEHOUSE_FUNCTION_SECRET_<NAME>`).
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// Why functions could not be loaded, named for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("function {name}: {message}")]
    Declaration { name: String, message: String },
    #[error("function {name}: cannot read {path}: {error}")]
    Unreadable {
        name: String,
        path: String,
        error: std::io::Error,
    },
    #[error("function {name}: {message}")]
    Compile { name: String, message: String },
}

/// Why a call gave no result, for the edge to map.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("Could not find the function {0}")]
    Unknown(String),
    #[error("permission denied for function {0}")]
    Denied(String),
    #[error("argument {argument}: {message}")]
    Argument { argument: String, message: String },
    #[error("the arguments are a JSON object of named values")]
    NotAnObject,
    #[error("function {0} is volatile: call it with POST (only stable functions take GET)")]
    NotStable(String),
    #[error("{0}")]
    Failed(Failure),
    #[error("the function held its writes open past their limit; they were rolled back")]
    WriteExpired,
    #[error("the function's writes could not be committed: {0}")]
    Commit(gatehouse_db::DbError),
}

#[derive(Clone)]
struct Declared {
    /// Where the module is read from, and under which name it compiles.
    path: PathBuf,
    file: String,
    source: Arc<str>,
    roles: Vec<Role>,
    args: Vec<Column>,
    /// Each argument's `pattern` check, compiled once (the declaration's
    /// validation already proved it compiles).
    patterns: HashMap<String, regex::Regex>,
    stable: bool,
    limits: Limits,
    write_limit: Duration,
    /// How long a client's call waits for a turn.
    turn_wait: Duration,
    definer: bool,
    /// Whether its calls are first tried on the request's own thread: true
    /// until one reaches for a door of `ctx` or outgrows the budget.
    inline: Arc<AtomicBool>,
    /// Its jobs run as whoever queued them (`job_rights = "enqueuer"`).
    jobs_as_enqueuer: bool,
    outbound: fetch::Outbound,
    secrets: Arc<HashMap<String, SecretString>>,
}

/// The declared functions, loaded and compiled once.
pub struct Functions {
    /// Replaced one function at a time when its module changes (development).
    declared: std::sync::RwLock<HashMap<String, Arc<Declared>>>,
    sandbox: Arc<Sandbox>,
    data: Data,
    /// Calls running at once: each holds an engine and up to its memory limit.
    running: tokio::sync::Semaphore,
    /// The last module text that failed to compile, per function, so a broken
    /// file is reported once rather than at every look.
    failed: std::sync::Mutex<HashMap<String, String>>,
    triggers: Triggers,
    /// The after triggers, which run as jobs once a write commits.
    after: Vec<gatehouse_jobs::changes::Watch>,
    /// `ctx.jobs`, once the server has a job queue for the functions.
    jobs: Option<Arc<jobs::Queueing>>,
}

/// How long a call's transaction may hold its writes open, by default.
pub const DEFAULT_WRITE_LIMIT: Duration = Duration::from_millis(250);
/// How long a client's call waits for a turn, by default.
pub const DEFAULT_TURN_WAIT: Duration = Duration::from_secs(5);

/// How long a call is tried on the request's own thread (a worker of the
/// async runtime) before it is made again on a thread of its own.
const INLINE_BUDGET: Duration = Duration::from_micros(500);

/// Calls running at once, by default; more wait their turn (within the
/// request's time limit).
pub const MAX_RUNNING: usize = 8;

impl Functions {
    /// Reads each function's module from `folder` and compiles it: a syntax
    /// error stops the load, naming the file, line and column.
    pub fn load(
        (decls, triggers): (&IndexMap<String, FunctionDecl>, &[(String, TriggerDecl)]),
        folder: &Path,
        data: Data,
        secrets: &HashMap<String, SecretString>,
    ) -> Result<Self, LoadError> {
        let sandbox = Arc::new(Sandbox::default());
        let mut declared = HashMap::new();
        for (name, decl) in decls {
            let invalid = |message: String| LoadError::Declaration {
                name: name.clone(),
                message,
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(invalid("a function name is letters, digits and _".into()));
            }
            let roles = decl
                .roles
                .iter()
                .map(|role| match role.as_str() {
                    "anon" => Ok(Role::Anon),
                    "authenticated" => Ok(Role::Authenticated),
                    other => Err(invalid(format!(
                        "unknown role {other:?}: anon or authenticated"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let args = decl
                .args
                .iter()
                .map(|(arg, column)| {
                    Column::declared(name, arg, column).map_err(|e| invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let patterns = args
                .iter()
                .flat_map(|column| {
                    column.checks.iter().filter_map(move |check| match check {
                        Check::Pattern(pattern) => regex::Regex::new(pattern)
                            .ok()
                            .map(|regex| (column.name.as_str().to_owned(), regex)),
                        _ => None,
                    })
                })
                .collect();
            let stable = match decl.volatility.as_deref() {
                None | Some("volatile") => false,
                Some("stable") => true,
                Some(other) => {
                    return Err(invalid(format!("volatility {other:?}: volatile or stable")));
                }
            };
            if decl.module.is_absolute()
                || decl
                    .module
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(invalid(
                    "the module is a path inside the functions folder".into(),
                ));
            }
            let path = folder.join(&decl.module);
            let source = std::fs::read_to_string(&path).map_err(|error| LoadError::Unreadable {
                name: name.clone(),
                path: path.display().to_string(),
                error,
            })?;
            let file = decl.module.display().to_string();
            sandbox
                .check(&file, &source)
                .map_err(|failure| LoadError::Compile {
                    name: name.clone(),
                    message: failure.to_string(),
                })?;
            let definer = match decl.security.as_deref() {
                None | Some("invoker") => false,
                Some("definer") => true,
                Some(other) => {
                    return Err(invalid(format!("security {other:?}: invoker or definer")));
                }
            };
            if definer {
                tracing::warn!(function = %name, "function {name} is security = \"definer\": its ctx.admin.db bypasses every row policy");
            }
            let jobs_as_enqueuer = match decl.job_rights.as_deref() {
                None | Some("secret") => false,
                Some("enqueuer") => true,
                Some(other) => {
                    return Err(invalid(format!("job_rights {other:?}: secret or enqueuer")));
                }
            };
            let defaults = Limits::default();
            let limits = Limits {
                memory_bytes: decl.memory_mb.map_or(defaults.memory_bytes, |mb| {
                    (mb.clamp(1, 1024) as usize) << 20
                }),
                time: decl.time_ms.map_or(defaults.time, |ms| {
                    Duration::from_millis(u64::from(ms.clamp(1, 60_000)))
                }),
            };
            declared.insert(
                name.clone(),
                Arc::new(Declared {
                    path,
                    file,
                    source: source.into(),
                    roles,
                    args,
                    patterns,
                    stable,
                    limits,
                    write_limit: decl.write_ms.map_or(DEFAULT_WRITE_LIMIT, |ms| {
                        Duration::from_millis(u64::from(ms.clamp(1, 5_000)))
                    }),
                    turn_wait: decl.wait_ms.map_or(DEFAULT_TURN_WAIT, |ms| {
                        Duration::from_millis(u64::from(ms.clamp(1, 30_000)))
                    }),
                    definer,
                    inline: Arc::new(AtomicBool::new(true)),
                    jobs_as_enqueuer,
                    outbound: fetch::Outbound::new(&decl.fetch, decl.fetch_private_addresses),
                    secrets: Arc::new(
                        decl.secrets
                            .iter()
                            .filter_map(|name| {
                                secrets.get(name).map(|value| (name.clone(), value.clone()))
                            })
                            .collect(),
                    ),
                }),
            );
        }
        let (triggers, after) = checked_triggers(triggers, &declared)?;
        Ok(Self {
            triggers,
            after,
            declared: std::sync::RwLock::new(declared),
            sandbox,
            data,
            running: tokio::sync::Semaphore::new(MAX_RUNNING),
            failed: std::sync::Mutex::new(HashMap::new()),
            jobs: None,
        })
    }

    /// The after triggers: what follows the tables' changes once they commit.
    pub fn after_triggers(&self) -> &[gatehouse_jobs::changes::Watch] {
        &self.after
    }

    /// Gives the functions `ctx.jobs` over the queues of `settings`; `wake`
    /// tells this instance's workers that a call committed new jobs.
    pub fn with_jobs(
        mut self,
        settings: gatehouse_jobs::Settings,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        let handlers = self
            .declared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.jobs = Some(Arc::new(jobs::Queueing {
            settings,
            handlers,
            wake,
        }));
        self
    }

    fn function(&self, name: &str) -> Result<Arc<Declared>, CallError> {
        let declared = self.declared.read().unwrap_or_else(|e| e.into_inner());
        declared
            .get(name)
            .cloned()
            .ok_or_else(|| CallError::Unknown(name.to_owned()))
    }

    /// Reads every module again and swaps in each one that changed and
    /// compiles (development's reload). One that does not compile keeps its
    /// previous version serving; the messages say which and where.
    pub fn reload_modules(&self) -> Vec<Result<String, String>> {
        let current: Vec<(String, Arc<Declared>)> = {
            let declared = self.declared.read().unwrap_or_else(|e| e.into_inner());
            declared
                .iter()
                .map(|(name, f)| (name.clone(), f.clone()))
                .collect()
        };
        let mut outcomes = Vec::new();
        for (name, function) in current {
            let Ok(source) = std::fs::read_to_string(&function.path) else {
                outcomes.push(Err(format!(
                    "function {name}: cannot read {}",
                    function.path.display()
                )));
                continue;
            };
            if *source == *function.source {
                continue;
            }
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            if failed.get(&name) == Some(&source) {
                continue;
            }
            if let Err(failure) = self.sandbox.check(&function.file, &source) {
                outcomes.push(Err(format!("function {name}: {failure}")));
                failed.insert(name, source);
                continue;
            }
            failed.remove(&name);
            drop(failed);
            let changed = Declared {
                source: source.into(),
                inline: Arc::new(AtomicBool::new(true)),
                ..(*function).clone()
            };
            let mut declared = self.declared.write().unwrap_or_else(|e| e.into_inner());
            declared.insert(name.clone(), Arc::new(changed));
            outcomes.push(Ok(name));
        }
        outcomes
    }

    /// The arguments of a call made with GET (`?a=1&b=x`), typed as declared,
    /// and the other pairs, which apply to the rows it returns (as PostgREST
    /// reads a GET): only a `stable` function may be called so.
    pub fn query_args(
        &self,
        name: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<(Json, Vec<(String, String)>), CallError> {
        let function = self.function(name)?;
        if !function.stable {
            return Err(CallError::NotStable(name.to_owned()));
        }
        let mut args = Map::new();
        let mut rest = Vec::new();
        for (key, text) in pairs {
            let Some(column) = function
                .args
                .iter()
                .find(|column| column.name.as_str() == key)
            else {
                rest.push((key, text));
                continue;
            };
            let refuse = |message: String| CallError::Argument {
                argument: key.clone(),
                message,
            };
            let value = gatehouse_rest::text_to_json(column.ty, &text).map_err(refuse)?;
            if args.contains_key(&key) {
                return Err(refuse("is given more than once".into()));
            }
            args.insert(key, value);
        }
        Ok((Json::Object(args), rest))
    }

    /// Calls `name` as `caller` with `args` (a JSON object of named values),
    /// on a blocking thread (the engine runs synchronously, under its limits).
    /// `request`, when given, is what the code sees as `ctx.request` (an
    /// invocation through `/functions/v1`: method, query and body).
    pub async fn call(
        &self,
        caller: &Caller,
        (name, request_id): (&str, &str),
        args: Json,
        request: Option<Json>,
    ) -> Result<Json, CallError> {
        let allowed = match caller.role() {
            Ok(None) => true,
            Ok(Some(role)) => self.function(name)?.roles.contains(&role),
            Err(_) => false,
        };
        if !allowed {
            return Err(CallError::Denied(name.to_owned()));
        }
        let mut context = CallContext::default().with("user", &user(caller));
        if let Some(request) = request {
            context = context.with("request", &request);
        }
        let wait = self.function(name)?.turn_wait;
        self.invoke(caller, (name, request_id), args, (context, Some(wait)))
            .await
    }

    /// A call with `context` as the code's `ctx` (before its doors are added),
    /// past the roles check: a client's call passed `call`'s, and a job's
    /// function was checked to be declared when the job was queued.
    async fn invoke(
        &self,
        caller: &Caller,
        (name, request_id): (&str, &str),
        args: Json,
        (context, wait): (CallContext, Option<Duration>),
    ) -> Result<Json, CallError> {
        let function = self.function(name)?;
        let args = checked(&function, args)?;
        // Every query of the call runs in one transaction, committed when the
        // function returns and rolled back when it throws.
        let transaction = self.data.db.begin(function.write_limit);
        let ran = self
            .run(
                (name, &function),
                caller,
                request_id,
                (args, context),
                (&transaction, wait),
            )
            .await;
        match ran {
            // Jobs the call enqueued wake the workers on the commit
            // (`Transaction::on_commit`).
            Ok(value) => match transaction.commit().await {
                Ok(()) => Ok(value),
                Err(gatehouse_db::DbError::TransactionExpired) => Err(CallError::WriteExpired),
                Err(error) => Err(CallError::Commit(error)),
            },
            Err(failure) => {
                transaction.rollback().await;
                Err(CallError::Failed(failure))
            }
        }
    }

    /// Runs one function in the sandbox, its `ctx.db` inside `transaction`,
    /// on a blocking thread, once it has a turn (waiting at most `wait`,
    /// when given). A function whose calls have so far needed none of `ctx`'s
    /// doors is first tried right here (`Sandbox::call_inline`). A call made
    /// from inside another (a trigger of a write the code made) runs without
    /// waiting for a turn, which the outer call already holds, and only so deep.
    async fn run(
        &self,
        (name, function): (&str, &Declared),
        caller: &Caller,
        request_id: &str,
        (args, context): (Json, CallContext),
        (transaction, wait): (&Transaction, Option<Duration>),
    ) -> Result<Json, Failure> {
        let depth = DEPTH.get();
        if depth >= MAX_DEPTH {
            return Err(Failure::Thrown(format!(
                "triggers nested more than {MAX_DEPTH} deep"
            )));
        }
        if depth == 0 && function.inline.load(Ordering::Relaxed) {
            let module = (function.file.as_str(), &*function.source);
            match self.sandbox.call_inline(
                module,
                &args,
                &context,
                (function.limits, INLINE_BUDGET),
            ) {
                Inline::Answered(outcome) => return outcome,
                Inline::Outgrown => function.inline.store(false, Ordering::Relaxed),
                Inline::NoIdleRealm => {}
            }
        }
        let sandbox = self.sandbox.clone();
        let (file, source, limits) = (
            function.file.clone(),
            function.source.clone(),
            function.limits,
        );
        let runtime = tokio::runtime::Handle::current();
        let door = |caller: Caller| -> sandbox::Reader {
            let (data, runtime, transaction) =
                (self.data.clone(), runtime.clone(), transaction.clone());
            let request_id = request_id.to_owned();
            Arc::new(move |query| data.run(&runtime, (&transaction, &caller), &query, &request_id))
        };
        let (outbound, fetching) = (function.outbound.clone(), runtime.clone());
        let doors = sandbox::Doors {
            db: door(caller.clone()),
            admin_db: function.definer.then(|| door(self.data.service.clone())),
            log: log_lines(name, request_id),
            fetch: Arc::new(move |request| outbound.fetch(&fetching, &request)),
            secret: {
                let secrets = function.secrets.clone();
                Arc::new(move |name| {
                    secrets
                        .get(&name)
                        .map(|value| value.expose_secret().to_owned())
                })
            },
            jobs: match &self.jobs {
                Some(jobs) => jobs.door(runtime.clone(), (transaction.clone(), caller)),
                None => {
                    Arc::new(|_| json!({ "error": "this server runs no job queue" }).to_string())
                }
            },
        };
        let _turn = if depth == 0 {
            let turn = match wait {
                Some(wait) => tokio::time::timeout(wait, self.running.acquire())
                    .await
                    .map_err(|_| Failure::Busy)?,
                None => self.running.acquire().await,
            };
            Some(turn.map_err(|_| Failure::Thrown("the server is stopping".into()))?)
        } else {
            None
        };
        tokio::task::spawn_blocking(move || {
            let _depth = Depth::enter(depth + 1);
            sandbox.call((&file, &source), &args, &context, (limits, Some(doors)))
        })
        .await
        .unwrap_or_else(|_| Err(Failure::Thrown("the function's thread failed".into())))
    }

    fn triggers_for(&self, table: &str, event: Event) -> &[String] {
        self.triggers
            .get(table)
            .and_then(|events| events.iter().find(|(on, _)| *on == event))
            .map_or(&[], |(_, functions)| functions.as_slice())
    }
}

thread_local! {
    /// How deep in calls the current thread is: a function's thread is one
    /// deeper than the code that called it (see [`Functions::run`]).
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Marks the current (blocking) thread as running a call at some depth, and
/// clears the mark when the call ends, even by a panic: the thread goes back
/// to the pool for unrelated work.
struct Depth;

impl Depth {
    fn enter(depth: u32) -> Self {
        DEPTH.set(depth);
        Depth
    }
}

impl Drop for Depth {
    fn drop(&mut self) {
        DEPTH.set(0);
    }
}

/// Calls inside calls (triggers of triggers) at most.
const MAX_DEPTH: u32 = 4;

impl BeforeWrite for Functions {
    fn applies(&self, table: &str, event: Event) -> bool {
        !self.triggers_for(table, event).is_empty()
    }

    fn write_limit(&self) -> Duration {
        DEFAULT_WRITE_LIMIT
    }

    /// Each of the table's triggers for the event, in declaration order, each
    /// seeing the row the one before left. A trigger returns the row to write
    /// (or nothing, to keep it) and throws to refuse the write.
    fn before<'a>(
        &'a self,
        transaction: &'a Transaction,
        caller: &'a Caller,
        change: RowChange<'a>,
    ) -> Pending<'a> {
        Box::pin(async move {
            let mut new = change.new;
            let mut replaced = false;
            for name in self.triggers_for(change.table, change.event) {
                let function = self
                    .function(name)
                    .map_err(|error| RestError::TriggerFailed(error.to_string()))?;
                let context = CallContext::default().with("user", &user(caller)).with(
                    "trigger",
                    &json!({
                        "table": change.table,
                        "event": change.event.name(),
                        "when": "BEFORE",
                        "new": new,
                        "old": change.old,
                    }),
                );
                let ran = self
                    .run(
                        (name, &function),
                        caller,
                        "",
                        (json!({}), context),
                        (transaction, None),
                    )
                    .await;
                match ran {
                    Ok(Json::Object(row)) if change.event != Event::Delete => {
                        new = Some(row);
                        replaced = true;
                    }
                    Ok(_) => {}
                    Err(Failure::Thrown(message)) => return Err(RestError::Raised(message)),
                    Err(other) => {
                        return Err(RestError::TriggerFailed(format!("{name}: {other}")));
                    }
                }
            }
            Ok(new.filter(|_| replaced))
        })
    }
}

/// Per table, per event, the functions its before triggers run, in order.
type Triggers = HashMap<String, Vec<(Event, Vec<String>)>>;

/// The before triggers by table and event, and the after triggers as what
/// follows a table's changes; each names a declared function that takes no
/// arguments.
fn checked_triggers(
    decls: &[(String, TriggerDecl)],
    declared: &HashMap<String, Arc<Declared>>,
) -> Result<(Triggers, Vec<gatehouse_jobs::changes::Watch>), LoadError> {
    let mut triggers = Triggers::new();
    let mut after = Vec::new();
    for (table, decl) in decls {
        let invalid = |message: String| LoadError::Declaration {
            name: decl.function.clone(),
            message: format!("trigger on {table}: {message}"),
        };
        let before = match decl.when.as_str() {
            "before" => true,
            "after" => false,
            other => return Err(invalid(format!("when {other:?}: before or after"))),
        };
        let function = declared
            .get(&decl.function)
            .ok_or_else(|| invalid("no function of that name is declared".into()))?;
        if !function.args.is_empty() {
            return Err(invalid(
                "a trigger's function takes no arguments (it reads ctx.trigger)".into(),
            ));
        }
        let events = decl
            .events
            .items()
            .into_iter()
            .map(|event| {
                Event::declared(event)
                    .ok_or_else(|| invalid(format!("event {event:?}: insert, update or delete")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !before {
            after.push(gatehouse_jobs::changes::Watch {
                table: table.clone(),
                events,
                follower: gatehouse_jobs::changes::Follower::Trigger {
                    function: decl.function.clone(),
                },
                queue: gatehouse_jobs::DEFAULT_QUEUE.to_owned(),
            });
            continue;
        }
        for event in events {
            let events = triggers.entry(table.clone()).or_default();
            match events.iter_mut().find(|(on, _)| *on == event) {
                Some((_, functions)) => functions.push(decl.function.clone()),
                None => events.push((event, vec![decl.function.clone()])),
            }
        }
    }
    Ok((triggers, after))
}

/// Lines one call may log, and the bytes of a line's message and fields.
const MAX_LOG_LINES: usize = 100;
const MAX_LOG_BYTES: usize = 4 << 10;

/// `ctx.log`: lines into Gatehouse's log under `gatehouse::function`, with the
/// function's name and the request id, bounded in count and size.
fn log_lines(name: &str, request_id: &str) -> sandbox::Logger {
    let (name, request_id) = (name.to_owned(), request_id.to_owned());
    let written = std::sync::atomic::AtomicUsize::new(0);
    Arc::new(move |level, message, fields| {
        let count = written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if count >= MAX_LOG_LINES {
            if count == MAX_LOG_LINES {
                tracing::warn!(target: "gatehouse::function", function = %name, request_id = %request_id, "the function logged more than {MAX_LOG_LINES} lines; the rest are dropped");
            }
            return;
        }
        let cut = |text: String| match text.char_indices().nth(MAX_LOG_BYTES) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text,
        };
        let (message, fields) = (cut(message), cut(fields));
        match level.as_str() {
            "error" => {
                tracing::error!(target: "gatehouse::function", function = %name, request_id = %request_id, fields = %fields, "{message}")
            }
            "warn" => {
                tracing::warn!(target: "gatehouse::function", function = %name, request_id = %request_id, fields = %fields, "{message}")
            }
            _ => {
                tracing::info!(target: "gatehouse::function", function = %name, request_id = %request_id, fields = %fields, "{message}")
            }
        }
    })
}

/// `ctx.user`: the verified caller, or null for an anonymous one.
fn user(caller: &Caller) -> Option<User<'_>> {
    (!caller.is_anon()).then(|| User {
        id: caller.user_id(),
        role: caller.role_name(),
        claims: caller.claims(),
    })
}

/// `ctx.user`, borrowed from the caller (serialised once, into the context).
#[derive(serde::Serialize)]
struct User<'a> {
    id: Option<&'a str>,
    role: &'a str,
    claims: Option<&'a Map<String, Json>>,
}

/// A declared default as the JSON the argument takes (jsonb and array
/// defaults are written as JSON text; decimals as written).
fn literal(column: &Column, default: &Literal) -> Json {
    match default {
        Literal::Bool(flag) => Json::Bool(*flag),
        Literal::Integer(number) => json!(number),
        Literal::Number(text) => serde_json::from_str(text).unwrap_or(Json::String(text.clone())),
        Literal::Text(text) => match column.ty {
            ColumnType::Jsonb | ColumnType::Array(_) => {
                serde_json::from_str(text).unwrap_or(Json::String(text.clone()))
            }
            _ => Json::String(text.clone()),
        },
    }
}

/// The arguments as declared: each value checked like a column's, missing
/// ones their declared default or null (refused where `not_null`), unknown
/// ones refused.
fn checked(function: &Declared, args: Json) -> Result<Json, CallError> {
    let mut given = match args {
        Json::Object(map) => map,
        Json::Null => Map::new(),
        _ => return Err(CallError::NotAnObject),
    };
    let mut out = Map::new();
    for column in &function.args {
        let name = column.name.as_str();
        let value = given
            .remove(name)
            .or_else(|| {
                column
                    .default
                    .as_ref()
                    .map(|default| literal(column, default))
            })
            .unwrap_or(Json::Null);
        let refuse = |message: String| CallError::Argument {
            argument: name.to_owned(),
            message,
        };
        if value.is_null() {
            if column.not_null {
                return Err(refuse("is required".into()));
            }
        } else {
            let regex = function.patterns.get(name);
            let patterns = |_: &str| {
                value
                    .as_str()
                    .is_some_and(|text| regex.is_some_and(|re| re.is_match(text)))
            };
            gatehouse_rest::checked_value(column, &value, &patterns).map_err(refuse)?;
        }
        out.insert(name.to_owned(), value);
    }
    if let Some(unknown) = given.keys().next() {
        return Err(CallError::Argument {
            argument: unknown.clone(),
            message: "is not an argument of this function".into(),
        });
    }
    Ok(Json::Object(out))
}
