//! Background jobs from the functions' side: `ctx.jobs.enqueue`, which writes
//! the job in the call's own transaction (a call that throws leaves no job),
//! and the [`Runner`] that runs a claimed job as its declared function.

use std::collections::HashMap;
use std::sync::Arc;

use gatehouse_db::Transaction;
use gatehouse_jobs::{Handler, Job, NewJob, Runner, Running, Settings};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;

use gatehouse_policy::Role;
use gatehouse_rest::Caller;

use crate::sandbox::CallContext;
use crate::{Declared, Functions, checked, user};

/// What enqueueing needs: the queues, the functions that may handle a job
/// (their arguments check the payload when it is enqueued, not only when it
/// runs), and how to wake this instance's workers after a commit.
pub(crate) struct Queueing {
    pub(crate) settings: Settings,
    pub(crate) handlers: HashMap<String, Arc<Declared>>,
    pub(crate) wake: Arc<Notify>,
}

/// `ctx.jobs.enqueue(name, payload, options)` as the door sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Request {
    name: String,
    #[serde(default)]
    payload: Option<Json>,
    run_at: Option<String>,
    key: Option<String>,
    queue: Option<String>,
    attempts: Option<u32>,
}

impl Queueing {
    /// The door's host side for one call: enqueues inside `transaction`,
    /// and wakes the workers once it commits (whoever commits it).
    pub(crate) fn door(
        self: &Arc<Self>,
        runtime: tokio::runtime::Handle,
        (transaction, caller): (Transaction, &Caller),
    ) -> crate::sandbox::Reader {
        let queueing = self.clone();
        let enqueuer = enqueuer(caller);
        Arc::new(move |request| {
            let answer = queueing
                .job(&request, &enqueuer)
                .and_then(|statement| {
                    runtime
                        .block_on(transaction.transaction_if(vec![statement], |_| true))
                        .map_err(|error| {
                            tracing::error!(target: "gatehouse::function", %error, "a job could not be enqueued");
                            "the job could not be enqueued".to_owned()
                        })
                })
                .map(|rows| {
                    let wake = queueing.wake.clone();
                    transaction.on_commit(move || wake.notify_waiters());
                    let id = rows
                        .and_then(|mut rows| rows.pop())
                        .and_then(|rows| rows.first().and_then(|row| row.text(0).ok().map(str::to_owned)));
                    json!({ "id": id })
                });
            match answer {
                Ok(answer) => answer,
                Err(error) => json!({ "error": error }),
            }
            .to_string()
        })
    }

    fn job(&self, request: &str, enqueuer: &Json) -> Result<gatehouse_db::Statement, String> {
        let request: Request = serde_json::from_str(request)
            .map_err(|_| "enqueue(name, payload, { runAt, key, queue, attempts })".to_owned())?;
        let handler = self
            .handlers
            .get(&request.name)
            .ok_or_else(|| format!("no function {:?} is declared to handle it", request.name))?;
        let payload = checked(handler, request.payload.unwrap_or_else(|| json!({})))
            .map_err(|error| format!("job {}: {error}", request.name))?;
        let run_at = request
            .run_at
            .map(|at| {
                OffsetDateTime::parse(&at, &Rfc3339)
                    .map_err(|_| format!("runAt {at:?} is not an RFC 3339 time"))
            })
            .transpose()?;
        let job = NewJob {
            queue: request
                .queue
                .unwrap_or_else(|| gatehouse_jobs::DEFAULT_QUEUE.to_owned()),
            run_at,
            key: request.key,
            max_attempts: request.attempts,
            enqueued_by: Some(enqueuer.clone()),
            ..NewJob::new(&request.name, payload)
        };
        gatehouse_jobs::enqueue(&self.settings, &job).map_err(|error| error.to_string())
    }
}

/// A user who still exists and is not banned now.
const IN_GOOD_STANDING: gatehouse_db::Sql = gatehouse_db::Sql::both(
    "SELECT 1 FROM gatehouse_users WHERE id = $1 AND (banned_until IS NULL OR banned_until <= $2)",
);

impl Functions {
    /// Whether `user_id` may still act: a job run with its enqueuer's rights
    /// does not outlive the enqueuer's deletion or ban.
    async fn in_good_standing(&self, user_id: &str) -> Result<bool, String> {
        let now = gatehouse_db::timestamp(OffsetDateTime::now_utc());
        let found = self
            .data
            .db
            .query(gatehouse_db::Statement::new(
                &IN_GOOD_STANDING,
                vec![user_id.into(), now.into()],
            ))
            .await
            .map_err(|_| "the user who queued the job cannot be looked up".to_owned())?;
        Ok(!found.is_empty())
    }
}

/// Who queued a job, as the verified caller of the code that queued it.
fn enqueuer(caller: &Caller) -> Json {
    json!({ "role": caller.role_name(), "user_id": caller.user_id() })
}

/// The caller a job of `function` runs as: the secret key's standing, or
/// (`job_rights = "enqueuer"`) the role and user id of whoever queued it, as
/// a signed URL carries a signer (their token's other claims read null); anon
/// when nobody's code queued it (cron, hooks, triggers).
fn job_caller(function: &Declared, job: &Job, service: &Caller) -> Caller {
    if !function.jobs_as_enqueuer {
        return service.clone();
    }
    let Some(who) = &job.enqueued_by else {
        return Caller::anon();
    };
    let user_id = who["user_id"].as_str().map(str::to_owned);
    match who["role"].as_str() {
        Some("service_role") => service.clone(),
        Some("authenticated") => Caller::delegated(Role::Authenticated, user_id),
        _ => Caller::anon(),
    }
}

/// A job runs as its function, with the rights `job_caller` gives it, its
/// payload as the arguments and `ctx.job` saying which job and attempt this
/// is. An after trigger's job runs its function with no arguments and the
/// change it follows as `ctx.trigger`, as a before trigger sees one.
impl Runner for Functions {
    fn run(&self, job: Job) -> Running<'_> {
        Box::pin(async move {
            let (function, args, trigger) = match job.handler() {
                Handler::Function(name) => (name.to_owned(), job.payload.clone(), Json::Null),
                Handler::AfterTrigger(name) => {
                    let change = &job.payload;
                    let trigger = json!({
                        "table": change["table"],
                        "event": change["type"],
                        "when": "AFTER",
                        "new": change["record"],
                        "old": change["old_record"],
                    });
                    (name.to_owned(), json!({}), trigger)
                }
                Handler::Webhook(_) | Handler::Own(_) => {
                    return Err(format!("{} is not a function's job", job.function));
                }
            };
            let declared = self
                .function(&function)
                .map_err(|error| error.to_string())?;
            let caller = job_caller(&declared, &job, &self.data.service);
            if let Some(user_id) = caller.user_id()
                && !self.in_good_standing(user_id).await?
            {
                return Err("the user who queued the job is deleted or banned".into());
            }
            let mut context = CallContext::default()
                // The server's own standing is nobody in particular.
                .with("user", &user(&caller).filter(|_| !caller.is_service()))
                .with(
                    "job",
                    &json!({
                        "id": job.id,
                        "queue": job.queue,
                        "attempt": job.attempt,
                        "maxAttempts": job.max_attempts,
                        "key": job.key,
                    }),
                );
            if !trigger.is_null() {
                context = context.with("trigger", &trigger);
            }
            self.invoke(&caller, (&function, &job.id), args, (context, None))
                .await
                .map(drop)
                .map_err(|error| error.to_string())
        })
    }
}
