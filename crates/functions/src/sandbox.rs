//! The sandbox: QuickJS (through rquickjs) with a memory limit, a time limit
//! enforced by the engine's interrupt hook, and a fresh context for every
//! call, so nothing one call leaves in the global scope reaches the next.
//! QuickJS alone has no filesystem, environment, network or timers (those live
//! in its `std`/`os` modules, which are never loaded), and no module loader is
//! installed, so `import` reaches nothing: the only door out is the context
//! object the caller hands in.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rquickjs::context::intrinsic;
use rquickjs::{CatchResultExt, CaughtError, Context, Function, Module, Promise, Runtime, Value};
use serde_json::Value as Json;

/// Bounds of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The engine's heap for the call.
    pub memory_bytes: usize,
    /// Running time: the code runs on one thread from start to end, so this
    /// bounds its CPU time too.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 32 << 20,
            time: Duration::from_secs(2),
        }
    }
}

/// Why a call gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The code threw (or its promise rejected): the message is the code's own.
    #[error("{0}")]
    Thrown(String),
    #[error("the function ran past its time limit")]
    TimedOut,
    /// No turn came within the call's wait: as many calls run as may.
    #[error("the server runs as many functions as it may")]
    Busy,
    #[error("the function ran out of memory")]
    OutOfMemory,
    /// The module does not compile, or has no default export function.
    #[error("{0}")]
    Invalid(String),
}

/// The language's built-ins a function gets: everything QuickJS has but
/// `performance` (a fine clock is a timing side channel, and no timer is
/// promised beyond the call) and `DOMException`.
type Intrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::Proxy,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
    intrinsic::WeakRef,
);

/// Engines ready for the next call; one is made when none is idle.
pub struct Sandbox {
    idle: Mutex<Vec<Runtime>>,
}

/// Idle engines kept; more are dropped after their call.
const MAX_IDLE: usize = 8;
/// The native stack the engine may use (deep recursion is an error, not a crash).
const STACK_BYTES: usize = 256 << 10;

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
        }
    }
}

impl Sandbox {
    /// Whether `source` compiles as a module with a default export, or where it does not.
    pub fn check(&self, name: &str, source: &str) -> Result<(), Failure> {
        self.with_context(Limits::default(), |ctx| {
            default_export(&ctx, name, source).map(|_| ())
        })
    }

    /// Calls the module's default export with `args` and `context` (both JSON,
    /// the context given `db` and `log` when there are `doors` for them) and
    /// gives back what it returned (awaited), as JSON.
    pub fn call(
        &self,
        (name, source): (&str, &str),
        args: &Json,
        context: &Json,
        (limits, doors): (Limits, Option<Doors>),
    ) -> Result<Json, Failure> {
        self.with_context(limits, |ctx| {
            let function = default_export(&ctx, name, source)?;
            let json = |value: &Json| {
                ctx.json_parse(value.to_string())
                    .catch(&ctx)
                    .map_err(|e| failure(e))
            };
            let (args, context) = (json(args)?, json(context)?);
            if let Some(doors) = doors {
                install(&ctx, &context, doors)?;
            }
            let returned: Value = function
                .call((args, context))
                .catch(&ctx)
                .map_err(|e| failure(e))?;
            let value = match returned.as_promise() {
                Some(promise) => settle(&ctx, promise.clone())?,
                None => returned,
            };
            to_json(&ctx, value)
        })
    }

    /// Runs `work` in a fresh context of a pooled engine under `limits`.
    fn with_context<T>(
        &self,
        limits: Limits,
        work: impl for<'js> FnOnce(rquickjs::Ctx<'js>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let runtime = self.take()?;
        runtime.set_memory_limit(limits.memory_bytes);
        let deadline = Instant::now() + limits.time;
        runtime.set_interrupt_handler(Some(Box::new(move || Instant::now() >= deadline)));
        let outcome = match Context::custom::<Intrinsics>(&runtime) {
            Ok(context) => {
                let outcome = context.with(work);
                drop(context);
                outcome
            }
            Err(_) => Err(Failure::OutOfMemory),
        };
        runtime.set_interrupt_handler(None);
        // An engine stopped at a limit may be left inconsistent (after an
        // interrupt, QuickJS has been seen throwing null for the next call's
        // out-of-memory): it is dropped, not pooled.
        // QuickJS frees by reference count as the context goes and collects
        // cycles on its own schedule; a collection per call would cost more than
        // the call.
        // Work the code queued and left behind (a promise callback after its
        // answer) holds the call's context and doors alive and would run inside
        // the next call on this engine: such an engine is dropped with it.
        if !matches!(outcome, Err(Failure::OutOfMemory | Failure::TimedOut))
            && !runtime.is_job_pending()
        {
            self.give_back(runtime);
        }
        outcome
    }

    fn take(&self) -> Result<Runtime, Failure> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(runtime) => Ok(runtime),
            None => {
                let runtime = Runtime::new().map_err(|_| Failure::OutOfMemory)?;
                runtime.set_max_stack_size(STACK_BYTES);
                Ok(runtime)
            }
        }
    }

    fn give_back(&self, runtime: Runtime) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(runtime);
        }
    }
}

/// A host function of JSON text: one query or request in, its answer out.
pub type Reader = std::sync::Arc<dyn Fn(String) -> String + Send + Sync>;

/// The host's side of `ctx.log`: level, message, fields (JSON).
pub type Logger = std::sync::Arc<dyn Fn(String, String, String) + Send + Sync>;

/// The doors out of the sandbox a call's context gets.
pub struct Doors {
    /// `ctx.db`: the data API as the caller.
    pub db: Reader,
    /// `ctx.admin.db`, for a `security = "definer"` function only.
    pub admin_db: Option<Reader>,
    pub log: Logger,
    /// `ctx.fetch`'s host side: a request's JSON in, the response's out.
    pub fetch: Reader,
    /// `ctx.secrets.get(name)`: a declared secret's value, or none.
    pub secret: SecretReader,
    /// `ctx.jobs.enqueue`'s host side: the job's JSON in, `{id}` or `{error}` out.
    pub jobs: Reader,
}

pub type SecretReader = std::sync::Arc<dyn Fn(String) -> Option<String> + Send + Sync>;

/// `ctx.secrets`, over the host's reader.
const SECRETS: &str = "(secret) => Object.freeze({ get: (name) => secret(String(name)) ?? null })";

/// `ctx.jobs`, over the host's enqueue: `enqueue(name, payload, { runAt, key,
/// queue, attempts })` resolves to `{ id }` (`id` null when the key was used).
const JOBS: &str = "(enqueue) => Object.freeze({ enqueue: (name, payload = {}, options = {}) => { \
    const runAt = options.runAt instanceof Date ? options.runAt.toISOString() : options.runAt; \
    const answer = JSON.parse(enqueue(JSON.stringify({ name: String(name), payload, \
      runAt, key: options.key, queue: options.queue, attempts: options.attempts }))); \
    return answer.error ? Promise.reject(new Error(answer.error)) : Promise.resolve({ id: answer.id }); } })";

/// `ctx.log`, over the host's logger: lines with their fields as JSON.
const LOG: &str = "(log) => { \
    const line = (level) => (message, fields) => \
      log(level, String(message), JSON.stringify(fields === undefined ? null : fields) ?? 'null'); \
    return Object.freeze({ info: line('info'), warn: line('warn'), error: line('error') }); }";

/// `ctx.fetch`, a `fetch`-like function over the host's checked request.
const FETCH: &str = "(fetch) => (url, init = {}) => { \
    const body = init.body === undefined || typeof init.body === 'string' ? init.body : JSON.stringify(init.body); \
    const answer = JSON.parse(fetch(JSON.stringify({ url: String(url), method: init.method, \
      headers: init.headers ?? {}, body }))); \
    if (answer.error) return Promise.reject(new TypeError(`fetch failed: ${answer.error}`)); \
    const headers = answer.headers; \
    return Promise.resolve({ status: answer.status, ok: answer.status >= 200 && answer.status < 300, \
      headers: { get: (name) => headers[String(name).toLowerCase()] ?? null }, \
      text: async () => answer.body, json: async () => JSON.parse(answer.body) }); }";

/// Puts the doors on the context, each made on first use: building them costs
/// more than a small call's whole run, and most calls use few or none. Each is
/// an accessor that makes its door once and then becomes a plain property.
fn install<'js>(
    ctx: &rquickjs::Ctx<'js>,
    context: &Value<'js>,
    doors: Doors,
) -> Result<(), Failure> {
    let Some(object) = context.as_object() else {
        return Err(Failure::Invalid("the context is not an object".into()));
    };
    let Doors {
        db,
        admin_db,
        log,
        fetch,
        secret,
        jobs,
    } = doors;
    let made = (|| {
        lazy(object, "db", move |ctx| database(&ctx, db.clone()))?;
        if let Some(admin_db) = admin_db {
            lazy(object, "admin", move |ctx| {
                let admin = rquickjs::Object::new(ctx.clone())?;
                admin.set("db", database(&ctx, admin_db.clone())?)?;
                Ok(admin.into_value())
            })?;
        }
        lazy(object, "log", move |ctx| {
            let log = log.clone();
            let host = Function::new(
                ctx.clone(),
                move |level: String, message: String, fields: String| log(level, message, fields),
            )?;
            wrap(&ctx, LOG, host)
        })?;
        lazy(object, "fetch", move |ctx| {
            let fetch = fetch.clone();
            let host = Function::new(ctx.clone(), move |request: String| fetch(request))?;
            wrap(&ctx, FETCH, host)
        })?;
        lazy(object, "secrets", move |ctx| {
            let secret = secret.clone();
            let host = Function::new(ctx.clone(), move |name: String| secret(name))?;
            wrap(&ctx, SECRETS, host)
        })?;
        lazy(object, "jobs", move |ctx| {
            let jobs = jobs.clone();
            let host = Function::new(ctx.clone(), move |job: String| jobs(job))?;
            wrap(&ctx, JOBS, host)
        })
    })();
    made.catch(ctx).map_err(|e| failure(e))
}

/// Defines `name` on `object` as made by `make` on first read.
fn lazy<'js>(
    object: &rquickjs::Object<'js>,
    name: &'static str,
    make: impl Fn(rquickjs::Ctx<'js>) -> rquickjs::Result<Value<'js>> + 'js,
) -> rquickjs::Result<()> {
    let getter = move |ctx: rquickjs::Ctx<'js>,
                       this: rquickjs::function::This<rquickjs::Object<'js>>|
          -> rquickjs::Result<Value<'js>> {
        let value = make(ctx)?;
        this.0.prop(
            name,
            rquickjs::object::Property::from(value.clone()).enumerable(),
        )?;
        Ok(value)
    };
    object.prop(
        name,
        rquickjs::object::Accessor::new_get(getter)
            .configurable()
            .enumerable(),
    )
}

/// A door's JavaScript (`(host) => door`) applied to its host function.
fn wrap<'js>(
    ctx: &rquickjs::Ctx<'js>,
    source: &str,
    host: Function<'js>,
) -> rquickjs::Result<Value<'js>> {
    let make: Function = ctx.eval(source)?;
    make.call((host,))
}

/// A `ctx.db`: the builder (`db.js`) over one of the host's data doors.
fn database<'js>(ctx: &rquickjs::Ctx<'js>, door: Reader) -> rquickjs::Result<Value<'js>> {
    let builder: Function = ctx.eval(crate::data::BUILDER)?;
    let run = Function::new(ctx.clone(), move |query: String| door(query))?;
    builder.call((run,))
}

fn default_export<'js>(
    ctx: &rquickjs::Ctx<'js>,
    name: &str,
    source: &str,
) -> Result<Function<'js>, Failure> {
    let declared = Module::declare(ctx.clone(), name, source)
        .catch(ctx)
        .map_err(|e| Failure::Invalid(describe(&e)))?;
    let (module, evaluated) = declared.eval().catch(ctx).map_err(|e| failure(e))?;
    settle(ctx, evaluated)?;
    module
        .get::<_, Function>("default")
        .map_err(|_| Failure::Invalid(format!("{name}: the module has no default export function")))
}

/// Runs the engine's jobs until the promise settles.
fn settle<'js>(ctx: &rquickjs::Ctx<'js>, promise: Promise<'js>) -> Result<Value<'js>, Failure> {
    promise
        .finish::<Value>()
        .catch(ctx)
        .map_err(|error| match error {
            CaughtError::Error(rquickjs::Error::WouldBlock) => {
                Failure::Thrown("the function's promise never settled".into())
            }
            other => failure(other),
        })
}

fn to_json<'js>(ctx: &rquickjs::Ctx<'js>, value: Value<'js>) -> Result<Json, Failure> {
    if value.is_undefined() {
        return Ok(Json::Null);
    }
    let text = ctx
        .json_stringify(value)
        .catch(ctx)
        .map_err(|e| failure(e))?;
    let text = match text {
        Some(text) => text.to_string().map_err(|_| Failure::OutOfMemory)?,
        None => return Ok(Json::Null),
    };
    serde_json::from_str(&text).map_err(|_| Failure::Thrown("the result is not JSON".into()))
}

/// What a caught error means: the engine's own limits, or the code's throw.
fn failure(error: CaughtError<'_>) -> Failure {
    match &error {
        CaughtError::Error(rquickjs::Error::Allocation) => Failure::OutOfMemory,
        CaughtError::Exception(exception) => {
            let message = exception.message().unwrap_or_default();
            match message.as_str() {
                "interrupted" => Failure::TimedOut,
                "out of memory" => Failure::OutOfMemory,
                _ => Failure::Thrown(message),
            }
        }
        // QuickJS throws null when it cannot allocate even its out-of-memory
        // error (so `throw null` in a function reads as running out of memory).
        CaughtError::Value(value) if value.is_null() => Failure::OutOfMemory,
        CaughtError::Value(value) => {
            let text = value
                .as_string()
                .and_then(|s| s.to_string().ok())
                .unwrap_or_else(|| "the function threw a value that is not an Error".into());
            Failure::Thrown(text)
        }
        CaughtError::Error(other) => Failure::Thrown(other.to_string()),
    }
}

/// A compile error as `file:line:column: message`.
fn describe(error: &CaughtError<'_>) -> String {
    match error {
        CaughtError::Exception(exception) => {
            let message = exception.message().unwrap_or_default();
            let at = exception
                .stack()
                .and_then(|stack| {
                    stack
                        .lines()
                        .find_map(|line| line.trim().strip_prefix("at ").map(str::to_owned))
                })
                .unwrap_or_default();
            format!("{message} {at}").trim().to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(source: &str, args: Json) -> Result<Json, Failure> {
        Sandbox::default().call(
            ("test.js", source),
            &args,
            &json!({"user": null}),
            (Limits::default(), None),
        )
    }

    #[test]
    fn returns_what_the_default_export_returns_awaited() {
        let source = "export default async (args, ctx) => { await null; return { sum: args.a + args.b, user: ctx.user } }";
        assert_eq!(
            run(source, json!({"a": 1, "b": 2})),
            Ok(json!({"sum": 3, "user": null}))
        );
        assert_eq!(
            run("export default () => 'text'", json!({})),
            Ok(json!("text"))
        );
        assert_eq!(run("export default () => {}", json!({})), Ok(Json::Null));
    }

    #[test]
    fn throws_and_rejections_are_errors_with_the_code_s_message() {
        assert_eq!(
            run(
                "export default () => { throw new Error('out of stock') }",
                json!({})
            ),
            Err(Failure::Thrown("out of stock".into()))
        );
        let rejected = run(
            "export default async () => { throw new Error('no') }",
            json!({}),
        );
        assert_eq!(rejected, Err(Failure::Thrown("no".into())));
        assert!(matches!(rejected, Err(Failure::Thrown(m)) if m == "no"));
    }

    #[test]
    fn limits_stop_runaway_code_and_the_engine_serves_the_next_call() {
        let sandbox = Sandbox::default();
        let limits = Limits {
            memory_bytes: 8 << 20,
            time: Duration::from_millis(200),
        };
        let call =
            |source: &str| sandbox.call(("t.js", source), &json!({}), &json!({}), (limits, None));
        assert_eq!(
            call("export default () => { while (true) {} }"),
            Err(Failure::TimedOut)
        );
        assert_eq!(
            call("export default () => { const a = []; while (true) a.push('x'.repeat(1000)) }"),
            Err(Failure::OutOfMemory)
        );
        assert!(matches!(
            call("export default () => { const f = () => f(); f() }"),
            Err(Failure::Thrown(_))
        ));
        assert_eq!(call("export default () => 1"), Ok(json!(1)));
    }

    #[test]
    fn nothing_survives_from_one_call_to_the_next_and_nothing_is_reachable() {
        let sandbox = Sandbox::default();
        let call = |source: &str| {
            sandbox.call(
                ("t.js", source),
                &json!({}),
                &json!({}),
                (Limits::default(), None),
            )
        };
        assert_eq!(
            call("export default () => { globalThis.leak = 42; return 1 }"),
            Ok(json!(1))
        );
        assert_eq!(
            call("export default () => typeof globalThis.leak"),
            Ok(json!("undefined"))
        );
        for reach in [
            "typeof performance",
            "typeof require",
            "typeof process",
            "typeof std",
            "typeof os",
            "typeof fetch",
            "typeof setTimeout",
        ] {
            assert_eq!(
                call(&format!("export default () => {reach}")),
                Ok(json!("undefined")),
                "{reach}"
            );
        }
        assert!(matches!(
            sandbox.check("t.js", "import fs from 'fs'; export default () => 1"),
            Err(Failure::Invalid(_) | Failure::Thrown(_))
        ));
    }

    #[test]
    fn work_left_queued_by_one_call_never_runs_in_the_next() {
        let sandbox = Sandbox::default();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let call = |source: &str, mark: &'static str| {
            let seen = seen.clone();
            let doors = Doors {
                db: std::sync::Arc::new(|_| String::new()),
                admin_db: None,
                log: std::sync::Arc::new(move |_, message, _| {
                    seen.lock().unwrap().push(format!("{mark}:{message}"))
                }),
                fetch: std::sync::Arc::new(|_| String::new()),
                secret: std::sync::Arc::new(|_| None),
                jobs: std::sync::Arc::new(|_| String::new()),
            };
            sandbox.call(
                ("t.js", source),
                &json!({}),
                &json!({}),
                (Limits::default(), Some(doors)),
            )
        };
        let left = "export default async (args, ctx) => {
            const later = async () => { for (let i = 0; i < 10; i++) await null; ctx.log.info('late'); };
            later();
            return 1;
        }";
        assert_eq!(call(left, "first"), Ok(json!(1)));
        for _ in 0..3 {
            assert_eq!(
                call(
                    "export default async () => { for (let i = 0; i < 20; i++) await null; return 2 }",
                    "next"
                ),
                Ok(json!(2))
            );
        }
        assert_eq!(*seen.lock().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_syntax_error_names_where() {
        let error =
            Sandbox::default().check("checkout.js", "export default () => {\n  return 1 +;\n}");
        let Err(Failure::Invalid(message)) = error else {
            panic!("{error:?}");
        };
        assert!(message.contains("checkout.js:2"), "{message}");
    }
}
