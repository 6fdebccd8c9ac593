use axum::Json;
use axum::extract::State;
use http::StatusCode;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// Readiness: the database answers and carries Gatehouse's tables.
pub async fn get(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.db().ping().await {
        Ok(()) => Ok(Json(json!({ "status": "ready" }))),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "The database is not answering.",
            ))
        }
    }
}
