//! Who is calling, from verified material only: the API key (already checked by
//! `api_key::identify`) and, when present, a bearer access token verified against
//! the signing keys. Nothing the client writes in a body, query or other header
//! can change the answer.

use axum::extract::FromRequestParts;
use gatehouse_keys::ApiRole;
use gatehouse_rest::Caller;
use http::request::Parts;
use http::{StatusCode, header};

use crate::{ApiCaller, ApiError, AppState};

/// The user behind a valid bearer token, for layers that key state by caller
/// (rate limits, idempotency keys) before the handler's [`Identity`] exists.
pub(crate) fn bearer_subject(headers: &http::HeaderMap, state: &AppState) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let claims = state.verify_access_token(token.trim()).ok()?;
    Some(claims.subject().to_owned())
}

/// The caller of a data request.
pub struct Identity(pub Caller);

fn invalid_token(expired: bool) -> ApiError {
    let message = if expired {
        "JWT expired"
    } else {
        "JWT invalid"
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "PGRST301", message).with_challenge()
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ApiCaller(app) = ApiCaller::from_request_parts(parts, state).await?;
        let bearer = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => {
                let value = value.to_str().map_err(|_| invalid_token(false))?;
                let (scheme, token) = value.split_once(' ').ok_or_else(|| invalid_token(false))?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(invalid_token(false));
                }
                Some(token.trim())
            }
        };
        // supabase-js sends the API key as the bearer token until a user signs in.
        let user_token = bearer.filter(|token| state.api_keys().identify(token).is_none());
        // A cookie session stands in for the bearer token when there is none.
        if user_token.is_none()
            && state.auth().settings().cookie_sessions
            && let Some(cookie) = crate::cookies::session(&parts.headers)
        {
            let claims = crate::cookies::claims(parts, state, cookie).await?;
            return Ok(Identity(Caller::User(claims)));
        }
        let caller = match (user_token, app) {
            (Some(token), _) => {
                let claims = state.verify_access_token(token).map_err(|error| {
                    tracing::info!(%error, "refused an access token");
                    invalid_token(error == gatehouse_keys::TokenError::Expired)
                })?;
                // Signed-out, deleted and banned users' sessions end at once.
                if claims.claim_text("session_id").is_some() {
                    match state.auth().check_session(&claims).await {
                        Ok(()) => {}
                        Err(gatehouse_auth::AuthError::SessionNotFound) => {
                            return Err(invalid_token(false));
                        }
                        // A database failure is not the client's bad token.
                        Err(other) => return Err(crate::routes::auth::auth_error(other)),
                    }
                }
                Caller::User(std::sync::Arc::unwrap_or_clone(claims))
            }
            (None, ApiRole::Service) => Caller::Service,
            (None, ApiRole::Anon) => Caller::Anon,
        };
        Ok(Identity(caller))
    }
}
