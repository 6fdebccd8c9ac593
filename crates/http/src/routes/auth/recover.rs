use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Redirect, auth_error};
use crate::{ApiCaller, ApiError, AppState, Audit};

#[derive(Deserialize)]
pub struct Body {
    email: String,
}

/// `POST /auth/v1/recover`: the same answer whether or not the account exists.
pub async fn post(
    State(state): State<AppState>,
    _: ApiCaller,
    audit: Audit,
    Query(options): Query<Redirect>,
    Json(body): Json<Body>,
) -> Result<Json<Value>, ApiError> {
    let requested = state
        .auth()
        .recover(&body.email, options.redirect_to.as_deref())
        .await;
    let typed: String = body.email.trim().to_lowercase().chars().take(254).collect();
    audit
        .outcome(
            "recovery_requested",
            &requested,
            |_| None,
            json!({"email": typed}),
        )
        .await;
    requested.map_err(auth_error)?;
    Ok(Json(json!({})))
}
