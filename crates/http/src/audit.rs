//! Security events into the audit log, with the origin the edge established: the
//! client address (see `client_ip`), user agent and request id. Handlers take
//! [`Audit`] and record what happened after they acted.

use axum::extract::FromRequestParts;
use gatehouse_auth::AuthError;
use gatehouse_auth::audit::{Event, Origin};
use http::header;
use http::request::Parts;
use serde_json::json;

use crate::{AppState, ClientIp, RequestId};

pub struct Audit {
    origin: Origin,
    state: AppState,
}

impl FromRequestParts<AppState> for Audit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let origin = Origin {
            ip: parts
                .extensions
                .get::<ClientIp>()
                .map(|ClientIp(ip)| ip.to_string()),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|value| value.to_str().ok())
                .map(|agent| agent.chars().take(512).collect()),
            request_id: parts
                .extensions
                .get::<RequestId>()
                .map(|id| id.as_str().to_owned()),
        };
        Ok(Self {
            origin,
            state: state.clone(),
        })
    }
}

impl Audit {
    /// Appends the event; a failure to write is logged by the audit log itself
    /// and does not change the answer to an action already taken.
    pub async fn record(&self, event: Event) {
        let _ = self.state.audit().record(&self.origin, event).await;
    }

    /// Records `action` as a success by `actor`, or as a failure with the error's
    /// code (and how long a lock it caused lasts).
    pub async fn outcome<T>(
        &self,
        action: &'static str,
        result: &Result<T, AuthError>,
        actor: impl FnOnce(&T) -> Option<String>,
        detail: serde_json::Value,
    ) {
        let actor = result.as_ref().ok().and_then(actor);
        self.outcome_by(action, result, actor, detail).await;
    }

    /// [`Audit::outcome`] by an actor known whatever the outcome (the signed-in
    /// user), so failures are theirs too.
    pub async fn outcome_by<T>(
        &self,
        action: &'static str,
        result: &Result<T, AuthError>,
        actor: Option<String>,
        detail: serde_json::Value,
    ) {
        let event = match result {
            Ok(_) => Event::new(action, "success").with(detail),
            Err(error) => {
                let mut detail = detail;
                detail["error"] = json!(error.code());
                if let AuthError::Locked(lock) = error {
                    detail["locked_for_secs"] = json!(lock.as_secs());
                }
                Event::new(action, "failure").with(detail)
            }
        };
        let event = match actor {
            Some(actor) => event.by(actor),
            None => event,
        };
        self.record(event).await;
    }
}
