use axum::extract::State;
use axum::response::IntoResponse;
use gatehouse_keys::ApiRole;
use http::{HeaderValue, StatusCode, header};

use crate::{ApiCaller, ApiError, AppState};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// On the admin listener, whose network is the protection.
pub async fn get(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        state.metrics().render(),
    )
}

/// On the public listener, only for the secret key.
pub async fn get_with_secret_key(
    caller: Option<ApiCaller>,
    state: State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    match caller {
        Some(ApiCaller(key)) if key.role() == ApiRole::Service => Ok(get(state).await),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "secret_key_required",
            "Metrics need the secret key.",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_api_key",
            "Metrics need the secret key in the apikey header.",
        )),
    }
}
