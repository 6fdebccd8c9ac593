//! Authentication without HTTP: users, Argon2id passwords, sessions, access tokens
//! (signed by the key set) and opaque rotating refresh tokens, over the same
//! `Database` as everything else.
//!
//! Invariants: a refresh token is stored only as its SHA-256 and is spent once;
//! spending a spent token after the grace period ends its whole session; sign-in
//! with an unknown email costs a dummy hash and fails exactly like a wrong
//! password; access tokens carry ids and roles, never personal data unless a
//! setting asks for it, and never a secret.

pub mod audit;
mod cookies;
mod email;
mod links;
mod live_sessions;
pub mod mfa;
pub mod oauth;
mod password;
pub mod sealing;
mod store;
mod throttle;
pub mod totp;
mod user;

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_db::{Database, DbError, Statement, Value};
use gatehouse_keys::{KeySet, VerifiedClaims};
use serde_json::{Value as Json, json};
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::Notify;

use live_sessions::LiveSessions;

/// How many live-session answers an instance remembers (about 100 bytes each).
const LIVE_SESSIONS_REMEMBERED: usize = 100_000;

pub use cookies::CookieSecrets;
pub use links::{GeneratedLink, Kind, Proof, Side, Verified, recently_verified};
pub use mfa::{Challenge, Enrolled, Factor};
pub use oauth::{Arrival, Begun, Failed, Identity, Landing};
pub use password::{HashParams, Hasher, weakness};
pub use throttle::ThrottleSettings;
pub use user::User;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Invalid login credentials")]
    InvalidCredentials,
    #[error("Email not confirmed")]
    EmailNotConfirmed,
    #[error("User already registered")]
    UserAlreadyExists,
    #[error("A user with this email address has already been registered")]
    EmailExists,
    /// Refused as NIST SP 800-63B asks; the reason is GoTrue's (`length`, `pwned`).
    #[error("{}", weak_password_message(.0, *.1))]
    WeakPassword(&'static str, usize),
    #[error("Password cannot be longer than {MAX_PASSWORD_BYTES} bytes")]
    PasswordTooLong,
    #[error("{0}")]
    Validation(String),
    #[error("Invalid Refresh Token: Refresh Token Not Found")]
    RefreshTokenNotFound,
    #[error("Invalid Refresh Token: Already Used")]
    RefreshTokenAlreadyUsed,
    #[error("Session not found")]
    SessionNotFound,
    #[error("User not found")]
    UserNotFound,
    #[error("User is banned")]
    UserBanned,
    #[error(
        "Changing the password or email needs the current password or a reauthentication nonce."
    )]
    CurrentPasswordRequired,
    #[error("The current password is wrong.")]
    CurrentPasswordInvalid,
    #[error("The reauthentication nonce is wrong or has expired.")]
    ReauthenticationInvalid,
    #[error("Signups not allowed for this instance")]
    SignupDisabled,
    #[error("Anonymous sign-ins are disabled")]
    AnonymousDisabled,
    #[error("Token has expired or is invalid")]
    OtpInvalid,
    #[error("The request lacks a valid CSRF token for its session cookie")]
    CsrfFailed,
    #[error("Anonymous user not allowed to perform these actions")]
    AnonymousNotAllowed,
    #[error("Factor not found")]
    FactorNotFound,
    #[error("A factor with the friendly name {0:?} for this user already exists")]
    FactorNameConflict(String),
    #[error("Maximum number of enrolled factors reached, unenroll to continue")]
    TooManyFactors,
    #[error("AAL2 required to enroll a new factor")]
    EnrolNeedsAal2,
    #[error("AAL2 required to unenroll verified factor")]
    UnenrolNeedsAal2,
    #[error("MFA factor with the provided challenge ID not found")]
    ChallengeNotFound,
    #[error("Challenge and verify IP addresses mismatch.")]
    ChallengeMismatch,
    #[error(
        "MFA challenge has expired, verify against another challenge or create a new challenge."
    )]
    ChallengeExpired,
    #[error("Invalid TOTP code entered")]
    FactorCodeInvalid,
    /// Second factors need `GATEHOUSE_MFA_KEY`; the code is GoTrue's for the step.
    #[error("{}", mfa_disabled_message(.0))]
    MfaDisabled(&'static str),
    #[error("OAuth state is invalid, expired or was used already")]
    BadOAuthState,
    #[error("The provider did not confirm the sign-in")]
    ProviderRefused,
    #[error("The provider could not be reached")]
    ProviderUnavailable,
    #[error("Invalid or expired auth code")]
    FlowStateInvalid,
    #[error("code challenge does not match previously saved code verifier")]
    CodeVerifierMismatch,
    #[error("Identity is already linked to another user")]
    IdentityAlreadyExists,
    #[error("Identity doesn't exist")]
    IdentityNotFound,
    #[error("User must have at least 1 identity after unlinking")]
    SingleIdentity,
    #[error("Too many failed sign-ins; try again later")]
    Throttled(Duration),
    /// This attempt's failure locked the account or address (answered like `Throttled`).
    #[error("Too many failed sign-ins; try again later")]
    Locked(Duration),
    #[error("{0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
    #[error("database: {0}")]
    Database(#[from] DbError),
}

impl AuthError {
    /// Supabase Auth's `error_code` for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::InvalidCredentials => "invalid_credentials",
            AuthError::EmailNotConfirmed => "email_not_confirmed",
            AuthError::UserAlreadyExists => "user_already_exists",
            AuthError::EmailExists => "email_exists",
            AuthError::WeakPassword(..) => "weak_password",
            AuthError::PasswordTooLong => "validation_failed",
            AuthError::Validation(_) => "validation_failed",
            AuthError::RefreshTokenNotFound => "refresh_token_not_found",
            AuthError::RefreshTokenAlreadyUsed => "refresh_token_already_used",
            AuthError::SessionNotFound => "session_not_found",
            AuthError::UserNotFound => "user_not_found",
            AuthError::UserBanned => "user_banned",
            AuthError::CurrentPasswordRequired => "current_password_required",
            AuthError::CurrentPasswordInvalid => "current_password_invalid",
            AuthError::ReauthenticationInvalid => "reauthentication_not_valid",
            AuthError::SignupDisabled => "signup_disabled",
            AuthError::AnonymousDisabled => "anonymous_provider_disabled",
            AuthError::OtpInvalid => "otp_expired",
            AuthError::CsrfFailed => "csrf_failed",
            AuthError::AnonymousNotAllowed => "no_authorization",
            AuthError::FactorNotFound | AuthError::ChallengeNotFound => "mfa_factor_not_found",
            AuthError::FactorNameConflict(_) => "mfa_factor_name_conflict",
            AuthError::TooManyFactors => "too_many_enrolled_mfa_factors",
            AuthError::EnrolNeedsAal2 | AuthError::UnenrolNeedsAal2 => "insufficient_aal",
            AuthError::ChallengeMismatch => "mfa_ip_address_mismatch",
            AuthError::ChallengeExpired => "mfa_challenge_expired",
            AuthError::FactorCodeInvalid => "mfa_verification_failed",
            AuthError::MfaDisabled(code) => code,
            AuthError::BadOAuthState => "bad_oauth_state",
            AuthError::ProviderRefused => "bad_oauth_callback",
            AuthError::ProviderUnavailable => "oauth_provider_unavailable",
            AuthError::FlowStateInvalid => "flow_state_not_found",
            AuthError::CodeVerifierMismatch => "bad_code_verifier",
            AuthError::IdentityAlreadyExists => "identity_already_exists",
            AuthError::IdentityNotFound => "identity_not_found",
            AuthError::SingleIdentity => "single_identity_not_deletable",
            AuthError::Throttled(_) | AuthError::Locked(_) => "over_request_rate_limit",
            AuthError::Config(_) | AuthError::Internal(_) | AuthError::Database(_) => {
                "unexpected_failure"
            }
        }
    }
}

/// GoTrue's words for an `mfa_<kind>_<step>_not_enabled` code.
fn mfa_disabled_message(code: &str) -> String {
    let mut parts = code.split('_').skip(1);
    let kind = match parts.next() {
        Some("totp") => "TOTP",
        Some("phone") => "Phone",
        _ => "WebAuthn",
    };
    match parts.next() {
        Some("enroll") => format!("MFA enroll is disabled for {kind}"),
        _ => format!("MFA verification is disabled for {kind}"),
    }
}

fn weak_password_message(reason: &str, min_length: usize) -> String {
    match reason {
        "length" => format!("Password should be at least {min_length} characters."),
        _ => {
            "Password is known to be weak and easy to guess, please choose a different one.".into()
        }
    }
}

/// Longer passwords are refused: a passphrase fits easily, and every byte is
/// hashed on each sign-in.
pub const MAX_PASSWORD_BYTES: usize = 256;

pub type Result<T, E = AuthError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// New email users must confirm before signing in (needs email delivery).
    pub email_confirmation: bool,
    pub anonymous_sign_ins: bool,
    pub signups: bool,
    pub password_min_length: usize,
    /// Refuse the 10,000 most common passwords.
    pub password_blocklist: bool,
    /// A new password or email needs the current password or a reauthentication
    /// nonce (off: the session alone is enough, Supabase's default).
    pub secure_password_change: bool,
    pub access_token_ttl: Duration,
    /// Absolute lifetime of a session, however often it refreshes.
    pub session_lifetime: Duration,
    /// A spent refresh token may be presented again this long (tabs refreshing together).
    pub refresh_reuse_grace: Duration,
    /// Put the email and user metadata in access tokens (off: tokens carry no
    /// personal data, as the seeds ask).
    pub personal_data_in_token: bool,
    pub hash: HashParams,
    pub concurrent_hashes: usize,
    /// Where email links lead by default.
    pub site_url: String,
    /// Other places a link may lead (`redirect_to`), by prefix.
    pub redirect_urls: Vec<String>,
    /// How long a link or code in an email stays valid.
    pub link_lifetime: Duration,
    /// Offer cookie sessions to requests that send `X-Use-Cookie: true`.
    pub cookie_sessions: bool,
    /// A cookie session unused this long ends.
    pub cookie_idle_timeout: Duration,
    /// How long a data request may rely on this instance having found its session
    /// live; revocations through this instance take effect at once regardless.
    pub session_check_ttl: Duration,
    pub throttle: ThrottleSettings,
    /// Audit entries older than this are deleted.
    pub audit_retention: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            email_confirmation: true,
            anonymous_sign_ins: false,
            signups: true,
            password_min_length: 8,
            password_blocklist: true,
            secure_password_change: true,
            access_token_ttl: Duration::from_secs(3600),
            session_lifetime: Duration::from_secs(30 * 24 * 3600),
            refresh_reuse_grace: Duration::from_secs(10),
            personal_data_in_token: false,
            hash: HashParams::default(),
            concurrent_hashes: std::thread::available_parallelism().map_or(2, usize::from),
            site_url: "http://localhost:3000".into(),
            redirect_urls: Vec::new(),
            link_lifetime: Duration::from_secs(3600),
            cookie_sessions: false,
            cookie_idle_timeout: Duration::from_secs(30 * 60),
            session_check_ttl: Duration::from_secs(2),
            throttle: ThrottleSettings::default(),
            audit_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Where a request came from, recorded on its session.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// A signed-in session: what the client receives (`http::wire::session`).
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub expires_at: i64,
    pub user: User,
    /// The identity provider's own tokens, for a provider configured to hand
    /// them on (GoTrue's `provider_token`, `provider_refresh_token`).
    pub provider_tokens: Option<gatehouse_oauth::ProviderTokens>,
}

/// The outcome of a sign-up.
pub enum SignUp {
    SignedIn(Session),
    /// Confirmation is required: no session until the email is confirmed.
    Unconfirmed(User),
}

/// `POST /logout?scope=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Local,
    Others,
}

/// How a signed-in user proves it is the owner before a sensitive change.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reauthentication<'a> {
    pub current_password: Option<&'a str>,
    /// The code `GET /reauthenticate` emailed.
    pub nonce: Option<&'a str>,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub email: Option<String>,
    pub password: Option<String>,
    pub user_metadata: Option<Json>,
    pub app_metadata: Option<Json>,
    pub email_confirmed: Option<bool>,
    /// Until when the user is banned; `Some(None)` lifts a ban.
    pub banned_until: Option<Option<String>>,
}

pub use gatehouse_db::timestamp;

/// How long sessions and one-time links are kept past their end.
const EXPIRED_KEPT: time::Duration = time::Duration::days(1);

const EXPIRED_REFRESH_TOKENS: gatehouse_db::Sql = gatehouse_db::Sql::both(
    "DELETE FROM gatehouse_refresh_tokens WHERE session_id IN \
     (SELECT id FROM gatehouse_sessions WHERE not_after < $1)",
);
const EXPIRED_SESSIONS: gatehouse_db::Sql =
    gatehouse_db::Sql::both("DELETE FROM gatehouse_sessions WHERE not_after < $1");
const EXPIRED_LINKS: gatehouse_db::Sql =
    gatehouse_db::Sql::both("DELETE FROM gatehouse_one_time_tokens WHERE expires_at < $1");

/// How surely a session's user was authenticated: the access token's `aal`
/// and `amr`, kept with the session so that refreshing keeps them.
struct Assurance {
    aal: String,
    amr: Json,
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub(crate) fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| AuthError::Internal("random generator failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

pub(crate) fn token_hash(token: &str) -> String {
    digest(&SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A well-formed email, lowercased: one `@`, something on each side, no spaces.
pub(crate) fn normalise_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.matches('@').count() == 1;
    if valid {
        Ok(email)
    } else {
        Err(AuthError::Validation(
            "Unable to validate email address: invalid format".into(),
        ))
    }
}

pub struct Auth {
    db: Database,
    settings: AuthSettings,
    hasher: Hasher,
    issuer: String,
    /// Tells the job workers an email was queued.
    wake: Arc<Notify>,
    live_sessions: Arc<LiveSessions>,
    throttle: throttle::Throttle,
    /// Derives each refresh token's successor (see `successor`).
    successor_key: [u8; 32],
    /// Seals second-factor secrets; without it factors are off (see `mfa`).
    factor_key: Option<sealing::SealingKey>,
    /// Other identity providers users may sign in with (see `oauth`).
    providers: Option<gatehouse_oauth::Providers>,
}

impl Auth {
    /// `successor_key` must be the same on every instance and secret: it decides
    /// the refresh token that follows each one.
    pub fn new(
        db: Database,
        settings: AuthSettings,
        issuer: String,
        wake: Arc<Notify>,
        successor_key: [u8; 32],
    ) -> Result<Self> {
        let hasher = Hasher::new(settings.hash, settings.concurrent_hashes)?;
        let live_sessions = Arc::new(LiveSessions::new(
            settings.session_check_ttl,
            LIVE_SESSIONS_REMEMBERED,
        ));
        Ok(Self {
            throttle: throttle::Throttle::new(db.clone(), settings.throttle),
            db,
            live_sessions,
            settings,
            hasher,
            issuer,
            wake,
            successor_key,
            factor_key: None,
            providers: None,
        })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Drops sign-in counts whose window and lock are over, audit entries past
    /// their retention, and sessions (with their refresh tokens) and one-time
    /// links past their end, so none of these tables grows without bound.
    /// Expired ones are kept a day first: a link used just too late still
    /// answers "expired", not "invalid".
    pub async fn prune(&self) -> Result<()> {
        self.throttle.prune().await?;
        let before = gatehouse_db::timestamp(now() - EXPIRED_KEPT);
        self.db
            .transaction(
                vec![
                    Statement::new(&EXPIRED_REFRESH_TOKENS, vec![before.clone().into()]),
                    Statement::new(&EXPIRED_SESSIONS, vec![before.clone().into()]),
                    Statement::new(&EXPIRED_LINKS, vec![before.into()]),
                ]
                .into_iter()
                .chain(self.prune_factors())
                .chain(self.prune_provider_flows())
                .collect(),
            )
            .await?;
        audit::AuditLog::new(self.db.clone())
            .prune(self.settings.audit_retention)
            .await
    }

    pub(crate) async fn user_where(
        &self,
        sql: &gatehouse_db::Sql,
        key: &str,
    ) -> Result<Option<(User, Option<String>)>> {
        let rows = self.db.query(Statement::new(sql, vec![key.into()])).await?;
        rows.first()
            .map(User::from_row)
            .transpose()
            .map_err(AuthError::from)
    }

    /// A user with their second factors.
    pub async fn user(&self, id: &str) -> Result<User> {
        let mut user = self
            .user_where(&store::USER_BY_ID, id)
            .await?
            .map(|(user, _)| user)
            .ok_or(AuthError::UserNotFound)?;
        user.factors = self.factors_of(id).await?;
        user.identities = self.identities_of(id).await?;
        Ok(user)
    }

    pub(crate) fn check_password(&self, password: &str) -> Result<()> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::PasswordTooLong);
        }
        let min_length = self.settings.password_min_length;
        match weakness(password, min_length, self.settings.password_blocklist) {
            Some(reason) => Err(AuthError::WeakPassword(reason, min_length)),
            None => Ok(()),
        }
    }

    /// Creates a user; `extra` builds statements (given the new id) that commit
    /// with it, such as a confirmation link and its email.
    pub(crate) async fn insert_user(
        &self,
        email: Option<String>,
        password: Option<&str>,
        changes: &Changes,
        anonymous: bool,
        extra: impl FnOnce(&str) -> Result<Vec<Statement>>,
    ) -> Result<User> {
        let hash = match password {
            Some(password) => Some(self.hasher.hash(password).await?),
            None => None,
        };
        let created = timestamp(now());
        let confirmed = changes
            .email_confirmed
            .unwrap_or(false)
            .then(|| created.clone());
        let id = uuid::Uuid::new_v4().to_string();
        let extra = extra(&id)?;
        let provider = if anonymous { "anonymous" } else { "email" };
        let mut app_metadata = json!({"provider": provider, "providers": [provider]});
        if let Some(Json::Object(extra)) = &changes.app_metadata {
            for (key, value) in extra {
                app_metadata[key] = value.clone();
            }
        }
        let user_metadata = changes.user_metadata.clone().unwrap_or_else(|| json!({}));
        let text = |v: Option<String>| v.map_or(Value::Null, Value::Text);
        let statement = Statement::new(
            &store::INSERT_USER,
            vec![
                id.clone().into(),
                text(email),
                text(hash),
                text(confirmed),
                Value::Bool(anonymous),
                user_metadata.to_string().into(),
                app_metadata.to_string().into(),
                created.into(),
                text(changes.banned_until.clone().flatten()),
            ],
        );
        let mut statements = vec![statement];
        let sends_mail = !extra.is_empty();
        statements.extend(extra);
        match self.db.transaction(statements).await {
            Ok(_) => {
                if sends_mail {
                    self.wake.notify_waiters();
                }
                self.user(&id).await
            }
            Err(error) if error.constraint() == Some(gatehouse_db::Constraint::Unique) => {
                Err(AuthError::UserAlreadyExists)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// `POST /signup` with an email and password.
    pub async fn sign_up(
        &self,
        keys: &KeySet,
        email: &str,
        password: &str,
        data: Option<Json>,
        redirect_to: Option<&str>,
        client: &Client,
    ) -> Result<SignUp> {
        if !self.settings.signups {
            return Err(AuthError::SignupDisabled);
        }
        let email = normalise_email(email)?;
        let redirect_to = self.redirect(redirect_to)?;
        self.check_password(password)?;
        let changes = Changes {
            user_metadata: data,
            email_confirmed: Some(!self.settings.email_confirmation),
            ..Changes::default()
        };
        let user = self
            .insert_user(
                Some(email.clone()),
                Some(password),
                &changes,
                false,
                |id| match self.settings.email_confirmation {
                    true => self.link_statements(id, &email, Kind::Signup, &redirect_to),
                    false => Ok(Vec::new()),
                },
            )
            .await;
        let user = match (user, self.settings.email_confirmation) {
            // With confirmation on, a taken address answers like a new one (the
            // password was hashed either way), so sign-up reveals no accounts.
            (Err(AuthError::UserAlreadyExists), true) => {
                let at = timestamp(now());
                return Ok(SignUp::Unconfirmed(User {
                    id: uuid::Uuid::new_v4().to_string(),
                    email: Some(email),
                    email_confirmed_at: None,
                    is_anonymous: false,
                    banned_until: None,
                    user_metadata: json!({}),
                    app_metadata: json!({"provider": "email", "providers": ["email"]}),
                    created_at: at.clone(),
                    updated_at: at,
                    last_sign_in_at: None,
                    factors: Vec::new(),
                    identities: Vec::new(),
                }));
            }
            (user, _) => user?,
        };
        if self.settings.email_confirmation {
            return Ok(SignUp::Unconfirmed(user));
        }
        Ok(SignUp::SignedIn(
            self.start_session(keys, user, "password", client).await?,
        ))
    }

    /// `POST /signup` without credentials, as `signInAnonymously` sends it.
    pub async fn sign_up_anonymously(
        &self,
        keys: &KeySet,
        data: Option<Json>,
        client: &Client,
    ) -> Result<Session> {
        if !self.settings.anonymous_sign_ins {
            return Err(AuthError::AnonymousDisabled);
        }
        let changes = Changes {
            user_metadata: data,
            ..Changes::default()
        };
        let user = self
            .insert_user(None, None, &changes, true, |_| Ok(Vec::new()))
            .await?;
        self.start_session(keys, user, "anonymous", client).await
    }

    /// `POST /token?grant_type=password`.
    pub async fn sign_in_with_password(
        &self,
        keys: &KeySet,
        email: &str,
        password: &str,
        client: &Client,
    ) -> Result<Session> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::PasswordTooLong);
        }
        let throttled =
            throttle::SignInKeys::new(email, client.ip.as_deref(), self.throttle.settings());
        // A lock costs no hash and reveals nothing; the turn is held until the
        // outcome is counted.
        let _turns = self.throttle.begin_sign_in(&throttled).await?;
        let found = match normalise_email(email) {
            Ok(email) => self.user_where(&store::USER_BY_EMAIL, &email).await?,
            Err(_) => None,
        };
        let stored = found.as_ref().and_then(|(_, hash)| hash.as_deref());
        // Always one hash, whether or not the account exists.
        let verified = self.hasher.verify(password, stored).await?;
        let Some((user, _)) = found.filter(|_| verified.matches) else {
            if let Some(lock) = self.throttle.failed_sign_in(&throttled).await? {
                return Err(AuthError::Locked(lock));
            }
            return Err(AuthError::InvalidCredentials);
        };
        self.throttle.succeeded_sign_in(&throttled).await?;
        if user.email_confirmed_at.is_none() {
            return Err(AuthError::EmailNotConfirmed);
        }
        if user.is_banned(&timestamp(now())) {
            return Err(AuthError::UserBanned);
        }
        let rehashed = match verified.needs_rehash {
            true => Some(self.hasher.hash(password).await?),
            false => None,
        };
        let signed_in = timestamp(now());
        self.db
            .transaction(vec![Statement::new(
                &store::SIGNED_IN,
                vec![
                    user.id.clone().into(),
                    signed_in.into(),
                    rehashed.map_or(Value::Null, Value::Text),
                ],
            )])
            .await?;
        let user = self.user(&user.id).await?;
        self.start_session(keys, user, "password", client).await
    }

    async fn start_session(
        &self,
        keys: &KeySet,
        user: User,
        method: &str,
        client: &Client,
    ) -> Result<Session> {
        let session_id = uuid::Uuid::new_v4().to_string();
        let created = now();
        let not_after = created + self.settings.session_lifetime;
        let refresh_token = random_token()?;
        let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
        let assurance = Assurance {
            aal: "aal1".into(),
            amr: json!([{ "method": method, "timestamp": created.unix_timestamp() }]),
        };
        self.db
            .transaction(vec![
                Statement::new(
                    &store::INSERT_SESSION,
                    vec![
                        session_id.clone().into(),
                        user.id.clone().into(),
                        timestamp(created).into(),
                        timestamp(not_after).into(),
                        text(&client.user_agent),
                        text(&client.ip),
                        assurance.aal.clone().into(),
                        assurance.amr.to_string().into(),
                    ],
                ),
                Statement::new(
                    &store::INSERT_REFRESH,
                    vec![
                        token_hash(&refresh_token).into(),
                        session_id.clone().into(),
                        timestamp(created).into(),
                    ],
                ),
            ])
            .await?;
        self.session(keys, user, (&session_id, assurance), refresh_token)
    }

    fn session(
        &self,
        keys: &KeySet,
        user: User,
        (session_id, assurance): (&str, Assurance),
        refresh_token: String,
    ) -> Result<Session> {
        let issued = now();
        let expires_at = issued + self.settings.access_token_ttl;
        let mut claims = json!({
            "iss": self.issuer,
            "sub": user.id,
            "aud": "authenticated",
            "exp": expires_at.unix_timestamp(),
            "iat": issued.unix_timestamp(),
            "role": "authenticated",
            "aal": assurance.aal,
            "amr": assurance.amr,
            "session_id": session_id,
            "is_anonymous": user.is_anonymous,
        });
        if self.settings.personal_data_in_token {
            claims["email"] = json!(user.email);
            claims["phone"] = json!("");
            claims["user_metadata"] = user.user_metadata.clone();
        }
        let access_token = keys
            .sign(&claims)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(Session {
            id: session_id.to_owned(),
            access_token,
            refresh_token,
            expires_in: self.settings.access_token_ttl.as_secs(),
            expires_at: expires_at.unix_timestamp(),
            user,
            provider_tokens: None,
        })
    }

    /// `POST /token?grant_type=refresh_token`: spends the token and issues the next.
    pub async fn refresh(
        &self,
        keys: &KeySet,
        refresh_token: &str,
        client: &Client,
    ) -> Result<Session> {
        let hash = token_hash(refresh_token);
        let rows = self
            .db
            .query(Statement::new(
                &store::REFRESH_BY_HASH,
                vec![hash.clone().into()],
            ))
            .await?;
        let row = rows.first().ok_or(AuthError::RefreshTokenNotFound)?;
        let session_id = row.text(0)?.to_owned();
        let used_at = row.optional_text(1)?.map(str::to_owned);
        let user_id = row.text(2)?.to_owned();
        let at = now();
        // Sessions from before their assurance was kept read as refreshed ones.
        let assurance = Assurance {
            aal: row.optional_text(3)?.unwrap_or("aal1").to_owned(),
            amr: row
                .optional_text(4)?
                .and_then(|amr| serde_json::from_str(amr).ok())
                .unwrap_or_else(
                    || json!([{ "method": "token_refresh", "timestamp": at.unix_timestamp() }]),
                ),
        };
        if let Some(used_at) = used_at {
            let grace_ends = timestamp(
                OffsetDateTime::parse(&used_at, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| AuthError::Internal(e.to_string()))?
                    + self.settings.refresh_reuse_grace,
            );
            if timestamp(at) > grace_ends {
                // A spent token again, after the grace: assume it was stolen.
                tracing::warn!(session_id, "refresh token reused; revoking the session");
                self.end_sessions(vec![Statement::new(
                    &store::DELETE_SESSION,
                    vec![session_id.into()],
                )])
                .await?;
                return Err(AuthError::RefreshTokenAlreadyUsed);
            }
        }
        self.active_user(&session_id, &user_id).await?;
        // Spending a token and replaying it within the grace (tabs refreshing
        // together) name the same successor, so a session never forks into two
        // chains. Derived rather than stored: the database keeps only hashes.
        let next = self.successor(refresh_token);
        let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
        self.db
            .transaction(vec![
                Statement::new(
                    &store::SPEND_REFRESH,
                    vec![hash.into(), timestamp(at).into()],
                ),
                Statement::new(
                    &store::INSERT_REFRESH,
                    vec![
                        token_hash(&next).into(),
                        session_id.clone().into(),
                        timestamp(at).into(),
                    ],
                ),
                Statement::new(
                    &store::TOUCH_SESSION,
                    vec![
                        session_id.clone().into(),
                        timestamp(at).into(),
                        text(&client.user_agent),
                        text(&client.ip),
                    ],
                ),
            ])
            .await?;
        let user = self.user(&user_id).await?;
        self.session(keys, user, (&session_id, assurance), next)
    }

    /// The refresh token that follows `token`: an HMAC of it under a key only the
    /// servers hold, so every instance derives the same one and nobody else can.
    fn successor(&self, token: &str) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.successor_key);
        URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, token.as_bytes()).as_ref())
    }

    /// The user behind a live session: it exists, has not expired, and its user is
    /// neither deleted nor banned.
    async fn active_user(&self, session_id: &str, user_id: &str) -> Result<()> {
        let rows = self
            .db
            .query(Statement::new(
                &store::ACTIVE_SESSION,
                vec![session_id.into(), timestamp(now()).into()],
            ))
            .await?;
        match rows.first() {
            Some(row) if row.text(0)? == user_id => Ok(()),
            _ => Err(AuthError::SessionNotFound),
        }
    }

    /// Whether a verified access token still stands for a live session.
    pub async fn check_session(&self, claims: &VerifiedClaims) -> Result<()> {
        let session_id = claims
            .claim_text("session_id")
            .ok_or(AuthError::SessionNotFound)?;
        let user_id = claims.subject();
        if self.live_sessions.recently_live(&session_id, user_id) {
            return Ok(());
        }
        let generation = self.live_sessions.generation();
        self.active_user(&session_id, user_id).await?;
        self.live_sessions
            .found_live(&session_id, user_id, generation);
        Ok(())
    }

    /// Runs statements that end sessions or change who may hold one, then makes
    /// this instance forget which sessions it found live. Forgetting after the
    /// commit matters: a check that read the row before the commit carries an older
    /// generation and is not trusted. The two run in their own task, so a request
    /// cancelled midway (a client hanging up) still forgets once its write lands.
    async fn end_sessions(
        &self,
        statements: Vec<Statement>,
    ) -> Result<Vec<Vec<gatehouse_db::Row>>, gatehouse_db::DbError> {
        self.end_sessions_if(statements, |_| true)
            .await
            .map(Option::unwrap_or_default)
    }

    /// [`Auth::end_sessions`], committed only when `accept` approves every
    /// statement's rows (`None` when it did not).
    async fn end_sessions_if(
        &self,
        statements: Vec<Statement>,
        accept: fn(&[Vec<gatehouse_db::Row>]) -> bool,
    ) -> Result<Option<Vec<Vec<gatehouse_db::Row>>>, gatehouse_db::DbError> {
        let db = self.db.clone();
        let live_sessions = self.live_sessions.clone();
        tokio::spawn(async move {
            let outcome = db.transaction_if(statements, accept).await;
            live_sessions.revoked();
            outcome
        })
        .await
        .map_err(|join| gatehouse_db::DbError::Pool(join.to_string()))?
    }

    /// `GET /user`.
    pub async fn current_user(&self, claims: &VerifiedClaims) -> Result<User> {
        self.check_session(claims).await?;
        self.user(claims.subject()).await
    }

    /// `POST /logout`.
    pub async fn sign_out(&self, claims: &VerifiedClaims, scope: Scope) -> Result<()> {
        let session_id = claims
            .claim_text("session_id")
            .ok_or(AuthError::SessionNotFound)?;
        let user_id = claims.subject().to_owned();
        let statement = match scope {
            Scope::Local => Statement::new(&store::DELETE_SESSION, vec![session_id.into()]),
            Scope::Global => Statement::new(&store::DELETE_USER_SESSIONS, vec![user_id.into()]),
            Scope::Others => Statement::new(
                &store::DELETE_OTHER_SESSIONS,
                vec![user_id.into(), session_id.into()],
            ),
        };
        self.end_sessions(vec![statement]).await?;
        Ok(())
    }

    /// `PUT /user`: the signed-in user changes their password, email or
    /// metadata. A new password or email needs the current password, a
    /// reauthentication nonce, or a session that just proved the mailbox
    /// (recovery, magic link): an access token alone must not be enough to take
    /// the account. An account without an address (anonymous) has nothing to
    /// take yet. A password change is told to the account's address.
    pub async fn update_own(
        &self,
        claims: &VerifiedClaims,
        changes: Changes,
        proof: Reauthentication<'_>,
    ) -> Result<User> {
        let user = self.current_user(claims).await?;
        let sensitive = changes.password.is_some() || changes.email.is_some();
        if sensitive
            && user.email.is_some()
            && self.settings.secure_password_change
            && !recently_verified(claims)
        {
            self.reauthenticated(&user, proof).await?;
        }
        if user.is_anonymous
            && user.email.is_none()
            && changes.email.is_none()
            && changes.password.is_some()
        {
            return Err(AuthError::Validation(
                "an anonymous user sets a password together with an email".into(),
            ));
        }
        // An address makes an anonymous account an ordinary one: a sign-up.
        if user.is_anonymous && changes.email.is_some() && !self.settings.signups {
            return Err(AuthError::SignupDisabled);
        }
        if let Some(password) = &changes.password {
            self.check_password(password)?;
        }
        // An anonymous user's first address is applied at once when addresses
        // need no confirmation (the account becomes permanent); any other new
        // address waits for its confirmation.
        let mut own = Changes::default();
        match changes.email {
            Some(email) if user.is_anonymous && !self.settings.email_confirmation => {
                own.email = Some(email);
                own.email_confirmed = Some(true);
            }
            Some(email) => self.request_email_change(&user, &email, None).await?,
            None => {}
        }
        let password_changed = changes.password.is_some();
        let own = Changes {
            password: changes.password,
            user_metadata: changes.user_metadata,
            ..own
        };
        let updated = self
            .apply(&user.id, own)
            .await
            .map_err(|error| match error {
                // Only an anonymous user's address applied at once can collide.
                AuthError::UserAlreadyExists => AuthError::EmailExists,
                other => other,
            })?;
        if let (true, Some(address)) = (password_changed, &user.email) {
            let notice = email::compose(
                address,
                "Your password was changed",
                &[
                    email::Part::Text("The password of your account was just changed."),
                    email::Part::Text(
                        "If this was not you, reset your password now from the sign-in page: \
                         the reset signs the account out everywhere.",
                    ),
                ],
            );
            self.send(vec![crate::email::queued(&notice)]).await?;
        }
        Ok(updated)
    }

    /// The caller proved it is the account's owner: by its current password
    /// (counted like a sign-in, so a stolen token cannot guess it freely) or by
    /// a reauthentication nonce.
    async fn reauthenticated(&self, user: &User, proof: Reauthentication<'_>) -> Result<()> {
        if let Some(nonce) = proof.nonce {
            return self.spend_nonce(user, nonce).await;
        }
        let current = proof
            .current_password
            .ok_or(AuthError::CurrentPasswordRequired)?;
        let (_, stored) = self
            .user_where(&store::USER_BY_ID, &user.id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        let address = user.email.as_deref().unwrap_or_default();
        let keys = throttle::SignInKeys::new(address, None, self.throttle.settings());
        let _turns = self.throttle.begin_sign_in(&keys).await?;
        if self
            .hasher
            .verify(current, stored.as_deref())
            .await?
            .matches
        {
            return Ok(());
        }
        if let Some(lock) = self.throttle.failed_sign_in(&keys).await? {
            return Err(AuthError::Locked(lock));
        }
        Err(AuthError::CurrentPasswordInvalid)
    }

    pub(crate) async fn apply(&self, id: &str, changes: Changes) -> Result<User> {
        self.apply_with(id, changes, Vec::new()).await
    }

    /// [`Auth::apply`], with `also` committed in the same transaction: what must
    /// not happen without the change, nor the change without it.
    pub(crate) async fn apply_with(
        &self,
        id: &str,
        changes: Changes,
        also: Vec<Statement>,
    ) -> Result<User> {
        let (user, stored) = self
            .user_where(&store::USER_BY_ID, id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        let email = match changes.email {
            Some(email) => Some(normalise_email(&email)?),
            None => user.email.clone(),
        };
        let hash = match changes.password {
            Some(password) => Some(self.hasher.hash(&password).await?),
            None => stored,
        };
        let confirmed = match changes.email_confirmed {
            Some(true) => user
                .email_confirmed_at
                .clone()
                .or_else(|| Some(timestamp(now()))),
            Some(false) => None,
            None => user.email_confirmed_at.clone(),
        };
        let merge = |base: &Json, extra: Option<Json>| match (base.clone(), extra) {
            (Json::Object(mut base), Some(Json::Object(extra))) => {
                base.extend(extra);
                Json::Object(base)
            }
            (base, _) => base,
        };
        let user_metadata = merge(&user.user_metadata, changes.user_metadata);
        let mut app_metadata = merge(&user.app_metadata, changes.app_metadata);
        // An anonymous account with a confirmed address is an ordinary one now:
        // it signs in with that address.
        let anonymous = user.is_anonymous && (email.is_none() || confirmed.is_none());
        if user.is_anonymous && !anonymous {
            app_metadata["provider"] = json!("email");
            app_metadata["providers"] = json!(["email"]);
        }
        let banned_until = changes.banned_until.unwrap_or(user.banned_until.clone());
        let text = |v: Option<String>| v.map_or(Value::Null, Value::Text);
        let update = Statement::new(
            &store::UPDATE_USER,
            vec![
                id.into(),
                text(email),
                text(hash),
                text(confirmed),
                user_metadata.to_string().into(),
                app_metadata.to_string().into(),
                text(banned_until.clone()),
                timestamp(now()).into(),
                Value::Bool(anonymous),
            ],
        );
        let mut statements = vec![update];
        statements.extend(also);
        if banned_until.is_some() {
            // A ban ends every session at once, not when tokens expire.
            statements.push(Statement::new(
                &store::DELETE_USER_SESSIONS,
                vec![id.into()],
            ));
        }
        if let Err(error) = self.end_sessions(statements).await {
            return Err(match error.constraint() {
                Some(gatehouse_db::Constraint::Unique) => AuthError::UserAlreadyExists,
                _ => error.into(),
            });
        }
        self.user(id).await
    }

    // The admin API (secret key only; the edge checks that).

    pub async fn admin_list(&self, page: u64, per_page: u64) -> Result<(Vec<User>, u64)> {
        let per_page = per_page.clamp(1, 1000);
        let offset = page.saturating_sub(1).saturating_mul(per_page);
        let to_i64 = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        let rows = self
            .db
            .query(Statement::new(
                &store::USERS_PAGE,
                vec![to_i64(per_page), to_i64(offset)],
            ))
            .await?;
        let mut users = rows
            .iter()
            .map(|row| User::from_row(row).map(|(user, _)| user))
            .collect::<Result<Vec<_>, _>>()?;
        for (user_id, factor) in self
            .factors_of_page((to_i64(per_page), to_i64(offset)))
            .await?
        {
            if let Some(user) = users.iter_mut().find(|user| user.id == user_id) {
                user.factors.push(factor);
            }
        }
        for identity in self
            .identities_of_page((to_i64(per_page), to_i64(offset)))
            .await?
        {
            if let Some(user) = users.iter_mut().find(|user| user.id == identity.user_id) {
                user.identities.push(identity);
            }
        }
        let total = self
            .db
            .query(Statement::new(&store::COUNT_USERS, vec![]))
            .await?;
        let total = total
            .first()
            .map_or(Ok(0), |row| row.integer(0))?
            .unsigned_abs();
        Ok((users, total))
    }

    pub async fn admin_create(
        &self,
        email: &str,
        password: Option<&str>,
        changes: Changes,
    ) -> Result<User> {
        let email = normalise_email(email)?;
        if let Some(password) = password {
            self.check_password(password)?;
        }
        self.insert_user(Some(email), password, &changes, false, |_| Ok(Vec::new()))
            .await
    }

    pub async fn admin_update(&self, id: &str, changes: Changes) -> Result<User> {
        if let Some(password) = &changes.password {
            self.check_password(password)?;
        }
        self.apply(id, changes).await
    }

    pub async fn admin_delete(&self, id: &str) -> Result<()> {
        let deleted = self
            .end_sessions(vec![Statement::new(&store::DELETE_USER, vec![id.into()])])
            .await?;
        if deleted.first().is_none_or(Vec::is_empty) {
            return Err(AuthError::UserNotFound);
        }
        Ok(())
    }
}
