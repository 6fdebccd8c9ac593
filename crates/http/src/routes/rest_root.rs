use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use http::{HeaderValue, header};

use crate::{AppState, Identity};

/// `GET /rest/v1/`: the OpenAPI document, as PostgREST serves its root, limited
/// to what the caller's role may reach.
pub async fn get(State(state): State<AppState>, Identity(caller): Identity) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openapi+json"),
        )],
        Json(state.rest().openapi(&caller)),
    )
}
