//! Gatehouse's own jobs (`gatehouse:<task>`): auth's email, and the upkeep.
//!
//! Email: each message auth queued is handed to the SMTP relay; the email
//! queue has workers only when `GATEHOUSE_SMTP_URL` is set, so without one the
//! messages wait.
//!
//! Upkeep: what lives in the database (expired idempotency records, finished
//! sign-in counts and audit entries past their retention, finished jobs and
//! attempts past theirs, unreferenced object bytes) is cleaned by cron jobs, so
//! each tick runs once across all instances and a failure is retried and
//! visible in `gatehouse jobs`. What lives in one instance's memory (idle
//! rate-limit keys) is cleaned by that instance.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_http::AppState;
use gatehouse_jobs::cron::Schedule;
use gatehouse_jobs::{Handler, Job, OWN_QUEUE, Runner, Running};
use gatehouse_limits::Limiter;
use gatehouse_mail::{Message, Smtp};
use tokio::sync::watch;

/// `gatehouse:prune` every minute, `gatehouse:sweep` (a listing of every
/// stored blob) every ten.
pub fn schedules() -> Result<Vec<Schedule>, String> {
    [
        ("gatehouse:prune", "* * * * *", "prune"),
        ("gatehouse:sweep", "*/10 * * * *", "sweep"),
    ]
    .into_iter()
    .map(|(name, pattern, task)| {
        Schedule::new(
            name,
            (pattern, "UTC"),
            &Handler::Own(task).column(),
            OWN_QUEUE,
        )
    })
    .collect()
}

/// The runner in front of the app's: Gatehouse's own jobs run here, the rest
/// go on to `next`.
pub struct OwnJobs {
    state: AppState,
    smtp: Option<Smtp>,
    keep_finished_jobs: Duration,
    next: Arc<dyn Runner>,
}

impl OwnJobs {
    pub fn new(
        (state, smtp): (AppState, Option<Smtp>),
        keep_finished_jobs: Duration,
        next: Arc<dyn Runner>,
    ) -> Self {
        Self {
            state,
            smtp,
            keep_finished_jobs,
            next,
        }
    }

    async fn email(&self, job: &Job) -> Result<(), String> {
        let Some(smtp) = &self.smtp else {
            return Err("no GATEHOUSE_SMTP_URL: the email cannot be sent".into());
        };
        let message: Message = serde_json::from_value(job.payload.clone())
            .map_err(|_| "the queued email is malformed".to_owned())?;
        smtp.send(&message).await
    }

    async fn prune(&self) -> Result<(), String> {
        gatehouse_http::prune_idempotency_keys(&self.state).await;
        self.state
            .auth()
            .prune()
            .await
            .map_err(|error| format!("expired sign-in counts and audit entries: {error}"))?;
        let (jobs, attempts) =
            gatehouse_jobs::admin::prune(self.state.db(), self.keep_finished_jobs)
                .await
                .map_err(|error| format!("finished jobs: {error}"))?;
        if jobs + attempts > 0 {
            tracing::info!(
                jobs,
                attempts,
                "removed finished jobs and attempts past their retention"
            );
        }
        Ok(())
    }
}

impl Runner for OwnJobs {
    fn run(&self, job: Job) -> Running<'_> {
        let Handler::Own(task) = job.handler() else {
            return self.next.run(job);
        };
        let task = task.to_owned();
        Box::pin(async move {
            match task.as_str() {
                "email" => self.email(&job).await,
                "prune" => self.prune().await,
                "sweep" => sweep_blobs(&self.state).await,
                other => Err(format!("there is no upkeep task {other}")),
            }
        })
    }
}

/// Removes object bytes no row references (the leftovers of uploads that
/// never finished).
pub async fn sweep_blobs(state: &AppState) -> Result<(), String> {
    match state.objects().sweep().await {
        Ok(0) => Ok(()),
        Ok(removed) => {
            tracing::info!(removed, "removed unreferenced object bytes");
            Ok(())
        }
        Err(error) => Err(format!(
            "could not sweep unreferenced object bytes: {error}"
        )),
    }
}

/// This instance's own: at start, the sweep (the leftovers of a crash are
/// gone before anything else); then every minute, rate-limit state of
/// clients that went quiet.
pub async fn per_instance(
    state: AppState,
    limiter: Option<Arc<Limiter>>,
    mut stopped: watch::Receiver<bool>,
) {
    if let Err(error) = sweep_blobs(&state).await {
        tracing::warn!(%error, "the sweep at start failed");
    }
    let Some(limiter) = limiter else {
        return;
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => limiter.forget_idle(),
            _ = stopped.changed() => return,
        }
    }
}
