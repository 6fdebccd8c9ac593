//! The sandbox: QuickJS (through rquickjs) with a memory limit and a time
//! limit enforced by the engine's interrupt hook. QuickJS alone has no
//! filesystem, environment, network or timers (those live in its `std`/`os`
//! modules, which are never loaded), and the module loader refuses every
//! name, so `import` reaches nothing: the only door out is the context object
//! the caller hands in.
//!
//! Calls share a realm (an engine and one context) rather than pay for a
//! fresh context each (which costs ten times the call): `lockdown.js` freezes
//! every built-in once, each call evaluates its module anew (its top-level
//! state is its own), and what a call adds to the global object is deleted
//! after it. A realm that cannot be swept clean, was stopped at a limit, has
//! work left queued or has kept too much memory is dropped, not reused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rquickjs::context::intrinsic;
use rquickjs::loader::{BuiltinLoader, BuiltinResolver};
use rquickjs::{
    CatchResultExt, CaughtError, Context, Function, Module, Object, Promise, Runtime, Value,
};
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

/// The parts of a call's context object (`user`, `request`, `trigger`, …),
/// each kept as its JSON text: the code's value for a part is made only if it
/// reads it, and most calls read few.
#[derive(Debug, Clone, Default)]
pub struct CallContext(Vec<(&'static str, String)>);

impl CallContext {
    pub fn with(mut self, name: &'static str, part: &impl serde::Serialize) -> Self {
        // Plain data (JSON values, borrowed strings and maps of them) always
        // serialises; should it not, the part reads null rather than fail the call.
        let text = serde_json::to_string(part).unwrap_or_else(|_| "null".into());
        self.0.push((name, text));
        self
    }
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

/// Realms ready for the next call; one is made when none is idle.
pub struct Sandbox {
    idle: Mutex<Vec<Realm>>,
    /// What one evaluation of each module keeps until its realm goes (its
    /// compiled code and top-level values), measured when it is checked.
    keeps: Mutex<HashMap<String, usize>>,
    compiled: Compiled,
}

/// Idle realms kept; more are dropped after their call.
const MAX_IDLE: usize = 8;
/// The native stack the engine may use (deep recursion is an error, not a crash).
const STACK_BYTES: usize = 256 << 10;
/// Calls one realm serves before it is renewed (what its calls keep renews it
/// sooner: a module keeping 2 KiB per call, after about 2,000).
const MAX_SERVED: u32 = 4_000;
/// How often a realm's memory is measured (measuring walks every object)…
const MEASURE_EVERY: u32 = 256;
/// …and after a call that ran this long, which may have allocated that much.
const MEASURE_AFTER: Duration = Duration::from_millis(1);
/// What earlier calls may leave held in a realm (each call's module stays
/// loaded until the realm goes) before it is renewed.
const MAX_RETAINED: usize = 4 << 20;
/// What a module not yet measured is taken to keep.
const UNMEASURED_KEEPS: usize = 64 << 10;

/// An engine and the one context its calls share, locked down.
struct Realm {
    runtime: Runtime,
    context: Context,
    /// Set when a call reaches for a door its context object does not have
    /// (`Sandbox::call_inline`).
    reached: Arc<AtomicBool>,
    served: u32,
    /// The engine's memory once locked down, and at the last measure.
    baseline: usize,
    in_use: usize,
}

impl Realm {
    fn new() -> Result<Self, Failure> {
        let runtime = Runtime::new().map_err(|_| Failure::OutOfMemory)?;
        runtime.set_max_stack_size(STACK_BYTES);
        // Refuses every name before the engine looks among the modules it has
        // loaded (earlier calls' instances, with their state).
        runtime.set_loader(BuiltinResolver::default(), BuiltinLoader::default());
        let context = Context::custom::<Intrinsics>(&runtime).map_err(|_| Failure::OutOfMemory)?;
        let reached = Arc::new(AtomicBool::new(false));
        context.with(|ctx| {
            lockdown(&ctx, reached.clone())
                .catch(&ctx)
                .map_err(|e| failure(e))
        })?;
        let in_use = measure(&runtime);
        Ok(Self {
            runtime,
            context,
            reached,
            served: 0,
            baseline: in_use,
            in_use,
        })
    }

    /// Whether the realm may serve another call after one that kept about
    /// `kept` bytes and ran for `took`. The estimate is corrected by a measure
    /// now and then, and after any call long enough to have allocated much
    /// (a module can hoard what its calls make in its top-level variables,
    /// which stay loaded): measuring costs a small call's run, a long call's
    /// little.
    fn reusable(&mut self, kept: usize, took: Duration) -> bool {
        self.served += 1;
        self.in_use = if self.served.is_multiple_of(MEASURE_EVERY) || took >= MEASURE_AFTER {
            measure(&self.runtime)
        } else {
            self.in_use.saturating_add(kept)
        };
        self.served < MAX_SERVED && self.in_use.saturating_sub(self.baseline) < MAX_RETAINED
    }
}

fn measure(runtime: &Runtime) -> usize {
    usize::try_from(runtime.memory_usage().malloc_size).unwrap_or(usize::MAX)
}

/// Freezes the realm's built-ins and leaves the kit (`lockdown.js`).
fn lockdown<'js>(ctx: &rquickjs::Ctx<'js>, reached: Arc<AtomicBool>) -> rquickjs::Result<()> {
    let doors = Object::new(ctx.clone())?;
    for (name, source) in [
        ("db", crate::data::BUILDER),
        ("log", LOG),
        ("fetch", FETCH),
        ("secrets", SECRETS),
        ("jobs", JOBS),
    ] {
        doors.set(name, ctx.eval::<Function, _>(source)?)?;
    }
    let reached = Function::new(ctx.clone(), move || reached.store(true, Ordering::Relaxed))?;
    let random = Function::new(ctx.clone(), random_source())?;
    let lockdown: Function = ctx.eval(include_str!("lockdown.js"))?;
    lockdown.call((doors, reached, random))
}

/// `Math.random` from the operating system's generator, drawn 4 KiB at a time,
/// so no call can learn from its own numbers those of another.
fn random_source() -> impl Fn() -> f64 {
    let pool = Mutex::new(([0u8; 4096], usize::MAX));
    move || {
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        let (bytes, used) = &mut *pool;
        if used.saturating_add(8) > bytes.len() {
            // The system's generator does not fail on the platforms served;
            // if it ever did, the numbers would repeat, not stop the call.
            let _ = getrandom::fill(bytes);
            *used = 0;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[*used..*used + 8]);
        *used += 8;
        // 53 random bits over 2^53: uniform in [0, 1).
        (u64::from_le_bytes(word) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The realm's kit: `sweep` and the doors' makers.
fn kit<'js>(ctx: &rquickjs::Ctx<'js>) -> rquickjs::Result<Object<'js>> {
    ctx.globals().get("__gatehouse")
}

/// Deletes what the call added to the global object: false when it cannot.
fn sweep(ctx: &rquickjs::Ctx<'_>) -> bool {
    let count = ctx
        .globals()
        .own_keys::<rquickjs::Atom>(rquickjs::object::Filter::new().string().symbol())
        .count();
    kit(ctx)
        .and_then(|kit| kit.get::<_, Function>("sweep"))
        .and_then(|sweep| sweep.call::<_, bool>((count,)))
        .unwrap_or(false)
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            keeps: Mutex::new(HashMap::new()),
            compiled: Compiled::default(),
        }
    }
}

impl Sandbox {
    /// Whether `source` compiles as a module with a default export, or where it does not.
    pub fn check(&self, name: &str, source: &str) -> Result<(), Failure> {
        let realm = self.take()?;
        self.with_context(realm, (name, true), Limits::default(), |ctx| {
            self.compiled.default_export(&ctx, name, source).map(|_| ())
        })
    }

    /// Calls the module's default export with `args` and `context` (given
    /// its doors when there are `doors`) and gives back what it returned
    /// (awaited), as JSON.
    pub fn call(
        &self,
        module: (&str, &str),
        args: &Json,
        context: &CallContext,
        (limits, doors): (Limits, Option<Doors>),
    ) -> Result<Json, Failure> {
        let realm = self.take()?;
        let reach = doors.map_or(Reach::Nothing, Reach::Doors);
        self.with_context(realm, (module.0, false), limits, |ctx| {
            run(&ctx, (&self.compiled, module), (args, context), reach)
        })
    }

    /// Tries the call right here, on the caller's own thread, for at most
    /// `budget` and without its doors: a call that computes its answer from
    /// its arguments alone costs no hand-off to a thread of its own. When it
    /// cannot finish so, nothing it did went out, and it is to be made again
    /// with its doors and whole limits.
    pub fn call_inline(
        &self,
        module: (&str, &str),
        args: &Json,
        context: &CallContext,
        (limits, budget): (Limits, Duration),
    ) -> Inline {
        let Some(realm) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
            return Inline::NoIdleRealm;
        };
        let reached = realm.reached.clone();
        reached.store(false, Ordering::Relaxed);
        let limits = Limits {
            time: limits.time.min(budget),
            ..limits
        };
        // The mark is read before the realm goes back to the pool, where
        // another thread's attempt may take it and clear the mark.
        let tripped = std::cell::Cell::new(false);
        let outcome = self.with_context(realm, (module.0, false), limits, |ctx| {
            let outcome = run(
                &ctx,
                (&self.compiled, module),
                (args, context),
                Reach::Tripwire,
            );
            tripped.set(reached.swap(false, Ordering::Relaxed));
            outcome
        });
        match outcome {
            _ if tripped.get() => Inline::Outgrown,
            Err(Failure::TimedOut) => Inline::Outgrown,
            outcome => Inline::Answered(outcome),
        }
    }

    /// Runs `work` (which evaluates the module `name`) in `realm`
    /// under `limits`, then sweeps the realm; `measuring` the memory the
    /// module keeps (when it is checked).
    fn with_context<T>(
        &self,
        mut realm: Realm,
        (name, measuring): (&str, bool),
        limits: Limits,
        work: impl for<'js> FnOnce(rquickjs::Ctx<'js>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let before = measuring.then(|| {
            realm.runtime.run_gc();
            measure(&realm.runtime)
        });
        // The call gets its whole limit above what the realm already holds.
        realm
            .runtime
            .set_memory_limit(realm.in_use.saturating_add(limits.memory_bytes));
        let started = Instant::now();
        let deadline = started + limits.time;
        realm
            .runtime
            .set_interrupt_handler(Some(Box::new(move || Instant::now() >= deadline)));
        let (outcome, swept) = realm.context.with(|ctx| {
            let outcome = work(ctx.clone());
            (outcome, sweep(&ctx))
        });
        realm.runtime.set_interrupt_handler(None);
        let mut keeps = self.keeps.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(before) = before {
            realm.runtime.run_gc();
            keeps.insert(
                name.to_owned(),
                measure(&realm.runtime).saturating_sub(before),
            );
        }
        let kept = keeps.get(name).copied().unwrap_or(UNMEASURED_KEEPS);
        drop(keeps);
        // An engine stopped at a limit may be left inconsistent (after an
        // interrupt, QuickJS has been seen throwing null for the next call's
        // out-of-memory): it is dropped, not pooled.
        // Work the code queued and left behind (a promise callback after its
        // answer) holds the call's context and doors alive and would run inside
        // the next call: such a realm is dropped with it.
        if swept
            && !matches!(outcome, Err(Failure::OutOfMemory | Failure::TimedOut))
            && !realm.runtime.is_job_pending()
            && realm.reusable(kept, started.elapsed())
        {
            self.give_back(realm);
        }
        outcome
    }

    fn take(&self) -> Result<Realm, Failure> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(realm) => Ok(realm),
            None => Realm::new(),
        }
    }

    fn give_back(&self, realm: Realm) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(realm);
        }
    }
}

/// Evaluates the module, calls its default export with the arguments and the
/// context object (given what `reach` allows) and gives back what it
/// returned (awaited), as JSON.
fn run<'js>(
    ctx: &rquickjs::Ctx<'js>,
    (compiled, (name, source)): (&Compiled, (&str, &str)),
    (args, context): (&Json, &CallContext),
    reach: Reach,
) -> Result<Json, Failure> {
    let function = compiled.default_export(ctx, name, source)?;
    let args = ctx
        .json_parse(args.to_string())
        .catch(ctx)
        .map_err(|e| failure(e))?;
    let context = context_object(ctx, context)
        .catch(ctx)
        .map_err(|e| failure(e))?;
    install(ctx, &context, reach)?;
    let returned: Value = function
        .call((args, context))
        .catch(ctx)
        .map_err(|e| failure(e))?;
    let value = match returned.as_promise() {
        Some(promise) => settle(ctx, promise.clone())?,
        None => returned,
    };
    to_json(ctx, value)
}

/// The context object: each of its parts is made from its JSON on first
/// read, as the doors are, since parsing them costs a small call more than
/// its module.
fn context_object<'js>(
    ctx: &rquickjs::Ctx<'js>,
    context: &CallContext,
) -> rquickjs::Result<Value<'js>> {
    let object = Object::new(ctx.clone())?;
    for (name, text) in &context.0 {
        let text = text.clone();
        lazy(&object, name, move |ctx| ctx.json_parse(text.clone()))?;
    }
    Ok(object.into_value())
}

/// How a call tried on the caller's thread ended.
#[derive(Debug, PartialEq)]
pub enum Inline {
    Answered(Result<Json, Failure>),
    /// Every realm was busy (making one here would hold the thread too long).
    NoIdleRealm,
    /// It reached for a door of `ctx`, or ran past the budget.
    Outgrown,
}

/// What the context object's doors lead to.
enum Reach {
    Doors(Doors),
    /// No door at all (a module's check, the sandbox's own tests).
    Nothing,
    /// Each door refuses and marks the call as having reached for it (the
    /// context object inherits the kit's `tripwire`).
    Tripwire,
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
    reach: Reach,
) -> Result<(), Failure> {
    let Some(object) = context.as_object() else {
        return Err(Failure::Invalid("the context is not an object".into()));
    };
    let doors = match reach {
        Reach::Doors(doors) => doors,
        Reach::Nothing => return Ok(()),
        Reach::Tripwire => {
            let tripwire = kit(ctx).and_then(|kit| kit.get::<_, Object>("tripwire"));
            return tripwire
                .and_then(|tripwire| object.set_prototype(Some(&tripwire)))
                .catch(ctx)
                .map_err(|e| failure(e));
        }
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
            wrap(&ctx, "log", host)
        })?;
        lazy(object, "fetch", move |ctx| {
            let fetch = fetch.clone();
            let host = Function::new(ctx.clone(), move |request: String| fetch(request))?;
            wrap(&ctx, "fetch", host)
        })?;
        lazy(object, "secrets", move |ctx| {
            let secret = secret.clone();
            let host = Function::new(ctx.clone(), move |name: String| secret(name))?;
            wrap(&ctx, "secrets", host)
        })?;
        lazy(object, "jobs", move |ctx| {
            let jobs = jobs.clone();
            let host = Function::new(ctx.clone(), move |job: String| jobs(job))?;
            wrap(&ctx, "jobs", host)
        })
    })();
    made.catch(ctx).map_err(|e| failure(e))
}

/// Defines `name` on `object` as made by `make` on first read (or as first assigned).
fn lazy<'js>(
    object: &rquickjs::Object<'js>,
    name: &str,
    make: impl Fn(rquickjs::Ctx<'js>) -> rquickjs::Result<Value<'js>> + 'js,
) -> rquickjs::Result<()> {
    // Once made (or assigned) it is a plain property, as if it had always been.
    fn settle<'js>(object: &Object<'js>, key: &str, value: Value<'js>) -> rquickjs::Result<()> {
        object.prop(
            key,
            rquickjs::object::Property::from(value)
                .enumerable()
                .writable()
                .configurable(),
        )
    }
    let (get_key, set_key) = (name.to_owned(), name.to_owned());
    let getter = move |ctx: rquickjs::Ctx<'js>,
                       this: rquickjs::function::This<rquickjs::Object<'js>>|
          -> rquickjs::Result<Value<'js>> {
        let value = make(ctx)?;
        settle(&this.0, &get_key, value.clone())?;
        Ok(value)
    };
    let setter = move |this: rquickjs::function::This<rquickjs::Object<'js>>,
                       value: Value<'js>|
          -> rquickjs::Result<()> { settle(&this.0, &set_key, value) };
    object.prop(
        name,
        rquickjs::object::Accessor::new(getter, setter)
            .configurable()
            .enumerable(),
    )
}

/// A door's maker from the realm's kit (`(host) => door`) applied to its host function.
fn wrap<'js>(
    ctx: &rquickjs::Ctx<'js>,
    door: &str,
    host: Function<'js>,
) -> rquickjs::Result<Value<'js>> {
    let make: Function = kit(ctx)?.get(door)?;
    make.call((host,))
}

/// A `ctx.db`: the builder (`db.js`) over one of the host's data doors.
fn database<'js>(ctx: &rquickjs::Ctx<'js>, door: Reader) -> rquickjs::Result<Value<'js>> {
    let run = Function::new(ctx.clone(), move |query: String| door(query))?;
    wrap(ctx, "db", run)
}

/// Modules' bytecode by name, with the source it was compiled from: a call
/// loads its module's bytecode rather than parse and compile the source again
/// (a fifth of a small call's cost). One entry per module name, replaced when
/// the source changes.
#[derive(Default)]
struct Compiled(Mutex<HashMap<String, Bytecode>>);

/// A module's source and the bytecode compiled from it.
type Bytecode = (String, Arc<[u8]>);

impl Compiled {
    fn default_export<'js>(
        &self,
        ctx: &rquickjs::Ctx<'js>,
        name: &str,
        source: &str,
    ) -> Result<Function<'js>, Failure> {
        let declared = self
            .declare(ctx, name, source)
            .catch(ctx)
            .map_err(|e| Failure::Invalid(describe(&e)))?;
        let (module, evaluated) = declared.eval().catch(ctx).map_err(|e| failure(e))?;
        settle(ctx, evaluated)?;
        module.get::<_, Function>("default").map_err(|_| {
            Failure::Invalid(format!("{name}: the module has no default export function"))
        })
    }

    /// The module, not yet evaluated: from its bytecode when `source` was
    /// compiled before, else compiled now and its bytecode kept.
    fn declare<'js>(
        &self,
        ctx: &rquickjs::Ctx<'js>,
        name: &str,
        source: &str,
    ) -> rquickjs::Result<Module<'js>> {
        let known = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .filter(|(compiled_from, _)| compiled_from == source)
            .map(|(_, bytecode)| bytecode.clone());
        if let Some(bytecode) = known {
            return load(ctx, &bytecode);
        }
        let module = Module::declare(ctx.clone(), name, source)?;
        let bytecode = module.write(rquickjs::module::WriteOptions::default())?;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), (source.to_owned(), bytecode.into()));
        Ok(module)
    }
}

/// The crate's one `unsafe`: reading bytecode, which the engine trusts to be
/// well formed (malformed bytecode is memory unsafety, not an error).
///
/// SAFETY: `bytecode` is only ever what `Module::write` made in `Compiled::declare`
/// from a module this same engine (this binary, native byte order) had just
/// compiled and not yet evaluated; it is kept immutable (`Arc<[u8]>`) in this
/// process's memory and never read from a file, the network or a function.
#[allow(unsafe_code)]
fn load<'js>(ctx: &rquickjs::Ctx<'js>, bytecode: &[u8]) -> rquickjs::Result<Module<'js>> {
    unsafe { Module::load(ctx.clone(), bytecode) }
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
            &CallContext::default().with("user", &Json::Null),
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
        let call = |source: &str| {
            sandbox.call(
                ("t.js", source),
                &json!({}),
                &CallContext::default(),
                (limits, None),
            )
        };
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
                &CallContext::default(),
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
                &CallContext::default(),
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

    /// Calls on one sandbox (one realm while it stays clean), each module
    /// under its own name.
    fn calls() -> impl Fn(&str) -> Result<Json, Failure> {
        let sandbox = Sandbox::default();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        move |source: &str| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sandbox.call(
                (&format!("m{n}.js"), source),
                &json!({}),
                &CallContext::default(),
                (Limits::default(), None),
            )
        }
    }

    #[test]
    fn built_ins_are_frozen_for_every_call_and_still_overridable_on_own_objects() {
        let call = calls();
        for pollute in [
            "Array.prototype.polluted = 1",
            "Object.prototype.toString = () => 'mine'",
            "JSON.parse = () => 'mine'",
            "globalThis.JSON = {}",
            "Object.getPrototypeOf([].values()).next = () => ({ done: true })",
            "Object.getPrototypeOf(function* () {}).prototype.next = null",
            "Object.getPrototypeOf(async function () {}).constructor.x = 1",
            "Promise.prototype.then = null",
            "Error.prepareStackTrace = () => 'mine'",
            "Error.stackTraceLimit = 0",
        ] {
            let outcome = call(&format!(
                "export default () => {{ {pollute}; return 'changed' }}"
            ));
            assert!(
                matches!(outcome, Err(Failure::Thrown(_))),
                "{pollute}: {outcome:?}"
            );
        }
        assert_eq!(
            call(
                "export default async () => [typeof [].polluted, String({}), JSON.parse('1'),                  [...[1, 2].values()].length, typeof Error.prepareStackTrace,                  new Error('e').stack.includes('m'), await Promise.resolve(3)]"
            ),
            Ok(json!([
                "undefined",
                "[object Object]",
                1,
                2,
                "undefined",
                true,
                3
            ]))
        );
        // The override mistake is fixed for what code commonly sets on its own objects.
        assert_eq!(
            call(
                "class Problem extends Error { constructor(m) { super(m); this.name = 'Problem' } }
                 function Legacy() {} Legacy.prototype.constructor = Legacy;
                 const own = { toString() { return 'own' } }; own.toString = () => 'changed';
                 export default () => [new Problem('m').name, String(new Problem('m')), String(own),                    new Legacy().constructor === Legacy]"
            ),
            Ok(json!(["Problem", "Problem: m", "changed", true]))
        );
        assert_eq!(
            call("export default () => typeof FinalizationRegistry"),
            Ok(json!("undefined"))
        );
        assert_eq!(
            call(
                "class Odd extends InternalError { constructor() { super('m'); this.name = 'Odd' } } \
                  export default () => new Odd().name"
            ),
            Ok(json!("Odd"))
        );
    }

    #[test]
    fn each_call_evaluates_its_module_anew_and_cannot_import_another() {
        let sandbox = Sandbox::default();
        let call = |name: &str, source: &str| {
            sandbox.call(
                (name, source),
                &json!({}),
                &CallContext::default(),
                (Limits::default(), None),
            )
        };
        let counter =
            "let calls = 0; export const secret = 'earlier'; export default () => ++calls";
        for _ in 0..3 {
            assert_eq!(call("counter.js", counter), Ok(json!(1)));
        }
        // The engine keeps earlier calls' module instances until the realm
        // goes: no name reaches them, relative or not.
        let reach = "export default async () => { try { return (await import(NAME)).secret } \
                     catch (e) { return 'refused' } }";
        for name in ["'counter.js'", "'./counter.js'"] {
            assert_eq!(
                call("counter.js", &reach.replace("NAME", name)),
                Ok(json!("refused")),
                "{name}"
            );
        }
        assert!(matches!(
            sandbox.check(
                "other.js",
                "import { secret } from 'counter.js'; export default () => secret"
            ),
            Err(Failure::Invalid(_) | Failure::Thrown(_))
        ));
    }

    #[test]
    fn globals_a_call_makes_are_gone_for_the_next_even_those_it_pins() {
        let call = calls();
        for pin in [
            "globalThis.left = 'earlier'",
            "Object.defineProperty(globalThis, 'left', { value: 'earlier' })",
            "(0, eval)('var left = \"earlier\"')",
            "Function('left = \"earlier\"')()",
            "Object.setPrototypeOf(globalThis, { left: 'earlier' })",
        ] {
            assert_eq!(
                call(&format!(
                    "export default () => {{ {pin}; return (0, eval)('left') }}"
                )),
                Ok(json!("earlier")),
                "{pin}"
            );
            // Read from module code and from script code (which sees the
            // global lexical bindings a script's `let` makes).
            assert_eq!(
                call("export default () => [typeof left, (0, eval)('typeof left')]"),
                Ok(json!(["undefined", "undefined"])),
                "{pin}"
            );
        }
        // A script's `let` would live in the context's global lexical scope,
        // which no sweep could list: the engine keeps an eval's to the eval.
        assert_eq!(
            call("export default () => (0, eval)('let left = 1; const right = 2; left + right')"),
            Ok(json!(3))
        );
        assert_eq!(
            call("export default () => (0, eval)('[typeof left, typeof right]')"),
            Ok(json!(["undefined", "undefined"]))
        );
        assert!(
            call(
                "export default () => { Object.freeze(globalThis); globalThis.late = 1; return 1 }"
            )
            .is_err()
        );
        assert_eq!(
            call("export default () => { globalThis.late = 2; return late }"),
            Ok(json!(2))
        );
    }

    #[test]
    fn a_call_is_answered_inline_only_when_it_needs_no_door_and_little_time() {
        let sandbox = Sandbox::default();
        let inline = |source: &str| {
            sandbox.call_inline(
                ("t.js", source),
                &json!({"a": 2}),
                &CallContext::default().with("user", &Json::Null),
                (Limits::default(), Duration::from_millis(50)),
            )
        };
        assert_eq!(
            inline("export default (args) => args.a * 2"),
            Inline::NoIdleRealm
        );
        sandbox.check("t.js", "export default () => 1").unwrap();
        assert_eq!(
            inline("export default (args, ctx) => [args.a * 2, ctx.user]"),
            Inline::Answered(Ok(json!([4, null])))
        );
        assert_eq!(
            inline("export default () => { throw new Error('refused') }"),
            Inline::Answered(Err(Failure::Thrown("refused".into())))
        );
        // Reaching for any door ends the attempt, even when the code catches
        // the refusal and answers something else.
        for door in [
            "db.from('t')",
            "log.info('x')",
            "fetch('https://example.com')",
            "secrets.get('k')",
            "jobs",
            "admin",
        ] {
            let source = format!(
                "export default (args, ctx) => {{ try {{ ctx.{door} }} catch {{}} return 'without' }}"
            );
            assert_eq!(inline(&source), Inline::Outgrown, "{door}");
        }
        assert_eq!(
            inline("export default () => { while (true) {} }"),
            Inline::Outgrown
        );
        // A realm stopped at the budget is not reused; the next one is made
        // on a thread of its own, never inline.
        assert_eq!(inline("export default () => 1"), Inline::NoIdleRealm);
    }

    #[test]
    fn no_call_can_predict_the_numbers_of_the_next() {
        // QuickJS's own Math.random is one xorshift64* stream per context:
        // two results tell its state, and so the next call's number.
        const M: u64 = 0x2545_F491_4F6C_DD1D;
        let inverse = (0..6).fold(M, |x, _| {
            x.wrapping_mul(2u64.wrapping_sub(M.wrapping_mul(x)))
        });
        let step = |mut x: u64| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x
        };
        let high = |r: f64| (r + 1.0).to_bits() & ((1 << 52) - 1);
        let call = calls();
        let drawn = call("export default () => [Math.random(), Math.random()]").unwrap();
        let (first, second) = (
            high(drawn[0].as_f64().unwrap()),
            high(drawn[1].as_f64().unwrap()),
        );
        let predicted = (0..1u64 << 12).find_map(|low| {
            let state = ((first << 12) | low).wrapping_mul(inverse);
            let next = step(state);
            (next.wrapping_mul(M) >> 12 == second).then(|| step(next).wrapping_mul(M) >> 12)
        });
        let next = high(
            call("export default () => Math.random()")
                .unwrap()
                .as_f64()
                .unwrap(),
        );
        assert_ne!(predicted, Some(next));
        assert!(
            call(
                "export default () => Array.from({ length: 1000 }, Math.random).every((r) => r >= 0 && r < 1)"
            ) == Ok(json!(true))
        );
    }

    #[test]
    fn the_context_s_parts_read_and_assign_as_plain_properties() {
        let sandbox = Sandbox::default();
        let call = |source: &str| {
            sandbox.call(
                ("t.js", source),
                &json!({}),
                &CallContext::default()
                    .with("user", &json!({"id": "u1"}))
                    .with("request", &json!({"method": "POST"})),
                (Limits::default(), None),
            )
        };
        assert_eq!(
            call(
                "export default (args, ctx) => { const before = ctx.user.id; ctx.user = 'mine'; \
                  ctx.request.method = 'GET'; return [before, ctx.user, ctx.request.method, Object.keys(ctx)] }"
            ),
            Ok(json!(["u1", "mine", "GET", ["user", "request"]]))
        );
        assert_eq!(
            call("export default (args, ctx) => { ctx.request = 1; return JSON.stringify(ctx) }"),
            Ok(json!(r#"{"user":{"id":"u1"},"request":1}"#))
        );
    }

    #[test]
    fn what_a_module_hoards_does_not_leave_the_next_call_short_of_memory() {
        let sandbox = Sandbox::default();
        let limits = Limits {
            memory_bytes: 8 << 20,
            time: Duration::from_secs(2),
        };
        // Each call keeps 3 MiB in the module's top level and runs a few
        // milliseconds, as a call that allocates that much would.
        let hoarder = "const hoard = []; export default () => { hoard.push('x'.repeat(3 << 20)); \
                       const end = Date.now() + 3; while (Date.now() < end) {} return hoard.length }";
        sandbox.check("hoarder.js", hoarder).unwrap();
        for _ in 0..6 {
            assert_eq!(
                sandbox.call(
                    ("hoarder.js", hoarder),
                    &json!({}),
                    &CallContext::default(),
                    (limits, None)
                ),
                Ok(json!(1))
            );
        }
    }

    #[test]
    fn a_module_s_changed_source_is_what_runs_next() {
        let sandbox = Sandbox::default();
        let call = |source: &str| {
            sandbox.call(
                ("changing.js", source),
                &json!({}),
                &CallContext::default(),
                (Limits::default(), None),
            )
        };
        for _ in 0..2 {
            assert_eq!(call("export default () => 'first'"), Ok(json!("first")));
        }
        assert_eq!(call("export default () => 'second'"), Ok(json!("second")));
        let thrown = call("export default () => {\n  throw new Error('from line 2')\n}");
        assert_eq!(thrown, Err(Failure::Thrown("from line 2".into())));
        assert_eq!(call("export default () => 'first'"), Ok(json!("first")));
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
