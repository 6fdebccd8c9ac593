//! `POST /hooks/v1/<name>`: a provider's signed event for a declared hook.
//! No API key: the signature over the raw body is the credential, checked by
//! `gatehouse_jobs::inbound` before anything reads the body. A refusal says
//! nothing about which check failed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::{ApiError, AppState};
use gatehouse_jobs::inbound::Received;

pub async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    match state.inbound().receive(&name, header, &body).await {
        Ok(Received::Accepted) => Ok(Json(json!({ "received": true }))),
        Ok(Received::Unknown) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "There is no such webhook.",
        )),
        Ok(Received::Refused) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_signature",
            "The webhook could not be verified.",
        )),
        Err(error) => {
            tracing::error!(hook = %name, %error, "a webhook event could not be queued");
            Err(ApiError::internal())
        }
    }
}
