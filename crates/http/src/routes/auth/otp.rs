use axum::Json;
use axum::extract::{Query, State};
use gatehouse_auth::AuthError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Redirect, auth_error};
use crate::{ApiCaller, ApiError, AppState};

#[derive(Deserialize)]
pub struct Body {
    email: Option<String>,
    create_user: Option<bool>,
    data: Option<Value>,
}

/// `POST /auth/v1/otp`: a magic link and a 6-digit code by email.
pub async fn post(
    State(state): State<AppState>,
    _: ApiCaller,
    Query(options): Query<Redirect>,
    Json(body): Json<Body>,
) -> Result<Json<Value>, ApiError> {
    let email = body.email.ok_or_else(|| {
        auth_error(AuthError::Validation(
            "an email is required (no SMS sign-in)".into(),
        ))
    })?;
    state
        .auth()
        .send_magic_link(
            &email,
            body.create_user.unwrap_or(true),
            body.data,
            options.redirect_to.as_deref(),
        )
        .await
        .map_err(auth_error)?;
    Ok(Json(json!({})))
}
