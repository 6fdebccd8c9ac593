use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gatehouse_auth::Auth;
use gatehouse_auth::audit::AuditLog;
use gatehouse_db::Database;
use gatehouse_functions::Functions;
use gatehouse_jobs::inbound::Inbound;
use gatehouse_keys::{ApiKeys, KeySet, TokenError, TokenRules, TokenVerifier, VerifiedClaims};
use gatehouse_limits::Limiter;
use gatehouse_realtime::Realtime;
use gatehouse_rest::Rest;
use gatehouse_storage::{Buckets, Objects};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Which browser origins may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsPolicy {
    /// No cross-origin access at all.
    Deny,
    /// `http://localhost:*`, `http://127.0.0.1:*` and `http://[::1]:*`: the development default.
    Loopback,
    /// Exactly these origins, compared byte for byte (`*` is refused at config load).
    Origins(Vec<String>),
}

/// Edge settings, validated by the server's configuration before they get here.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub cors: CorsPolicy,
    /// Send HSTS: set when the public URL is https.
    pub hsts: bool,
    /// When an admin listener exists, `/metrics` lives there and not on the API.
    pub metrics_on_admin_listener: bool,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub rate_limits: crate::RateLimits,
    /// Longer request targets get 414.
    pub max_url_bytes: usize,
    /// More header lines get 431.
    pub max_headers: usize,
    /// A longer request line plus headers gets 431.
    pub max_header_bytes: usize,
    /// Deeper JSON bodies get 400.
    pub max_json_depth: usize,
    /// The time limit of one object upload (other requests have `request_timeout`).
    pub upload_timeout: Duration,
}

/// How many verified access tokens an instance remembers (about 1 KB each).
const VERIFIED_TOKENS_REMEMBERED: usize = 10_000;

struct Shared {
    db: Database,
    tokens: TokenVerifier,
    api_keys: ApiKeys,
    rest: Arc<Rest>,
    auth: Auth,
    settings: HttpSettings,
    limiter: Option<Arc<Limiter>>,
    audit: AuditLog,
    buckets: Buckets,
    objects: Objects,
    functions: Arc<Functions>,
    inbound: Arc<Inbound>,
    metrics: PrometheusHandle,
    series: crate::access_log::Series,
    realtime: Arc<Realtime>,
}

/// What the state is built from.
pub struct Parts {
    pub db: Database,
    pub signing_keys: KeySet,
    /// What an access token must say about its issuer and audience.
    pub token_rules: TokenRules,
    pub api_keys: ApiKeys,
    pub rest: Arc<Rest>,
    pub auth: Auth,
    pub settings: HttpSettings,
    /// `None` turns rate limiting off.
    pub limiter: Option<Arc<Limiter>>,
    pub objects: Objects,
    pub functions: Arc<Functions>,
    /// The declared inbound webhooks.
    pub inbound: Arc<Inbound>,
    /// This instance's realtime: topics, the row-change feed (a follower of
    /// `rest`'s writes), and its bounds.
    pub realtime: Arc<Realtime>,
}

/// What every handler may reach; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(Shared {
            audit: AuditLog::new(parts.db.clone()),
            buckets: Buckets::new(parts.db.clone()),
            db: parts.db,
            tokens: TokenVerifier::new(
                parts.signing_keys,
                parts.token_rules,
                VERIFIED_TOKENS_REMEMBERED,
            ),
            api_keys: parts.api_keys,
            rest: parts.rest,
            auth: parts.auth,
            settings: parts.settings,
            limiter: parts.limiter,
            objects: parts.objects,
            functions: parts.functions,
            inbound: parts.inbound,
            metrics: metrics_handle(),
            series: crate::access_log::Series::default(),
            realtime: parts.realtime,
        }))
    }

    pub fn token_rules(&self) -> &TokenRules {
        self.0.tokens.rules()
    }

    /// Verifies a user's access token (remembering the answer; see [`TokenVerifier`]).
    pub fn verify_access_token(&self, token: &str) -> Result<Arc<VerifiedClaims>, TokenError> {
        self.0.tokens.verify(token)
    }

    pub fn rest(&self) -> &Rest {
        &self.0.rest
    }

    pub fn auth(&self) -> &Auth {
        &self.0.auth
    }

    pub fn db(&self) -> &Database {
        &self.0.db
    }

    pub fn signing_keys(&self) -> &KeySet {
        self.0.tokens.keys()
    }

    pub fn realtime(&self) -> &Arc<Realtime> {
        &self.0.realtime
    }

    pub fn api_keys(&self) -> &ApiKeys {
        &self.0.api_keys
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.0.settings
    }

    pub fn buckets(&self) -> &Buckets {
        &self.0.buckets
    }

    pub fn objects(&self) -> &Objects {
        &self.0.objects
    }

    pub fn functions(&self) -> &Functions {
        &self.0.functions
    }

    pub fn inbound(&self) -> &Inbound {
        &self.0.inbound
    }

    pub fn audit(&self) -> &AuditLog {
        &self.0.audit
    }

    pub fn limiter(&self) -> Option<&Limiter> {
        self.0.limiter.as_deref()
    }

    pub(crate) fn metrics(&self) -> &PrometheusHandle {
        &self.0.metrics
    }

    pub(crate) fn series(&self) -> &crate::access_log::Series {
        &self.0.series
    }
}

/// Latency buckets in seconds, from a cached read to a password hash under load.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Histogram samples pile up in the recorder until they are folded into buckets,
/// which otherwise happens only when someone scrapes `/metrics`: a deployment that
/// never scrapes would grow by every request's latency sample. A plain thread
/// rather than a task, since the recorder may be made outside any runtime and
/// lives as long as the process.
fn spawn_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(error) = started {
        tracing::error!(%error, "could not start the metrics upkeep thread");
    }
}

/// The process-wide Prometheus recorder. Metrics are a property of the process,
/// so servers started side by side in one process (tests) share it.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!(
                            "another metrics recorder is installed; /metrics stays empty"
                        );
                    }
                    spawn_upkeep(handle.clone());
                    handle
                }
                // Only an empty bucket list fails, and ours is a non-empty constant.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}
