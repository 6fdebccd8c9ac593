use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use gatehouse_auth::Auth;
use gatehouse_db::{Database, MigrateOptions, PoolOptions};
use gatehouse_functions::{Data, Functions};
use gatehouse_http::{AppState, HttpSettings, Parts};
use gatehouse_jobs::Workers;
use gatehouse_jobs::changes::Changes;
use gatehouse_jobs::inbound::{Hook, Inbound};
use gatehouse_jobs::outbound::{Delivering, Webhook};
use gatehouse_keys::TokenRules;
use gatehouse_limits::Limiter;
use gatehouse_realtime::{Realtime, Sharing};
use gatehouse_rest::{AfterWrite, Caller, Followers, Rest, RestSettings};
use gatehouse_storage::{BlobConfig, Blobs, ObjectSettings, Objects, UrlSigner};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::net::TcpListener;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, Mode};
use crate::listener::ConnectionLimits;
use crate::own_jobs::{self, OwnJobs};
use crate::secrets::Secrets;

/// The configured identity providers, each with its client secret.
fn identity_providers(
    config: &Config,
    secrets: &HashMap<String, secrecy::SecretString>,
) -> anyhow::Result<gatehouse_oauth::Providers> {
    let configs = config
        .providers
        .iter()
        .map(|provider| gatehouse_oauth::ProviderConfig {
            client_secret: secrets.get(&provider.name).cloned(),
            ..provider.clone()
        })
        .collect();
    gatehouse_oauth::Providers::new(configs).map_err(|e| anyhow::anyhow!("identity providers: {e}"))
}

/// A started server: its bound addresses and the means to stop it gracefully.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub public_url: String,
    pub state: AppState,
    stop: watch::Sender<bool>,
    listeners: Vec<JoinHandle<std::io::Result<()>>>,
    job_workers: Workers,
    grace: Duration,
}

pub async fn start(
    config: &Config,
    secrets: Secrets,
    custom: Router<AppState>,
) -> anyhow::Result<Running> {
    for warning in crate::config::weakened(&config.auth) {
        tracing::warn!("{warning}");
    }
    let db = open_database(config, &secrets.database).await?;
    if config.auto_migrate {
        db.migrate_schema(&config.schema, MigrateOptions::default())
            .await
            .context("cannot apply the declared schema (run `gatehouse migrate --dry-run` to see the plan)")?;
    }
    if secrets.factor_key.is_none() {
        if gatehouse_auth::mfa::any_factor(&db).await? {
            anyhow::bail!(
                "production mode refuses to start: users have second factors and GATEHOUSE_MFA_KEY, \
                 the key their secrets are sealed with, is missing"
            );
        }
        tracing::warn!("no GATEHOUSE_MFA_KEY: second factors (MFA) are off");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let admin_listener = match config.admin_listen {
        Some(admin) => Some(
            TcpListener::bind(admin)
                .await
                .with_context(|| format!("cannot listen on {admin}"))?,
        ),
        None => None,
    };
    let public_url = config.public_url(addr);
    let settings = HttpSettings {
        body_limit: config.body_limit,
        request_timeout: config.request_timeout,
        cors: config.cors.clone(),
        hsts: public_url.starts_with("https://"),
        metrics_on_admin_listener: admin_listener.is_some(),
        trusted_proxies: config.trusted_proxies.clone(),
        rate_limits: config.rate_limits.unwrap_or_default(),
        max_url_bytes: config.max_url_bytes,
        max_headers: config.connection_limits.max_headers,
        max_header_bytes: config.connection_limits.max_header_bytes,
        max_json_depth: config.max_json_depth,
        upload_timeout: config.storage.upload_timeout,
    };
    let objects = open_objects(config, &secrets, &db)?;
    let limiter = match (&config.rate_limits, &secrets.redis) {
        (None, _) => None,
        (Some(limits), Some(url)) => Some(Arc::new(
            Limiter::shared(&limits.all(), url)
                .await
                .context("cannot reach Redis at GATEHOUSE_REDIS_URL")?,
        )),
        (Some(limits), None) => Some(Arc::new(Limiter::in_process(&limits.all())?)),
    };
    let rest = Arc::new(Rest::new(
        config.schema.clone(),
        config.policies.clone(),
        RestSettings::default(),
    ));
    // A module that does not compile stops the start, naming file, line and column.
    let data = Data {
        rest: rest.clone(),
        db: db.clone(),
        service: Caller::holding(secrets.service),
    };
    let jobs_wake = Arc::new(Notify::new());
    let functions = Arc::new(
        Functions::load(
            (&config.functions, &config.triggers),
            &config.functions_dir,
            data,
            &secrets.function_secrets,
        )?
        .with_jobs(config.jobs.clone(), jobs_wake.clone()),
    );
    let inbound = Arc::new(Inbound::new(
        inbound_hooks(config, &secrets)?,
        config.jobs.clone(),
        db.clone(),
        jobs_wake.clone(),
    ));
    let triggers: std::sync::Weak<Functions> = Arc::downgrade(&functions);
    rest.set_triggers(triggers);
    let webhooks = outbound_webhooks(config, &secrets)?;
    let watches: Vec<_> = functions
        .after_triggers()
        .iter()
        .cloned()
        .chain(
            config
                .webhooks
                .iter()
                .filter(|webhook| webhooks.contains_key(&webhook.name))
                .map(|webhook| webhook.watch.clone()),
        )
        .collect();
    let realtime = Arc::new(Realtime::start(
        (rest.clone(), db.clone()),
        config.full_old_rows.clone(),
        realtime_sharing(&db, &secrets)?,
        (config.realtime.clone(), config.realtime_policies.clone()),
    ));
    let mut followers: Vec<Arc<dyn AfterWrite>> = vec![realtime.feed.clone()];
    if !watches.is_empty() {
        followers.push(Arc::new(Changes::new(
            watches,
            config.jobs.clone(),
            jobs_wake.clone(),
        )));
    }
    rest.set_after_write(Arc::new(Followers(followers)));
    let app_runner = Arc::new(Delivering::new(webhooks, functions.clone()));
    let token_rules = TokenRules {
        issuer: format!("{public_url}/auth/v1"),
        audience: "authenticated".into(),
        leeway: 30,
    };
    let auth = Auth::new(
        db.clone(),
        config.auth.clone(),
        token_rules.issuer.clone(),
        jobs_wake.clone(),
        secrets
            .api_keys
            .derive_key("gatehouse refresh token successors v1"),
    )
    .map_err(|e| anyhow::anyhow!("auth settings: {e}"))?
    .with_factor_key(secrets.factor_key)
    .with_providers(identity_providers(config, &secrets.oauth_secrets)?);
    let state = AppState::new(Parts {
        db,
        signing_keys: secrets.signing_keys,
        token_rules,
        api_keys: secrets.api_keys,
        rest,
        auth,
        settings,
        limiter: limiter.clone(),
        objects,
        functions: functions.clone(),
        inbound,
        realtime,
    });
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(own_jobs::per_instance(
        state.clone(),
        limiter,
        stopped.clone(),
    ));
    // Gatehouse's own jobs run on queues of their own: the upkeep, and auth's
    // email once there is a relay to send it (until then it waits).
    let mut jobs = config.jobs.clone();
    jobs.queues.insert(gatehouse_jobs::OWN_QUEUE.to_owned(), 1);
    let smtp = match &secrets.smtp {
        Some(url) => {
            jobs.queues
                .insert(gatehouse_jobs::EMAIL_QUEUE.to_owned(), 1);
            Some(gatehouse_mail::Smtp::new(url, &config.email_from)?)
        }
        None => {
            tracing::warn!(
                "no GATEHOUSE_SMTP_URL: auth emails wait in the job queue until one is configured"
            );
            None
        }
    };
    let mut schedules = own_jobs::schedules().map_err(anyhow::Error::msg)?;
    schedules.extend(config.cron.iter().cloned());
    gatehouse_jobs::cron::spawn(
        state.db().clone(),
        (schedules, Arc::new(jobs.clone())),
        jobs_wake.clone(),
        stopped.clone(),
    );
    let runner = OwnJobs::new((state.clone(), smtp), config.jobs.keep_finished, app_runner);
    let job_workers = Workers::spawn(
        state.db().clone(),
        jobs,
        (Arc::new(runner), jobs_wake),
        stopped.clone(),
    );
    if config.mode == Mode::Development && !config.functions.is_empty() {
        tokio::spawn(reload_functions(functions, stopped.clone()));
    }
    let mut listeners = vec![serve(
        listener,
        gatehouse_http::app(state.clone(), custom),
        config.connection_limits.clone(),
        stopped.clone(),
    )];
    let mut admin_addr = None;
    if let Some(admin_listener) = admin_listener {
        admin_addr = Some(admin_listener.local_addr()?);
        listeners.push(serve(
            admin_listener,
            gatehouse_http::admin_app(state.clone()),
            config.connection_limits.clone(),
            stopped,
        ));
    }
    tracing::info!(%addr, ?admin_addr, "listening");
    Ok(Running {
        addr,
        admin_addr,
        public_url,
        state,
        stop,
        listeners,
        job_workers,
        grace: config.shutdown_grace,
    })
}

/// The hooks whose secret is set (development starts without one, warning).
fn inbound_hooks(config: &Config, secrets: &Secrets) -> anyhow::Result<HashMap<String, Hook>> {
    let mut hooks = HashMap::new();
    for (name, decl) in &config.hooks {
        let Some(secret) = secrets.hook_secrets.get(name) else {
            continue;
        };
        let hook = Hook::new(
            decl.scheme,
            secret,
            decl.tolerance,
            (&decl.function, &decl.queue),
        )
        .map_err(|message| anyhow::anyhow!("hook {name}: {message}"))?;
        hooks.insert(name.clone(), hook);
    }
    Ok(hooks)
}

/// The webhooks whose secret is set (development starts without one, warning).
fn outbound_webhooks(
    config: &Config,
    secrets: &Secrets,
) -> anyhow::Result<HashMap<String, Webhook>> {
    let mut webhooks = HashMap::new();
    for decl in &config.webhooks {
        let Some(secret) = secrets.webhook_secrets.get(&decl.name) else {
            continue;
        };
        let webhook = Webhook::new(&decl.url, secret, decl.allow_private_addresses)
            .map_err(|message| anyhow::anyhow!("webhook {}: {message}", decl.name))?;
        webhooks.insert(decl.name.clone(), webhook);
    }
    Ok(webhooks)
}

/// How realtime reaches the other instances: Redis pub/sub when
/// `GATEHOUSE_REDIS_URL` is set, else PostgreSQL's `LISTEN`/`NOTIFY`; an
/// instance on SQLite is alone.
fn realtime_sharing(db: &Database, secrets: &Secrets) -> anyhow::Result<Sharing> {
    Ok(match (&secrets.redis, db) {
        (Some(url), _) => {
            // The instances of one deployment share its keys: a name derived
            // from them is theirs alone, and says nothing of the keys.
            let deployment = secrets.api_keys.derive_key("gatehouse realtime channel v1");
            Sharing::redis(url, &hex::encode(&deployment[..8]))
                .map_err(|error| anyhow::anyhow!(error))?
        }
        (None, Database::Postgres(_)) => Sharing::Postgres,
        (None, Database::Sqlite(_)) => Sharing::Alone,
    })
}

fn open_objects(config: &Config, secrets: &Secrets, db: &Database) -> anyhow::Result<Objects> {
    let blobs = match &config.storage.s3 {
        None => BlobConfig::Local {
            root: config.data_dir.join("storage"),
        },
        Some(s3) => {
            let (access_key_id, secret_access_key) = secrets.s3_keys.clone().context(
                "[storage] backend = \"s3\" needs GATEHOUSE_S3_ACCESS_KEY_ID and GATEHOUSE_S3_SECRET_ACCESS_KEY",
            )?;
            BlobConfig::S3 {
                bucket: s3.bucket.clone(),
                region: s3.region.clone(),
                endpoint: s3.endpoint.clone(),
                access_key_id,
                secret_access_key,
            }
        }
    };
    let blobs = Blobs::open(&blobs).context("cannot open the object store")?;
    let signer = UrlSigner::new(
        &secrets
            .api_keys
            .derive_key("gatehouse storage signed urls v1"),
    );
    let settings = ObjectSettings {
        max_object_bytes: config.storage.max_object_bytes,
        // Uploads run under their own limit, copies under the request's.
        write_timeout: config.storage.upload_timeout.max(config.request_timeout),
        orphan_grace: config.storage.orphan_grace,
        max_concurrent_uploads: config.storage.max_concurrent_uploads,
        ..ObjectSettings::default()
    };
    Ok(Objects::new(
        db.clone(),
        blobs,
        config.storage.policies.clone(),
        (signer, Caller::holding(secrets.service)),
        settings,
    ))
}

/// Removes object bytes no row names and no live upload writes (interrupted
/// uploads, replaced versions whose deletion was cut short).
pub async fn open_database(
    config: &Config,
    location: &gatehouse_db::Location,
) -> anyhow::Result<Database> {
    let options = PoolOptions {
        max_connections: config.pool_size,
        acquire_timeout: config.pool_timeout,
        // No statement outlives the request that asked for it.
        statement_timeout: config.request_timeout,
    };
    Database::open(location, options)
        .await
        .context("cannot open the database")
}

fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stopped: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(crate::listener::serve(listener, app, limits, stopped))
}

impl Running {
    /// Stops accepting connections and lets in-flight requests finish, for at
    /// most the configured grace period.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!(
            grace_secs = self.grace.as_secs(),
            "shutting down; finishing in-flight requests"
        );
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        for listener in self.listeners {
            let abort = listener.abort_handle();
            match tokio::time::timeout_at(deadline, listener).await {
                Ok(result) => result.context("listener task failed")??,
                Err(_) => {
                    abort.abort();
                    tracing::warn!("grace period over; dropping the requests still running");
                }
            }
        }
        // The loops stop claiming; a job still running when the process ends
        // runs again after its lease.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.job_workers.join()).await;
        Ok(())
    }
}

/// Listens for SIGTERM and SIGINT (Ctrl-C) from the moment it is called; the
/// returned future resolves on the first of them.
/// Development: a changed function module is compiled and swapped in within
/// a second; one that does not compile is named, and the previous one serves on.
async fn reload_functions(functions: Arc<Functions>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped.changed() => return,
        }
        let watched = functions.clone();
        let Ok(outcomes) = tokio::task::spawn_blocking(move || watched.reload_modules()).await
        else {
            continue;
        };
        for outcome in outcomes {
            match outcome {
                Ok(name) => tracing::info!(function = %name, "reloaded a changed function"),
                Err(error) => {
                    tracing::error!(%error, "a changed function does not load; the previous version serves")
                }
            }
        }
    }
}

pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
