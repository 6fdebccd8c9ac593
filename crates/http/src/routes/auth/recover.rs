use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Redirect, auth_error};
use crate::{ApiCaller, ApiError, AppState};

#[derive(Deserialize)]
pub struct Body {
    email: String,
}

/// `POST /auth/v1/recover`: the same answer whether or not the account exists.
pub async fn post(
    State(state): State<AppState>,
    _: ApiCaller,
    Query(options): Query<Redirect>,
    Json(body): Json<Body>,
) -> Result<Json<Value>, ApiError> {
    state
        .auth()
        .recover(&body.email, options.redirect_to.as_deref())
        .await
        .map_err(auth_error)?;
    Ok(Json(json!({})))
}
