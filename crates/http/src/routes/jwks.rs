use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use http::{HeaderValue, header};

use crate::AppState;

/// The public signing keys, so clients (supabase-js `getClaims`) verify tokens
/// locally. Cached briefly: a rotated key must be visible before it signs much.
pub async fn get(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        Json(state.signing_keys().jwks()),
    )
}
