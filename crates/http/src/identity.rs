//! Who is calling, from verified material only: the API key (checked by
//! `api_key::identify`), the bearer access token (read and verified once per
//! request, in that same layer, by [`read_bearer`]) or a cookie session.
//! Nothing the client writes in a body, query or other header can change the
//! answer. One rule for sessions holds on every surface: a token that names a
//! session is refused once that session is gone (signed out, expired, its user
//! deleted or banned).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use gatehouse_auth::AuthError;
use gatehouse_keys::{TokenError, VerifiedClaims};
use gatehouse_realtime::connection::{Session, Verified, Verify, Verifying};
use gatehouse_rest::Caller;
use http::request::Parts;
use http::{HeaderMap, StatusCode, header};

use crate::routes::auth::{auth_error, invalid_token};
use crate::{ApiCaller, ApiError, AppState};

/// The request's `Authorization: Bearer`, as [`read_bearer`] found it.
#[derive(Clone)]
pub(crate) enum Bearer {
    /// None, or the API key sent as the bearer (supabase-js does until a user
    /// signs in).
    Absent,
    /// Not `Bearer <token>` in visible ASCII.
    Malformed,
    Token(Result<Arc<VerifiedClaims>, TokenError>),
}

/// Reads and verifies the bearer token, once per request.
pub(crate) fn read_bearer(headers: &HeaderMap, state: &AppState) -> Bearer {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Bearer::Absent;
    };
    let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return Bearer::Malformed;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Bearer::Malformed;
    }
    let token = token.trim();
    match state.verify_access_token(token) {
        Ok(claims) => Bearer::Token(Ok(claims)),
        // An API key is never a token the server signed, so only a token that
        // failed is checked against the keys (hashing a token costs as much).
        Err(_) if state.api_keys().identify(token).is_some() => Bearer::Absent,
        Err(error) => Bearer::Token(Err(error)),
    }
}

/// The user behind a valid bearer token, for layers that key state by caller
/// (rate limits, idempotency keys) before the handler's [`Identity`] exists.
pub(crate) fn bearer_subject(extensions: &http::Extensions) -> Option<&str> {
    match extensions.get::<Bearer>() {
        Some(Bearer::Token(Ok(claims))) => Some(claims.subject()),
        _ => None,
    }
}

/// Why a request's user is refused.
enum Refusal {
    /// A malformed, forged, foreign or expired token.
    Token { expired: bool },
    /// The session the token names is gone, or could not be checked.
    Session(AuthError),
    /// A cookie session refused (gone, or failing the CSRF defence).
    Cookie(ApiError),
}

/// The bearer token [`read_bearer`] left for this request.
fn bearer_of(parts: &Parts) -> Bearer {
    parts
        .extensions
        .get::<Bearer>()
        .cloned()
        .unwrap_or(Bearer::Absent)
}

/// The request's user, if it names one: its bearer token, else its cookie
/// session; verified, and the session it names live.
async fn user(
    parts: &Parts,
    state: &AppState,
    bearer: Bearer,
) -> Result<Option<Arc<VerifiedClaims>>, Refusal> {
    let claims = match bearer {
        Bearer::Malformed => return Err(Refusal::Token { expired: false }),
        Bearer::Token(Err(error)) => {
            tracing::info!(%error, "refused an access token");
            return Err(Refusal::Token {
                expired: error == TokenError::Expired,
            });
        }
        Bearer::Token(Ok(claims)) => claims,
        Bearer::Absent => {
            return match crate::cookies::session(&parts.headers) {
                Some(cookie) if state.auth().settings().cookie_sessions => {
                    crate::cookies::claims(parts, state, cookie)
                        .await
                        .map(|claims| Some(Arc::new(claims)))
                        .map_err(Refusal::Cookie)
                }
                _ => Ok(None),
            };
        }
    };
    // A token minted without a session (by whoever holds the signing key) has
    // none to end; every token Gatehouse issues names one.
    if claims.claim_text("session_id").is_some() {
        state
            .auth()
            .check_session(&claims)
            .await
            .map_err(Refusal::Session)?;
    }
    Ok(Some(claims))
}

/// The caller of a data or storage request: the verified user when it names
/// one, else what its API key makes it.
pub struct Identity(pub Caller);

fn invalid_data_token(expired: bool) -> ApiError {
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
        let ApiCaller(key) = ApiCaller::from_request_parts(parts, state).await?;
        match user(parts, state, bearer_of(parts)).await {
            Ok(Some(claims)) => Ok(Identity(Caller::signed_in(claims))),
            Ok(None) => Ok(Identity(Caller::holding(key))),
            Err(Refusal::Token { expired }) => Err(invalid_data_token(expired)),
            Err(Refusal::Session(AuthError::SessionNotFound)) => Err(invalid_data_token(false)),
            // A database failure is not the client's bad token.
            Err(Refusal::Session(other)) => Err(auth_error(other)),
            Err(Refusal::Cookie(error)) => Err(error),
        }
    }
}

/// A signed-in user of the auth API: a verified access token (or cookie
/// session) that names a live session, which the auth endpoints act on.
pub struct SignedIn(pub VerifiedClaims);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        ApiCaller::from_request_parts(parts, state).await?;
        // Another scheme (a proxy's `Basic`) is no bearer token here: a cookie
        // session may still stand in, as in Supabase Auth.
        let bearer = match bearer_of(parts) {
            Bearer::Malformed => Bearer::Absent,
            bearer => bearer,
        };
        match user(parts, state, bearer).await {
            Ok(Some(claims)) if claims.claim_text("session_id").is_some() => {
                Ok(SignedIn(Arc::unwrap_or_clone(claims)))
            }
            Ok(Some(_)) => Err(auth_error(AuthError::SessionNotFound)),
            Ok(None) => Err(invalid_token("This endpoint requires a valid Bearer token")),
            Err(Refusal::Token { .. }) => Err(invalid_token(
                "invalid JWT: unable to parse or verify signature, token is expired or invalid",
            )),
            Err(Refusal::Session(error)) => Err(auth_error(error)),
            Err(Refusal::Cookie(error)) => Err(error),
        }
    }
}

/// The tokens a realtime socket's joins and refreshes present, checked as a
/// bearer token is: signature, expiry, and the session it names still live.
pub(crate) struct SocketTokens(pub AppState);

impl Verify for SocketTokens {
    fn verify<'a>(&'a self, token: &'a str) -> Verifying<'a> {
        Box::pin(async move {
            let claims = self
                .0
                .verify_access_token(token)
                .map_err(|error| format!("InvalidJWTToken: {error}"))?;
            let session = match claims.claim_text("session_id") {
                Some(_) => {
                    self.0
                        .auth()
                        .check_session(&claims)
                        .await
                        .map_err(|_| "InvalidJWTToken: the session has ended".to_owned())?;
                    let live: Arc<dyn Session> = Arc::new(SocketSession {
                        state: self.0.clone(),
                        claims: claims.clone(),
                    });
                    Some(live)
                }
                None => None,
            };
            Ok(Verified {
                expires_at: claims.expires_at(),
                caller: Caller::signed_in(claims),
                session,
            })
        })
    }
}

/// The session behind a realtime channel's token, checked again by the same
/// rule as every request's.
struct SocketSession {
    state: AppState,
    claims: Arc<VerifiedClaims>,
}

impl Session for SocketSession {
    fn live(&self) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move { self.state.auth().check_session(&self.claims).await.is_ok() })
    }
}

/// What a realtime socket's API key (checked at the upgrade) makes its caller.
pub(crate) fn key_caller(key: gatehouse_keys::PresentedKey) -> Caller {
    Caller::holding(key)
}
