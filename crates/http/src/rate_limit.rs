//! Rate limits per route class: auth endpoints that cost a password hash or send
//! email are keyed by client address; data requests by user when the token is
//! valid and by address otherwise. The secret key (the app's own server) is not
//! limited. Over the limit: 429 with `Retry-After` and the IETF `RateLimit-Policy`
//! and `RateLimit` fields; under it, the same fields tell the client its budget.

use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use gatehouse_keys::ApiRole;
use gatehouse_limits::{Decision, Policy};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::client_ip::ClientIp;
use crate::{ApiCaller, ApiError, AppState};

/// The limits of each class of route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Sign-in, sign-up, token refresh, recovery, OTP, verification and changes to
    /// the signed-in user, per address.
    pub auth: Policy,
    /// Reads of the data API.
    pub reads: Policy,
    /// Writes of the data API.
    pub writes: Policy,
}

impl Default for RateLimits {
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        Self {
            auth: Policy {
                name: "auth",
                limit: 30,
                window: minute,
            },
            reads: Policy {
                name: "reads",
                limit: 1200,
                window: minute,
            },
            writes: Policy {
                name: "writes",
                limit: 300,
                window: minute,
            },
        }
    }
}

impl RateLimits {
    pub fn all(&self) -> [Policy; 3] {
        [self.auth, self.reads, self.writes]
    }

    fn for_request(&self, method: &Method, path: &str) -> Option<(Policy, bool)> {
        const AUTH: &[&str] = &[
            "/auth/v1/token",
            "/auth/v1/signup",
            "/auth/v1/recover",
            "/auth/v1/otp",
            "/auth/v1/magiclink",
            "/auth/v1/verify",
            "/auth/v1/resend",
            "/auth/v1/reauthenticate",
            "/auth/v1/authorize",
            "/auth/v1/callback",
            "/auth/v1/user/identities/authorize",
        ];
        // Changing the password costs hashes and changing the email sends mail.
        let user_update = path == "/auth/v1/user" && *method == Method::PUT;
        // Enrolments and challenges add rows; verifications guess codes.
        let factors = path.starts_with("/auth/v1/factors") && *method == Method::POST;
        if AUTH.contains(&path) || user_update || factors {
            return Some((self.auth, false));
        }
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/rest/v1") || under("/storage/v1") || under("/functions/v1") {
            let read = matches!(*method, Method::GET | Method::HEAD);
            return Some((if read { self.reads } else { self.writes }, true));
        }
        None
    }
}

fn describe(headers: &mut HeaderMap, policy: &Policy, remaining: u32, reset: Duration) {
    let fields = [
        (
            "ratelimit-policy",
            format!(
                "\"{}\";q={};w={}",
                policy.name,
                policy.limit,
                policy.window.as_secs()
            ),
        ),
        (
            "ratelimit",
            format!(
                "\"{}\";r={remaining};t={}",
                policy.name,
                crate::error::seconds_up(reset)
            ),
        ),
    ];
    for (name, value) in fields {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
}

pub async fn enforce<F: Future<Output = Response>>(
    state: &AppState,
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let Some(limiter) = state.limiter() else {
        return next(request).await;
    };
    let limits = state.settings().rate_limits;
    let Some((policy, per_user)) = limits.for_request(request.method(), request.uri().path())
    else {
        return next(request).await;
    };
    if request
        .extensions()
        .get::<ApiCaller>()
        .is_some_and(|ApiCaller(key)| key.role() == ApiRole::Service)
    {
        return next(request).await;
    }
    // An invalid token is the handler's to refuse; it counts against the address.
    let user = per_user
        .then(|| crate::identity::bearer_subject(request.extensions()))
        .flatten();
    let key = match user {
        Some(user) => format!("user:{user}"),
        None => request.extensions().get::<ClientIp>().map_or_else(
            || "ip:unknown".to_owned(),
            |ClientIp(ip)| format!("ip:{ip}"),
        ),
    };
    match limiter.check(&policy, &key).await {
        Decision::Allowed { remaining, reset } => {
            let mut response = next(request).await;
            describe(response.headers_mut(), &policy, remaining, reset);
            response
        }
        Decision::Limited { retry_after } => {
            tracing::info!(policy = policy.name, "request over its rate limit");
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "over_request_rate_limit",
                "Too many requests; try again later.",
            )
            .with_retry_after(retry_after)
            .into_response();
            describe(response.headers_mut(), &policy, 0, retry_after);
            response
        }
    }
}
