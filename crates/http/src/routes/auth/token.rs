use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};

use crate::ClientIp;
use axum::response::{IntoResponse, Response};
use gatehouse_auth::{AuthError, Session};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use super::{auth_error, client};
use crate::{ApiCaller, ApiError, AppState, Audit};

#[derive(Deserialize)]
pub struct Grant {
    grant_type: String,
}

#[derive(Deserialize)]
pub struct Body {
    email: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    /// `grant_type=pkce`.
    auth_code: Option<String>,
    code_verifier: Option<String>,
    /// `grant_type=id_token`.
    provider: Option<String>,
    id_token: Option<String>,
    nonce: Option<String>,
}

/// `POST /auth/v1/token?grant_type=password|refresh_token|pkce|id_token`.
pub async fn post(
    State(state): State<AppState>,
    _: ApiCaller,
    Query(grant): Query<Grant>,
    peer: Extension<ClientIp>,
    audit: Audit,
    headers: HeaderMap,
    Json(body): Json<Body>,
) -> Result<Response, ApiError> {
    let client = client(&headers, peer);
    let keys = state.signing_keys();
    let session = match (grant.grant_type.as_str(), body) {
        (
            "password",
            Body {
                email: Some(email),
                password: Some(password),
                ..
            },
        ) => {
            let session = state
                .auth()
                .sign_in_with_password(keys, &email, &password, &client)
                .await;
            let typed: String = email.trim().to_lowercase().chars().take(254).collect();
            audit
                .outcome(
                    "sign_in",
                    &session,
                    |s| Some(s.user.id.clone()),
                    json!({"email": typed}),
                )
                .await;
            session
        }
        (
            "refresh_token",
            Body {
                refresh_token: Some(token),
                ..
            },
        ) => {
            let session = state.auth().refresh(keys, &token, &client).await;
            audit
                .outcome(
                    "token_refresh",
                    &session,
                    |s| Some(s.user.id.clone()),
                    json!({}),
                )
                .await;
            session
        }
        (
            "pkce",
            Body {
                auth_code: Some(code),
                code_verifier: Some(verifier),
                ..
            },
        ) => {
            let session = state
                .auth()
                .exchange_code(keys, (&code, &verifier), &client)
                .await;
            audit
                .outcome(
                    "pkce_exchange",
                    &session,
                    |s| Some(s.user.id.clone()),
                    json!({}),
                )
                .await;
            session
        }
        (
            "id_token",
            Body {
                provider: Some(provider),
                id_token: Some(id_token),
                nonce,
                ..
            },
        ) => {
            let session = state
                .auth()
                .sign_in_with_id_token(keys, (&provider, &id_token, nonce.as_deref()), &client)
                .await;
            let provider: String = provider.chars().take(64).collect();
            audit
                .outcome(
                    "id_token_sign_in",
                    &session,
                    |s| Some(s.user.id.clone()),
                    json!({"provider": provider}),
                )
                .await;
            session
        }
        ("password" | "refresh_token" | "pkce" | "id_token", _) => Err(AuthError::Validation(
            "missing credentials for this grant".into(),
        )),
        (other, _) => Err(AuthError::Validation(format!(
            "unsupported grant_type {other:?}"
        ))),
    };
    let session = session.map_err(auth_error)?;
    respond(&state, &headers, session).await
}

/// The session as JSON; with `X-Use-Cookie: true` (and cookie sessions on) in
/// `__Host-` cookies instead, the body carrying only the user and the CSRF token
/// for the page to keep: page script must never hold a token that works alone.
pub async fn respond(
    state: &AppState,
    request: &HeaderMap,
    session: Session,
) -> Result<Response, ApiError> {
    if !crate::cookies::wanted(state, request) {
        return Ok(Json(crate::wire::session(&session)).into_response());
    }
    let secrets = state
        .auth()
        .attach_cookie(&session.id)
        .await
        .map_err(auth_error)?;
    let mut response_headers = HeaderMap::new();
    crate::cookies::set(&mut response_headers, &secrets);
    let body = json!({"user": crate::wire::user(&session.user), "csrf_token": secrets.csrf});
    Ok((response_headers, Json(body)).into_response())
}
