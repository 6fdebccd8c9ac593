use axum::Json;
use axum::extract::State;
use gatehouse_auth::Changes;
use serde::Deserialize;
use serde_json::Value;

use super::{SignedIn, auth_error};
use crate::{ApiError, AppState, Audit};

/// `GET /auth/v1/user`.
pub async fn get(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
) -> Result<Json<Value>, ApiError> {
    let user = state
        .auth()
        .current_user(&claims)
        .await
        .map_err(auth_error)?;
    Ok(Json(user.to_json()))
}

#[derive(Deserialize)]
pub struct Body {
    email: Option<String>,
    password: Option<String>,
    current_password: Option<String>,
    data: Option<Value>,
}

/// `PUT /auth/v1/user`: a new password needs the current one.
pub async fn put(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
    audit: Audit,
    Json(body): Json<Body>,
) -> Result<Json<Value>, ApiError> {
    let action = if body.password.is_some() {
        "password_change"
    } else {
        "user_update"
    };
    let changes = Changes {
        email: body.email,
        password: body.password,
        user_metadata: body.data,
        ..Changes::default()
    };
    let updated = state
        .auth()
        .update_own(&claims, changes, body.current_password.as_deref())
        .await;
    audit
        .outcome(
            action,
            &updated,
            |user| Some(user.id.clone()),
            serde_json::json!({}),
        )
        .await;
    Ok(Json(updated.map_err(auth_error)?.to_json()))
}
