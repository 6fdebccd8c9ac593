use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::response::{IntoResponse, Response};
use gatehouse_auth::{AuthError, Session};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::{auth_error, client};
use crate::{ApiCaller, ApiError, AppState};

#[derive(Deserialize)]
pub struct Grant {
    grant_type: String,
}

#[derive(Deserialize)]
pub struct Body {
    email: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
}

/// `POST /auth/v1/token?grant_type=password|refresh_token`.
pub async fn post(
    State(state): State<AppState>,
    _: ApiCaller,
    Query(grant): Query<Grant>,
    peer: ConnectInfo<std::net::SocketAddr>,
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
            state
                .auth()
                .sign_in_with_password(keys, &email, &password, &client)
                .await
        }
        (
            "refresh_token",
            Body {
                refresh_token: Some(token),
                ..
            },
        ) => state.auth().refresh(keys, &token, &client).await,
        ("password" | "refresh_token", _) => Err(AuthError::Validation(
            "missing credentials for this grant".into(),
        )),
        (other, _) => Err(AuthError::Validation(format!(
            "unsupported grant_type {other:?}"
        ))),
    };
    let session = session.map_err(auth_error)?;
    respond(&state, &headers, session).await
}

/// The session as JSON; with `X-Use-Cookie: true` (and cookie sessions on) also
/// in `__Host-` cookies, with the CSRF token in the body for the page to keep.
pub async fn respond(
    state: &AppState,
    request: &HeaderMap,
    session: Session,
) -> Result<Response, ApiError> {
    let mut body = session.to_json();
    let mut response_headers = HeaderMap::new();
    if crate::cookies::wanted(state, request) {
        let secrets = state
            .auth()
            .attach_cookie(&session.id)
            .await
            .map_err(auth_error)?;
        body["csrf_token"] = Value::String(secrets.csrf.clone());
        crate::cookies::set(&mut response_headers, &secrets);
    }
    Ok((response_headers, Json(body)).into_response())
}
